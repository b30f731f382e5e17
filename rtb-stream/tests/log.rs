//! Behaviour of the embedded log, in memory and on disk, against known answers and a naive model.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rtb_stream::log::{partition_for_key, EmbeddedLog, LogOptions, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::{Error, SourceCoord};

fn cfg(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, retention: None }
}

fn rec(key: Option<&str>, payload: &str, ts: i64) -> ProduceRecord {
    ProduceRecord {
        key: key.map(|k| k.as_bytes().to_vec()),
        payload: payload.as_bytes().to_vec(),
        timestamp: ts,
        partition: None,
        origin: None,
    }
}

fn to(p: u32, payload: &str, ts: i64) -> ProduceRecord {
    ProduceRecord { partition: Some(p), ..rec(None, payload, ts) }
}

fn small() -> LogOptions {
    // Tiny segments and cache so that rolls and file reads happen with a handful of records.
    LogOptions { segment_bytes: 512, index_interval_bytes: 64, cache_bytes: 256 }
}

fn payloads(recs: &[LogRecord]) -> Vec<String> {
    recs.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect()
}

fn both_modes(test: impl Fn(&EmbeddedLog)) {
    test(&EmbeddedLog::in_memory_with(small()));
    let dir = tempfile::tempdir().expect("tempdir");
    test(&EmbeddedLog::open_with(dir.path(), small()).expect("open"));
}

#[test]
fn append_and_read_ranges_in_both_modes() {
    both_modes(|log| {
        log.create_topic("t", cfg(2)).expect("create");
        for i in 0..50 {
            assert_eq!(log.append("t", to(1, &format!("r{i}"), i)).expect("append"), (1, i as u64));
        }
        assert_eq!(log.end_offset("t", 1).expect("end"), 50);
        assert_eq!(log.end_offset("t", 0).expect("end"), 0, "other partition untouched");
        let got = log.read("t", 1, 10, 5).expect("read");
        assert_eq!(payloads(&got), vec!["r10", "r11", "r12", "r13", "r14"]);
        assert!(got.iter().all(|r| r.partition == 1 && &*r.topic == "t"));
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
        // Every start position and size agrees with the append order, across segment boundaries.
        for from in 0..50 {
            for max in [1, 7, 100] {
                let mut all = Vec::new();
                let mut next = from;
                while next < 50 {
                    let chunk = log.read("t", 1, next, max).expect("read");
                    assert!(!chunk.is_empty() && chunk.len() <= max, "from {next} max {max}");
                    next = chunk.last().map_or(next, |r| r.offset + 1);
                    all.extend(chunk);
                }
                let expected: Vec<String> = (from..50).map(|i| format!("r{i}")).collect();
                assert_eq!(payloads(&all), expected);
            }
        }
        assert!(log.read("t", 1, 50, 10).expect("read at end").is_empty());
        assert!(log.read("t", 1, 500, 10).expect("read past end").is_empty());
        assert!(log.read("t", 1, 0, 0).expect("max 0").is_empty());
    });
}

