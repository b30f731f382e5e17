//! `rtb replay --engine runtime` (and every replay on Kafka, Redis or PostgreSQL): the recorded traffic
//! through the same plan, registry, wiring and runtime as `rtb run`.
//!
//! 1. Every stage of the plan is spawned on a [`Runtime`] over an in-memory log, in batch mode
//!    ([`JobConfig::stop_at_end`]): each task reads its inputs to their end, then its watermark goes to the
//!    end of time, so every window, join buffer and dedup window closes, and it commits. Operator state is
//!    in memory; the plan's sinks are replaced by the `memory` backend.
//! 2. Meanwhile the input files are produced to the plan's input topics (a [`Runtime::feed`]: the tasks
//!    read until it ends), merged by event time across the three files, each line keyed by its topic's key
//!    fields and partitioned as Kafka's default partitioner would (a line whose key cannot be read goes to
//!    partition 0 without a key: every stage rejects it as a dead letter). What every consumer group has
//!    committed is released from the log, and the loading waits while the slowest consumer is far behind,
//!    so memory holds the operators' state, not the input. `advertisers.jsonl` opens the balances.
//! 3. The outputs are written from the log's topics and the sinks exactly as `rtb export` writes them for a
//!    data directory of `rtb run` (see [`crate::app::export`]).
//!
//! `--max-out-of-orderness-ms` sets every stage's allowed out-of-orderness (the topology file's per-operator
//! setting is for live traffic), and raises `max_ahead` (timestamp outliers) and `max_behind` (the
//! correction horizon) to at least that much. Stages are kept in event-time step
//! ([`JobConfig::align`](rtb_stream::runtime::JobConfig::align)): a stage reading what another one writes
//! to a store (the budget monitor reads the budgets the ranking stage records from campaign events) sees it
//! as of each record's time, as in a live run where traffic arrives in time order.
//!
//! [`JobConfig::stop_at_end`]: rtb_stream::runtime::JobConfig::stop_at_end

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rtb_ops::registry::sink_kinds;
use rtb_ops::sink::Advertiser;
use rtb_stream::log::{EmbeddedLog, LogOptions, ProduceRecord, TopicConfig};
use rtb_stream::runtime::Runtime;
use rtb_stream::state::{MemoryBackend, StoreBackend};
use rtb_stream::Timestamp;

