//! From an [`ExecutionPlan`] to running jobs: each stage becomes one `rtb_stream` job. An operator's stage
//! is started by its kind's factory (looked up by name in the [`Registry`]) with the plan's topic names,
//! its declared group and the sinks it declares; a repartition stage re-keys its source by the source
//! schema's key fields.
//!
//! Nothing here knows an operator kind: the CPC kinds come from `rtb_ops::registry`, a library user's
//! from their own registry (see `examples/word_lengths.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rtb_ops::sink::{Cache, Database};
use rtb_stream::log::LogRecord;
use rtb_stream::registry::{OpenedSink, PeerStage, Registry, SinkOptions, StageContext};
use rtb_stream::runtime::{JobConfig, Repartition, Runtime, Upstream};
use rtb_stream::Record;

use crate::error::{Error, Result};
use crate::plan::{ExecutionPlan, Stage};
use crate::registry::default_registry;

/// The dead-letter topic every job writes to (invalid input).
pub const DEAD_LETTER_TOPIC: &str = "dead-letters";
/// The late-records topic every job writes to (valid input that arrived too late to be applied).
pub const LATE_TOPIC: &str = "late-events";

/// Every sink of a plan, opened once by its registered backend, by sink name.
#[derive(Debug, Clone, Default)]
pub struct OpenedSinks {
    by_name: BTreeMap<String, OpenedSink>,
}

impl OpenedSinks {
    /// Opens every sink of `plan` with the backends of `registry`; file-keeping backends live under
    /// `data_dir` (unless the sink names a path).
    pub fn open(plan: &ExecutionPlan, data_dir: &Path, registry: &Registry) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for s in &plan.sinks {
            let backend = registry.sink_backend(&s.kind, &s.backend).ok_or_else(|| {
                Error::Run(format!(
                    "sink `{}`: backend `{}` of kind `{}` is not registered",
                    s.name, s.backend, s.kind
                ))
            })?;
            let options = SinkOptions {
                name: &s.name,
                path: s.path.as_deref(),
                url: s.url.as_deref(),
                data_dir,
            };
            let opened = backend
                .open(&options)
                .map_err(|e| Error::Run(format!("sink `{}`: {e}", s.name)))?;
            by_name.insert(s.name.clone(), opened);
        }
        Ok(Self { by_name })
    }

    /// The sink named `name`.
    pub fn get(&self, name: &str) -> Option<&OpenedSink> {
        self.by_name.get(name)
    }

    /// Every sink, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OpenedSink)> {
        self.by_name.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// The sinks `stage` writes, in the order of its kind's sink rules (one per sink kind).
    pub fn for_stage(&self, plan: &ExecutionPlan, stage: &Stage) -> Result<Vec<OpenedSink>> {
        let mut out = Vec::with_capacity(stage.rules.sinks.len());
        for kind in &stage.rules.sinks {
            let sink = stage
                .sinks
                .iter()
                .filter(|name| plan.sink(name).is_some_and(|spec| spec.kind == *kind))
                .find_map(|name| self.by_name.get(name))
                .ok_or_else(|| {
                    Error::Run(format!("operator `{}` declares no opened sink of kind `{kind}`", stage.operator))
                })?;
            out.push(sink.clone());
        }
        Ok(out)
    }
}

/// The sinks of a CPC run: every sink of the plan (each operator writes the ones it declares), plus the
/// first cache and the first database, which the run report and `rtb export` read.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// The first cache sink of the plan (rankings, metrics, budget counters for the report and export).
    pub cache: Arc<dyn Cache>,
    /// The first database sink of the plan (balances, ledger, conversions, campaigns, alerts).
    pub db: Arc<dyn Database>,
    /// Every sink of the plan, by name.
    pub all: OpenedSinks,
}

