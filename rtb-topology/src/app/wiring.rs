//! From an [`ExecutionPlan`] to running jobs: each stage becomes one `rtb_stream` job whose tasks run the
//! `rtb_ops` operator of its kind, writing to the plan's sinks.

use std::path::Path;
use std::sync::Arc;

use rtb_ops::config::OpsConfig;
use rtb_ops::ops::balance::BalanceWorker;
use rtb_ops::ops::budget::BudgetMonitor;
use rtb_ops::ops::compensation::CompensationWorker;
use rtb_ops::ops::conversion::ConversionMatcher;
use rtb_ops::ops::dedup::DuplicateClickDetector;
use rtb_ops::ops::performance::PerformanceStatement;
use rtb_ops::ops::ranking::{Ranker, RankingStatement};
use rtb_ops::sink::{Cache, Database, EmbeddedCache, EmbeddedDatabase};
use rtb_ops::schema::{AdEvent, ConversionEvent};
use rtb_ops::wire::WireDecoder;
use rtb_stream::log::LogRecord;
use rtb_stream::runtime::{JobConfig, Repartition, Runtime, Upstream};
use rtb_stream::Record;

use crate::error::{Error, Result};
use crate::model::{Backend, SinkKind};
use crate::plan::{ExecutionPlan, Stage};
use crate::OperatorKind;

/// The dead-letter topic every job writes to (invalid input).
pub const DEAD_LETTER_TOPIC: &str = "dead-letters";
/// The late-records topic every job writes to (valid input that arrived too late to be applied).
pub const LATE_TOPIC: &str = "late-events";

/// The two stores every CPC operator writes to.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// Rankings, metrics, budget counters.
    pub cache: Arc<dyn Cache>,
    /// Balances, ledger, conversions, campaigns, alerts.
    pub db: Arc<dyn Database>,
}

impl Sinks {
    /// Opens the plan's sinks; embedded ones live under `data_dir` unless the sink names a path.
    pub fn open(plan: &ExecutionPlan, data_dir: &Path) -> Result<Self> {
        let mut cache: Option<Arc<dyn Cache>> = None;
        let mut db: Option<Arc<dyn Database>> = None;
        for s in &plan.sinks {
            if s.backend != Backend::Embedded {
                return Err(Error::Run(format!(
                    "sink `{}`: backend {:?} is not available in this build (only `embedded`)",
                    s.name, s.backend
                )));
            }
            let path = s.path.clone().map_or_else(|| data_dir.join(&s.name), |p| data_dir.join(p));
            match s.kind {
                SinkKind::Cache => {
                    cache = Some(Arc::new(EmbeddedCache::open(&path).map_err(|e| ops_err(&s.name, e))?));
                }
                SinkKind::Database => {
                    db = Some(Arc::new(EmbeddedDatabase::open(&path).map_err(|e| ops_err(&s.name, e))?));
                }
            }
        }
        match (cache, db) {
            (Some(cache), Some(db)) => Ok(Self { cache, db }),
            _ => Err(Error::Run("the CPC operators need one cache and one database sink".into())),
        }
    }
}

impl Sinks {
    /// The runtime's commit barrier for these sinks: both are made durable once per commit round, before
    /// the tasks' state and offsets are applied — the effects of a record must never be less durable than
    /// the offset that says it was processed (the sinks and the task state are separate sled databases,
    /// flushed on their own timers).
    pub fn commit_barrier(&self) -> rtb_stream::runtime::CommitBarrier {
        let sinks = self.clone();
        Arc::new(move || {
            sinks.cache.sync().map_err(stream_err)?;
            sinks.db.sync().map_err(stream_err)
        })
    }
}

fn ops_err(what: &str, e: rtb_ops::Error) -> Error {
    Error::Run(format!("{what}: {e}"))
}

fn stream_err(e: rtb_ops::Error) -> rtb_stream::Error {
    rtb_stream::Error::Sink { sink: "rtb-ops".into(), reason: e.to_string() }
}

/// The key of a repartitioned record: the named fields joined with `:` (as the topology's `placement+category`).
fn join_key<'v>(fields: &[String], get: impl Fn(&str) -> Option<&'v str>) -> std::result::Result<String, String> {
    let mut key = String::new();
    for (i, f) in fields.iter().enumerate() {
        let part = get(f).ok_or_else(|| format!("missing field `{f}`"))?;
        if i > 0 {
            key.push(':');
        }
        key.push_str(part);
    }
    Ok(key)
}