use crate::app::runlog::RunLog;
use crate::app::wiring::{self, Sinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::units::Millis;
use super::input::{self, DecodedFile};
use super::{outputs, ReplayOptions, ReplaySummary};

/// Runs a replay of `plan` on the runtime; writes every output file and returns the summary.
pub(crate) fn run(plan: &ExecutionPlan, opts: &ReplayOptions) -> Result<ReplaySummary> {
    let started = Instant::now();
    let mut plan = plan.clone();
    let ooo = Millis::ms(opts.max_out_of_orderness_ms);
    for stage in &mut plan.stages {
        stage.settings.max_out_of_orderness = ooo;
    }
    // Disorder up to the out-of-orderness is normal in this input: a record that far ahead of the data is
    // no timestamp outlier, and one that far behind the watermark is within the correction horizon.
    for limit in [&mut plan.runtime.max_ahead, &mut plan.runtime.max_behind] {
        if limit.as_ms() > 0 && limit.as_ms() < ooo.as_ms() {
            *limit = ooo;
        }
    }
    // The embedded sinks' effects go to memory (a replay keeps no data directory); a server sink (Redis,
    // PostgreSQL) is written as in a run. The output files are written from the sinks at the end.
    for sink in plan.sinks.iter_mut().filter(|s| s.backend == sink_kinds::EMBEDDED) {
        sink.backend = sink_kinds::MEMORY.to_owned();
        sink.url = None;
        sink.path = None;
    }
    let plan = &plan;
    std::fs::create_dir_all(&opts.output).map_err(|e| Error::Io { path: opts.output.clone(), source: e })?;
    // What a server sink keeps beside its data (the Redis cache's epoch) lives as long as the replay.
    let work = WorkDir::create()?;

    let (log, memory): (Box<dyn RunLog>, Option<EmbeddedLog>) = match &opts.kafka {
        None => {
            // Small chunks: what every consumer has read is released chunk by chunk while the replay runs.
            let log = EmbeddedLog::in_memory_with(LogOptions { segment_bytes: 1 << 20, ..LogOptions::default() });
            for t in &plan.topics {
                // Retention is never enforced on this log: the whole input is replayed.
                log.create_topic(&t.name, TopicConfig { partitions: t.partitions, retention: None })?;
            }
            for t in [DEAD_LETTER_TOPIC, LATE_TOPIC] {
                log.create_topic(t, TopicConfig { partitions: 1, retention: None })?;
            }
            (Box::new(log.clone()), Some(log))
        }
        Some(cfg) => (Box::new(crate::app::run::open_kafka(plan, cfg.clone(), false)?.0), None),
    };
    let log = log.as_ref();
    let ops = crate::app::run::ops_config(plan)?;
    let topics = ops.topics.clone();
    let mut inputs = Vec::with_capacity(3);
    for spec in super::input_specs(plan, &topics)? {
        let ad_events = spec.topic == topics.ad_events;
        inputs.push(InputFile::open(&opts.input.join(spec.file), &spec.topic, spec.key.into(), ad_events)?);
    }

    let sinks = Sinks::open(plan, &work.0)?;
    for a in outputs::read_advertisers(&opts.input.join("advertisers.jsonl"))? {
        let spec = Advertiser { advertiser_id: a.advertiser_id, opening_balance: a.balance, time_zone: a.time_zone };
        for (_, sink) in sinks.all.iter().filter(|(_, s)| s.kind == sink_kinds::DATABASE) {
            rtb_ops::registry::database_of(sink)?
                .upsert_advertiser(&spec)
                .map_err(|e| Error::Run(format!("database: {e}")))?;
        }
    }
    // Event times beyond this are refused by the validator: they do not end the input.
    let latest_valid = rtb_stream::time::wall_clock_ms().saturating_add(rtb_stream::span::ms(ops.validation.max_future));
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let mut rt = Runtime::new(log.io(), Arc::clone(&state));
    let (feed, releaser, preloaded) = match &memory {
        Some(mem) => {
            // In memory: the input is produced while the stages run (a feed: they read until it ends), and
            // what every consumer group has committed is released, so memory holds what is still to be
            // read (the input is loaded at most `MAX_BACKLOG` records ahead of the slowest consumer).
            let fed: Vec<&str> = inputs.iter().map(|f| f.topic.as_str()).collect();
            (Some(rt.feed(&fed)?), Some(Releaser::new(plan, &topics, mem, Arc::clone(&state))), None)
        }
        None => {
            // On Kafka: the input is produced first; each stage reads to the end offsets it finds.
            let loaded = load(log, &mut inputs, None, None, latest_valid, || false)?;
            log.flush()?;
            (None, None, Some(loaded))
        }
    };
    wiring::spawn_all(&mut rt, plan, crate::registry::default_registry()?, &sinks.all, true)?;
    let runner = std::thread::Builder::new()
        .name("rtb-replay-join".into())
        .spawn(move || rt.join())
        .map_err(|e| Error::Run(format!("cannot start the replay: {e}")))?;
    let loaded = match preloaded {
        Some(l) => Ok(l),
        None => load(log, &mut inputs, feed.as_ref(), releaser.as_ref(), latest_valid, || runner.is_finished()),
    };
    drop(feed);
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            // The runtime's own failure, if it failed first, says more.
            if runner.is_finished() {
                join(runner)?;
            }
            return Err(e);
        }
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, lines = ?loaded.lines, "replay input loaded");
    while !runner.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Some(r) = &releaser {
            r.release()?;
        }
    }
    join(runner)?;
    let (lines, end_of_input) = (loaded.lines, loaded.end);
    // Every stage has finished: the rankings are recomputed once more with the final metrics and spend (a
    // ranking depends on other stages' results, which may have finished after the ranking stage last ran).
    if let Some(end) = end_of_input {
        wiring::ranker(&sinks.cache, &sinks.db, &ops)?.recompute_all(end)?;
    }
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "replay processed; writing the outputs");

    crate::app::export::write_outputs(plan, log, &sinks, &opts.output, |s| {
        s.events = lines;
        s.end_of_input = end_of_input;
        s.elapsed_s = started.elapsed().as_secs_f64();
        let ads = s.events.get(&topics.ad_events).copied().unwrap_or(0);
        s.ad_events_per_sec = ads as f64 / s.elapsed_s.max(1e-9);
    })
}

