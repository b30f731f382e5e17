//! [`EmbeddedLog`]: topics of partitions, in memory or on disk, behind one cheap-to-clone handle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::disk::{sync_dir, DiskPartition};
use super::memory::MemoryPartition;
use super::meta::{self, GroupOffsets};
use super::segment::io_err;
use super::{partition_for_key, LogOptions, LogRecord, ProduceRecord, TopicConfig};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Directory under the root that holds one directory per topic.
const TOPICS_DIR: &str = "topics";

/// An embedded, Kafka-like partitioned log.
///
/// - **Topics** have a fixed number of partitions; each partition is an append-only sequence of records
///   numbered by offsets from 0.
/// - **Partitioning** follows Kafka's producer: an explicit partition wins, else the key's murmur2 hash
///   ([`partition_for_key`]), else round-robin.
/// - **In-memory** ([`EmbeddedLog::in_memory`]) or **durable** ([`EmbeddedLog::open`]): per partition,
///   segment files of length-prefixed, CRC32-checked frames and a durable checkpoint; old records are read
///   back from the files, only a bounded cache of the newest stays in memory.
/// - **Consumer groups** commit offsets here (atomically replaced file in durable mode; the records before
///   a committed offset are fsynced first). Jobs run by the runtime commit their offsets together with
///   their state instead.
///
/// # Durability and recovery
///
/// Appends are written through (one positional write per append or batch, no fsync): a record whose
/// append returned survives a crash of the process. [`EmbeddedLog::flush`] fsyncs and then records, per
/// partition, its **durable point** (newest segment, its durable byte length, the next offset) in the
/// partition's checkpoint file; closing a segment (a roll) fsyncs it and moves the point to the new one.
/// Only a crash of the machine (or a kill in the middle of one large write) can therefore leave a partial
/// write, and only past the durable point. Opening the log applies this rule:
///
/// - a **torn tail** is a bad or partial frame in a partition's newest segment at or after its durable
///   point, with no valid frame (length, CRC and a plausible offset) anywhere after it: the bytes from
///   there on are dropped with a warning, the records before it are kept, appends continue after them;
/// - anything else is **corruption** and opening fails with [`Error::LogCorrupt`] naming the file, the
///   byte position and the partition, leaving the files untouched: a bad frame before the durable point,
///   a bad frame followed by a valid one, a valid frame with an unexpected offset, a segment shorter
///   than its durable length, a missing segment file, any bad frame in an older (closed) segment;
/// - a consumer group whose committed offset lies past a partition's recovered end fails with
///   [`Error::LogBehindConsumer`]: those offsets would otherwise be reused for new records.
///
/// A partition written before checkpoints existed (no checkpoint file) has no durable point yet; it is
/// opened with the scanning rule alone and gets its checkpoint at once. A machine crash in the middle of a
/// large unsynced batch may, rarely, persist a later page of the batch before an earlier one; the log then
/// refuses to open (a valid frame after a bad one) rather than guess: inspect the named file and cut it
/// at the named byte by hand if the records after it were never flushed.
///
/// The handle is cheap to clone (an `Arc`) and `Send + Sync`. At most one `EmbeddedLog` may have a given
/// directory open at a time (the log does not lock the directory).
///
/// ```
/// use rtb_stream::log::{EmbeddedLog, ProduceRecord, TopicConfig};
///
/// let log = EmbeddedLog::in_memory();
/// log.create_topic("clicks", TopicConfig { partitions: 4, retention: None })?;
/// let (partition, offset) = log.append("clicks", ProduceRecord {
///     key: Some(b"user-7".to_vec()),
///     payload: b"{}".to_vec(),
///     timestamp: 1_000,
///     partition: None,
///     origin: None,
/// })?;
/// let recs = log.read("clicks", partition, offset, 10)?;
/// assert_eq!(recs[0].payload.as_ref(), b"{}");
/// # Ok::<(), rtb_stream::Error>(())
/// ```
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    root: Option<PathBuf>,
    opts: LogOptions,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    groups: Mutex<GroupOffsets>,
}

struct Topic {
    name: Arc<str>,
    config: TopicConfig,
    partitions: Vec<Slot>,
    round_robin: AtomicU32,
}

struct Slot {
    store: Mutex<Store>,
    appended: Condvar,
}

