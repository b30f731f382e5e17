//! The one error type of `rtb-stream`.

use std::path::PathBuf;

/// Everything that can fail in `rtb-stream`.
///
/// Variants are named after what failed and carry the context a user needs to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record could not be decoded into the operator's input type.
    #[error("decode failed for {topic}[{partition}]@{offset}: {reason}")]
    Decode {
        /// Source topic.
        topic: String,
        /// Source partition.
        partition: u32,
        /// Source offset.
        offset: u64,
        /// Why the bytes were rejected.
        reason: String,
    },
    /// Encoding a value for a state store failed.
    #[error("state encode failed in store `{store}`: {reason}")]
    StateEncode {
        /// The store name.
        store: String,
        /// The codec's message.
        reason: String,
    },
    /// Decoding a value read back from a state store failed (corrupt or incompatible state).
    #[error("state decode failed in store `{store}`: {reason}")]
    StateDecode {
        /// The store name.
        store: String,
        /// The codec's message.
        reason: String,
    },
    /// Opening a state backend failed.
    #[error("cannot open state at {path}: {source}")]
    StateOpen {
        /// Where the state lives.
        path: PathBuf,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading state failed.
    #[error("state read failed: {0}")]
    StateRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An atomic state + offsets commit failed; nothing of the batch was applied.
    #[error("state commit failed: {0}")]
    StateCommit(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A topic that does not exist was named.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// A partition outside the topic's range was named.
    #[error("topic `{topic}` has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// A topic was created twice with different settings.
    #[error("topic `{topic}` already exists with {existing} partitions, asked for {requested}")]
    TopicMismatch {
        /// The topic.
        topic: String,
        /// Partitions it has.
        existing: u32,
        /// Partitions asked for.
        requested: u32,
    },
    /// Inputs of a keyed operator are not co-partitioned.
    #[error("inputs are not co-partitioned: {0}")]
    NotCoPartitioned(String),
    /// The embedded log's files could not be read or written.
    #[error("log I/O on {path}: {source}")]
    LogIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded log's files are corrupt beyond the last valid record.
    #[error("log corrupt in {path} at byte {position}: {reason}")]
    LogCorrupt {
        /// The file.
        path: PathBuf,
        /// Byte position.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// An operator failed on a record.
    #[error("operator `{operator}` failed on {topic}[{partition}]@{offset}: {reason}")]
    Operator {
        /// Operator id.
        operator: String,
        /// Source topic.
        topic: String,
        /// Source partition.
        partition: u32,
        /// Source offset.
        offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// A sink (an external effect) failed.
    #[error("sink `{sink}` failed: {reason}")]
    Sink {
        /// The sink.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// A partition task stopped with an error.
    #[error("task {group}/{topic}[{partition}] failed: {source}")]
    Task {
        /// Consumer group.
        group: String,
        /// Input topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The underlying error.
        #[source]
        source: Box<Error>,
    },
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Generic I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A consumer's position in a partition is past the partition's end: the records it consumed are
    /// missing from the log (lost or damaged files), and appending would hand their offsets to new
    /// records it would then skip. Nothing is repaired automatically.
    #[error(
        "{consumer} is at offset {committed} of {topic}[{partition}] but the log ends at offset {end}: \
         records it consumed are missing; refusing to reuse their offsets"
    )]
    LogBehindConsumer {
        /// Who holds the position (e.g. "consumer group `g`").
        consumer: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The consumer's next offset.
        committed: u64,
        /// The partition's end offset.
        end: u64,
    },
    /// Reading from a Kafka partition failed (after the retries of transient errors).
    #[error("kafka consume from {topic}[{partition}] at offset {offset}: {reason}")]
    KafkaConsume {
        /// The topic (as named on the cluster, prefix included).
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset being read (or probed).
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// Producing to Kafka failed (after librdkafka's own retries, or ours for a full queue).
    #[error("kafka produce to {topic}{}: {reason}", partition.map(|p| format!("[{p}]")).unwrap_or_default())]
    KafkaProduce {
        /// The topic (as named on the cluster, prefix included).
        topic: String,
        /// The partition, when one was chosen.
        partition: Option<u32>,
        /// What failed.
        reason: String,
    },
    /// A Kafka admin or metadata request failed (topic creation, metadata, watermarks).
    #[error("kafka admin on topic `{topic}`: {reason}")]
    KafkaAdmin {
        /// The topic (as named on the cluster, prefix included).
        topic: String,
        /// What failed.
        reason: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps any backend error as a commit failure.
    pub fn commit(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::StateCommit(Box::new(e))
    }
    /// Wraps any backend error as a read failure.
    pub fn read(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::StateRead(Box::new(e))
    }
}
