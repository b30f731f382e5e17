//! Small value types of the topology format: durations written as `"5m"` ([`Millis`], defined in
//! `rtb_stream::registry` so operator kinds can use it in their settings) and key field lists.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use rtb_stream::registry::Millis;

/// The fields a topic is partitioned by, or an operator is keyed by (e.g. `placement` + `category`).
///
/// Written as one field name (`key = "device_id"`) or a list (`key = ["placement", "category"]`). An empty
/// key means "not keyed" (round-robin partitioning for a topic).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeySpec(Vec<String>);

impl KeySpec {
    /// A key made of these fields, in order.
    pub fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KeySpec(fields.into_iter().map(Into::into).collect())
    }
    /// The fields.
    pub fn fields(&self) -> &[String] {
        &self.0
    }
    /// True for "not keyed".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// True when every field of `self` is also in `other` (records with equal `other` keys then have equal
    /// `self` keys, so partitioning by `self` keeps every `other` key in one partition).
    pub fn is_subset_of(&self, other: &KeySpec) -> bool {
        self.0.iter().all(|f| other.0.contains(f))
    }
    /// Same fields, ignoring order.
    pub fn same_fields(&self, other: &KeySpec) -> bool {
        self.is_subset_of(other) && other.is_subset_of(self)
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.0.join("+"))
    }
}

impl From<&str> for KeySpec {
    fn from(field: &str) -> Self {
        KeySpec(vec![field.to_owned()])
    }
}

impl From<String> for KeySpec {
    fn from(field: String) -> Self {
        KeySpec(vec![field])
    }
}

impl<const N: usize> From<[&str; N]> for KeySpec {
    fn from(fields: [&str; N]) -> Self {
        KeySpec::new(fields)
    }
}

impl From<Vec<String>> for KeySpec {
    fn from(fields: Vec<String>) -> Self {
        KeySpec(fields)
    }
}

impl Serialize for KeySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeySpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name or a list of field names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySpec, E> {
                check_field(v)?;
                Ok(KeySpec(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeySpec, A::Error> {
                let mut fields: Vec<String> = Vec::new();
                while let Some(f) = seq.next_element::<String>()? {
                    check_field(&f)?;
                    if fields.contains(&f) {
                        return Err(de::Error::custom(format!("key field `{f}` listed twice")));
                    }
                    fields.push(f);
                }
                if fields.is_empty() {
                    return Err(de::Error::custom(
                        "empty key: leave `key` out for an unkeyed topic or operator",
                    ));
                }
                Ok(KeySpec(fields))
            }
        }
        d.deserialize_any(V)
    }
}

fn check_field<E: de::Error>(f: &str) -> Result<(), E> {
    if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(E::custom(format!(
            "invalid key field `{f}`: use letters, digits and `_`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spec_subset_and_display() {
        let dev = KeySpec::from("device_id");
        let dev_ad = KeySpec::new(["device_id", "ad_id"]);
        assert!(dev.is_subset_of(&dev_ad));
        assert!(!dev_ad.is_subset_of(&dev));
        assert!(KeySpec::new(["a", "b"]).same_fields(&KeySpec::new(["b", "a"])));
        assert_eq!(dev_ad.to_string(), "device_id+ad_id");
        assert_eq!(KeySpec::default().to_string(), "none");
    }
}
