//! The CPC statements and workers as [`rtb_stream::Operator`]s with `Out = Output`.
//!
//! Each holds its sinks as `Arc<dyn Cache>` / `Arc<dyn Database>`, takes already-validated events
//! (decode with [`crate::schema`]; [`crate::wire`] has the runtime decoders) and writes straight to the
//! sinks, as the spec's design asks. Their own state (dedup buffers, timers, windows, join buffers) lives
//! in `KeyedStore`s opened from the task's `StateScope` and is committed with the source offsets, so a
//! restarted task resumes exactly; every sink write is idempotent, so replaying the records after the last
//! commit changes nothing twice.

pub mod balance;
pub mod budget;
pub mod compensation;
pub mod conversion;
pub mod dedup;
pub mod performance;
pub mod ranking;

use chrono_tz::Tz;
use rtb_stream::log::ProduceRecord;
use rtb_stream::runtime::Output;
use rtb_stream::{DeadLetter, SourceCoord, Timestamp};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::calendar::parse_time_zone;
use crate::error::{Error, Result};
use crate::schema::{AdEvent, ConversionEvent};
use crate::sink::Database;

/// One input record of the conversion matcher: the runtime reads both topics in one task.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchInput {
    /// A `conversion-events` record.
    Conversion(ConversionEvent),
    /// An `ad-events` record (only clicks are used).
    Ad(AdEvent),
}

/// The identity of a click: its `event_id`, else its source coordinates `topic/partition/offset`
/// (the spec's rule for the balance worker's idempotency key).
pub fn click_id(ev: &AdEvent, source: &SourceCoord) -> String {
    match &ev.event_id {
        Some(id) => id.clone(),
        None => format!("{}/{}/{}", source.topic, source.partition, source.offset),
    }
}

/// A JSON record for `topic` keyed by `key`.
pub(crate) fn json_output<T: Serialize>(topic: &str, key: &str, value: &T, timestamp: Timestamp, what: &'static str) -> Result<Output> {
    let payload = serde_json::to_vec(value).map_err(|e| Error::Encode { what, reason: e.to_string() })?;
    Ok(Output {
        topic: topic.to_string(),
        record: ProduceRecord { key: Some(key.as_bytes().to_vec()), payload, timestamp, partition: None, origin: None },
    })
}

/// A dead letter carrying the event re-encoded as JSON.
pub(crate) fn dead_letter<T: Serialize>(source: &SourceCoord, stage: &str, reason: String, value: &T) -> DeadLetter {
    DeadLetter {
        source: source.clone(),
        stage: stage.to_string(),
        reason,
        payload: serde_json::to_string(value).unwrap_or_default(),
    }
}

/// Advertiser time zones, read from the database once per advertiser (a zone never changes for an
/// account). Unknown advertisers and unparsable zone names get the default zone (not remembered, so an
/// advertiser registered later is picked up).
#[derive(Debug, Clone)]
pub struct ZoneCache {
    default: Tz,
    known: FxHashMap<String, Tz>,
}

impl ZoneCache {
    /// An empty cache with `default_zone` for advertisers without a known zone.
    pub fn new(default_zone: &str) -> Result<Self> {
        Ok(Self { default: parse_time_zone(default_zone)?, known: FxHashMap::default() })
    }

    /// The advertiser's zone, read from `db` the first time.
    pub fn zone(&mut self, db: &dyn Database, advertiser_id: &str) -> Result<Tz> {
        if let Some(tz) = self.known.get(advertiser_id) {
            return Ok(*tz);
        }
        let Some(row) = db.advertiser(advertiser_id)? else { return Ok(self.default) };
        match parse_time_zone(&row.time_zone) {
            Ok(tz) => {
                self.known.insert(advertiser_id.to_string(), tz);
                Ok(tz)
            }
            Err(_) => {
                tracing::warn!(advertiser_id, zone = %row.time_zone, "unknown time zone; using the default");
                Ok(self.default)
            }
        }
    }
}
