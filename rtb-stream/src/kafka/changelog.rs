//! [`ChangelogBackend`]: task state kept in Kafka changelog topics, atomic per task without transactions.
//!
//! The map lives in memory (as in [`JournalBackend`](crate::state::JournalBackend)); its durable form is
//! one changelog topic per consumer group (`{group}{suffix}`, as many partitions as the group has
//! tasks). Applying a batch (a commit round of the runtime: every committing task's state changes +
//! offsets + watermark) splits it by task scope — the first segment of every key is the task's scope
//! `group/partition` (see [`crate::runtime::task_scope`] and the key layout in [`crate::state`]) — and
//! writes each task's part as **one** record to partition `partition` of the group's changelog, then
//! applies the batch to the map once every record is acknowledged (`acks=all`). A task's state, offsets
//! and watermark of one commit are thus one record: restored all together or not at all.
//!
//! A part larger than [`ChangelogOptions::max_record_bytes`] is written as consecutive chunks of one
//! record sequence; restore applies it only once its last chunk is read (a crash between chunks leaves an
//! incomplete sequence that is ignored, and the next writer starts a new one).
//!
//! ## Record format
//! Key: `scope#writer:sequence`, unique per batch, so that a compacting broker (the topics are created
//! with `cleanup.policy=compact`) never drops a batch restore needs: every record is a delta. Value:
//! `b"rtbcl1" ‖ writer u64 ‖ sequence u64 ‖ chunk u32 ‖ chunks u32 ‖ bytes`, where the bytes of all
//! chunks together are `count u32 ‖ (key len u32 ‖ key ‖ 0|1 ‖ [value len u32 ‖ value])*` (big endian).
//!
//! ## Restore
//! At open, every partition of every changelog is read from its start to its end (the end the fetcher
//! reports, `enable.partition.eof`), applying complete batches in offset order: a later batch overrides an
//! earlier one key by key, so restore is right whether or not the broker compacted (Tansu does not).
//! Progress (records, bytes, records/s, time to the first record) is logged (every 5 s while it lasts, and
//! at the end) and kept in
//! [`ChangelogBackend::restore_stats`]. Restore time grows with the changelog: nothing writes snapshots
//! yet.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::reader::{BaseConsumer, Quiet, CONSUMER_DEFAULTS};
use super::{KafkaLog, TopicSpec};
use crate::error::{Error, Result};
use crate::io::{LogIo, ProduceRecord};
use crate::log::TopicConfig;
use crate::state::{MemoryBackend, StoreBackend, WriteBatch};

const MAGIC: &[u8; 6] = b"rtbcl1";

/// The restored map.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;
/// One operation of a batch.
type Op = (Vec<u8>, Option<Vec<u8>>);
const HEADER: usize = 6 + 8 + 8 + 4 + 4;
/// How often a long restore logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Tuning of a [`ChangelogBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogOptions {
    /// The changelog of group `g` is the plan topic `{g}{suffix}` (default `-changelog`).
    pub suffix: String,
    /// Largest record value written; a task's batch above it is chunked (default 512 KiB, under the
    /// 1 MB `max.message.bytes` brokers enforce by default).
    pub max_record_bytes: usize,
    /// How long restore waits for a changelog partition to report its end before failing (default 60 s).
    pub restore_timeout: Duration,
}

impl Default for ChangelogOptions {
    fn default() -> Self {
        Self { suffix: "-changelog".into(), max_record_bytes: 512 << 10, restore_timeout: Duration::from_secs(60) }
    }
}

/// What the restore at open did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreStats {
    /// Changelog records read.
    pub records: u64,
    /// Complete batches applied.
    pub batches: u64,
    /// Bytes of record values read.
    pub bytes: u64,
    /// Incomplete chunk sequences ignored (a writer crashed between chunks).
    pub incomplete: u64,
    /// Keys in the map after restore.
    pub keys: usize,
    /// From the start of the restore to its end.
    pub elapsed: Duration,
    /// From the start of the restore to the first record (`None`: the changelogs were empty).
    pub first_record: Option<Duration>,
}