#[test]
fn partition_is_explicit_else_by_key_else_round_robin() {
    both_modes(|log| {
        log.create_topic("t", cfg(5)).expect("create");
        for k in ["a", "user-1", "user-2", "foobar"] {
            let (p, _) = log.append("t", rec(Some(k), "x", 0)).expect("append");
            assert_eq!(p, partition_for_key(k.as_bytes(), 5), "key {k}");
        }
        let explicit = ProduceRecord { partition: Some(3), ..rec(Some("a"), "x", 0) };
        assert_eq!(log.append("t", explicit).expect("append").0, 3, "explicit beats the key");
        let rr: Vec<u32> = (0..10).map(|_| log.append("t", rec(None, "x", 0)).expect("append").0).collect();
        assert_eq!(rr, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
        let bad = log.append("t", to(5, "x", 0)).expect_err("partition 5 of 5");
        assert!(matches!(bad, Error::UnknownPartition { partition: 5, partitions: 5, .. }), "{bad}");
        assert!(matches!(log.append("nope", rec(None, "x", 0)), Err(Error::UnknownTopic(t)) if t == "nope"));
    });
}

#[test]
fn append_batch_returns_positions_in_input_order() {
    both_modes(|log| {
        log.create_topic("t", cfg(3)).expect("create");
        log.append("t", to(2, "before", 0)).expect("append");
        let batch = vec![to(2, "a", 1), to(0, "b", 2), to(2, "c", 3), rec(Some("k"), "d", 4)];
        let pos = log.append_batch("t", batch).expect("batch");
        let pk = partition_for_key(b"k", 3);
        let expected_d = if pk == 2 {
            3
        } else if pk == 0 {
            1
        } else {
            0
        };
        assert_eq!(pos, vec![(2, 1), (0, 0), (2, 2), (pk, expected_d)]);
        for (i, (p, o)) in pos.iter().enumerate() {
            let r = log.read("t", *p, *o, 1).expect("read");
            assert_eq!(payloads(&r), vec![["a", "b", "c", "d"][i]]);
        }
        let err = log.append_batch("t", vec![to(0, "ok", 0), to(9, "bad", 0)]).expect_err("bad partition");
        assert!(matches!(err, Error::UnknownPartition { .. }));
        assert_eq!(
            log.end_offset("t", 0).expect("end"),
            1,
            "partitions are checked before anything is written"
        );
    });
}

#[test]
fn wait_for_wakes_up_when_another_thread_appends() {
    both_modes(|log| {
        log.create_topic("t", cfg(1)).expect("create");
        let writer = log.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.append("t", to(0, "hello", 0)).expect("append");
        });
        let start = Instant::now();
        assert!(log.wait_for("t", 0, 0, Duration::from_secs(10)), "woken by the append");
        assert!(start.elapsed() < Duration::from_secs(5), "woken, not timed out");
        handle.join().expect("writer");
        assert!(log.wait_for("t", 0, 0, Duration::ZERO), "already there: immediate true");
        assert!(!log.wait_for("t", 0, 1, Duration::from_millis(20)), "nothing at offset 1: times out");
        assert!(!log.wait_for("missing", 0, 0, Duration::from_millis(1)), "unknown topic: false");
        assert!(!log.wait_for("t", 7, 0, Duration::from_millis(1)), "unknown partition: false");
    });
}

#[test]
fn concurrent_appenders_get_unique_contiguous_offsets() {
    both_modes(|log| {
        log.create_topic("t", cfg(1)).expect("create");
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|i| log.append("t", to(0, &format!("{w}-{i}"), 0)).expect("append").1)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut offsets: Vec<u64> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..800).collect::<Vec<_>>());
        let all = read_all(log, "t", 0);
        assert_eq!(all.len(), 800);
        for w in 0..4 {
            let mine: Vec<String> =
                payloads(&all).into_iter().filter(|p| p.starts_with(&format!("{w}-"))).collect();
            let expected: Vec<String> = (0..200).map(|i| format!("{w}-{i}")).collect();
            assert_eq!(mine, expected, "each writer's records keep their order");
        }
    });
}

#[test]
fn create_topic_is_idempotent_and_validated() {
    both_modes(|log| {
        log.create_topic("t", cfg(3)).expect("create");
        log.create_topic("t", TopicConfig { partitions: 3, retention: Some(std::time::Duration::from_millis(5)) }).expect("same partitions");
        assert_eq!(log.topic_config("t").expect("cfg"), cfg(3), "the first configuration is kept");
        let err = log.create_topic("t", cfg(4)).expect_err("different partitions");
        assert!(matches!(err, Error::TopicMismatch { existing: 3, requested: 4, .. }), "{err}");
        assert!(matches!(log.create_topic("a/b", cfg(1)), Err(Error::Config(_))));
        assert!(matches!(log.create_topic("z", cfg(0)), Err(Error::Config(_))));
        assert!(matches!(
            log.create_topic("z", TopicConfig { partitions: 1, retention: Some(std::time::Duration::from_millis(0)) }),
            Err(Error::Config(_))
        ));
        assert!(matches!(log.topic_config("z"), Err(Error::UnknownTopic(_))));
        assert_eq!(log.topics(), vec![("t".to_string(), cfg(3))]);
    });
}

fn varied(i: usize) -> ProduceRecord {
    ProduceRecord {
        key: (!i.is_multiple_of(3)).then(|| format!("key-{}", i % 7).into_bytes()),
        payload: format!("payload-{i}-{}", "x".repeat(i % 40)).into_bytes(),
        timestamp: 1_000 + i as i64 * 10,
        partition: None,
        origin: i.is_multiple_of(2).then(|| SourceCoord::new("upstream", (i % 4) as u32, i as u64)),
    }
}

