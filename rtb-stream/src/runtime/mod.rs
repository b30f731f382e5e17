//! Runs operators over the partitions of a log ([`LogIo`](crate::io::LogIo): the embedded log, or any
//! other implementation): one OS thread per (consumer group, partition) task, watermarks fed from the
//! records, state committed atomically with the offsets it reflects — for all tasks of the process in
//! shared group-commit rounds — clean shutdown.
//!
//! ## What a task does
//! 1. Opens its state scope (`StateScope::new(backend, "group/partition")`, see [`task_scope`]) and
//!    restores the committed offsets, watermark and origin marks; builds its operator with the factory.
//! 2. Loops: reads up to `max_poll_records` from partition `p` of each input topic; per record:
//!    - a record whose `origin` was already applied (per origin partition, the highest origin offset
//!      applied is remembered) is skipped — repartition stages are idempotent;
//!    - decodes it; a failure becomes a [`DeadLetter`](crate::operator::DeadLetter);
//!    - observes its event time in a [`WatermarkTracker`](crate::time::WatermarkTracker) over the task's
//!      input partitions, calls `process` (with the watermark *before* this record), then `on_watermark`
//!      if the watermark advanced.
//!
//!    After each poll: idle ticks (processing time) may advance the watermark, `on_processing_time` runs,
//!    outputs are appended to their topics and dead letters, as JSON, to `dead_letter_topic`.
//! 3. Every `commit_interval` (epochs aligned across tasks): `flush_state` + offsets + watermark + stream
//!    time per source + origin marks go into **one** [`WriteBatch`](crate::state::WriteBatch); the batches
//!    of every task that commits in the same moment are applied together in one atomic write, after the
//!    runtime's commit barriers (e.g. sinks made durable) — one flush per round for the whole process (see
//!    `commit.rs`). Outputs are appended before the commit, so after a crash they may be written again (at
//!    least once); consumers skip them by origin.
//!
//!    Idleness: an input partition is idle only when it is caught up (nothing left to read) and quiet for
//!    the idle timeout; a stalled process is not a quiet partition. Timestamp outliers (see
//!    [`JobConfig::max_ahead`]) are set aside without moving the watermark.
//! 4. Stops on the [`ShutdownToken`] (finishes the current poll, commits), at the end of the input in
//!    `stop_at_end` mode (watermark jumps to `Timestamp::MAX`, windows fire, commit), on an error (the task
//!    fails with [`Error::Task`](crate::Error::Task), every other task is stopped, [`Runtime::join`] returns
//!    the error) or on an [`AbortHandle`] (a simulated crash: no commit).
//!
//! Dead letters need a `dead_letter_topic`: without one, a dead letter fails the task (it is never only
//! logged).

mod align;
mod commit;
mod ends;
mod member;
mod metrics;
mod repartition;
mod runner;
mod shutdown;
mod task;

use std::time::Duration;

use crate::log::{LogRecord, ProduceRecord};
use crate::record::Record;
use crate::time::WatermarkConfig;

pub use metrics::{GroupCounters, GroupMetrics, RuntimeMetrics, RuntimeReport};
pub use repartition::Repartition;
pub use commit::CommitBarrier;
pub use runner::{committed_watermark, task_scope, Clock, Feed, Runtime};
pub use shutdown::{AbortHandle, ShutdownToken};

/// A record an operator sends to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// The record.
    pub record: ProduceRecord,
}

/// Turns a log record into the operator's typed input. An `Err` becomes a dead letter with its reason.
pub trait Decoder<K, V>: Send + Sync + 'static {
    /// Decodes one record.
    fn decode(&self, rec: &LogRecord) -> std::result::Result<Record<K, V>, String>;
}

impl<K, V, F> Decoder<K, V> for F
where
    F: Fn(&LogRecord) -> std::result::Result<Record<K, V>, String> + Send + Sync + 'static,
{
    fn decode(&self, rec: &LogRecord) -> std::result::Result<Record<K, V>, String> {
        self(rec)
    }
}