impl RestoreStats {
    /// Records restored per second.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// State in memory, durable in changelog topics. See the module docs.
pub struct ChangelogBackend {
    log: KafkaLog,
    options: ChangelogOptions,
    /// Partitions of each group's changelog.
    groups: BTreeMap<String, u32>,
    map: MemoryBackend,
    writer: u64,
    sequence: AtomicU64,
    /// Applies are serialized (the runtime's commit rounds are already).
    apply_lock: Mutex<()>,
    /// Where each changelog partition has been read up to (by the restore at open, then by
    /// [`StoreBackend::refresh_tasks`]), with the chunk sequence being put together there.
    read: Mutex<BTreeMap<(String, u32), Part>>,
    /// Refreshes of one group's tasks run one at a time (those of different groups in parallel).
    refreshing: BTreeMap<String, Mutex<()>>,
    stats: RestoreStats,
}

impl std::fmt::Debug for ChangelogBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogBackend").field("groups", &self.groups).field("keys", &self.map.len()).finish_non_exhaustive()
    }
}

impl ChangelogBackend {
    /// Creates the changelog of every `(group, tasks)` when missing (`tasks` partitions, compacted, kept
    /// forever) and restores the state from them.
    pub fn open(log: &KafkaLog, groups: &[(String, u32)], options: ChangelogOptions) -> Result<Self> {
        let specs: Vec<TopicSpec> = groups
            .iter()
            .map(|(g, n)| TopicSpec {
                compact: true,
                ..TopicSpec::new(format!("{g}{}", options.suffix), TopicConfig { partitions: *n, retention: None })
            })
            .collect();
        log.ensure_topics(&specs)?;
        let mut this = Self {
            log: log.clone(),
            groups: groups.iter().cloned().collect(),
            map: MemoryBackend::new(),
            writer: writer_id(),
            sequence: AtomicU64::new(0),
            apply_lock: Mutex::new(()),
            read: Mutex::new(BTreeMap::new()),
            refreshing: groups.iter().map(|(g, _)| (g.clone(), Mutex::new(()))).collect(),
            stats: RestoreStats::default(),
            options,
        };
        this.restore()?;
        Ok(this)
    }

    /// What the restore at open did.
    pub fn restore_stats(&self) -> &RestoreStats {
        &self.stats
    }

    fn topic(&self, group: &str) -> String {
        format!("{group}{}", self.options.suffix)
    }

    /// Reads every changelog to its end, one thread per group (their keys are disjoint).
    fn restore(&mut self) -> Result<()> {
        let started = Instant::now();
        let cfg = self.log.config().clone();
        let timeout = self.options.restore_timeout;
        let topics: Vec<Vec<Part>> = self
            .groups
            .iter()
            .map(|(group, partitions)| {
                let name = cfg.topic(&self.topic(group));
                (0..*partitions).map(|p| Part::start(group, &name, p)).collect()
            })
            .collect();
        let results: Vec<Result<(Map, Vec<Part>, RestoreStats)>> = read_topics(&cfg, topics, started, timeout);
        let mut map = BTreeMap::new();
        let mut stats = RestoreStats::default();
        let read = self.read.get_mut();
        for r in results {
            let (m, parts, st) = r?;
            map.extend(m);
            for part in parts {
                read.insert((part.group.clone(), part.partition), part);
            }
            stats.records += st.records;
            stats.batches += st.batches;
            stats.bytes += st.bytes;
            stats.first_record = match (stats.first_record, st.first_record) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        stats.incomplete += read.values().filter(|p| p.pending.is_some()).count() as u64;
        stats.elapsed = started.elapsed();
        stats.keys = map.len();
        tracing::info!(
            records = stats.records,
            batches = stats.batches,
            bytes = stats.bytes,
            keys = stats.keys,
            incomplete = stats.incomplete,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            first_record_ms = stats.first_record.map(|d| d.as_millis() as u64),
            records_per_s = stats.records_per_s() as u64,
            "kafka: state restored from changelogs"
        );
        self.map = MemoryBackend::from_map(map);
        self.stats = stats;
        Ok(())
    }
}

/// One changelog partition being read: the task it belongs to, the next offset to read, and the chunk
/// sequence being put together there.
struct Part {
    group: String,
    partition: u32,
    /// The cluster's name of the changelog topic.
    topic: String,
    next: i64,
    pending: Option<Assembly>,
}

impl Part {
    fn start(group: &str, topic: &str, partition: u32) -> Self {
        Self { group: group.to_string(), partition, topic: topic.to_string(), next: 0, pending: None }
    }
}

/// [`read_parts`] for each changelog topic's parts, one thread a topic (their keys are disjoint), into a
/// fresh sink each.
fn read_topics<S: OpSink + Default + Send>(
    cfg: &super::KafkaConfig,
    topics: Vec<Vec<Part>>,
    started: Instant,
    timeout: Duration,
) -> Vec<Result<(S, Vec<Part>, RestoreStats)>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = topics
            .into_iter()
            .map(|parts| {
                scope.spawn(move || {
                    let mut sink = S::default();
                    let mut stats = RestoreStats::default();
                    let parts = read_parts(cfg, parts, &mut sink, &mut stats, started, timeout)?;
                    Ok((sink, parts, stats))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Config("changelog reader thread panicked".into()))))
            .collect()
    })
}

