//! # rtb-stream
//!
//! Keyed, event-time stream processing in the spirit of Kafka Streams and Flink's DataStream API, as a
//! plain Rust library. It knows nothing about any business domain.
//!
//! ## Layout
//! - [`record`] — records: key, value, event time, source coordinates.
//! - [`time`] — timestamps and per-partition watermarks with idleness.
//! - [`codec`] — byte codecs behind one trait (bincode for state, JSON for the wire).
//! - [`state`] — keyed state stores (in-memory, sled) committed atomically with source offsets.
//! - [`window`] — tumbling, hopping and session windows with grace and late-record policies.
//! - [`join`] — interval joins (inner, left outer; eager pairs or one group per left row).
//! - [`timer`] — per-key event-time and processing-time timers.
//! - [`operator`] — the operator trait and a hand-driven harness.
//! - [`log`] — an embedded partitioned log (in-memory or on disk) with Kafka's key partitioner.
//! - [`io`] — the traits the runtime reads and appends through (`LogIo`, `PartitionReader`, `Producer`);
//!   the embedded log implements them, a Kafka client can too.
//! - `kafka` (feature `kafka`, on by default) — the same traits over a Kafka cluster (rdkafka), and a
//!   state backend kept in changelog topics.
//! - [`span`] — spans of time are `Duration`s at the API; the conversions to event-time milliseconds.
//! - [`runtime`] — runs operators over partitions, feeds watermarks, commits, shuts down cleanly.
//! - [`registry`] — operator kinds, event schemas and sink backends registered by name, for declarative
//!   topologies.
//!
//! ## Example
//! Spans (window sizes, grace, lateness, timeouts) are [`std::time::Duration`]s; event times are
//! [`Timestamp`]s, milliseconds since the epoch (see [`span`]).
//! ```
//! use std::time::Duration;
//! use rtb_stream::state::StateScope;
//! use rtb_stream::window::{Tumbling, WindowedAggregate, LatePolicy, WindowEvent, Count};
//!
//! let scope = StateScope::in_memory();
//! let minute = Tumbling::of(Duration::from_secs(60));
//! let mut counts = WindowedAggregate::new(&scope, "clicks", minute, Count, Duration::ZERO, LatePolicy::Drop)
//!     .expect("open state");
//! let mut out = Vec::new();
//! counts.process("ad-1".to_string(), 1_000, &(), &mut out);
//! counts.process("ad-1".to_string(), 59_999, &(), &mut out);
//! counts.process("ad-1".to_string(), 60_000, &(), &mut out); // next window: [60 000, 120 000)
//! counts.on_watermark(60_000, &mut out);
//! assert!(matches!(&out[..], [WindowEvent::Final { acc: 2, .. }]));
//! ```

pub mod codec;
pub mod error;
pub mod io;
pub mod join;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod operator;
pub mod record;
pub mod registry;
pub mod runtime;
pub mod span;
pub mod state;
pub mod time;
pub mod timer;
pub mod window;

pub use error::{Error, Result};
pub use operator::{Context, DeadLetter, Harness, Operator};
pub use record::{Record, SourceCoord};
pub use state::{KeyedStore, StateScope, StoreBackend, WriteBatch};
pub use time::{Timestamp, WatermarkConfig, WatermarkTracker};
