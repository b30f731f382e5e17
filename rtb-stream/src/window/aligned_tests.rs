use super::*;
use crate::window::{Count, Hopping, Sum, Tumbling};

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    crate::span::from_ms(v)
}

type Ev = WindowEvent<String, u64, ()>;

fn counts(late: LatePolicy, grace: i64) -> (StateScope, WindowedAggregate<String, Count, Tumbling>) {
    let scope = StateScope::in_memory();
    let op = WindowedAggregate::new(&scope, "w", Tumbling::of(ms(100)), Count, ms(grace), late).expect("open");
    (scope, op)
}

fn k(s: &str) -> String {
    s.to_string()
}

fn fin(key: &str, start: i64, end: i64, acc: u64) -> Ev {
    Ev::Final { key: k(key), window: Window::new(start, end), acc }
}

fn commit<G: Aggregate, W: WindowAssigner>(scope: &StateScope, op: &mut WindowedAggregate<String, G, W>)
where
    G::In: Clone,
{
    let mut b = WriteBatch::new();
    op.flush_into(&mut b).expect("flush");
    scope.backend().apply(b).expect("apply");
}

#[test]
fn record_exactly_at_window_end_goes_to_next_window() {
    let (_s, mut op) = counts(LatePolicy::Drop, 0);
    let mut out = Vec::new();
    op.process(k("a"), 99, &(), &mut out);
    op.process(k("a"), 100, &(), &mut out);
    op.process(k("a"), 100, &(), &mut out);
    op.on_watermark(99, &mut out);
    assert_eq!(out, vec![fin("a", 0, 100, 1)], "[0,100) completes at watermark 99 with one record");
    out.clear();
    op.on_watermark(199, &mut out);
    assert_eq!(out, vec![fin("a", 100, 200, 2)]);
}

#[test]
fn window_does_not_complete_one_ms_before_end_minus_one() {
    let (_s, mut op) = counts(LatePolicy::Drop, 0);
    let mut out = Vec::new();
    op.process(k("a"), 50, &(), &mut out);
    op.on_watermark(98, &mut out);
    assert!(out.is_empty());
    op.on_watermark(99, &mut out);
    assert_eq!(out, vec![fin("a", 0, 100, 1)]);
}

#[test]
fn record_exactly_at_the_watermark_is_on_time_while_its_window_is_open() {
    let (_s, mut op) = counts(LatePolicy::Drop, 0);
    let mut out = Vec::new();
    op.process(k("a"), 10, &(), &mut out);
    op.on_watermark(50, &mut out);
    op.process(k("a"), 50, &(), &mut out);
    assert!(out.is_empty());
    op.on_watermark(99, &mut out);
    assert_eq!(out, vec![fin("a", 0, 100, 2)]);
    assert_eq!(op.stats().late_dropped, 0);
}

#[test]
fn record_at_watermark_equal_to_end_minus_one_is_late() {
    let (_s, mut op) = counts(LatePolicy::Drop, 0);
    let mut out = Vec::new();
    op.on_watermark(99, &mut out);
    op.process(k("a"), 99, &(), &mut out);
    op.on_watermark(1_000, &mut out);
    assert!(out.is_empty());
    assert_eq!(op.stats().late_dropped, 1);
}

#[test]
fn grace_delays_completion_and_accepts_records_until_then() {
    let (_s, mut op) = counts(LatePolicy::Drop, 20);
    let mut out = Vec::new();
    op.process(k("a"), 10, &(), &mut out);
    op.on_watermark(118, &mut out);
    op.process(k("a"), 20, &(), &mut out); // behind the watermark but within grace
    assert!(out.is_empty());
    op.on_watermark(119, &mut out);
    assert_eq!(out, vec![fin("a", 0, 100, 2)]);
}

#[test]
fn record_after_grace_with_drop_is_counted_and_ignored() {
    let (_s, mut op) = counts(LatePolicy::Drop, 20);
    let mut out = Vec::new();
    op.process(k("a"), 10, &(), &mut out);
    op.on_watermark(119, &mut out);
    out.clear();
    op.process(k("a"), 30, &(), &mut out);
    op.on_watermark(10_000, &mut out);
    assert!(out.is_empty());
    assert_eq!(*op.stats(), WindowStats { fired: 1, late_dropped: 1, late_side_output: 0, corrections: 0 });
}

#[test]
fn record_after_grace_with_side_output_is_emitted_late() {
    let (_s, mut op) = counts(LatePolicy::SideOutput, 20);
    let mut out = Vec::new();
    op.process(k("a"), 10, &(), &mut out);
    op.on_watermark(119, &mut out);
    out.clear();
    op.process(k("a"), 30, &(), &mut out);
    assert_eq!(out, vec![Ev::Late { key: k("a"), timestamp: 30, input: () }]);
    assert_eq!(op.stats().late_side_output, 1);
}

