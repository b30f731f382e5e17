//! The operator trait: one record in, zero or more out, with optional watermark and timer hooks.
//!
//! Operators own their state as typed stores opened from a [`crate::state::StateScope`] when they are built,
//! and write it back in [`Operator::flush_state`], which the runtime calls right before it commits state and
//! source offsets atomically.

use crate::error::Result;
use crate::record::{Record, SourceCoord};
use crate::state::WriteBatch;
use crate::time::Timestamp;

/// A record that could not be processed, kept with why and where it came from. Never dropped silently:
/// the runtime writes dead letters to the job's dead-letter output and counts them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Where the record came from.
    pub source: SourceCoord,
    /// Which operator or stage rejected it.
    pub stage: String,
    /// Why.
    pub reason: String,
    /// The original bytes (lossy UTF-8 where the payload was text).
    pub payload: String,
}

/// What an operator sees besides the record: where to send outputs, dead letters and late records, and the
/// clocks.
#[derive(Debug)]
pub struct Context<'a, O> {
    out: &'a mut Vec<O>,
    dead_letters: &'a mut Vec<DeadLetter>,
    late: Option<&'a mut Vec<DeadLetter>>,
    watermark: Option<Timestamp>,
    now: i64,
}

impl<'a, O> Context<'a, O> {
    /// A context writing into the given buffers.
    pub fn new(
        out: &'a mut Vec<O>,
        dead_letters: &'a mut Vec<DeadLetter>,
        watermark: Option<Timestamp>,
        now: i64,
    ) -> Self {
        Self { out, dead_letters, late: None, watermark, now }
    }
    /// A context that keeps late records apart from dead letters (see [`Context::late`]).
    pub fn with_late(
        out: &'a mut Vec<O>,
        dead_letters: &'a mut Vec<DeadLetter>,
        late: &'a mut Vec<DeadLetter>,
        watermark: Option<Timestamp>,
        now: i64,
    ) -> Self {
        Self { out, dead_letters, late: Some(late), watermark, now }
    }
    /// Emits one output.
    pub fn emit(&mut self, o: O) {
        self.out.push(o);
    }
    /// Sends a record to the dead-letter output (invalid input).
    pub fn dead_letter(&mut self, dl: DeadLetter) {
        self.dead_letters.push(dl);
    }
    /// Sends a valid record that arrived too late to be applied to the late-records output (not the
    /// dead-letter output: a late record is valid input that arrived late). `reason` says why it is late.
    /// Without a separate late buffer (a plain [`Context::new`]) it goes with the dead letters.
    pub fn late(&mut self, dl: DeadLetter) {
        match self.late.as_deref_mut() {
            Some(late) => late.push(dl),
            None => self.dead_letters.push(dl),
        }
    }
    /// The current event-time watermark of the task, if any.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }
    /// Processing time (ms since epoch; virtual in tests and replays).
    pub fn now(&self) -> i64 {
        self.now
    }
}

/// A keyed stream operator.
pub trait Operator: Send {
    /// Key of input records.
    type Key;
    /// Input value.
    type In;
    /// Output.
    type Out;

    /// Handles one record.
    fn process(
        &mut self,
        record: Record<Self::Key, Self::In>,
        ctx: &mut Context<'_, Self::Out>,
    ) -> Result<()>;

    /// Called when the task's watermark advances (to `watermark`); fire windows, expire state here.
    fn on_watermark(
        &mut self,
        _watermark: Timestamp,
        _ctx: &mut Context<'_, Self::Out>,
    ) -> Result<()> {
        Ok(())
    }

    /// Called periodically with the processing time; fire processing-time timers here.
    fn on_processing_time(&mut self, _now: i64, _ctx: &mut Context<'_, Self::Out>) -> Result<()> {
        Ok(())
    }

    /// Writes the state changed since the last call into `batch` (committed atomically with offsets).
    fn flush_state(&mut self, _batch: &mut WriteBatch) -> Result<()> {
        Ok(())
    }
}

/// Drives an operator by hand (tests, batch jobs): collects outputs and dead letters.
#[derive(Debug)]
pub struct Harness<O: Operator> {
    /// The operator.
    pub operator: O,
    /// Everything emitted so far.
    pub out: Vec<O::Out>,
    /// Every dead letter so far.
    pub dead_letters: Vec<DeadLetter>,
    /// Every late record so far.
    pub late: Vec<DeadLetter>,
    watermark: Option<Timestamp>,
    now: i64,
}

impl<O: Operator> Harness<O> {
    /// Wraps an operator.
    pub fn new(operator: O) -> Self {
        Self { operator, out: Vec::new(), dead_letters: Vec::new(), late: Vec::new(), watermark: None, now: 0 }
    }
    /// Feeds one record.
    pub fn process(&mut self, record: Record<O::Key, O::In>) -> Result<()> {
        let mut ctx =
            Context::with_late(&mut self.out, &mut self.dead_letters, &mut self.late, self.watermark, self.now);
        self.operator.process(record, &mut ctx)
    }
    /// Advances the watermark (ignored if not ahead of the current one).
    pub fn advance_watermark(&mut self, wm: Timestamp) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= wm) {
            return Ok(());
        }
        self.watermark = Some(wm);
        let mut ctx =
            Context::with_late(&mut self.out, &mut self.dead_letters, &mut self.late, self.watermark, self.now);
        self.operator.on_watermark(wm, &mut ctx)
    }
    /// Advances processing time.
    pub fn advance_processing_time(&mut self, now: i64) -> Result<()> {
        self.now = now;
        let mut ctx =
            Context::with_late(&mut self.out, &mut self.dead_letters, &mut self.late, self.watermark, self.now);
        self.operator.on_processing_time(now, &mut ctx)
    }
    /// Takes the outputs collected so far.
    pub fn drain(&mut self) -> Vec<O::Out> {
        std::mem::take(&mut self.out)
    }
}
