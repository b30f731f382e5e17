//! `rtb replay`: batch replay (a backfill) of recorded traffic through the same plan, registry, wiring and
//! runtime as `rtb run`.
//!
//! 1. The input files are produced, line by line and in file order, to the plan's input topics on an
//!    in-memory log, each line keyed by the topic's key fields and partitioned as Kafka's default
//!    partitioner would (a line whose key cannot be read goes to partition 0 without a key: every stage
//!    rejects it as a dead letter). `advertisers.jsonl` opens the advertisers' balances.
//! 2. Every stage of the plan is spawned on a [`Runtime`] in batch mode ([`JobConfig::stop_at_end`]): each
//!    task reads its inputs to the end they have (inputs written by other stages: until those stages have
//!    finished), then its watermark goes to the end of time, so every window, join buffer and dedup window
//!    closes, and it commits. Operator state is in memory; the plan's sinks are replaced by the `memory`
//!    backend.
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

pub mod input;
pub(crate) mod outputs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rtb_ops::registry::sink_kinds;
use rtb_ops::sink::Advertiser;
use rtb_stream::log::{EmbeddedLog, ProduceRecord, TopicConfig};
use rtb_stream::runtime::Runtime;
use rtb_stream::state::MemoryBackend;
use rtb_stream::Timestamp;

