//! Model tests of the window operators: random keyed input with out-of-order and late timestamps and a
//! random watermark schedule, checked against a naive recomputation over the whole input.
//!
//! - Aligned windows with `Correct { max_lateness: large }`: the last value emitted for every (key, window)
//!   (its `Final`, then its `Correction`s) equals the aggregate over all records of the window; no window
//!   is emitted `Final` twice and every `Correction` names the value emitted before.
//! - Aligned windows with `Drop` / `SideOutput`: `Final`s equal the aggregates over exactly the records
//!   that were not late for that window on arrival; the late records (counted, or emitted `Late`) are
//!   exactly those late for at least one of their windows.
//! - Sessions, the same two properties (sessionization of all records, or of the records not late).
//!
//! Every property also commits, restarts from committed state and crashes (reopens from the last commit
//! and replays the input since) at random points, and checks that the effective output is identical to
//! an uninterrupted run.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::window::{
    Hopping, LatePolicy, SessionWindows, Sum, Tumbling, Window, WindowAssigner, WindowEvent, WindowedAggregate,
};
use rtb_stream::Timestamp;

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    rtb_stream::span::from_ms(v)
}

type Ev = WindowEvent<u8, i64, i64>;

#[derive(Clone, Debug)]
enum Op {
    Record { key: u8, ts: Timestamp, value: i64 },
    Watermark(Timestamp),
    /// Flush and commit the state; keep going with the same operator.
    Commit,
    /// Commit, drop the operator and reopen it from the committed state.
    Restart,
    /// Drop the operator without committing, reopen it from the last commit and replay the input since.
    Crash,
}

/// Records mostly in ascending time with disorder (`3 ms × position` minus up to 80 ms), some at random
/// times in `0..400`; watermarks that either trail the largest timestamp seen by a random lag (bounded
/// out-of-orderness: mostly on time, sometimes late) or are absolute (jumping ahead: many records late).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    #[derive(Clone, Debug)]
    enum Raw {
        Op(Op),
        Record { key: u8, disorder: i64, value: i64 },
        Lag(i64),
    }
    let raw = prop_oneof![
        6 => (0u8..4, 0i64..80, 1i64..100).prop_map(|(key, disorder, value)| Raw::Record { key, disorder, value }),
        2 => (0u8..4, 0i64..400, 1i64..100).prop_map(|(key, ts, value)| Raw::Op(Op::Record { key, ts, value })),
        2 => (0i64..60).prop_map(Raw::Lag),
        1 => (0i64..450).prop_map(|w| Raw::Op(Op::Watermark(w))),
        1 => prop_oneof![Just(Op::Commit), Just(Op::Restart), Just(Op::Crash)].prop_map(Raw::Op),
    ];
    prop::collection::vec(raw, 1..150).prop_map(|raw| {
        let mut max_ts = 0;
        let mut clock = 0;
        raw.into_iter()
            .map(|r| {
                let op = match r {
                    Raw::Op(op) => op,
                    Raw::Record { key, disorder, value } => {
                        clock += 3;
                        Op::Record { key, ts: (clock - disorder).max(0), value }
                    }
                    Raw::Lag(lag) => Op::Watermark(max_ts - lag),
                };
                if let Op::Record { ts, .. } = op {
                    max_ts = max_ts.max(ts);
                }
                op
            })
            .collect()
    })
}

/// Windows of size `size` every `advance` containing `ts`, enumerated naively.
fn naive_windows(size: i64, advance: i64, ts: Timestamp) -> Vec<Window> {
    let first = ts.div_euclid(advance) - size / advance - 2;
    (first..=ts.div_euclid(advance) + 1)
        .map(|n| Window::new(n * advance, n * advance + size))
        .filter(|w| w.start <= ts && ts < w.end)
        .collect()
}

fn complete(end: Timestamp, grace: i64, wm: Option<Timestamp>) -> bool {
    wm.is_some_and(|w| end - 1 + grace <= w)
}

