//! [`Millis`]: a duration written `"5m"` in configuration files (operator settings, topology files).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A non-negative duration in milliseconds.
///
/// In a topology file it is written as an integer followed by a unit: `ms`, `s`, `m`, `h` or `d`
/// (`"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`), or as a bare integer of milliseconds. It is written back
/// in the largest unit that divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(i64);

const UNITS: [(&str, i64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Millis {
    /// Zero.
    pub const ZERO: Millis = Millis(0);

    /// `ms` milliseconds. Negative values are clamped to zero.
    pub const fn ms(ms: i64) -> Self {
        Millis(if ms < 0 { 0 } else { ms })
    }
    /// `s` seconds.
    pub const fn secs(s: i64) -> Self {
        Self::ms(s.saturating_mul(1_000))
    }
    /// `m` minutes.
    pub const fn minutes(m: i64) -> Self {
        Self::ms(m.saturating_mul(60_000))
    }
    /// `h` hours.
    pub const fn hours(h: i64) -> Self {
        Self::ms(h.saturating_mul(3_600_000))
    }
    /// `d` days.
    pub const fn days(d: i64) -> Self {
        Self::ms(d.saturating_mul(86_400_000))
    }
    /// The value in milliseconds.
    pub const fn as_ms(self) -> i64 {
        self.0
    }
    /// As a [`std::time::Duration`].
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.unsigned_abs())
    }

    /// Parses `"5m"`, `"500ms"`, `"7d"` ... (see the type docs).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(format!("invalid duration `{text}`: expected a number and a unit (ms, s, m, h, d), e.g. \"5m\""));
        }
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        let factor = match unit {
            "" | "ms" => 1,
            _ => UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    format!(
                        "invalid duration `{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
                    )
                })?,
        };
        n.checked_mul(factor)
            .map(Millis)
            .ok_or_else(|| format!("invalid duration `{text}`: too large"))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (unit, factor) in UNITS {
            if self.0 % factor == 0 {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}ms", self.0)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"5m\", \"30s\", \"24h\" or an integer of milliseconds",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
                if v < 0 {
                    return Err(E::custom(format!("negative duration {v}")));
                }
                Ok(Millis(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Millis, E> {
                i64::try_from(v)
                    .map(Millis)
                    .map_err(|_| E::custom("duration too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Millis, E> {
                Millis::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_parses_every_unit_and_bare_integers() {
        assert_eq!(Millis::parse("500ms"), Ok(Millis::ms(500)));
        assert_eq!(Millis::parse("30s"), Ok(Millis::secs(30)));
        assert_eq!(Millis::parse("5m"), Ok(Millis::minutes(5)));
        assert_eq!(Millis::parse("24h"), Ok(Millis::hours(24)));
        assert_eq!(Millis::parse("7d"), Ok(Millis::days(7)));
        assert_eq!(Millis::parse("1234"), Ok(Millis::ms(1234)));
    }

    #[test]
    fn millis_rejects_unknown_unit_missing_number_and_overflow() {
        assert!(Millis::parse("5w")
            .expect_err("unknown unit")
            .contains("unknown unit `w`"));
        assert!(Millis::parse("m").is_err());
        assert!(Millis::parse("-5m").is_err());
        assert!(Millis::parse("99999999999999999d").is_err());
    }

    #[test]
    fn millis_displays_in_largest_exact_unit() {
        assert_eq!(Millis::days(7).to_string(), "7d");
        assert_eq!(Millis::hours(36).to_string(), "36h");
        assert_eq!(Millis::ms(90_000).to_string(), "90s");
        assert_eq!(Millis::ms(1_500).to_string(), "1500ms");
        assert_eq!(Millis::ZERO.to_string(), "0s");
    }
}