use crate::app::wiring::{self, Sinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::units::Millis;
use input::DecodedFile;

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Input directory.
    pub input: PathBuf,
    /// Output directory.
    pub output: PathBuf,
    /// Allowed out-of-orderness of every stage's watermark (ms).
    pub max_out_of_orderness_ms: i64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplaySummary {
    /// Records per topic: lines read per input file in a replay; every topic of the log in an export.
    pub events: BTreeMap<String, u64>,
    /// Dead letters per topic (invalid input).
    pub dead_letters: BTreeMap<String, u64>,
    /// Late records, per stage.
    pub late: BTreeMap<String, u64>,
    /// Compensation events emitted.
    pub compensations: u64,
    /// Conversions with no click in the attribution window.
    pub unattributed_conversions: u64,
    /// Attributed conversions.
    pub attributed_conversions: u64,
    /// Conversions of an order that already had its result (duplicate `order_id`s, not attributed twice).
    pub duplicate_orders: u64,
    /// Max event time seen, written as RFC 3339 like every other time in the outputs.
    #[serde(serialize_with = "outputs::rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub end_of_input: Option<Timestamp>,
    /// Wall-clock seconds of the replay (loading the input, processing, writing the outputs); 0 where
    /// nothing was timed (`rtb export`), and then left out of summary.json rather than written as a
    /// placeholder.
    #[serde(skip_serializing_if = "untimed")]
    pub elapsed_s: f64,
    /// Ad-events per second of the replay; 0 (and left out of summary.json) where nothing was timed.
    #[serde(skip_serializing_if = "untimed")]
    pub ad_events_per_sec: f64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn untimed(v: &f64) -> bool {
    *v == 0.0
}

/// The input files and the topics (by their schema's role in the plan) they are produced to.
const INPUT_FILES: [(&str, InputTopic); 3] = [
    ("campaign-events.jsonl", InputTopic::Campaign),
    ("ad-events.jsonl", InputTopic::Ad),
    ("conversion-events.jsonl", InputTopic::Conversion),
];

#[derive(Debug, Clone, Copy)]
enum InputTopic {
    Campaign,
    Ad,
    Conversion,
}

/// Runs a replay of `plan`; writes every output file and returns the summary.
pub fn replay(plan: &ExecutionPlan, opts: &ReplayOptions) -> Result<ReplaySummary> {
    let started = Instant::now();
    if opts.max_out_of_orderness_ms < 0 {
        return Err(Error::Run(format!("--max-out-of-orderness-ms must be 0 or more, not {}", opts.max_out_of_orderness_ms)));
    }
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
    // The effects go to memory first; the output files are written from there at the end.
    for sink in &mut plan.sinks {
        sink.backend = sink_kinds::MEMORY.to_owned();
        sink.url = None;
        sink.path = None;
    }
    let plan = &plan;
    std::fs::create_dir_all(&opts.output).map_err(|e| Error::Io { path: opts.output.clone(), source: e })?;

    let log = EmbeddedLog::in_memory();
    for t in &plan.topics {
        // Retention is never enforced on this log: the whole input is replayed.
        log.create_topic(&t.name, TopicConfig { partitions: t.partitions, retention: None })?;
    }
    for t in [DEAD_LETTER_TOPIC, LATE_TOPIC] {
        log.create_topic(t, TopicConfig { partitions: 1, retention: None })?;
    }
    let ops = crate::app::run::ops_config(plan)?;
    let topics = ops.topics.clone();
    // Event times beyond this are refused by the validator: they do not end the input.
    let latest_valid = now_ms().saturating_add(rtb_stream::span::ms(ops.validation.max_future));
    let mut end_of_input: Option<Timestamp> = None;
    let mut lines = BTreeMap::new();
    for (file, role) in INPUT_FILES {
        let name = match role {
            InputTopic::Campaign => &topics.campaign_events,
            InputTopic::Ad => &topics.ad_events,
            InputTopic::Conversion => &topics.conversion_events,
        };
        let topic = plan
            .topic(name)
            .ok_or_else(|| Error::Run(format!("the topology has no topic `{name}` to replay {file} into")))?;
        let key = topic.key.as_ref().map(|k| k.fields().to_vec()).unwrap_or_default();
        let (n, end) = load(&log, &opts.input.join(file), name, &key, matches!(role, InputTopic::Ad), latest_valid)?;
        lines.insert(name.clone(), n);
        end_of_input = end_of_input.max(end);
    }
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, ?lines, "replay input loaded");

    let sinks = Sinks::open(plan, &opts.output)?;
    for a in outputs::read_advertisers(&opts.input.join("advertisers.jsonl"))? {
        let spec = Advertiser { advertiser_id: a.advertiser_id, opening_balance: a.balance, time_zone: a.time_zone };
        for (_, sink) in sinks.all.iter().filter(|(_, s)| s.kind == sink_kinds::DATABASE) {
            rtb_ops::registry::database_of(sink)?
                .upsert_advertiser(&spec)
                .map_err(|e| Error::Run(format!("database: {e}")))?;
        }
    }
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    wiring::spawn_all(&mut rt, plan, crate::registry::default_registry()?, &sinks.all, true)?;
    rt.join()?;
    // Every stage has finished: the rankings are recomputed once more with the final metrics and spend (a
    // ranking depends on other stages' results, which may have finished after the ranking stage last ran).
    if let Some(end) = end_of_input {
        wiring::ranker(&sinks.cache, &sinks.db, &ops)?.recompute_all(end)?;
    }
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "replay processed; writing the outputs");

    crate::app::export::write_outputs(plan, &log, &sinks, &opts.output, |s| {
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

/// Produces every non-empty line of `path` to `topic`, keyed by the `key` fields (the line's partition is
/// Kafka's default partitioner's for that key; partition 0 without a key when the key cannot be read). A
/// missing file has no lines, except the ad-events (`ad_events`: required, and scanned by several
/// workers). Returns the lines produced and the latest event time of a line up to `latest_valid`.
fn load(
    log: &EmbeddedLog,
    path: &Path,
    topic: &str,
    key: &[String],
    ad_events: bool,
    latest_valid: Timestamp,
) -> Result<(u64, Option<Timestamp>)> {
    let fields: Arc<[String]> = key.into();
    let workers = if ad_events { std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4) } else { 1 };
    // The ad-events are the input; a replay without them is a mistake (campaign and conversion events
    // may be absent).
    let optional = !ad_events;
    let mut file = DecodedFile::open_with_workers(path, optional, workers, move |bytes, _| {
        let (key, ts) = input::scan(bytes, &fields);
        Line { key: key.map(String::into_bytes), timestamp: ts.unwrap_or(0), payload: bytes.to_vec() }
    })
    .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    let mut n = 0u64;
    let mut end = None;
    while let Some(line) = file.next_line().map_err(|e| Error::Io { path: path.to_path_buf(), source: e })? {
        let Line { key, timestamp, payload } = line.item;
        if timestamp <= latest_valid && timestamp != 0 {
            end = end.max(Some(timestamp));
        }
        let partition = key.is_none().then_some(0);
        batch.push(ProduceRecord { key, payload, timestamp, partition, origin: None });
        n += 1;
        if batch.len() == APPEND_BATCH {
            log.append_batch(topic, std::mem::replace(&mut batch, Vec::with_capacity(APPEND_BATCH)))?;
        }
    }
    if !batch.is_empty() {
        log.append_batch(topic, batch)?;
    }
    Ok((n, end))
}

/// Wall-clock ms (the validator refuses event times too far ahead of it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
