//! [`SessionWindows`]: keyed aggregation over gap-based sessions.
//!
//! A record at `ts` forms the session `[ts, ts + gap)`; a session is `[first_ts, last_ts + gap)`. A record
//! merges with every session of its key it overlaps: it extends a session when `ts - last_ts < gap`, and a
//! record exactly `gap` after the last one starts a new session (intervals are half-open). A record that
//! overlaps two sessions bridges them into one. A session is complete once
//! `watermark >= end - 1 + grace` and is then emitted as [`WindowEvent::Final`].
//!
//! # Lateness
//! A record is late when its own session `[ts, ts + gap)` is complete, or when it overlaps a session that
//! is complete. To recognise the second case, a complete session's bounds are kept for `gap - 1` ms of
//! watermark after it can no longer change (after that, every record that could overlap it is late by the
//! first rule).
//!
//! With [`LatePolicy::Correct`], complete sessions keep their result for `max_lateness` ms of watermark,
//! and a late record is merged like an on-time one. The result is reported as a
//! [`WindowEvent::Correction`] whose `window` is the session's **new bounds** and which **replaces every
//! session of the key previously emitted inside `window`**; `previous` is the merge (by
//! [`Aggregate::merge`]) of the results previously emitted for those sessions (`Acc::default()` if none:
//! a late record that forms a complete session of its own), and `current` is the new result.
//! - If the merged session is complete, the correction is emitted at once.
//! - If the late record also bridged into a session that is still open, the merged session is not
//!   complete yet: it is *reopened*, and the correction (with the same meaning of `previous`) is emitted
//!   when it completes, instead of a `Final`.
//!
//! For additive aggregates, `current - previous` is therefore exactly the change a downstream total needs.
//! A late record that overlaps a session older than `max_lateness` is emitted as [`WindowEvent::Late`].

use std::collections::BTreeSet;
use std::hash::Hash;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use smallvec::SmallVec;

use super::{
    read_meta, report_late, write_meta, Aggregate, LatePolicy, Meta, Timing, Window, WindowEvent,
    WindowStats,
};
use crate::error::{Error, Result};
use crate::state::{KeyedStore, StateScope, WriteBatch};
use crate::time::Timestamp;

/// Where a session stands with respect to its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Phase<A> {
    /// Nothing emitted yet.
    Open,
    /// Complete; `acc` is what was emitted last.
    Fired,
    /// Emitted sessions were merged into a session that is not complete yet; `previous` is the merge of
    /// what was emitted for them.
    Reopened { previous: A },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Session<A> {
    start: Timestamp,
    last: Timestamp,
    acc: A,
    phase: Phase<A>,
    /// The timer-index time this session is registered under (rebuilt on restore).
    #[serde(skip)]
    scheduled: Timestamp,
}

/// The sessions of one key, sorted by start (disjoint, so also by end); inline for the usual one or two.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
struct KeySessions<A> {
    #[serde(with = "super::inline_vec")]
    sessions: SmallVec<[Session<A>; 2]>,
    #[serde(skip)]
    epoch: u64,
}

/// Keyed aggregation over gap-based session windows with a grace period and a [`LatePolicy`].
/// See the [module docs](self).
pub struct SessionWindows<K, G: Aggregate> {
    scope: StateScope,
    gap: i64,
    aggregate: G,
    late: LatePolicy,
    timing: Timing,
    store: KeyedStore<K, KeySessions<G::Acc>>,
    /// `(due time, key)`: lazily maintained; a key is checked at the times its sessions are scheduled at.
    timers: BTreeSet<(Timestamp, K)>,
    watermark: Option<Timestamp>,
    stats: WindowStats,
    epoch: u64,
}

impl<K, G: Aggregate> std::fmt::Debug for SessionWindows<K, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindows")
            .field("gap", &self.gap)
            .field("late", &self.late)
            .field("watermark", &self.watermark)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<K, G> SessionWindows<K, G>