/// What one input line is produced as.
struct Line {
    key: Option<Vec<u8>>,
    timestamp: Timestamp,
    payload: Vec<u8>,
}

/// Records appended to the log per call.
const APPEND_BATCH: usize = 4_096;
/// How far (in records of one topic partition) the loading may run ahead of the slowest consumer of it.
const MAX_BACKLOG: u64 = 32_768;
/// The longest the loading waits for the slowest consumer at a time.
const MAX_BACKPRESSURE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Input lines between two releases of what every consumer has committed.
const RELEASE_EVERY: u64 = 32_768;

/// One input file being produced to its topic.
struct InputFile {
    path: PathBuf,
    topic: String,
    lines: DecodedFile<Line>,
    head: Option<Line>,
    batch: Vec<ProduceRecord>,
    n: u64,
}

impl InputFile {
    /// Opens `path` for `topic`, each line keyed by the `key` fields. A missing file has no lines, except
    /// the ad-events (`ad_events`: required, and scanned by several workers).
    fn open(path: &Path, topic: &str, key: Arc<[String]>, ad_events: bool) -> Result<Self> {
        let workers = if ad_events { std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4) } else { 1 };
        let lines = DecodedFile::open_with_workers(path, !ad_events, workers, move |bytes, _| {
            let (key, ts) = input::scan(bytes, &key);
            // A line without a readable time goes at once (it is rejected anyway).
            Line { key: key.map(String::into_bytes), timestamp: ts.unwrap_or(Timestamp::MIN), payload: bytes.to_vec() }
        })
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        Ok(Self { path: path.to_path_buf(), topic: topic.to_owned(), lines, head: None, batch: Vec::new(), n: 0 })
    }

    /// The next line, read ahead.
    fn peek(&mut self) -> Result<Option<&Line>> {
        if self.head.is_none() {
            self.head = self.lines.next_line().map_err(|e| Error::Io { path: self.path.clone(), source: e })?.map(|l| l.item);
        }
        Ok(self.head.as_ref())
    }

    fn flush(&mut self, log: &dyn RunLog) -> Result<()> {
        if !self.batch.is_empty() {
            log.append(vec![(self.topic.clone(), std::mem::take(&mut self.batch))])?;
        }
        Ok(())
    }
}

/// What the loading read.
struct Loaded {
    /// Lines per topic.
    lines: BTreeMap<String, u64>,
    /// The latest event time of a line (up to the latest the validator accepts).
    end: Option<Timestamp>,
}

