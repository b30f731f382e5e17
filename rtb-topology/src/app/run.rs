//! `rtb run`: the CPC system on the embedded default — the embedded durable log, the state journal and the embedded
//! sinks under one data directory — fed by the traffic simulator, with a progress bar and a final report. With
//! `--kafka` the log and the operators' state (changelog topics) are on a Kafka cluster and the sinks stay in
//! the directory (see [`open_kafka`]); the drain is in [`super::drain`].
//!
//! Restart-safety: the log, the operators' state (committed atomically with offsets) and the sinks all live
//! in the data directory; the simulator resumes after the last event found in the log (see
//! [`super::produce`]), and every effect on money is idempotent. A run killed at any moment and restarted
//! ends with the ledger of an uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rtb_ops::config::OpsConfig;
use rtb_ops::sink::Advertiser as AdvertiserSpec;
use rtb_stream::kafka::{ChangelogBackend, ChangelogOptions, KafkaConfig, KafkaLog, TopicSpec};
use rtb_stream::log::{EmbeddedLog, TopicConfig};
use rtb_stream::runtime::Runtime;
use rtb_stream::state::{JournalBackend, StoreBackend};
use serde::{Deserialize, Serialize};

use super::letters::LetterTally;
use super::lock::DataDirLock;
use super::drain::drain;
pub use super::drain::total_lag;
use super::produce;
use super::runlog::{KafkaRunLog, RunLog};
use super::stores;
use super::pricing::GspPricer;
use super::wiring::{self, Sinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::report::{Report, RunCounters};
use crate::sim::{SimConfig, SimTopic, Simulator, DEFAULT_PACE_MS};

/// What `rtb run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where everything lives.
    pub data_dir: PathBuf,
    /// Ad-events the simulator produces in total (across restarts).
    pub events: u64,
    /// Events per second (all topics); `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Stop producing after this long (the run then drains and reports).
    pub duration: Option<Duration>,
    /// Simulator seed.
    pub seed: u64,
    /// Simulator scale.
    pub scale: u32,
    /// Show a progress bar (stderr).
    pub progress: bool,
    /// The log and the operators' state on a Kafka cluster (`--kafka`) instead of under `data_dir`; the
    /// sinks stay under `data_dir`.
    pub kafka: Option<KafkaConfig>,
    /// What this process runs: the topology and the generator, or one of them (only with `kafka`).
    pub mode: RunMode,
    /// Every stage runs as a member of its consumer group (only with `kafka`): several processes share the
    /// partitions and take over from each other (see `Runtime::with_group_membership`). Without it this
    /// process runs every partition: one topology process per cluster and prefix.
    pub group_membership: bool,
}

/// What one `rtb run` process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunMode {
    /// The topology and the traffic generator.
    #[default]
    Both,
    /// Only the topology (`--no-generator`): the traffic comes from another process; the run drains once
    /// the log holds every event of the run (or at the end of `--duration`).
    TopologyOnly,
    /// Only the traffic generator (`--generator-only`): no sinks, no state.
    GeneratorOnly,
}

/// What a data directory was created with; a restart must use the same simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunIdentity {
    seed: u64,
    scale: u32,
    /// Ad-events to produce in total (the largest `--events` given on this directory).
    events: u64,
    /// The simulator's pace (ms per ad-event). Absent in directories written before the timeline was made
    /// independent of the total: those were paced by `30 h / events` and cannot change their total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pace_ms: Option<f64>,
    /// `brokers topic-prefix` of the Kafka cluster holding the log and the state (`None`: the embedded log
    /// under the directory): the sinks of the directory belong to that log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kafka: Option<String>,
}

impl RunIdentity {
    /// The pace the simulator runs at for this directory.
    fn pace(&self) -> f64 {
        self.pace_ms.unwrap_or(30.0 * 3_600_000.0 / self.events.max(1) as f64)
    }
}

/// Why a run ended before everything was produced and processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incomplete {
    /// Ctrl-C (SIGINT) or SIGTERM.
    Interrupted,
    /// `--duration` was over before every event was produced.
    DurationOver,
    /// Every record was committed but some watermarks stopped short of the end of the data.
    WatermarkStalled(String),
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incomplete::Interrupted => f.write_str("interrupted (Ctrl-C)"),
            Incomplete::DurationOver => f.write_str("--duration was over before every event was produced"),
            Incomplete::WatermarkStalled(why) => write!(f, "watermarks stalled: {why}"),
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report (its `complete` says whether every event was produced and processed to the end).
    pub report: Report,
    /// Why the run is not complete, if it is not.
    pub incomplete: Option<Incomplete>,
}