where
    K: Hash + Eq + Clone + Ord + Serialize + DeserializeOwned + Send,
    G: Aggregate,
    G::In: Clone,
{
    /// Creates the operator `name` with its state in `scope.child(name)`, restoring committed sessions,
    /// watermark and statistics. `gap` must be at least 1 ms (whole milliseconds count).
    pub fn new(
        scope: &StateScope,
        name: &str,
        gap: Duration,
        aggregate: G,
        grace: Duration,
        late: LatePolicy,
    ) -> Result<Self> {
        let gap_ms = crate::span::ms(gap);
        if gap_ms <= 0 {
            return Err(Error::Config(format!("session gap must be at least 1 ms, got {gap:?}")));
        }
        let timing = Timing::new(crate::span::ms(grace), &late)?;
        let scope = scope.child(name);
        let store: KeyedStore<K, KeySessions<G::Acc>> = scope.keyed("sessions")?;
        let meta = read_meta(&scope)?;
        let mut this = Self {
            scope,
            gap: gap_ms,
            aggregate,
            late,
            timing,
            store,
            timers: BTreeSet::new(),
            watermark: meta.watermark,
            stats: meta.stats,
            epoch: 1,
        };
        let keys: Vec<K> = this.store.iter().map(|(k, _)| k.clone()).collect();
        for key in keys {
            let Some(state) = this.store.get_mut_untracked(&key) else { continue };
            for s in &mut state.sessions {
                s.scheduled = due(&this.timing, this.gap, s);
                this.timers.insert((s.scheduled, key.clone()));
            }
        }
        tracing::debug!(operator = name, keys = this.store.len(), watermark = ?this.watermark, "sessions restored");
        Ok(this)
    }

    /// Adds one record of `key` at event time `ts`, merging the sessions it overlaps. Late records are
    /// handled by the [`LatePolicy`] (see the [module docs](self)).
    pub fn process(
        &mut self,
        key: K,
        ts: Timestamp,
        input: &G::In,
        out: &mut Vec<WindowEvent<K, G::Acc, G::In>>,
    ) {
        let mut env = Env {
            aggregate: &self.aggregate,
            timing: self.timing,
            gap: self.gap,
            watermark: self.watermark,
            timers: &mut self.timers,
            stats: &mut self.stats,
        };
        let late = if let Some(state) = self.store.get_mut_untracked(&key) {
            let verdict = env.apply(state, &key, ts, input, out);
            if verdict == Verdict::Applied && state.epoch != self.epoch {
                state.epoch = self.epoch;
                self.store.mark_changed(&key);
            }
            verdict == Verdict::Late
        } else {
            let mut state = KeySessions { sessions: SmallVec::new(), epoch: self.epoch };
            let verdict = env.apply(&mut state, &key, ts, input, out);
            if verdict == Verdict::Applied {
                self.store.insert(key.clone(), state);
            }
            verdict == Verdict::Late
        };
        if late {
            report_late(&self.late, &mut self.stats, key, ts, input, out);
        }
    }

    /// Advances the watermark to `wm` (ignored unless it moves forward): emits the sessions that complete
    /// (a `Final`, or the deferred `Correction` of a reopened session), ordered by session end, then key,
    /// and drops sessions that can no longer change.
    pub fn on_watermark(&mut self, wm: Timestamp, out: &mut Vec<WindowEvent<K, G::Acc, G::In>>) {
        if self.watermark.is_some_and(|current| wm <= current) {
            return;
        }
        self.watermark = Some(wm);
        let mut due_keys: Vec<(Timestamp, K)> = Vec::new();
        while self.timers.first().is_some_and(|(t, _)| *t <= wm) {
            due_keys.extend(self.timers.pop_first());
        }
        // Sessions to emit, as (end, key, start): timers are lazy, so their order is not the output order.
        let mut to_fire: Vec<(Timestamp, K, Timestamp)> = Vec::new();
        for (t, key) in due_keys {
            let Some(state) = self.store.get_mut_untracked(&key) else { continue };
            let mut purged = false;
            let mut i = 0;
            while i < state.sessions.len() {
                let s = &mut state.sessions[i];
                if s.scheduled != t {
                    i += 1;
                    continue;
                }
                let at = due(&self.timing, self.gap, s);
                if at > wm {
                    s.scheduled = at;
                    self.timers.insert((at, key.clone()));
                } else if s.phase == Phase::Fired {
                    state.sessions.remove(i);
                    purged = true;
                    continue;
                } else {
                    to_fire.push((s.last.saturating_add(self.gap), key.clone(), s.start));
                }
                i += 1;
            }
            if purged {
                self.after_edit(&key);
            }
        }
        to_fire.sort_unstable();
        for (end, key, start) in to_fire {
            self.fire(key, start, end, wm, out);
        }
    }

    /// Emits the session of `key` starting at `start` and keeps its bounds (and result, for corrections)
    /// until it can no longer change.
    fn fire(
        &mut self,
        key: K,
        start: Timestamp,
        end: Timestamp,
        wm: Timestamp,
        out: &mut Vec<WindowEvent<K, G::Acc, G::In>>,
    ) {
        let Some(state) = self.store.get_mut_untracked(&key) else { return };
        let i = state.sessions.partition_point(|s| s.start < start);
        let Some(s) = state.sessions.get_mut(i).filter(|s| s.start == start) else { return };
        let window = Window { start, end };
        let purge_at = purge_at(&self.timing, self.gap, end);
        let keep = purge_at > wm;
        // The result is needed later only if the session can still be corrected.
        let acc = if !keep || self.timing.lateness == 0 { std::mem::take(&mut s.acc) } else { s.acc.clone() };
        match std::mem::replace(&mut s.phase, Phase::Fired) {
            Phase::Reopened { previous } => {
                self.stats.corrections += 1;
                out.push(WindowEvent::Correction { key: key.clone(), window, previous, current: acc });
            }
            Phase::Open | Phase::Fired => {
                self.stats.fired += 1;
                out.push(WindowEvent::Final { key: key.clone(), window, acc });
            }
        }
        if keep {
            s.scheduled = purge_at;
            self.timers.insert((purge_at, key.clone()));
        } else {
            state.sessions.remove(i);
        }
        self.after_edit(&key);
    }

    /// Marks `key` changed, or removes it when it has no session left.
    fn after_edit(&mut self, key: &K) {
        let Some(state) = self.store.get_mut_untracked(key) else { return };
        if state.sessions.is_empty() {
            self.store.remove(key);
        } else if state.epoch != self.epoch {
            state.epoch = self.epoch;
            self.store.mark_changed(key);
        }
    }

    /// Writes the changes since the last flush (sessions, watermark, statistics) into `batch`.
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        self.store.flush_into(batch)?;
        write_meta(&self.scope, &Meta { watermark: self.watermark, stats: self.stats }, batch)?;
        self.epoch += 1;
        Ok(())
    }

    /// The operator's counters.
    pub fn stats(&self) -> &WindowStats {
        &self.stats
    }

    /// The last watermark seen (restored from state), if any.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// Number of sessions held (open ones and complete ones kept for corrections or late detection).
    pub fn sessions(&self) -> usize {
        self.store.iter().map(|(_, s)| s.sessions.len()).sum()
    }
}