impl Sinks {
    /// Opens the plan's sinks with the built-in registry; file-keeping ones live under `data_dir` unless
    /// the sink names a path.
    pub fn open(plan: &ExecutionPlan, data_dir: &Path) -> Result<Self> {
        let all = OpenedSinks::open(plan, data_dir, default_registry()?)?;
        let first = |kind: &str| {
            plan.sinks
                .iter()
                .filter(|s| s.kind == kind)
                .find_map(|s| all.get(&s.name))
                .ok_or_else(|| Error::Run(format!("the CPC system needs a `{kind}` sink")))
        };
        let cache = rtb_ops::registry::cache_of(first(rtb_ops::registry::sink_kinds::CACHE)?)?;
        let db = rtb_ops::registry::database_of(first(rtb_ops::registry::sink_kinds::DATABASE)?)?;
        Ok(Self { cache, db, all })
    }
}

/// In batch mode (a replay), how far in event time a stage may run ahead of the others
/// ([`JobConfig::align`]).
pub const BATCH_ALIGNMENT_DRIFT: std::time::Duration = std::time::Duration::from_secs(300);

/// Job settings of one stage: its runtime group ([`Stage::runtime_group`]), its inputs, watermark, the
/// plan's commit interval and poll size, and the dead-letter and late topics.
pub fn job_config(plan: &ExecutionPlan, stage: &Stage, stop_at_end: bool) -> JobConfig {
    let mut cfg = JobConfig::new(stage.runtime_group(), stage.inputs.clone());
    cfg.watermark = stage.settings.watermark_config();
    cfg.commit_interval = std::time::Duration::from_millis(plan.runtime.commit_interval.as_ms().max(0) as u64);
    cfg.max_poll_records = plan.runtime.max_poll_records;
    cfg.dead_letter_topic = Some(DEAD_LETTER_TOPIC.to_string());
    cfg.late_topic = Some(LATE_TOPIC.to_string());
    cfg.stop_at_end = stop_at_end;
    // A batch run (a replay) has all of its input from the start: stages are kept within 5 minutes of event
    // time of each other, so that one reading what another writes to a store (the budget monitor, the
    // campaigns the ranking stage records) sees it as of each record's time, as in a live run.
    cfg.align = stop_at_end.then_some(BATCH_ALIGNMENT_DRIFT);
    // In batch mode, the consumers of these topics wait for this stage; their clocks are not judged.
    cfg.outputs = stage.outputs.clone();
    // An input written by a repartition stage: its watermark waits for every partition of the source.
    for input in &stage.inputs {
        let written_by = plan.stages.iter().filter_map(|s| s.repartition.as_ref()).find(|r| r.topic == *input);
        if let Some(source) = written_by.and_then(|r| plan.topic(&r.source)) {
            cfg.upstream.push(Upstream {
                input: input.clone(),
                origin_topic: source.name.clone(),
                origin_partitions: source.partitions,
            });
        }
    }
    let on = |m: crate::units::Millis| (m.as_ms() > 0).then_some(m.to_std());
    cfg.max_ahead = on(plan.runtime.max_ahead);
    cfg.max_behind = on(plan.runtime.max_behind);
    cfg
}

/// Spawns every stage of `plan` on `rt`, each operator's through its kind in `registry`.
pub fn spawn_all(
    rt: &mut Runtime,
    plan: &ExecutionPlan,
    registry: &Registry,
    sinks: &OpenedSinks,
    stop_at_end: bool,
) -> Result<()> {
    let peers = plan.peers();
    // Producers first: a stage reading a topic that another stage writes must know it is written inside
    // the runtime from its first record (its clocks are not judged; in batch mode it waits for them).
    let mut stages: Vec<&Stage> = plan.stages.iter().collect();
    stages.sort_by_key(|s| s.outputs.is_empty());
    for stage in stages {
        spawn_stage(rt, plan, registry, stage, sinks, &peers, stop_at_end)?;
    }
    rt.seal();
    Ok(())
}

