//! `rtb export`: the stores of a `rtb run` data directory written as JSON Lines, in the replay's output
//! format (rankings, metrics, conversions, compensations, ledger, balances, campaign status, alerts, dead
//! letters), so a streaming run and a replay can be compared file by file.

use std::collections::BTreeSet;
use std::path::Path;

use rtb_ops::config::TopicNames;
use rtb_ops::schema::{CompensationEvent, ValidationConfig, Validator};
use rtb_stream::log::EmbeddedLog;
use rtb_stream::DeadLetter;

use super::wiring::{Sinks, DEAD_LETTER_TOPIC};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::replay::outputs::Writer;
use crate::replay::ReplaySummary;

/// Exports `data_dir` (a stopped run's) to `output`.
pub fn export(plan: &ExecutionPlan, data_dir: &Path, output: &Path) -> Result<ReplaySummary> {
    if !data_dir.join("run.json").exists() {
        return Err(Error::Run(format!("{} is not a data directory of `rtb run`", data_dir.display())));
    }
    std::fs::create_dir_all(output).map_err(|e| Error::Io { path: output.to_path_buf(), source: e })?;
    let log = EmbeddedLog::open(data_dir.join("log"))?;
    let sinks = Sinks::open(plan, data_dir)?;
    let topics = TopicNames::default();
    let mut w = Writer::create(output, topics.clone())?;
    let mut summary = ReplaySummary::default();

    // Compensations: every distinct one the duplicate detector published (a restart may publish one again).
    let validator = Validator::new(ValidationConfig::default());
    let mut seen = BTreeSet::new();
    for rec in read_all(&log, &topics.compensation_events)? {
        let ev: CompensationEvent = validator
            .compensation_event(&rec.payload, &rec.coord(), None)
            .map_err(|e| Error::Run(format!("{}: {e}", rec.coord())))?;
        if seen.insert((ev.device_id.clone(), ev.ad_id.clone(), ev.timestamp)) {
            summary.compensations += 1;
            w.compensation(&ev)?;
        }
    }
    // Dead letters, once per source record.
    let mut dead = BTreeSet::new();
    for rec in read_all(&log, DEAD_LETTER_TOPIC)? {
        let Ok(dl) = serde_json::from_slice::<DeadLetter>(&rec.payload) else { continue };
        if dead.insert((dl.source.clone(), dl.stage.clone())) {
            if !dl.reason.starts_with("LATE") {
                *summary.dead_letters.entry(dl.source.topic.to_string()).or_default() += 1;
            }
            w.dead_letter(&dl, &mut summary)?;
        }
    }
    for t in &plan.topics {
        let n: u64 = (0..t.partitions).map(|p| log.end_offset(&t.name, p).unwrap_or(0)).sum();
        summary.events.insert(t.name.clone(), n);
    }
    w.finish(sinks.cache.as_ref(), sinks.db.as_ref(), &summary)?;
    Ok(summary)
}

/// Every record of `topic`, partition by partition.
pub(crate) fn read_all(log: &EmbeddedLog, topic: &str) -> Result<Vec<rtb_stream::log::LogRecord>> {
    let mut out = Vec::new();
    for p in 0..log.topic_config(topic)?.partitions {
        let end = log.end_offset(topic, p)?;
        let mut from = log.start_offset(topic, p)?;
        while from < end {
            let recs = log.read(topic, p, from, 4_096)?;
            let Some(last) = recs.last() else { break };
            from = last.offset + 1;
            out.extend(recs);
        }
    }
    Ok(out)
}
