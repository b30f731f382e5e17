//! The drain of `rtb run`: once the generator has finished, waits until every stage has committed every
//! input record and its committed watermark has reached the end of the data it read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rtb_stream::runtime::{committed_watermark, task_scope};
use rtb_stream::state::StoreBackend;
use rtb_stream::{DeadLetter, Timestamp};

use super::letters::LetterTally;
use super::run::{pipeline_message, Incomplete};
use super::runlog::RunLog;
use super::wiring::DEAD_LETTER_TOPIC;
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::replay::outputs::is_late_reason;

/// How often the drain re-reads the committed state of the tasks other processes run (`refresh`).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Waits until the pipeline has processed everything to the end; `Some(why)` when it stopped short.
/// With group membership (`rt`'s jobs share their consumer groups with other processes), the drain re-reads
/// the other processes' committed progress, and tells the runtime which produced topics are complete, so
/// that their readers call them idle only once nothing more can reach them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drain(
    plan: &ExecutionPlan,
    log: &dyn RunLog,
    state: &Arc<dyn StoreBackend>,
    rt: &rtb_stream::runtime::Runtime,
    metrics: &rtb_stream::runtime::RuntimeMetrics,
    letters: &mut LetterTally,
    token: &rtb_stream::runtime::ShutdownToken,
    stop: &AtomicBool,
    bar: &ProgressBar,
    committed_all: &mut Option<Instant>,
) -> Result<Option<Incomplete>> {
    let idle = plan.stages.iter().map(|s| s.settings.idle_timeout.as_ms()).max().unwrap_or(0).max(0) as u64;
    let commit = plan.runtime.commit_interval.as_ms().max(0) as u64;
    // Once every record is committed, a watermark that has not moved for this long will not move any more:
    // the idle timeout has released every partition and several commits have passed.
    let stall = Duration::from_millis(idle + 4 * commit + 3_000);
    let mut ends = EndOfData::default();
    let mut last_progress: Option<(Vec<Behind>, Instant)> = None;
    let mut refreshed: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Some(Incomplete::Interrupted));
        }
        if token.is_triggered() {
            // A task failed: `Runtime::join` reports it.
            return Ok(None);
        }
        if refreshed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            // Tasks of other processes sharing the consumer groups: their committed progress.
            rt.refresh_remote_tasks()?;
            refreshed = Some(Instant::now());
        }
        let lags = stage_lags(plan, log, state)?;
        let lag: u64 = lags.iter().sum();
        // Where the watermarks stand is needed once every record is committed, and before that only by
        // group-member tasks, which wait for the topics they read to be complete.
        let members = rt.has_group_members();
        let behind = if lag == 0 || members { ends.behind(plan, log, state)? } else { Vec::new() };
        if members {
            // A stage has finished once it has committed every input record and its watermark has reached
            // the end of its data (what it emits when its windows and timers close is out then too).
            let finished: Vec<bool> =
                plan.stages.iter().zip(&lags).map(|(s, lag)| *lag == 0 && !behind.iter().any(|b| b.stage == s.name)).collect();
            for topic in complete_topics(plan, &finished) {
                rt.upstream_complete(&topic);
            }
        }
        tracing::debug!(lag, "drain: records not yet committed");
        if lag > 0 {
            last_progress = None;
            letters.update(log)?;
            bar.set_message(format!("draining: {lag} records not yet committed; {}", pipeline_message(metrics, letters)));
        } else {
            committed_all.get_or_insert_with(Instant::now);
            tracing::debug!(behind = behind.len(), "drain: tasks whose watermark is short of the end of the data");
            if behind.is_empty() {
                return Ok(None);
            }
            let first = &behind[0];
            bar.set_message(format!(
                "draining: every record committed; waiting for the watermark of {} task(s) (e.g. {} partition {}) \
                 to reach the end of the data",
                behind.len(),
                first.stage,
                first.partition,
            ));
            match &last_progress {
                Some((prev, since)) if *prev == behind => {
                    if since.elapsed() >= stall {
                        let list: Vec<String> = behind
                            .iter()
                            .take(5)
                            .map(|b| {
                                format!(
                                    "{} partition {} at {} (end {})",
                                    b.stage,
                                    b.partition,
                                    b.watermark.map_or_else(|| "none".to_string(), crate::sim::fmt_ts),
                                    crate::sim::fmt_ts(b.target)
                                )
                            })
                            .collect();
                        return Ok(Some(Incomplete::WatermarkStalled(format!(
                            "{} task(s) stopped short of the end of the data: {}",
                            behind.len(),
                            list.join(", ")
                        ))));
                    }
                }
                _ => last_progress = Some((behind, Instant::now())),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How far one input partition was scanned: the next offset to scan, and the latest event time so far with
/// the offset of its record.
type Scanned = (u64, Option<(Timestamp, u64)>);

/// A task whose committed watermark has not reached the end of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Behind {
    stage: String,
    partition: u32,
    /// The input partition and offset of the record that sets the end of the data.
    end_topic: String,
    end_offset: u64,
    watermark: Option<Timestamp>,
    target: Timestamp,
}

/// The end of the data of every task, maintained incrementally: for each input partition, the latest
/// event time among its records that no stage rejected as invalid (a rejected record is never observed
/// by the watermark).
#[derive(Default)]
struct EndOfData {
    /// (topic, partition) → (next offset to scan, max event time so far and its record's offset).
    scanned: HashMap<(String, u32), Scanned>,
    rejected: HashSet<(String, u32, u64)>,
    dead_scanned: u64,
}


impl EndOfData {
    /// Called when every input offset is committed: every dead letter of those records is in the log.
    fn behind(
        &mut self,
        plan: &ExecutionPlan,
        log: &dyn RunLog,
        state: &Arc<dyn StoreBackend>,
    ) -> Result<Vec<Behind>> {
        let end = log.end_offset(DEAD_LETTER_TOPIC, 0)?;
        while self.dead_scanned < end {
            let recs = log.read(DEAD_LETTER_TOPIC, 0, self.dead_scanned, 4_096)?;
            let Some(last) = recs.last() else { break };
            self.dead_scanned = last.offset + 1;
            for r in recs {
                if let Ok(dl) = serde_json::from_slice::<DeadLetter>(&r.payload) {
                    if !is_late_reason(&dl.reason) {
                        self.rejected.insert((dl.source.topic.to_string(), dl.source.partition, dl.source.offset));
                    }
                }
            }
        }
        let mut wanted: Vec<(&str, u32)> = plan
            .stages
            .iter()
            .flat_map(|s| s.inputs.iter().flat_map(move |t| (0..s.partitions).map(move |p| (t.as_str(), p))))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let ends: HashMap<(String, u32), u64> =
            wanted.iter().map(|(t, p)| (t.to_string(), *p)).zip(log.end_offsets(&wanted)?).collect();
        self.scan_new_records(log, &wanted, &ends)?;
        let mut behind = Vec::new();
        for stage in &plan.stages {
            let ooo = stage.settings.max_out_of_orderness.as_ms();
            for p in 0..stage.partitions {
                let mut max: Option<(Timestamp, u64, &str)> = None;
                for topic in &stage.inputs {
                    let end = ends.get(&(topic.clone(), p)).copied().unwrap_or(0);
                    if let Some((ts, offset)) = self.max_ts(log, topic, p, end)? {
                        if max.is_none_or(|m| ts > m.0) {
                            max = Some((ts, offset, topic));
                        }
                    }
                }
                let Some((max, end_offset, end_topic)) = max else { continue };
                let target = max.saturating_sub(ooo);
                let wm = committed_watermark(state, stage.runtime_group(), p)?;
                if wm.is_none_or(|w| w < target) {
                    behind.push(Behind {
                        stage: stage.name.clone(),
                        partition: p,
                        end_topic: end_topic.to_string(),
                        end_offset,
                        watermark: wm,
                        target,
                    });
                }
            }
        }
        Ok(behind)
    }

    /// Scans what each input partition of `wanted` holds below its end and was not scanned yet, the
    /// partitions in parallel (on Kafka each is a reader and a fetch of its own).
    fn scan_new_records(
        &mut self,
        log: &dyn RunLog,
        wanted: &[(&str, u32)],
        ends: &HashMap<(String, u32), u64>,
    ) -> Result<()> {
        let mut todo = Vec::new();
        for (t, p) in wanted {
            let key = (t.to_string(), *p);
            let end = ends.get(&key).copied().unwrap_or(0);
            let slot = match self.scanned.get(&key) {
                Some(s) => *s,
                None => (log.start_offset(t, *p)?, None),
            };
            if slot.0 < end {
                todo.push((key, end, slot));
            } else {
                self.scanned.entry(key).or_insert(slot);
            }
        }
        let rejected = &self.rejected;
        let results: Vec<Result<((String, u32), Scanned)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .into_iter()
                .map(|(key, end, mut slot)| {
                    scope.spawn(move || -> Result<((String, u32), Scanned)> {
                        while slot.0 < end {
                            let recs = log.read(&key.0, key.1, slot.0, 4_096)?;
                            let Some(last) = recs.last() else { break };
                            slot.0 = last.offset + 1;
                            for r in recs.iter().filter(|r| r.offset < end) {
                                if !rejected.contains(&(key.0.clone(), key.1, r.offset))
                                    && slot.1.is_none_or(|(ts, _)| r.timestamp > ts)
                                {
                                    slot.1 = Some((r.timestamp, r.offset));
                                }
                            }
                        }
                        Ok((key, slot))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Run("the end-of-data scan panicked".into()))))
                .collect()
        });
        for r in results {
            let (key, slot) = r?;
            self.scanned.insert(key, slot);
        }
        Ok(())
    }

    /// The latest event time in one input partition up to `end`, and the offset of the record carrying it.
    fn max_ts(&mut self, log: &dyn RunLog, topic: &str, p: u32, end: u64) -> Result<Option<(Timestamp, u64)>> {
        let slot = match self.scanned.get_mut(&(topic.to_string(), p)) {
            Some(s) => s,
            None => {
                let start = log.start_offset(topic, p)?;
                self.scanned.entry((topic.to_string(), p)).or_insert((start, None))
            }
        };
        while slot.0 < end {
            let recs = log.read(topic, p, slot.0, 4_096)?;
            let Some(last) = recs.last() else { break };
            slot.0 = last.offset + 1;
            for r in &recs {
                if !self.rejected.contains(&(topic.to_string(), p, r.offset)) && slot.1.is_none_or(|(ts, _)| r.timestamp > ts) {
                    slot.1 = Some((r.timestamp, r.offset));
                }
            }
        }
        Ok(slot.1)
    }
}

