//! Decoders from log records to operator inputs, for the runtime.
//!
//! Each turns a [`LogRecord`] into a `Record<String, Event>` whose event time is the event's `timestamp`
//! field (not the producer's log timestamp) and whose key is the log key (lossy UTF-8). A rejection is the
//! [`Invalid`] reason as text, which the runtime writes to the dead-letter output
//! with the record's coordinates. The closures returned by the `*_decoder` methods satisfy the runtime's
//! `Decoder` trait (`Fn(&LogRecord) -> Result<Record<K, V>, String> + Send + Sync + 'static`).

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
#[derive(Debug, Clone)]
pub struct WireDecoder {
    /// Limits.
    pub validator: Validator,
    /// Processing-time source.
    pub clock: Clock,
    /// Topic names (to tell the matcher's two inputs apart).
    pub topics: TopicNames,
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
        Self { validator: Validator::new(validation), clock, topics: TopicNames::default() }
    }

    /// Decodes a `campaign-events` record.
    pub fn campaign(&self, rec: &LogRecord) -> Result<Record<String, CampaignEvent>, String> {
        wrap(rec, self.validator.campaign_event(&rec.payload, &rec.coord(), self.clock.now()), |e| e.timestamp)
    }

    /// Decodes an `ad-events` record.
    pub fn ad(&self, rec: &LogRecord) -> Result<Record<String, AdEvent>, String> {
        wrap(rec, self.validator.ad_event(&rec.payload, &rec.coord(), self.clock.now()), |e| e.timestamp)
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
    pub fn ad_decoder(&self) -> impl Fn(&LogRecord) -> Result<Record<String, AdEvent>, String> + Send + Sync + 'static {
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
}