fn read_all(log: &EmbeddedLog, topic: &str, partition: u32) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let mut next = log.start_offset(topic, partition).expect("start");
    loop {
        let chunk = log.read(topic, partition, next, 13).expect("read");
        let Some(last) = chunk.last() else { break };
        next = last.offset + 1;
        out.extend(chunk);
    }
    out
}

#[test]
fn durable_reopen_returns_identical_records_and_configs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before: Vec<Vec<LogRecord>> = {
        let log = EmbeddedLog::open_with(dir.path(), small()).expect("open");
        log.create_topic("events", cfg(3)).expect("create");
        log.create_topic("other", TopicConfig { partitions: 1, retention: Some(std::time::Duration::from_millis(60_000)) }).expect("create");
        for i in 0..300 {
            log.append("events", varied(i)).expect("append");
        }
        log.flush().expect("flush");
        assert!(log.segment_count("events", 0).expect("segments") > 3, "small segments rolled");
        (0..3).map(|p| read_all(&log, "events", p)).collect()
    };
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 300);
    let log = EmbeddedLog::open_with(dir.path(), small()).expect("reopen");
    assert_eq!(
        log.topics(),
        vec![
            ("events".to_string(), cfg(3)),
            ("other".to_string(), TopicConfig { partitions: 1, retention: Some(std::time::Duration::from_millis(60_000)) }),
        ]
    );
    for (p, expected) in before.iter().enumerate() {
        assert_eq!(&read_all(&log, "events", p as u32), expected, "partition {p}");
    }
    // Appends continue after the last offset, and the records are readable after yet another reopen.
    let (p, off) = log.append("events", to(0, "after", 5)).expect("append");
    assert_eq!((p, off), (0, before[0].len() as u64));
    drop(log);
    let log = EmbeddedLog::open_with(dir.path(), LogOptions::default()).expect("reopen with other options");
    assert_eq!(payloads(&log.read("events", 0, off, 10).expect("read")), vec!["after"]);
}

/// A partition's segment files, oldest first (the directory also holds its durable checkpoint).
fn segments(dir: &Path, topic: &str, partition: u32) -> Vec<PathBuf> {
    let pdir = dir.join("topics").join(topic).join(partition.to_string());
    let mut files: Vec<PathBuf> = std::fs::read_dir(pdir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

fn last_segment(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    segments(dir, topic, partition).pop().expect("a segment")
}

fn torn_tail_case(damage: impl Fn(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open_with(dir.path(), LogOptions::default()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        for i in 0..20 {
            log.append("t", to(0, &format!("r{i}"), i)).expect("append");
        }
    }
    damage(&last_segment(dir.path(), "t", 0));
    let log = EmbeddedLog::open(dir.path()).expect("reopen truncates the tail");
    let expected: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    assert_eq!(payloads(&read_all(&log, "t", 0)), expected, "records before the damage intact");
    assert_eq!(log.end_offset("t", 0).expect("end"), 20);
    assert_eq!(log.append("t", to(0, "r20", 20)).expect("append").1, 20, "appends continue at 20");
    drop(log);
    let log = EmbeddedLog::open(dir.path()).expect("reopen again");
    assert_eq!(read_all(&log, "t", 0).len(), 21, "the appended record follows the truncation point");
}

#[test]
fn torn_tail_of_garbage_bytes_is_truncated_on_open() {
    torn_tail_case(|path| {
        let mut f = OpenOptions::new().append(true).open(path).expect("open segment");
        f.write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).expect("garbage");
    });
}

#[test]
fn torn_tail_of_a_half_written_frame_is_truncated_on_open() {
    torn_tail_case(|path| {
        // Copy the first frame (a valid header and body) and append only half of it.
        let bytes = std::fs::read(path).expect("read");
        let first_len = 8 + u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let mut f = OpenOptions::new().append(true).open(path).expect("open segment");
        f.write_all(&bytes[..first_len / 2]).expect("half frame");
    });
}

#[test]
fn torn_tail_with_a_flipped_bit_in_the_last_frame_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        for i in 0..5 {
            log.append("t", to(0, &format!("r{i}"), i)).expect("append");
        }
    }
    let path = last_segment(dir.path(), "t", 0);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).expect("write");
    let log = EmbeddedLog::open(dir.path()).expect("reopen");
    assert_eq!(
        payloads(&read_all(&log, "t", 0)),
        vec!["r0", "r1", "r2", "r3"],
        "only the damaged record is lost"
    );
}

