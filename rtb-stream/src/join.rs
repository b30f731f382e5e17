//! Keyed interval joins: a left row `l` and a right row `r` of the same key match iff
//! `l.ts + lower <= r.ts <= l.ts + upper` (both ends inclusive).
//!
//! Two output styles ([`JoinEmit`]):
//! - **Pairs** — every matching pair is emitted exactly once, as soon as its second row arrives,
//!   whatever the arrival order. With [`JoinKind::LeftOuter`] a left row that closes without any pair
//!   is emitted as [`JoinEvent::Unmatched`].
//! - **OnClose** — one [`JoinEvent::Group`] per left row once the left row is *closed*, i.e. once the
//!   watermark reaches `l.ts + upper` and no on-time right row can match it any more; its rights are
//!   sorted by timestamp (ties in arrival order). With `LeftOuter` an empty group is emitted as
//!   [`JoinEvent::Unmatched`]; with `Inner` a left row without match produces nothing.
//!
//! ## Lateness
//! A watermark `wm` promises that no more rows with a timestamp `<= wm` are expected.
//! - A left row is **late** if it is already closed on arrival: `wm >= l.ts + upper`.
//! - A right row is **late** if every left row it could match is already closed:
//!   `wm >= r.ts - lower + upper`.
//!
//! Late rows are never joined and never dropped silently: they are emitted as
//! [`JoinEvent::LateLeft`] / [`JoinEvent::LateRight`] and counted in [`JoinStats`]. A right row that is
//! *not* late may still arrive after some left rows it could have matched were closed (when
//! `wm >= r.ts`); it joins every left row that is still open or arrives later, not the closed ones, and
//! is counted in [`JoinStats::partial_late_right`]. Put precisely, the join emits the pair `(l, r)` iff
//! both rows are on time, they match, and `l` was still open when `r` arrived.
//!
//! ## State
//! Per key, the buffered left and right rows live in one [`KeyedStore`] entry (two small time-sorted
//! vectors), so [`IntervalJoin::new`] restores them and [`IntervalJoin::flush_into`] writes what
//! changed; the watermark is stored beside them. Two in-memory due queues, rebuilt on open — the close
//! time of every buffered left row, and per key the expiry of its oldest right row — let
//! [`IntervalJoin::on_watermark`] visit only the keys that have something to close or clean up. When it
//! returns:
//! - every left row with `wm >= l.ts + upper` is closed and removed;
//! - every right row with `wm >= r.ts - lower + upper` is removed: no buffered left row and no future
//!   on-time left row can match it (it would be late if it arrived now).
//!
//! So the state holds only rows of the last `upper - lower` (plus the watermark's lag) of event time.
//!
//! Output of one `on_watermark` call is ordered by close time (`l.ts + upper`), then key, then left
//! arrival order; a restart from flushed state yields the same sequence as an uninterrupted run.
//! [`JoinStats`] count since the instance was opened and are not persisted.

use std::hash::Hash;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{KeyedStore, StateScope, WriteBatch};
use crate::time::Timestamp;

mod due;
#[cfg(test)]
mod tests;

use due::DueQueue;

/// A value with its event time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed<T> {
    /// Event time (ms since epoch).
    pub timestamp: Timestamp,
    /// The row.
    pub value: T,
}

/// Which left rows produce output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JoinKind {
    /// Only matches.
    Inner,
    /// Matches, and every left row without match (as [`JoinEvent::Unmatched`]).
    LeftOuter,
}

/// When matches are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JoinEmit {
    /// Each matching pair once, as soon as both rows are present ([`JoinEvent::Pair`]).
    Pairs,
    /// One [`JoinEvent::Group`] per left row once it is closed.
    OnClose,
}

/// The shape of an interval join.
///
/// `lower` and `upper` are signed *offsets* of event time, not spans (both may lie on the same side of the
/// left row: `[+5 min, +10 min]`), so they are milliseconds like [`Timestamp`]s; [`IntervalJoinSpec::within`]
/// builds the usual `[l.ts − before, l.ts + after]` from two spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntervalJoinSpec {
    /// Lower bound of `r.ts - l.ts` (inclusive, ms; may be negative).
    pub lower: i64,
    /// Upper bound of `r.ts - l.ts` (inclusive, ms; `>= lower`).
    pub upper: i64,
    /// Inner or left outer.
    pub kind: JoinKind,
    /// Eager pairs or one group per closed left row.
    pub emit: JoinEmit,
}

