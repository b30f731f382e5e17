//! Unit tests of the interval join: bounds, arrival orders, closing, lateness, cleanup and restarts.

use super::*;

type Join = IntervalJoin<String, u32, u32>;
type Event = JoinEvent<String, u32, u32>;

fn spec(lower: i64, upper: i64, kind: JoinKind, emit: JoinEmit) -> IntervalJoinSpec {
    IntervalJoinSpec { lower, upper, kind, emit }
}

fn open(scope: &StateScope, s: IntervalJoinSpec) -> Join {
    Join::new(scope, "j", s).expect("open join")
}

fn k(s: &str) -> String {
    s.to_string()
}

fn t(timestamp: Timestamp, value: u32) -> Timed<u32> {
    Timed { timestamp, value }
}

fn pair(key: &str, l: (Timestamp, u32), r: (Timestamp, u32)) -> Event {
    JoinEvent::Pair { key: k(key), left: t(l.0, l.1), right: t(r.0, r.1) }
}

fn commit(scope: &StateScope, j: &mut Join) {
    let mut b = WriteBatch::new();
    j.flush_into(&mut b).expect("flush");
    scope.backend().apply(b).expect("apply");
}

#[test]
fn inverted_bounds_are_a_config_error() {
    let err = Join::new(&StateScope::in_memory(), "j", spec(5, 4, JoinKind::Inner, JoinEmit::Pairs));
    assert!(matches!(err, Err(Error::Config(_))));
}

#[test]
fn right_exactly_at_lower_and_upper_bound_matches_one_ms_outside_does_not() {
    let mut j = open(&StateScope::in_memory(), spec(-10, 5, JoinKind::Inner, JoinEmit::Pairs));
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out);
    for (ts, id) in [(89, 10), (90, 11), (105, 12), (106, 13)] {
        j.process_right(k("a"), ts, id, &mut out);
    }
    assert_eq!(out, vec![pair("a", (100, 1), (90, 11)), pair("a", (100, 1), (105, 12))]);
}

#[test]
fn left_arriving_after_rights_sees_exactly_the_bounds() {
    let mut j = open(&StateScope::in_memory(), spec(-10, 5, JoinKind::Inner, JoinEmit::Pairs));
    let mut out = Vec::new();
    for (ts, id) in [(89, 10), (90, 11), (105, 12), (106, 13)] {
        j.process_right(k("a"), ts, id, &mut out);
    }
    assert!(out.is_empty());
    j.process_left(k("a"), 100, 1, &mut out);
    assert_eq!(out, vec![pair("a", (100, 1), (90, 11)), pair("a", (100, 1), (105, 12))]);
}

#[test]
fn pairs_need_the_same_key() {
    let mut j = open(&StateScope::in_memory(), spec(0, 0, JoinKind::Inner, JoinEmit::Pairs));
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out);
    j.process_right(k("b"), 100, 2, &mut out);
    assert!(out.is_empty());
    j.process_right(k("a"), 100, 3, &mut out);
    assert_eq!(out, vec![pair("a", (100, 1), (100, 3))]);
}

