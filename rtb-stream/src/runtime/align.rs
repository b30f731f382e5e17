//! Event-time alignment across the jobs of a runtime ([`JobConfig::align`](super::JobConfig::align)).
//!
//! Every input of every aligned task has a *head*: the event time of the next record it will process (the
//! last one it processed while it reads on; `Timestamp::MAX` while it has nothing to read). A task processes
//! a record only when no head of any aligned task is more than the allowed drift earlier than the record's
//! event time, so that across jobs records are applied in event-time order up to the drift, as one merged
//! stream would apply them — Flink's watermark alignment. A stage that reads what another stage writes to a store (a budget the ranking
//! stage records from campaign events) then sees it as of the record's time, as a live run does. The task
//! holding the earliest head may always go on, so alignment cannot deadlock; heads are only published once
//! the runtime is sealed (every job spawned).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::time::Timestamp;

/// The heads of every aligned input of a runtime, and of its feeds.
#[derive(Debug, Default)]
pub(crate) struct Alignment {
    heads: Mutex<Vec<Arc<AtomicI64>>>,
    feeds: Mutex<Vec<Arc<FeedSlot>>>,
    /// A snapshot of `heads` and `feeds`, taken when the runtime is sealed (nothing is added afterwards).
    sealed: std::sync::OnceLock<Sealed>,
    closed: AtomicBool,
}

/// What [`Alignment::min`] compares once the runtime is sealed.
#[derive(Debug)]
struct Sealed {
    heads: Vec<Arc<AtomicI64>>,
    feeds: Vec<Arc<FeedSlot>>,
}

/// A feed's place in the alignment ([`Runtime::feed`](super::Runtime::feed)). Its head is the event time up
/// to which it has reported its records appended: records it appends later are from about then on, so an
/// aligned task whose fed input is empty for now holds nobody back — the feed's head does. Once the feed
/// has finished, its head keeps holding until every aligned input of its topics has been read after the
/// end (an input found empty before the end may have records now).
#[derive(Debug)]
pub(crate) struct FeedSlot {
    topics: Vec<String>,
    pub(crate) head: AtomicI64,
    finished: AtomicBool,
    /// Aligned inputs of its topics not yet read since it finished.
    unconfirmed: std::sync::atomic::AtomicUsize,
}

impl FeedSlot {
    /// Whether it still holds the aligned tasks back.
    fn active(&self) -> bool {
        !self.finished.load(Ordering::Acquire) || self.unconfirmed.load(Ordering::Acquire) > 0
    }

    /// Everything is appended (the head keeps its last reported progress).
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }
}

impl Alignment {
    /// A feed of `topics` (declared before the jobs reading them are spawned).
    pub(crate) fn register_feed(&self, topics: &[String]) -> Arc<FeedSlot> {
        let slot = Arc::new(FeedSlot {
            topics: topics.to_vec(),
            head: AtomicI64::new(Timestamp::MIN),
            finished: AtomicBool::new(false),
            unconfirmed: std::sync::atomic::AtomicUsize::new(0),
        });
        self.feeds.lock().push(Arc::clone(&slot));
        slot
    }

    /// The feeds of `topic`.
    fn feeds_of(&self, topic: &str) -> Vec<Arc<FeedSlot>> {
        self.feeds.lock().iter().filter(|f| f.topics.iter().any(|t| t == topic)).cloned().collect()
    }

    /// A new head, holding every other task back until its owner publishes.
    pub(crate) fn register(&self) -> Arc<AtomicI64> {
        let head = Arc::new(AtomicI64::new(Timestamp::MIN));
        self.heads.lock().push(Arc::clone(&head));
        head
    }

    /// Every job is spawned: heads can be compared.
    pub(crate) fn seal(&self) {
        let _ = self.sealed.set(Sealed { heads: self.heads.lock().clone(), feeds: self.feeds.lock().clone() });
    }

    /// The runtime stops: nothing waits for alignment any more.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// The earliest head of all (`None` before the runtime is sealed), `Timestamp::MAX` once closed.
    pub(crate) fn min(&self) -> Option<Timestamp> {
        if self.closed.load(Ordering::Acquire) {
            return Some(Timestamp::MAX);
        }
        let sealed = self.sealed.get()?;
        let tasks = sealed.heads.iter().map(|h| h.load(Ordering::Acquire));
        let feeds = sealed.feeds.iter().filter(|f| f.active()).map(|f| f.head.load(Ordering::Acquire));
        Some(tasks.chain(feeds).min().unwrap_or(Timestamp::MAX))
    }
}

/// One task's heads (one per input) in its runtime's [`Alignment`].
#[derive(Debug)]
pub(crate) struct Heads {
    alignment: Arc<Alignment>,
    heads: Vec<Arc<AtomicI64>>,
    /// The feeds of each input's topic, while the input has not been read since they finished.
    unconfirmed: Vec<Vec<Arc<FeedSlot>>>,
    /// How far ahead of the earliest head a record may be processed (ms).
    drift: i64,
    /// The earliest head plus the drift when last computed: records up to it go without looking again.
    bound: Timestamp,
}