impl RunOutcome {
    /// Whether every simulated event was produced, and every stage committed every input record and moved
    /// its watermark to the end of the data.
    pub fn complete(&self) -> bool {
        self.incomplete.is_none()
    }
}

/// Runs the CPC system until the simulator has produced everything (or the duration is over, or Ctrl-C),
/// drains, commits, and reports.
///
/// The data directory is locked first (see [`super::lock`]), then the stores' seal is verified (see
/// [`super::stores`]): a corrupt store fails the run, naming it, before anything is written.
pub fn run(plan: &ExecutionPlan, opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<RunOutcome> {
    let started = Instant::now();
    if opts.kafka.is_none() && opts.mode != RunMode::Both {
        return Err(Error::Run(
            "--no-generator and --generator-only need --kafka: the embedded log belongs to one process".into(),
        ));
    }
    if opts.kafka.is_none() && opts.group_membership {
        return Err(Error::Run("--group-membership needs --kafka: the embedded log belongs to one process".into()));
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| io(&opts.data_dir, e))?;
    let _lock = DataDirLock::acquire(&opts.data_dir)?;
    let ident = check_identity(&opts.data_dir, opts)?;
    // A Redis cache that lost its data is rebuilt by re-processing (new groups for the stages writing it).
    let mut plan = plan.clone();
    super::servers::prepare_caches(&mut plan, &opts.data_dir)?;
    let plan = &plan;
    let Some(kafka) = &opts.kafka else {
        let stores = stores::stores(plan, &opts.data_dir);
        stores::verify(&opts.data_dir, &stores)?;
        stores::unseal(&opts.data_dir)?;
        // Everything is opened and closed inside: the stores must be closed before they are sealed.
        let outcome = run_open_embedded(plan, opts, &ident, &stop, started)?;
        stores::seal(&opts.data_dir, &stores)?;
        return Ok(outcome);
    };
    // On Kafka the operators' state is in changelog topics: only the sinks are stores of the directory.
    let stores: Vec<stores::Store> =
        stores::stores(plan, &opts.data_dir).into_iter().filter(|s| s.name != stores::STATE_DIR).collect();
    let sinks = if opts.mode == RunMode::GeneratorOnly {
        None
    } else {
        stores::verify(&opts.data_dir, &stores)?;
        stores::unseal(&opts.data_dir)?;
        Some(Sinks::open(plan, &opts.data_dir)?)
    };
    // The process that runs the generator too is the deployment's primary: static membership, so that a
    // restart (after a crash too) takes its partitions straight back. Extra `--no-generator` instances are
    // elastic: dynamic members, whose partitions move on at once when they stop (see `KafkaConfig::instance_id`).
    let kafka = match opts.mode {
        RunMode::Both if opts.group_membership => kafka.clone().with_instance_id(instance_id(&opts.data_dir)?),
        _ => kafka.clone(),
    };
    let (log, state) = open_kafka(plan, kafka, sinks.is_some())?;
    let outcome = run_open(plan, opts, &ident, &stop, started, &log, state, sinks)?;
    if opts.mode != RunMode::GeneratorOnly {
        stores::seal(&opts.data_dir, &stores)?;
    }
    Ok(outcome)
}

/// The id of the process that runs on `data_dir` in its consumer groups (static membership, see
/// [`KafkaConfig::instance_id`]): made once and kept in the directory (`instance-id`), so that a process
/// restarted on the same directory — after a crash too — is the same member and takes its partitions back
/// at once. The directory's lock keeps two live processes from sharing it.
pub fn instance_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path, e)),
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    let id = format!("rtb-{:016x}", h.finish());
    let tmp = data_dir.join("instance-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(id)
}

/// Connects to the Kafka cluster of `cfg`, creates the plan's topics (and the dead-letter and late topics)
/// when missing, and (`with_state`) opens the operators' state on changelog topics, one per consumer group
/// with a partition per task, restoring it.
pub fn open_kafka(plan: &ExecutionPlan, cfg: KafkaConfig, with_state: bool) -> Result<(KafkaRunLog, Arc<dyn StoreBackend>)> {
    let log = KafkaLog::connect(cfg)?;
    let mut specs: Vec<TopicSpec> = plan.topics.iter().map(|t| TopicSpec::new(t.name.clone(), t.topic_config())).collect();
    for t in [DEAD_LETTER_TOPIC, LATE_TOPIC] {
        specs.push(TopicSpec::new(t, TopicConfig { partitions: 1, retention: None }));
    }
    log.ensure_topics(&specs)?;
    let state: Arc<dyn StoreBackend> = if with_state {
        let groups: Vec<(String, u32)> =
            plan.stages.iter().map(|s| (s.runtime_group().to_string(), s.partitions)).collect();
        let backend = ChangelogBackend::open(&log, &groups, ChangelogOptions::default())?;
        let r = backend.restore_stats();
        tracing::info!(records = r.records, keys = r.keys, elapsed_ms = r.elapsed.as_millis() as u64,
            "operators' state restored from the changelogs");
        Arc::new(backend)
    } else {
        Arc::new(rtb_stream::state::MemoryBackend::new())
    };
    Ok((KafkaRunLog::new(log), state))
}

