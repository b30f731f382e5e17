//! One partition task: the poll → decode → process → route → commit loop (see the module docs).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::metrics::GroupMetrics;
use super::{AbortHandle, Clock, Decoder, JobConfig, Output, ShutdownToken};
use crate::error::{Error, Result};
use crate::log::{EmbeddedLog, LogRecord, ProduceRecord};
use crate::operator::{Context, DeadLetter, Operator};
use crate::state::{OffsetMap, StateScope, WriteBatch};
use crate::time::{Timestamp, WatermarkTracker};

/// Runtime metadata names inside the task's scope.
const META_WATERMARK: &str = "watermark";
const META_ORIGINS: &str = "origins";
/// Stage name of dead letters produced by the decoder.
pub(crate) const DECODE_STAGE: &str = "decode";

/// Everything a task needs besides its operator and decoder.
pub(crate) struct TaskSetup {
    pub group: String,
    pub partition: u32,
    pub inputs: Vec<Arc<str>>,
    pub cfg: JobConfig,
    pub log: EmbeddedLog,
    pub scope: StateScope,
    pub shutdown: ShutdownToken,
    pub abort: AbortHandle,
    pub metrics: Arc<GroupMetrics>,
    pub clock: Clock,
    pub sync_commits: bool,
}

/// How a task ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskEnd {
    /// Shut down or reached the end of its input; everything committed.
    Finished,
    /// Aborted: stopped at a record boundary without committing.
    Aborted,
}

#[derive(Default)]
struct Counters {
    records_in: u64,
    records_out: u64,
    dead_letters: u64,
    late: u64,
    duplicates: u64,
}

pub(crate) struct Task<O: Operator, D> {
    s: TaskSetup,
    decoder: Arc<D>,
    op: O,
    /// Next offset to read, per input.
    next: Vec<u64>,
    /// Batch mode: end offsets read at start, per input.
    stop_at: Option<Vec<u64>>,
    tracker: WatermarkTracker,
    /// Highest origin offset applied, per origin partition.
    marks: FxHashMap<(Arc<str>, u32), u64>,
    /// Watermark slot per source partition (input partition, or origin partition for repartitioned records).
    slots: FxHashMap<(Arc<str>, u32), usize>,
    /// Inputs whose own slot was retired in favour of origin slots.
    retired: Vec<usize>,
    out: Vec<Output>,
    dead: Vec<DeadLetter>,
    late: Vec<DeadLetter>,
    dirty: bool,
    last_commit: Instant,
    /// Input and offset being handled (for error messages).
    position: (usize, u64),
    wait_turn: usize,
    counters: Counters,
}

