//! `rtb export`: the stores of a `rtb run` data directory written as JSON Lines, in the replay's output
//! format (rankings, metrics, conversions, compensations, ledger, balances, campaign status, alerts, dead
//! letters), so a streaming run and a replay can be compared file by file.

use std::collections::BTreeSet;
use std::path::Path;

use rtb_ops::schema::{CompensationEvent, ValidationConfig, Validator};
use rtb_stream::log::EmbeddedLog;
use rtb_stream::DeadLetter;

use super::runlog::{KafkaRunLog, RunLog};

use super::lock::DataDirLock;
use super::stores;
use super::wiring::{Sinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::replay::outputs::Writer;
use crate::replay::ReplaySummary;

/// Exports `data_dir` (a stopped run's) to `output`. The log is the one the run used: the embedded log
/// of the directory, or the Kafka cluster and topic prefix recorded in it by `rtb run --kafka`
/// (`kafka_brokers` overrides the address).
///
/// Locks the data directory first (a running `rtb run` holds it), verifies the stores' seal (a corrupt
/// store fails the export, naming it), and writes every file under a temporary name, renamed into place
/// only when all are complete: a failed export leaves no partial or empty file behind.
pub fn export(plan: &ExecutionPlan, data_dir: &Path, output: &Path, kafka_brokers: Option<&str>) -> Result<ReplaySummary> {
    if !data_dir.join("run.json").exists() {
        return Err(Error::Run(format!("{} is not a data directory of `rtb run`", data_dir.display())));
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    let kafka = super::run::kafka_of(data_dir)?.map(|mut k| {
        if let Some(b) = kafka_brokers {
            k.brokers = b.to_string();
        }
        k
    });
    let mut sealed = stores::stores(plan, data_dir);
    if kafka.is_some() {
        // The operators' state is on the cluster.
        sealed.retain(|s| s.name != stores::STATE_DIR);
    }
    stores::verify(data_dir, &sealed)?;
    let log: Box<dyn RunLog> = match kafka {
        None => Box::new(EmbeddedLog::open(data_dir.join("log"))?),
        Some(cfg) => Box::new(KafkaRunLog::new(rtb_stream::kafka::KafkaLog::connect(cfg)?)),
    };
    let sinks = Sinks::open(plan, data_dir)?;
    write_outputs(plan, log.as_ref(), &sinks, output, |_| {})
}

/// Writes the outputs of a run of `plan` (the replay's output files) from the topics of `log` (compensations,
/// dead letters, late records) and the stores of `sinks`: what `rtb export` does for a data directory and
/// `rtb replay` for its in-memory run. `adjust` amends the summary before it is written.
pub(crate) fn write_outputs(
    plan: &ExecutionPlan,
    log: &dyn RunLog,
    sinks: &Sinks,
    output: &Path,
    adjust: impl FnOnce(&mut ReplaySummary),
) -> Result<ReplaySummary> {
    std::fs::create_dir_all(output).map_err(|e| Error::Run(format!("{}: {e}", output.display())))?;
    // The plan's names: a topology file may rename the topics.
    let topics = super::run::ops_config(plan)?.topics;
    let mut w = Writer::create(output)?;
    let mut summary = ReplaySummary::default();

    // Compensations: every distinct one the duplicate detector published (a restart may publish one again).
    let validator = Validator::new(ValidationConfig::default());
    let mut seen = BTreeSet::new();
    // A run killed before it created the topics has none (`read_all` reads nothing): nothing was published,
    // an empty file is true.
    for rec in read_all(log, &topics.compensation_events)? {
        let ev: CompensationEvent = validator
            .compensation_event(&rec.payload, &rec.coord(), None)
            .map_err(|e| Error::Run(format!("{}: {e}", rec.coord())))?;
        if seen.insert((ev.device_id.clone(), ev.ad_id.clone(), ev.timestamp)) {
            summary.compensations += 1;
            w.compensation(&ev)?;
        }
    }
    // Dead letters once per source record (with every stage that rejected it); late records apart.
    for rec in read_all(log, LATE_TOPIC)? {
        w.late(&letter(&rec)?);
    }
    for rec in read_all(log, DEAD_LETTER_TOPIC)? {
        w.dead_letter(&letter(&rec)?);
    }
    summary.dead_letters = w.dead_per_topic();
    summary.late = w.late_per_stage();
    let mut end: Option<i64> = None;
    for t in plan.topics.iter().filter(|t| log.partitions(&t.name).is_ok()) {
        let mut n = 0u64;
        for p in 0..t.partitions {
            n += log.end_offset(&t.name, p)?.saturating_sub(log.start_offset(&t.name, p)?);
        }
        summary.events.insert(t.name.clone(), n);
        if t.name == topics.campaign_events || t.name == topics.ad_events || t.name == topics.conversion_events {
            for_each_record(log, &t.name, |r| end = end.max(Some(r.timestamp)))?;
        }
    }
    summary.end_of_input = end;
    let conversions = sinks.db.conversions().map_err(|e| Error::Run(format!("database: {e}")))?;
    summary.attributed_conversions = conversions.iter().filter(|c| c.is_attributed()).count() as u64;
    summary.unattributed_conversions = conversions.len() as u64 - summary.attributed_conversions;
    summary.duplicate_orders =
        sinks.db.duplicate_orders().map_err(|e| Error::Run(format!("database: {e}")))?.len() as u64;
    adjust(&mut summary);
    w.finish(sinks.cache.as_ref(), sinks.db.as_ref(), &summary)?;
    Ok(summary)
}

fn letter(rec: &rtb_stream::log::LogRecord) -> Result<DeadLetter> {
    let mut l = serde_json::from_slice::<DeadLetter>(&rec.payload)
        .map_err(|e| Error::Run(format!("{}: not a dead letter or late record: {e}", rec.coord())))?;
    // A stage re-run to rebuild a Redis cache wrote under its generation's group: the same stage.
    l.stage = super::servers::stage_of_group(&l.stage).to_owned();
    Ok(l)
}

/// Calls `f` on every record of `topic`, partition by partition, without holding them all. A topic the log
/// does not have (a run killed before it created every topic) has no records.
fn for_each_record(log: &dyn RunLog, topic: &str, mut f: impl FnMut(&rtb_stream::log::LogRecord)) -> Result<()> {
    let partitions = match log.partitions(topic) {
        Ok(n) => n,
        Err(rtb_stream::Error::UnknownTopic(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for p in 0..partitions {
        let end = log.end_offset(topic, p)?;
        let mut from = log.start_offset(topic, p)?;
        while from < end {
            let recs = log.read(topic, p, from, 4_096)?;
            let Some(last) = recs.last() else { break };
            from = last.offset + 1;
            recs.iter().for_each(&mut f);
        }
    }
    Ok(())
}

/// Every record of `topic`, partition by partition (none for a topic the log does not have).
pub(crate) fn read_all(log: &dyn RunLog, topic: &str) -> Result<Vec<rtb_stream::log::LogRecord>> {
    let mut all = Vec::new();
    for_each_record(log, topic, |r| all.push(r.clone()))?;
    Ok(all)
}
