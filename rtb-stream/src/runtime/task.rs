//! One partition task: the poll → decode → process → route → commit loop (see the module docs).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::align::Heads;
use super::commit::Committer;
use super::ends::Producers;
use super::member::TaskStops;
use super::metrics::GroupMetrics;
use super::{AbortHandle, Clock, Decoder, JobConfig, Output, ShutdownToken};
use crate::error::{Error, Result};
use crate::io::{LogRecord, PartitionReader, ProduceRecord, Producer};
use crate::operator::{Context, DeadLetter, Operator};
use crate::record::Record;
use crate::state::{OffsetMap, StateScope, WriteBatch};
use crate::time::{Timestamp, WatermarkTracker};

/// Runtime metadata names inside the task's scope.
pub(crate) const META_WATERMARK: &str = "watermark";
const META_ORIGINS: &str = "origins";
/// Stream time (max event time seen) per watermark source: `(topic, partition, max_ts)`.
const META_STREAM_TIME: &str = "stream-time";

/// Everything a task needs besides its operator and decoder.
pub(crate) struct TaskSetup {
    pub group: String,
    pub partition: u32,
    pub inputs: Vec<Arc<str>>,
    pub cfg: JobConfig,
    pub reader: Box<dyn PartitionReader>,
    pub producer: Arc<dyn Producer>,
    pub committer: Arc<Committer>,
    pub producers: Arc<Producers>,
    pub scope: StateScope,
    pub shutdown: ShutdownToken,
    /// Drain: read the inputs to the end they have when it is triggered, close what that closes, stop.
    pub drain: ShutdownToken,
    pub abort: AbortHandle,
    pub metrics: Arc<GroupMetrics>,
    pub clock: Clock,
    /// Event-time alignment with the runtime's other aligned tasks ([`JobConfig::align`]).
    pub heads: Option<Heads>,
    /// The task runs a partition a consumer group assigned to this process (see `member`): it stops when
    /// its partition is revoked (commit) or lost (no commit), and a drain makes its caught-up inputs idle
    /// instead of stopping it (other processes may still produce to its inputs).
    pub member: Option<TaskStops>,
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

/// A watermark source: an input partition, or an upstream (origin) partition of a repartitioned input.
type SourceKey = (Arc<str>, u32);

/// The input of a watermark slot restored for an origin whose input is not known yet.
const ANY_INPUT: usize = usize::MAX;

/// A record decoded (or rejected with a reason) ahead of its turn, with its offset.
type Decoded<K, V> = (u64, std::result::Result<Record<K, V>, String>);

pub(crate) struct Task<O: Operator, D> {
    s: TaskSetup,
    decoder: Arc<D>,
    op: O,
    /// Next offset to read, per input.
    next: Vec<u64>,
    /// Batch mode: end offsets read at start, per input (inputs produced inside the runtime end when their
    /// producers have finished instead, see [`Producers`]). Also set when a drain starts.
    stop_at: Option<Vec<u64>>,
    /// A drain is under way: at the end every partition counts as idle (the watermark advances to what
    /// the data closes), not `Timestamp::MAX` as in batch mode.
    draining: bool,
    tracker: WatermarkTracker,
    /// Highest origin offset applied, per origin partition.
    marks: FxHashMap<SourceKey, u64>,
    /// Watermark slot per source (input partition, or origin partition for repartitioned records).
    slots: FxHashMap<SourceKey, usize>,
    /// Source key and input of every slot, by slot index.
    slot_sources: Vec<(SourceKey, usize)>,
    /// Inputs whose own slot was retired in favour of origin slots.
    retired: Vec<bool>,
    /// Whether each input had nothing left to read at its last poll.
    caught_up: Vec<bool>,
    /// The last record set aside as a timestamp outlier (a second one near it confirms a jump).
    outlier: Option<Timestamp>,
    out: Vec<Output>,
    dead: Vec<DeadLetter>,
    late: Vec<DeadLetter>,
    dirty: bool,
    last_epoch: u64,
    /// Input and offset being handled (for error messages).
    position: (usize, u64),
    wait_turn: usize,
    /// Some input stopped at a record that alignment holds back ([`JobConfig::align`]).
    held: bool,
    /// The event time of the record each input was held back at.
    held_at: Vec<Option<Timestamp>>,
    /// The records each input read but was held back from processing, the first at `next`: processed
    /// before reading more.
    held_recs: Vec<Vec<LogRecord>>,
    counters: Counters,
}

impl<O, K, V, D> Task<O, D>
where
    O: Operator<Key = K, In = V, Out = Output>,
    D: Decoder<K, V>,
{
    /// Restores offsets, watermark, stream times and origin marks from the task's scope.
    pub(crate) fn new(mut s: TaskSetup, decoder: Arc<D>, op: O) -> Result<Self> {
        let committed = s.scope.read_offsets()?;
        let mut next = Vec::with_capacity(s.inputs.len());
        for (i, topic) in s.inputs.iter().enumerate() {
            let start = s.reader.start_offset(i)?;
            let end = s.reader.end_offset(i)?;
            let offset = match committed.get(&(topic.to_string(), s.partition)) {
                Some(&o) if o > end => {
                    // The log lost records this group already applied (a truncated or replaced log): reading
                    // on would hand new records the offsets of applied ones, and skip them.
                    return Err(Error::LogBehindConsumer {
                        consumer: format!("the state of group `{}`", s.group),
                        topic: topic.to_string(),
                        partition: s.partition,
                        committed: o,
                        end,
                    });
                }
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
            Some(end_offsets(&mut *s.reader, s.inputs.len())?)
        } else {
            None
        };
        // Watermark slots: one per input partition, or, for an input written by a repartition, one per
        // upstream (origin) partition — a repartition topic interleaves upstream partitions that progress at
        // different speeds, and only each upstream partition on its own is ordered up to the allowed
        // out-of-orderness (as Flink takes the minimum over input channels after a shuffle). Upstream
        // partitions declared in `JobConfig::upstream` hold the watermark from the start, before they have
        // sent anything; origins not declared get a slot when first seen.
        let now = (s.clock)();
        let n = s.inputs.len();
        let mut tracker = WatermarkTracker::new(n, s.cfg.watermark, now);
        let mut slots = FxHashMap::default();
        let mut slot_sources = Vec::with_capacity(n);
        let mut retired = vec![false; n];
        for (i, topic) in s.inputs.iter().enumerate() {
            slot_sources.push(((Arc::clone(topic), s.partition), i));
        }
        for up in &s.cfg.upstream {
            let Some(i) = s.inputs.iter().position(|t| **t == *up.input) else {
                return Err(Error::Config(format!(
                    "group `{}`: upstream of `{}` declared, but it is not an input",
                    s.group, up.input
                )));
            };
            if !retired[i] {
                retired[i] = true;
                tracker.retire(i);
            }
            let origin: Arc<str> = Arc::from(up.origin_topic.as_str());
            for p in 0..up.origin_partitions {
                let slot = tracker.add_partition(now);
                slots.insert((Arc::clone(&origin), p), slot);
                slot_sources.push(((Arc::clone(&origin), p), i));
            }
        }
        tracker.restore(s.scope.read_meta::<Option<Timestamp>>(META_WATERMARK)?.flatten());
        for (topic, p, ts) in s.scope.read_meta::<Vec<(String, u32, Timestamp)>>(META_STREAM_TIME)?.unwrap_or_default() {
            let key: SourceKey = (Arc::from(topic.as_str()), p);
            let slot = match s.inputs.iter().position(|t| **t == *topic).filter(|_| p == s.partition) {
                Some(i) => i,
                None => match slots.get(&key) {
                    Some(&slot) => slot,
                    None => {
                        // An origin seen before the restart but not declared: track it again. Which input
                        // carries it is learnt from its next record; until then it counts as caught up only
                        // when every input is.
                        let slot = tracker.add_partition(now);
                        slots.insert(key.clone(), slot);
                        slot_sources.push((key, ANY_INPUT));
                        slot
                    }
                },
            };
            tracker.restore_stream_time(slot, ts);
        }
        let marks = s
            .scope
            .read_meta::<Vec<(String, u32, u64)>>(META_ORIGINS)?
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p, o)| ((Arc::from(t), p), o))
            .collect();
        tracing::debug!(group = %s.group, partition = s.partition, offsets = ?next, watermark = ?tracker.current(),
            "task restored");
        let last_epoch = s.committer.epoch(s.cfg.commit_interval);
        Ok(Self {
            s,
            decoder,
            op,
            next,
            stop_at,
            draining: false,
            tracker,
            marks,
            slots,
            slot_sources,
            retired,
            caught_up: vec![false; n],
            outlier: None,
            out: Vec::new(),
            dead: Vec::new(),
            late: Vec::new(),
            dirty: false,
            last_epoch,
            position: (0, 0),
            wait_turn: 0,
            held: false,
            held_at: vec![None; n],
            held_recs: vec![Vec::new(); n],
            counters: Counters::default(),
        })
    }

