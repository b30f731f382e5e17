//! The runtime end to end: counts against a direct count, dead letters, batch mode, errors, idleness.
//! Restarts and crashes are in `runtime_recovery.rs`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rtb_stream::log::{partition_for_key, EmbeddedLog, ProduceRecord};
use rtb_stream::runtime::{task_scope, JobConfig, Output, Runtime};
use rtb_stream::state::{MemoryBackend, StoreBackend};
use rtb_stream::time::{Timestamp, WatermarkConfig};
use rtb_stream::{Context, DeadLetter, Error, KeyedStore, Operator, Record, SourceCoord};

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    rtb_stream::span::from_ms(v)
}

#[test]
fn multi_partition_count_equals_a_direct_count() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("events", topic(4)).expect("create");
    let mut rng = SmallRng::seed_from_u64(7);
    let keys: Vec<String> = (0..3_000).map(|_| format!("user-{}", rng.gen_range(0..60))).collect();
    let recs: Vec<ProduceRecord> = keys.iter().enumerate().map(|(i, k)| keyed(k, i as i64)).collect();
    log.append_batch("events", recs).expect("append");
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    let cfg = JobConfig { max_poll_records: 100, ..batch_job("count", &["events"]) };
    rt.spawn(cfg, decode_key, count_factory(None)).expect("spawn");
    let report = join_within(rt, 60).expect("join");
    assert_eq!(committed_counts(&state, "count", 4), direct_count(&keys));
    let c = report.groups["count"];
    assert_eq!(
        (c.records_in, c.records_out, c.dead_letters, c.duplicates_skipped, c.tasks),
        (3_000, 0, 0, 0, 4)
    );
    assert!(c.commits >= 4, "every task commits at the end");
    for p in 0..4 {
        let store: KeyedStore<String, u64> = task_scope(&state, "count", p).keyed("counts").expect("open");
        assert!(
            store.iter().all(|(k, _)| partition_for_key(k.as_bytes(), 4) == p),
            "task {p} saw only its keys"
        );
        let offsets = task_scope(&state, "count", p).read_offsets().expect("offsets");
        assert_eq!(offsets[&("events".to_string(), p)], log.end_offset("events", p).expect("end"));
    }
}

#[test]
fn dead_letters_land_in_the_dlq_topic_with_coordinates() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(2)).expect("create");
    log.create_topic("dlq", topic(1)).expect("create");
    let mut bad = Vec::new();
    for i in 0..40_u32 {
        let p = i % 2;
        let (payload, is_bad) =
            if i % 7 == 3 { (vec![0xff, 0xfe, i as u8], true) } else { (b"good".to_vec(), false) };
        let rec = ProduceRecord {
            key: None,
            payload: payload.clone(),
            timestamp: 0,
            partition: Some(p),
            origin: None,
        };
        let (_, off) = log.append("in", rec).expect("append");
        if is_bad {
            bad.push((SourceCoord::new("in", p, off), String::from_utf8_lossy(&payload).into_owned()));
        }
    }
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    let cfg = JobConfig { dead_letter_topic: Some("dlq".into()), ..batch_job("g", &["in"]) };
    rt.spawn(cfg, decode_key, count_factory(None)).expect("spawn");
    let report = join_within(rt, 60).expect("join");
    let letters: Vec<DeadLetter> = log
        .read("dlq", 0, 0, 100)
        .expect("read")
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).expect("dead letters are JSON"))
        .collect();
    let mut got: Vec<(SourceCoord, String)> =
        letters.iter().map(|d| (d.source.clone(), d.payload.clone())).collect();
    got.sort();
    bad.sort();
    assert_eq!(got, bad);
    assert!(letters.iter().all(|d| d.stage == "g" && d.reason.contains("UTF-8")));
    assert_eq!(report.groups["g"].dead_letters, bad.len() as u64);
    let good: u64 = (0..2)
        .map(|p| {
            let store: KeyedStore<String, u64> = task_scope(&state, "g", p).keyed("counts").expect("open");
            store.get(&"good".to_string()).copied().unwrap_or(0)
        })
        .sum();
    assert_eq!(good, 40 - bad.len() as u64, "the good records of both partitions were counted");
}