/// Opens what a data directory holds for `plan` (the caller holds its lock and verified its seal): the log
/// with every topic of the plan plus the dead-letter and late topics, the operators' state journal, the sinks.
pub(crate) fn open_data_dir(plan: &ExecutionPlan, data_dir: &Path) -> Result<(EmbeddedLog, Arc<dyn StoreBackend>, Sinks)> {
    let log = EmbeddedLog::open(data_dir.join("log"))?;
    for t in &plan.topics {
        log.create_topic(&t.name, t.topic_config())?;
    }
    log.create_topic(DEAD_LETTER_TOPIC, TopicConfig { partitions: 1, retention: None })?;
    log.create_topic(LATE_TOPIC, TopicConfig { partitions: 1, retention: None })?;
    let state: Arc<dyn StoreBackend> = Arc::new(JournalBackend::open(data_dir.join(stores::STATE_DIR))?);
    let sinks = Sinks::open(plan, data_dir)?;
    Ok((log, state, sinks))
}

fn run_open_embedded(
    plan: &ExecutionPlan,
    opts: &RunOptions,
    ident: &RunIdentity,
    stop: &AtomicBool,
    started: Instant,
) -> Result<RunOutcome> {
    let (log, state, sinks) = open_data_dir(plan, &opts.data_dir)?;
    run_open(plan, opts, ident, stop, started, &log, state, Some(sinks))
}

