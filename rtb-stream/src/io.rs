//! Log I/O behind traits: what the [runtime](crate::runtime) needs from a partitioned log, so that the
//! embedded log and a Kafka cluster are two implementations of the same three traits (as
//! [`StoreBackend`](crate::state::StoreBackend) is for state).
//!
//! - [`LogIo`] — the log as a whole: topic metadata, a [`PartitionReader`] per task, one shared
//!   [`Producer`].
//! - [`PartitionReader`] — what one task reads: partition `p` of each of its input topics, by position
//!   (a Kafka implementation assigns those partitions to a consumer, seeks, and serves reads from a
//!   partition queue; the high watermark of its fetches is the end offset).
//! - [`GroupMember`] — optional: a process's membership in a consumer group that assigns and revokes
//!   partitions ([`LogIo::join_group`]; Kafka's group protocol), so that several processes share a job.
//! - [`Producer`] — appends outputs, dead letters and late records; `flush` makes everything sent so far
//!   durable (fsync of the embedded log; acknowledged by every in-sync replica on Kafka).
//!
//! A consumer group's committed offsets are **not** kept by the log: the runtime commits them inside the
//! task's state, atomically with the operator state they reflect (see the module docs of `runtime`).
//!
//! [`EmbeddedLog`] implements all three; so does `KafkaLog` (feature `kafka`, module `crate::kafka`).

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
pub use crate::log::{LogRecord, ProduceRecord};
use crate::log::EmbeddedLog;

/// A partitioned log the runtime reads inputs from and appends outputs to.
pub trait LogIo: Send + Sync + 'static {
    /// Number of partitions of `topic`; an error if the topic does not exist.
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// A reader of partition `partition` of each of `topics` (in that order: input `i` is `topics[i]`),
    /// for consumer group `group`.
    fn reader(&self, group: &str, topics: &[Arc<str>], partition: u32) -> Result<Box<dyn PartitionReader>>;

    /// The producer every task appends with.
    fn producer(&self) -> Arc<dyn Producer>;

    /// Joins consumer group `group` as a member that takes partitions of `topic` (a job's first input;
    /// its other inputs are co-partitioned) as the group assigns them: `handler` is called with every
    /// change of this member's assignment, from [`GroupMember::poll`] and [`GroupMember::leave`].
    /// `Ok(None)` (the default): the log has no group membership; every partition belongs to this process
    /// (the embedded log, which one process owns).
    fn join_group(&self, group: &str, topic: &str, handler: RebalanceHandler) -> Result<Option<Box<dyn GroupMember>>> {
        let _ = (group, topic, handler);
        Ok(None)
    }
}

/// A change of a group member's assignment (partition numbers of the job's inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// These partitions are now this member's: restore their state, then process them.
    Assigned(Vec<u32>),
    /// These partitions are taken away in an orderly rebalance: finish the batch, commit, stop. They are
    /// given to another member only once the handler has returned.
    Revoked(Vec<u32>),
    /// These partitions were lost (the member was expelled, e.g. it missed its session timeout): another
    /// member may own them already, so stop them **without** committing; the new owner redoes what was not
    /// committed (effects are idempotent).
    Lost(Vec<u32>),
}

/// Called with each [`Rebalance`] of a member, on the thread that polls it; an error stops the runtime.
pub type RebalanceHandler = Box<dyn FnMut(&Rebalance) -> Result<()> + Send>;

/// Membership of one process in a consumer group ([`LogIo::join_group`]).
pub trait GroupMember: Send {
    /// Keeps the membership alive (heartbeats, rebalances) for up to `timeout`, calling the handler with
    /// every change of the assignment before returning. Call it at least every few seconds.
    fn poll(&mut self, timeout: Duration) -> Result<()>;

    /// Leaves the group in order: the handler is called with the revocation of what is still assigned,
    /// then the partitions are handed to the other members without waiting for a session timeout.
    fn leave(self: Box<Self>) -> Result<()>;
}

/// Reads partition `p` of each input topic of one task, by position.
pub trait PartitionReader: Send {
    /// The first offset still held of input `input` (greater than 0 once retention deleted records).
    fn start_offset(&mut self, input: usize) -> Result<u64>;

    /// The next offset to be written to input `input` (its high watermark).
    fn end_offset(&mut self, input: usize) -> Result<u64>;

