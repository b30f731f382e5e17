//! Model test of the interval join: random keys, timestamps, interleavings of the two sides, watermark
//! schedules with bounded disorder that still let some rows be late, commits and restarts — compared,
//! event by event and op by op, with a naive nested-loop join over the whole input.
//!
//! The model's rule: a row is late by the lateness formulas of the spec (left: `wm >= l.ts + upper`, right:
//! `wm >= r.ts - lower + upper`, with `wm` the watermark when it arrived); the pair `(l, r)` is produced iff
//! both are on time, same key, `l.ts + lower <= r.ts <= l.ts + upper`, and `l` was still open when `r`
//! arrived (`wm_at_r < l.ts + upper`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rtb_stream::join::{IntervalJoin, IntervalJoinSpec, JoinEmit, JoinEvent, JoinKind, JoinStats, Timed};
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::time::Timestamp;

type Key = u16;
type Event = JoinEvent<Key, u32, u32>;
type Join = IntervalJoin<Key, u32, u32>;

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A row at `now + offset`.
    Left { key: Key, offset: i64 },
    Right { key: Key, offset: i64 },
    /// Processing moves on: `now += step`.
    Tick(i64),
    /// Watermark `now - disorder`.
    Watermark,
    /// Flush state into the backend.
    Commit,
    /// Flush, drop the join, reopen it from the same scope.
    Restart,
}

const KEYS: Key = 4;

fn op(disorder: i64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, -disorder..=3).prop_map(|(key, offset)| Op::Left { key, offset }),
        8 => (0..KEYS, -disorder..=3).prop_map(|(key, offset)| Op::Right { key, offset }),
        // rows beyond the promised disorder: often late
        1 => (0..KEYS, -disorder - 40..-disorder).prop_map(|(key, offset)| Op::Left { key, offset }),
        1 => (0..KEYS, -disorder - 40..-disorder).prop_map(|(key, offset)| Op::Right { key, offset }),
        4 => prop_oneof![4 => 0i64..4, 1 => 4i64..40].prop_map(Op::Tick),
        3 => Just(Op::Watermark),
        1 => Just(Op::Commit),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    spec: IntervalJoinSpec,
    disorder: i64,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    let spec = (-15i64..=5, 0i64..=20, prop::bool::ANY, prop::bool::ANY).prop_map(|(lower, width, outer, pairs)| {
        IntervalJoinSpec {
            lower,
            upper: lower + width,
            kind: if outer { JoinKind::LeftOuter } else { JoinKind::Inner },
            emit: if pairs { JoinEmit::Pairs } else { JoinEmit::OnClose },
        }
    });
    (spec, 0i64..=12).prop_flat_map(|(spec, disorder)| {
        prop::collection::vec(op(disorder), 1..160).prop_map(move |ops| Case { spec, disorder, ops })
    })
}

/// One input row as the model sees it.
#[derive(Debug, Clone, Copy)]
struct Row {
    id: u32,
    key: Key,
    ts: Timestamp,
    /// Op index of arrival.
    at: usize,
    /// Watermark on arrival.
    wm: Option<Timestamp>,
}

/// The rows and watermark changes of a case, replayed without any join.
struct Trace {
    lefts: Vec<Row>,
    rights: Vec<Row>,
    /// `(op index, new watermark)` for every watermark advance, ending with `Timestamp::MAX` at `ops.len()`.
    watermarks: Vec<(usize, Timestamp)>,
}

fn trace(c: &Case) -> Trace {
    let (mut now, mut wm) = (1_000i64, None::<Timestamp>);
    let mut t = Trace { lefts: Vec::new(), rights: Vec::new(), watermarks: Vec::new() };
    for (i, op) in c.ops.iter().enumerate() {
        let id = u32::try_from(i).expect("small");
        match *op {
            Op::Left { key, offset } => t.lefts.push(Row { id, key, ts: now + offset, at: i, wm }),
            Op::Right { key, offset } => t.rights.push(Row { id, key, ts: now + offset, at: i, wm }),
            Op::Tick(d) => now += d,
            Op::Watermark => {
                let w = now - c.disorder;
                if wm.is_none_or(|cur| w > cur) {
                    wm = Some(w);
                    t.watermarks.push((i, w));
                }
            }
            Op::Commit | Op::Restart => {}
        }
    }
    t.watermarks.push((c.ops.len(), Timestamp::MAX));
    t
}