#[test]
fn record_after_grace_with_correct_emits_correction_then_late_beyond_max_lateness() {
    let (_s, mut op) = counts(LatePolicy::Correct { max_lateness: ms(50) }, 20);
    let mut out = Vec::new();
    op.process(k("a"), 10, &(), &mut out);
    op.on_watermark(119, &mut out);
    assert_eq!(out, vec![fin("a", 0, 100, 1)]);
    out.clear();
    op.on_watermark(168, &mut out); // 99 + 20 + 50 = 169 is where corrections stop
    op.process(k("a"), 30, &(), &mut out);
    assert_eq!(
        out,
        vec![Ev::Correction { key: k("a"), window: Window::new(0, 100), previous: 1, current: 2 }]
    );
    out.clear();
    op.on_watermark(169, &mut out);
    op.process(k("a"), 40, &(), &mut out);
    assert_eq!(out, vec![Ev::Late { key: k("a"), timestamp: 40, input: () }]);
    assert_eq!(*op.stats(), WindowStats { fired: 1, late_dropped: 0, late_side_output: 1, corrections: 1 });
    assert_eq!(op.keys(), 0, "the window's state is dropped once it can no longer be corrected");
}

#[test]
fn correction_of_a_window_that_had_no_record_starts_from_default() {
    let (_s, mut op) = counts(LatePolicy::Correct { max_lateness: ms(1_000) }, 0);
    let mut out = Vec::new();
    op.on_watermark(150, &mut out);
    op.process(k("a"), 5, &(), &mut out);
    op.process(k("a"), 6, &(), &mut out);
    assert_eq!(
        out,
        vec![
            Ev::Correction { key: k("a"), window: Window::new(0, 100), previous: 0, current: 1 },
            Ev::Correction { key: k("a"), window: Window::new(0, 100), previous: 1, current: 2 },
        ]
    );
    out.clear();
    op.on_watermark(10_000, &mut out);
    assert!(out.is_empty(), "a corrected window is never emitted as Final");
}

#[test]
fn output_is_ordered_by_window_end_then_key() {
    let (_s, mut op) = counts(LatePolicy::Drop, 0);
    let mut out = Vec::new();
    for (key, ts) in [("c", 150), ("b", 20), ("a", 120), ("c", 30), ("a", 40), ("b", 250)] {
        op.process(k(key), ts, &(), &mut out);
    }
    op.on_watermark(1_000, &mut out);
    assert_eq!(
        out,
        vec![
            fin("a", 0, 100, 1),
            fin("b", 0, 100, 1),
            fin("c", 0, 100, 1),
            fin("a", 100, 200, 1),
            fin("c", 100, 200, 1),
            fin("b", 200, 300, 1),
        ]
    );
}

#[test]
fn watermark_never_goes_back() {
    let (_s, mut op) = counts(LatePolicy::Drop, 0);
    let mut out = Vec::new();
    op.on_watermark(150, &mut out);
    op.on_watermark(20, &mut out);
    assert_eq!(op.watermark(), Some(150));
    op.process(k("a"), 50, &(), &mut out);
    assert_eq!(op.stats().late_dropped, 1);
}