/// Records not yet committed by the stages, summed over every input partition.
pub fn total_lag(plan: &ExecutionPlan, log: &dyn RunLog, state: &Arc<dyn StoreBackend>) -> Result<u64> {
    Ok(stage_lags(plan, log, state)?.iter().sum())
}

/// Records not yet committed by each stage (in the plan's order), over its input partitions.
fn stage_lags(plan: &ExecutionPlan, log: &dyn RunLog, state: &Arc<dyn StoreBackend>) -> Result<Vec<u64>> {
    // One end offset per partition, asked all at once (several stages read the same topic; on Kafka each is
    // a round trip).
    let mut wanted: Vec<(&str, u32)> =
        plan.stages.iter().flat_map(|s| s.inputs.iter().flat_map(move |t| (0..s.partitions).map(move |p| (t.as_str(), p)))).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let ends: HashMap<(&str, u32), u64> = wanted.iter().copied().zip(log.end_offsets(&wanted)?).collect();
    let mut lags = Vec::with_capacity(plan.stages.len());
    for stage in &plan.stages {
        let mut lag = 0u64;
        for p in 0..stage.partitions {
            let committed = task_scope(state, stage.runtime_group(), p).read_offsets()?;
            for topic in &stage.inputs {
                let end = ends.get(&(topic.as_str(), p)).copied().unwrap_or(0);
                let done = committed.get(&(topic.clone(), p)).copied().unwrap_or(0);
                lag += end.saturating_sub(done);
            }
        }
        lags.push(lag);
    }
    Ok(lags)
}

