//! `rtb run`: the CPC system on the embedded default — the embedded durable log, sled state and the embedded
//! sinks under one data directory — fed by the traffic simulator, with a progress bar and a final report.
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
use rtb_stream::log::{EmbeddedLog, TopicConfig};
use rtb_stream::runtime::{task_scope, Runtime};
use rtb_stream::state::{SledBackend, StoreBackend};
use rtb_stream::DeadLetter;
use serde::{Deserialize, Serialize};

use super::produce;
use super::pricing::GspPricer;
use super::wiring::{self, Sinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::report::{Report, RunCounters};
use crate::sim::{SimConfig, SimTopic, Simulator};

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
}

/// What a data directory was created with; a restart must use the same simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunIdentity {
    seed: u64,
    scale: u32,
    events: u64,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report.
    pub report: Report,
    /// Whether every simulated event was produced and processed.
    pub complete: bool,
}

/// Runs the CPC system until the simulator has produced everything (or the duration is over, or Ctrl-C),
/// drains, commits, and reports.
pub fn run(plan: &ExecutionPlan, opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<RunOutcome> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| io(&opts.data_dir, e))?;
    let ident = check_identity(&opts.data_dir, opts)?;

    let log = EmbeddedLog::open(opts.data_dir.join("log"))?;
    for t in &plan.topics {
        log.create_topic(&t.name, t.topic_config())?;
    }
    log.create_topic(DEAD_LETTER_TOPIC, TopicConfig { partitions: 1, retention_ms: None })?;
    log.create_topic(LATE_TOPIC, TopicConfig { partitions: 1, retention_ms: None })?;
    let state: Arc<dyn StoreBackend> = Arc::new(SledBackend::open(opts.data_dir.join("state"), "tasks")?);
    let sinks = Sinks::open(plan, &opts.data_dir)?;

    let sim_cfg = SimConfig { seed: ident.seed, scale: ident.scale, ad_events: ident.events, ..SimConfig::default() };
    let mut sim = Simulator::new(sim_cfg, GspPricer::default());
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

    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    wiring::spawn_all(&mut rt, plan, crate::registry::default_registry()?, &sinks.all, false)?;
    let token = rt.shutdown_token();
    let metrics = rt.metrics();

    // Produce.
    let resume = produce::resume_point(&log)?;
    let bar = progress_bar(opts, ident.events);
    let mut produced_ad = 0u64;
    let mut produced = BTreeMap::<String, u64>::new();
    let prod_start = Instant::now();
    let mut sent_this_run = 0u64;
    let mut interrupted = false;
    if resume > 0 {
        bar.println(format!("resuming after {resume} events already in {}", opts.data_dir.display()));
    }
    for ev in sim.by_ref() {
        if ev.topic == SimTopic::Ad {
            produced_ad += 1;
        }
        *produced.entry(ev.topic.name().to_string()).or_default() += 1;
        if ev.seq < resume {
            continue;
        }
        produce::append(&log, &ev)?;
        sent_this_run += 1;
        if sent_this_run % 1_024 == 0 {
            bar.set_position(produced_ad);
            bar.set_message(pipeline_message(&metrics));
            if stop.load(Ordering::Relaxed) || token.is_triggered() {
                interrupted = true;
                break;
            }
            if opts.duration.is_some_and(|d| prod_start.elapsed() >= d) {
                break;
            }
        }
        if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(sent_this_run as f64 / rate);
            if let Some(wait) = due.checked_sub(prod_start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let all_produced = produced_ad >= ident.events;
    bar.set_position(produced_ad);
    log.flush()?;

    // Drain: wait until every stage has committed everything, and stays so for longer than the idle
    // timeout (so idle partitions release the watermark and the last windows fire).
    let settle = plan.stages.iter().map(|s| s.settings.idle_timeout.as_ms()).max().unwrap_or(0) as u64
        + 2 * plan.runtime.commit_interval.as_ms().max(0) as u64
        + 500;
    let mut caught_up_since: Option<Instant> = None;
    while !interrupted && !token.is_triggered() {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let lag = total_lag(plan, &log, &state)?;
        bar.set_message(format!("draining: lag {lag}; {}", pipeline_message(&metrics)));
        if lag == 0 {
            let since = *caught_up_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(settle) && total_lag(plan, &log, &state)? == 0 {
                break;
            }
        } else {
            caught_up_since = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    token.trigger();
    let rt_report = rt.join()?;
    log.flush()?;
    state.flush()?;
    bar.finish_and_clear();

    let mut counters = RunCounters { events: produced, elapsed_s: started.elapsed().as_secs_f64(), ..RunCounters::default() };
    dead_letter_counts(&log, &mut counters)?;
    for (group, c) in &rt_report.groups {
        if c.duplicates_skipped > 0 {
            counters.late.insert(format!("{group} (duplicates skipped)"), c.duplicates_skipped);
        }
    }
    let report = Report::collect(sinks.cache.as_ref(), sinks.db.as_ref(), counters)
        .map_err(|e| Error::Run(format!("report: {e}")))?;
    Ok(RunOutcome { report, complete: all_produced && !interrupted })
}

/// The operators' configuration as the plan sets it (each kind's settings, the plan's topic names), for
/// the paths that drive the CPC operators by hand (`rtb replay`).
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

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

fn check_identity(dir: &Path, opts: &RunOptions) -> Result<RunIdentity> {
    let path = dir.join("run.json");
    let want = RunIdentity { seed: opts.seed, scale: opts.scale, events: opts.events };
    if let Ok(bytes) = std::fs::read(&path) {
        let have: RunIdentity = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
        if (have.seed, have.scale) != (want.seed, want.scale) {
            return Err(Error::Run(format!(
                "{} was created with --seed {} --scale {}; restart with the same values or use another --data-dir",
                dir.display(),
                have.seed,
                have.scale
            )));
        }
        // A restart may raise the event count to continue producing.
        let merged = RunIdentity { events: have.events.max(want.events), ..have };
        std::fs::write(&path, serde_json::to_vec_pretty(&merged).unwrap_or_default()).map_err(|e| io(&path, e))?;
        return Ok(merged);
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&want).unwrap_or_default()).map_err(|e| io(&path, e))?;
    Ok(want)
}

/// Records not yet committed by the stages, summed over every input partition.
pub fn total_lag(plan: &ExecutionPlan, log: &EmbeddedLog, state: &Arc<dyn StoreBackend>) -> Result<u64> {
    let mut lag = 0u64;
    for stage in &plan.stages {
        for p in 0..stage.partitions {
            let committed = task_scope(state, stage.runtime_group(), p).read_offsets()?;
            for topic in &stage.inputs {
                let end = log.end_offset(topic, p)?;
                let done = committed.get(&(topic.clone(), p)).copied().unwrap_or(0);
                lag += end.saturating_sub(done);
            }
        }
    }
    Ok(lag)
}

fn pipeline_message(metrics: &rtb_stream::runtime::RuntimeMetrics) -> String {
    let snap = metrics.snapshot();
    let processed: u64 = snap.values().map(|c| c.records_in).sum();
    let dead: u64 = snap.values().map(|c| c.dead_letters).sum();
    format!("{processed} records processed by {} stages, {dead} dead letters", snap.len())
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

/// Counts dead letters (once per source record, although several stages reject the same record).
fn dead_letter_counts(log: &EmbeddedLog, c: &mut RunCounters) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for r in super::export::read_all(log, DEAD_LETTER_TOPIC)? {
        let Ok(dl) = serde_json::from_slice::<DeadLetter>(&r.payload) else { continue };
        // Late records are reported through the dead-letter output too (reason LATE_*), per stage.
        if dl.reason.starts_with("LATE") {
            *c.late.entry(dl.stage.clone()).or_default() += 1;
            continue;
        }
        if seen.insert(dl.source.clone()) {
            *c.dead_letters.entry(dl.source.topic.to_string()).or_default() += 1;
            let reason = dl.reason.split(':').next().unwrap_or(&dl.reason).to_string();
            *c.dead_letter_reasons.entry(reason).or_default() += 1;
        }
    }
    Ok(())
}
