//! # rtb-ops
//!
//! The operators of a cost-per-click sponsored-product ad system (the spec's four statements and three
//! workers) on top of [`rtb_stream`], with the event schemas they read and the sinks they write.
//!
//! ## Layout
//! - [`schema`] — the four wire schemas (serde), a fast RFC 3339 codec, validating decoders with typed
//!   rejection reasons.
//! - [`wire`] — decoders from log records to operator inputs, for the runtime.
//! - [`sink`] — the [`Cache`](sink::Cache) and [`Database`](sink::Database) traits, embedded (journaled) and in-memory
//!   implementations, and the conformance checks every implementation must pass.
//! - [`ranking`] — smoothed pCTR, eligibility and generalized-second-price CPC as pure, exact functions.
//! - [`ops`] — the operators: ranking and performance statements, conversion matching, duplicate-click
//!   detection, balance, budget and compensation workers.
//! - [`calendar`] — budget days in an advertiser's time zone.
//! - [`config`] — typed configuration with defaults.
//! - [`registry`] — the CPC schemas, seven operator kinds (typed settings) and embedded sink backends,
//!   registered by name in an `rtb_stream::registry::Registry`.
//!
//! ## Example
//! The spec's duplicate-click example: three clicks of one device on one ad within seconds, 1 200 KRW
//! each, give one compensation refunding 2 400 KRW when the 5-minute window closes.
//! ```
//! use rtb_ops::ops::dedup::{DedupConfig, DuplicateClickDetector};
//! use rtb_ops::schema::{decode_ad_event, rfc3339, CompensationEvent};
//! use rtb_stream::{Harness, Record, SourceCoord, StateScope};
//!
//! let detector = DuplicateClickDetector::new(&StateScope::in_memory(), DedupConfig::default())?;
//! let mut h = Harness::new(detector);
//! for (offset, t) in ["10:30:15", "10:30:18", "10:30:22"].into_iter().enumerate() {
//!     let json = format!(
//!         r#"{{"event_type":"CLICK","timestamp":"2024-01-15T{t}Z","device_id":"device_12345",
//!         "ad_id":"ad_001","campaign_id":"campaign_100","advertiser_id":"advertiser_50",
//!         "placement":"HOME","category":"electronics","bid_price":1500,"actual_price":1200}}"#
//!     );
//!     let source = SourceCoord::new("ad-events", 0, offset as u64);
//!     let now = rfc3339::parse("2024-01-15T10:31:00Z")?;
//!     let click = decode_ad_event(json.as_bytes(), &source, now)?;
//!     h.process(Record::new(click.device_id.clone(), click.clone().into(), click.timestamp, source))?;
//! }
//! h.advance_watermark(rfc3339::parse("2024-01-15T10:35:15Z")? - 1)?; // t0 + 5 min − 1
//! let out = h.drain();
//! let comp: CompensationEvent = serde_json::from_slice(&out[0].record.payload)?;
//! assert_eq!((out.len(), comp.duplicate_click_count, comp.refund_amount), (1, 3, 2400));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod calendar;
pub mod config;
pub mod error;
pub mod ops;
pub mod ranking;
pub mod registry;
pub mod schema;
pub mod sink;
pub mod wire;

pub use config::OpsConfig;
pub use error::{Error, Result};