enum Store {
    Memory(MemoryPartition),
    Disk(DiskPartition),
}

impl Store {
    fn end_offset(&self) -> u64 {
        match self {
            Store::Memory(m) => m.end_offset(),
            Store::Disk(d) => d.end_offset(),
        }
    }
    fn start_offset(&self) -> u64 {
        match self {
            Store::Memory(m) => m.start_offset(),
            Store::Disk(d) => d.start_offset(),
        }
    }
    fn append_all(&mut self, recs: Vec<LogRecord>) -> Result<Vec<u64>> {
        match self {
            Store::Memory(m) => Ok(recs.into_iter().map(|r| m.append(r)).collect()),
            Store::Disk(d) => d.append_all(recs),
        }
    }
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("root", &self.inner.root)
            .field("topics", &self.inner.topics.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Topic {
    fn slot(&self, partition: u32) -> Result<&Slot> {
        self.partitions.get(partition as usize).ok_or_else(|| Error::UnknownPartition {
            topic: self.name.to_string(),
            partition,
            partitions: self.config.partitions,
        })
    }

    fn pick_partition(&self, rec: &ProduceRecord) -> Result<u32> {
        match (rec.partition, &rec.key) {
            (Some(p), _) => self.slot(p).map(|_| p),
            (None, Some(key)) => Ok(partition_for_key(key, self.config.partitions)),
            (None, None) => Ok(self.round_robin.fetch_add(1, Ordering::Relaxed) % self.config.partitions),
        }
    }

    fn to_log_record(&self, partition: u32, rec: ProduceRecord) -> LogRecord {
        LogRecord {
            topic: Arc::clone(&self.name),
            partition,
            offset: 0,
            timestamp: rec.timestamp,
            key: rec.key.map(Arc::from),
            payload: Arc::from(rec.payload),
            origin: rec.origin,
        }
    }
}

impl EmbeddedLog {
    /// A volatile log with default options.
    pub fn in_memory() -> Self {
        Self::in_memory_with(LogOptions::default())
    }

    /// A volatile log; `opts.segment_bytes` sets the granularity of retention.
    pub fn in_memory_with(opts: LogOptions) -> Self {
        Self::from_parts(None, opts, GroupOffsets::new())
    }

    /// Opens (or creates) a durable log in `dir` with default options. See [`EmbeddedLog::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Opens (or creates) a durable log in `dir`: reads every topic's configuration, scans every segment
    /// and loads the committed group offsets. See "Durability and recovery" on [`EmbeddedLog`] for what is
    /// truncated (only a torn tail past a partition's last durable point) and what is refused:
    /// [`Error::LogCorrupt`] (naming the file, the byte and the partition) for damage to durable records
    /// or missing segment files, [`Error::LogBehindConsumer`] when a consumer group committed past a
    /// partition's recovered end. A file refused as corrupt is left untouched.
    pub fn open_with(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let topics_dir = root.join(TOPICS_DIR);
        std::fs::create_dir_all(&topics_dir).map_err(|e| io_err(&topics_dir, e))?;
        let groups = meta::load_groups(&root.join(meta::GROUPS_FILE))?;
        let log = Self::from_parts(Some(root), opts, groups);
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(|e| io_err(&topics_dir, e))? {
            let entry = entry.map_err(|e| io_err(&topics_dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !path.is_dir() || !meta::valid_topic_name(&name) {
                continue;
            }
            let Some(config) = meta::read_json::<TopicConfig>(&path.join(meta::TOPIC_FILE))? else {
                tracing::warn!(dir = %path.display(), "ignoring topic directory without configuration (interrupted create_topic)");
                continue;
            };
            let topic = log.build_topic(&name, config)?;
            topics.insert(name, Arc::new(topic));
        }
        *log.inner.topics.write() = topics;
        log.check_group_offsets()?;
        Ok(log)
    }

    /// Refuses a log some consumer group has committed past the end of (see [`Error::LogBehindConsumer`]).
    fn check_group_offsets(&self) -> Result<()> {
        let groups = self.inner.groups.lock().clone();
        for ((group, topic, partition), next) in groups {
            let end = match self.end_offset(&topic, partition) {
                Ok(end) => end,
                // The topic (or partition) is gone: only a group still at offset 0 lost nothing.
                Err(Error::UnknownTopic(_) | Error::UnknownPartition { .. }) => 0,
                Err(e) => return Err(e),
            };
            if next > end {
                return Err(Error::LogBehindConsumer {
                    consumer: format!("consumer group `{group}`"),
                    topic,
                    partition,
                    committed: next,
                    end,
                });
            }
        }
        Ok(())
    }

    fn from_parts(root: Option<PathBuf>, opts: LogOptions, groups: GroupOffsets) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                opts: opts.normalized(),
                topics: RwLock::new(BTreeMap::new()),
                groups: Mutex::new(groups),
            }),
        }
    }