/// Spawns one stage.
pub fn spawn_stage(
    rt: &mut Runtime,
    plan: &ExecutionPlan,
    registry: &Registry,
    stage: &Stage,
    sinks: &OpenedSinks,
    peers: &[PeerStage],
    stop_at_end: bool,
) -> Result<()> {
    let cfg = job_config(plan, stage, stop_at_end);
    if let Some(info) = &stage.repartition {
        let source = plan
            .topic(&info.source)
            .ok_or_else(|| Error::Run(format!("stage `{}` reads unknown topic `{}`", stage.name, info.source)))?;
        let schema = Arc::clone(registry.schema(&source.schema).ok_or_else(|| {
            Error::Run(format!("topic `{}`: schema `{}` is not registered", source.name, source.schema))
        })?);
        let by = info.by.fields().to_vec();
        let target = info.topic.clone();
        // Re-key by the named field(s) (the schema validates the record); the payload travels unchanged.
        let decoder = move |rec: &LogRecord| -> std::result::Result<Record<String, Arc<[u8]>>, String> {
            let key = schema.key(rec, &by)?;
            Ok(Record::new(key, Arc::clone(&rec.payload), rec.timestamp, rec.coord()))
        };
        rt.spawn(cfg, decoder, move |_, _| {
            Ok(Repartition::new(target.clone(), |r: &Record<String, Arc<[u8]>>| {
                Ok(Some((r.key.as_bytes().to_vec(), r.value.to_vec())))
            }))
        })?;
        return Ok(());
    }
    let kind = registry
        .kind(&stage.kind)
        .ok_or_else(|| Error::Run(format!("operator `{}`: kind `{}` is not registered", stage.operator, stage.kind)))?;
    let ctx = StageContext {
        job: cfg,
        operator: &stage.operator,
        outputs: &stage.outputs,
        key: stage.key.as_ref().map(|k| k.fields()),
        sinks: sinks.for_stage(plan, stage)?,
        peers,
    };
    kind.spawn(rt, ctx, &stage.kind_settings)?;
    Ok(())
}

/// A ranker over the sinks with the operators' configuration (it caches advertisers' time zones). `rtb
/// replay` recomputes every ranking with it once every stage has finished.
pub fn ranker(
    cache: &Arc<dyn Cache>,
    db: &Arc<dyn Database>,
    ops: &rtb_ops::config::OpsConfig,
) -> rtb_ops::Result<rtb_ops::ops::ranking::Ranker> {
    rtb_ops::ops::ranking::Ranker::new(
        Arc::clone(cache),
        Arc::clone(db),
        ops.ranking,
        ops.budget.pause_at_pct,
        &ops.budget.default_time_zone,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topology;

    /// The shipped topology with its `max_ahead` / `max_behind` lines replaced by `ahead` / `behind` (none
    /// written: the defaults).
    fn cpc_with(ahead: &str, behind: &str) -> ExecutionPlan {
        let text: String = include_str!("../../../topologies/cpc.toml")
            .lines()
            .map(|l| match l {
                l if l.starts_with("max_ahead =") => ahead.to_string(),
                l if l.starts_with("max_behind =") => behind.to_string(),
                l => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        Topology::from_toml_str(&text).and_then(|t| t.plan()).expect("plan")
    }

    #[test]
    fn the_runtime_settings_and_the_plan_reach_every_job() {
        let plan = cpc_with("", "");
        let job = |name: &str| job_config(&plan, plan.stage(name).expect("stage"), false);
        let balance = job("balance");
        assert_eq!((balance.max_ahead, balance.max_behind), (Some(std::time::Duration::from_secs(3_600)), Some(std::time::Duration::from_secs(86_400))), "defaults");
        // The performance stage reads ad-events re-keyed by campaign: its watermark waits for all 8 partitions.
        let performance = job("performance");
        assert_eq!(performance.upstream.len(), 1);
        assert_eq!(
            (performance.upstream[0].origin_topic.as_str(), performance.upstream[0].origin_partitions),
            ("ad-events", 8)
        );
        // Producers are known to the runtime (batch mode waits for them; their topics' clocks are not judged).
        assert_eq!(job("budget-monitor").outputs, vec!["campaign-events".to_string()]);
        assert_eq!(job("duplicate-detection").outputs, vec!["compensation-events".to_string()]);

        let plan = cpc_with("max_ahead = \"30m\"", "max_behind = \"0s\"");
        let balance = job_config(&plan, plan.stage("balance").expect("stage"), false);
        assert_eq!((balance.max_ahead, balance.max_behind), (Some(std::time::Duration::from_secs(1_800)), None), "set, and \"0s\" turns it off");
    }
}
