use super::*;
use crate::window::Count;

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    crate::span::from_ms(v)
}

type Ev = WindowEvent<String, u64, ()>;

const GAP: i64 = 10;

fn open(scope: &StateScope, late: LatePolicy, grace: i64) -> SessionWindows<String, Count> {
    SessionWindows::new(scope, "s", ms(GAP), Count, ms(grace), late).expect("open")
}

fn k(s: &str) -> String {
    s.to_string()
}

fn fin(key: &str, start: i64, end: i64, acc: u64) -> Ev {
    Ev::Final { key: k(key), window: Window::new(start, end), acc }
}

fn cor(key: &str, start: i64, end: i64, previous: u64, current: u64) -> Ev {
    Ev::Correction { key: k(key), window: Window::new(start, end), previous, current }
}

fn feed(op: &mut SessionWindows<String, Count>, records: &[(&str, i64)], out: &mut Vec<Ev>) {
    for (key, ts) in records {
        op.process(k(key), *ts, &(), out);
    }
}

#[test]
fn record_exactly_gap_after_last_starts_a_new_session() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0), ("a", 10)], &mut out);
    op.on_watermark(1_000, &mut out);
    assert_eq!(out, vec![fin("a", 0, 10, 1), fin("a", 10, 20, 1)]);
}

#[test]
fn record_one_ms_inside_the_gap_extends_the_session() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0), ("a", 9), ("a", 18)], &mut out);
    op.on_watermark(1_000, &mut out);
    assert_eq!(out, vec![fin("a", 0, 28, 3)]);
}

#[test]
fn session_closes_exactly_at_end_minus_one_plus_grace() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 5);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0), ("a", 4)], &mut out);
    op.on_watermark(17, &mut out);
    assert!(out.is_empty(), "end 14, grace 5: completes at 18");
    op.on_watermark(18, &mut out);
    assert_eq!(out, vec![fin("a", 0, 14, 2)]);
}

#[test]
fn bridging_record_merges_two_sessions() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0), ("a", 3), ("a", 20), ("a", 25)], &mut out);
    assert_eq!(op.sessions(), 2);
    feed(&mut op, &[("a", 12)], &mut out); // [12,22) overlaps [0,13) and [20,35)
    assert_eq!(op.sessions(), 1);
    op.on_watermark(1_000, &mut out);
    assert_eq!(out, vec![fin("a", 0, 35, 5)]);
}

#[test]
fn record_at_watermark_extends_an_open_session() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0)], &mut out);
    op.on_watermark(5, &mut out);
    feed(&mut op, &[("a", 5)], &mut out);
    op.on_watermark(14, &mut out);
    assert_eq!(out, vec![fin("a", 0, 15, 2)]);
    assert_eq!(op.stats().late_dropped, 0);
}

#[test]
fn drop_record_overlapping_a_complete_session_is_late_even_if_its_own_session_is_not() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0)], &mut out);
    op.on_watermark(9, &mut out);
    assert_eq!(out, vec![fin("a", 0, 10, 1)]);
    // [5,15) is not complete at watermark 9, but it overlaps the emitted [0,10).
    feed(&mut op, &[("a", 5)], &mut out);
    op.on_watermark(1_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(op.stats().late_dropped, 1);
    assert_eq!(op.sessions(), 0, "bounds kept for late detection are dropped in the end");
}

#[test]
fn side_output_emits_late_record() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::SideOutput, 0);
    let mut out = Vec::new();
    op.on_watermark(100, &mut out);
    feed(&mut op, &[("a", 90)], &mut out);
    assert_eq!(out, vec![Ev::Late { key: k("a"), timestamp: 90, input: () }]);
}

#[test]
fn late_record_extending_a_retained_session_emits_correction_of_new_bounds() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Correct { max_lateness: ms(100) }, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0), ("a", 2)], &mut out);
    op.on_watermark(30, &mut out);
    feed(&mut op, &[("a", 7)], &mut out); // [7,17) is complete too: merged [0,17) is complete
    assert_eq!(out, vec![fin("a", 0, 12, 2), cor("a", 0, 17, 2, 3)]);
}

#[test]
fn late_record_bridging_two_emitted_sessions_corrects_with_merged_previous() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Correct { max_lateness: ms(100) }, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0), ("a", 15), ("a", 17)], &mut out);
    op.on_watermark(40, &mut out);
    assert_eq!(out, vec![fin("a", 0, 10, 1), fin("a", 15, 27, 2)]);
    out.clear();
    feed(&mut op, &[("a", 8)], &mut out);
    assert_eq!(out, vec![cor("a", 0, 27, 3, 4)], "previous = 1 + 2, the results it replaces");
    out.clear();
    op.on_watermark(10_000, &mut out);
    assert!(out.is_empty());
    assert_eq!(op.stats().corrections, 1);
}

