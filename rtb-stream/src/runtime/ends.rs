//! Where batch mode ends for topics produced inside the runtime.
//!
//! A job in `stop_at_end` mode reads an external input up to the end offset it had when the task started.
//! An input that another job of the same runtime produces to (a repartition topic, an operator's output
//! topic) has no such end: it ends when every task of every job producing to it has finished, and then at
//! its end offset. Producers are known from [`JobConfig::outputs`](super::JobConfig::outputs); since jobs
//! may be spawned in any order, no input counts as ended before the runtime is sealed
//! ([`Runtime::join`](super::Runtime::join): every job has been spawned).

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// Running producer tasks per topic.
#[derive(Debug, Default)]
pub(crate) struct Producers {
    sealed: AtomicBool,
    running: Mutex<FxHashMap<String, usize>>,
    /// Topics a job of the runtime produces to (feeds aside).
    by_jobs: Mutex<rustc_hash::FxHashSet<String>>,
    /// Topics whose producers, in every process, have processed all their input (group-member drains).
    complete: Mutex<rustc_hash::FxHashSet<String>>,
}

impl Producers {
    /// Counts `tasks` new producer tasks of each of `topics`.
    pub(crate) fn add(&self, topics: &[String], tasks: usize) {
        let mut running = self.running.lock();
        for t in topics {
            *running.entry(t.clone()).or_default() += tasks;
        }
        self.by_jobs.lock().extend(topics.iter().cloned());
    }

    /// Counts a producer of each of `topics` that is not a job: a feed of clients' records
    /// ([`Runtime::feed`](super::Runtime::feed)).
    pub(crate) fn add_feed(&self, topics: &[String]) {
        let mut running = self.running.lock();
        for t in topics {
            *running.entry(t.clone()).or_default() += 1;
        }
    }

    /// A feed of each of `topics` has finished.
    pub(crate) fn feed_finished(&self, topics: &[String]) {
        self.finished(topics);
    }

    /// Declares that a group-member job produces to `topics` (its records there are not clients'). Its
    /// tasks come and go with the group's assignment and a batch never waits for them: nothing is counted.
    pub(crate) fn add_member(&self, topics: &[String]) {
        self.by_jobs.lock().extend(topics.iter().cloned());
    }

    /// Declares that every producer of `topic`, in every process, has processed all its input (see
    /// [`crate::runtime::Runtime::upstream_complete`]).
    pub(crate) fn mark_complete(&self, topic: &str) {
        self.complete.lock().insert(topic.to_string());
    }

    /// Whether [`Producers::mark_complete`] was called for `topic`.
    pub(crate) fn is_complete(&self, topic: &str) -> bool {
        self.complete.lock().contains(topic)
    }

    /// Whether a job spawned so far produces to `topic` (its records are not clients').
    pub(crate) fn produced_by_jobs(&self, topic: &str) -> bool {
        self.by_jobs.lock().contains(topic)
    }

    /// One producer task of each of `topics` has finished.
    pub(crate) fn finished(&self, topics: &[String]) {
        let mut running = self.running.lock();
        for t in topics {
            if let Some(n) = running.get_mut(t) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Every job has been spawned.
    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    /// Whether the runtime is sealed: no job will be added.
    pub(crate) fn sealed(&self) -> bool {
        self.sealed.load(Ordering::SeqCst)
    }

    /// Whether a job spawned so far, or a feed, produces to `topic` (it ends when they have finished).
    pub(crate) fn produced_here(&self, topic: &str) -> bool {
        self.running.lock().contains_key(topic)
    }

    /// Whether every producer of `topic` inside the runtime has finished (after the runtime is sealed).
    pub(crate) fn done(&self, topic: &str) -> bool {
        self.sealed.load(Ordering::SeqCst) && self.running.lock().get(topic).is_none_or(|n| *n == 0)
    }
}