#[test]
fn corruption_in_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open_with(dir.path(), small()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        for i in 0..100 {
            log.append("t", to(0, &format!("record-{i}"), i)).expect("append");
        }
        assert!(log.segment_count("t", 0).expect("count") >= 3);
    }
    let files = segments(dir.path(), "t", 0);
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[20] ^= 0xff;
    std::fs::write(&files[0], bytes).expect("write");
    let err = EmbeddedLog::open_with(dir.path(), small()).expect_err("not a torn tail");
    assert!(matches!(&err, Error::LogCorrupt { path, .. } if path == &files[0]), "{err}");
}

#[test]
fn group_offsets_persist_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path()).expect("open");
        log.create_topic("t", cfg(2)).expect("create");
        for i in 0..50 {
            log.append("t", to(1, &format!("r{i}"), i)).expect("append");
            log.append("t", to(0, &format!("r{i}"), i)).expect("append");
        }
        assert_eq!(log.group_offset("g", "t", 1).expect("read"), None);
        log.commit_group_offset("g", "t", 1, 42).expect("commit");
        log.commit_group_offset("g", "t", 1, 43).expect("commit again");
        log.commit_group_offset("h", "t", 0, 7).expect("commit");
        assert!(matches!(log.commit_group_offset("g", "nope", 0, 1), Err(Error::UnknownTopic(_))));
        assert!(matches!(log.commit_group_offset("g", "t", 2, 1), Err(Error::UnknownPartition { .. })));
        // A consumer cannot be past the end: that offset does not exist yet.
        let err = log.commit_group_offset("g", "t", 1, 51).expect_err("past the end");
        assert!(
            matches!(&err, Error::LogBehindConsumer { committed: 51, end: 50, partition: 1, .. }),
            "{err}"
        );
        assert_eq!(
            log.group_offset("g", "t", 1).expect("read"),
            Some(43),
            "a refused commit changes nothing"
        );
        log.commit_group_offset("g", "t", 1, 50).expect("at the end is fine");
        log.commit_group_offset("g", "t", 1, 43).expect("and back");
    }
    let log = EmbeddedLog::open(dir.path()).expect("reopen");
    assert_eq!(log.group_offset("g", "t", 1).expect("read"), Some(43));
    assert_eq!(log.group_offset("h", "t", 0).expect("read"), Some(7));
    assert_eq!(log.group_offset("g", "t", 0).expect("read"), None, "groups and partitions are separate");
}

#[test]
fn retention_deletes_whole_old_segments_in_both_modes() {
    both_modes(|log| {
        log.create_topic("t", TopicConfig { partitions: 1, retention: Some(std::time::Duration::from_millis(1_000)) }).expect("create");
        log.create_topic("forever", cfg(1)).expect("create");
        for i in 0..60 {
            log.append("t", to(0, &format!("record-{i:03}"), i * 100)).expect("append");
            log.append("forever", to(0, "x", i * 100)).expect("append");
        }
        // now = 4 000 → cutoff 3 000: segments whose newest record is older than 3 000 go.
        log.enforce_retention(4_000).expect("retention");
        let start = log.start_offset("t", 0).expect("start");
        assert!(start > 0 && start <= 30, "some but not all old records gone: start {start}");
        let kept = read_all(log, "t", 0);
        assert_eq!(kept.first().map(|r| r.offset), Some(start));
        assert!(kept.iter().filter(|r| r.timestamp < 3_000).count() < 30, "whole segments only");
        assert!(kept.iter().any(|r| r.timestamp >= 3_000) && kept.len() as u64 == 60 - start);
        assert_eq!(log.read("t", 0, 0, 1).expect("read")[0].offset, start, "reads before start are clamped");
        assert_eq!(log.start_offset("forever", 0).expect("start"), 0, "no retention, nothing deleted");
        // Everything expired: all records go, offsets keep counting.
        log.enforce_retention(1_000_000).expect("retention");
        assert_eq!(log.start_offset("t", 0).expect("start"), 60);
        assert_eq!(log.end_offset("t", 0).expect("end"), 60);
        assert!(log.read("t", 0, 0, 10).expect("read").is_empty());
        assert_eq!(log.append("t", to(0, "new", 2_000_000)).expect("append").1, 60);
    });
}

