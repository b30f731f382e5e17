//! Event-time windows: tumbling, hopping and session windows with grace and late-record policies.
//!
//! # Model
//! A window `[start, end)` collects the records whose event time falls inside it. A record exactly at `end`
//! belongs to the *next* window. With a grace period `g`, a window is **complete** once the operator's
//! watermark satisfies `watermark >= end - 1 + g`; its result is then emitted once as
//! [`WindowEvent::Final`]. Completion happens in [`WindowedAggregate::on_watermark`] /
//! [`SessionWindows::on_watermark`]; one call emits its results ordered by window end, then key.
//!
//! A record is **late** for a window when that window is already complete when the record arrives. What
//! happens to it is chosen by [`LatePolicy`]:
//! - [`LatePolicy::Drop`]: counted in [`WindowStats::late_dropped`], otherwise ignored;
//! - [`LatePolicy::SideOutput`]: emitted as [`WindowEvent::Late`];
//! - [`LatePolicy::Correct`]: a complete window keeps its state until
//!   `watermark >= end - 1 + g + max_lateness`; a late record for such a window updates it and emits
//!   [`WindowEvent::Correction`] at once. Records later than that are emitted as [`WindowEvent::Late`], never
//!   silently lost.
//!
//! A record that belongs to several windows (hopping) is judged per window: it may be added on time to
//! one, correct another and be too late for a third. Such a record is reported late (counted or emitted as
//! [`WindowEvent::Late`]) **once**, if at least one of its windows could not take it.
//!
//! Sessions ([`SessionWindows`]) are `[first_ts, last_ts + gap)`: a record at `ts` forms the session
//! `[ts, ts + gap)` and merges with every session it overlaps; see the [`session`] module for how late
//! records that merge into already emitted sessions are reported.
//!
//! # State
//! Operators keep their windows in [`KeyedStore`](crate::state::KeyedStore)s of a child scope named after
//! the operator, restored when the operator is created. `flush_into` writes the changes since the last
//! flush together with the watermark and the statistics, so an operator recreated from committed state
//! resumes exactly where it was.

mod aligned;
pub mod session;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::span;
use crate::state::{StateScope, WriteBatch};
use crate::time::Timestamp;

pub use aligned::WindowedAggregate;
pub use session::SessionWindows;

/// A half-open interval of event time `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    /// First timestamp inside the window.
    pub start: Timestamp,
    /// First timestamp after the window.
    pub end: Timestamp,
}

impl Window {
    /// The window `[start, end)`.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Self { start, end }
    }

    /// Whether `ts` lies in `[start, end)`.
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.start <= ts && ts < self.end
    }
}

/// Maps a record's timestamp to the windows it belongs to.
pub trait WindowAssigner: Send + Sync + 'static {
    /// Appends the windows containing `ts` to `out`, in ascending order of start.
    fn assign(&self, ts: Timestamp, out: &mut SmallVec<[Window; 4]>);

    /// Checks the assigner's parameters; operators call it when they are created.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// Fixed-size, non-overlapping windows `[offset + n·size, offset + (n+1)·size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tumbling {
    size: i64,
    offset: i64,
}

impl Tumbling {
    /// Windows of `size` aligned to the epoch (whole milliseconds). `size` must be at least 1 ms (checked by
    /// [`WindowAssigner::validate`] when an operator is created).
    pub fn of(size: Duration) -> Self {
        Self { size: span::ms(size), offset: 0 }
    }

    /// Shifts window boundaries by `offset` (e.g. to align daily windows to a time zone).
    pub fn with_offset(self, offset: Duration) -> Self {
        Self { offset: span::ms(offset), ..self }
    }

    /// Window size.
    pub fn size(&self) -> Duration {
        span::from_ms(self.size)
    }

    /// Offset of the boundaries.
    pub fn offset(&self) -> Duration {
        span::from_ms(self.offset)
    }
}

impl WindowAssigner for Tumbling {
    #[inline]
    fn assign(&self, ts: Timestamp, out: &mut SmallVec<[Window; 4]>) {
        let size = self.size.max(1);
        let start = ts.saturating_sub(ts.wrapping_sub(self.offset).rem_euclid(size));
        out.push(Window { start, end: start.saturating_add(size) });
    }

    fn validate(&self) -> Result<()> {
        if self.size <= 0 {
            return Err(Error::Config(format!("tumbling window size must be positive, got {} ms", self.size)));
        }
        Ok(())
    }
}