    fn build_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        let name: Arc<str> = Arc::from(name);
        let opts = self.inner.opts;
        let partitions = (0..config.partitions)
            .map(|p| {
                let store = match &self.inner.root {
                    None => Store::Memory(MemoryPartition::new(opts.segment_bytes as usize)),
                    Some(root) => {
                        let dir = root.join(TOPICS_DIR).join(&*name).join(p.to_string());
                        Store::Disk(DiskPartition::open(dir, Arc::clone(&name), p, opts)?)
                    }
                };
                Ok(Slot { store: Mutex::new(store), appended: Condvar::new() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic { name, config, partitions, round_robin: AtomicU32::new(0) })
    }

    /// The directory of a durable log; `None` in memory.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.root.as_deref()
    }

    /// The options the log was opened with.
    pub fn options(&self) -> LogOptions {
        self.inner.opts
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.inner.topics.read().get(name).cloned().ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    /// Creates a topic. Creating an existing topic again with the same number of partitions is a no-op
    /// (its stored configuration is kept); with a different number it is [`Error::TopicMismatch`].
    /// Names follow Kafka's rule (1–249 of `[A-Za-z0-9._-]`); partitions must be at least 1.
    pub fn create_topic(&self, name: &str, cfg: TopicConfig) -> Result<()> {
        if !meta::valid_topic_name(name) {
            return Err(Error::Config(format!(
                "invalid topic name `{name}`: use 1 to 249 of [A-Za-z0-9._-], not `.` or `..`"
            )));
        }
        if cfg.partitions == 0 {
            return Err(Error::Config(format!("topic `{name}` needs at least one partition")));
        }
        if cfg.retention.is_some_and(|r| crate::span::ms(r) <= 0) {
            return Err(Error::Config(format!("topic `{name}`: retention must be at least 1 ms")));
        }
        let mut topics = self.inner.topics.write();
        if let Some(existing) = topics.get(name) {
            return if existing.config.partitions == cfg.partitions {
                Ok(())
            } else {
                Err(Error::TopicMismatch {
                    topic: name.to_string(),
                    existing: existing.config.partitions,
                    requested: cfg.partitions,
                })
            };
        }
        if let Some(root) = &self.inner.root {
            let topics_dir = root.join(TOPICS_DIR);
            let dir = topics_dir.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            sync_dir(&topics_dir)?;
            // The configuration goes in before the partitions: a directory without it is ignored on open.
            meta::write_json_atomic(&dir.join(meta::TOPIC_FILE), &cfg)?;
        }
        let topic = self.build_topic(name, cfg)?;
        topics.insert(name.to_string(), Arc::new(topic));
        Ok(())
    }

    /// A topic's configuration.
    pub fn topic_config(&self, name: &str) -> Result<TopicConfig> {
        self.topic(name).map(|t| t.config.clone())
    }

    /// Every topic with its configuration, by name.
    pub fn topics(&self) -> Vec<(String, TopicConfig)> {
        self.inner.topics.read().iter().map(|(n, t)| (n.clone(), t.config.clone())).collect()
    }

    /// Appends one record; returns its partition and offset. The partition is the explicit one, else the
    /// key's, else the next in round-robin order.
    pub fn append(&self, topic: &str, rec: ProduceRecord) -> Result<(u32, u64)> {
        let t = self.topic(topic)?;
        let p = t.pick_partition(&rec)?;
        let slot = t.slot(p)?;
        let rec = t.to_log_record(p, rec);
        let offset = {
            let mut store = slot.store.lock();
            match &mut *store {
                Store::Memory(m) => m.append(rec),
                Store::Disk(d) => d.append_all([rec])?.first().copied().unwrap_or_default(),
            }
        };
        slot.appended.notify_all();
        Ok((p, offset))
    }

    /// Appends records, each partitioned as by [`EmbeddedLog::append`]; returns `(partition, offset)` per
    /// input record, in input order. Records of one partition are written with one I/O. On an error, some
    /// records may have been appended.
    pub fn append_batch(&self, topic: &str, recs: Vec<ProduceRecord>) -> Result<Vec<(u32, u64)>> {
        let t = self.topic(topic)?;
        let mut by_partition: Vec<(Vec<usize>, Vec<LogRecord>)> =
            (0..t.partitions.len()).map(|_| (Vec::new(), Vec::new())).collect();
        let n = recs.len();
        for (i, rec) in recs.into_iter().enumerate() {
            let p = t.pick_partition(&rec)?;
            let group = &mut by_partition[p as usize];
            group.0.push(i);
            group.1.push(t.to_log_record(p, rec));
        }
        let mut out = vec![(0, 0); n];
        for (p, (indexes, records)) in by_partition.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            let slot = &t.partitions[p];
            let offsets = slot.store.lock().append_all(records)?;
            slot.appended.notify_all();
            for (i, off) in indexes.into_iter().zip(offsets) {
                out[i] = (p as u32, off);
            }
        }
        Ok(out)
    }

    /// Up to `max` records of a partition from offset `from`, in offset order. A `from` before the start
    /// offset (records deleted by retention) reads from the start offset; a `from` at or after the end
    /// offset returns nothing.
    pub fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        let t = self.topic(topic)?;
        let slot = t.slot(partition)?;
        let plan = match &*slot.store.lock() {
            Store::Memory(m) => return Ok(m.read(from, max)),
            Store::Disk(d) => d.plan_read(from, max),
        };
        // File reads happen without the partition lock, so appends are not blocked by them.
        plan.execute(max, &t.name, partition)
    }

