//! Decoders from log records to operator inputs, for the runtime.
//!
//! Each turns a [`LogRecord`] into a `Record<String, Event>` whose event time is the event's `timestamp`
//! field (not the producer's log timestamp) and whose key is the log key (lossy UTF-8). A rejection is the
//! [`Invalid`] reason as text, which the runtime writes to the dead-letter output
//! with the record's coordinates. The closures returned by the `*_decoder` methods satisfy the runtime's
//! `Decoder` trait (`Fn(&LogRecord) -> Result<Record<K, V>, String> + Send + Sync + 'static`).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use rtb_stream::log::LogRecord;
use rtb_stream::Record;

use crate::config::TopicNames;
use crate::ops::MatchInput;
use crate::schema::{AdEvent, CampaignEvent, CompensationEvent, ConversionEvent, Invalid, ValidationConfig, Validator};

/// The processing time used for the future-timestamp check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock (live runs).
    System,
    /// A fixed instant (tests, replays of recorded traffic).
    Fixed(i64),
    /// No future-timestamp check.
    Unchecked,
}

impl Clock {
    fn now(self) -> Option<i64> {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok()),
            Clock::Fixed(t) => Some(t),
            Clock::Unchecked => None,
        }
    }
}

/// Validating decoders for the four topics.
///
/// Clones share a cache of recent `ad-events` verdicts ([`AdCache`]): the five consumer groups of
/// `ad-events` (and the stage reading its repartitioned copy, by origin) decode each record once, and all
/// get the same verdict.
#[derive(Debug, Clone)]
pub struct WireDecoder {
    /// Limits.
    pub validator: Validator,
    /// Processing-time source.
    pub clock: Clock,
    /// Topic names (to tell the matcher's two inputs apart).
    pub topics: TopicNames,
    cache: Arc<AdCache>,
}

/// A decoded `ad-events` record, or why it is invalid.
type Verdict = Arc<Result<Arc<AdEvent>, String>>;

/// Shards of [`AdCache`]: partition `p` uses shard `p % SHARDS` (alone, up to this many partitions).
const SHARDS: usize = 64;
/// Verdicts kept per partition: how far behind the first decoder of a record another may be and still find it.
const CACHED_PER_PARTITION: usize = 8_192;

/// The most recent verdicts per `ad-events` partition, by offset.
#[derive(Debug)]
pub struct AdCache {
    shards: Vec<Mutex<Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    partition: Option<u32>,
    /// Increasing offsets, with the payload each verdict was made from.
    entries: VecDeque<(u64, Arc<[u8]>, Verdict)>,
}

impl Default for AdCache {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(Ring::default())).collect() }
    }
}

impl AdCache {
    /// The verdict for `payload` at (`partition`, `offset`): the cached one if it was made from the same
    /// bytes (so that two logs, or a replaced one, never share verdicts), else `decode`'s (cached if it is
    /// the newest).
    fn get_or_decode(
        &self,
        partition: u32,
        offset: u64,
        payload: &Arc<[u8]>,
        decode: impl FnOnce() -> Result<Arc<AdEvent>, String>,
    ) -> Verdict {
        let shard = &self.shards[partition as usize % SHARDS];
        {
            let ring = shard.lock();
            if ring.partition == Some(partition) {
                if let Ok(i) = ring.entries.binary_search_by_key(&offset, |(o, _, _)| *o) {
                    let (_, bytes, verdict) = &ring.entries[i];
                    if Arc::ptr_eq(bytes, payload) || **bytes == **payload {
                        return Arc::clone(verdict);
                    }
                }
            }
        }
        let verdict: Verdict = Arc::new(decode());
        let mut ring = shard.lock();
        if ring.partition.is_none() {
            ring.partition = Some(partition);
        }
        if ring.partition == Some(partition) && ring.entries.back().is_none_or(|(o, _, _)| *o < offset) {
            if ring.entries.len() == CACHED_PER_PARTITION {
                ring.entries.pop_front();
            }
            ring.entries.push_back((offset, Arc::clone(payload), Arc::clone(&verdict)));
        }
        verdict
    }
}

fn key_of(rec: &LogRecord) -> String {
    rec.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default()
}