/// Fixed-size windows of `size` starting every `advance` (overlapping when `advance < size`): a record
/// belongs to `ceil(size / advance)` windows (fewer when `size` is not a multiple of `advance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hopping {
    size: i64,
    advance: i64,
    offset: i64,
}

impl Hopping {
    /// Windows of `size` starting every `advance` (whole milliseconds); requires `0 < advance <= size`
    /// (checked by [`WindowAssigner::validate`] when an operator is created).
    pub fn of(size: Duration, advance: Duration) -> Self {
        Self { size: span::ms(size), advance: span::ms(advance), offset: 0 }
    }

    /// Shifts window starts by `offset`.
    pub fn with_offset(self, offset: Duration) -> Self {
        Self { offset: span::ms(offset), ..self }
    }

    /// Window size.
    pub fn size(&self) -> Duration {
        span::from_ms(self.size)
    }

    /// Distance between consecutive window starts.
    pub fn advance(&self) -> Duration {
        span::from_ms(self.advance)
    }
}

impl WindowAssigner for Hopping {
    #[inline]
    fn assign(&self, ts: Timestamp, out: &mut SmallVec<[Window; 4]>) {
        let advance = self.advance.max(1);
        let size = self.size.max(advance);
        let last_start = ts.saturating_sub(ts.wrapping_sub(self.offset).rem_euclid(advance));
        // Earliest start s with s + size > ts, on the advance grid.
        let span = (size - 1) / advance * advance;
        let mut start = last_start.saturating_sub(span);
        while start <= last_start {
            let end = start.saturating_add(size);
            if end > ts {
                out.push(Window { start, end });
            }
            match start.checked_add(advance) {
                Some(next) => start = next,
                None => break,
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if self.advance <= 0 || self.size < self.advance {
            return Err(Error::Config(format!(
                "hopping windows need 0 < advance <= size, got size {} ms, advance {} ms",
                self.size, self.advance
            )));
        }
        Ok(())
    }
}

/// An incremental aggregation over the records of a window.
///
/// `add` and `merge` should be insensitive to order (records arrive out of order, and session windows
/// merge partial results in any grouping); `merge` must agree with `add`: merging the accumulators of two
/// record sets equals adding all records to one.
pub trait Aggregate: Send + 'static {
    /// Input of one record.
    type In;
    /// The running result; `Default` is the result of an empty window.
    type Acc: Clone
        + Default
        + PartialEq
        + Serialize
        + serde::de::DeserializeOwned
        + Send
        + std::fmt::Debug;
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, input: &Self::In);
    /// Merges `other` into `into` (session windows joined by a bridging record).
    fn merge(&self, into: &mut Self::Acc, other: &Self::Acc);
}

/// Counts records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count;

impl Aggregate for Count {
    type In = ();
    type Acc = u64;
    #[inline]
    fn add(&self, acc: &mut u64, _input: &()) {
        *acc += 1;
    }
    #[inline]
    fn merge(&self, into: &mut u64, other: &u64) {
        *into += *other;
    }
}

/// Sums `i64` inputs (wrapping on overflow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum;

impl Aggregate for Sum {
    type In = i64;
    type Acc = i64;
    #[inline]
    fn add(&self, acc: &mut i64, input: &i64) {
        *acc = acc.wrapping_add(*input);
    }
    #[inline]
    fn merge(&self, into: &mut i64, other: &i64) {
        *into = into.wrapping_add(*other);
    }
}

/// What to do with a record whose window is already complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatePolicy {
    /// Count it in [`WindowStats::late_dropped`] and ignore it.
    Drop,
    /// Emit it as [`WindowEvent::Late`].
    SideOutput,
    /// Keep complete windows for `max_lateness` more of watermark; late records update them and emit
    /// [`WindowEvent::Correction`]. Records later than that are emitted as [`WindowEvent::Late`].
    Correct {
        /// How long (in watermark time after completion) a complete window can still be corrected.
        #[serde(with = "crate::span::serde_ms")]
        max_lateness: Duration,
    },
}

impl LatePolicy {
    /// Watermark ms a complete window is kept for corrections (0 unless `Correct`).
    fn lateness(&self) -> i64 {
        match *self {
            LatePolicy::Correct { max_lateness } => span::ms(max_lateness),
            _ => 0,
        }
    }
}