    /// Runs the task to its end. Every error (a panic of the operator included) is returned as
    /// [`Error::Task`] naming the group, the input topic and the partition.
    pub(crate) fn run(mut self) -> Result<TaskEnd> {
        self.s.committer.join();
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
        self.s.committer.leave();
        if self.s.member.is_none() {
            self.s.producers.finished(&self.s.cfg.outputs);
        }
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
            if self.aborted() {
                return Ok(TaskEnd::Aborted);
            }
            if self.s.shutdown.is_triggered() || self.s.member.as_ref().is_some_and(|m| m.revoked.is_triggered()) {
                self.route()?;
                self.commit()?;
                return Ok(TaskEnd::Finished);
            }
            if self.stop_at.is_none() && !self.draining && self.s.drain.is_triggered() {
                self.draining = true;
                if self.s.member.is_none() {
                    // The inputs end where they are now (inputs produced in the runtime: when their producers
                    // have drained).
                    self.stop_at = Some(end_offsets(&mut *self.s.reader, self.s.inputs.len())?);
                }
            }
            let now = (self.s.clock)();
            self.held = false;
            let mut polled = 0;
            for input in 0..self.s.inputs.len() {
                match self.poll(input, now)? {
                    Some(n) => polled += n,
                    None => return Ok(TaskEnd::Aborted),
                }
            }
            for slot in 0..self.slot_sources.len() {
                let caught_up = match self.slot_sources[slot].1 {
                    ANY_INPUT => self.caught_up.iter().all(|c| *c),
                    input => self.caught_up[input],
                };
                self.tracker.set_caught_up(slot, caught_up, now);
            }
            if let Some(wm) = self.tracker.tick(now) {
                self.fire_watermark(wm, now)?;
            }
            if self.draining && self.s.member.is_some() && self.caught_up.iter().all(|c| *c) && self.inputs_complete() {
                // A member task is not stopped by a drain (other processes may still produce to its
                // inputs): once it has read to the end of inputs that nothing will add to, they count as
                // idle at once, as after the idle timeout.
                if let Some(wm) = self.tracker.idle_all() {
                    self.fire_watermark(wm, now)?;
                    self.dirty = true;
                }
            }
            self.with_context(self.tracker.current(), now, |op, ctx| op.on_processing_time(now, ctx))?;
            self.route()?;
            self.publish_counters();
            if self.drained()? {
                if self.draining {
                    // What the idle timeout would do once every partition has been quiet, without waiting.
                    if let Some(wm) = self.tracker.idle_all() {
                        self.fire_watermark(wm, now)?;
                    }
                } else {
                    let before = self.tracker.current();
                    let wm = self.tracker.finish();
                    if before != Some(wm) {
                        self.fire_watermark(wm, now)?;
                    }
                }
                self.route()?;
                self.dirty = true;
                self.commit()?;
                return Ok(TaskEnd::Finished);
            }
            let epoch = self.s.committer.epoch(self.s.cfg.commit_interval);
            if epoch != self.last_epoch || self.s.cfg.commit_interval.is_zero() {
                self.commit()?;
            }
            if polled == 0 {
                self.idle_wait();
            }
        }
    }

    /// A drain of group-member jobs: whether every input is complete — a clients' input (the drain says the
    /// clients have stopped), or one whose producers have processed all their input in every process
    /// ([`super::Runtime::upstream_complete`]). Before that, an input whose producer runs elsewhere is
    /// quiet, not finished: its records may still come (e.g. from a task between two owners).
    fn inputs_complete(&self) -> bool {
        self.s.inputs.iter().all(|t| !self.s.producers.produced_by_jobs(t) || self.s.producers.is_complete(t))
    }

    /// Stopped as a crash would (no commit): the runtime was aborted, or the task's partition was lost.
    fn aborted(&self) -> bool {
        self.s.abort.is_aborted() || self.s.member.as_ref().is_some_and(|m| m.lost.is_triggered())
    }

    /// The offset input `input` is read up to in batch mode (`u64::MAX`: no fixed end).
    fn limit(&self, input: usize) -> u64 {
        match &self.stop_at {
            Some(stop) if !self.s.producers.produced_here(&self.s.inputs[input]) => stop[input],
            _ => u64::MAX,
        }
    }

    /// Reads and handles up to `max_poll_records` of one input. `None` if aborted meanwhile.
    fn poll(&mut self, input: usize, now: i64) -> Result<Option<usize>> {
        // Alignment: a read that starts after the input's feeds have finished sees all they appended.
        let feeds_done = self.s.heads.as_ref().is_some_and(|h| h.feeds_finished(input));
        let polled = self.poll_input(input, now);
        if feeds_done {
            if let Some(h) = &mut self.s.heads {
                h.confirm(input);
            }
        }
        polled
    }

    fn poll_input(&mut self, input: usize, now: i64) -> Result<Option<usize>> {
        let limit = self.limit(input);
        if self.next[input] >= limit {
            self.caught_up[input] = true;
            self.idle_head(input);
            return Ok(Some(0));
        }
        if let (Some(ts), Some(h)) = (self.held_at[input], &mut self.s.heads) {
            if !h.admit(input, ts) {
                self.held = true;
                return Ok(Some(0));
            }
            self.held_at[input] = None;
        }
        let recs = if self.held_recs[input].is_empty() {
            self.s.reader.read(input, self.next[input], self.s.cfg.max_poll_records)?
        } else {
            std::mem::take(&mut self.held_recs[input])
        };
        if recs.is_empty() {
            self.idle_head(input);
        }
        let mut handled = 0;
        let mut decoded_next: Option<Decoded<K, V>> = None;
        let mut held_from = None;
        for i in 0..recs.len() {
            let rec = &recs[i];
            if rec.offset >= limit {
                self.next[input] = limit;
                break;
            }
            if rec.offset > self.next[input] {
                tracing::warn!(group = %self.s.group, topic = %self.s.inputs[input], partition = self.s.partition,
                    from = self.next[input], to = rec.offset, "records deleted by retention were skipped");
            }
            self.position = (input, rec.offset);
            let mut decoded = match decoded_next.take() {
                Some((offset, d)) if offset == rec.offset => Some(d),
                _ => None,
            };
            if self.s.heads.is_some() {
                let d = decoded.take().unwrap_or_else(|| self.decoder.decode(rec));
                // A record far ahead of the data (a timestamp outlier, judged in `handle`) is not waited for:
                // only the records after it tell whether it is one.
                let ahead = |ts: Timestamp| {
                    self.s.cfg.max_ahead.map(crate::span::ms).zip(self.tracker.max_stream_time()).is_some_and(|(a, st)| ts > st.saturating_add(a))
                };
                let admitted = match (&d, &mut self.s.heads) {
                    (Ok(r), Some(h)) => h.admit(input, r.timestamp) || ahead(r.timestamp),
                    _ => true, // a record that does not decode has no time to wait for
                };
                if !admitted {
                    // Held back: go on from here once the earlier heads have moved on.
                    self.held = true;
                    self.held_at[input] = d.as_ref().ok().map(|r| r.timestamp);
                    self.next[input] = rec.offset;
                    held_from = Some(i);
                    break;
                }
                decoded = Some(d);
            }
            decoded_next = self.handle(input, &recs, i, decoded, now)?;
            handled += 1;
            if self.aborted() {
                return Ok(None);
            }
        }
        if let Some(i) = held_from {
            let mut recs = recs;
            self.held_recs[input] = recs.split_off(i);
        }
        self.caught_up[input] = self.next[input] >= limit || self.s.reader.caught_up(input, self.next[input])?;
        Ok(Some(handled))
    }

    /// Handles `recs[i]` (decoded already if `decoded` is given). Returns the decoded next record when
    /// it had to be decoded early (to judge a timestamp outlier).
    fn handle(
        &mut self,
        input: usize,
        recs: &[LogRecord],
        i: usize,
        decoded: Option<std::result::Result<Record<K, V>, String>>,
        now: i64,
    ) -> Result<Option<Decoded<K, V>>> {
        let rec = &recs[i];
        self.counters.records_in += 1;
        self.next[input] = rec.offset + 1;
        self.dirty = true;
        if let Some(origin) = &rec.origin {
            let key = (Arc::clone(&origin.topic), origin.partition);
            match self.marks.get_mut(&key) {
                Some(mark) if *mark >= origin.offset => {
                    self.counters.duplicates += 1;
                    return Ok(None);
                }
                Some(mark) => *mark = origin.offset,
                None => {
                    self.marks.insert(key, origin.offset);
                }
            }
        }
        let decoded = decoded.unwrap_or_else(|| self.decoder.decode(rec));
        let record = match decoded {
            Err(reason) => {
                if self.s.cfg.dead_letter_topic.is_none() {
                    return Err(Error::Decode {
                        topic: rec.topic.to_string(),
                        partition: rec.partition,
                        offset: rec.offset,
                        reason: format!("{reason}; configure a dead_letter_topic to keep such records"),
                    });
                }
                // The stage of a decode failure is the group: each consumer group that rejects a record says so.
                self.dead.push(letter(rec, &self.s.group, reason));
                return Ok(None);
            }
            Ok(record) => record,
        };
        let slot = self.slot_of(input, rec, now);
        let ts = record.timestamp;
        let mut early = None;
        if let Some(ahead) = self.s.cfg.max_ahead.map(crate::span::ms) {
            // `is_client_input` looks the input up under a lock: only for the rare record that is ahead.
            if self.is_ahead(ts, ahead, now) && self.is_client_input(input) {
                // Far ahead of the data: a bad clock, or a real jump (traffic after a quiet spell)? The next
                // record of the same input decides: back near the old time means a spike, set aside.
                let next_ts = match recs.get(i + 1) {
                    Some(n) => {
                        let d = self.decoder.decode(n);
                        let t = d.as_ref().ok().map(|r| r.timestamp);
                        early = Some((n.offset, d));
                        t
                    }
                    None => self.peek_next_timestamp(input, rec.offset + 1)?,
                };
                let confirmed = self.outlier.is_some_and(|o| (ts - o).abs() <= ahead);
                if !confirmed && next_ts.is_some_and(|n| n < ts.saturating_sub(ahead)) {
                    self.outlier = Some(ts);
                    let reason = format!(
                        "TIMESTAMP_OUTLIER: event time {ts} ms is more than {ahead} ms ahead of the stream ({} ms) \
                         and the next record is back at {} ms; set aside so that it does not move the watermark",
                        self.tracker.max_stream_time().unwrap_or_default(),
                        next_ts.unwrap_or_default()
                    );
                    self.dead.push(letter(rec, &self.s.group, reason));
                    return Ok(early);
                }
            }
        }
        let before = self.tracker.current();
        if let (Some(behind), Some(wm)) = (self.s.cfg.max_behind.map(crate::span::ms), before) {
            // Only clients' records: one that a job of this runtime produced (a refund for a duplicate click
            // found late, a repartitioned record) was judged where its input was read; dropping it here
            // would lose an effect the system already decided on.
            if ts < wm.saturating_sub(behind) && self.is_client_input(input) {
                let reason = format!(
                    "LATE: event time {ts} ms is more than {behind} ms behind the watermark ({wm} ms): beyond the \
                     correction horizon, not applied"
                );
                self.late.push(letter(rec, &self.s.group, reason));
                return Ok(early);
            }
        }
        // The operator sees the watermark from before this record: a record is late only against what came
        // before it.
        let advanced = self.tracker.observe(slot, ts, now);
        self.with_context(before, now, |op, ctx| op.process(record, ctx))?;
        if let Some(wm) = advanced {
            self.fire_watermark(wm, now)?;
        }
        Ok(early)
    }

    /// Alignment: `input` has nothing to read now, so it holds no aligned task back (a topic that jobs
    /// produce to may be waiting for the others; what a feed appends later is held by the feed's own head).
    fn idle_head(&mut self, input: usize) {
        if let Some(h) = &mut self.s.heads {
            h.idle(input);
        }
    }

    /// Whether a record comes from clients, so that its clock is judged (outliers, the correction
    /// horizon): a record of an input that no job of the runtime produces to (see
    /// [`JobConfig::max_ahead`], [`JobConfig::max_behind`]). Looks the topic up under a lock: call it
    /// only for a record that is already suspect.
    fn is_client_input(&self, input: usize) -> bool {
        !self.s.producers.produced_by_jobs(&self.s.inputs[input])
    }

    /// Whether `ts` is more than `ahead` past the data seen so far (and, in a live run, past the wall clock).
    fn is_ahead(&self, ts: Timestamp, ahead: i64, now: i64) -> bool {
        let Some(stream) = self.tracker.max_stream_time() else { return false };
        let reference = if self.s.cfg.stop_at_end { stream } else { stream.max(now) };
        ts > reference.saturating_add(ahead)
    }

    /// The event time of the record at `offset` of `input`, if it exists and decodes.
    fn peek_next_timestamp(&mut self, input: usize, offset: u64) -> Result<Option<Timestamp>> {
        if offset >= self.limit(input) {
            return Ok(None);
        }
        let recs = self.s.reader.read(input, offset, 1)?;
        Ok(recs.first().and_then(|r| self.decoder.decode(r).ok()).map(|r| r.timestamp))
    }

    /// The watermark slot of a record of `input`.
    fn slot_of(&mut self, input: usize, rec: &LogRecord, now: i64) -> usize {
        let Some(o) = &rec.origin else { return input };
        if !self.retired[input] {
            self.retired[input] = true;
            self.tracker.retire(input);
        }
        let source = (Arc::clone(&o.topic), o.partition);
        if let Some(&i) = self.slots.get(&source) {
            self.slot_sources[i].1 = input;
            return i;
        }
        let i = self.tracker.add_partition(now);
        self.slots.insert(source.clone(), i);
        self.slot_sources.push((source, input));
        i
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

    /// Appends buffered outputs to their topics, late records to the late topic and dead letters to the
    /// dead-letter topic.
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
                self.s.producer.send(&topic, recs)?;
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
        let now = (self.s.clock)();
        let recs = letters
            .iter()
            .map(|dl| {
                let payload = serde_json::to_vec(dl).map_err(|e| Error::Sink {
                    sink: topic.to_string(),
                    reason: format!("cannot encode dead letter of {}: {e}", dl.source),
                })?;
                Ok(ProduceRecord { key: None, payload, timestamp: now, partition: None, origin: None })
            })
            .collect::<Result<Vec<_>>>()?;
        self.s.producer.send(topic, recs)
    }

    /// The error for a dead letter when the job has no dead-letter topic (dead letters are never dropped).
    fn undeliverable_dead_letter(&mut self) -> Error {
        let dl = self.dead.swap_remove(0);
        let more = self.dead.len();
        self.dead.clear();
        let reason =
            if more > 0 { format!("{} (and {more} more dead letters)", dl.reason) } else { dl.reason };
        let reason = format!("{reason}; configure a dead_letter_topic to keep such records");
        Error::Operator {
            operator: dl.stage,
            topic: dl.source.topic.to_string(),
            partition: dl.source.partition,
            offset: dl.source.offset,
            reason,
        }
    }

    /// Commits operator state, offsets, watermark, stream times and origin marks in one atomic batch,
    /// applied in the runtime's next group-commit round.
    fn commit(&mut self) -> Result<()> {
        self.last_epoch = self.s.committer.epoch(self.s.cfg.commit_interval);
        let mut batch = WriteBatch::new();
        self.op.flush_state(&mut batch)?;
        if !self.dirty && batch.is_empty() {
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
        let mut stream: Vec<(String, u32, Timestamp)> = self
            .slot_sources
            .iter()
            .enumerate()
            .filter_map(|(slot, ((t, p), _))| self.tracker.stream_time(slot).map(|ts| (t.to_string(), *p, ts)))
            .collect();
        stream.sort_unstable();
        self.s.scope.write_meta(META_STREAM_TIME, &stream, &mut batch)?;
        let mut marks: Vec<(String, u32, u64)> =
            self.marks.iter().map(|((t, p), o)| (t.to_string(), *p, *o)).collect();
        marks.sort_unstable();
        self.s.scope.write_meta(META_ORIGINS, &marks, &mut batch)?;
        self.s.committer.commit(batch)?;
        self.dirty = false;
        GroupMetrics::add(&self.s.metrics.commits, 1);
        Ok(())
    }

    /// Batch mode: every input read to its end (inputs produced inside the runtime: after every producer
    /// finished).
    fn drained(&mut self) -> Result<bool> {
        let Some(stop) = &self.stop_at else { return Ok(false) };
        if !self.s.producers.sealed() {
            return Ok(false);
        }
        for (i, topic) in self.s.inputs.iter().enumerate() {
            if self.s.producers.produced_here(topic) {
                if !self.s.producers.done(topic) || self.next[i] < self.s.reader.end_offset(i)? {
                    return Ok(false);
                }
            } else if self.next[i] < stop[i] {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits for new records on one input (in turn), bounded so shutdown, idle ticks and commits stay timely.
    fn idle_wait(&mut self) {
        if std::mem::take(&mut self.held) {
            // Alignment holds a record back: the tasks with earlier records are running.
            std::thread::sleep(Duration::from_micros(200));
            return;
        }
        let n = self.s.inputs.len();
        let input = self.wait_turn % n;
        self.wait_turn = self.wait_turn.wrapping_add(1);
        let mut timeout = if n == 1 { Duration::from_millis(100) } else { Duration::from_millis(20) };
        if self.stop_at.is_some() {
            // Batch mode: producers inside the runtime may finish at any moment.
            timeout = timeout.min(Duration::from_millis(10));
        }
        if self.dirty {
            timeout = timeout.min(self.s.cfg.commit_interval);
        }
        let offset = self.next[input];
        self.s.reader.wait(input, offset, timeout);
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

/// The end offset of each of the first `inputs` inputs of `reader`.
fn end_offsets(reader: &mut dyn PartitionReader, inputs: usize) -> Result<Vec<u64>> {
    (0..inputs).map(|i| reader.end_offset(i)).collect()
}

/// A dead letter (or late record) for `rec`, rejected by `stage`.
fn letter(rec: &LogRecord, stage: &str, reason: String) -> DeadLetter {
    DeadLetter {
        source: rec.coord(),
        stage: stage.to_string(),
        reason,
        payload: String::from_utf8_lossy(&rec.payload).into_owned(),
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
