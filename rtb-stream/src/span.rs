//! Spans of time at the public API.
//!
//! Every span the API takes — window sizes and offsets, grace, lateness, out-of-orderness, idle timeouts,
//! the runtime's outlier and correction horizons, log retention — is a [`std::time::Duration`]. Event *times*
//! are [`Timestamp`]s (milliseconds since the epoch, as Kafka's record timestamps), and the engine computes
//! in milliseconds of event time: these functions convert at the boundary. Sub-millisecond parts are
//! dropped; a span longer than `i64::MAX` ms saturates.

use std::time::Duration;

use crate::time::Timestamp;

/// `d` in whole milliseconds (saturating at `i64::MAX`).
pub fn ms(d: Duration) -> Timestamp {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `ms` milliseconds as a [`Duration`] (a negative value is zero).
pub fn from_ms(ms: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `serde` of a [`Duration`] as an integer of milliseconds (`#[serde(with = "rtb_stream::span::serde_ms")]`),
/// the form configuration written as JSON has always had.
pub mod serde_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(super::ms(*d))
    }

    /// Reads milliseconds (not negative).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// `serde` of an `Option<Duration>` as an integer of milliseconds or `null`.
pub mod serde_ms_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds or `null`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&super::ms(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads milliseconds (not negative) or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_drop_sub_milliseconds_saturate_and_clamp() {
        assert_eq!(ms(Duration::from_micros(1_999)), 1);
        assert_eq!(ms(Duration::from_secs(300)), 300_000);
        assert_eq!(ms(Duration::MAX), i64::MAX);
        assert_eq!(from_ms(-5), Duration::ZERO);
        assert_eq!(from_ms(86_400_000), Duration::from_secs(86_400));
    }

    #[test]
    fn serde_writes_and_reads_milliseconds() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(with = "serde_ms")]
            a: Duration,
            #[serde(with = "serde_ms_opt")]
            b: Option<Duration>,
        }
        let s = S { a: Duration::from_secs(5), b: None };
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(json, r#"{"a":5000,"b":null}"#);
        assert_eq!(serde_json::from_str::<S>(r#"{"a":10,"b":20}"#).expect("read"), S {
            a: Duration::from_millis(10),
            b: Some(Duration::from_millis(20))
        });
        assert!(serde_json::from_str::<S>(r#"{"a":-1,"b":null}"#).is_err(), "a span is not negative");
    }
}