impl IntervalJoinSpec {
    /// Right rows from `before` before to `after` after the left row's time (both inclusive).
    pub fn within(before: std::time::Duration, after: std::time::Duration, kind: JoinKind, emit: JoinEmit) -> Self {
        Self { lower: crate::span::ms(before).saturating_neg(), upper: crate::span::ms(after), kind, emit }
    }

    /// Checks that `lower <= upper`.
    pub fn validate(&self) -> Result<()> {
        if self.lower > self.upper {
            return Err(Error::Config(format!(
                "interval join bounds are inverted: lower {} > upper {}",
                self.lower, self.upper
            )));
        }
        Ok(())
    }

    /// The watermark at which a left row at `ts` is closed: `ts + upper`.
    pub fn left_closes_at(&self, ts: Timestamp) -> Timestamp {
        ts.saturating_add(self.upper)
    }

    /// The watermark from which a right row at `ts` can match no on-time left row: `ts - lower + upper`.
    pub fn right_expires_at(&self, ts: Timestamp) -> Timestamp {
        ts.saturating_sub(self.lower).saturating_add(self.upper)
    }

    /// Whether a right row at `right_ts` matches a left row at `left_ts`.
    pub fn matches(&self, left_ts: Timestamp, right_ts: Timestamp) -> bool {
        left_ts.saturating_add(self.lower) <= right_ts && right_ts <= left_ts.saturating_add(self.upper)
    }
}

/// What an interval join emits.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinEvent<K, L, R> {
    /// Pairs mode: one match, emitted once, as soon as both rows are present.
    Pair {
        /// The join key.
        key: K,
        /// The left row.
        left: Timed<L>,
        /// The right row.
        right: Timed<R>,
    },
    /// OnClose mode: a closed left row with all its matches, sorted by timestamp.
    Group {
        /// The join key.
        key: K,
        /// The left row.
        left: Timed<L>,
        /// Its matching right rows (never empty).
        rights: Vec<Timed<R>>,
    },
    /// LeftOuter: a left row closed without any match.
    Unmatched {
        /// The join key.
        key: K,
        /// The left row.
        left: Timed<L>,
    },
    /// A left row that arrived after it was closed; it was not joined.
    LateLeft {
        /// The join key.
        key: K,
        /// The left row.
        left: Timed<L>,
    },
    /// A right row that arrived after every left row it could match was closed; it was not joined.
    LateRight {
        /// The join key.
        key: K,
        /// The right row.
        right: Timed<R>,
    },
}

impl<K, L, R> JoinEvent<K, L, R> {
    /// The join key of the event.
    pub fn key(&self) -> &K {
        match self {
            JoinEvent::Pair { key, .. }
            | JoinEvent::Group { key, .. }
            | JoinEvent::Unmatched { key, .. }
            | JoinEvent::LateLeft { key, .. }
            | JoinEvent::LateRight { key, .. } => key,
        }
    }
}

/// Counters of an [`IntervalJoin`] since it was opened (not persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// [`JoinEvent::Pair`]s emitted.
    pub pairs: u64,
    /// [`JoinEvent::Group`]s emitted.
    pub groups: u64,
    /// [`JoinEvent::Unmatched`] emitted.
    pub unmatched: u64,
    /// Late left rows ([`JoinEvent::LateLeft`]).
    pub late_left: u64,
    /// Late right rows ([`JoinEvent::LateRight`]).
    pub late_right: u64,
    /// On-time right rows that arrived behind the watermark (`wm >= r.ts`), so left rows they could have
    /// matched may already have been closed without them.
    pub partial_late_right: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeftRow<L> {
    row: Timed<L>,
    /// Pairs mode: whether a pair was emitted for this row (decides `Unmatched` on close).
    matched: bool,
}

/// The buffered rows of one key, each side sorted by timestamp (ties in arrival order).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRows<L, R> {
    lefts: Vec<LeftRow<L>>,
    rights: Vec<Timed<R>>,
}

impl<L, R> Default for KeyRows<L, R> {
    fn default() -> Self {
        Self { lefts: Vec::new(), rights: Vec::new() }
    }
}

impl<L, R> KeyRows<L, R> {
    fn first_close(&self, spec: &IntervalJoinSpec) -> Option<Timestamp> {
        self.lefts.first().map(|l| spec.left_closes_at(l.row.timestamp))
    }
    fn first_expiry(&self, spec: &IntervalJoinSpec) -> Option<Timestamp> {
        self.rights.first().map(|r| spec.right_expires_at(r.timestamp))
    }
    fn is_empty(&self) -> bool {
        self.lefts.is_empty() && self.rights.is_empty()
    }
}

