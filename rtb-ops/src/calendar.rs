//! Budget days: the calendar day of an instant in an advertiser's time zone.
//!
//! Budgets reset at local midnight (the spec's default zone is `Asia/Seoul`). [`Day`] is a plain day
//! number so it is cheap to store and compare; it prints and serialises (in human-readable formats) as
//! `YYYY-MM-DD`.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;
use rtb_stream::time::DAY;
use rtb_stream::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::schema::rfc3339::{civil_from_days, days_from_civil};

/// The default advertiser time zone.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Seoul";

/// A calendar day (days since 1970-01-01 of the local date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(pub i32);

impl Day {
    /// The day of a date. Returns `None` for an invalid date.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, day)?;
        i32::try_from(days_from_civil(i64::from(year), month, day)).ok().map(Day)
    }

    /// The local day of instant `ts` in zone `tz`.
    pub fn of(ts: Timestamp, tz: Tz) -> Self {
        let offset_ms = chrono::DateTime::from_timestamp_millis(ts)
            .map(|utc| i64::from(tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc()) * 1000)
            .unwrap_or(0);
        Day(i32::try_from((ts + offset_ms).div_euclid(DAY)).unwrap_or(i32::MAX))
    }

    /// The next day.
    pub fn succ(self) -> Self {
        Day(self.0.saturating_add(1))
    }

    /// The instant this day starts in zone `tz` (local midnight; where a DST gap swallows midnight, the
    /// first instant of the day that exists).
    pub fn start_in(self, tz: Tz) -> Timestamp {
        let naive = NaiveDate::from_num_days_from_ce_opt(self.0 + 719_163)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        for shift in [0, 1, 2] {
            let local = naive + chrono::Duration::hours(shift);
            if let Some(t) = tz.from_local_datetime(&local).earliest() {
                return t.timestamp_millis();
            }
        }
        // Unreachable for real zones (no gap is 3 h long); fall back to the UTC day start.
        i64::from(self.0) * DAY
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not a YYYY-MM-DD date");
        let mut parts = s.splitn(3, '-');
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok()).ok_or_else(bad);
        let (y, m, d) = (next()?, next()?, next()?);
        Day::from_ymd(i32::try_from(y).map_err(|_| bad())?, m, d).ok_or_else(bad)
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i32(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            i32::deserialize(d).map(Day)
        }
    }
}

/// Parses an IANA time zone name.
pub fn parse_time_zone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| Error::TimeZone(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::rfc3339::parse;

    fn ts(s: &str) -> Timestamp {
        parse(s).expect("valid")
    }

    #[test]
    fn seoul_day_changes_at_15_00_utc() {
        let seoul = parse_time_zone(DEFAULT_TIME_ZONE).expect("zone");
        let jan15 = Day::from_ymd(2024, 1, 15).expect("date");
        assert_eq!(Day::of(ts("2024-01-15T14:59:59.999Z"), seoul), jan15);
        assert_eq!(Day::of(ts("2024-01-15T15:00:00Z"), seoul), jan15.succ());
        assert_eq!(jan15.succ().start_in(seoul), ts("2024-01-15T15:00:00Z"));
        assert_eq!(Day::of(ts("2024-01-15T15:00:00Z"), Tz::UTC), jan15);
        assert_eq!(jan15.to_string(), "2024-01-15");
        assert_eq!("2024-01-15".parse::<Day>(), Ok(jan15));
        assert!("2024-02-30".parse::<Day>().is_err());
    }

    #[test]
    fn dst_zone_midnight_follows_the_offset() {
        let ny = parse_time_zone("America/New_York").expect("zone");
        // 2024-07-01 is EDT (UTC-4): local midnight is 04:00 UTC.
        assert_eq!(Day::from_ymd(2024, 7, 1).expect("d").start_in(ny), ts("2024-07-01T04:00:00Z"));
        assert_eq!(Day::from_ymd(2024, 1, 1).expect("d").start_in(ny), ts("2024-01-01T05:00:00Z"));
    }

    #[test]
    fn day_serialises_as_text_in_json_and_as_number_in_bincode() {
        let d = Day::from_ymd(2024, 1, 15).expect("d");
        assert_eq!(serde_json::to_string(&d).expect("json"), "\"2024-01-15\"");
        let b = bincode::serde::encode_to_vec(d, bincode::config::standard()).expect("bincode");
        let (back, _): (Day, usize) =
            bincode::serde::decode_from_slice(&b, bincode::config::standard()).expect("back");
        assert_eq!(back, d);
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }
}
