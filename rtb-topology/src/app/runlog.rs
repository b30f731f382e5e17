//! The log `rtb run` works on — the embedded log under the data directory, or a Kafka cluster
//! (`--kafka`) — seen through what the run needs besides the runtime's traits: reading whole ranges
//! (resuming the generator, counting dead letters, finding the end of the data) and appending batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rtb_stream::io::{LogIo, PartitionReader};
use rtb_stream::kafka::KafkaLog;
use rtb_stream::log::{EmbeddedLog, LogRecord, ProduceRecord};
use rtb_stream::Result;

/// What `rtb run` reads and appends besides the runtime.
pub trait RunLog: Send + Sync {
    /// The log as the runtime sees it.
    fn io(&self) -> Arc<dyn LogIo>;
    /// Partitions of `topic`.
    fn partitions(&self, topic: &str) -> Result<u32>;
    /// The first offset still held.
    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64>;
    /// The end offset now.
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64>;
    /// The end offset of each `(topic, partition)` now.
    fn end_offsets(&self, partitions: &[(&str, u32)]) -> Result<Vec<u64>> {
        partitions.iter().map(|(t, p)| self.end_offset(t, *p)).collect()
    }
    /// The records from `from` on, up to `max`: all of them up to the end (fewer than `max` only at the
    /// end).
    fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<LogRecord>>;
    /// Appends every `(topic, records)` in order (see [`rtb_stream::io::Producer::send_all`]).
    fn append(&self, batches: Vec<(String, Vec<ProduceRecord>)>) -> Result<()>;
    /// Makes everything appended durable.
    fn flush(&self) -> Result<()>;
}

impl RunLog for EmbeddedLog {
    fn io(&self) -> Arc<dyn LogIo> {
        Arc::new(self.clone())
    }
    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic_config(topic)?.partitions)
    }
    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        EmbeddedLog::start_offset(self, topic, partition)
    }
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        EmbeddedLog::end_offset(self, topic, partition)
    }
    fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        EmbeddedLog::read(self, topic, partition, from, max)
    }
    fn append(&self, batches: Vec<(String, Vec<ProduceRecord>)>) -> Result<()> {
        for (topic, records) in batches {
            self.append_batch(&topic, records)?;
        }
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        EmbeddedLog::flush(self)
    }
}

/// A Kafka cluster as [`RunLog`]: reads through one cached reader per partition.
pub struct KafkaRunLog {
    log: KafkaLog,
    /// One reader per partition, each behind its own lock (partitions are read in parallel).
    readers: Mutex<HashMap<(String, u32), Shared>>,
}

type Shared = Arc<Mutex<Box<dyn PartitionReader>>>;

impl std::fmt::Debug for KafkaRunLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaRunLog").field("log", &self.log).finish_non_exhaustive()
    }
}

/// How long a read waits for records the end offset says exist.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl KafkaRunLog {
    /// Wraps `log`.
    pub fn new(log: KafkaLog) -> Self {
        Self { log, readers: Mutex::new(HashMap::new()) }
    }

    /// The Kafka log.
    pub fn kafka(&self) -> &KafkaLog {
        &self.log
    }
}

impl Drop for KafkaRunLog {
    fn drop(&mut self) {
        let readers: Vec<_> = self.readers.lock().drain().map(|(_, r)| r).collect();
        // Each `Arc` is the last one: no read runs while the log is dropped.
        rtb_stream::kafka::close_in_parallel(readers);
    }
}

impl RunLog for KafkaRunLog {
    fn io(&self) -> Arc<dyn LogIo> {
        Arc::new(self.log.clone())
    }
    fn partitions(&self, topic: &str) -> Result<u32> {
        LogIo::partitions(&self.log, topic)
    }
    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        let r = reader(&self.log, &self.readers, topic, partition)?;
        let mut r = r.lock();
        r.start_offset(0)
    }
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.log.end_offset(topic, partition)
    }
    fn end_offsets(&self, partitions: &[(&str, u32)]) -> Result<Vec<u64>> {
        self.log.end_offsets(partitions)
    }
    fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        let shared = reader(&self.log, &self.readers, topic, partition)?;
        let mut r = shared.lock();
        let mut out: Vec<LogRecord> = Vec::new();
        let mut end: Option<u64> = None;
        let started = Instant::now();
        loop {
            let next = out.last().map_or(from, |l| l.offset + 1);
            if out.len() >= max {
                break;
            }
            let got = r.read(0, next, max - out.len())?;
            if !got.is_empty() {
                out.extend(got);
                continue;
            }
            // Nothing buffered: at the end, or not fetched yet.
            let end = match end {
                Some(e) => e,
                None => *end.insert(self.log.end_offset(topic, partition)?),
            };
            if next >= end {
                break;
            }
            if started.elapsed() > READ_TIMEOUT {
                return Err(rtb_stream::Error::KafkaConsume {
                    topic: self.log.config().topic(topic),
                    partition,
                    offset: next,
                    reason: format!("the partition ends at {end} but nothing could be fetched for {READ_TIMEOUT:?}"),
                });
            }
            r.wait(0, next, Duration::from_millis(100));
        }
        Ok(out)
    }
    fn append(&self, batches: Vec<(String, Vec<ProduceRecord>)>) -> Result<()> {
        self.log.producer().send_all(batches)
    }
    fn flush(&self) -> Result<()> {
        self.log.producer().flush()
    }
}

/// The reader of `topic`[`partition`], created on first use.
fn reader(log: &KafkaLog, readers: &Mutex<HashMap<(String, u32), Shared>>, topic: &str, partition: u32) -> Result<Shared> {
    let key = (topic.to_string(), partition);
    if let Some(r) = readers.lock().get(&key) {
        return Ok(Arc::clone(r));
    }
    let r: Shared = Arc::new(Mutex::new(log.reader("rtb-run", &[Arc::from(topic)], partition)?));
    Ok(Arc::clone(readers.lock().entry(key).or_insert(r)))
}
