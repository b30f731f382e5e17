//! Event time through the runtime: what a stall, a restart, a bad clock or a truncated log must not do.
//! Each test is a scenario a reliability probe found (a stalled process taken for idle partitions, stream
//! time lost at a restart, one outlier timestamp moving the watermark past all the data, offsets reused
//! after the log lost committed records).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use rtb_stream::log::{EmbeddedLog, ProduceRecord};
use rtb_stream::runtime::{JobConfig, Output, Runtime, Upstream};
use rtb_stream::state::{MemoryBackend, StoreBackend, WriteBatch};
use rtb_stream::time::{WatermarkConfig, DAY, HOUR};
use rtb_stream::window::{Count, LatePolicy, Tumbling, WindowEvent, WindowedAggregate};
use rtb_stream::{Context, DeadLetter, Operator, Record, SourceCoord, StateScope, Timestamp};

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    rtb_stream::span::from_ms(v)
}

/// Counts records per key in 10-second windows; writes `key,start,count` to `out`, late records to the
/// runtime's late output; counts processed records in `seen`.
struct Windows {
    windows: WindowedAggregate<String, Count, Tumbling>,
    events: Vec<WindowEvent<String, u64, ()>>,
    seen: Arc<AtomicU64>,
}

impl Windows {
    fn emit(&mut self, ctx: &mut Context<'_, Output>) {
        for ev in self.events.drain(..) {
            match ev {
                WindowEvent::Final { key, window, acc } => ctx.emit(Output {
                    topic: "out".into(),
                    record: ProduceRecord {
                        key: None,
                        payload: format!("{key},{},{acc}", window.start).into_bytes(),
                        timestamp: window.end,
                        partition: Some(0),
                        origin: None,
                    },
                }),
                WindowEvent::Late { key, timestamp, .. } => ctx.late(DeadLetter {
                    source: SourceCoord::new("in", 0, 0),
                    stage: "windows".into(),
                    reason: format!("LATE: {key} at {timestamp}"),
                    payload: String::new(),
                }),
                WindowEvent::Correction { .. } => {}
            }
        }
    }
}

impl Operator for Windows {
    type Key = String;
    type In = ();
    type Out = Output;
    fn process(&mut self, r: Record<String, ()>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.windows.process(r.key, r.timestamp, &(), &mut self.events);
        self.emit(ctx);
        Ok(())
    }
    fn on_watermark(&mut self, wm: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.windows.on_watermark(wm, &mut self.events);
        self.emit(ctx);
        Ok(())
    }
    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.windows.flush_into(batch)
    }
}

fn windows_factory(
    seen: Arc<AtomicU64>,
) -> impl Fn(&rtb_stream::runtime::TaskInfo, &StateScope) -> rtb_stream::Result<Windows> + Send + Sync + 'static {
    move |_, scope| {
        Ok(Windows {
            windows: WindowedAggregate::new(scope, "w", Tumbling::of(ms(10_000)), Count, ms(0), LatePolicy::SideOutput)?,
            events: Vec::new(),
            seen: Arc::clone(&seen),
        })
    }
}

fn results(log: &EmbeddedLog) -> BTreeMap<(String, i64), u64> {
    log.read("out", 0, 0, usize::MAX)
        .expect("read")
        .iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.payload).into_owned();
            let p: Vec<&str> = text.split(',').collect();
            ((p[0].to_string(), p[1].parse().expect("start")), p[2].parse().expect("count"))
        })
        .collect()
}

fn with_origin(key: &str, ts: Timestamp, origin_partition: u32, origin_offset: u64) -> ProduceRecord {
    ProduceRecord {
        origin: Some(SourceCoord::new("upstream", origin_partition, origin_offset)),
        partition: Some(0),
        ..keyed(key, ts)
    }
}

fn log_with(topics: &[(&str, u32)]) -> EmbeddedLog {
    let log = EmbeddedLog::in_memory();
    for (t, n) in topics {
        log.create_topic(t, topic(*n)).expect("create");
    }
    log
}

