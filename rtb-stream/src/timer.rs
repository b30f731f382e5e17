//! Per-key timers in event time and processing time, persisted with the operator's state.
//!
//! A timer is a `(key, at)` pair. Registering the same pair twice yields one timer (and one firing);
//! deleting a pair that is not registered does nothing. [`TimerService::fire_event_time`] returns, and removes,
//! every event-time timer with `at <= watermark`, ordered by `(at, key)`; processing-time timers work the
//! same against the processing clock.
//!
//! Each kind of timer is kept in a [`KeyedStore`] keyed by `(key, at)` — so [`TimerService::flush_into`]
//! writes only what changed and [`TimerService::new`] restores the pending timers after a restart — plus an
//! in-memory `BTreeSet<(at, key)>` index, rebuilt on open, that finds due timers in order.
//!
//! ```
//! use rtb_stream::state::StateScope;
//! use rtb_stream::timer::TimerService;
//!
//! let mut timers = TimerService::<String>::new(&StateScope::in_memory(), "timers")?;
//! timers.register_event_time("b".into(), 10);
//! timers.register_event_time("a".into(), 10);
//! timers.register_event_time("a".into(), 10); // same timer
//! timers.register_event_time("a".into(), 20);
//! assert_eq!(timers.fire_event_time(15), vec![("a".to_string(), 10), ("b".to_string(), 10)]);
//! assert_eq!(timers.next_event_time(), Some(20));
//! # Ok::<(), rtb_stream::Error>(())
//! ```

use std::collections::BTreeSet;
use std::hash::Hash;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::Result;
use crate::state::{KeyedStore, StateScope, WriteBatch};
use crate::time::Timestamp;

/// One clock's timers: the persisted set plus its time-ordered index.
#[derive(Debug)]
struct TimerQueue<K> {
    store: KeyedStore<(K, i64), ()>,
    index: BTreeSet<(i64, K)>,
}

impl<K> TimerQueue<K>
where
    K: Hash + Eq + Clone + Ord + Serialize + DeserializeOwned,
{
    fn open(scope: &StateScope, name: &str) -> Result<Self> {
        let store: KeyedStore<(K, i64), ()> = scope.keyed(name)?;
        let index = store.iter().map(|((key, at), ())| (*at, key.clone())).collect();
        Ok(Self { store, index })
    }

    fn register(&mut self, key: K, at: i64) {
        if self.index.insert((at, key.clone())) {
            self.store.insert((key, at), ());
        }
    }

    fn delete(&mut self, key: &K, at: i64) {
        let entry = (at, key.clone());
        if self.index.remove(&entry) {
            let (at, key) = entry;
            self.store.remove(&(key, at));
        }
    }

    fn fire(&mut self, upto: i64) -> Vec<(K, i64)> {
        let mut due = Vec::new();
        while self.index.first().is_some_and(|(at, _)| *at <= upto) {
            let Some((at, key)) = self.index.pop_first() else { break };
            let stored = (key, at);
            self.store.remove(&stored);
            due.push(stored);
        }
        due
    }

    fn next(&self) -> Option<i64> {
        self.index.first().map(|(at, _)| *at)
    }
}

/// Persisted per-key timers for one operator; see the [module docs](self).
#[derive(Debug)]
pub struct TimerService<K> {
    event: TimerQueue<K>,
    processing: TimerQueue<K>,
}