#[test]
fn on_close_group_waits_for_watermark_exactly_at_close_and_sorts_rights() {
    let mut j = open(&StateScope::in_memory(), spec(-10, 5, JoinKind::LeftOuter, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.process_right(k("a"), 104, 3, &mut out);
    j.process_left(k("a"), 100, 1, &mut out);
    j.process_right(k("a"), 95, 2, &mut out);
    j.process_right(k("a"), 90, 1, &mut out);
    j.on_watermark(104, &mut out);
    assert!(out.is_empty(), "closes at 105, not before: {out:?}");
    j.process_right(k("a"), 105, 4, &mut out);
    j.on_watermark(105, &mut out);
    assert_eq!(
        out,
        vec![JoinEvent::Group {
            key: k("a"),
            left: t(100, 1),
            rights: vec![t(90, 1), t(95, 2), t(104, 3), t(105, 4)],
        }]
    );
    assert_eq!(j.stats().groups, 1);
}

#[test]
fn on_close_left_outer_without_match_is_unmatched_and_inner_is_silent() {
    for (kind, expected) in [
        (JoinKind::LeftOuter, vec![JoinEvent::Unmatched { key: k("a"), left: t(100, 1) }]),
        (JoinKind::Inner, vec![]),
    ] {
        let mut j = open(&StateScope::in_memory(), spec(-10, 0, kind, JoinEmit::OnClose));
        let mut out = Vec::new();
        j.process_left(k("a"), 100, 1, &mut out);
        j.process_right(k("a"), 89, 2, &mut out); // one ms below the lower bound
        j.on_watermark(100, &mut out);
        assert_eq!(out, expected, "{kind:?}");
        assert_eq!(j.buffered().0, 0);
    }
}

#[test]
fn pairs_left_outer_reports_unmatched_on_close_but_not_matched_rows() {
    let mut j = open(&StateScope::in_memory(), spec(0, 10, JoinKind::LeftOuter, JoinEmit::Pairs));
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out);
    j.process_left(k("a"), 200, 2, &mut out);
    j.process_right(k("a"), 110, 7, &mut out);
    assert_eq!(out, vec![pair("a", (100, 1), (110, 7))]);
    out.clear();
    j.on_watermark(210, &mut out);
    assert_eq!(out, vec![JoinEvent::Unmatched { key: k("a"), left: t(200, 2) }]);
    assert_eq!((j.stats().pairs, j.stats().unmatched), (1, 1));
}

#[test]
fn pairs_inner_closes_silently() {
    let mut j = open(&StateScope::in_memory(), spec(0, 10, JoinKind::Inner, JoinEmit::Pairs));
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out);
    j.on_watermark(1_000, &mut out);
    assert!(out.is_empty());
    assert_eq!(j.buffered(), (0, 0));
}