/// Something that takes records and watermarks and can be committed and reopened.
trait Driven {
    fn process(&mut self, key: u8, ts: Timestamp, value: i64, out: &mut Vec<Ev>);
    fn watermark(&mut self, wm: Timestamp, out: &mut Vec<Ev>);
    fn flush(&mut self, batch: &mut WriteBatch);
    fn late_dropped(&self) -> u64;
}

impl<W: WindowAssigner> Driven for WindowedAggregate<u8, Sum, W> {
    fn process(&mut self, key: u8, ts: Timestamp, value: i64, out: &mut Vec<Ev>) {
        WindowedAggregate::process(self, key, ts, &value, out);
    }
    fn watermark(&mut self, wm: Timestamp, out: &mut Vec<Ev>) {
        self.on_watermark(wm, out);
    }
    fn flush(&mut self, batch: &mut WriteBatch) {
        self.flush_into(batch).expect("flush");
    }
    fn late_dropped(&self) -> u64 {
        self.stats().late_dropped
    }
}

impl Driven for SessionWindows<u8, Sum> {
    fn process(&mut self, key: u8, ts: Timestamp, value: i64, out: &mut Vec<Ev>) {
        SessionWindows::process(self, key, ts, &value, out);
    }
    fn watermark(&mut self, wm: Timestamp, out: &mut Vec<Ev>) {
        self.on_watermark(wm, out);
    }
    fn flush(&mut self, batch: &mut WriteBatch) {
        self.flush_into(batch).expect("flush");
    }
    fn late_dropped(&self) -> u64 {
        self.stats().late_dropped
    }
}

/// Runs `ops` (then a final maximal watermark) against the operator made by `open`. At a `Crash`, the
/// output since the last commit is discarded (it is replayed), so the result is the *effective* output.
/// Returns the events and the operator's `late_dropped` count. With `recover = false`, `Commit`,
/// `Restart` and `Crash` are ignored: one uninterrupted run.
fn run<D: Driven>(ops: &[Op], open: impl Fn(&StateScope) -> D, recover: bool) -> (Vec<Ev>, u64) {
    let scope = StateScope::in_memory();
    let mut op = open(&scope);
    let mut out = Vec::new();
    let commit = |op: &mut D| {
        let mut batch = WriteBatch::new();
        op.flush(&mut batch);
        scope.backend().apply(batch).expect("apply");
    };
    let (mut committed_at, mut committed_len) = (0, 0);
    let mut crashed = BTreeSet::new();
    let mut i = 0;
    while i < ops.len() {
        match ops[i] {
            Op::Record { key, ts, value } => op.process(key, ts, value, &mut out),
            Op::Watermark(wm) => op.watermark(wm, &mut out),
            Op::Commit | Op::Restart | Op::Crash if !recover => {}
            Op::Commit | Op::Restart => {
                commit(&mut op);
                (committed_at, committed_len) = (i + 1, out.len());
                if matches!(ops[i], Op::Restart) {
                    op = open(&scope);
                }
            }
            Op::Crash => {
                if crashed.insert(i) {
                    op = open(&scope);
                    out.truncate(committed_len);
                    i = committed_at;
                    continue;
                }
            }
        }
        i += 1;
    }
    op.watermark(Timestamp::MAX, &mut out);
    let dropped = op.late_dropped();
    (out, dropped)
}

/// Runs `ops` with commits, restarts and crashes, checks that the effective output equals the one of an
/// uninterrupted run, and returns it.
fn run_checked<D: Driven>(ops: &[Op], open: impl Fn(&StateScope) -> D) -> Result<(Vec<Ev>, u64), TestCaseError> {
    let recovered = run(ops, &open, true);
    let straight = run(ops, &open, false);
    prop_assert_eq!(&recovered.0, &straight.0, "output after restarts differs from an uninterrupted run");
    prop_assert_eq!(recovered.1, straight.1);
    Ok(recovered)
}