impl<O, K, V, D> Task<O, D>
where
    O: Operator<Key = K, In = V, Out = Output>,
    D: Decoder<K, V>,
{
    /// Restores offsets, watermark and origin marks from the task's scope.
    pub(crate) fn new(s: TaskSetup, decoder: Arc<D>, op: O) -> Result<Self> {
        let committed = s.scope.read_offsets()?;
        let mut next = Vec::with_capacity(s.inputs.len());
        for topic in &s.inputs {
            let start = s.log.start_offset(topic, s.partition)?;
            let offset = match committed.get(&(topic.to_string(), s.partition)) {
                Some(&o) if o < start => {
                    tracing::warn!(group = %s.group, %topic, partition = s.partition, committed = o, start,
                        "committed offset was deleted by retention; resuming at the start offset");
                    start
                }
                Some(&o) => o,
                None => start,
            };
            next.push(offset);
        }
        let stop_at = if s.cfg.stop_at_end {
            Some(s.inputs.iter().map(|t| s.log.end_offset(t, s.partition)).collect::<Result<Vec<_>>>()?)
        } else {
            None
        };
        // Watermark slots are created as sources are first seen: one per input partition, or, for records
        // that carry an origin (repartitioned records), one per origin partition — a repartition topic
        // interleaves upstream partitions that progress at different speeds, and only each upstream
        // partition on its own is ordered up to the allowed out-of-orderness (as Flink takes the minimum
        // over input channels after a shuffle).
        // Slot i (i < inputs) is input i itself; an input whose records carry origins is retired on its
        // first such record, so a silent input still holds the watermark back until it is idle.
        let mut tracker = WatermarkTracker::new(s.inputs.len(), s.cfg.watermark, (s.clock)());
        tracker.restore(s.scope.read_meta::<Option<Timestamp>>(META_WATERMARK)?.flatten());
        let marks = s
            .scope
            .read_meta::<Vec<(String, u32, u64)>>(META_ORIGINS)?
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p, o)| ((Arc::from(t), p), o))
            .collect();
        tracing::debug!(group = %s.group, partition = s.partition, offsets = ?next, watermark = ?tracker.current(),
            "task restored");
        Ok(Self {
            s,
            decoder,
            op,
            next,
            stop_at,
            tracker,
            marks,
            slots: FxHashMap::default(),
            retired: Vec::new(),
            out: Vec::new(),
            dead: Vec::new(),
            late: Vec::new(),
            dirty: false,
            last_commit: Instant::now(),
            position: (0, 0),
            wait_turn: 0,
            counters: Counters::default(),
        })
    }

    /// Runs the task to its end. Every error (a panic of the operator included) is returned as
    /// [`Error::Task`] naming the group, the input topic and the partition.
    pub(crate) fn run(mut self) -> Result<TaskEnd> {
        let result = match catch_unwind(AssertUnwindSafe(|| self.run_loop())) {
            Ok(r) => r,
            Err(panic) => {
                let (input, offset) = self.position;
                Err(Error::Operator {
                    operator: self.s.group.clone(),
                    topic: self.s.inputs[input].to_string(),
                    partition: self.s.partition,
                    offset,
                    reason: format!("operator panicked: {}", panic_message(&panic)),
                })
            }
        };
        self.publish_counters();
        result.map_err(|e| Error::Task {
            group: self.s.group.clone(),
            topic: self.s.inputs[self.position.0].to_string(),
            partition: self.s.partition,
            source: Box::new(e),
        })
    }

    fn run_loop(&mut self) -> Result<TaskEnd> {
        loop {
            if self.s.abort.is_aborted() {
                return Ok(TaskEnd::Aborted);
            }
            if self.s.shutdown.is_triggered() {
                self.route()?;
                self.commit()?;
                return Ok(TaskEnd::Finished);
            }
            let now = (self.s.clock)();
            let mut polled = 0;
            for input in 0..self.s.inputs.len() {
                match self.poll(input, now)? {
                    Some(n) => polled += n,
                    None => return Ok(TaskEnd::Aborted),
                }
            }
            if let Some(wm) = self.tracker.tick(now) {
                self.fire_watermark(wm, now)?;
            }
            self.with_context(self.tracker.current(), now, |op, ctx| op.on_processing_time(now, ctx))?;
            self.route()?;
            self.publish_counters();
            if self.drained() {
                let before = self.tracker.current();
                let wm = self.tracker.finish();
                if before != Some(wm) {
                    self.fire_watermark(wm, now)?;
                }
                self.route()?;
                self.dirty = true;
                self.commit()?;
                return Ok(TaskEnd::Finished);
            }
            if self.last_commit.elapsed() >= self.s.cfg.commit_interval {
                self.commit()?;
            }
            if polled == 0 {
                self.idle_wait();
            }
        }
    }

    /// Reads and handles up to `max_poll_records` of one input. `None` if aborted meanwhile.
    fn poll(&mut self, input: usize, now: i64) -> Result<Option<usize>> {
        let limit = self.stop_at.as_ref().map_or(u64::MAX, |s| s[input]);
        if self.next[input] >= limit {
            return Ok(Some(0));
        }
        let topic = Arc::clone(&self.s.inputs[input]);
        let recs =
            self.s.log.read(&topic, self.s.partition, self.next[input], self.s.cfg.max_poll_records)?;
        let mut handled = 0;
        for rec in recs {
            if rec.offset >= limit {
                self.next[input] = limit;
                break;
            }
            if rec.offset > self.next[input] {
                tracing::warn!(group = %self.s.group, %topic, partition = self.s.partition,
                    from = self.next[input], to = rec.offset, "records deleted by retention were skipped");
            }
            self.position = (input, rec.offset);
            self.handle(input, rec, now)?;
            handled += 1;
            if self.s.abort.is_aborted() {
                return Ok(None);
            }
        }
        Ok(Some(handled))
    }

    fn handle(&mut self, input: usize, rec: LogRecord, now: i64) -> Result<()> {
        self.counters.records_in += 1;
        self.next[input] = rec.offset + 1;
        self.dirty = true;
        if let Some(origin) = &rec.origin {
            let key = (Arc::clone(&origin.topic), origin.partition);
            match self.marks.get_mut(&key) {
                Some(mark) if *mark >= origin.offset => {
                    self.counters.duplicates += 1;
                    return Ok(());
                }
                Some(mark) => *mark = origin.offset,
                None => {
                    self.marks.insert(key, origin.offset);
                }
            }
        }
        match self.decoder.decode(&rec) {
            Err(reason) => {
                self.dead.push(DeadLetter {
                    source: rec.coord(),
                    stage: DECODE_STAGE.to_string(),
                    reason,
                    payload: String::from_utf8_lossy(&rec.payload).into_owned(),
                });
            }
            Ok(record) => {
                // The operator sees the watermark from before this record: a record is late only against
                // what came before it.
                let before = self.tracker.current();
                let slot = match &rec.origin {
                    None => input,
                    Some(o) => {
                        let source = (Arc::clone(&o.topic), o.partition);
                        match self.slots.get(&source) {
                            Some(&i) => i,
                            None => {
                                if !self.retired.contains(&input) {
                                    self.retired.push(input);
                                    self.tracker.retire(input);
                                }
                                let i = self.tracker.add_partition(now);
                                self.slots.insert(source, i);
                                i
                            }
                        }
                    }
                };
                let advanced = self.tracker.observe(slot, record.timestamp, now);
                self.with_context(before, now, |op, ctx| op.process(record, ctx))?;
                if let Some(wm) = advanced {
                    self.fire_watermark(wm, now)?;
                }
            }
        }
        Ok(())
    }

    fn fire_watermark(&mut self, wm: Timestamp, now: i64) -> Result<()> {
        self.dirty = true;
        self.with_context(Some(wm), now, |op, ctx| op.on_watermark(wm, ctx))
    }

    fn with_context(
        &mut self,
        wm: Option<Timestamp>,
        now: i64,
        f: impl FnOnce(&mut O, &mut Context<'_, Output>) -> Result<()>,
    ) -> Result<()> {
        let mut ctx = Context::with_late(&mut self.out, &mut self.dead, &mut self.late, wm, now);
        f(&mut self.op, &mut ctx)
    }

    /// Appends buffered outputs to their topics and dead letters to the dead-letter topic.
    fn route(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            let mut by_topic: Vec<(String, Vec<ProduceRecord>)> = Vec::new();
            for o in self.out.drain(..) {
                match by_topic.iter_mut().find(|(t, _)| *t == o.topic) {
                    Some((_, recs)) => recs.push(o.record),
                    None => by_topic.push((o.topic, vec![o.record])),
                }
            }
            for (topic, recs) in by_topic {
                let n = recs.len() as u64;
                self.s.log.append_batch(&topic, recs)?;
                self.counters.records_out += n;
            }
        }
        if !self.late.is_empty() {
            let late = std::mem::take(&mut self.late);
            match self.s.cfg.late_topic.clone().or_else(|| self.s.cfg.dead_letter_topic.clone()) {
                Some(topic) => {
                    self.append_letters(&topic, &late)?;
                    self.counters.late += late.len() as u64;
                }
                None => self.dead.extend(late),
            }
        }
        if !self.dead.is_empty() {
            let Some(dlq) = self.s.cfg.dead_letter_topic.clone() else {
                return Err(self.undeliverable_dead_letter());
            };
            let dead = std::mem::take(&mut self.dead);
            for dl in &dead {
                tracing::debug!(source = %dl.source, stage = %dl.stage, reason = %dl.reason, topic = %dlq, "dead letter");
            }
            self.append_letters(&dlq, &dead)?;
            self.counters.dead_letters += dead.len() as u64;
        }
        Ok(())
    }

    /// Appends dead letters or late records, as JSON, to `topic`.
    fn append_letters(&mut self, topic: &str, letters: &[DeadLetter]) -> Result<()> {
        {
            let dlq = topic.to_string();
            let now = (self.s.clock)();
            let recs = letters
                .iter()
                .map(|dl| {
                    let payload = serde_json::to_vec(dl).map_err(|e| Error::Sink {
                        sink: dlq.clone(),
                        reason: format!("cannot encode dead letter of {}: {e}", dl.source),
                    })?;
                    Ok(ProduceRecord { key: None, payload, timestamp: now, partition: None, origin: None })
                })
                .collect::<Result<Vec<_>>>()?;
            self.s.log.append_batch(&dlq, recs)?;
        }
        Ok(())
    }

    /// The error for a dead letter when the job has no dead-letter topic (dead letters are never dropped).
    fn undeliverable_dead_letter(&mut self) -> Error {
        let dl = self.dead.swap_remove(0);
        let more = self.dead.len();
        self.dead.clear();
        let reason =
            if more > 0 { format!("{} (and {more} more dead letters)", dl.reason) } else { dl.reason };
        let reason = format!("{reason}; configure a dead_letter_topic to keep such records");
        if dl.stage == DECODE_STAGE {
            Error::Decode {
                topic: dl.source.topic.to_string(),
                partition: dl.source.partition,
                offset: dl.source.offset,
                reason,
            }
        } else {
            Error::Operator {
                operator: dl.stage,
                topic: dl.source.topic.to_string(),
                partition: dl.source.partition,
                offset: dl.source.offset,
                reason,
            }
        }
    }

    /// Commits operator state, offsets, watermark and origin marks in one atomic batch.
    fn commit(&mut self) -> Result<()> {
        let mut batch = WriteBatch::new();
        self.op.flush_state(&mut batch)?;
        if !self.dirty && batch.is_empty() {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let offsets: OffsetMap = self
            .s
            .inputs
            .iter()
            .zip(&self.next)
            .map(|(t, &o)| ((t.to_string(), self.s.partition), o))
            .collect();
        self.s.scope.write_offsets(&offsets, &mut batch)?;
        self.s.scope.write_meta(META_WATERMARK, &self.tracker.current(), &mut batch)?;
        let mut marks: Vec<(String, u32, u64)> =
            self.marks.iter().map(|((t, p), o)| (t.to_string(), *p, *o)).collect();
        marks.sort_unstable();
        self.s.scope.write_meta(META_ORIGINS, &marks, &mut batch)?;
        if self.s.sync_commits {
            // Outputs first: a durable commit must never point past outputs that could still be lost.
            self.s.log.flush()?;
        }
        self.s.scope.backend().apply(batch)?;
        if self.s.sync_commits {
            self.s.scope.backend().flush()?;
        }
        self.dirty = false;
        self.last_commit = Instant::now();
        GroupMetrics::add(&self.s.metrics.commits, 1);
        Ok(())
    }

    fn drained(&self) -> bool {
        self.stop_at.as_ref().is_some_and(|stop| self.next.iter().zip(stop).all(|(n, s)| n >= s))
    }

    /// Waits for new records on one input (in turn), bounded so shutdown, idle ticks and commits stay timely.
    fn idle_wait(&mut self) {
        let n = self.s.inputs.len();
        let input = self.wait_turn % n;
        self.wait_turn = self.wait_turn.wrapping_add(1);
        let mut timeout = if n == 1 { Duration::from_millis(100) } else { Duration::from_millis(20) };
        if self.dirty {
            timeout = timeout.min(self.s.cfg.commit_interval.saturating_sub(self.last_commit.elapsed()));
        }
        let topic = Arc::clone(&self.s.inputs[input]);
        self.s.log.wait_for(&topic, self.s.partition, self.next[input], timeout);
    }

    fn publish_counters(&mut self) {
        let c = std::mem::take(&mut self.counters);
        let m = &self.s.metrics;
        GroupMetrics::add(&m.records_in, c.records_in);
        GroupMetrics::add(&m.records_out, c.records_out);
        GroupMetrics::add(&m.dead_letters, c.dead_letters);
        GroupMetrics::add(&m.late_records, c.late);
        GroupMetrics::add(&m.duplicates_skipped, c.duplicates);
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