/// When a session needs attention: completion while not emitted, removal once emitted.
fn due<A>(timing: &Timing, gap: i64, s: &Session<A>) -> Timestamp {
    let end = s.last.saturating_add(gap);
    match s.phase {
        Phase::Fired => purge_at(timing, gap, end),
        Phase::Open | Phase::Reopened { .. } => timing.complete_at(end),
    }
}

/// The watermark from which no record can reach a complete session ending at `end` without being late
/// by its own session; its bounds are kept until then.
fn purge_at(timing: &Timing, gap: i64, end: Timestamp) -> Timestamp {
    timing.expired_at(end).saturating_add(gap - 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Applied,
    Late,
}

/// The parts of the operator a record needs besides its key's sessions (split borrows).
struct Env<'a, K, G: Aggregate> {
    aggregate: &'a G,
    timing: Timing,
    gap: i64,
    watermark: Option<Timestamp>,
    timers: &'a mut BTreeSet<(Timestamp, K)>,
    stats: &'a mut WindowStats,
}

impl<K: Clone + Ord, G: Aggregate> Env<'_, K, G> {
    #[inline]
    fn end(&self, s: &Session<G::Acc>) -> Timestamp {
        s.last.saturating_add(self.gap)
    }

    /// Merges the record into the sessions of `state`, or reports it late.
    #[inline]
    fn apply(
        &mut self,
        state: &mut KeySessions<G::Acc>,
        key: &K,
        ts: Timestamp,
        input: &G::In,
        out: &mut Vec<WindowEvent<K, G::Acc, G::In>>,
    ) -> Verdict {
        let own_end = ts.saturating_add(self.gap);
        let sessions = &mut state.sessions;
        // Overlapping sessions form the range lo..hi (sessions are disjoint and sorted).
        let hi = sessions.partition_point(|s| s.start < own_end);
        let lo = sessions[..hi].partition_point(|s| s.last.saturating_add(self.gap) <= ts);
        let wm = self.watermark;
        let late = self.timing.is_complete(own_end, wm)
            || sessions[lo..hi].iter().any(|s| self.timing.is_complete(self.end(s), wm));
        if late
            && (self.timing.is_expired(own_end, wm)
                || sessions[lo..hi].iter().any(|s| self.timing.is_expired(self.end(s), wm)))
        {
            return Verdict::Late;
        }
        if !late && hi == lo + 1 {
            // The common case: an on-time record extends one open session.
            let s = &mut sessions[lo];
            s.start = s.start.min(ts);
            s.last = s.last.max(ts);
            self.aggregate.add(&mut s.acc, input);
            return Verdict::Applied;
        }
        let mut merged =
            Session { start: ts, last: ts, acc: G::Acc::default(), phase: Phase::Open, scheduled: Timestamp::MAX };
        self.aggregate.add(&mut merged.acc, input);
        let mut emitted: Option<G::Acc> = None;
        let had_parts = hi > lo;
        for part in sessions.drain(lo..hi) {
            merged.start = merged.start.min(part.start);
            merged.last = merged.last.max(part.last);
            merged.scheduled = merged.scheduled.min(part.scheduled);
            let was = match part.phase {
                Phase::Open => None,
                Phase::Fired => Some(part.acc.clone()),
                Phase::Reopened { previous } => Some(previous),
            };
            if let Some(was) = was {
                match &mut emitted {
                    Some(e) => self.aggregate.merge(e, &was),
                    None => emitted = Some(was),
                }
            }
            self.aggregate.merge(&mut merged.acc, &part.acc);
        }
        let end = self.end(&merged);
        if late && self.timing.is_complete(end, wm) {
            let previous = emitted.unwrap_or_default();
            self.stats.corrections += 1;
            out.push(WindowEvent::Correction {
                key: key.clone(),
                window: Window { start: merged.start, end },
                previous,
                current: merged.acc.clone(),
            });
            merged.phase = Phase::Fired;
        } else if let Some(previous) = emitted {
            merged.phase = Phase::Reopened { previous };
        }
        let at = due(&self.timing, self.gap, &merged);
        if !had_parts || merged.scheduled > at {
            merged.scheduled = at;
            self.timers.insert((at, key.clone()));
        }
        sessions.insert(lo, merged);
        Verdict::Applied
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