/// The topics the stages produce to that are complete, given which stages have finished (committed all
/// their input, watermark at the end of their data; the clients have stopped): every stage producing to the
/// topic has finished, and each of its inputs is a clients' topic or complete itself (so nothing more
/// reaches it). Found in the plan's dependency order.
fn complete_topics(plan: &ExecutionPlan, finished: &[bool]) -> BTreeSet<String> {
    let produced: BTreeSet<&str> = plan.stages.iter().flat_map(|s| s.outputs.iter().map(String::as_str)).collect();
    let mut complete = BTreeSet::new();
    loop {
        let before = complete.len();
        for topic in &produced {
            if complete.contains(*topic) {
                continue;
            }
            let done = plan.stages.iter().zip(finished).filter(|(s, _)| s.outputs.iter().any(|o| o == topic)).all(|(s, fin)| {
                *fin && s.inputs.iter().all(|i| !produced.contains(i.as_str()) || complete.contains(i.as_str()))
            });
            if done {
                complete.insert((*topic).to_string());
            }
        }
        if complete.len() == before {
            return complete;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Topology;

    #[test]
    fn a_produced_topic_is_complete_once_its_producers_and_their_inputs_are() {
        let plan = Topology::from_toml_str(include_str!("../../../topologies/cpc.toml")).and_then(|t| t.plan()).expect("plan");
        let index = |name: &str| plan.stages.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("stage {name}"));
        let all_done = vec![true; plan.stages.len()];
        let produced: BTreeSet<String> = plan.stages.iter().flat_map(|s| s.outputs.iter().cloned()).collect();
        assert!(produced.contains("compensation-events") && produced.len() >= 3, "{produced:?}");
        assert_eq!(complete_topics(&plan, &all_done), produced, "nothing left anywhere: every produced topic");

        // The duplicate detector (producing compensation-events) has not finished.
        let mut finished = all_done.clone();
        finished[index("duplicate-detection")] = false;
        let complete = complete_topics(&plan, &finished);
        assert!(!complete.contains("compensation-events"), "{complete:?}");
        assert!(complete.len() == produced.len() - 1, "the others are complete: {complete:?}");

        // A repartition stage behind: its topic is not complete (its reader's watermark must wait for it).
        let repartition = plan.stages.iter().position(|s| s.repartition.is_some()).expect("a repartition stage");
        let mut finished = all_done;
        finished[repartition] = false;
        let complete = complete_topics(&plan, &finished);
        assert!(!complete.contains(&plan.stages[repartition].outputs[0]), "{complete:?}");
    }
}
