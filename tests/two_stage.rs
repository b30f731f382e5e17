//! A two-stage job as a new user writes it (issue: "a two-stage job silently loses data"): page views keyed
//! by user in a 4-partition topic, a `Repartition` stage re-keying them by page into an 8-partition topic,
//! then a 1-minute tumbling count per page. Both stages run in one runtime in batch mode (`stop_at_end`).
//!
//! Before the fix the downstream task read its input's end offsets when it started (0: the repartition
//! stage had not written yet) and ended at once with 0 windows; run one after the other, it counted 624 of
//! 1,200 views, because its watermark ran ahead of the upstream partitions it had not heard from yet, and
//! the 576 late ones were visible only in the window's own `stats()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rtb_stream::log::{EmbeddedLog, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{JobConfig, Output, Repartition, Runtime, RuntimeReport, Upstream};
use rtb_stream::state::{MemoryBackend, StateScope, WriteBatch};
use rtb_stream::time::WatermarkConfig;
use rtb_stream::window::{Count, LatePolicy, Tumbling, WindowEvent, WindowedAggregate};
use rtb_stream::{Context, DeadLetter, Operator, Record, Timestamp};

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    rtb_stream::span::from_ms(v)
}

const VIEWS: i64 = 1_200;
const PAGES: i64 = 7;
const USERS: i64 = 50;

/// `user,page` as the payload; the record timestamp is the view's event time.
fn view(i: i64) -> (String, String, Timestamp) {
    let user = format!("user-{}", (i * 31) % USERS);
    let page = format!("page-{}", (i * 17) % PAGES);
    // 20 minutes of views; users' partitions progress at very different speeds in the log (all of a
    // partition's views are appended before the next partition's when the stages run one after another).
    let ts = 1_700_000_000_000 + i * 1_000;
    (user, page, ts)
}

fn decode_view(r: &LogRecord) -> Result<Record<String, String>, String> {
    let text = std::str::from_utf8(&r.payload).map_err(|e| e.to_string())?;
    let (_, page) = text.split_once(',').ok_or_else(|| format!("not `user,page`: {text}"))?;
    Ok(Record::new(page.to_string(), text.to_string(), r.timestamp, r.coord()))
}

/// Counts views per page per minute; late views go to the runtime's late-records output.
struct ViewsPerMinute {
    windows: WindowedAggregate<String, Count, Tumbling>,
    events: Vec<WindowEvent<String, u64, ()>>,
}

impl ViewsPerMinute {
    fn emit(&mut self, ctx: &mut Context<'_, Output>) {
        for ev in self.events.drain(..) {
            match ev {
                WindowEvent::Final { key, window, acc } => ctx.emit(Output {
                    topic: "views-per-minute".into(),
                    record: ProduceRecord {
                        key: Some(key.clone().into_bytes()),
                        payload: format!("{key},{},{acc}", window.start).into_bytes(),
                        timestamp: window.end,
                        partition: None,
                        origin: None,
                    },
                }),
                WindowEvent::Late { key, timestamp, .. } => ctx.late(DeadLetter {
                    source: rtb_stream::SourceCoord::new("page-views-by-page", 0, 0),
                    stage: "views-per-minute".into(),
                    reason: format!("LATE: view of {key} at {timestamp}"),
                    payload: String::new(),
                }),
                WindowEvent::Correction { .. } => {}
            }
        }
    }
}

impl Operator for ViewsPerMinute {
    type Key = String;
    type In = String;
    type Out = Output;