/// The records, each with the watermark current at its arrival.
fn arrivals(ops: &[Op]) -> Vec<(u8, Timestamp, i64, Option<Timestamp>)> {
    let mut wm: Option<Timestamp> = None;
    let mut v = Vec::new();
    for o in ops {
        match *o {
            Op::Record { key, ts, value } => v.push((key, ts, value, wm)),
            Op::Watermark(w) => wm = Some(wm.map_or(w, |c| c.max(w))),
            Op::Commit | Op::Restart | Op::Crash => {}
        }
    }
    v
}

/// Applies Final/Correction events of aligned windows to a (key, window) → value table, checking that a
/// window is emitted Final at most once and that every correction names the value emitted before.
fn replay_aligned(events: &[Ev]) -> Result<BTreeMap<(u8, Window), i64>, TestCaseError> {
    let mut last: BTreeMap<(u8, Window), i64> = BTreeMap::new();
    let mut finals = BTreeSet::new();
    for e in events {
        match e {
            WindowEvent::Final { key, window, acc } => {
                prop_assert!(finals.insert((*key, *window)), "Final twice for {key} {window:?}");
                prop_assert!(!last.contains_key(&(*key, *window)), "Final after a correction: {e:?}");
                last.insert((*key, *window), *acc);
            }
            WindowEvent::Correction { key, window, previous, current } => {
                let before = last.get(&(*key, *window)).copied().unwrap_or_default();
                prop_assert_eq!(*previous, before, "correction's previous for {} {:?}", key, window);
                last.insert((*key, *window), *current);
            }
            WindowEvent::Late { .. } => {}
        }
    }
    Ok(last)
}

fn late_events(events: &[Ev]) -> Vec<(u8, Timestamp, i64)> {
    events
        .iter()
        .filter_map(|e| match e {
            WindowEvent::Late { key, timestamp, input } => Some((*key, *timestamp, *input)),
            _ => None,
        })
        .collect()
}

fn open_aligned(
    size: i64,
    advance: i64,
    grace: i64,
    late: LatePolicy,
) -> impl Fn(&StateScope) -> Box<dyn DrivenBox> {
    move |scope| {
        if size == advance {
            Box::new(WindowedAggregate::new(scope, "agg", Tumbling::of(ms(size)), Sum, ms(grace), late).expect("open"))
        } else {
            Box::new(WindowedAggregate::new(scope, "agg", Hopping::of(ms(size), ms(advance)), Sum, ms(grace), late).expect("open"))
        }
    }
}

/// Object-safe alias so tumbling and hopping operators share one driver.
trait DrivenBox: Driven {}
impl<T: Driven> DrivenBox for T {}

impl Driven for Box<dyn DrivenBox> {
    fn process(&mut self, key: u8, ts: Timestamp, value: i64, out: &mut Vec<Ev>) {
        (**self).process(key, ts, value, out);
    }
    fn watermark(&mut self, wm: Timestamp, out: &mut Vec<Ev>) {
        (**self).watermark(wm, out);
    }
    fn flush(&mut self, batch: &mut WriteBatch) {
        (**self).flush(batch);
    }
    fn late_dropped(&self) -> u64 {
        (**self).late_dropped()
    }
}

fn shape() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        (10i64..120).prop_map(|s| (s, s)),
        (1i64..5, 5i64..40).prop_map(|(n, a)| (n * a + a / 3, a)),
    ]
}

/// Naive sessions of `ts_values` (any order): [first, last + gap) with the sum of the values.
fn naive_sessions(mut records: Vec<(Timestamp, i64)>, gap: i64) -> BTreeMap<Window, i64> {
    records.sort_unstable();
    let mut sessions = BTreeMap::new();
    let mut current: Option<(Timestamp, Timestamp, i64)> = None;
    for (ts, v) in records {
        current = match current {
            Some((s, last, acc)) if ts - last < gap => Some((s, ts, acc + v)),
            Some((s, last, acc)) => {
                sessions.insert(Window::new(s, last + gap), acc);
                Some((ts, ts, v))
            }
            None => Some((ts, ts, v)),
        };
    }
    if let Some((s, last, acc)) = current {
        sessions.insert(Window::new(s, last + gap), acc);
    }
    sessions
}

