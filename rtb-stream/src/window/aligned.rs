//! [`WindowedAggregate`]: keyed aggregation over aligned (tumbling or hopping) windows.
//!
//! State layout: one [`KeyedStore`] entry per key holding that key's live windows (open ones, and complete
//! ones kept for corrections), sorted by window. Two in-memory indexes, rebuilt when the operator is
//! created, map a window end to the keys with an open window ending there (`pending`) or with a complete
//! window kept for corrections (`retained`); the watermark pops them in order of end in `O(log n)`.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use smallvec::SmallVec;

use super::{
    read_meta, report_late, write_meta, Aggregate, LatePolicy, Meta, Timing, Window, WindowAssigner,
    WindowEvent, WindowStats,
};
use crate::error::Result;
use crate::state::{KeyedStore, StateScope, WriteBatch};
use crate::time::Timestamp;

/// One window of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Slot<A> {
    window: Window,
    acc: A,
    /// Whether its result was emitted (the window is complete and kept for corrections).
    fired: bool,
}

/// All live windows of one key, sorted by window; inline for the usual one or two (no pointer chase).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
struct KeyState<A> {
    #[serde(with = "super::inline_vec")]
    slots: SmallVec<[Slot<A>; 2]>,
    /// Flush epoch in which the entry was last marked changed (not persisted).
    #[serde(skip)]
    epoch: u64,
}

/// Keyed aggregation over tumbling or hopping windows with a grace period and a [`LatePolicy`].
///
/// See the [module docs](super) for the semantics. Events are appended to the `out` vector passed to
/// [`Self::process`] and [`Self::on_watermark`].
pub struct WindowedAggregate<K, G: Aggregate, W: WindowAssigner> {
    scope: StateScope,
    assigner: W,
    aggregate: G,
    late: LatePolicy,
    timing: Timing,
    store: KeyedStore<K, KeyState<G::Acc>>,
    pending: BTreeMap<Timestamp, Vec<K>>,
    retained: BTreeMap<Timestamp, Vec<K>>,
    watermark: Option<Timestamp>,
    stats: WindowStats,
    epoch: u64,
    scratch: SmallVec<[Window; 4]>,
}

impl<K, G, W> std::fmt::Debug for WindowedAggregate<K, G, W>
where
    G: Aggregate,
    W: WindowAssigner + std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedAggregate")
            .field("assigner", &self.assigner)
            .field("late", &self.late)
            .field("watermark", &self.watermark)
            .field("stats", &self.stats)
            .finish()
    }
}

/// What one record did to the windows of its key.
#[derive(Default)]
struct Applied {
    changed: bool,
    late: bool,
}

