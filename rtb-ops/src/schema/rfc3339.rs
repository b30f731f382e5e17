//! A small, fast RFC 3339 parser and formatter for UTC timestamps, to and from `i64` milliseconds.
//!
//! It sits on the hot path (every event carries at least one timestamp), so it is a hand-written byte
//! scanner with no allocation and no calendar library. Accepted: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`
//! with years 0000–9999, `T`/`t` as the separator, `Z`/`z`, and a fraction of any number of digits
//! (truncated to milliseconds). Everything else is rejected with a [`TimestampError`] saying why:
//! in particular a non-UTC offset (`+09:00`, `-00:00`), a missing offset, or a leap second (`:60`).
//!
//! Formatting writes `YYYY-MM-DDTHH:MM:SSZ`, or `YYYY-MM-DDTHH:MM:SS.mmmZ` when the milliseconds are not
//! zero, so `format(parse(s))` gives back `s` for every canonical input.

use std::fmt;

use rtb_stream::time::DAY;
use rtb_stream::Timestamp;

/// Why a timestamp string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimestampError {
    /// Shorter than `YYYY-MM-DDTHH:MM:SSZ`.
    TooShort,
    /// A digit was expected at this byte position.
    ExpectedDigit(usize),
    /// The separator `expected` was expected at this byte position.
    ExpectedSeparator(usize, char),
    /// Month outside 1–12.
    Month(u32),
    /// Day outside the month.
    Day(u32),
    /// Hour outside 0–23.
    Hour(u32),
    /// Minute outside 0–59.
    Minute(u32),
    /// Second outside 0–59 (leap seconds are not accepted).
    Second(u32),
    /// A `.` with no digits after it.
    EmptyFraction,
    /// An offset other than `Z` / `+00:00`.
    NonUtcOffset,
    /// No offset at all (a local time).
    MissingOffset,
    /// Characters after the offset.
    Trailing,
    /// A value outside years 0000–9999 (formatting only).
    OutOfRange(Timestamp),
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => f.write_str("too short for YYYY-MM-DDTHH:MM:SSZ"),
            Self::ExpectedDigit(p) => write!(f, "expected a digit at byte {p}"),
            Self::ExpectedSeparator(p, c) => write!(f, "expected `{c}` at byte {p}"),
            Self::Month(m) => write!(f, "month {m} out of range"),
            Self::Day(d) => write!(f, "day {d} out of range for the month"),
            Self::Hour(h) => write!(f, "hour {h} out of range"),
            Self::Minute(m) => write!(f, "minute {m} out of range"),
            Self::Second(s) => write!(f, "second {s} out of range (leap seconds are not accepted)"),
            Self::EmptyFraction => f.write_str("`.` without fractional digits"),
            Self::NonUtcOffset => f.write_str("offset is not UTC (only `Z` and `+00:00` are accepted)"),
            Self::MissingOffset => f.write_str("missing UTC offset (`Z`)"),
            Self::Trailing => f.write_str("characters after the offset"),
            Self::OutOfRange(ts) => write!(f, "{ts} ms is outside years 0000-9999"),
        }
    }
}

impl std::error::Error for TimestampError {}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both casts are of values known to be in 1..=31 and 1..=12.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[inline]
fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for (i, &c) in b[at..at + n].iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(TimestampError::ExpectedDigit(at + i));
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

#[inline]
fn sep(b: &[u8], at: usize, c: u8) -> Result<(), TimestampError> {
    if b[at] == c {
        Ok(())
    } else {
        Err(TimestampError::ExpectedSeparator(at, char::from(c)))
    }
}