#[test]
fn a_stalled_process_does_not_make_a_lagging_upstream_partition_idle() {
    // A repartitioned input interleaves two upstream partitions: upstream 1 has sent one record, then
    // upstream 0 a long run, then upstream 1 the rest. The process stalls for 15 s (longer than the idle
    // timeout) while upstream 1's records are still unread in the log: they must not become late.
    let log = log_with(&[("in", 1), ("out", 1), ("late", 1), ("dlq", 1)]);
    let mut recs = vec![with_origin("b", 1_000, 1, 0)];
    recs.extend((0..60).map(|i| with_origin("a", 1_000 + i * 1_000, 0, i as u64)));
    recs.extend((1..30).map(|i| with_origin("b", 1_000 + i * 500, 1, i as u64)));
    log.append_batch("in", recs).expect("append");
    let seen = Arc::new(AtomicU64::new(0));
    let seen_by_clock = Arc::clone(&seen);
    // Processing time stands still, then jumps 15 s once 20 records were processed (a SIGSTOP, a GC pause).
    let clock = Arc::new(move || if seen_by_clock.load(Ordering::SeqCst) >= 20 { 15_000 } else { 0 });
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new())).with_clock(clock);
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: Some(ms(1_000)) },
        max_poll_records: 10,
        late_topic: Some("late".into()),
        dead_letter_topic: Some("dlq".into()),
        upstream: vec![Upstream { input: "in".into(), origin_topic: "upstream".into(), origin_partitions: 2 }],
        ..batch_job("g", &["in"])
    };
    rt.spawn(cfg, decode_key, windows_factory(Arc::clone(&seen))).expect("spawn");
    let report = join_within(rt, 30).expect("join");
    assert_eq!(report.groups["g"].late_records, 0, "no record of the lagging upstream partition was late");
    let got = results(&log);
    assert_eq!(got.values().sum::<u64>(), 90, "every record counted in its window: {got:?}");
    assert_eq!(got[&("b".to_string(), 10_000)], 12, "upstream 1's later records landed in their windows");
}

#[test]
fn stream_time_survives_a_restart_so_idle_partitions_still_close_the_last_windows() {
    // One task reads two inputs: `x` reached 35 s, `y` only 5 s. While both are active the watermark is
    // 5 s; once both are idle it may advance to 35 s and close the windows before it. Stopped (cleanly)
    // before the idle timeout and restarted with nothing new to read, the job must still close them.
    let log = log_with(&[("x", 1), ("y", 1), ("out", 1), ("late", 1)]);
    log.append_batch("x", (0..8).map(|i| keyed("a", i * 5_000)).collect()).expect("append");
    log.append("y", keyed("b", 5_000)).expect("append");
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let now = Arc::new(AtomicI64::new(0));
    let cfg = || JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: Some(ms(1_000)) },
        late_topic: Some("late".into()),
        ..JobConfig::new("g", ["x", "y"])
    };
    let seen = Arc::new(AtomicU64::new(0));
    {
        let clock_now = Arc::clone(&now);
        let mut rt =
            Runtime::new(log.clone(), Arc::clone(&state)).with_clock(Arc::new(move || clock_now.load(Ordering::SeqCst)));
        rt.spawn(cfg(), decode_key, windows_factory(Arc::clone(&seen))).expect("spawn");
        wait_until("every record read", 30, || seen.load(Ordering::SeqCst) == 9);
        rt.shutdown_token().trigger();
        join_within(rt, 30).expect("join");
    }
    assert!(results(&log).is_empty(), "the watermark (5 s) closed no window yet");
    // Restart: nothing new arrives; the partitions become idle.
    now.store(100_000, Ordering::SeqCst);
    let clock_now = Arc::clone(&now);
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state))
        .with_clock(Arc::new(move || clock_now.load(Ordering::SeqCst) + 5_000));
    rt.spawn(cfg(), decode_key, windows_factory(Arc::new(AtomicU64::new(0)))).expect("spawn");
    now.store(200_000, Ordering::SeqCst); // quiet for longer than the idle timeout
    wait_until("the windows before 35 s closed", 30, || results(&log).len() == 4);
    rt.shutdown_token().trigger();
    join_within(rt, 30).expect("join");
    let got = results(&log);
    assert_eq!(got[&("a".to_string(), 0)], 2);
    assert_eq!(got[&("b".to_string(), 0)], 1);
    assert_eq!(got[&("a".to_string(), 20_000)], 2);
}