impl<K, G, W> WindowedAggregate<K, G, W>
where
    K: Hash + Eq + Clone + Ord + Serialize + DeserializeOwned + Send,
    G: Aggregate,
    G::In: Clone,
    W: WindowAssigner,
{
    /// Creates the operator `name` with its state in `scope.child(name)`, restoring committed windows,
    /// watermark and statistics. Fails with [`Error::Config`](crate::Error::Config) on invalid parameters
    /// (non-positive sizes, negative grace or lateness) and with a state error if the state cannot be read.
    pub fn new(
        scope: &StateScope,
        name: &str,
        assigner: W,
        aggregate: G,
        grace: Duration,
        late: LatePolicy,
    ) -> Result<Self> {
        assigner.validate()?;
        let timing = Timing::new(crate::span::ms(grace), &late)?;
        let scope = scope.child(name);
        let store: KeyedStore<K, KeyState<G::Acc>> = scope.keyed("windows")?;
        let meta = read_meta(&scope)?;
        let mut pending: BTreeMap<Timestamp, Vec<K>> = BTreeMap::new();
        let mut retained: BTreeMap<Timestamp, Vec<K>> = BTreeMap::new();
        for (key, state) in store.iter() {
            for slot in &state.slots {
                let index = if slot.fired { &mut retained } else { &mut pending };
                index.entry(slot.window.end).or_default().push(key.clone());
            }
        }
        tracing::debug!(operator = name, keys = store.len(), watermark = ?meta.watermark, "windows restored");
        Ok(Self {
            scope,
            assigner,
            aggregate,
            late,
            timing,
            store,
            pending,
            retained,
            watermark: meta.watermark,
            stats: meta.stats,
            epoch: 1,
            scratch: SmallVec::new(),
        })
    }

    /// Adds one record of `key` at event time `ts` to its windows. Late records are handled per window
    /// by the [`LatePolicy`]; corrections and late records are appended to `out` at once.
    pub fn process(
        &mut self,
        key: K,
        ts: Timestamp,
        input: &G::In,
        out: &mut Vec<WindowEvent<K, G::Acc, G::In>>,
    ) {
        let mut windows = std::mem::take(&mut self.scratch);
        windows.clear();
        self.assigner.assign(ts, &mut windows);
        let mut env = Env {
            aggregate: &self.aggregate,
            timing: self.timing,
            watermark: self.watermark,
            pending: &mut self.pending,
            retained: &mut self.retained,
            stats: &mut self.stats,
        };
        if let Some(state) = self.store.get_mut_untracked(&key) {
            let applied = env.apply(state, &key, &windows, input, out);
            let mark = applied.changed && state.epoch != self.epoch;
            if mark {
                state.epoch = self.epoch;
                self.store.mark_changed(&key);
            }
            if applied.late {
                report_late(&self.late, &mut self.stats, key, ts, input, out);
            }
        } else {
            let mut state = KeyState { slots: SmallVec::new(), epoch: self.epoch };
            let applied = env.apply(&mut state, &key, &windows, input, out);
            if applied.late {
                report_late(&self.late, &mut self.stats, key.clone(), ts, input, out);
            }
            if !state.slots.is_empty() {
                self.store.insert(key, state);
            }
        }
        self.scratch = windows;
    }

    /// Advances the watermark to `wm` (ignored unless it moves forward): emits [`WindowEvent::Final`] for
    /// every window that completes, ordered by window end, then key, and drops the state of windows that
    /// can no longer be corrected.
    pub fn on_watermark(&mut self, wm: Timestamp, out: &mut Vec<WindowEvent<K, G::Acc, G::In>>) {
        if self.watermark.is_some_and(|current| wm <= current) {
            return;
        }
        self.watermark = Some(wm);
        while let Some(entry) = self.pending.first_entry() {
            let end = *entry.key();
            if self.timing.complete_at(end) > wm {
                break;
            }
            let mut keys = entry.remove();
            keys.sort_unstable();
            keys.dedup();
            let keep = !self.timing.is_expired(end, Some(wm));
            for key in keys {
                self.fire_key(key, end, keep, out);
            }
        }
        while let Some(entry) = self.retained.first_entry() {
            let end = *entry.key();
            if self.timing.expired_at(end) > wm {
                break;
            }
            let mut keys = entry.remove();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                self.edit_key(&key, |slots| slots.retain(|s| !(s.fired && s.window.end == end)));
            }
        }
    }

    /// Emits the open windows of `key` ending at `end`; keeps them for corrections if `keep`.
    fn fire_key(
        &mut self,
        key: K,
        end: Timestamp,
        keep: bool,
        out: &mut Vec<WindowEvent<K, G::Acc, G::In>>,
    ) {
        let Some(state) = self.store.get_mut_untracked(&key) else { return };
        let mut fired = 0;
        let mut i = 0;
        while i < state.slots.len() {
            let slot = &mut state.slots[i];
            if slot.fired || slot.window.end != end {
                i += 1;
                continue;
            }
            fired += 1;
            if keep {
                slot.fired = true;
                out.push(WindowEvent::Final { key: key.clone(), window: slot.window, acc: slot.acc.clone() });
                i += 1;
            } else {
                let slot = state.slots.remove(i);
                out.push(WindowEvent::Final { key: key.clone(), window: slot.window, acc: slot.acc });
            }
        }
        if fired == 0 {
            return;
        }
        self.stats.fired += fired;
        if state.slots.is_empty() {
            self.store.remove(&key);
            return;
        }
        if state.epoch != self.epoch {
            state.epoch = self.epoch;
            self.store.mark_changed(&key);
        }
        if keep {
            self.retained.entry(end).or_default().push(key);
        }
    }

    /// Applies `edit` to the windows of `key`, marking it changed and removing it when no window is left.
    fn edit_key(&mut self, key: &K, edit: impl FnOnce(&mut SmallVec<[Slot<G::Acc>; 2]>)) {
        let Some(state) = self.store.get_mut_untracked(key) else { return };
        edit(&mut state.slots);
        if state.slots.is_empty() {
            self.store.remove(key);
        } else if state.epoch != self.epoch {
            state.epoch = self.epoch;
            self.store.mark_changed(key);
        }
    }

    /// Writes the changes since the last flush (windows, watermark, statistics) into `batch`; commit it
    /// atomically with the source offsets the changes came from.
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

    /// Number of keys with live window state.
    pub fn keys(&self) -> usize {
        self.store.len()
    }

    /// Number of windows whose result is not yet emitted, over all keys.
    pub fn open_windows(&self) -> usize {
        self.store.iter().map(|(_, s)| s.slots.iter().filter(|w| !w.fired).count()).sum()
    }
}