fn open_sessions(gap: i64, grace: i64, late: LatePolicy) -> impl Fn(&StateScope) -> SessionWindows<u8, Sum> {
    move |scope| SessionWindows::new(scope, "sessions", ms(gap), Sum, ms(grace), late).expect("open")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn aligned_correct_converges_to_naive_aggregate(ops in ops(), (size, advance) in shape(), grace in 0i64..30) {
        let late = LatePolicy::Correct { max_lateness: ms(1_000_000) };
        let (events, _) = run_checked(&ops, open_aligned(size, advance, grace, late))?;
        let mut naive: BTreeMap<(u8, Window), i64> = BTreeMap::new();
        for (key, ts, value, _) in arrivals(&ops) {
            for w in naive_windows(size, advance, ts) {
                *naive.entry((key, w)).or_default() += value;
            }
        }
        prop_assert!(late_events(&events).is_empty());
        prop_assert_eq!(replay_aligned(&events)?, naive);
    }

    #[test]
    fn aligned_drop_and_side_output_finals_cover_exactly_on_time_records(
        ops in ops(), (size, advance) in shape(), grace in 0i64..30, side in any::<bool>(),
    ) {
        let late = if side { LatePolicy::SideOutput } else { LatePolicy::Drop };
        let (events, dropped) = run_checked(&ops, open_aligned(size, advance, grace, late))?;
        let mut naive: BTreeMap<(u8, Window), i64> = BTreeMap::new();
        let mut late_records = Vec::new();
        let mut on_time = 0;
        let all = arrivals(&ops);
        for &(key, ts, value, wm) in &all {
            let mut was_late = false;
            for w in naive_windows(size, advance, ts) {
                if complete(w.end, grace, wm) {
                    was_late = true;
                } else {
                    *naive.entry((key, w)).or_default() += value;
                }
            }
            if was_late { late_records.push((key, ts, value)) } else { on_time += 1 }
        }
        let corrections = events.iter().filter(|e| matches!(e, WindowEvent::Correction { .. })).count();
        prop_assert_eq!(corrections, 0);
        prop_assert_eq!(replay_aligned(&events)?, naive);
        let reported = if side { late_events(&events).len() as u64 } else { dropped };
        prop_assert_eq!(reported + on_time, all.len() as u64);
        if side {
            prop_assert_eq!(late_events(&events), late_records);
            prop_assert_eq!(dropped, 0);
        } else {
            prop_assert!(late_events(&events).is_empty());
        }
    }

    #[test]
    fn sessions_correct_converge_to_naive_sessionization(ops in ops(), gap in 1i64..40, grace in 0i64..20) {
        let late = LatePolicy::Correct { max_lateness: ms(1_000_000) };
        let (events, _) = run_checked(&ops, open_sessions(gap, grace, late))?;
        prop_assert!(late_events(&events).is_empty());
        // Replay: a Final adds a session; a Correction replaces every emitted session inside its window.
        let mut emitted: BTreeMap<u8, BTreeMap<Window, i64>> = BTreeMap::new();
        let mut finals = BTreeSet::new();
        for e in &events {
            match e {
                WindowEvent::Final { key, window, acc } => {
                    prop_assert!(finals.insert((*key, *window)), "Final twice: {:?}", e);
                    let mine = emitted.entry(*key).or_default();
                    prop_assert!(mine.keys().all(|w| w.end <= window.start || window.end <= w.start),
                        "Final {:?} overlaps an emitted session", e);
                    mine.insert(*window, *acc);
                }
                WindowEvent::Correction { key, window, previous, current } => {
                    let mine = emitted.entry(*key).or_default();
                    let inside: Vec<Window> = mine.keys()
                        .filter(|w| window.start <= w.start && w.end <= window.end).copied().collect();
                    let replaced: i64 = inside.iter().map(|w| mine.remove(w).unwrap_or_default()).sum();
                    prop_assert_eq!(*previous, replaced, "previous of {:?}", e);
                    prop_assert!(mine.keys().all(|w| w.end <= window.start || window.end <= w.start),
                        "Correction {:?} partly overlaps an emitted session", e);
                    mine.insert(*window, *current);
                }
                WindowEvent::Late { .. } => {}
            }
        }
        let mut by_key: BTreeMap<u8, Vec<(Timestamp, i64)>> = BTreeMap::new();
        for (key, ts, value, _) in arrivals(&ops) {
            by_key.entry(key).or_default().push((ts, value));
        }
        let naive: BTreeMap<u8, BTreeMap<Window, i64>> =
            by_key.into_iter().map(|(k, r)| (k, naive_sessions(r, gap))).collect();
        emitted.retain(|_, m| !m.is_empty());
        prop_assert_eq!(emitted, naive);
    }

    #[test]
    fn sessions_drop_and_side_output_finals_cover_exactly_on_time_records(
        ops in ops(), gap in 1i64..40, grace in 0i64..20, side in any::<bool>(),
    ) {
        let late = if side { LatePolicy::SideOutput } else { LatePolicy::Drop };
        let (events, dropped) = run_checked(&ops, open_sessions(gap, grace, late))?;
        // Model: a record is late if its own session [ts, ts + gap) is complete or it overlaps a complete
        // session of the records accepted so far.
        let mut accepted: BTreeMap<u8, Vec<(Timestamp, i64)>> = BTreeMap::new();
        let mut late_records = Vec::new();
        let all = arrivals(&ops);
        for &(key, ts, value, wm) in &all {
            let mine = accepted.entry(key).or_default();
            let sessions = naive_sessions(mine.clone(), gap);
            let own_end = ts + gap;
            let is_late = complete(own_end, grace, wm)
                || sessions.keys().any(|w| w.start < own_end && ts < w.end && complete(w.end, grace, wm));
            if is_late { late_records.push((key, ts, value)) } else { mine.push((ts, value)) }
        }
        let mut finals: BTreeMap<u8, BTreeMap<Window, i64>> = BTreeMap::new();
        for e in &events {
            match e {
                WindowEvent::Final { key, window, acc } => {
                    prop_assert!(finals.entry(*key).or_default().insert(*window, *acc).is_none(), "Final twice");
                }
                WindowEvent::Correction { .. } => prop_assert!(false, "no corrections without Correct: {:?}", e),
                WindowEvent::Late { .. } => {}
            }
        }
        let naive: BTreeMap<u8, BTreeMap<Window, i64>> = accepted
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(k, r)| (k, naive_sessions(r, gap)))
            .collect();
        prop_assert_eq!(finals, naive);
        let on_time = (all.len() - late_records.len()) as u64;
        let reported = if side { late_events(&events).len() as u64 } else { dropped };
        prop_assert_eq!(reported + on_time, all.len() as u64);
        if side {
            prop_assert_eq!(late_events(&events), late_records);
        } else {
            prop_assert!(late_events(&events).is_empty());
        }
    }
}

#[test]
fn naive_windows_agree_with_examples() {
    assert_eq!(naive_windows(10, 10, 10), vec![Window::new(10, 20)]);
    assert_eq!(naive_windows(25, 10, 24), vec![Window::new(0, 25), Window::new(10, 35), Window::new(20, 45)]);
    assert_eq!(naive_sessions(vec![(0, 1), (9, 1), (19, 1), (5, 1)], 10).len(), 2);
}