fn wrap<V>(rec: &LogRecord, r: Result<V, Invalid>, ts: impl Fn(&V) -> i64) -> Result<Record<String, V>, String> {
    match r {
        Ok(v) => {
            let t = ts(&v);
            Ok(Record::new(key_of(rec), v, t, rec.coord()))
        }
        Err(e) => Err(e.to_string()),
    }
}

impl WireDecoder {
    /// Decoders with the given limits and clock, default topic names.
    pub fn new(validation: ValidationConfig, clock: Clock) -> Self {
        Self { validator: Validator::new(validation), clock, topics: TopicNames::default(), cache: Arc::default() }
    }

    /// Decodes a `campaign-events` record.
    pub fn campaign(&self, rec: &LogRecord) -> Result<Record<String, CampaignEvent>, String> {
        wrap(rec, self.validator.campaign_event(&rec.payload, &rec.coord(), self.clock.now()), |e| e.timestamp)
    }

    /// Decodes an `ad-events` record (or a copy of one, by origin, in a repartition topic): once for all
    /// the decoders cloned from this one, see [`AdCache`].
    pub fn ad(&self, rec: &LogRecord) -> Result<Record<String, Arc<AdEvent>>, String> {
        let decode = || self.validator.ad_event(&rec.payload, &rec.coord(), self.clock.now()).map(Arc::new).map_err(|e| e.to_string());
        let slot = if *rec.topic == *self.topics.ad_events {
            Some((rec.partition, rec.offset))
        } else {
            rec.origin.as_ref().filter(|o| *o.topic == *self.topics.ad_events).map(|o| (o.partition, o.offset))
        };
        let verdict = match slot {
            Some((p, o)) => self.cache.get_or_decode(p, o, &rec.payload, decode),
            None => Arc::new(decode()),
        };
        match &*verdict {
            Ok(ev) => Ok(Record::new(key_of(rec), Arc::clone(ev), ev.timestamp, rec.coord())),
            Err(reason) => Err(reason.clone()),
        }
    }

    /// Decodes a `conversion-events` record.
    pub fn conversion(&self, rec: &LogRecord) -> Result<Record<String, ConversionEvent>, String> {
        wrap(rec, self.validator.conversion_event(&rec.payload, &rec.coord(), self.clock.now()), |e| e.timestamp)
    }

    /// Decodes a `compensation-events` record.
    pub fn compensation(&self, rec: &LogRecord) -> Result<Record<String, CompensationEvent>, String> {
        wrap(rec, self.validator.compensation_event(&rec.payload, &rec.coord(), self.clock.now()), |e| e.timestamp)
    }

    /// Decodes an input of the conversion matcher: `ad-events` records as [`MatchInput::Ad`], every other
    /// topic (the conversion topic or its repartition) as [`MatchInput::Conversion`].
    pub fn match_input(&self, rec: &LogRecord) -> Result<Record<String, MatchInput>, String> {
        if *rec.topic == *self.topics.ad_events {
            self.ad(rec).map(|r| r.map(MatchInput::Ad))
        } else {
            self.conversion(rec).map(|r| r.map(MatchInput::Conversion))
        }
    }