/// Produces the input files to their topics, merged by event time (the earliest next line first; campaign
/// events first on ties, as a campaign precedes the traffic it gets), each line to the partition of its
/// key (Kafka's default partitioner; partition 0 without a key when the key cannot be read). Reports the
/// feed's progress, releases what every consumer has committed, and waits while the slowest consumer is
/// `MAX_BACKLOG` records behind (unless `stopped`: the runtime has ended, by an error).
fn load(
    log: &dyn RunLog,
    files: &mut [InputFile],
    feed: Option<&rtb_stream::runtime::Feed>,
    releaser: Option<&Releaser<'_>>,
    latest_valid: Timestamp,
    stopped: impl Fn() -> bool,
) -> Result<Loaded> {
    let mut end: Option<Timestamp> = None;
    let mut total = 0u64;
    loop {
        let mut next: Option<(Timestamp, usize)> = None;
        for (i, f) in files.iter_mut().enumerate() {
            if let Some(l) = f.peek()? {
                if next.is_none_or(|(ts, _)| l.timestamp < ts) {
                    next = Some((l.timestamp, i));
                }
            }
        }
        let Some((ts, i)) = next else { break };
        let f = &mut files[i];
        let Some(Line { key, timestamp, payload }) = f.head.take() else { break };
        if timestamp <= latest_valid && timestamp != Timestamp::MIN {
            end = end.max(Some(timestamp));
        }
        let partition = key.is_none().then_some(0);
        f.batch.push(ProduceRecord { key, payload, timestamp: timestamp.max(0), partition, origin: None });
        f.n += 1;
        total += 1;
        if f.batch.len() >= APPEND_BATCH {
            f.flush(log)?;
        }
        if total.is_multiple_of(APPEND_BATCH as u64) {
            for f in files.iter_mut() {
                f.flush(log)?;
            }
            if let Some(feed) = feed {
                feed.progress(ts);
            }
        }
        if total.is_multiple_of(RELEASE_EVERY) && stopped() {
            return Err(Error::Run("the replay's runtime stopped before the input was loaded".into()));
        }
        if let Some(releaser) = releaser.filter(|_| total.is_multiple_of(RELEASE_EVERY)) {
            // Bounded: a consumer held back by a record it waits on (alignment) must not stop the loading.
            let since = std::time::Instant::now();
            while releaser.release()? > MAX_BACKLOG && !stopped() && since.elapsed() < MAX_BACKPRESSURE_WAIT {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    for f in files.iter_mut() {
        f.flush(log)?;
    }
    Ok(Loaded { lines: files.iter().map(|f| (f.topic.clone(), f.n)).collect(), end })
}

/// Releases from the in-memory log what every consumer group of a topic has committed.
struct Releaser<'a> {
    log: &'a EmbeddedLog,
    state: Arc<dyn StoreBackend>,
    /// Topic, partitions, and the runtime groups consuming it.
    consumed: Vec<(String, u32, Vec<String>)>,
}

impl<'a> Releaser<'a> {
    /// Every topic a stage of `plan` reads, but the compensation events (the outputs are written from them).
    fn new(plan: &ExecutionPlan, topics: &rtb_ops::config::TopicNames, log: &'a EmbeddedLog, state: Arc<dyn StoreBackend>) -> Self {
        let mut consumed: Vec<(String, u32, Vec<String>)> = Vec::new();
        for stage in &plan.stages {
            for input in stage.inputs.iter().filter(|t| **t != topics.compensation_events) {
                match consumed.iter_mut().find(|(t, _, _)| t == input) {
                    Some((_, _, groups)) => groups.push(stage.runtime_group().to_owned()),
                    None => consumed.push((input.clone(), stage.partitions, vec![stage.runtime_group().to_owned()])),
                }
            }
        }
        Self { log, state, consumed }
    }

    /// Releases what every consumer has committed; returns the largest backlog (records not committed by
    /// some consumer) of a topic partition.
    fn release(&self) -> Result<u64> {
        let mut backlog = 0;
        for (topic, partitions, groups) in &self.consumed {
            for p in 0..*partitions {
                let mut committed = u64::MAX;
                for g in groups {
                    let offsets = rtb_stream::runtime::task_scope(&self.state, g, p).read_offsets()?;
                    committed = committed.min(offsets.get(&(topic.clone(), p)).copied().unwrap_or(0));
                }
                self.log.release_before(topic, p, committed)?;
                backlog = backlog.max(self.log.end_offset(topic, p)?.saturating_sub(committed));
            }
        }
        Ok(backlog)
    }
}

/// A directory of the replay's own, removed when it ends.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("rtb-replay-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime's result.
fn join(runner: std::thread::JoinHandle<rtb_stream::Result<rtb_stream::runtime::RuntimeReport>>) -> Result<()> {
    runner.join().map_err(|_| Error::Run("the replay's runtime panicked".into()))??;
    Ok(())
}