#[allow(clippy::too_many_arguments)]
fn run_open(
    plan: &ExecutionPlan,
    opts: &RunOptions,
    ident: &RunIdentity,
    stop: &AtomicBool,
    started: Instant,
    log: &dyn RunLog,
    state: Arc<dyn StoreBackend>,
    sinks: Option<Sinks>,
) -> Result<RunOutcome> {
    let sim_cfg = SimConfig {
        seed: ident.seed,
        scale: ident.scale,
        ad_events: ident.events,
        pace_ms: ident.pace(),
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(sim_cfg, GspPricer::default());
    let generate = opts.mode != RunMode::TopologyOnly;
    let mut rt = match &sinks {
        Some(sinks) => {
            for a in sim.advertisers() {
                sinks
                    .db
                    .upsert_advertiser(&AdvertiserSpec {
                        advertiser_id: a.advertiser_id.clone(),
                        opening_balance: a.balance,
                        time_zone: a.time_zone.clone(),
                    })
                    .map_err(|e| Error::Run(format!("database: {e}")))?;
            }
            // With --group-membership every stage is a member of its consumer group: the processes on the
            // same cluster and prefix share the partitions and take over from each other.
            let mut rt = Runtime::new(log.io(), Arc::clone(&state)).with_group_membership(opts.group_membership);
            wiring::spawn_all(&mut rt, plan, crate::registry::default_registry()?, &sinks.all, false)?;
            Some(rt)
        }
        None => None,
    };
    let token = rt.as_ref().map_or_else(rtb_stream::runtime::ShutdownToken::new, Runtime::shutdown_token);
    let metrics = rt.as_ref().map_or_else(|| Arc::new(rtb_stream::runtime::RuntimeMetrics::default()), Runtime::metrics);

    // Produce.
    let topics = ops_config(plan)?.topics;
    // Conversions: the declared topic and the repartition topics that carry its records.
    let conversion_schema = plan.topics.iter().find(|t| t.name == topics.conversion_events).map(|t| t.schema.clone());
    let mut letters = LetterTally::new(
        plan.topics.iter().filter(|t| Some(&t.schema) == conversion_schema.as_ref()).map(|t| t.name.clone()),
    );
    let present = produce::Resume::scan(log, &topics)?;
    let resume = present.point();
    // At an unlimited rate, batches of 1 024 events; at a set rate, what is due before the next pause.
    let mut batch = produce::Batcher::new(log, &topics, 1_024);
    let bar = progress_bar(opts, ident.events);
    let mut produced_ad = 0u64;
    let mut produced = BTreeMap::<String, u64>::new();
    let prod_start = Instant::now();
    let mut sent_this_run = 0u64;
    let mut incomplete = None;
    if resume > 0 && generate {
        bar.println(format!("resuming after {resume} events already in the log"));
    }
    let mut total_events = 0u64;
    for ev in sim.by_ref() {
        total_events += 1;
        if ev.topic == SimTopic::Ad {
            produced_ad += 1;
        }
        *produced.entry(produce::topic_name(&topics, ev.topic).to_string()).or_default() += 1;
        if !generate || present.contains(&topics, &ev) {
            continue;
        }
        batch.push(ev)?;
        sent_this_run += 1;
        if sent_this_run.is_multiple_of(1_024) {
            bar.set_position(produced_ad);
            if rt.is_some() {
                letters.update(log)?;
                bar.set_message(pipeline_message(&metrics, &letters));
            }
            if stop.load(Ordering::Relaxed) {
                incomplete = Some(Incomplete::Interrupted);
                break;
            }
            if token.is_triggered() {
                break;
            }
            if opts.duration.is_some_and(|d| prod_start.elapsed() >= d) {
                break;
            }
        }
        if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(sent_this_run as f64 / rate);
            if let Some(wait) = due.checked_sub(prod_start.elapsed()).filter(|w| *w >= Duration::from_millis(1)) {
                // Events are visible at their time: what is pending goes out before the pause.
                batch.flush()?;
                std::thread::sleep(wait);
            }
        }
    }
    if incomplete.is_none() && produced_ad < ident.events && !token.is_triggered() {
        incomplete = Some(Incomplete::DurationOver);
    }
    batch.flush()?;
    bar.set_position(produced_ad);
    log.flush()?;
    if !generate {
        // Another process generates: wait until the log holds every event of this run (or the duration is
        // over, or Ctrl-C), then drain.
        incomplete = wait_for_generator(log, &topics, total_events, opts, stop, &token, &bar)?;
    }

    // Drain: until every stage has committed every input record AND its committed watermark has reached the
    // end of the data it read (so every window, join and dedup window that the data closes has fired).
    let mut committed_all: Option<Instant> = None;
    let mut counters = RunCounters::default();
    if let Some(rt) = rt.take() {
        if incomplete != Some(Incomplete::Interrupted) {
            // The generator has finished: no need to wait for the idle timeout to call the inputs quiet. Each
            // task reads to the end, counts its partitions idle (closing every window the data closes),
            // commits and stops; a later `rtb run` on this data directory goes on from there.
            tracing::info!(
                events = sent_this_run,
                "traffic generator finished; draining: every stage reads to the end of its inputs, closes what the \
                 data closes, commits and stops"
            );
            rt.drain_token().trigger();
            if let Some(why) = drain(plan, log, &state, &rt, &metrics, &mut letters, &token, stop, &bar, &mut committed_all)? {
                incomplete.get_or_insert(why);
            }
        }
        token.trigger();
        let rt_report = rt.join()?;
        for (group, c) in &rt_report.groups {
            if c.duplicates_skipped > 0 {
                counters.duplicates_skipped.insert(group.clone(), c.duplicates_skipped);
            }
        }
    }
    log.flush()?;
    state.flush()?;
    bar.finish_and_clear();

    counters.events = produced;
    counters.elapsed_s = started.elapsed().as_secs_f64();
    counters.committed_s = committed_all.map(|t| t.duration_since(started).as_secs_f64());
    let mut report = match &sinks {
        Some(sinks) => {
            letters.update(log)?;
            letters.fill(&mut counters);
            counters.conversion_inputs.events = counters.events.get(&topics.conversion_events).copied().unwrap_or(0);
            Report::collect(sinks.cache.as_ref(), sinks.db.as_ref(), counters)
                .map_err(|e| Error::Run(format!("report: {e}")))?
        }
        // Only the generator ran: the report holds what it produced.
        None => Report { run: counters, ..Report::default() },
    };
    report.complete = incomplete.is_none();
    report.resumed_after = (resume > 0 && generate).then_some(resume);
    report.incomplete = incomplete.as_ref().map(ToString::to_string);
    Ok(RunOutcome { report, incomplete })
}