    /// [`Self::campaign`] as a runtime decoder.
    pub fn campaign_decoder(&self) -> impl Fn(&LogRecord) -> Result<Record<String, CampaignEvent>, String> + Send + Sync + 'static {
        let d = self.clone();
        move |r| d.campaign(r)
    }

    /// [`Self::ad`] as a runtime decoder.
    pub fn ad_decoder(&self) -> impl Fn(&LogRecord) -> Result<Record<String, Arc<AdEvent>>, String> + Send + Sync + 'static {
        let d = self.clone();
        move |r| d.ad(r)
    }

    /// [`Self::compensation`] as a runtime decoder.
    pub fn compensation_decoder(&self) -> impl Fn(&LogRecord) -> Result<Record<String, CompensationEvent>, String> + Send + Sync + 'static {
        let d = self.clone();
        move |r| d.compensation(r)
    }

    /// [`Self::match_input`] as a runtime decoder.
    pub fn match_input_decoder(&self) -> impl Fn(&LogRecord) -> Result<Record<String, MatchInput>, String> + Send + Sync + 'static {
        let d = self.clone();
        move |r| d.match_input(r)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    fn rec(topic: &str, payload: &str) -> LogRecord {
        LogRecord {
            topic: Arc::from(topic),
            partition: 3,
            offset: 9,
            timestamp: 0,
            key: Some(Arc::from(b"device_1".as_slice())),
            payload: Arc::from(payload.as_bytes()),
            origin: None,
        }
    }

    #[test]
    fn records_carry_event_time_key_and_coordinates() {
        let d = WireDecoder::new(ValidationConfig::default(), Clock::Fixed(1_705_314_600_000));
        let click = r#"{"event_type":"CLICK","timestamp":"2024-01-15T10:30:00Z","device_id":"device_1","ad_id":"a","campaign_id":"c","advertiser_id":"v","product_id":"p","placement":"HOME","category":"x","bid_price":10,"actual_price":10}"#;
        let r = d.ad(&rec("ad-events", click)).unwrap();
        assert_eq!((r.key.as_str(), r.timestamp, r.source.offset, r.source.partition), ("device_1", 1_705_314_600_000, 9, 3));
        assert!(matches!(d.match_input(&rec("ad-events", click)).unwrap().value, MatchInput::Ad(_)));
        let conv = r#"{"timestamp":"2024-01-15T10:30:00Z","device_id":"device_1","order_id":"o","product_id":"p","revenue_amount":5,"conversion_type":"PURCHASE"}"#;
        assert!(matches!(d.match_input(&rec("conversion-events-by-device", conv)).unwrap().value, MatchInput::Conversion(_)));
        let err = (d.ad_decoder())(&rec("ad-events", "{")).unwrap_err();
        assert!(err.starts_with("MALFORMED_JSON"), "{err}");
        let future = Clock::Fixed(1_705_314_600_000 - 2 * 3_600_000);
        let err = WireDecoder::new(ValidationConfig::default(), future).ad(&rec("ad-events", click)).unwrap_err();
        assert!(err.starts_with("FUTURE_TIMESTAMP"), "{err}");
    }

    fn at(topic: &str, partition: u32, offset: u64, payload: &str) -> LogRecord {
        LogRecord { partition, offset, ..rec(topic, payload) }
    }

    fn click(i: u64) -> String {
        format!(
            r#"{{"event_type":"CLICK","timestamp":"2024-01-15T10:30:00Z","device_id":"device_{i}","ad_id":"a{i}","campaign_id":"c","advertiser_id":"v","product_id":"p","placement":"HOME","category":"x","bid_price":10,"actual_price":10}}"#
        )
    }

    #[test]
    fn shared_verdicts_match_decoding_each_record_alone_across_partitions_and_copies() {
        let clock = Clock::Fixed(1_705_314_600_000);
        let shared = WireDecoder::new(ValidationConfig::default(), clock);
        let other_group = shared.clone();
        // Interleaved partitions and offsets, out of order, some invalid, read by two groups.
        let mut records = Vec::new();
        for i in 0..300u64 {
            let payload = if i % 37 == 0 { "{".to_string() } else { click(i) };
            records.push(at("ad-events", (i % 3) as u32, i / 3 + if i % 5 == 0 { 1_000 } else { 0 }, &payload));
        }
        for (i, r) in records.iter().enumerate() {
            let alone = WireDecoder::new(ValidationConfig::default(), clock).ad(r);
            let a = shared.ad(r);
            let b = other_group.ad(&records[records.len() - 1 - i]);
            assert_eq!(a, alone, "{i}");
            assert_eq!(b, WireDecoder::new(ValidationConfig::default(), clock).ad(&records[records.len() - 1 - i]));
        }
        // A repartitioned copy (another topic, key and coordinates; origin = the original) gets the original's
        // event with its own key and coordinates.
        let original = &records[1];
        let mut copy = at("ad-events-by-campaign", 7, 42, std::str::from_utf8(&original.payload).unwrap());
        copy.key = Some(Arc::from(b"c".as_slice()));
        copy.origin = Some(original.coord());
        let (o, c) = (shared.ad(original).unwrap(), other_group.ad(&copy).unwrap());
        assert_eq!(o.value, c.value);
        assert_eq!((c.key.as_str(), c.source.partition, c.source.offset), ("c", 7, 42));
        // Same coordinates, other bytes (another log in the same process): decoded afresh.
        let elsewhere = at("ad-events", original.partition, original.offset, "{");
        assert!(other_group.ad(&elsewhere).unwrap_err().starts_with("MALFORMED_JSON"));
    }
}