fn late(wm: Option<Timestamp>, closes_at: Timestamp) -> bool {
    wm.is_some_and(|w| w >= closes_at)
}

/// The expected events, each tagged with the op index that must emit it, in emission order.
fn model(c: &Case, t: &Trace) -> Vec<(usize, Event)> {
    let s = c.spec;
    let timed = |r: &Row| Timed { timestamp: r.ts, value: r.id };
    let on_time_left = |l: &&Row| !late(l.wm, s.left_closes_at(l.ts));
    let on_time_right = |r: &&Row| !late(r.wm, s.right_expires_at(r.ts));
    // pairs[left id] = its partners, by (ts, arrival)
    let mut partners: BTreeMap<u32, Vec<&Row>> = BTreeMap::new();
    for l in t.lefts.iter().filter(on_time_left) {
        let mut ps: Vec<&Row> = t
            .rights
            .iter()
            .filter(on_time_right)
            .filter(|r| r.key == l.key && s.matches(l.ts, r.ts) && !late(r.wm, s.left_closes_at(l.ts)))
            .collect();
        ps.sort_by_key(|r| (r.ts, r.at));
        partners.insert(l.id, ps);
    }
    // (op index, order within the op, event)
    let mut ev: Vec<(usize, (Timestamp, Key, Timestamp, usize), Event)> = Vec::new();
    for l in &t.lefts {
        if !on_time_left(&l) {
            ev.push((l.at, (0, 0, 0, 0), JoinEvent::LateLeft { key: l.key, left: timed(l) }));
            continue;
        }
        let closes = s.left_closes_at(l.ts);
        let close_op = t.watermarks.iter().find(|(i, w)| *i > l.at && *w >= closes).map(|(i, _)| *i);
        let close_op = close_op.expect("the final watermark closes everything");
        let order = (closes, l.key, l.ts, l.at);
        let ps = &partners[&l.id];
        match s.emit {
            JoinEmit::Pairs => {
                for r in ps {
                    // emitted when the second row arrives; the partner order is (ts, arrival)
                    let (op, order) =
                        if r.at > l.at { (r.at, (l.ts, 0, 0, l.at)) } else { (l.at, (r.ts, 0, 0, r.at)) };
                    ev.push((op, order, JoinEvent::Pair { key: l.key, left: timed(l), right: timed(r) }));
                }
                if ps.is_empty() && s.kind == JoinKind::LeftOuter {
                    ev.push((close_op, order, JoinEvent::Unmatched { key: l.key, left: timed(l) }));
                }
            }
            JoinEmit::OnClose => {
                if !ps.is_empty() {
                    let rights = ps.iter().map(|r| timed(r)).collect();
                    ev.push((close_op, order, JoinEvent::Group { key: l.key, left: timed(l), rights }));
                } else if s.kind == JoinKind::LeftOuter {
                    ev.push((close_op, order, JoinEvent::Unmatched { key: l.key, left: timed(l) }));
                }
            }
        }
    }
    for r in t.rights.iter().filter(|r| !on_time_right(r)) {
        ev.push((r.at, (0, 0, 0, 0), JoinEvent::LateRight { key: r.key, right: timed(r) }));
    }
    ev.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    ev.into_iter().map(|(i, _, e)| (i, e)).collect()
}

/// Expected `buffered()` after op `i`: on-time rows that arrived and are not yet closed / expired.
fn expected_buffered(c: &Case, t: &Trace, i: usize) -> (usize, usize) {
    let s = c.spec;
    let wm = t.watermarks.iter().take_while(|(j, _)| *j <= i).last().map(|(_, w)| *w);
    let lefts = t
        .lefts
        .iter()
        .filter(|l| l.at <= i && !late(l.wm, s.left_closes_at(l.ts)) && !late(wm, s.left_closes_at(l.ts)))
        .count();
    let rights = t
        .rights
        .iter()
        .filter(|r| r.at <= i && !late(r.wm, s.right_expires_at(r.ts)) && !late(wm, s.right_expires_at(r.ts)))
        .count();
    (lefts, rights)
}

fn add_stats(total: &mut JoinStats, s: &JoinStats) {
    total.pairs += s.pairs;
    total.groups += s.groups;
    total.unmatched += s.unmatched;
    total.late_left += s.late_left;
    total.late_right += s.late_right;
}

fn commit(scope: &StateScope, j: &mut Join) {
    let mut b = WriteBatch::new();
    j.flush_into(&mut b).expect("flush");
    scope.backend().apply(b).expect("apply");
}