/// A text field of an ad-event by its wire name.
fn ad_field<'e>(ev: &'e AdEvent, field: &str) -> Option<&'e str> {
    Some(match field {
        "device_id" => &ev.device_id,
        "ad_id" => &ev.ad_id,
        "campaign_id" => &ev.campaign_id,
        "advertiser_id" => &ev.advertiser_id,
        "category" => &ev.category,
        "placement" => ev.placement.as_str(),
        "product_id" => ev.product_id.as_deref()?,
        "session_id" => ev.session_id.as_deref()?,
        "event_id" => ev.event_id.as_deref()?,
        "order_id" => ev.order_id.as_deref()?,
        "search_term" => ev.search_term.as_deref()?,
        _ => return None,
    })
}

/// A text field of a conversion event by its wire name.
fn conversion_field<'e>(ev: &'e ConversionEvent, field: &str) -> Option<&'e str> {
    Some(match field {
        "device_id" => &ev.device_id,
        "order_id" => &ev.order_id,
        "product_id" => &ev.product_id,
        "session_id" => ev.session_id.as_deref()?,
        "event_id" => ev.event_id.as_deref()?,
        "referrer_url" => ev.referrer_url.as_deref()?,
        _ => return None,
    })
}

/// Job settings of one stage.
pub fn job_config(plan: &ExecutionPlan, stage: &Stage, stop_at_end: bool) -> JobConfig {
    let mut cfg = JobConfig::new(stage.name.clone(), stage.inputs.clone());
    cfg.watermark = stage.settings.watermark_config();
    cfg.commit_interval = std::time::Duration::from_millis(plan.runtime.commit_interval.as_ms().max(0) as u64);
    cfg.max_poll_records = plan.runtime.max_poll_records;
    cfg.dead_letter_topic = Some(DEAD_LETTER_TOPIC.to_string());
    cfg.late_topic = Some(LATE_TOPIC.to_string());
    cfg.stop_at_end = stop_at_end;
    cfg.outputs = stage.outputs.clone();
    // SPEC §4: a late event corrects for as long as the attribution window (24 h, or the stage's own longer
    // correction horizon); records older than that are not applied by any stage (late-records output) —
    // a click with a clock years off is not charged.
    let horizon = match stage.settings.late_policy {
        crate::kind::LatePolicy::Correct { max_lateness } => max_lateness.as_ms() + stage.settings.grace.as_ms(),
        _ => 0,
    };
    cfg.max_behind = Some(horizon.max(rtb_stream::time::DAY));
    // An input written by a repartition stage: its watermark waits for every partition of the source.
    for input in &stage.inputs {
        if let Some(info) = plan.stages.iter().filter_map(|s| s.repartition.as_ref()).find(|r| r.topic == *input) {
            if let Some(source) = plan.topic(&info.source) {
                cfg.upstream.push(Upstream {
                    input: input.clone(),
                    origin_topic: info.source.clone(),
                    origin_partitions: source.partitions,
                });
            }
        }
    }
    cfg
}

/// Spawns every stage of `plan` on `rt`.
pub fn spawn_all(
    rt: &mut Runtime,
    plan: &ExecutionPlan,
    sinks: &Sinks,
    ops: &OpsConfig,
    wire: &WireDecoder,
    stop_at_end: bool,
) -> Result<()> {
    for stage in &plan.stages {
        spawn_stage(rt, plan, stage, sinks, ops, wire, stop_at_end)?;
    }
    Ok(())
}

/// A ranker over the sinks (one per task: it caches advertisers' time zones).
pub fn ranker(cache: &Arc<dyn Cache>, db: &Arc<dyn Database>, ops: &OpsConfig) -> rtb_ops::Result<Ranker> {
    Ranker::new(
        Arc::clone(cache),
        Arc::clone(db),
        ops.ranking,
        ops.budget.pause_at_pct,
        &ops.budget.default_time_zone,
    )
}

