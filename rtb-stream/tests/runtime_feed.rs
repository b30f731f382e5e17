//! Batch mode fed while it runs (`Runtime::feed`), memory released behind the consumers
//! (`EmbeddedLog::release_before`), and event-time alignment across jobs (`JobConfig::align`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use rtb_stream::log::{EmbeddedLog, LogOptions, ProduceRecord};
use rtb_stream::runtime::{task_scope, JobConfig, Runtime};
use rtb_stream::state::{MemoryBackend, StoreBackend};
use rtb_stream::time::Timestamp;

fn record(key: &str, ts: Timestamp) -> ProduceRecord {
    ProduceRecord { key: Some(key.as_bytes().to_vec()), payload: key.as_bytes().to_vec(), timestamp: ts, partition: Some(0), origin: None }
}

#[test]
fn a_batch_job_reads_a_fed_topic_until_the_feed_ends_and_the_log_releases_what_it_committed() {
    // 4 KiB chunks: releases drop whole chunks.
    let log = EmbeddedLog::in_memory_with(LogOptions { segment_bytes: 4_096, ..LogOptions::default() });
    log.create_topic("in", topic(1)).expect("create");
    let state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state));
    let feed = rt.feed(&["in"]).expect("feed");
    let cfg = JobConfig { commit_interval: Duration::from_millis(10), ..batch_job("count", &["in"]) };
    rt.spawn(cfg, decode_key, count_factory(None)).expect("spawn");
    rt.seal();
    // The job started with an empty topic; it goes on reading what the feed appends.
    let mut keys = Vec::new();
    for round in 0..5 {
        let recs: Vec<ProduceRecord> = (0..500)
            .map(|i| {
                let k = format!("k{}", (round * 500 + i) % 37);
                keys.push(k.clone());
                record(&k, round * 500 + i)
            })
            .collect();
        log.append_batch("in", recs).expect("append");
        feed.progress(round * 500 + 499);
        std::thread::sleep(Duration::from_millis(50));
        let committed =
            task_scope(&state, "count", 0).read_offsets().expect("offsets").get(&("in".to_string(), 0)).copied().unwrap_or(0);
        log.release_before("in", 0, committed).expect("release");
        assert!(log.start_offset("in", 0).expect("start") <= committed, "only what the group committed is released");
    }
    assert!(log.start_offset("in", 0).expect("start") > 0, "committed records were released");
    drop(feed);
    let report = join_within(rt, 60).expect("join");
    assert_eq!(report.groups["count"].records_in, 2_500, "every fed record, none skipped");
    assert_eq!(committed_counts(&state, "count", 1), direct_count(&keys));
}

#[test]
fn a_durable_log_refuses_to_release() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = EmbeddedLog::open(dir.path()).expect("open");
    log.create_topic("t", topic(1)).expect("create");
    log.append("t", record("a", 1)).expect("append");
    let e = log.release_before("t", 0, 1).expect_err("durable");
    assert!(e.to_string().contains("retention"), "{e}");
}

#[test]
fn aligned_jobs_apply_records_in_event_time_order_up_to_the_drift() {
    let drift = 50;
    let log = EmbeddedLog::in_memory();
    for t in ["a", "b"] {
        log.create_topic(t, topic(2)).expect("create");
    }
    // The records of `a` and `b` interleave in event time: unaligned, each job would run through its topic
    // at its own pace; aligned, they are applied in event-time order up to the drift.
    let a: Vec<ProduceRecord> = (0..2_000).map(|i| ProduceRecord { partition: Some(i as u32 % 2), ..record("x", i * 10) }).collect();
    let b: Vec<ProduceRecord> = (0..2_000).map(|i| ProduceRecord { partition: Some(i as u32 % 2), ..record("y", i * 10 + 5) }).collect();
    log.append_batch("a", a).expect("append");
    log.append_batch("b", b).expect("append");
    let seen: Arc<Mutex<Vec<Timestamp>>> = Arc::default();
    let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
    for g in ["a", "b"] {
        let seen = Arc::clone(&seen);
        let hook: Hook = Arc::new(move |r| {
            seen.lock().push(r.timestamp);
            Ok(())
        });
        let cfg = JobConfig { align: Some(Duration::from_millis(drift)), max_poll_records: 64, ..batch_job(g, &[g]) };
        rt.spawn(cfg, decode_key, count_factory(Some(hook))).expect("spawn");
    }
    join_within(rt, 60).expect("join");
    let seen = seen.lock();
    assert_eq!(seen.len(), 4_000);
    let mut latest = Timestamp::MIN;
    for (i, ts) in seen.iter().enumerate() {
        assert!(*ts >= latest.saturating_sub(drift as i64), "record {i} at {ts} applied after one at {latest}");
        latest = latest.max(*ts);
    }
}
