//! Embedded partitioned log (being written: data types are fixed, the log itself lands next).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::SourceCoord;
use crate::time::Timestamp;

/// A topic's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions.
    pub partitions: u32,
    /// How long records are kept (ms); `None` keeps them forever.
    pub retention_ms: Option<i64>,
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
        SourceCoord { topic: Arc::clone(&self.topic), partition: self.partition, offset: self.offset }
    }
}