/// Reads each of `parts` (partitions of one changelog topic) from its next offset to the end the fetcher
/// reports (`enable.partition.eof`), giving every complete batch, in offset order, to `sink`; returns the
/// parts with their new positions.
fn read_parts(
    cfg: &super::KafkaConfig,
    mut parts: Vec<Part>,
    sink: &mut dyn OpSink,
    stats: &mut RestoreStats,
    started: Instant,
    timeout: Duration,
) -> Result<Vec<Part>> {
    if parts.is_empty() {
        return Ok(parts);
    }
    let first = (parts[0].topic.clone(), parts[0].partition);
    let consumer: BaseConsumer = cfg
        .client(CONSUMER_DEFAULTS)
        .set("group.id", format!("{}rtb-restore", cfg.topic_prefix))
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(Quiet)
        .map_err(|e| restore_err(&first.0, first.1, format!("consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    let mut index = std::collections::HashMap::new();
    for (i, part) in parts.iter().enumerate() {
        if part.topic != first.0 {
            return Err(restore_err(&part.topic, part.partition, format!("read with `{}`: one topic per reader", first.0)));
        }
        let kp = super::kafka_partition(&part.topic, part.partition)?;
        let offset = if part.next == 0 { Offset::Beginning } else { Offset::Offset(part.next) };
        tpl.add_partition_offset(&part.topic, kp, offset).map_err(|e| restore_err(&part.topic, part.partition, e.to_string()))?;
        index.insert((part.topic.clone(), kp), i);
    }
    consumer.assign(&tpl).map_err(|e| restore_err(&first.0, first.1, format!("assign: {e}")))?;
    let mut ended = vec![false; parts.len()];
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    while ended.iter().any(|e| !e) {
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            tracing::info!(topic = %first.0, records = stats.records, bytes = stats.bytes,
                partitions_done = ended.iter().filter(|e| **e).count(), partitions = parts.len(),
                records_per_s = (stats.records as f64 / started.elapsed().as_secs_f64().max(1e-9)) as u64,
                "kafka: restoring state from the changelog");
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let Some(&i) = index.get(&(m.topic().to_string(), m.partition())) else { continue };
                stats.first_record.get_or_insert_with(|| started.elapsed());
                stats.records += 1;
                let value = m.payload().unwrap_or_default();
                stats.bytes += value.len() as u64;
                let part = &mut parts[i];
                let applied = accept(&mut part.pending, value, sink, stats)
                    .map_err(|reason| restore_err(&part.topic, part.partition, format!("offset {}: {reason}", m.offset())))?;
                stats.batches += u64::from(applied);
                part.next = m.offset() + 1;
                ended[i] = false;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                if let Some(&i) = index.get(&(first.0.clone(), p)) {
                    ended[i] = true;
                }
            }
            Some(Err(e)) => tracing::warn!(topic = %first.0, error = %e, "kafka: changelog restore: consumer error; retrying"),
        }
        if last_progress.elapsed() > timeout {
            let i = ended.iter().position(|e| !e).unwrap_or(0);
            return Err(restore_err(&parts[i].topic, parts[i].partition, format!("no progress for {timeout:?}")));
        }
    }
    Ok(parts)
}

impl StoreBackend for ChangelogBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.map.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.map.scan_prefix(prefix)
    }

    fn apply(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _serial = self.apply_lock.lock();
        // Split by task scope, keeping each task's operations in order.
        // (group, partition) → (scope, its operations in order).
        let mut parts: BTreeMap<(String, u32), (String, Vec<&Op>)> = BTreeMap::new();
        for op in batch.ops() {
            let scope = scope_of(&op.0).ok_or_else(|| {
                Error::StateCommit("changelog backend: a key outside any task scope (`group/partition`)".into())
            })?;
            let (group, p) = split_scope(&scope).ok_or_else(|| {
                Error::StateCommit(format!("changelog backend: scope `{scope}` is not `group/partition`").into())
            })?;
            let partitions = self.groups.get(group).ok_or_else(|| {
                Error::StateCommit(format!("changelog backend: group `{group}` has no changelog (not opened with it)").into())
            })?;
            if p >= *partitions {
                return Err(Error::StateCommit(
                    format!("changelog backend: task {scope}: the changelog of `{group}` has {partitions} partitions").into(),
                ));
            }
            parts.entry((group.to_string(), p)).or_insert_with(|| (scope.clone(), Vec::new())).1.push(op);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut by_topic: BTreeMap<String, Vec<ProduceRecord>> = BTreeMap::new();
        for ((group, p), (scope, ops)) in parts {
            let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
            let body = encode_ops(&ops);
            let chunk = self.options.max_record_bytes.saturating_sub(HEADER).max(1);
            let chunks: Vec<&[u8]> = if body.is_empty() { vec![&body[..]] } else { body.chunks(chunk).collect() };
            let n = chunks.len() as u32;
            let recs = by_topic.entry(self.topic(&group)).or_default();
            for (i, c) in chunks.into_iter().enumerate() {
                let mut value = Vec::with_capacity(HEADER + c.len());
                value.extend_from_slice(MAGIC);
                value.extend_from_slice(&self.writer.to_be_bytes());
                value.extend_from_slice(&seq.to_be_bytes());
                value.extend_from_slice(&(i as u32).to_be_bytes());
                value.extend_from_slice(&n.to_be_bytes());
                value.extend_from_slice(c);
                recs.push(ProduceRecord {
                    key: Some(format!("{scope}#{:016x}:{seq}", self.writer).into_bytes()),
                    payload: value,
                    timestamp: now,
                    partition: Some(p),
                    origin: None,
                });
            }
        }
        // Every task's record is sent before waiting: one round trip for the whole round.
        self.log.producer().send_all(by_topic.into_iter().collect()).map_err(|e| Error::StateCommit(Box::new(e)))?;
        self.map.apply(batch)
    }

    fn flush(&self) -> Result<()> {
        // Every apply returned once its records were acknowledged by every in-sync replica.
        Ok(())
    }

    /// Reads each task's changelog partition from where this backend last read it to its end (one consumer
    /// per changelog topic, topics in parallel), and applies what other processes committed there since.
    /// Re-applying this process's own batches is harmless: batches are applied in the order they were
    /// written, each setting or deleting whole keys, so the result is the state after the last one.
    fn refresh_tasks(&self, tasks: &[(String, u32)]) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut groups: Vec<&str> = tasks.iter().map(|(g, _)| g.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut serial = Vec::with_capacity(groups.len());
        for g in groups {
            let lock = self.refreshing.get(g).ok_or_else(|| {
                Error::Config(format!("changelog backend: group `{g}` has no changelog (not opened with it)"))
            })?;
            serial.push(lock.lock());
        }
        // The read positions are taken out while the changelogs are read (other groups refresh meanwhile).
        let mut by_topic: BTreeMap<String, Vec<Part>> = BTreeMap::new();
        {
            let mut read = self.read.lock();
            for (group, p) in tasks {
                let topic = self.log.config().topic(&self.topic(group));
                let part = read.remove(&(group.clone(), *p)).unwrap_or_else(|| Part::start(group, &topic, *p));
                by_topic.entry(topic).or_default().push(part);
            }
        }
        let cfg = self.log.config().clone();
        let timeout = self.options.restore_timeout;
        let results: Vec<Result<(WriteBatch, Vec<Part>, RestoreStats)>> =
            read_topics(&cfg, by_topic.into_values().collect(), started, timeout);
        let mut all = WriteBatch::new();
        let mut records = 0;
        let mut failed = None;
        let mut read = self.read.lock();
        for r in results {
            match r {
                Ok((batch, parts, stats)) => {
                    all.extend(batch);
                    records += stats.records;
                    for part in parts {
                        read.insert((part.group.clone(), part.partition), part);
                    }
                }
                // The parts of a failed topic are read from the start next time.
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        drop(read);
        {
            let _apply = self.apply_lock.lock();
            self.map.apply(all)?;
        }
        drop(serial);
        tracing::debug!(tasks = tasks.len(), records, elapsed_ms = started.elapsed().as_millis() as u64,
            "kafka: tasks' state refreshed from the changelogs");
        Ok(())
    }
}

/// A chunk sequence being put together.
struct Assembly {
    writer: u64,
    sequence: u64,
    next: u32,
    chunks: u32,
    bytes: Vec<u8>,
}

/// Takes one changelog record; applies a batch to `map` when it completes one (returns whether it did).
fn accept(
    slot: &mut Option<Assembly>,
    value: &[u8],
    map: &mut dyn OpSink,
    stats: &mut RestoreStats,
) -> std::result::Result<bool, String> {
    if value.len() < HEADER || &value[..6] != MAGIC {
        return Err("not a changelog record of this format".into());
    }
    let u64_at = |i: usize| u64::from_be_bytes(value[i..i + 8].try_into().unwrap_or_default());
    let u32_at = |i: usize| u32::from_be_bytes(value[i..i + 4].try_into().unwrap_or_default());
    let (writer, sequence, chunk, chunks) = (u64_at(6), u64_at(14), u32_at(22), u32_at(26));
    let body = &value[HEADER..];
    if chunk == 0 {
        if slot.is_some() {
            stats.incomplete += 1;
        }
        *slot = Some(Assembly { writer, sequence, next: 0, chunks, bytes: Vec::new() });
    }
    let Some(a) = slot.as_mut().filter(|a| a.writer == writer && a.sequence == sequence && a.next == chunk) else {
        // A chunk whose sequence did not start here (its start was before a crash's restart): ignored.
        return Ok(false);
    };
    a.bytes.extend_from_slice(body);
    a.next += 1;
    if a.next < a.chunks {
        return Ok(false);
    }
    let done = slot.take().map(|a| a.bytes).unwrap_or_default();
    decode_ops(&done, map)?;
    Ok(true)
}

fn encode_ops(ops: &[&Op]) -> Vec<u8> {
    let size: usize = ops.iter().map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len)).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(ops.len() as u32).to_be_bytes());
    for (k, v) in ops {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        match v {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    out
}

/// Where decoded operations go: the map a restore builds, or a batch that brings a live map up to date.
trait OpSink {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
}

impl OpSink for Map {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.insert(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.remove(&key);
    }
}

impl OpSink for WriteBatch {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        WriteBatch::put(self, key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        WriteBatch::delete(self, key);
    }
}

fn decode_ops(mut b: &[u8], map: &mut dyn OpSink) -> std::result::Result<(), String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if b.len() < n {
            return Err("truncated batch".into());
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn len(b: &mut &[u8]) -> std::result::Result<usize, String> {
        let bytes = take(b, 4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    }
    // Decode everything before applying anything: a bad batch changes nothing.
    let count = len(&mut b)?;
    let mut ops = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let kl = len(&mut b)?;
        let key = take(&mut b, kl)?.to_vec();
        let value = match take(&mut b, 1)?[0] {
            1 => {
                let vl = len(&mut b)?;
                Some(take(&mut b, vl)?.to_vec())
            }
            0 => None,
            t => return Err(format!("bad operation tag {t}")),
        };
        ops.push((key, value));
    }
    if !b.is_empty() {
        return Err("trailing bytes after the batch".into());
    }
    for (k, v) in ops {
        match v {
            Some(v) => map.put(k, v),
            None => map.delete(k),
        }
    }
    Ok(())
}

/// The task scope a key belongs to: its first self-delimiting segment (`varint(len) ‖ bytes`).
fn scope_of(key: &[u8]) -> Option<String> {
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = *key.get(i)?;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let bytes = key.get(i..i.checked_add(len)?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// `group/partition` → (group, partition).
fn split_scope(scope: &str) -> Option<(&str, u32)> {
    let (g, p) = scope.rsplit_once('/')?;
    Some((g, p.parse().ok()?))
}

/// A writer id unique to this process and moment (chunk sequences of a crashed writer never join a new
/// writer's).
fn writer_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

fn restore_err(topic: &str, partition: u32, reason: String) -> Error {
    Error::KafkaConsume { topic: topic.to_string(), partition, offset: 0, reason: format!("changelog restore: {reason}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateScope;

    #[test]
    fn scope_of_reads_the_task_scope_of_runtime_keys() {
        let backend: std::sync::Arc<dyn StoreBackend> = std::sync::Arc::new(MemoryBackend::new());
        let scope = StateScope::new(backend, "grp/12".as_bytes().to_vec());
        let key = scope.child("x").store_prefix("s");
        assert_eq!(scope_of(&key).as_deref(), Some("grp/12"));
        assert_eq!(split_scope("a/b/3"), Some(("a/b", 3)));
        assert_eq!(scope_of(&[5, b'a']), None);
    }

    fn record(writer: u64, seq: u64, i: u32, n: u32, body: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&writer.to_be_bytes());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&i.to_be_bytes());
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn chunks_apply_only_when_complete_and_a_crashed_sequence_is_ignored() {
        let a = (b"k".to_vec(), Some(b"1".to_vec()));
        let b = (b"j".to_vec(), None);
        let body = encode_ops(&[&a, &b]);
        let (x, y) = body.split_at(5);
        let mut map = BTreeMap::from([(b"j".to_vec(), b"old".to_vec())]);
        let mut stats = RestoreStats::default();
        let mut slot = None;
        // Writer 1 crashed after its first chunk; writer 2 (same sequence number) wrote both.
        assert!(!accept(&mut slot, &record(1, 0, 0, 2, x), &mut map, &mut stats).expect("ok"));
        assert!(!accept(&mut slot, &record(2, 0, 0, 2, x), &mut map, &mut stats).expect("ok"));
        assert_eq!(stats.incomplete, 1);
        assert!(!accept(&mut slot, &record(1, 0, 1, 2, y), &mut map, &mut stats).expect("ok"), "foreign chunk");
        assert_eq!(map.get(&b"j"[..]).map(Vec::as_slice), Some(&b"old"[..]), "nothing applied yet");
        assert!(accept(&mut slot, &record(2, 0, 1, 2, y), &mut map, &mut stats).expect("ok"));
        assert_eq!(map, BTreeMap::from([(b"k".to_vec(), b"1".to_vec())]));
    }
}