/// Output of a window operator.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowEvent<K, A, I> {
    /// The first result of a window, emitted once when it completes.
    Final {
        /// The key.
        key: K,
        /// The window.
        window: Window,
        /// The aggregate over the window's records.
        acc: A,
    },
    /// A late record changed a window whose result was already emitted (only with
    /// [`LatePolicy::Correct`]). `previous` is the result emitted before for this window (`A::default()` when
    /// the window had no record when it completed, so nothing was emitted for it), `current` replaces it.
    /// For sessions, see the [`session`] module: `window` may be a merge of several emitted sessions.
    Correction {
        /// The key.
        key: K,
        /// The window (its bounds after the change, for sessions).
        window: Window,
        /// The result emitted before.
        previous: A,
        /// The result now.
        current: A,
    },
    /// A late record that was not applied to at least one of its windows: [`LatePolicy::SideOutput`], or
    /// beyond [`LatePolicy::Correct`]'s `max_lateness`. Emitted once per record.
    Late {
        /// The key.
        key: K,
        /// The record's event time.
        timestamp: Timestamp,
        /// The record's input.
        input: I,
    },
}

/// Counters of a window operator (restored with its state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Windows completed and emitted as [`WindowEvent::Final`].
    pub fired: u64,
    /// Late records ignored ([`LatePolicy::Drop`]).
    pub late_dropped: u64,
    /// Late records emitted as [`WindowEvent::Late`] (side output, or beyond `max_lateness`).
    pub late_side_output: u64,
    /// [`WindowEvent::Correction`]s emitted.
    pub corrections: u64,
}

/// The time arithmetic shared by the operators: when a window with a given end completes and when its
/// state may be dropped.
#[derive(Clone, Copy, Debug)]
struct Timing {
    grace: i64,
    lateness: i64,
}

impl Timing {
    fn new(grace: i64, late: &LatePolicy) -> Result<Self> {
        if grace < 0 {
            return Err(Error::Config(format!("grace must not be negative, got {grace} ms")));
        }
        Ok(Self { grace, lateness: late.lateness() })
    }

    /// The watermark at which a window ending at `end` completes: `end - 1 + grace`.
    #[inline]
    fn complete_at(&self, end: Timestamp) -> Timestamp {
        end.saturating_sub(1).saturating_add(self.grace)
    }

    /// The watermark from which a window ending at `end` can no longer be corrected.
    #[inline]
    fn expired_at(&self, end: Timestamp) -> Timestamp {
        self.complete_at(end).saturating_add(self.lateness)
    }

    #[inline]
    fn is_complete(&self, end: Timestamp, wm: Option<Timestamp>) -> bool {
        matches!(wm, Some(w) if self.complete_at(end) <= w)
    }

    #[inline]
    fn is_expired(&self, end: Timestamp, wm: Option<Timestamp>) -> bool {
        matches!(wm, Some(w) if self.expired_at(end) <= w)
    }
}

/// The operator-wide values committed next to the windows.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Meta {
    watermark: Option<Timestamp>,
    stats: WindowStats,
}

const META: &str = "meta";

fn read_meta(scope: &StateScope) -> Result<Meta> {
    Ok(scope.read_value::<Meta>(META)?.unwrap_or_default())
}

fn write_meta(scope: &StateScope, meta: &Meta, batch: &mut WriteBatch) -> Result<()> {
    scope.write_value(META, meta, batch)
}

/// Serde for the inline per-key vectors (`SmallVec`), encoded as a plain sequence like a `Vec`.
mod inline_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use smallvec::{Array, SmallVec};

    pub(super) fn serialize<A, S>(v: &SmallVec<A>, s: S) -> Result<S::Ok, S::Error>
    where
        A: Array,
        A::Item: Serialize,
        S: Serializer,
    {
        s.collect_seq(v.iter())
    }

    pub(super) fn deserialize<'de, A, D>(d: D) -> Result<SmallVec<A>, D::Error>
    where
        A: Array,
        A::Item: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Vec::<A::Item>::deserialize(d).map(SmallVec::from_vec)
    }
}