#[test]
fn dead_letter_without_a_dlq_topic_fails_the_task_naming_the_record() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(2)).expect("create");
    for p in [0, 0, 1] {
        log.append(
            "in",
            ProduceRecord {
                key: None,
                payload: b"ok".to_vec(),
                timestamp: 0,
                partition: Some(p),
                origin: None,
            },
        )
        .expect("append");
    }
    log.append(
        "in",
        ProduceRecord { key: None, payload: vec![0xc3], timestamp: 0, partition: Some(1), origin: None },
    )
    .expect("append");
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    rt.spawn(JobConfig::new("g", ["in"]), decode_key, count_factory(None)).expect("spawn");
    let err = join_within(rt, 30).expect_err("undeliverable dead letter");
    match err {
        Error::Task { group, topic, partition, source } => {
            assert_eq!((group.as_str(), topic.as_str(), partition), ("g", "in", 1));
            assert!(matches!(*source, Error::Decode { partition: 1, offset: 1, .. }), "{source}");
        }
        other => panic!("expected a task error, got {other}"),
    }
}

/// Counts per minute, emitting a window once the watermark passes its end; notes the watermark it fired at.
struct MinuteWindows {
    open: BTreeMap<Timestamp, u64>,
    late: Arc<AtomicUsize>,
}

impl Operator for MinuteWindows {
    type Key = String;
    type In = ();
    type Out = Output;
    fn process(&mut self, r: Record<String, ()>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let start = r.timestamp - r.timestamp.rem_euclid(60_000);
        if ctx.watermark().is_some_and(|wm| start + 60_000 - 1 <= wm) {
            self.late.fetch_add(1, Ordering::SeqCst);
        } else {
            *self.open.entry(start).or_insert(0) += 1;
        }
        Ok(())
    }
    fn on_watermark(&mut self, wm: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        while let Some((&start, _)) = self.open.first_key_value() {
            if start + 60_000 - 1 > wm {
                break;
            }
            let count = self.open.remove(&start).unwrap_or_default();
            let payload = format!("{start} {count} {}", if wm == Timestamp::MAX { "end" } else { "live" });
            ctx.emit(Output {
                topic: "windows".into(),
                record: ProduceRecord {
                    key: None,
                    payload: payload.into_bytes(),
                    timestamp: start,
                    partition: Some(0),
                    origin: None,
                },
            });
        }
        Ok(())
    }
}

#[test]
fn stop_at_end_fires_remaining_windows_at_the_maximum_watermark() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(1)).expect("create");
    log.create_topic("windows", topic(1)).expect("create");
    let mut rng = SmallRng::seed_from_u64(11);
    // Out of order by up to 3 s, under the 5 s bound: nothing is late.
    let times: Vec<Timestamp> =
        (0..600).map(|i| (i * 1_000 + rng.gen_range(-3_000..=0_i64)).max(0)).collect();
    let recs = times.iter().map(|&t| ProduceRecord { partition: Some(0), ..keyed("k", t) }).collect();
    log.append_batch("in", recs).expect("append");
    let late = Arc::new(AtomicUsize::new(0));
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(5_000), idle_timeout: None },
        max_poll_records: 50,
        ..batch_job("w", &["in"])
    };
    let l = Arc::clone(&late);
    rt.spawn(cfg, decode_key, move |_, _| Ok(MinuteWindows { open: BTreeMap::new(), late: Arc::clone(&l) }))
        .expect("spawn");
    join_within(rt, 30).expect("join");
    let fired: Vec<(Timestamp, u64, String)> = log
        .read("windows", 0, 0, 1_000)
        .expect("read")
        .iter()
        .map(|r| {
            let s = String::from_utf8_lossy(&r.payload).into_owned();
            let mut it = s.split(' ');
            let start = it.next().and_then(|x| x.parse().ok()).expect("start");
            let count = it.next().and_then(|x| x.parse().ok()).expect("count");
            (start, count, it.next().expect("when").to_string())
        })
        .collect();
    let mut naive: BTreeMap<Timestamp, u64> = BTreeMap::new();
    for t in &times {
        *naive.entry(t - t.rem_euclid(60_000)).or_insert(0) += 1;
    }
    assert_eq!(late.load(Ordering::SeqCst), 0);
    let got: BTreeMap<Timestamp, u64> = fired.iter().map(|(s, c, _)| (*s, *c)).collect();
    assert_eq!(got, naive, "every window fired once with the right count");
    assert_eq!(fired.len(), naive.len());
    let end_fired: Vec<Timestamp> = fired.iter().filter(|f| f.2 == "end").map(|f| f.0).collect();
    assert_eq!(end_fired, vec![540_000], "only the last window waits for the end of input");
}

