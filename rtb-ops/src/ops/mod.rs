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

use std::sync::Arc;

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
    Ad(Arc<AdEvent>),
}

/// The idempotency key of a click's charge (the spec's rule: its `event_id`, else its source
/// coordinates), in a namespace of its own: `charge:id:{event_id}` or `charge:src:{topic}/{partition}/
/// {offset}`. Every key the system derives starts with a fixed prefix (`charge:id:`, `charge:src:`,
/// `refund:`, `spend:`), and a client's `event_id` only ever appears after `charge:id:`, so nothing a
/// client sends can equal a refund key, a coordinate key or another client's key.
pub fn charge_key(ev: &AdEvent, source: &SourceCoord) -> String {
    match &ev.event_id {
        Some(id) => {
            let mut k = String::with_capacity(10 + id.len());
            k.push_str("charge:id:");
            k.push_str(id);
            k
        }
        None => format!("charge:src:{}/{}/{}", source.topic, source.partition, source.offset),
    }
}

/// The budget monitor's spend-counter key of a click's charge: `spend:` + [`charge_key`].
pub fn charge_spend_key(charge_key: &str) -> String {
    format!("spend:{charge_key}")
}

/// Why a click must not be charged although it decoded: the dead-letter reason codes of [`Billing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbillable {
    /// The database knows no such advertiser (`UNKNOWN_ADVERTISER`).
    UnknownAdvertiser,
    /// The campaign is stored with another advertiser (`CAMPAIGN_ADVERTISER_MISMATCH`).
    CampaignOfAnotherAdvertiser {
        /// The campaign's stored owner.
        owner: String,
    },
}

impl Unbillable {
    /// The dead-letter reason for a record of `advertiser_id` and `campaign_id`; `what` says what is not
    /// done ("the click is not charged").
    pub fn reason(&self, advertiser_id: &str, campaign_id: &str, what: &str) -> String {
        match self {
            Unbillable::UnknownAdvertiser => {
                format!("UNKNOWN_ADVERTISER: advertiser `{advertiser_id}` is not registered; {what}")
            }
            Unbillable::CampaignOfAnotherAdvertiser { owner } => format!(
                "CAMPAIGN_ADVERTISER_MISMATCH: campaign `{campaign_id}` belongs to advertiser `{owner}`, not `{advertiser_id}`; {what}"
            ),
        }
    }
}

/// Decides whether a decoded click may be charged, reading the database: the advertiser must be
/// registered, and a campaign the database knows must belong to that advertiser.
///
/// A click for a campaign the database does **not** know is charged: campaigns arrive on another topic
/// (`campaign-events`, read by the ranking statement), with no order against `ad-events`, so a click can
/// legitimately be processed before its campaign is stored — refusing it would lose a real, valid charge
/// and make the outcome depend on scheduling. The advertiser, by contrast, is account data registered
/// before any traffic (the simulator and the replay register them), so an unknown one is refused.
///
/// The balance worker dead-letters what this refuses; the budget monitor applies the same rule so a
/// refused click never counts against a daily budget, and the compensation worker so a refund is never
/// booked for clicks that could not have been charged. Known advertisers are remembered (accounts are
/// never deleted); campaign owners are read per click.
#[derive(Debug, Default)]
pub struct Billing {
    known_advertisers: rustc_hash::FxHashSet<String>,
}

impl Billing {
    /// `Ok(())` if a charge (or refund) of `advertiser_id` for `campaign_id` may be booked, else why not.
    pub fn check(&mut self, db: &dyn Database, advertiser_id: &str, campaign_id: &str) -> Result<std::result::Result<(), Unbillable>> {
        if !self.known_advertisers.contains(advertiser_id) {
            if db.advertiser(advertiser_id)?.is_none() {
                return Ok(Err(Unbillable::UnknownAdvertiser));
            }
            self.known_advertisers.insert(advertiser_id.to_string());
        }
        if let Some(c) = db.campaign(campaign_id)? {
            if c.advertiser_id != advertiser_id {
                return Ok(Err(Unbillable::CampaignOfAnotherAdvertiser { owner: c.advertiser_id }));
            }
        }
        Ok(Ok(()))
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
