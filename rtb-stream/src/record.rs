//! Records and their source coordinates.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Where a record came from: topic, partition and offset. Unique per record, so it can serve as an
/// idempotency key when the record carries none of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceCoord {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
}

impl SourceCoord {
    /// Builds coordinates.
    pub fn new(topic: impl Into<Arc<str>>, partition: u32, offset: u64) -> Self {
        Self { topic: topic.into(), partition, offset }
    }
}

impl std::fmt::Display for SourceCoord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

/// A keyed record with its event time and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    /// Partitioning / grouping key.
    pub key: K,
    /// Payload.
    pub value: V,
    /// Event time (milliseconds since the Unix epoch, UTC).
    pub timestamp: Timestamp,
    /// Source coordinates.
    pub source: SourceCoord,
}

impl<K, V> Record<K, V> {
    /// Builds a record.
    pub fn new(key: K, value: V, timestamp: Timestamp, source: SourceCoord) -> Self {
        Self { key, value, timestamp, source }
    }
    /// Maps the value, keeping key, time and source.
    pub fn map<W>(self, f: impl FnOnce(V) -> W) -> Record<K, W> {
        Record { key: self.key, value: f(self.value), timestamp: self.timestamp, source: self.source }
    }
}