#[test]
fn inputs_must_exist_and_be_co_partitioned() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("ad-events", topic(8)).expect("create");
    log.create_topic("conversion-events", topic(4)).expect("create");
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    let err = rt
        .spawn(JobConfig::new("join", ["ad-events", "conversion-events"]), decode_key, count_factory(None))
        .expect_err("8 vs 4 partitions");
    assert!(
        matches!(&err, Error::NotCoPartitioned(m) if m.contains("ad-events") && m.contains("conversion-events")),
        "{err}"
    );
    let err =
        rt.spawn(JobConfig::new("x", ["missing"]), decode_key, count_factory(None)).expect_err("unknown");
    assert!(matches!(err, Error::UnknownTopic(t) if t == "missing"));
    let dlq = JobConfig { dead_letter_topic: Some("nope".into()), ..JobConfig::new("x", ["ad-events"]) };
    assert!(matches!(rt.spawn(dlq, decode_key, count_factory(None)), Err(Error::UnknownTopic(_))));
    assert!(matches!(
        rt.spawn(JobConfig::new("a/b", ["ad-events"]), decode_key, count_factory(None)),
        Err(Error::Config(_))
    ));
    rt.spawn(JobConfig::new("ok", ["ad-events"]), decode_key, count_factory(None)).expect("valid");
    assert!(
        matches!(
            rt.spawn(JobConfig::new("ok", ["ad-events"]), decode_key, count_factory(None)),
            Err(Error::Config(_))
        ),
        "same group twice"
    );
    rt.shutdown_token().trigger();
    let report = join_within(rt, 30).expect("join");
    assert_eq!(report.groups.keys().collect::<Vec<_>>(), vec!["ok"], "failed spawns started nothing");
    assert_eq!(report.groups["ok"].tasks, 8);
}

#[test]
fn operator_error_stops_every_task_and_join_returns_it() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(3)).expect("create");
    for p in 0..3 {
        for i in 0..20 {
            let key = if p == 2 && i == 13 { "poison" } else { "fine" };
            log.append("in", ProduceRecord { partition: Some(p), ..keyed(key, i) }).expect("append");
        }
    }
    let hook: Hook = Arc::new(|r| {
        if r.key == "poison" {
            return Err(Error::Operator {
                operator: "count".into(),
                topic: r.source.topic.to_string(),
                partition: r.source.partition,
                offset: r.source.offset,
                reason: "poison pill".into(),
            });
        }
        Ok(())
    });
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    // Not batch mode: the healthy tasks would run forever unless the failure stops them.
    rt.spawn(JobConfig::new("g", ["in"]), decode_key, count_factory(Some(hook))).expect("spawn");
    let err = join_within(rt, 30).expect_err("poison");
    match err {
        Error::Task { group, topic, partition, source } => {
            assert_eq!((group.as_str(), topic.as_str(), partition), ("g", "in", 2));
            assert!(matches!(*source, Error::Operator { offset: 13, .. }), "{source}");
        }
        other => panic!("expected a task error, got {other}"),
    }
}

#[test]
fn operator_panic_becomes_a_task_error() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(2)).expect("create");
    log.append("in", ProduceRecord { partition: Some(1), ..keyed("boom", 0) }).expect("append");
    let hook: Hook = Arc::new(|r| if r.key == "boom" { panic!("kaboom") } else { Ok(()) });
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    rt.spawn(JobConfig::new("g", ["in"]), decode_key, count_factory(Some(hook))).expect("spawn");
    let err = join_within(rt, 30).expect_err("panic");
    assert!(
        matches!(&err, Error::Task { partition: 1, source, .. } if source.to_string().contains("kaboom")),
        "{err}"
    );
}

