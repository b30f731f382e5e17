//! Counters of a runtime, per consumer group, readable while jobs run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Live counters of one consumer group (all its tasks together).
#[derive(Debug, Default)]
pub struct GroupMetrics {
    /// Records read from the inputs (including duplicates skipped and dead letters).
    pub records_in: AtomicU64,
    /// Outputs appended to the log (dead letters not included).
    pub records_out: AtomicU64,
    /// Dead letters written (undecodable records and those an operator rejected).
    pub dead_letters: AtomicU64,
    /// Late records (valid input that arrived too late to be applied), written to the late-records output.
    pub late_records: AtomicU64,
    /// Repartitioned records skipped because their origin was already applied.
    pub duplicates_skipped: AtomicU64,
    /// Successful commits of state + offsets.
    pub commits: AtomicU64,
    /// Tasks started.
    pub tasks: AtomicU64,
}

impl GroupMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self) -> GroupCounters {
        GroupCounters {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            late_records: self.late_records.load(Ordering::Relaxed),
            duplicates_skipped: self.duplicates_skipped.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            tasks: self.tasks.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a group's counters (see [`GroupMetrics`] for their meaning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Records read.
    pub records_in: u64,
    /// Outputs appended.
    pub records_out: u64,
    /// Dead letters written.
    pub dead_letters: u64,
    /// Late records written.
    pub late_records: u64,
    /// Duplicates skipped by origin.
    pub duplicates_skipped: u64,
    /// Commits.
    pub commits: u64,
    /// Tasks started.
    pub tasks: u64,
}

/// Counters of every group of a runtime.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    groups: RwLock<BTreeMap<String, Arc<GroupMetrics>>>,
}

impl RuntimeMetrics {
    /// Publishes the counters of a newly started group.
    pub(crate) fn insert(&self, group: &str, metrics: Arc<GroupMetrics>) {
        self.groups.write().insert(group.to_string(), metrics);
    }

    /// The live counters of `group`, if it was spawned.
    pub fn group(&self, group: &str) -> Option<Arc<GroupMetrics>> {
        self.groups.read().get(group).cloned()
    }

    /// Copies of every group's counters.
    pub fn snapshot(&self) -> BTreeMap<String, GroupCounters> {
        self.groups.read().iter().map(|(g, m)| (g.clone(), m.snapshot())).collect()
    }
}

/// What a runtime did, returned by [`crate::runtime::Runtime::join`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeReport {
    /// Counters per consumer group.
    pub groups: BTreeMap<String, GroupCounters>,
    /// Whether the tasks were stopped by an [`crate::runtime::AbortHandle`] (no final commit).
    pub aborted: bool,
}