/// Runs the real join over the case; returns every event tagged with the op that emitted it, and the
/// summed stats.
fn run(c: &Case, t: &Trace) -> Result<(Vec<(usize, Event)>, JoinStats), TestCaseError> {
    let scope = StateScope::in_memory().child("task-0");
    let mut j = Join::new(&scope, "join", c.spec).expect("open");
    let (mut now, mut out, mut stats) = (1_000i64, Vec::new(), JoinStats::default());
    let mut tagged = Vec::new();
    for (i, op) in c.ops.iter().enumerate() {
        let id = u32::try_from(i).expect("small");
        match *op {
            Op::Left { key, offset } => j.process_left(key, now + offset, id, &mut out),
            Op::Right { key, offset } => j.process_right(key, now + offset, id, &mut out),
            Op::Tick(d) => now += d,
            Op::Watermark => j.on_watermark(now - c.disorder, &mut out),
            Op::Commit => commit(&scope, &mut j),
            Op::Restart => {
                commit(&scope, &mut j);
                add_stats(&mut stats, j.stats());
                j = Join::new(&scope, "join", c.spec).expect("reopen");
            }
        }
        tagged.extend(out.drain(..).map(|e| (i, e)));
        prop_assert_eq!(j.buffered(), expected_buffered(c, t, i), "buffered rows after op {}", i);
    }
    j.on_watermark(Timestamp::MAX, &mut out);
    tagged.extend(out.drain(..).map(|e| (c.ops.len(), e)));
    prop_assert_eq!(j.buffered(), (0, 0), "everything closes at the end");
    add_stats(&mut stats, j.stats());
    Ok((tagged, stats))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn interval_join_matches_naive_nested_loop_join(c in case()) {
        let t = trace(&c);
        let (got, stats) = run(&c, &t)?;
        let expected = model(&c, &t);
        prop_assert_eq!(&got, &expected);

        // Conservation, independently of the model: every row is reported late exactly once, or else (lefts)
        // closed exactly once / (rights) never reported late.
        let mut left_seen: BTreeMap<u32, (u32, u32, u32)> = BTreeMap::new(); // (late, closed, pairs)
        let mut right_late: BTreeMap<u32, u32> = BTreeMap::new();
        for (_, e) in &got {
            match e {
                JoinEvent::LateLeft { left, .. } => left_seen.entry(left.value).or_default().0 += 1,
                JoinEvent::Group { left, .. } | JoinEvent::Unmatched { left, .. } => {
                    left_seen.entry(left.value).or_default().1 += 1
                }
                JoinEvent::Pair { left, right, .. } => {
                    left_seen.entry(left.value).or_default().2 += 1;
                    prop_assert!(c.spec.matches(left.timestamp, right.timestamp));
                }
                JoinEvent::LateRight { right, .. } => *right_late.entry(right.value).or_default() += 1,
            }
        }
        for l in &t.lefts {
            let (late, closed, pairs) = left_seen.get(&l.id).copied().unwrap_or_default();
            prop_assert!(late <= 1 && closed <= 1, "left {} reported twice", l.id);
            prop_assert!(late == 0 || closed + pairs == 0, "late left {} was joined", l.id);
            if c.spec.kind == JoinKind::LeftOuter {
                // a left outer join accounts for every left row: late, paired, or closed with output
                prop_assert!(late + closed + u32::from(pairs > 0) >= 1, "left {} vanished", l.id);
                prop_assert!(pairs == 0 || closed == 0 || c.spec.emit == JoinEmit::OnClose);
            }
        }
        prop_assert!(right_late.values().all(|n| *n == 1));
        let count = |f: fn(&Event) -> bool| got.iter().filter(|(_, e)| f(e)).count() as u64;
        prop_assert_eq!(stats.pairs, count(|e| matches!(e, JoinEvent::Pair { .. })));
        prop_assert_eq!(stats.groups, count(|e| matches!(e, JoinEvent::Group { .. })));
        prop_assert_eq!(stats.unmatched, count(|e| matches!(e, JoinEvent::Unmatched { .. })));
        prop_assert_eq!(stats.late_left, count(|e| matches!(e, JoinEvent::LateLeft { .. })));
        prop_assert_eq!(stats.late_right, count(|e| matches!(e, JoinEvent::LateRight { .. })));
    }
}