    /// Up to `max` records of input `input` from offset `from`, in offset order (records deleted by
    /// retention are skipped; nothing at or past the end).
    fn read(&mut self, input: usize, from: u64, max: usize) -> Result<Vec<LogRecord>>;

    /// Whether input `input` holds nothing at or after `next` as far as this reader knows now, without a
    /// round trip to the log (used to call a partition idle; [`PartitionReader::end_offset`] is the exact
    /// answer for where a batch ends). The embedded log knows its end exactly; a Kafka reader answers from
    /// its fetches (caught up once the fetcher reported the partition's end at `next`).
    fn caught_up(&mut self, input: usize, next: u64) -> Result<bool> {
        Ok(next >= self.end_offset(input)?)
    }

    /// Blocks until a record at `offset` of input `input` exists or `timeout` passes; returns whether it
    /// exists.
    fn wait(&mut self, input: usize, offset: u64, timeout: Duration) -> bool;
}

/// Appends records to topics.
pub trait Producer: Send + Sync {
    /// Appends `records` to `topic`, each partitioned by its explicit partition, else its key (Kafka's
    /// murmur2 partitioner), else round-robin. When this returns, the records survive a crash of the
    /// process (not necessarily of the machine: see [`Producer::flush`]).
    fn send(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<()>;

    /// Appends each `(topic, records)` of `batches`, in order (records bound for one partition keep the
    /// order given), and returns once all are appended as [`Producer::send`] would. A Kafka producer sends
    /// them all before waiting for the acknowledgements. Default: one `send` per batch.
    fn send_all(&self, batches: Vec<(String, Vec<ProduceRecord>)>) -> Result<()> {
        for (topic, records) in batches {
            self.send(&topic, records)?;
        }
        Ok(())
    }

    /// Makes every record sent so far durable.
    fn flush(&self) -> Result<()>;
}

impl LogIo for Arc<dyn LogIo> {
    fn partitions(&self, topic: &str) -> Result<u32> {
        (**self).partitions(topic)
    }

    fn reader(&self, group: &str, topics: &[Arc<str>], partition: u32) -> Result<Box<dyn PartitionReader>> {
        (**self).reader(group, topics, partition)
    }

    fn producer(&self) -> Arc<dyn Producer> {
        (**self).producer()
    }

    fn join_group(&self, group: &str, topic: &str, handler: RebalanceHandler) -> Result<Option<Box<dyn GroupMember>>> {
        (**self).join_group(group, topic, handler)
    }
}

impl LogIo for EmbeddedLog {
    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic_config(topic)?.partitions)
    }

    fn reader(&self, _group: &str, topics: &[Arc<str>], partition: u32) -> Result<Box<dyn PartitionReader>> {
        for t in topics {
            let n = self.topic_config(t)?.partitions;
            if partition >= n {
                return Err(crate::Error::Config(format!("topic `{t}` has {n} partitions; no partition {partition}")));
            }
        }
        Ok(Box::new(EmbeddedReader { log: self.clone(), topics: topics.to_vec(), partition }))
    }

    fn producer(&self) -> Arc<dyn Producer> {
        Arc::new(self.clone())
    }
}

impl Producer for EmbeddedLog {
    fn send(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<()> {
        self.append_batch(topic, records).map(drop)
    }

    fn flush(&self) -> Result<()> {
        EmbeddedLog::flush(self)
    }
}

/// [`PartitionReader`] of the embedded log.
#[derive(Debug)]
struct EmbeddedReader {
    log: EmbeddedLog,
    topics: Vec<Arc<str>>,
    partition: u32,
}

impl PartitionReader for EmbeddedReader {
    fn start_offset(&mut self, input: usize) -> Result<u64> {
        self.log.start_offset(&self.topics[input], self.partition)
    }

    fn end_offset(&mut self, input: usize) -> Result<u64> {
        self.log.end_offset(&self.topics[input], self.partition)
    }

    fn read(&mut self, input: usize, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        self.log.read(&self.topics[input], self.partition, from, max)
    }

    fn wait(&mut self, input: usize, offset: u64, timeout: Duration) -> bool {
        self.log.wait_for(&self.topics[input], self.partition, offset, timeout)
    }
}