impl<K> TimerService<K>
where
    K: Hash + Eq + Clone + Ord + Serialize + DeserializeOwned,
{
    /// Opens the timers `name` in `scope`, restoring every timer pending at the last flush.
    pub fn new(scope: &StateScope, name: &str) -> Result<Self> {
        let scope = scope.child(name);
        let service = Self { event: TimerQueue::open(&scope, "event")?, processing: TimerQueue::open(&scope, "processing")? };
        tracing::debug!(
            timers = name,
            event_time = service.event.index.len(),
            processing_time = service.processing.index.len(),
            "timers opened"
        );
        Ok(service)
    }

    /// Registers an event-time timer for `key` at `at` (idempotent).
    pub fn register_event_time(&mut self, key: K, at: Timestamp) {
        self.event.register(key, at);
    }

    /// Deletes the event-time timer `(key, at)` if it is registered.
    pub fn delete_event_time(&mut self, key: &K, at: Timestamp) {
        self.event.delete(key, at);
    }

    /// Registers a processing-time timer for `key` at `at` (ms since epoch; idempotent).
    pub fn register_processing_time(&mut self, key: K, at: i64) {
        self.processing.register(key, at);
    }

    /// Deletes the processing-time timer `(key, at)` if it is registered.
    pub fn delete_processing_time(&mut self, key: &K, at: i64) {
        self.processing.delete(key, at);
    }

    /// Removes and returns every event-time timer with `at <= wm`, ordered by `(at, key)`.
    pub fn fire_event_time(&mut self, wm: Timestamp) -> Vec<(K, Timestamp)> {
        self.event.fire(wm)
    }

    /// Removes and returns every processing-time timer with `at <= now`, ordered by `(at, key)`.
    pub fn fire_processing_time(&mut self, now: i64) -> Vec<(K, i64)> {
        self.processing.fire(now)
    }

    /// The earliest pending event-time timer.
    pub fn next_event_time(&self) -> Option<Timestamp> {
        self.event.next()
    }

    /// The earliest pending processing-time timer.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.processing.next()
    }

    /// Number of pending `(event-time, processing-time)` timers.
    pub fn pending(&self) -> (usize, usize) {
        (self.event.index.len(), self.processing.index.len())
    }

    /// Writes the timers registered, fired or deleted since the last flush into `batch`.
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        self.event.store.flush_into(batch)?;
        self.processing.store.flush_into(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(scope: &StateScope, t: &mut TimerService<String>) {
        let mut b = WriteBatch::new();
        t.flush_into(&mut b).expect("flush");
        scope.backend().apply(b).expect("apply");
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn registering_the_same_timer_twice_fires_once() {
        let mut t = TimerService::<String>::new(&StateScope::in_memory(), "t").expect("open");
        t.register_event_time(s("a"), 5);
        t.register_event_time(s("a"), 5);
        assert_eq!(t.pending(), (1, 0));
        assert_eq!(t.fire_event_time(10), vec![(s("a"), 5)]);
        assert!(t.fire_event_time(10).is_empty(), "fired timers are gone");
    }

    #[test]
    fn fires_at_exactly_the_watermark_in_at_then_key_order() {
        let mut t = TimerService::<String>::new(&StateScope::in_memory(), "t").expect("open");
        for (k, at) in [("c", 3), ("a", 7), ("b", 3), ("a", 3), ("z", 8)] {
            t.register_event_time(s(k), at);
        }
        assert_eq!(t.fire_event_time(2), vec![]);
        assert_eq!(t.fire_event_time(7), vec![(s("a"), 3), (s("b"), 3), (s("c"), 3), (s("a"), 7)]);
        assert_eq!(t.next_event_time(), Some(8));
    }

    #[test]
    fn delete_removes_only_that_timer_and_unknown_delete_is_a_no_op() {
        let mut t = TimerService::<String>::new(&StateScope::in_memory(), "t").expect("open");
        t.register_event_time(s("a"), 5);
        t.register_event_time(s("a"), 6);
        t.delete_event_time(&s("a"), 5);
        t.delete_event_time(&s("b"), 6);
        t.delete_processing_time(&s("a"), 6); // other clock
        assert_eq!(t.fire_event_time(100), vec![(s("a"), 6)]);
    }

    #[test]
    fn event_and_processing_time_are_separate_clocks() {
        let mut t = TimerService::<String>::new(&StateScope::in_memory(), "t").expect("open");
        t.register_event_time(s("a"), 5);
        t.register_processing_time(s("a"), 5);
        t.register_processing_time(s("b"), 1_000);
        assert_eq!(t.fire_processing_time(999), vec![(s("a"), 5)]);
        assert_eq!(t.next_event_time(), Some(5));
        assert_eq!(t.next_processing_time(), Some(1_000));
        assert_eq!(t.fire_event_time(5), vec![(s("a"), 5)]);
    }

    #[test]
    fn restart_after_flush_resumes_pending_timers_only() {
        let scope = StateScope::in_memory();
        let mut t = TimerService::<String>::new(&scope, "t").expect("open");
        t.register_event_time(s("a"), 1);
        t.register_event_time(s("b"), 2);
        t.register_event_time(s("c"), 3);
        t.register_processing_time(s("p"), 50);
        commit(&scope, &mut t);
        assert_eq!(t.fire_event_time(1), vec![(s("a"), 1)]);
        t.delete_event_time(&s("c"), 3);
        t.register_event_time(s("d"), 4);
        commit(&scope, &mut t);
        t.register_event_time(s("lost"), 0); // never flushed
        drop(t);
        let mut r = TimerService::<String>::new(&scope, "t").expect("reopen");
        assert_eq!(r.pending(), (2, 1));
        assert_eq!(r.fire_event_time(i64::MAX), vec![(s("b"), 2), (s("d"), 4)]);
        assert_eq!(r.fire_processing_time(50), vec![(s("p"), 50)]);
        // fired timers are deleted from the store as well
        let mut b = WriteBatch::new();
        r.flush_into(&mut b).expect("flush");
        scope.backend().apply(b).expect("apply");
        assert_eq!(TimerService::<String>::new(&scope, "t").expect("reopen").pending(), (0, 0));
    }

    #[test]
    fn re_registration_after_restart_is_deduplicated() {
        let scope = StateScope::in_memory();
        let mut t = TimerService::<String>::new(&scope, "t").expect("open");
        t.register_event_time(s("a"), 9);
        commit(&scope, &mut t);
        let mut r = TimerService::<String>::new(&scope, "t").expect("reopen");
        r.register_event_time(s("a"), 9);
        assert_eq!(r.fire_event_time(9), vec![(s("a"), 9)]);
    }
}
