//! An embedded partitioned log with Kafka's key partitioner, in memory or on disk.
//!
//! - [`EmbeddedLog`] — topics, partitions, appends, reads, waiting for new records, consumer-group offsets,
//!   retention.
//! - [`murmur2`] / [`partition_for_key`] — Kafka's default partitioner, bit for bit.
//! - Durable layout (`EmbeddedLog::open(dir)`):
//!   `dir/topics/<topic>/topic.json`, `dir/topics/<topic>/<partition>/<base offset:020>.log` (segments of
//!   CRC32-checked frames), `dir/topics/<topic>/<partition>/durable.ckpt` (how far the partition is known
//!   fsynced) and `dir/group-offsets.json`.
//! - Recovery rule (details on [`EmbeddedLog`]): opening truncates only a **torn tail** — a bad or partial
//!   frame in a partition's newest segment, at or after the partition's last durable point (its last
//!   flush or segment roll), with no valid frame after it. Any other damage (before the durable point,
//!   followed by a valid frame, in an older segment, missing files) is refused with
//!   [`crate::Error::LogCorrupt`] naming the file, the byte and the partition, and never truncated; a
//!   consumer group committed past a partition's recovered end is refused with
//!   [`crate::Error::LogBehindConsumer`].

mod checkpoint;
mod disk;
mod embedded;
mod frame;
mod memory;
mod meta;
mod partitioner;
mod segment;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::SourceCoord;
use crate::time::Timestamp;

pub use embedded::EmbeddedLog;
pub use partitioner::{murmur2, partition_for_key};

/// Tuning of an [`EmbeddedLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// A partition starts a new segment once the current one would exceed this many bytes (default 64 MiB;
    /// at most 1 GiB). Retention deletes whole segments, so this is also its granularity.
    pub segment_bytes: u64,
    /// Durable mode: one sparse-index entry per this many bytes of segment (default 4 KiB). Smaller means
    /// faster random reads and more memory.
    pub index_interval_bytes: u64,
    /// Durable mode: bytes of the newest records per partition kept in memory to serve consumers that keep
    /// up without touching the files (default 4 MiB).
    pub cache_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            index_interval_bytes: 4 << 10,
            cache_bytes: 4 << 20,
        }
    }
}

impl LogOptions {
    /// The options with `segment_bytes` clamped to what the segment index can address.
    pub(crate) fn normalized(mut self) -> Self {
        self.segment_bytes = self.segment_bytes.clamp(1, 1 << 30);
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self
    }
}

/// A topic's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// How long records are kept (at least 1 ms); `None` keeps them forever. Stored as `retention_ms`, in
    /// milliseconds, as before.
    #[serde(rename = "retention_ms", default, with = "crate::span::serde_ms_opt")]
    pub retention: Option<std::time::Duration>,
}

/// A record to append.
#[derive(Clone, Debug, PartialEq)]
pub struct ProduceRecord {
    /// Partitioning key (Kafka's murmur2 partitioner picks the partition from it).
    pub key: Option<Vec<u8>>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Event time.
    pub timestamp: Timestamp,
    /// Explicit partition (overrides the key).
    pub partition: Option<u32>,
    /// Where this record was derived from, for repartition stages: consumers use it to skip duplicates
    /// written again after a crash.
    pub origin: Option<SourceCoord>,
}

/// A record read from the log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Event time given by the producer.
    pub timestamp: Timestamp,
    /// Key bytes.
    pub key: Option<Arc<[u8]>>,
    /// Payload bytes.
    pub payload: Arc<[u8]>,
    /// Origin coordinates (repartitioned records).
    pub origin: Option<SourceCoord>,
}

impl LogRecord {
    /// The record's coordinates.
    pub fn coord(&self) -> SourceCoord {
        SourceCoord {
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            offset: self.offset,
        }
    }
}