/// `--no-generator`: waits until the log holds all `total` events of the run (written by another process),
/// or the duration is over, or Ctrl-C. Returns why the run is incomplete, if it is.
fn wait_for_generator(
    log: &dyn RunLog,
    topics: &rtb_ops::config::TopicNames,
    total: u64,
    opts: &RunOptions,
    stop: &AtomicBool,
    token: &rtb_stream::runtime::ShutdownToken,
    bar: &ProgressBar,
) -> Result<Option<Incomplete>> {
    let since = Instant::now();
    loop {
        let point = produce::Resume::scan(log, topics)?.point();
        bar.set_message(format!("waiting for the generator: {point} of {total} events in the log"));
        if point >= total || token.is_triggered() {
            return Ok(None);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(Some(Incomplete::Interrupted));
        }
        if opts.duration.is_some_and(|d| since.elapsed() >= d) {
            return Ok(Some(Incomplete::DurationOver));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The operators' configuration as the plan sets it (each kind's settings, the plan's topic names): the
/// topic names the report, `rtb export` and `rtb replay` read, and the ranking settings of the final
/// recompute of a replay.
pub fn ops_config(plan: &ExecutionPlan) -> Result<OpsConfig> {
    let topics: Vec<(String, String)> = plan
        .topics
        .iter()
        .filter(|t| !t.internal)
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    rtb_ops::registry::ops_config(&plan.peers(), &topics)
        .map_err(|e| Error::Run(format!("operator settings: {e}")))
}

/// A failure on a data-directory file (`Error::Io` is about the topology file and exits 2).
fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Run(format!("{}: {e}", path.display()))
}

/// The Kafka cluster and topic prefix a data directory's run used (`None`: the embedded log).
pub(crate) fn kafka_of(dir: &Path) -> Result<Option<KafkaConfig>> {
    let path = dir.join("run.json");
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let id: RunIdentity = serde_json::from_slice(&bytes).map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
    Ok(id.kafka.map(|k| {
        let (brokers, prefix) = k.split_once(' ').unwrap_or((k.as_str(), ""));
        KafkaConfig::new(brokers).with_prefix(prefix)
    }))
}

fn check_identity(dir: &Path, opts: &RunOptions) -> Result<RunIdentity> {
    let path = dir.join("run.json");
    let kafka = opts.kafka.as_ref().map(|k| format!("{} {}", k.brokers, k.topic_prefix));
    let want =
        RunIdentity { seed: opts.seed, scale: opts.scale, events: opts.events, pace_ms: Some(DEFAULT_PACE_MS), kafka };
    let write = |id: &RunIdentity| -> Result<()> {
        let json = serde_json::to_vec_pretty(id).map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
        std::fs::write(&path, json).map_err(|e| io(&path, e))
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write(&want)?;
            return Ok(want);
        }
        Err(e) => return Err(io(&path, e)),
    };
    let have: RunIdentity =
        serde_json::from_slice(&bytes).map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
    if have.kafka != want.kafka {
        let name = |k: &Option<String>| k.as_ref().map_or_else(|| "the embedded log".to_string(), |k| format!("Kafka `{k}`"));
        return Err(Error::Run(format!(
            "{} holds the sinks of a run on {}; this run is on {}: use another --data-dir",
            dir.display(),
            name(&have.kafka),
            name(&want.kafka)
        )));
    }
    if (have.seed, have.scale) != (want.seed, want.scale) {
        return Err(Error::Run(format!(
            "{} was created with --seed {} --scale {}; restart with the same values or use another --data-dir",
            dir.display(),
            have.seed,
            have.scale
        )));
    }
    if have.pace_ms.is_none() && want.events != have.events {
        // The old simulator spread `events` over 30 h: another total would re-time every event.
        return Err(Error::Run(format!(
            "{} was created by an older rtb whose simulated timeline depends on --events; restart it with              --events {} or use another --data-dir",
            dir.display(),
            have.events
        )));
    }
    // A restart may raise the event count to continue producing: the timeline does not depend on it.
    let merged = RunIdentity { events: have.events.max(want.events), ..have.clone() };
    if merged != have {
        write(&merged)?;
    }
    Ok(merged)
}

/// The progress line's pipeline figures. Dead letters are distinct bad inputs (as in the report), not the
/// runtime's per-group counters, which count a record once per consumer group that rejected it.
pub(crate) fn pipeline_message(metrics: &rtb_stream::runtime::RuntimeMetrics, letters: &LetterTally) -> String {
    let snap = metrics.snapshot();
    let processed: u64 = snap.values().map(|c| c.records_in).sum();
    format!("{processed} records processed by {} stages, {} dead letters", snap.len(), letters.dead_letters())
}

fn progress_bar(opts: &RunOptions, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if !opts.progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ad-events ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
