//! Time handling of the oracle: RFC 3339 UTC on the wire, milliseconds since the epoch inside, local days.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Milliseconds since the Unix epoch.
pub type Ms = i64;

/// 5 minutes.
pub const FIVE_MIN: Ms = 300_000;
/// 1 hour.
pub const HOUR: Ms = 3_600_000;
/// 24 hours.
pub const DAY: Ms = 86_400_000;

/// Parses an RFC 3339 timestamp whose offset is UTC (`Z` or `+00:00`); `None` otherwise.
pub fn parse_utc(s: &str) -> Option<Ms> {
    let dt = DateTime::parse_from_rfc3339(s).ok()?;
    if dt.offset().local_minus_utc() != 0 {
        return None;
    }
    Some(dt.timestamp_millis())
}

/// Formats as `2025-03-10T00:00:00.000Z`.
pub fn fmt_ms(ms: Ms) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("<bad ms {ms}>"),
    }
}

/// The time zone named `name`, Asia/Seoul when unknown.
pub fn zone(name: &str) -> Tz {
    name.parse::<Tz>().unwrap_or(chrono_tz::Asia::Seoul)
}

/// The local calendar day (`YYYY-MM-DD`) of `ms` in `tz`.
pub fn local_day(ms: Ms, tz: Tz) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(d) => d.with_timezone(&tz).format("%Y-%m-%d").to_string(),
        None => format!("<bad ms {ms}>"),
    }
}