/// Emits the watermark every time it advances.
struct WatermarkEcho;

impl Operator for WatermarkEcho {
    type Key = String;
    type In = ();
    type Out = Output;
    fn process(&mut self, _: Record<String, ()>, _: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        Ok(())
    }
    fn on_watermark(&mut self, wm: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let record = ProduceRecord {
            key: None,
            payload: wm.to_string().into_bytes(),
            timestamp: 0,
            partition: Some(0),
            origin: None,
        };
        ctx.emit(Output { topic: "wm".into(), record });
        Ok(())
    }
}

#[test]
fn idle_input_stops_holding_the_watermark_back_after_the_idle_timeout() {
    let log = EmbeddedLog::in_memory();
    for t in ["busy", "silent", "wm"] {
        log.create_topic(t, topic(1)).expect("create");
    }
    let now = Arc::new(AtomicI64::new(0));
    let clock_now = Arc::clone(&now);
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()))
        .with_clock(Arc::new(move || clock_now.load(Ordering::SeqCst)));
    let cfg = JobConfig {
        watermark: WatermarkConfig { max_out_of_orderness: ms(0), idle_timeout: Some(ms(1_000)) },
        ..JobConfig::new("g", ["busy", "silent"])
    };
    rt.spawn(cfg, decode_key, |_, _| Ok(WatermarkEcho)).expect("spawn");
    log.append("busy", keyed("a", 50_000)).expect("append");
    let metrics = rt.metrics().group("g").expect("group");
    wait_until("the record read", 30, || metrics.records_in.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(log.end_offset("wm", 0).expect("end"), 0, "the silent input holds the watermark back");
    now.store(1_000, Ordering::SeqCst);
    wait_until("the idle tick", 30, || log.end_offset("wm", 0).expect("end") == 1);
    assert_eq!(&log.read("wm", 0, 0, 10).expect("read")[0].payload[..], b"50000");
    rt.shutdown_token().trigger();
    join_within(rt, 30).expect("join");
}

#[test]
fn decoder_sees_every_partition_once_per_record() {
    // Records of partition p are seen by task p only, in offset order.
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(3)).expect("create");
    for i in 0..90_u32 {
        log.append("in", ProduceRecord { partition: Some(i % 3), ..keyed(&format!("{i}"), 0) })
            .expect("append");
    }
    let seen: Arc<parking_lot::Mutex<HashMap<u32, Vec<u64>>>> = Arc::default();
    let s = Arc::clone(&seen);
    let hook: Hook = Arc::new(move |r| {
        s.lock().entry(r.source.partition).or_default().push(r.source.offset);
        Ok(())
    });
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    let cfg = JobConfig { max_poll_records: 7, ..batch_job("g", &["in"]) };
    rt.spawn(cfg, decode_key, count_factory(Some(hook))).expect("spawn");
    join_within(rt, 30).expect("join");
    let seen = seen.lock();
    for p in 0..3 {
        assert_eq!(seen[&p], (0..30).collect::<Vec<u64>>(), "partition {p}");
    }
}

#[test]
fn factory_error_starts_no_task_of_the_job() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("in", topic(3)).expect("create");
    let mut rt = Runtime::new(log, Arc::new(MemoryBackend::new()));
    let err = rt
        .spawn(JobConfig::new("g", ["in"]), decode_key, |info, scope| {
            if info.partition == 2 {
                return Err(Error::Config("cannot build task 2".into()));
            }
            count_factory(None)(info, scope)
        })
        .expect_err("factory fails for partition 2");
    assert!(
        matches!(&err, Error::Task { partition: 2, source, .. } if matches!(**source, Error::Config(_))),
        "{err}"
    );
    let report = join_within(rt, 10).expect("nothing to join");
    assert!(report.groups.is_empty(), "no task of the job was started");
}