/// The parts of the operator a record needs besides its key's state (split borrows).
struct Env<'a, K, G: Aggregate> {
    aggregate: &'a G,
    timing: Timing,
    watermark: Option<Timestamp>,
    pending: &'a mut BTreeMap<Timestamp, Vec<K>>,
    retained: &'a mut BTreeMap<Timestamp, Vec<K>>,
    stats: &'a mut WindowStats,
}

impl<K: Clone, G: Aggregate> Env<'_, K, G> {
    /// Adds one record to each of its `windows` in `state`, judging lateness per window.
    #[inline]
    fn apply(
        &mut self,
        state: &mut KeyState<G::Acc>,
        key: &K,
        windows: &[Window],
        input: &G::In,
        out: &mut Vec<WindowEvent<K, G::Acc, G::In>>,
    ) -> Applied {
        let mut applied = Applied::default();
        for &window in windows {
            if !self.timing.is_complete(window.end, self.watermark) {
                match find(&state.slots, window) {
                    Ok(i) => self.aggregate.add(&mut state.slots[i].acc, input),
                    Err(i) => {
                        let mut acc = G::Acc::default();
                        self.aggregate.add(&mut acc, input);
                        state.slots.insert(i, Slot { window, acc, fired: false });
                        self.pending.entry(window.end).or_default().push(key.clone());
                    }
                }
                applied.changed = true;
            } else if self.timing.is_expired(window.end, self.watermark) {
                applied.late = true;
            } else {
                // Complete but still correctable (LatePolicy::Correct).
                let (previous, current) = match find(&state.slots, window) {
                    Ok(i) => {
                        let slot = &mut state.slots[i];
                        debug_assert!(slot.fired, "a complete window is always fired");
                        let previous = slot.acc.clone();
                        self.aggregate.add(&mut slot.acc, input);
                        (previous, slot.acc.clone())
                    }
                    Err(i) => {
                        // Nothing was emitted for this window: it had no record when it completed.
                        let mut acc = G::Acc::default();
                        self.aggregate.add(&mut acc, input);
                        state.slots.insert(i, Slot { window, acc: acc.clone(), fired: true });
                        self.retained.entry(window.end).or_default().push(key.clone());
                        (G::Acc::default(), acc)
                    }
                };
                self.stats.corrections += 1;
                out.push(WindowEvent::Correction { key: key.clone(), window, previous, current });
                applied.changed = true;
            }
        }
        applied
    }
}

/// Position of `window` in the sorted `slots`, or where to insert it. Searches from the back: records
/// mostly hit the newest windows.
#[inline]
fn find<A>(slots: &[Slot<A>], window: Window) -> std::result::Result<usize, usize> {
    for (i, slot) in slots.iter().enumerate().rev() {
        if slot.window == window {
            return Ok(i);
        }
        if slot.window < window {
            return Err(i + 1);
        }
    }
    Err(0)
}

#[cfg(test)]
#[path = "aligned_tests.rs"]
mod tests;
