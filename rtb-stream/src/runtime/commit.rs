//! Group commit: the commits of every task of a runtime are applied together, one round at a time.
//!
//! A task hands its batch (operator state + offsets + watermark + origin marks) to the [`Committer`] and
//! waits. The first task to arrive while no round is running leads the next round: it gathers the batches
//! that arrive within a short window (or until every task with work has arrived), then, once for all of
//! them:
//! 1. with `sync_commits`, flushes the producer (outputs are durable before the offsets that produced them);
//! 2. runs the commit barriers (e.g. sinks made durable: a record's effects must never be less durable than
//!    the offset that says it was processed);
//! 3. applies every batch to the state backend in **one** atomic write;
//! 4. with `sync_commits`, flushes the state backend.
//!
//! Each task's batch touches only its own scope, so merging them changes nothing but the number of
//! writes and flushes: one per round for the whole process instead of one per task.
//! A failed round fails every task in it, and every later commit (the runtime is stopping).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::io::Producer;
use crate::state::{StoreBackend, WriteBatch};

/// Runs before the state of a round is applied; an error fails the round.
pub type CommitBarrier = Arc<dyn Fn() -> Result<()> + Send + Sync>;

#[derive(Default)]
struct Rounds {
    pending: Vec<WriteBatch>,
    /// The round the batches in `pending` will be applied in.
    next_round: u64,
    /// Every round `< done` has been applied.
    done: u64,
    leading: bool,
    failed: Option<String>,
    /// Tasks currently registered (an upper bound on the batches one round can gather).
    tasks: usize,
}

/// Applies the commits of many tasks in shared rounds. See the module docs.
pub(crate) struct Committer {
    state: Arc<dyn StoreBackend>,
    producer: Arc<dyn Producer>,
    /// Barriers by id (one per sink, however many jobs write to it).
    barriers: RwLock<Vec<(String, CommitBarrier)>>,
    sync: AtomicBool,
    gather: Duration,
    rounds: Mutex<Rounds>,
    cv: Condvar,
    started: Instant,
}

impl Committer {
    pub(crate) fn new(state: Arc<dyn StoreBackend>, producer: Arc<dyn Producer>) -> Self {
        Self {
            state,
            producer,
            barriers: RwLock::new(Vec::new()),
            sync: AtomicBool::new(false),
            gather: Duration::from_millis(2),
            rounds: Mutex::new(Rounds::default()),
            cv: Condvar::new(),
            started: Instant::now(),
        }
    }

    /// Whether rounds flush the producer and the state backend (survive a machine crash).
    pub(crate) fn set_sync(&self, sync: bool) {
        self.sync.store(sync, Ordering::Relaxed);
    }

    /// See [`Committer::set_sync`].
    pub(crate) fn sync(&self) -> bool {
        self.sync.load(Ordering::Relaxed)
    }

    /// Adds a barrier unless one with the same `id` is there already.
    pub(crate) fn add_barrier(&self, id: &str, barrier: CommitBarrier) {
        let mut barriers = self.barriers.write();
        if !barriers.iter().any(|(b, _)| b == id) {
            barriers.push((id.to_string(), barrier));
        }
    }

    /// Counts a task in (it may hand over batches until [`Committer::leave`]).
    pub(crate) fn join(&self) {
        self.rounds.lock().tasks += 1;
    }

    /// Counts a task out.
    pub(crate) fn leave(&self) {
        let mut r = self.rounds.lock();
        r.tasks = r.tasks.saturating_sub(1);
        self.cv.notify_all();
    }

    /// The commit epoch of `interval` now: tasks with the same interval commit in the same epochs, so their
    /// commits meet in one round.
    pub(crate) fn epoch(&self, interval: Duration) -> u64 {
        let ms = interval.as_millis().max(1);
        u64::try_from(self.started.elapsed().as_millis() / ms).unwrap_or(u64::MAX)
    }

    /// Applies `batch` in the next round and returns once it is applied (or the round failed).
    pub(crate) fn commit(&self, batch: WriteBatch) -> Result<()> {
        let mut r = self.rounds.lock();
        if let Some(reason) = &r.failed {
            return Err(Error::StateCommit(format!("commit refused: an earlier commit failed: {reason}").into()));
        }
        r.pending.push(batch);
        // A leader gathering a round stops waiting once every task has handed its batch over.
        self.cv.notify_all();
        let mine = r.next_round;
        loop {
            if r.done > mine {
                return match &r.failed {
                    Some(reason) => Err(Error::StateCommit(format!("group commit failed: {reason}").into())),
                    None => Ok(()),
                };
            }
            if r.leading {
                self.cv.wait(&mut r);
                continue;
            }
            // Lead the round: gather briefly, then apply everything pending.
            r.leading = true;
            let deadline = Instant::now() + self.gather;
            while r.pending.len() < r.tasks && !self.cv.wait_until(&mut r, deadline).timed_out() {}
            let batches = std::mem::take(&mut r.pending);
            let round = r.next_round;
            r.next_round += 1;
            drop(r);
            let result = self.apply(batches);
            r = self.rounds.lock();
            r.leading = false;
            r.done = round + 1;
            if let Err(e) = result {
                r.failed.get_or_insert_with(|| e.to_string());
            }
            self.cv.notify_all();
        }
    }

    fn apply(&self, batches: Vec<WriteBatch>) -> Result<()> {
        let sync = self.sync();
        if sync {
            self.producer.flush()?;
        }
        for (_, barrier) in self.barriers.read().iter() {
            barrier()?;
        }
        let mut all = WriteBatch::new();
        for b in batches {
            all.extend(b);
        }
        self.state.apply(all)?;
        if sync {
            self.state.flush()?;
        }
        Ok(())
    }
}