impl Heads {
    pub(crate) fn new(alignment: &Arc<Alignment>, inputs: &[Arc<str>], drift: std::time::Duration) -> Self {
        let unconfirmed: Vec<Vec<Arc<FeedSlot>>> = inputs.iter().map(|t| alignment.feeds_of(t)).collect();
        for f in unconfirmed.iter().flatten() {
            f.unconfirmed.fetch_add(1, Ordering::AcqRel);
        }
        Self {
            alignment: Arc::clone(alignment),
            heads: inputs.iter().map(|_| alignment.register()).collect(),
            unconfirmed,
            drift: crate::span::ms(drift),
            bound: Timestamp::MIN,
        }
    }

    /// Whether every feed of `input`'s topic has finished (a read from now on sees all they appended).
    pub(crate) fn feeds_finished(&self, input: usize) -> bool {
        self.unconfirmed[input].iter().all(|f| f.finished.load(Ordering::Acquire))
    }

    /// `input` was read after its feeds finished: its head is what is left to read.
    pub(crate) fn confirm(&mut self, input: usize) {
        for f in self.unconfirmed[input].drain(..) {
            f.unconfirmed.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Publishes that `input` is about to process a record at `ts`; whether it may (no head earlier than
    /// `ts` − drift).
    pub(crate) fn admit(&mut self, input: usize, ts: Timestamp) -> bool {
        self.heads[input].store(ts, Ordering::Release);
        if ts <= self.bound {
            return true;
        }
        match self.alignment.min() {
            Some(min) => {
                self.bound = min.saturating_add(self.drift);
                ts <= self.bound
            }
            None => false,
        }
    }

    /// `input` has nothing to read now: it holds nobody back.
    pub(crate) fn idle(&mut self, input: usize) {
        self.heads[input].store(Timestamp::MAX, Ordering::Release);
    }

    /// The task has stopped: none of its inputs holds anybody back.
    pub(crate) fn release(&mut self) {
        for h in &self.heads {
            h.store(Timestamp::MAX, Ordering::Release);
        }
        for input in 0..self.unconfirmed.len() {
            self.confirm(input);
        }
    }
}

impl Drop for Heads {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("t{i}").as_str())).collect()
    }

    #[test]
    fn a_feed_holds_at_its_progress_and_after_it_ends_until_its_inputs_are_read() {
        let a = Arc::new(Alignment::default());
        let feed = a.register_feed(&["fed".to_string()]);
        let fed: Vec<Arc<str>> = vec![Arc::from("fed")];
        let mut x = Heads::new(&a, &fed, std::time::Duration::ZERO);
        let mut y = Heads::new(&a, &inputs(1), std::time::Duration::ZERO);
        a.seal();
        x.idle(0); // nothing appended yet
        assert!(!y.admit(0, 10), "the feed has reported nothing");
        feed.head.fetch_max(20, Ordering::AcqRel);
        assert!(y.admit(0, 10));
        assert!(!y.admit(0, 30), "past the feed's progress");
        feed.finish();
        assert!(!y.admit(0, 30), "x's input has not been read since the feed ended");
        assert!(x.feeds_finished(0));
        x.confirm(0);
        assert!(y.admit(0, 30), "x read to its end: nobody holds");
    }

    #[test]
    fn the_earliest_head_goes_first_and_a_task_with_nothing_to_read_holds_nobody() {
        let a = Arc::new(Alignment::default());
        let mut x = Heads::new(&a, &inputs(1), std::time::Duration::ZERO);
        let mut y = Heads::new(&a, &inputs(2), std::time::Duration::ZERO);
        assert!(!x.admit(0, 10), "nothing goes before the runtime is sealed");
        a.seal();
        // y has not published its inputs yet: they hold x back.
        assert!(!x.admit(0, 10));
        assert!(!y.admit(0, 20), "x's head (10) is earlier");
        y.idle(1);
        assert!(x.admit(0, 10), "x holds the earliest head");
        assert!(!x.admit(0, 25), "y's input 0 is at 20");
        assert!(y.admit(0, 20));
        y.idle(0);
        assert!(x.admit(0, 25));
        drop(x);
        assert!(y.admit(0, 1_000), "a finished task holds nobody back");
        a.close();
        let mut z = Heads::new(&a, &inputs(1), std::time::Duration::ZERO);
        assert!(z.admit(0, 5), "closed: nothing waits");
    }

    #[test]
    fn a_record_within_the_drift_of_the_earliest_head_goes() {
        let a = Arc::new(Alignment::default());
        let mut x = Heads::new(&a, &inputs(1), std::time::Duration::from_millis(100));
        let mut y = Heads::new(&a, &inputs(1), std::time::Duration::from_millis(100));
        a.seal();
        assert!(!x.admit(0, 10), "y has not published");
        assert!(y.admit(0, 50), "within 100 ms of x's 10");
        assert!(x.admit(0, 150), "within 100 ms of y's 50");
        assert!(!y.admit(0, 251), "more than 100 ms past x's 150");
    }
}