#[test]
fn late_record_bridging_emitted_and_open_sessions_defers_the_correction() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Correct { max_lateness: ms(100) }, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0)], &mut out);
    op.on_watermark(9, &mut out);
    assert_eq!(out, vec![fin("a", 0, 10, 1)]);
    out.clear();
    feed(&mut op, &[("a", 15), ("a", 8)], &mut out); // [8,18) bridges [0,10) and [15,25)
    assert!(out.is_empty(), "the merged session [0,25) is not complete yet");
    feed(&mut op, &[("a", 20)], &mut out);
    op.on_watermark(29, &mut out);
    assert_eq!(out, vec![cor("a", 0, 30, 1, 4)]);
    assert_eq!(op.stats().fired, 1);
}

#[test]
fn late_record_beyond_max_lateness_is_emitted_late() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Correct { max_lateness: ms(20) }, 0);
    let mut out = Vec::new();
    feed(&mut op, &[("a", 0)], &mut out);
    op.on_watermark(29, &mut out); // [0,10): corrections until watermark 29
    out.clear();
    feed(&mut op, &[("a", 5)], &mut out);
    assert_eq!(out, vec![Ev::Late { key: k("a"), timestamp: 5, input: () }]);
    out.clear();
    // Its own session [9,19) could still be corrected, but it overlaps [0,10), which cannot.
    feed(&mut op, &[("a", 9)], &mut out);
    assert_eq!(out, vec![Ev::Late { key: k("a"), timestamp: 9, input: () }], "overlaps the expired [0,10)");
    assert_eq!(op.stats().late_side_output, 2);
}

#[test]
fn output_is_ordered_by_session_end_then_key() {
    let scope = StateScope::in_memory();
    let mut op = open(&scope, LatePolicy::Drop, 0);
    let mut out = Vec::new();
    // "b" starts first but is extended past "a" and "c".
    feed(&mut op, &[("b", 0), ("c", 3), ("a", 3), ("b", 8), ("b", 16)], &mut out);
    op.on_watermark(100, &mut out);
    assert_eq!(out, vec![fin("a", 3, 13, 1), fin("c", 3, 13, 1), fin("b", 0, 26, 3)]);
}

#[test]
fn restart_from_committed_state_resumes_identical_output() {
    let input: Vec<(&str, i64)> = vec![
        ("a", 0), ("b", 4), ("a", 6), ("a", 30), ("b", 2), ("a", 18), ("b", 40), ("a", 12), ("c", 41),
        ("a", 50), ("b", 45), ("c", 20), ("a", 44), ("b", 80), ("c", 70), ("a", 90),
    ];
    let late = LatePolicy::Correct { max_lateness: ms(25) };
    let run = |op: &mut SessionWindows<String, Count>, from: usize, stop: Option<usize>, out: &mut Vec<Ev>| {
        for (i, (key, ts)) in input.iter().enumerate().skip(from) {
            op.process(k(key), *ts, &(), out);
            if i % 2 == 1 {
                op.on_watermark(ts - 12, out);
            }
            if Some(i) == stop {
                return;
            }
        }
        op.on_watermark(i64::MAX, out);
    };
    for commit_at in [1, 5, 8, 12] {
        let mut reference = open(&StateScope::in_memory(), late, 3);
        let mut expected = Vec::new();
        run(&mut reference, 0, Some(commit_at), &mut expected);
        let mark = expected.len();
        run(&mut reference, commit_at + 1, None, &mut expected);

        let scope = StateScope::in_memory();
        let mut first = open(&scope, late, 3);
        let mut lost = Vec::new();
        run(&mut first, 0, Some(commit_at), &mut lost);
        let mut b = WriteBatch::new();
        first.flush_into(&mut b).expect("flush");
        scope.backend().apply(b).expect("apply");
        run(&mut first, commit_at + 1, Some(commit_at + 3), &mut lost); // uncommitted, lost
        drop(first);
        let mut resumed = open(&scope, late, 3);
        let mut after = Vec::new();
        run(&mut resumed, commit_at + 1, None, &mut after);
        assert_eq!(after, expected[mark..], "commit after record {commit_at}");
        assert_eq!(resumed.stats(), reference.stats());
    }
}

#[test]
fn zero_gap_is_a_config_error() {
    let r = SessionWindows::<String, Count>::new(&StateScope::in_memory(), "s", ms(0), Count, ms(0), LatePolicy::Drop);
    assert!(matches!(r, Err(Error::Config(_))));
}