/// The index range of the rows of a time-sorted slice with `lo <= ts <= hi`.
fn between<T>(
    rows: &[T],
    ts: impl Fn(&T) -> Timestamp,
    lo: Timestamp,
    hi: Timestamp,
) -> std::ops::Range<usize> {
    let start = rows.partition_point(|r| ts(r) < lo);
    let end = rows.partition_point(|r| ts(r) <= hi);
    start..end.max(start)
}

fn right_ts<R>(r: &Timed<R>) -> Timestamp {
    r.timestamp
}

fn left_ts<L>(l: &LeftRow<L>) -> Timestamp {
    l.row.timestamp
}

/// Bucket width of the due queues: 1/64 of the join interval, between 1 ms and ~1 s.
fn due_width(spec: &IntervalJoinSpec) -> i64 {
    (spec.upper.saturating_sub(spec.lower) / 64).clamp(1, 1024)
}

const ROWS: &str = "rows";
const WATERMARK: &str = "watermark";

/// A keyed interval join with persistent state; see the [module docs](self) for the exact semantics.
///
/// ```
/// use rtb_stream::join::{IntervalJoin, IntervalJoinSpec, JoinEmit, JoinEvent, JoinKind};
/// use rtb_stream::state::StateScope;
///
/// // conversions (left) matched with the clicks (right) of the 10 s before them
/// let spec =
///     IntervalJoinSpec { lower: -10_000, upper: 0, kind: JoinKind::LeftOuter, emit: JoinEmit::OnClose };
/// let mut join = IntervalJoin::<String, u64, u64>::new(&StateScope::in_memory(), "conv", spec)?;
/// let mut out = Vec::new();
/// join.process_right("u1".into(), 1_000, 7, &mut out); // click 7
/// join.process_left("u1".into(), 5_000, 1, &mut out); // conversion 1: matches click 7
/// join.process_left("u2".into(), 5_000, 2, &mut out); // conversion 2: no click
/// join.on_watermark(5_000, &mut out);
/// assert!(matches!(&out[..], [JoinEvent::Group { rights, .. }, JoinEvent::Unmatched { .. }]
///     if rights.len() == 1));
/// assert_eq!(join.buffered(), (0, 1)); // the click may still match conversions up to 11 000
/// # Ok::<(), rtb_stream::Error>(())
/// ```
#[derive(Debug)]
pub struct IntervalJoin<K, L, R> {
    spec: IntervalJoinSpec,
    scope: StateScope,
    rows: KeyedStore<K, KeyRows<L, R>>,
    /// One `(close time, key)` entry per buffered left row (same-key duplicates are skipped when popped).
    left_due: DueQueue<K>,
    /// `(expiry of the key's oldest right row, key)` for every key with right rows, plus stale entries left
    /// behind when an out-of-order right row moved that expiry earlier (skipped when popped).
    right_due: DueQueue<K>,
    watermark: Option<Timestamp>,
    watermark_dirty: bool,
    buffered_left: usize,
    buffered_right: usize,
    stats: JoinStats,
}