    /// Every record of `topic` still held, partition by partition, each in offset order: a job's outputs,
    /// dead letters or late records, for tests and small programs (large topics: read by partition with
    /// [`EmbeddedLog::read`]).
    ///
    /// ```
    /// use rtb_stream::log::{EmbeddedLog, ProduceRecord, TopicConfig};
    /// let log = EmbeddedLog::in_memory();
    /// log.create_topic("out", TopicConfig { partitions: 2, retention: None })?;
    /// for p in [1, 0, 1] {
    ///     log.append("out", ProduceRecord { key: None, payload: vec![p as u8], timestamp: 0, partition: Some(p), origin: None })?;
    /// }
    /// let all = log.read_topic("out")?;
    /// assert_eq!(all.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>(), [(0, 0), (1, 0), (1, 1)]);
    /// # Ok::<(), rtb_stream::Error>(())
    /// ```
    pub fn read_topic(&self, topic: &str) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        for p in 0..self.topic_config(topic)?.partitions {
            let (mut from, end) = (self.start_offset(topic, p)?, self.end_offset(topic, p)?);
            while from < end {
                let recs = self.read(topic, p, from, 4_096)?;
                let Some(last) = recs.last() else { break };
                from = last.offset + 1;
                out.extend(recs);
            }
        }
        Ok(out)
    }

    /// Creates each of `topics` that does not exist yet with `cfg` (an existing topic is left as it is):
    /// the output, dead-letter and late topics a job names, in one call.
    pub fn ensure_topics<'a>(&self, topics: impl IntoIterator<Item = &'a str>, cfg: TopicConfig) -> Result<()> {
        for t in topics {
            match self.topic_config(t) {
                Ok(_) => {}
                Err(Error::UnknownTopic(_)) => self.create_topic(t, cfg.clone())?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The first offset still held (greater than 0 once retention deleted records).
    pub fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        let t = self.topic(topic)?;
        let start = t.slot(partition)?.store.lock().start_offset();
        Ok(start)
    }

    /// The next offset to be written.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        let t = self.topic(topic)?;
        let end = t.slot(partition)?.store.lock().end_offset();
        Ok(end)
    }

    /// Blocks until the partition's end offset is beyond `offset` (a record at `offset` exists) or
    /// `timeout` passes. Returns whether the record exists; `false` for an unknown topic or partition.
    pub fn wait_for(&self, topic: &str, partition: u32, offset: u64, timeout: Duration) -> bool {
        let Ok(t) = self.topic(topic) else { return false };
        let Ok(slot) = t.slot(partition) else { return false };
        let deadline = Instant::now() + timeout;
        let mut store = slot.store.lock();
        while store.end_offset() <= offset {
            if slot.appended.wait_until(&mut store, deadline).timed_out() {
                return store.end_offset() > offset;
            }
        }
        true
    }

    /// Commits a consumer group's next offset for a partition. In durable mode the records before `next`
    /// are made durable first (fsync, if a flush has not already done it) and the offsets file is replaced
    /// atomically before this returns, so a committed offset never points past records a crash could take
    /// back. `next` past the partition's end offset is refused with [`Error::LogBehindConsumer`].
    pub fn commit_group_offset(&self, group: &str, topic: &str, partition: u32, next: u64) -> Result<()> {
        let t = self.topic(topic)?;
        {
            let mut store = t.slot(partition)?.store.lock();
            let end = store.end_offset();
            if next > end {
                return Err(Error::LogBehindConsumer {
                    consumer: format!("consumer group `{group}`"),
                    topic: topic.to_string(),
                    partition,
                    committed: next,
                    end,
                });
            }
            if let Store::Disk(d) = &mut *store {
                d.sync_through(next)?;
            }
        }
        let mut groups = self.inner.groups.lock();
        let key = (group.to_string(), topic.to_string(), partition);
        if groups.get(&key) == Some(&next) {
            return Ok(());
        }
        let previous = groups.insert(key.clone(), next);
        if let Some(root) = &self.inner.root {
            if let Err(e) = meta::save_groups(&root.join(meta::GROUPS_FILE), &groups) {
                // Keep memory and disk in agreement.
                match previous {
                    Some(p) => groups.insert(key, p),
                    None => groups.remove(&key),
                };
                return Err(e);
            }
        }
        Ok(())
    }

    /// A consumer group's committed next offset for a partition, if it committed one.
    pub fn group_offset(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        self.topic(topic)?.slot(partition)?;
        let key = (group.to_string(), topic.to_string(), partition);
        Ok(self.inner.groups.lock().get(&key).copied())
    }

    /// Makes every append so far durable: fsyncs the written segments, then records each partition's new
    /// durable point in its checkpoint (opening the log refuses damage before that point instead of
    /// truncating it). A no-op in memory.
    pub fn flush(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        for t in topics {
            for slot in &t.partitions {
                if let Store::Disk(d) = &mut *slot.store.lock() {
                    d.sync()?;
                }
            }
        }
        Ok(())
    }

    /// Applies every topic's retention at processing time `now`: whole segments whose newest record is older
    /// than `now - retention` are deleted (a partially expired segment is kept whole). Offsets are not
    /// reused; the start offset moves forward.
    pub fn enforce_retention(&self, now: Timestamp) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        for t in topics {
            let Some(retention) = t.config.retention.map(crate::span::ms) else { continue };
            let cutoff = now.saturating_sub(retention);
            for slot in &t.partitions {
                match &mut *slot.store.lock() {
                    Store::Memory(m) => {
                        m.enforce_retention(cutoff);
                    }
                    Store::Disk(d) => {
                        d.enforce_retention(cutoff)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// In-memory log: drops the records of `partition` of `topic` before `offset`, in whole chunks of
    /// `segment_bytes` (so some records before it may stay), and moves the start offset forward — for a
    /// batch job whose consumers have all committed past them, so that its memory holds what is still to
    /// be read. A durable log keeps its records until retention deletes them: an error there.
    pub fn release_before(&self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let t = self.topic(topic)?;
        let mut store = t.slot(partition)?.store.lock();
        let result = match &mut *store {
            Store::Memory(m) => {
                m.release_before(offset);
                Ok(())
            }
            Store::Disk(_) => Err(Error::Config(format!(
                "topic `{topic}`: records of a durable log are deleted by retention, not released"
            ))),
        };
        result
    }

    /// Number of segment files of a partition (durable mode; 0 in memory). For tests and monitoring.
    pub fn segment_count(&self, topic: &str, partition: u32) -> Result<usize> {
        let t = self.topic(topic)?;
        let n = match &*t.slot(partition)?.store.lock() {
            Store::Memory(_) => 0,
            Store::Disk(d) => d.segment_count(),
        };
        Ok(n)
    }
}