/// Parses an RFC 3339 UTC timestamp into milliseconds since the Unix epoch. See the module docs for
/// what is accepted.
pub fn parse(s: &str) -> Result<Timestamp, TimestampError> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(TimestampError::TooShort);
    }
    let year = digits(b, 0, 4)?;
    sep(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    sep(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if b[10] != b'T' && b[10] != b't' {
        return Err(TimestampError::ExpectedSeparator(10, 'T'));
    }
    let hour = digits(b, 11, 2)?;
    sep(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    sep(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    let mut pos = 19;
    let mut millis = 0u32;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 3 {
                millis = millis * 10 + u32::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let n = pos - start;
        if n == 0 {
            return Err(TimestampError::EmptyFraction);
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    match b.get(pos) {
        None => return Err(TimestampError::MissingOffset),
        Some(b'Z' | b'z') => pos += 1,
        Some(b'+') if b.get(pos..pos + 6) == Some(b"+00:00".as_slice()) => pos += 6,
        Some(b'+' | b'-') => return Err(TimestampError::NonUtcOffset),
        Some(_) => return Err(TimestampError::ExpectedSeparator(pos, 'Z')),
    }
    if pos != b.len() {
        return Err(TimestampError::Trailing);
    }
    if !(1..=12).contains(&month) {
        return Err(TimestampError::Month(month));
    }
    let y = i64::from(year);
    if day == 0 || day > days_in_month(y, month) {
        return Err(TimestampError::Day(day));
    }
    if hour > 23 {
        return Err(TimestampError::Hour(hour));
    }
    if minute > 59 {
        return Err(TimestampError::Minute(minute));
    }
    if second > 59 {
        return Err(TimestampError::Second(second));
    }
    let secs = i64::from(hour * 3600 + minute * 60 + second);
    Ok(days_from_civil(y, month, day) * DAY + secs * 1000 + i64::from(millis))
}

/// Smallest timestamp that can be formatted (0000-01-01T00:00:00Z).
pub const MIN_FORMATTABLE: Timestamp = -62_167_219_200_000;
/// Largest timestamp that can be formatted (9999-12-31T23:59:59.999Z).
pub const MAX_FORMATTABLE: Timestamp = 253_402_300_799_999;

#[inline]
fn push2(out: &mut String, v: u32) {
    out.push(char::from(b'0' + (v / 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// Appends the RFC 3339 form of `ts` to `out` (see the module docs for the shape).
pub fn format_into(ts: Timestamp, out: &mut String) -> Result<(), TimestampError> {
    if !(MIN_FORMATTABLE..=MAX_FORMATTABLE).contains(&ts) {
        return Err(TimestampError::OutOfRange(ts));
    }
    let days = ts.div_euclid(DAY);
    let ms_of_day = ts.rem_euclid(DAY) as u32; // < 86 400 000
    let (y, m, d) = civil_from_days(days);
    let y = y as u32; // 0..=9999, checked above
    push2(out, y / 100);
    push2(out, y % 100);
    out.push('-');
    push2(out, m);
    out.push('-');
    push2(out, d);
    out.push('T');
    let secs = ms_of_day / 1000;
    push2(out, secs / 3600);
    out.push(':');
    push2(out, secs / 60 % 60);
    out.push(':');
    push2(out, secs % 60);
    let ms = ms_of_day % 1000;
    if ms != 0 {
        out.push('.');
        out.push(char::from(b'0' + (ms / 100) as u8));
        push2(out, ms % 100);
    }
    out.push('Z');
    Ok(())
}

/// The RFC 3339 form of `ts` as a new string.
pub fn format(ts: Timestamp) -> Result<String, TimestampError> {
    let mut s = String::with_capacity(24);
    format_into(ts, &mut s)?;
    Ok(s)
}

/// Serde adapter: a `Timestamp` field on the wire as an RFC 3339 string.
pub mod serde_ms {
    use rtb_stream::Timestamp;
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    /// Serializes as RFC 3339.
    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*ts).map_err(S::Error::custom)?)
    }
    /// Deserializes from RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        super::parse(&s).map_err(D::Error::custom)
    }
}

/// Serde adapter: an optional `Timestamp` as an optional RFC 3339 string.
pub mod serde_opt_ms {
    use rtb_stream::Timestamp;
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    /// Serializes as RFC 3339 or null.
    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(t) => s.serialize_str(&super::format(*t).map_err(S::Error::custom)?),
            None => s.serialize_none(),
        }
    }
    /// Deserializes from RFC 3339 or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
            Some(s) => super::parse(&s).map(Some).map_err(D::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde adapter: a list of `Timestamp`s as a list of RFC 3339 strings.
pub mod serde_vec_ms {
    use rtb_stream::Timestamp;
    use serde::{de::Error as _, ser::Error as _, ser::SerializeSeq, Deserialize, Deserializer, Serializer};

    /// Serializes as a list of RFC 3339 strings.
    pub fn serialize<S: Serializer>(ts: &[Timestamp], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(ts.len()))?;
        for t in ts {
            seq.serialize_element(&super::format(*t).map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
    /// Deserializes from a list of RFC 3339 strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Timestamp>, D::Error> {
        Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?
            .iter()
            .map(|s| super::parse(s).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_to_known_millis() {
        // 2024-01-15T10:30:00Z = 1705314600 s (checked with `date -u -d 2024-01-15T10:30:00Z +%s`).
        assert_eq!(parse("2024-01-15T10:30:00Z"), Ok(1_705_314_600_000));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("1969-12-31T23:59:59.999Z"), Ok(-1));
    }

    #[test]
    fn plus_zero_offset_lowercase_and_fractions_are_accepted() {
        let base = 1_705_314_600_000;
        assert_eq!(parse("2024-01-15T10:30:00+00:00"), Ok(base));
        assert_eq!(parse("2024-01-15t10:30:00z"), Ok(base));
        assert_eq!(parse("2024-01-15T10:30:00.5Z"), Ok(base + 500));
        assert_eq!(parse("2024-01-15T10:30:00.05Z"), Ok(base + 50));
        assert_eq!(parse("2024-01-15T10:30:00.123Z"), Ok(base + 123));
        assert_eq!(parse("2024-01-15T10:30:00.123999999Z"), Ok(base + 123), "sub-ms digits truncate");
        assert_eq!(parse("2024-01-15T10:30:00.250+00:00"), Ok(base + 250));
    }

    #[test]
    fn every_rejection_has_its_reason() {
        use TimestampError as E;
        assert_eq!(parse("2024-01-15T10:30"), Err(E::TooShort));
        assert_eq!(parse("2024-01-15T10:30:00+09:00"), Err(E::NonUtcOffset));
        assert_eq!(parse("2024-01-15T10:30:00-00:00"), Err(E::NonUtcOffset));
        assert_eq!(parse("2024-01-15T10:30:00.000"), Err(E::MissingOffset));
        assert_eq!(parse("2024-01-15 10:30:00Z"), Err(E::ExpectedSeparator(10, 'T')));
        assert_eq!(parse("2024/01/15T10:30:00Z"), Err(E::ExpectedSeparator(4, '-')));
        assert_eq!(parse("2024-1-15T10:30:00ZZ"), Err(E::ExpectedDigit(6)));
        assert_eq!(parse("2024-13-15T10:30:00Z"), Err(E::Month(13)));
        assert_eq!(parse("2023-02-29T10:30:00Z"), Err(E::Day(29)), "2023 is not a leap year");
        assert_eq!(parse("2024-04-31T10:30:00Z"), Err(E::Day(31)));
        assert_eq!(parse("2024-01-00T10:30:00Z"), Err(E::Day(0)));
        assert_eq!(parse("2024-01-15T24:00:00Z"), Err(E::Hour(24)));
        assert_eq!(parse("2024-01-15T10:60:00Z"), Err(E::Minute(60)));
        assert_eq!(parse("2024-01-15T10:30:60Z"), Err(E::Second(60)));
        assert_eq!(parse("2024-01-15T10:30:00.Z"), Err(E::EmptyFraction));
        assert_eq!(parse("2024-01-15T10:30:00Zx"), Err(E::Trailing));
        assert_eq!(parse("2024-01-15T10:30:00X"), Err(E::ExpectedSeparator(19, 'Z')));
        assert_eq!(parse("２０２４-01-15T10:30:00Z").map_err(|_| ()), Err(()), "non-ASCII digits");
    }

    #[test]
    fn leap_day_2024_and_2000_are_valid() {
        assert!(parse("2024-02-29T00:00:00Z").is_ok());
        assert!(parse("2000-02-29T00:00:00Z").is_ok());
        assert_eq!(parse("1900-02-29T00:00:00Z"), Err(TimestampError::Day(29)));
    }

    #[test]
    fn format_is_the_inverse_of_parse_on_canonical_strings() {
        for s in [
            "2024-01-15T10:30:00Z",
            "2024-01-15T10:30:00.001Z",
            "2024-01-15T10:30:00.120Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "2000-02-29T23:59:59.500Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            let ts = parse(s).expect(s);
            assert_eq!(format(ts).expect("in range"), s);
        }
        assert_eq!(parse("0000-01-01T00:00:00Z"), Ok(MIN_FORMATTABLE));
        assert_eq!(parse("9999-12-31T23:59:59.999Z"), Ok(MAX_FORMATTABLE));
        assert_eq!(format(MAX_FORMATTABLE + 1), Err(TimestampError::OutOfRange(MAX_FORMATTABLE + 1)));
    }

    #[test]
    fn civil_conversion_matches_a_naive_day_walk_over_ten_years() {
        // Naive model: walk day by day from 1970-01-01.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for day in 0..3653 {
            assert_eq!(civil_from_days(day), (y, m, d));
            assert_eq!(days_from_civil(y, m, d), day);
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