impl<K, L, R> IntervalJoin<K, L, R>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned,
    L: Clone + Serialize + DeserializeOwned,
    R: Clone + Serialize + DeserializeOwned,
{
    /// Opens the join `name` in `scope`, restoring its buffered rows and watermark.
    ///
    /// Fails with [`Error::Config`] when `spec.lower > spec.upper`, or with a state error when the
    /// stored rows cannot be read.
    pub fn new(scope: &StateScope, name: &str, spec: IntervalJoinSpec) -> Result<Self> {
        spec.validate()?;
        let scope = scope.child(name);
        let rows: KeyedStore<K, KeyRows<L, R>> = scope.keyed(ROWS)?;
        let watermark = scope.read_value::<Option<Timestamp>>(WATERMARK)?.flatten();
        let (mut left_due, mut right_due) =
            (DueQueue::new(due_width(&spec)), DueQueue::new(due_width(&spec)));
        let (mut buffered_left, mut buffered_right) = (0, 0);
        for (key, r) in rows.iter() {
            buffered_left += r.lefts.len();
            buffered_right += r.rights.len();
            for l in &r.lefts {
                left_due.push(spec.left_closes_at(l.row.timestamp), key.clone());
            }
            if let Some(e) = r.first_expiry(&spec) {
                right_due.push(e, key.clone());
            }
        }
        tracing::debug!(
            join = name,
            keys = rows.len(),
            buffered_left,
            buffered_right,
            ?watermark,
            "interval join opened"
        );
        Ok(Self {
            spec,
            scope,
            rows,
            left_due,
            right_due,
            watermark,
            watermark_dirty: false,
            buffered_left,
            buffered_right,
            stats: JoinStats::default(),
        })
    }

    /// The join's shape.
    pub fn spec(&self) -> &IntervalJoinSpec {
        &self.spec
    }

    /// The highest watermark seen (restored on open), if any.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// Counters since this instance was opened.
    pub fn stats(&self) -> &JoinStats {
        &self.stats
    }

    /// Buffered rows: `(left rows, right rows)`.
    pub fn buffered(&self) -> (usize, usize) {
        (self.buffered_left, self.buffered_right)
    }

    /// Number of keys with buffered rows.
    pub fn buffered_keys(&self) -> usize {
        self.rows.len()
    }

    /// Entries in the in-memory due queues, stale ones included: `(left, right)`.
    pub fn index_len(&self) -> (usize, usize) {
        (self.left_due.len(), self.right_due.len())
    }

    /// The rows of `key`, created if absent (cloning the key only then). `None` is unreachable.
    fn rows_of<'a>(rows: &'a mut KeyedStore<K, KeyRows<L, R>>, key: &K) -> Option<&'a mut KeyRows<L, R>> {
        if !rows.contains_key(key) {
            rows.insert(key.clone(), KeyRows::default());
        }
        rows.get_mut(key)
    }

    fn is_late(&self, closes_at: Timestamp) -> bool {
        self.watermark.is_some_and(|wm| wm >= closes_at)
    }

    /// Feeds one left row. In Pairs mode its pairs with buffered right rows are emitted at once.
    pub fn process_left(&mut self, key: K, ts: Timestamp, value: L, out: &mut Vec<JoinEvent<K, L, R>>) {
        let row = Timed { timestamp: ts, value };
        if self.is_late(self.spec.left_closes_at(ts)) {
            self.stats.late_left += 1;
            tracing::trace!(ts, watermark = ?self.watermark, "late left row");
            out.push(JoinEvent::LateLeft { key, left: row });
            return;
        }
        let spec = self.spec;
        let Some(rows) = Self::rows_of(&mut self.rows, &key) else { return };
        let mut matched = false;
        if spec.emit == JoinEmit::Pairs {
            let range =
                between(&rows.rights, right_ts, ts.saturating_add(spec.lower), ts.saturating_add(spec.upper));
            matched = !range.is_empty();
            self.stats.pairs += range.len() as u64;
            for right in &rows.rights[range] {
                out.push(JoinEvent::Pair { key: key.clone(), left: row.clone(), right: right.clone() });
            }
        }
        let pos = rows.lefts.partition_point(|l| l.row.timestamp <= ts);
        rows.lefts.insert(pos, LeftRow { row, matched });
        self.buffered_left += 1;
        self.left_due.push(spec.left_closes_at(ts), key);
    }

    /// Feeds one right row. In Pairs mode its pairs with buffered (open) left rows are emitted at once.
    pub fn process_right(&mut self, key: K, ts: Timestamp, value: R, out: &mut Vec<JoinEvent<K, L, R>>) {
        let row = Timed { timestamp: ts, value };
        let expires = self.spec.right_expires_at(ts);
        if self.is_late(expires) {
            self.stats.late_right += 1;
            tracing::trace!(ts, watermark = ?self.watermark, "late right row");
            out.push(JoinEvent::LateRight { key, right: row });
            return;
        }
        if self.is_late(ts) {
            self.stats.partial_late_right += 1;
        }
        let spec = self.spec;
        let Some(rows) = Self::rows_of(&mut self.rows, &key) else { return };
        if spec.emit == JoinEmit::Pairs {
            let range =
                between(&rows.lefts, left_ts, ts.saturating_sub(spec.upper), ts.saturating_sub(spec.lower));
            self.stats.pairs += range.len() as u64;
            for left in &mut rows.lefts[range] {
                left.matched = true;
                out.push(JoinEvent::Pair { key: key.clone(), left: left.row.clone(), right: row.clone() });
            }
        }
        let old_first = rows.first_expiry(&spec);
        let pos = rows.rights.partition_point(|r| r.timestamp <= ts);
        rows.rights.insert(pos, row);
        self.buffered_right += 1;
        if old_first.is_none_or(|e| expires < e) {
            self.right_due.push(expires, key);
        }
    }

    /// Advances the watermark: closes every left row with `wm >= l.ts + upper` (emitting groups or unmatched
    /// rows as the spec says) and removes the rows nothing can match any more. A watermark at or below the
    /// current one does nothing.
    pub fn on_watermark(&mut self, wm: Timestamp, out: &mut Vec<JoinEvent<K, L, R>>) {
        if self.watermark.is_some_and(|cur| wm <= cur) {
            return;
        }
        self.watermark = Some(wm);
        self.watermark_dirty = true;
        // Due entries are handled in time order, lefts before rights at equal times, so left rows close in
        // (close time, key) order and a right row is never dropped before a left row that needs it closes.
        loop {
            match (self.left_due.due(wm), self.right_due.due(wm)) {
                (None, None) => break,
                (Some(l), r) if r.is_none_or(|r| l <= r) => {
                    let Some((t, key)) = self.left_due.pop() else { break };
                    self.close_lefts(key, t, out);
                }
                _ => {
                    let Some((t, key)) = self.right_due.pop() else { break };
                    self.expire_rights(key, t, wm);
                }
            }
        }
    }

    /// Closes `key`'s left rows due at `t` (none if the entry is stale).
    fn close_lefts(&mut self, key: K, t: Timestamp, out: &mut Vec<JoinEvent<K, L, R>>) {
        let spec = self.spec;
        // (a stale entry marks the key dirty for nothing; rare and harmless)
        let Some(rows) = self.rows.get_mut(&key) else { return };
        if rows.first_close(&spec) != Some(t) {
            return;
        }
        let KeyRows { lefts, rights } = rows;
        let closing = lefts.partition_point(|l| spec.left_closes_at(l.row.timestamp) <= t);
        for left in lefts.drain(..closing) {
            let ts = left.row.timestamp;
            match spec.emit {
                JoinEmit::OnClose => {
                    let range = between(
                        rights,
                        right_ts,
                        ts.saturating_add(spec.lower),
                        ts.saturating_add(spec.upper),
                    );
                    if !range.is_empty() {
                        self.stats.groups += 1;
                        let rights = rights[range].to_vec();
                        out.push(JoinEvent::Group { key: key.clone(), left: left.row, rights });
                    } else if spec.kind == JoinKind::LeftOuter {
                        self.stats.unmatched += 1;
                        out.push(JoinEvent::Unmatched { key: key.clone(), left: left.row });
                    }
                }
                JoinEmit::Pairs => {
                    if !left.matched && spec.kind == JoinKind::LeftOuter {
                        self.stats.unmatched += 1;
                        out.push(JoinEvent::Unmatched { key: key.clone(), left: left.row });
                    }
                }
            }
        }
        self.buffered_left -= closing;
        if rows.is_empty() {
            self.rows.remove(&key);
        }
    }

    /// Drops `key`'s right rows that no open or future on-time left row can match (none if the entry is
    /// stale), and queues the key again at its next right expiry.
    fn expire_rights(&mut self, key: K, t: Timestamp, wm: Timestamp) {
        let spec = self.spec;
        let Some(rows) = self.rows.get_mut(&key) else { return };
        if rows.first_expiry(&spec) != Some(t) {
            return;
        }
        // A right row is needed while its expiry is >= the first open left row's close (lefts due up to `t`
        // are closed already) or > wm (a future on-time left row closes after wm).
        let keep_above = match rows.first_close(&spec) {
            Some(c) => wm.min(c.saturating_sub(1)),
            None => wm,
        };
        let dropped = rows.rights.partition_point(|r| spec.right_expires_at(r.timestamp) <= keep_above);
        rows.rights.drain(..dropped);
        self.buffered_right -= dropped;
        match rows.first_expiry(&spec) {
            Some(next) => self.right_due.push(next, key),
            None if rows.lefts.is_empty() => {
                self.rows.remove(&key);
            }
            None => {}
        }
    }

    /// Writes the rows and watermark changed since the last flush into `batch`.
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        self.rows.flush_into(batch)?;
        if self.watermark_dirty {
            self.scope.write_value(WATERMARK, &self.watermark, batch)?;
            self.watermark_dirty = false;
        }
        Ok(())
    }
}