    fn process(&mut self, r: Record<String, String>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
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

fn log_with_views() -> EmbeddedLog {
    let log = EmbeddedLog::in_memory();
    let t = |partitions| TopicConfig { partitions, retention: None };
    log.create_topic("page-views", t(4)).expect("topic");
    log.create_topic("page-views-by-page", t(8)).expect("topic");
    log.create_topic("views-per-minute", t(8)).expect("topic");
    log.create_topic("dead-letters", t(1)).expect("topic");
    log.create_topic("late", t(1)).expect("topic");
    let recs = (0..VIEWS)
        .map(|i| {
            let (user, page, ts) = view(i);
            ProduceRecord {
                key: Some(user.clone().into_bytes()),
                payload: format!("{user},{page}").into_bytes(),
                timestamp: ts,
                partition: None,
                origin: None,
            }
        })
        .collect();
    log.append_batch("page-views", recs).expect("append");
    log
}

fn job(group: &str, input: &str) -> JobConfig {
    JobConfig {
        stop_at_end: true,
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: Some(ms(60_000)) },
        dead_letter_topic: Some("dead-letters".into()),
        late_topic: Some("late".into()),
        max_poll_records: 64,
        ..JobConfig::new(group, [input])
    }
}

fn spawn_repartition(rt: &mut Runtime) {
    let cfg = JobConfig { outputs: vec!["page-views-by-page".into()], ..job("by-page", "page-views") };
    rt.spawn(cfg, decode_view, |_, _| {
        Ok(Repartition::new("page-views-by-page", |r: &Record<String, String>| {
            Ok(Some((r.key.clone().into_bytes(), r.value.clone().into_bytes())))
        }))
    })
    .expect("spawn repartition");
}

fn spawn_count(rt: &mut Runtime) {
    let cfg = JobConfig {
        upstream: vec![Upstream {
            input: "page-views-by-page".into(),
            origin_topic: "page-views".into(),
            origin_partitions: 4,
        }],
        ..job("views-per-minute", "page-views-by-page")
    };
    rt.spawn(cfg, decode_view, |_, scope: &StateScope| {
        let windows = WindowedAggregate::new(scope, "views", Tumbling::of(ms(60_000)), Count, ms(0), LatePolicy::SideOutput)?;
        Ok(ViewsPerMinute { windows, events: Vec::new() })
    })
    .expect("spawn count");
}

/// Window results read back from the output topic: (page, window start) → count.
fn counted(log: &EmbeddedLog) -> BTreeMap<(String, i64), u64> {
    let mut out = BTreeMap::new();
    for p in 0..8 {
        for r in log.read("views-per-minute", p, 0, usize::MAX).expect("read") {
            let text = String::from_utf8_lossy(&r.payload).into_owned();
            let parts: Vec<&str> = text.split(',').collect();
            let key = (parts[0].to_string(), parts[1].parse::<i64>().expect("start"));
            assert!(out.insert(key, parts[2].parse::<u64>().expect("count")).is_none(), "one result per window");
        }
    }
    out
}

fn expected() -> BTreeMap<(String, i64), u64> {
    let mut m = BTreeMap::new();
    for i in 0..VIEWS {
        let (_, page, ts) = view(i);
        *m.entry((page, ts - ts.rem_euclid(60_000))).or_insert(0) += 1;
    }
    m
}

fn check(log: &EmbeddedLog, report: &RuntimeReport) {
    let got = counted(log);
    assert_eq!(got.values().sum::<u64>(), VIEWS as u64, "every view counted once");
    assert_eq!(got, expected(), "each page's minute counted exactly");
    let count = report.groups["views-per-minute"];
    assert_eq!(count.late_records, 0, "no view is late: the watermark waited for every upstream partition");
    assert_eq!(count.dead_letters, 0);
    if let Some(by_page) = report.groups.get("by-page") {
        assert_eq!(by_page.records_out, VIEWS as u64);
    }
}

#[test]
fn both_stages_in_one_runtime_count_every_view() {
    let log = log_with_views();
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    // The consumer is spawned first: it must still wait for the repartition stage to finish.
    spawn_count(&mut rt);
    spawn_repartition(&mut rt);
    let report = rt.join().expect("join");
    check(&log, &report);
}

#[test]
fn stages_run_one_after_the_other_count_every_view() {
    let log = log_with_views();
    let state = Arc::new(MemoryBackend::new());
    let mut rt = Runtime::new(log.clone(), state.clone());
    spawn_repartition(&mut rt);
    rt.join().expect("repartition");
    // The repartition topic now holds each upstream partition's views one block after another: a task
    // that tracked only the upstream partitions it had heard from would run its watermark ahead.
    let mut rt = Runtime::new(log.clone(), state);
    spawn_count(&mut rt);
    let report = rt.join().expect("count");
    check(&log, &report);
}

#[test]
fn late_records_show_in_the_runtime_report() {
    let log = log_with_views();
    let state = Arc::new(MemoryBackend::new());
    let mut rt = Runtime::new(log.clone(), state.clone());
    spawn_repartition(&mut rt);
    spawn_count(&mut rt);
    check(&log, &rt.join().expect("join"));
    // Two views of an hour ago arrive after the windows closed; the job is run again.
    for user in ["user-1", "user-2"] {
        log.append(
            "page-views",
            ProduceRecord {
                key: Some(user.as_bytes().to_vec()),
                payload: format!("{user},page-0").into_bytes(),
                timestamp: 1_700_000_000_000 - 3_600_000,
                partition: None,
                origin: None,
            },
        )
        .expect("append");
    }
    let mut rt = Runtime::new(log.clone(), state);
    spawn_repartition(&mut rt);
    spawn_count(&mut rt);
    let report = rt.join().expect("join");
    assert_eq!(counted(&log), expected(), "no window changed");
    assert_eq!(report.groups["views-per-minute"].late_records, 2, "the two late views are reported, not lost");
    assert_eq!(log.end_offset("late", 0).expect("late topic"), 2, "and written to the late-records topic");
}