/// A batch job over `in` judging clocks with a 1-hour `max_ahead`, late and dead letters kept.
fn outlier_job() -> JobConfig {
    JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: None },
        late_topic: Some("late".into()),
        dead_letter_topic: Some("dlq".into()),
        max_ahead: Some(ms(HOUR)),
        ..batch_job("g", &["in"])
    }
}

#[test]
fn one_outlier_timestamp_is_set_aside_and_does_not_make_the_rest_late() {
    // Recorded traffic of 2025 with one line a year ahead (a device with a bad clock) in the middle.
    let log = log_with(&[("in", 1), ("out", 1), ("late", 1), ("dlq", 1)]);
    let base = 1_735_689_600_000; // 2025-01-01
    let mut recs: Vec<ProduceRecord> = (0..50).map(|i| keyed("a", base + i * 1_000)).collect();
    recs.insert(25, keyed("a", base + 365 * DAY));
    recs.extend((50..100).map(|i| keyed("a", base + i * 1_000)));
    log.append_batch("in", recs).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    let cfg = outlier_job();
    let seen = Arc::new(AtomicU64::new(0));
    rt.spawn(cfg, decode_key, windows_factory(Arc::clone(&seen))).expect("spawn");
    let report = join_within(rt, 30).expect("join");
    let g = report.groups["g"];
    assert_eq!((g.late_records, g.dead_letters), (0, 1), "nothing late; the outlier set aside");
    assert_eq!(results(&log).values().sum::<u64>(), 100, "every other record counted");
    let dl: DeadLetter =
        serde_json::from_slice(&log.read("dlq", 0, 0, 1).expect("dlq")[0].payload).expect("dead letter");
    assert!(dl.reason.starts_with("TIMESTAMP_OUTLIER"), "{}", dl.reason);
    assert_eq!(dl.source.offset, 25, "the outlier's own coordinates");
}

#[test]
fn a_real_jump_in_time_is_not_an_outlier() {
    // Two days of traffic with a quiet night between them: the first record after the gap is followed by
    // others at the new time, so it is a jump, not a bad clock.
    let log = log_with(&[("in", 1), ("out", 1), ("late", 1), ("dlq", 1)]);
    let day1 = 1_735_689_600_000;
    let mut recs: Vec<ProduceRecord> = (0..20).map(|i| keyed("a", day1 + i * 1_000)).collect();
    recs.extend((0..20).map(|i| keyed("a", day1 + 20 * HOUR + i * 1_000)));
    log.append_batch("in", recs).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    let cfg = outlier_job();
    rt.spawn(cfg, decode_key, windows_factory(Arc::new(AtomicU64::new(0)))).expect("spawn");
    let report = join_within(rt, 30).expect("join");
    assert_eq!((report.groups["g"].late_records, report.groups["g"].dead_letters), (0, 0));
    assert_eq!(results(&log).values().sum::<u64>(), 40);
}