/// Spawns one stage.
pub fn spawn_stage(
    rt: &mut Runtime,
    plan: &ExecutionPlan,
    stage: &Stage,
    sinks: &Sinks,
    ops: &OpsConfig,
    wire: &WireDecoder,
    stop_at_end: bool,
) -> Result<()> {
    let cfg = job_config(plan, stage, stop_at_end);
    let (cache, db) = (Arc::clone(&sinks.cache), Arc::clone(&sinks.db));
    let w = wire.clone();
    match stage.kind {
        OperatorKind::Repartition => {
            let info = stage.repartition.clone().ok_or_else(|| {
                Error::Run(format!("stage `{}` is a repartition without its description", stage.name))
            })?;
            let by = info.by.fields().to_vec();
            let target = info.topic.clone();
            let source = info.source.clone();
            let topics = ops.topics.clone();
            // Re-key by the named field(s) of the validated event (decoded once); the payload travels unchanged.
            let decoder = move |rec: &LogRecord| -> std::result::Result<Record<String, Arc<[u8]>>, String> {
                let key = if source == topics.ad_events {
                    let ev = w.ad(rec)?.value;
                    join_key(&by, |f| ad_field(&ev, f))?
                } else if source == topics.conversion_events {
                    let ev = w.conversion(rec)?.value;
                    join_key(&by, |f| conversion_field(&ev, f))?
                } else {
                    let value: serde_json::Value = serde_json::from_slice(&rec.payload).map_err(|e| e.to_string())?;
                    join_key(&by, |f| value.get(f).and_then(|v| v.as_str()))?
                };
                Ok(Record::new(key, Arc::clone(&rec.payload), rec.timestamp, rec.coord()))
            };
            rt.spawn(cfg, decoder, move |_, _| {
                Ok(Repartition::new(target.clone(), |r: &Record<String, Arc<[u8]>>| {
                    Ok(Some((r.key.as_bytes().to_vec(), r.value.to_vec())))
                }))
            })?;
        }
        OperatorKind::Ranking => {
            let ops = ops.clone();
            rt.spawn(cfg, w.campaign_decoder(), move |_, scope| {
                let r = ranker(&cache, &db, &ops).map_err(stream_err)?;
                let op = RankingStatement::new(scope, Arc::clone(&cache), Arc::clone(&db), r).map_err(stream_err)?;
                Ok(op)
            })?;
        }
        OperatorKind::Performance => {
            let ops = ops.clone();
            rt.spawn(cfg, w.ad_decoder(), move |task, scope| {
                let r = ranker(&cache, &db, &ops).map_err(stream_err)?;
                let op = PerformanceStatement::new(scope, task.partition, Arc::clone(&cache), ops.performance, r)
                    .map_err(stream_err)?;
                Ok(op)
            })?;
        }
        OperatorKind::ConversionMatching => {
            let ccfg = ops.conversion;
            rt.spawn(cfg, w.match_input_decoder(), move |_, scope| {
                let op = ConversionMatcher::new(scope, Arc::clone(&db), ccfg).map_err(stream_err)?;
                Ok(op)
            })?;
        }
        OperatorKind::DuplicateDetection => {
            let dcfg = ops.dedup.clone();
            rt.spawn(cfg, w.ad_decoder(), move |_, scope| {
                DuplicateClickDetector::new(scope, dcfg.clone()).map_err(stream_err)
            })?;
        }
        OperatorKind::Balance => {
            rt.spawn(cfg, w.ad_decoder(), move |_, _| Ok(BalanceWorker::new(Arc::clone(&db))))?;
        }
        OperatorKind::BudgetMonitor => {
            let bcfg = ops.budget.clone();
            rt.spawn(cfg, w.ad_decoder(), move |_, scope| {
                let op = BudgetMonitor::new(scope, Arc::clone(&cache), Arc::clone(&db), bcfg.clone()).map_err(stream_err)?;
                Ok(op)
            })?;
        }
        OperatorKind::Compensation => {
            let tz = ops.budget.default_time_zone.clone();
            rt.spawn(cfg, w.compensation_decoder(), move |_, _| {
                let op = CompensationWorker::new(Arc::clone(&cache), Arc::clone(&db), &tz).map_err(stream_err)?;
                Ok(op)
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtb_ops::schema::{ValidationConfig, Validator};
    use rtb_stream::SourceCoord;

    #[test]
    fn repartition_keys_come_from_the_decoded_event() {
        let raw = br#"{"event_type":"CLICK","timestamp":"2024-01-15T10:30:00Z","device_id":"device_12345","ad_id":"ad_001","campaign_id":"campaign_100","advertiser_id":"advertiser_50","placement":"HOME","category":"c","bid_price":1500,"actual_price":1200}"#;
        let ev = Validator::new(ValidationConfig::default())
            .ad_event(raw, &SourceCoord::new("ad-events", 0, 0), None)
            .expect("valid");
        let by = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(join_key(&by(&["campaign_id"]), |f| ad_field(&ev, f)), Ok("campaign_100".to_string()));
        assert_eq!(join_key(&by(&["placement", "category"]), |f| ad_field(&ev, f)), Ok("HOME:c".to_string()));
        assert_eq!(
            join_key(&by(&["product_id"]), |f| ad_field(&ev, f)),
            Err("missing field `product_id`".to_string()),
            "an absent optional field cannot be a key"
        );
    }
}