#[test]
fn left_exactly_at_close_is_late_one_ms_earlier_is_on_time() {
    let mut j = open(&StateScope::in_memory(), spec(-10, 5, JoinKind::LeftOuter, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.process_right(k("a"), 100, 9, &mut out);
    j.on_watermark(105, &mut out);
    j.process_left(k("a"), 100, 1, &mut out); // closes at 105 == wm
    j.process_left(k("a"), 101, 2, &mut out); // closes at 106 > wm
    assert_eq!(out, vec![JoinEvent::LateLeft { key: k("a"), left: t(100, 1) }]);
    out.clear();
    j.on_watermark(106, &mut out);
    assert_eq!(out, vec![JoinEvent::Group { key: k("a"), left: t(101, 2), rights: vec![t(100, 9)] }]);
    assert_eq!(j.stats().late_left, 1);
}

#[test]
fn right_is_late_only_when_every_left_it_could_match_is_closed() {
    // right at ts matches lefts in [ts - 5, ts + 10]; the last of them closes at ts + 10 + 5.
    let mut j = open(&StateScope::in_memory(), spec(-10, 5, JoinKind::Inner, JoinEmit::Pairs));
    let mut out = Vec::new();
    j.on_watermark(115, &mut out);
    j.process_right(k("a"), 100, 1, &mut out); // 100 + 10 + 5 == wm: late
    j.process_right(k("a"), 101, 2, &mut out); // expires at 116: on time, though behind the watermark
    assert_eq!(out, vec![JoinEvent::LateRight { key: k("a"), right: t(100, 1) }]);
    assert_eq!((j.stats().late_right, j.stats().partial_late_right), (1, 1));
    out.clear();
    j.process_left(k("a"), 111, 3, &mut out); // closes at 116, matches rights in [101, 116]
    assert_eq!(out, vec![pair("a", (111, 3), (101, 2))]);
}

#[test]
fn on_time_right_behind_the_watermark_misses_closed_lefts_only() {
    let mut j = open(&StateScope::in_memory(), spec(-10, 0, JoinKind::LeftOuter, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out);
    j.process_left(k("a"), 103, 2, &mut out);
    j.on_watermark(101, &mut out);
    assert_eq!(out, vec![JoinEvent::Unmatched { key: k("a"), left: t(100, 1) }]);
    out.clear();
    j.process_right(k("a"), 95, 7, &mut out); // would have matched left 1 (closed) and matches left 2 (open)
    j.on_watermark(103, &mut out);
    assert_eq!(out, vec![JoinEvent::Group { key: k("a"), left: t(103, 2), rights: vec![t(95, 7)] }]);
    assert_eq!(j.stats().partial_late_right, 1);
}

#[test]
fn right_is_kept_until_no_open_or_future_left_can_match_it() {
    let mut j = open(&StateScope::in_memory(), spec(-10, 0, JoinKind::Inner, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.process_right(k("a"), 100, 1, &mut out); // expires at 110
    j.on_watermark(109, &mut out);
    assert_eq!(j.buffered(), (0, 1));
    j.process_left(k("a"), 110, 5, &mut out);
    j.on_watermark(110, &mut out);
    assert_eq!(out, vec![JoinEvent::Group { key: k("a"), left: t(110, 5), rights: vec![t(100, 1)] }]);
    assert_eq!(j.buffered(), (0, 0));
    assert_eq!(j.buffered_keys(), 0);
}

#[test]
fn an_open_left_keeps_rights_that_are_past_their_expiry_for_new_lefts() {
    // upper > 0: a left closes after rights it matches expire for new lefts.
    let mut j = open(&StateScope::in_memory(), spec(-5, 20, JoinKind::Inner, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out); // closes at 120, matches [95, 120]
    j.process_right(k("a"), 95, 2, &mut out); // expires at 120
    j.process_left(k("a"), 90, 3, &mut out); // closes at 110, matches [85, 110]
    j.on_watermark(119, &mut out);
    assert_eq!(out, vec![JoinEvent::Group { key: k("a"), left: t(90, 3), rights: vec![t(95, 2)] }]);
    assert_eq!(j.buffered(), (1, 1));
    out.clear();
    j.on_watermark(500, &mut out);
    assert_eq!(out, vec![JoinEvent::Group { key: k("a"), left: t(100, 1), rights: vec![t(95, 2)] }]);
    assert_eq!(j.buffered(), (0, 0));
}

#[test]
fn watermark_output_is_ordered_by_close_time_then_key() {
    let mut j = open(&StateScope::in_memory(), spec(0, 0, JoinKind::LeftOuter, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.process_left(k("b"), 20, 1, &mut out);
    j.process_left(k("a"), 30, 2, &mut out);
    j.process_left(k("b"), 10, 3, &mut out);
    j.process_left(k("a"), 20, 4, &mut out);
    j.process_left(k("a"), 20, 5, &mut out);
    j.on_watermark(100, &mut out);
    let order: Vec<(String, Timestamp, u32)> = out
        .iter()
        .map(|e| match e {
            JoinEvent::Unmatched { key, left } => (key.clone(), left.timestamp, left.value),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        order,
        vec![(k("b"), 10, 3), (k("a"), 20, 4), (k("a"), 20, 5), (k("b"), 20, 1), (k("a"), 30, 2)]
    );
}

#[test]
fn watermark_going_backwards_is_ignored() {
    let mut j = open(&StateScope::in_memory(), spec(0, 0, JoinKind::LeftOuter, JoinEmit::OnClose));
    let mut out = Vec::new();
    j.on_watermark(100, &mut out);
    j.on_watermark(50, &mut out);
    assert_eq!(j.watermark(), Some(100));
    j.process_left(k("a"), 80, 1, &mut out);
    assert!(matches!(&out[..], [JoinEvent::LateLeft { .. }]));
}

#[test]
fn state_stays_bounded_as_the_watermark_advances() {
    // 50 keys, one left per 10 rights, 5 ms apart, window [-1000, 0], watermark 200 ms behind.
    let mut j = open(&StateScope::in_memory(), spec(-1_000, 0, JoinKind::LeftOuter, JoinEmit::OnClose));
    let mut out = Vec::new();
    let mut max_seen = (0, 0);
    for i in 0..20_000u32 {
        let ts = Timestamp::from(i) * 5;
        let key = format!("k{}", i % 50);
        if i % 11 == 0 {
            j.process_left(key, ts, i, &mut out);
        } else {
            j.process_right(key, ts, i, &mut out);
        }
        if i % 100 == 0 {
            j.on_watermark(ts - 200, &mut out);
            let (l, r) = j.buffered();
            max_seen = (max_seen.0.max(l), max_seen.1.max(r));
            let (due_l, due_r) = j.index_len();
            assert_eq!(due_l, l, "one due entry per buffered left row");
            assert!(due_r <= r, "at most one due entry per key with rights: {due_r} > {r}");
        }
    }
    // rights live for 1000 ms + 200 ms of disorder + 500 ms between watermarks: < 1700 / 5 = 340 rows.
    assert!(max_seen.1 <= 340, "rights not cleaned: {max_seen:?}");
    // lefts live for 200 ms + 500 ms: < 140 rows.
    assert!(max_seen.0 <= 140, "lefts not cleaned: {max_seen:?}");
    j.on_watermark(Timestamp::MAX, &mut out);
    assert_eq!(j.buffered(), (0, 0));
    assert_eq!(j.buffered_keys(), 0);
    assert_eq!(j.index_len(), (0, 0));
    let lefts = 20_000u64.div_ceil(11);
    assert_eq!(j.stats().groups + j.stats().unmatched, lefts, "every left row closes once");
}

/// One scripted input step.
#[derive(Clone, Copy)]
enum Step {
    L(&'static str, Timestamp, u32),
    R(&'static str, Timestamp, u32),
    W(Timestamp),
}

fn run(j: &mut Join, steps: &[Step], out: &mut Vec<Event>) {
    for s in steps {
        match *s {
            Step::L(key, ts, v) => j.process_left(k(key), ts, v, out),
            Step::R(key, ts, v) => j.process_right(k(key), ts, v, out),
            Step::W(wm) => j.on_watermark(wm, out),
        }
    }
}

#[test]
fn restart_from_flushed_state_gives_the_same_output_as_an_uninterrupted_run() {
    use Step::*;
    let steps = [
        R("a", 95, 1),
        L("a", 100, 1),
        R("b", 50, 2),
        L("b", 60, 2),
        W(40),
        R("a", 101, 3),
        L("c", 70, 3),
        W(65),
        R("c", 60, 4),
        L("a", 110, 4),
        R("a", 105, 5),
        W(100),
        R("a", 90, 6),
        L("b", 55, 5),
        W(108),
        L("a", 120, 6),
        R("a", 112, 7),
        R("a", 119, 8),
        W(200),
        R("a", 150, 9),
        L("a", 30, 7),
    ];
    for emit in [JoinEmit::Pairs, JoinEmit::OnClose] {
        let s = spec(-10, 2, JoinKind::LeftOuter, emit);
        let mut expected = Vec::new();
        run(&mut open(&StateScope::in_memory(), s), &steps, &mut expected);
        for cut in 1..steps.len() {
            let scope = StateScope::in_memory();
            let mut got = Vec::new();
            let mut j = open(&scope, s);
            run(&mut j, &steps[..cut], &mut got);
            commit(&scope, &mut j);
            if cut % 2 == 0 {
                // a second commit with nothing new, then more work, to exercise incremental flushing
                commit(&scope, &mut j);
            }
            drop(j);
            let mut j = open(&scope, s);
            run(&mut j, &steps[cut..], &mut got);
            assert_eq!(got, expected, "{emit:?}, restart after step {cut}");
        }
        assert!(expected.iter().any(|e| matches!(e, JoinEvent::LateLeft { .. })), "the script has late rows");
    }
}

#[test]
fn unflushed_changes_are_not_restored() {
    let scope = StateScope::in_memory();
    let s = spec(0, 10, JoinKind::Inner, JoinEmit::Pairs);
    let mut j = open(&scope, s);
    let mut out = Vec::new();
    j.process_left(k("a"), 100, 1, &mut out);
    commit(&scope, &mut j);
    j.process_left(k("a"), 101, 2, &mut out);
    j.on_watermark(50, &mut out);
    let j2 = open(&scope, s);
    assert_eq!(j2.buffered(), (1, 0));
    assert_eq!(j2.watermark(), None);
}

#[test]
fn within_builds_the_offsets_from_two_spans() {
    use std::time::Duration;
    let s = IntervalJoinSpec::within(Duration::from_secs(86_400), Duration::ZERO, JoinKind::LeftOuter, JoinEmit::OnClose);
    assert_eq!((s.lower, s.upper), (-86_400_000, 0));
    assert!(s.validate().is_ok());
    assert!(s.matches(1_000_000_000, 1_000_000_000 - 86_400_000) && !s.matches(1_000_000_000, 1_000_000_000 + 1));
}