/// How a job runs.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Consumer group; also the state namespace (must not contain `/`).
    pub group: String,
    /// Co-partitioned input topics: task `i` reads partition `i` of each (checked: `NotCoPartitioned`).
    pub inputs: Vec<String>,
    /// Watermark generation over the task's input partitions.
    pub watermark: WatermarkConfig,
    /// How often state and offsets are committed (default 200 ms; zero commits after every poll).
    pub commit_interval: Duration,
    /// Records read per input partition per poll (default 1024).
    pub max_poll_records: usize,
    /// Topic receiving dead letters as JSON of [`crate::operator::DeadLetter`].
    pub dead_letter_topic: Option<String>,
    /// Topic receiving late records ([`crate::Context::late`]) as JSON of [`crate::operator::DeadLetter`];
    /// without one they go to `dead_letter_topic` (still counted as late).
    pub late_topic: Option<String>,
    /// Batch mode: stop when every input partition is drained, then advance the watermark to
    /// `Timestamp::MAX`, fire, commit and return. An input is drained at the end offset it had when the task
    /// started, or, if a job of the same runtime produces to it (see `outputs`), once every producer task
    /// has finished and it is read to its end. The `Timestamp::MAX` watermark is committed too: a later run
    /// of the same group treats every event time as late.
    pub stop_at_end: bool,
    /// Topics the job's operator produces to (dead letters and late records aside). In batch mode,
    /// consumers of these topics in the same runtime wait for this job to finish.
    pub outputs: Vec<String>,
    /// Inputs written by a repartition, with the topic their records come from: the task keeps one
    /// watermark slot per upstream partition from the start, so its watermark waits for every upstream
    /// partition (idleness aside), not only those it has heard from.
    pub upstream: Vec<Upstream>,
    /// Timestamp outliers (opt-in; `None` by default): a record more than this far ahead of the data
    /// seen so far (in a live run: ahead of the wall clock too) whose next record is back near the old time
    /// is set aside as a dead letter (`TIMESTAMP_OUTLIER`) and does not move the watermark; a record followed
    /// by others at the new time is a real jump and is applied. Only records of inputs that no job of the
    /// runtime produces to (see `outputs`) are judged — clients' clocks: a topic that jobs produce to
    /// interleaves several producers (a repartition topic, an operator's output), where "the next record"
    /// says nothing about a record's clock, and repartitioned records were judged where they were read.
    /// Spawn the jobs that produce to a topic before those that read it.
    pub max_ahead: Option<Duration>,
    /// A record more than this far behind the watermark is not applied: it goes to the late-records
    /// output (`LATE`). Judged, like `max_ahead`, only for clients' records (inputs that no job of the
    /// runtime produces to): what a job of the runtime produced — a refund decided upstream, a
    /// repartitioned record — was judged where it was first read, and is always applied. `None` (the
    /// default) leaves lateness to the operator.
    pub max_behind: Option<Duration>,
    /// Event-time alignment with every other aligned job of the runtime, with this much drift (default
    /// `None`: off): a task processes a record only once no aligned task has a record more than the drift
    /// earlier still to process, so that jobs reading what other jobs write to a store see it as of each
    /// record's time (up to the drift). For batch replays of recorded traffic, where every input is there
    /// from the start and stages would otherwise run hours of event time apart; a live run's inputs arrive
    /// in time already. See `runtime::align`.
    pub align: Option<Duration>,
}

/// An input written by a repartition: where its records come from (see [`JobConfig::upstream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The repartitioned input topic.
    pub input: String,
    /// The topic its records were read from (their `origin` topic).
    pub origin_topic: String,
    /// Partitions of `origin_topic`.
    pub origin_partitions: u32,
}

impl JobConfig {
    /// A configuration with the defaults for everything but the group and the inputs.
    pub fn new(group: impl Into<String>, inputs: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            group: group.into(),
            inputs: inputs.into_iter().map(Into::into).collect(),
            watermark: WatermarkConfig::default(),
            commit_interval: Duration::from_millis(200),
            max_poll_records: 1024,
            dead_letter_topic: None,
            late_topic: None,
            stop_at_end: false,
            outputs: Vec::new(),
            upstream: Vec::new(),
            max_ahead: None,
            max_behind: None,
            align: None,
        }
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        Self::new(String::new(), Vec::<String>::new())
    }
}

/// Which task an operator is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Consumer group.
    pub group: String,
    /// Partition of every input this task reads.
    pub partition: u32,
}