#[test]
fn hopping_overlap_record_counts_in_every_window() {
    let scope = StateScope::in_memory();
    let mut op = WindowedAggregate::new(&scope, "h", Hopping::of(ms(300), ms(100)), Sum, ms(0), LatePolicy::Drop)
        .expect("open");
    let mut out = Vec::new();
    op.process(k("a"), 250, &5, &mut out);
    op.process(k("a"), 50, &1, &mut out);
    op.process(k("a"), 350, &10, &mut out);
    op.on_watermark(10_000, &mut out);
    let got: Vec<(i64, i64, i64)> = out
        .iter()
        .map(|e| match e {
            WindowEvent::Final { window, acc, .. } => (window.start, window.end, *acc),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![(-200, 100, 1), (-100, 200, 1), (0, 300, 6), (100, 400, 15), (200, 500, 15), (300, 600, 10)]
    );
}

#[test]
fn hopping_record_late_for_one_window_and_on_time_for_others() {
    let scope = StateScope::in_memory();
    let mut op = WindowedAggregate::new(&scope, "h", Hopping::of(ms(300), ms(100)), Count, ms(0), LatePolicy::SideOutput)
        .expect("open");
    let mut out = Vec::new();
    op.process(k("a"), 210, &(), &mut out);
    op.on_watermark(299, &mut out); // completes [0,300)
    assert_eq!(out, vec![fin("a", 0, 300, 1)]);
    out.clear();
    op.process(k("a"), 250, &(), &mut out); // late for [0,300), on time for [100,400) and [200,500)
    assert_eq!(out, vec![Ev::Late { key: k("a"), timestamp: 250, input: () }], "reported once");
    out.clear();
    op.on_watermark(10_000, &mut out);
    assert_eq!(out, vec![fin("a", 100, 400, 2), fin("a", 200, 500, 2)]);
}

#[test]
fn hopping_with_correct_corrects_only_the_complete_window() {
    let scope = StateScope::in_memory();
    let late = LatePolicy::Correct { max_lateness: ms(1_000) };
    let mut op = WindowedAggregate::new(&scope, "h", Hopping::of(ms(200), ms(100)), Count, ms(0), late).expect("open");
    let mut out = Vec::new();
    op.process(k("a"), 150, &(), &mut out);
    op.on_watermark(199, &mut out);
    out.clear();
    op.process(k("a"), 160, &(), &mut out);
    assert_eq!(
        out,
        vec![Ev::Correction { key: k("a"), window: Window::new(0, 200), previous: 1, current: 2 }]
    );
    out.clear();
    op.on_watermark(299, &mut out);
    assert_eq!(out, vec![fin("a", 100, 300, 2)]);
}

/// Feeds `input[from..]` (key, ts) with a watermark after every third record (by absolute index), calling
/// `on_commit` after record `commit_at`, then finishes with the maximal watermark.
fn drive(
    op: &mut WindowedAggregate<String, Count, Tumbling>,
    input: &[(&str, i64)],
    from: usize,
    out: &mut Vec<Ev>,
    mut on_commit: impl FnMut(&mut WindowedAggregate<String, Count, Tumbling>, &mut Vec<Ev>),
    commit_at: usize,
) {
    for (i, (key, ts)) in input.iter().enumerate().skip(from) {
        op.process(k(key), *ts, &(), out);
        if i % 3 == 2 {
            op.on_watermark(ts - 30, out);
        }
        if i == commit_at {
            on_commit(op, out);
        }
    }
    op.on_watermark(i64::MAX, out);
}

#[test]
fn restart_from_committed_state_resumes_identical_output() {
    let input = [
        ("a", 10), ("b", 50), ("a", 120), ("b", 90), ("a", 5), ("c", 130), ("b", 160), ("a", 210),
        ("c", 100), ("a", 95), ("b", 260), ("c", 305), ("a", 170), ("b", 330), ("a", 390), ("c", 250),
    ];
    let late = LatePolicy::Correct { max_lateness: ms(60) };
    for commit_at in [0, 4, 7, 11] {
        // Reference: one uninterrupted run; remember the output length at the commit.
        let (_s, mut reference) = counts(late, 10);
        let mut expected = Vec::new();
        let mut mark = 0;
        drive(&mut reference, &input, 0, &mut expected, |_, out| mark = out.len(), commit_at);

        // Run that commits at `commit_at`, keeps going (uncommitted work is lost), then restarts.
        let (scope, mut first) = counts(late, 10);
        let mut lost = Vec::new();
        drive(&mut first, &input, 0, &mut lost, |op, _| commit(&scope, op), commit_at);
        drop(first);
        let mut resumed =
            WindowedAggregate::new(&scope, "w", Tumbling::of(ms(100)), Count, ms(10), late).expect("reopen");
        let mut after = Vec::new();
        drive(&mut resumed, &input, commit_at + 1, &mut after, |_, _| {}, usize::MAX);
        assert_eq!(after, expected[mark..], "commit after record {commit_at}");
        assert_eq!(resumed.stats(), reference.stats());
        assert_eq!(resumed.watermark(), reference.watermark());
    }
}

#[test]
fn invalid_parameters_fail_to_open() {
    let scope = StateScope::in_memory();
    let r = WindowedAggregate::<String, _, _>::new(&scope, "x", Tumbling::of(ms(0)), Count, ms(0), LatePolicy::Drop);
    assert!(matches!(r, Err(crate::Error::Config(_))));
    // Spans are whole milliseconds of event time: a window shorter than 1 ms is no window. (A negative grace,
    // refused here before, cannot be written any more: spans are `Duration`s.)
    let sub_ms = std::time::Duration::from_micros(500);
    let r = WindowedAggregate::<String, _, _>::new(&scope, "x", Tumbling::of(sub_ms), Count, ms(0), LatePolicy::Drop);
    assert!(matches!(r, Err(crate::Error::Config(_))));
}