#[test]
fn a_record_beyond_the_correction_horizon_is_not_applied_but_reported_late() {
    // `max_behind`: a click from year 1 (or two days late) reaches no operator: it goes to the late output.
    let log = log_with(&[("in", 1), ("out", 1), ("late", 1)]);
    let base = 1_735_689_600_000;
    let mut recs: Vec<ProduceRecord> = (0..10).map(|i| keyed("a", base + i * 1_000)).collect();
    recs.push(keyed("a", -62_135_596_800_000)); // 0001-01-01
    recs.push(keyed("a", base - 2 * DAY));
    log.append_batch("in", recs).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: None },
        late_topic: Some("late".into()),
        max_behind: Some(ms(DAY)),
        ..batch_job("g", &["in"])
    };
    let seen = Arc::new(AtomicU64::new(0));
    rt.spawn(cfg, decode_key, windows_factory(Arc::clone(&seen))).expect("spawn");
    let report = join_within(rt, 30).expect("join");
    assert_eq!(seen.load(Ordering::SeqCst), 10, "the operator never saw the two old records");
    assert_eq!(report.groups["g"].late_records, 2);
    let late: Vec<DeadLetter> = log
        .read("late", 0, 0, 10)
        .expect("late")
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).expect("late record"))
        .collect();
    assert_eq!(late.iter().map(|l| l.source.offset).collect::<Vec<_>>(), vec![10, 11]);
}

#[test]
fn a_group_committed_past_the_end_of_the_log_is_refused() {
    // The group applied 10 records; the log it finds now has only 4 (lost or replaced). Reading on would
    // give new records the offsets of applied ones, and skip them.
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let first = log_with(&[("in", 1)]);
    first.append_batch("in", (0..10).map(|i| keyed("a", i)).collect()).expect("append");
    let mut rt = Runtime::new(first, Arc::clone(&state));
    rt.spawn(batch_job("g", &["in"]), decode_key, count_factory(None)).expect("spawn");
    join_within(rt, 30).expect("join");

    let second = log_with(&[("in", 1)]);
    second.append_batch("in", (0..4).map(|i| keyed("a", i)).collect()).expect("append");
    let mut rt = Runtime::new(second, state);
    let err = rt.spawn(batch_job("g", &["in"]), decode_key, count_factory(None)).expect_err("refused");
    assert!(
        matches!(&err, rtb_stream::Error::LogBehindConsumer { committed: 10, end: 4, partition: 0, .. }),
        "{err}"
    );
}

/// Forwards every record to `merged`, without an origin (as an operator's own output is).
struct Forward;

impl Operator for Forward {
    type Key = String;
    type In = ();
    type Out = Output;
    fn process(&mut self, r: Record<String, ()>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        ctx.emit(Output { topic: "merged".into(), record: ProduceRecord { partition: Some(0), ..keyed(&r.key, r.timestamp) } });
        Ok(())
    }
}

#[test]
fn records_that_jobs_of_the_runtime_produce_are_not_judged_as_outliers() {
    // A job of the runtime writes a topic whose records jump two hours ahead and back (an operator's output
    // interleaves what several tasks produce). Its clocks are not a client's: nothing is set aside there.
    let log = log_with(&[("raw", 1), ("merged", 1), ("out", 1), ("late", 1), ("dlq", 1)]);
    let base = 1_735_689_600_000;
    let mut recs: Vec<ProduceRecord> = (0..20).map(|i| keyed("a", base + i * 1_000)).collect();
    recs.insert(10, keyed("a", base + 2 * HOUR));
    log.append_batch("raw", recs).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    let upstream = JobConfig { outputs: vec!["merged".into()], ..batch_job("forward", &["raw"]) };
    rt.spawn(upstream, decode_key, |_, _| Ok(Forward)).expect("spawn");
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(3 * HOUR), idle_timeout: None },
        late_topic: Some("late".into()),
        dead_letter_topic: Some("dlq".into()),
        max_ahead: Some(ms(HOUR)),
        ..batch_job("g", &["merged"])
    };
    rt.spawn(cfg, decode_key, windows_factory(Arc::new(AtomicU64::new(0)))).expect("spawn");
    let report = join_within(rt, 30).expect("join");
    assert_eq!(report.groups["g"].dead_letters, 0, "an input produced inside the runtime is not judged");
    assert_eq!(results(&log).values().sum::<u64>(), 21);
}