#[test]
fn retention_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open_with(dir.path(), small()).expect("open");
        log.create_topic("t", TopicConfig { partitions: 1, retention: Some(std::time::Duration::from_millis(10)) }).expect("create");
        for i in 0..40 {
            log.append("t", to(0, &format!("record-{i:03}"), i)).expect("append");
        }
        log.enforce_retention(1_000).expect("retention");
        assert_eq!(log.start_offset("t", 0).expect("start"), 40);
    }
    let log = EmbeddedLog::open_with(dir.path(), small()).expect("reopen");
    assert_eq!((log.start_offset("t", 0).expect("s"), log.end_offset("t", 0).expect("e")), (40, 40));
    assert_eq!(log.append("t", to(0, "x", 2_000)).expect("append").1, 40);
}

#[derive(Debug, Clone)]
enum Op {
    Append { partition: Option<u32>, key: Option<u8>, len: usize },
    Read { partition: u32, from: u64, max: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::option::of(0..3_u32), proptest::option::of(any::<u8>()), 0..120_usize)
            .prop_map(|(partition, key, len)| Op::Append { partition, key, len }),
        3 => (0..3_u32, 0..80_u64, 1..20_usize).prop_map(|(partition, from, max)| Op::Read { partition, from, max }),
        1 => Just(Op::Reopen),
    ]
}

/// Key, payload, timestamp.
type ModelRecord = (Option<Vec<u8>>, Vec<u8>, i64);

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The durable log, reopened at random points, behaves like a `Vec` per partition.
    #[test]
    fn durable_log_matches_a_vec_model_across_reopens(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = LogOptions { segment_bytes: 300, index_interval_bytes: 50, cache_bytes: 200 };
        let mut log = EmbeddedLog::open_with(dir.path(), opts).expect("open");
        log.create_topic("m", cfg(3)).expect("create");
        let mut model: Vec<Vec<ModelRecord>> = vec![Vec::new(); 3];
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { partition, key, len } => {
                    let key = key.map(|k| vec![k; (k % 5) as usize]);
                    let payload: Vec<u8> = (0..len).map(|i| (i + n) as u8).collect();
                    let r = ProduceRecord { key: key.clone(), payload: payload.clone(), timestamp: n as i64, partition, origin: None };
                    let (p, off) = log.append("m", r).expect("append");
                    if let Some(want) = partition { prop_assert_eq!(p, want); }
                    else if let Some(k) = &key { prop_assert_eq!(p, partition_for_key(k, 3)); }
                    prop_assert_eq!(off, model[p as usize].len() as u64);
                    model[p as usize].push((key, payload, n as i64));
                }
                Op::Read { partition, from, max } => {
                    let got = log.read("m", partition, from, max).expect("read");
                    let m = &model[partition as usize];
                    let expected: Vec<_> = m.iter().skip(from as usize).take(max).cloned().collect();
                    prop_assert!(got.len() <= expected.len());
                    prop_assert!(!got.is_empty() || expected.is_empty(), "a read with data returns some");
                    for (i, r) in got.iter().enumerate() {
                        prop_assert_eq!(r.offset, from + i as u64);
                        let (k, p, ts) = &expected[i];
                        prop_assert_eq!(r.key.as_deref(), k.as_deref());
                        prop_assert_eq!(&r.payload[..], &p[..]);
                        prop_assert_eq!(r.timestamp, *ts);
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = EmbeddedLog::open_with(dir.path(), opts).expect("reopen");
                }
            }
        }
        for p in 0..3_u32 {
            prop_assert_eq!(log.end_offset("m", p).expect("end"), model[p as usize].len() as u64);
        }
    }
}

#[test]
fn records_are_shared_not_copied_on_read() {
    let log = EmbeddedLog::in_memory();
    log.create_topic("t", cfg(1)).expect("create");
    log.append("t", to(0, "shared", 0)).expect("append");
    let a = log.read("t", 0, 0, 1).expect("read");
    let b = log.read("t", 0, 0, 1).expect("read");
    assert!(Arc::ptr_eq(&a[0].payload, &b[0].payload));
}
