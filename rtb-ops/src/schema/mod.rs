//! The four wire schemas of the spec (§3), as typed Rust values, and their validating decoders.
//!
//! Every event serialises to and from the spec's JSON with serde: times as RFC 3339 UTC strings
//! ([`rfc3339`]), money as integer KRW, enumerations as their upper-case wire names. Optional fields are
//! `Option`s and are left out of the JSON when absent; unknown fields are ignored on input. Each event may
//! carry an `event_id` (the spec's API server assigns one).
//!
//! Plain `serde_json::from_slice` accepts any well-typed event; the `decode_*` functions of [`decode`]
//! additionally check the business rules (required fields, price bounds, future timestamps) and say
//! exactly what was wrong in an [`Invalid`], which the caller turns into a dead letter.

pub mod decode;
mod events;
pub mod rfc3339;

pub use decode::{
    decode_ad_event, decode_campaign_event, decode_compensation_event, decode_conversion_event, Invalid,
    ValidationConfig, Validator,
};
pub use events::*;

/// An enumeration with fixed upper-case wire names.
pub trait WireEnum: Sized + Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The wire name.
    fn as_str(self) -> &'static str;
    /// The value of a wire name (exact, case-sensitive).
    fn parse(s: &str) -> Option<Self>;
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::schema::WireEnum for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }
            fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some(Self::$variant),)+ _ => None }
            }
        }

        impl $name {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                <Self as $crate::schema::WireEnum>::as_str(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                <Self as $crate::schema::WireEnum>::parse(&s).ok_or_else(|| {
                    let names: Vec<&str> =
                        <Self as $crate::schema::WireEnum>::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "unknown {} `{}`, expected one of {:?}", stringify!($name), s, names
                    ))
                })
            }
        }
    };
}
pub(crate) use wire_enum;