#[test]
fn records_that_jobs_of_the_runtime_produce_are_applied_however_far_behind_the_watermark() {
    // A producer task that lags writes a record (a refund for a duplicate click, say) three days behind what
    // another producer task already wrote: the consumer's watermark is far ahead of it. The correction
    // horizon is for clients' clocks; the system's own decision must be applied, not set aside as late.
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let log = log_with(&[("raw", 1), ("merged", 1), ("late", 1)]);
    let base = 1_735_689_600_000;
    log.append_batch("raw", vec![keyed("ahead", base + 3 * DAY), keyed("behind", base)]).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    let upstream = JobConfig { outputs: vec!["merged".into()], ..batch_job("forward", &["raw"]) };
    rt.spawn(upstream, decode_key, |_, _| Ok(Forward)).expect("spawn");
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: None },
        late_topic: Some("late".into()),
        max_behind: Some(ms(DAY)),
        ..batch_job("g", &["merged"])
    };
    rt.spawn(cfg, decode_key, count_factory(None)).expect("spawn");
    let report = join_within(rt, 30).expect("join");
    assert_eq!(report.groups["g"].late_records, 0);
    let counts = committed_counts(&state, "g", 1);
    assert_eq!(counts, direct_count(&["ahead".to_string(), "behind".to_string()]), "both applied");
    assert_eq!(log.end_offset("late", 0).expect("late"), 0);
}

#[test]
fn a_drain_closes_what_the_data_closes_without_the_idle_timeout_and_a_later_run_goes_on() {
    // A live job (no batch mode) with an idle timeout of an hour: draining reads the inputs to their end,
    // counts every partition idle — the watermark reaches the latest event time seen minus the allowed
    // out-of-orderness — fires the windows that closes, commits and stops. Not the end of time: a second
    // run of the same group on more data counts it in later windows, and nothing is late.
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let log = log_with(&[("in", 1), ("in2", 1), ("out", 1), ("late", 1)]);
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(5_000), idle_timeout: Some(ms(3_600_000)) },
        late_topic: Some("late".into()),
        ..JobConfig::new("g", ["in", "in2"])
    };
    // `in2` is silent: without the drain it would hold the watermark for an hour.
    log.append_batch("in", (0..30).map(|i| keyed("a", i * 1_000)).collect()).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    rt.spawn(cfg.clone(), decode_key, windows_factory(Arc::new(AtomicU64::new(0)))).expect("spawn");
    rt.drain_token().trigger();
    let report = join_within(rt, 30).expect("a drained runtime stops by itself");
    assert_eq!(report.groups["g"].records_in, 30);
    // Latest event time 29 000, out-of-orderness 5 000: watermark 24 000 closes [0, 10 000) and [10 000, 20 000).
    let first: BTreeMap<(String, i64), u64> = results(&log);
    assert_eq!(first, BTreeMap::from([(("a".to_string(), 0), 10), (("a".to_string(), 10_000), 10)]));
    assert_eq!(rtb_stream::runtime::committed_watermark(&state, "g", 0).expect("wm"), Some(24_000));

    log.append_batch("in2", (30..50).map(|i| keyed("a", i * 1_000)).collect()).expect("append");
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    rt.spawn(cfg, decode_key, windows_factory(Arc::new(AtomicU64::new(0)))).expect("spawn");
    rt.drain_token().trigger();
    let report = join_within(rt, 30).expect("second drain");
    assert_eq!(report.groups["g"].late_records, 0, "the first drain did not move time to the end");
    let all = results(&log);
    assert_eq!(all[&("a".to_string(), 20_000)], 10);
    assert_eq!(all[&("a".to_string(), 30_000)], 10);
    assert!(!all.contains_key(&("a".to_string(), 40_000)), "[40 000, 50 000) is still open at 44 000");
}