/// Records a late record under `policy` (once per record): counts it, or emits it as `Late`.
fn report_late<K, A, I: Clone>(
    policy: &LatePolicy,
    stats: &mut WindowStats,
    key: K,
    timestamp: Timestamp,
    input: &I,
    out: &mut Vec<WindowEvent<K, A, I>>,
) {
    match policy {
        LatePolicy::Drop => stats.late_dropped += 1,
        LatePolicy::SideOutput | LatePolicy::Correct { .. } => {
            stats.late_side_output += 1;
            out.push(WindowEvent::Late { key, timestamp, input: input.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn windows(a: &impl WindowAssigner, ts: Timestamp) -> Vec<Window> {
        let mut out = SmallVec::new();
        a.assign(ts, &mut out);
        out.into_vec()
    }

    #[test]
    fn tumbling_record_exactly_at_end_goes_to_next_window() {
        let t = Tumbling::of(ms(60_000));
        assert_eq!(windows(&t, 59_999), vec![Window::new(0, 60_000)]);
        assert_eq!(windows(&t, 60_000), vec![Window::new(60_000, 120_000)]);
        assert_eq!(windows(&t, 0), vec![Window::new(0, 60_000)]);
    }

    #[test]
    fn tumbling_negative_timestamps_and_offset() {
        let t = Tumbling::of(ms(10));
        assert_eq!(windows(&t, -1), vec![Window::new(-10, 0)]);
        assert_eq!(windows(&t, -10), vec![Window::new(-10, 0)]);
        let o = Tumbling::of(ms(10)).with_offset(ms(3));
        assert_eq!(windows(&o, 3), vec![Window::new(3, 13)]);
        assert_eq!(windows(&o, 2), vec![Window::new(-7, 3)]);
    }

    #[test]
    fn hopping_overlap_windows_in_start_order() {
        let h = Hopping::of(ms(300), ms(100));
        assert_eq!(windows(&h, 250), vec![Window::new(0, 300), Window::new(100, 400), Window::new(200, 500)]);
        // Exactly at a boundary: the window ending there is excluded, the one starting there included.
        assert_eq!(windows(&h, 300), vec![Window::new(100, 400), Window::new(200, 500), Window::new(300, 600)]);
    }

    #[test]
    fn hopping_size_not_multiple_of_advance() {
        let h = Hopping::of(ms(250), ms(100));
        assert_eq!(windows(&h, 240), vec![Window::new(0, 250), Window::new(100, 350), Window::new(200, 450)]);
        assert_eq!(windows(&h, 260), vec![Window::new(100, 350), Window::new(200, 450)]);
        for ts in -1_000..1_000 {
            let ws = windows(&h, ts);
            assert!(ws.iter().all(|w| w.contains(ts)), "ts {ts}: {ws:?}");
            assert!(ws.windows(2).all(|p| p[0].start + 100 == p[1].start));
        }
    }

    #[test]
    fn invalid_parameters_are_config_errors() {
        assert!(Tumbling::of(Duration::ZERO).validate().is_err());
        assert!(Tumbling::of(Duration::from_micros(999)).validate().is_err(), "less than a millisecond");
        assert!(Hopping::of(ms(100), Duration::ZERO).validate().is_err());
        assert!(Hopping::of(ms(100), ms(200)).validate().is_err());
        assert!(Hopping::of(ms(100), ms(100)).validate().is_ok());
        assert!(Timing::new(-1, &LatePolicy::Drop).is_err());
        // A span cannot be negative any more (Duration); a huge one saturates instead of overflowing.
        let t = Timing::new(0, &LatePolicy::Correct { max_lateness: Duration::MAX }).expect("timing");
        assert_eq!(t.lateness, i64::MAX);
        assert!(!t.is_expired(100, Some(i64::MAX - 1)));
    }

    #[test]
    fn operators_are_send_for_the_runtime() {
        fn send<T: Send>() {}
        send::<WindowedAggregate<String, Count, Tumbling>>();
        send::<WindowedAggregate<u64, Sum, Hopping>>();
        send::<SessionWindows<String, Count>>();
    }

    #[test]
    fn completion_is_end_minus_one_plus_grace() {
        let t = Timing::new(10, &LatePolicy::Correct { max_lateness: ms(5) }).expect("timing");
        assert!(!t.is_complete(100, None));
        assert!(!t.is_complete(100, Some(108)));
        assert!(t.is_complete(100, Some(109)));
        assert!(!t.is_expired(100, Some(113)));
        assert!(t.is_expired(100, Some(114)));
        assert!(!t.is_complete(i64::MAX, Some(i64::MAX - 1)));
        assert!(t.is_complete(i64::MAX, Some(i64::MAX)));
    }
}
