//! The durable log's recovery rule, through `EmbeddedLog::open` as users run it: only a torn tail past a
//! partition's last durable point is truncated; damage to durable records, damage followed by valid
//! records, damage in closed segments, missing files and consumer groups committed past the recovered end
//! are refused with an error naming what is wrong, and the files are left as they were.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rtb_stream::log::{EmbeddedLog, LogOptions, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::Error;

fn cfg(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, retention: None }
}

/// A click-like JSON payload of a few hundred bytes, distinct per record.
fn payload(i: usize) -> String {
    format!(
        r#"{{"event_type":"CLICK","timestamp":"2024-01-15T10:{:02}:{:02}Z","device_id":"device_{i}","ad_id":"ad_{}","campaign_id":"campaign_{}","advertiser_id":"advertiser_{}","placement":"HOME","category":"electronics","bid_price":1500,"actual_price":{}}}"#,
        (i / 60) % 60,
        i % 60,
        i % 13,
        i % 7,
        i % 5,
        1000 + i % 400
    )
}

fn to(p: u32, i: usize) -> ProduceRecord {
    ProduceRecord {
        key: Some(format!("device_{i}").into_bytes()),
        payload: payload(i).into_bytes(),
        timestamp: 1_000 + i as i64,
        partition: Some(p),
        origin: None,
    }
}

fn small() -> LogOptions {
    LogOptions { segment_bytes: 4 << 10, index_interval_bytes: 256, cache_bytes: 1 << 10 }
}

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

fn checkpoint_file(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    dir.join("topics").join(topic).join(partition.to_string()).join("durable.ckpt")
}

fn read_all(log: &EmbeddedLog, topic: &str, partition: u32) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let mut next = log.start_offset(topic, partition).expect("start");
    loop {
        let chunk = log.read(topic, partition, next, 100).expect("read");
        let Some(last) = chunk.last() else { break };
        next = last.offset + 1;
        out.extend(chunk);
    }
    out
}

fn payloads(recs: &[LogRecord]) -> Vec<String> {
    recs.iter().map(|r| String::from_utf8_lossy(&r.payload).into_owned()).collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(payload).collect()
}

/// Byte positions where the frames of a segment start (walking the length prefixes), plus its length.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        starts.push(at);
        let body = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        at += 8 + body;
    }
    starts
}

/// Writes `n` records to partition 0 of topic `t` (two partitions), flushing after the first `flushed`.
fn write_log(dir: &Path, opts: LogOptions, flushed: usize, n: usize) {
    let log = EmbeddedLog::open_with(dir, opts).expect("open");
    log.create_topic("t", cfg(2)).expect("create");
    for i in 0..n {
        if i == flushed {
            log.flush().expect("flush");
        }
        log.append("t", to(0, i)).expect("append");
        log.append("t", to(1, i)).expect("append other partition");
    }
    if flushed >= n {
        log.flush().expect("flush");
    }
}

fn flip16(path: &Path, at: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("read");
    for b in &mut bytes[at..at + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(path, &bytes).expect("write");
    bytes
}

/// Asserts that opening fails with `LogCorrupt` on `file` at a byte in `bytes` and names partition t[0].
fn assert_refused(dir: &Path, opts: LogOptions, file: &Path, bytes: std::ops::Range<u64>) -> String {
    let err = EmbeddedLog::open_with(dir, opts).expect_err("corruption must be refused");
    let Error::LogCorrupt { path, position, reason } = &err else { panic!("not LogCorrupt: {err}") };
    assert_eq!(path, file, "{err}");
    assert!(bytes.contains(position), "position {position} not in {bytes:?}: {err}");
    assert!(reason.contains("t[0]"), "names the partition: {err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&file.display().to_string()) && shown.contains(&format!("at byte {position}")),
        "{shown}"
    );
    shown
}

#[test]
fn flip_in_the_middle_of_a_flushed_only_segment_refuses_to_open_and_truncates_nothing() {
    // Default 64 MiB segments: every record is in the partition's only segment, like the probe's run.
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), LogOptions::default(), 3_000, 3_000);
    let files = segments(dir.path(), "t", 0);
    assert_eq!(files.len(), 1, "one segment");
    let seg = &files[0];
    let clean = std::fs::read(seg).expect("read");
    let starts = frame_starts(&clean);
    assert_eq!(starts.len(), 3_000);
    let at = clean.len() / 2;
    let damaged = flip16(seg, at);
    let frame = *starts.iter().rfind(|&&s| s <= at).expect("a frame before") as u64;
    let shown = assert_refused(dir.path(), LogOptions::default(), seg, frame..frame + 1);
    assert!(shown.contains("durable"), "says it is inside the durable part: {shown}");
    assert_eq!(std::fs::read(seg).expect("read"), damaged, "nothing truncated or rewritten");
    // Refused again on the next try: nothing was repaired behind the user's back.
    assert_refused(dir.path(), LogOptions::default(), seg, frame..frame + 1);
    // Restoring the bytes makes the log whole again, every record intact.
    std::fs::write(seg, &clean).expect("restore");
    let log = EmbeddedLog::open(dir.path()).expect("open repaired");
    assert_eq!(payloads(&read_all(&log, "t", 0)), expected(0..3_000));
    assert_eq!(log.end_offset("t", 1).expect("end"), 3_000);
}

#[test]
fn flip_followed_by_valid_frames_refuses_to_open_even_past_the_durable_point() {
    // 100 records flushed, 100 more only written through: the flip lies past the durable point, but
    // valid frames follow it, so it cannot be a torn write.
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), LogOptions::default(), 100, 200);
    let seg = &segments(dir.path(), "t", 0)[0];
    let starts = frame_starts(&std::fs::read(seg).expect("read"));
    let at = starts[150] + 20;
    let damaged = flip16(seg, at);
    let frame = starts[150] as u64;
    let shown = assert_refused(dir.path(), LogOptions::default(), seg, frame..frame + 1);
    assert!(shown.contains("followed by a valid frame (offset 151)"), "{shown}");
    assert_eq!(std::fs::read(seg).expect("read"), damaged, "nothing truncated");
}

#[test]
fn flip_in_a_log_without_checkpoint_is_refused_when_valid_frames_follow() {
    // A log written before checkpoints existed (or whose checkpoint is gone) still refuses damage that
    // valid records follow.
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), LogOptions::default(), 500, 500);
    std::fs::remove_file(checkpoint_file(dir.path(), "t", 0)).expect("remove checkpoint");
    let seg = &segments(dir.path(), "t", 0)[0];
    let starts = frame_starts(&std::fs::read(seg).expect("read"));
    let damaged = flip16(seg, starts[250] + 3);
    let frame = starts[250] as u64;
    let shown = assert_refused(dir.path(), LogOptions::default(), seg, frame..frame + 1);
    assert!(shown.contains("followed by a valid frame"), "{shown}");
    assert_eq!(std::fs::read(seg).expect("read"), damaged);
}

#[test]
fn damage_to_the_last_flushed_frame_refuses_to_open() {
    // Nothing valid follows, so only the durable checkpoint tells this from a torn write.
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), LogOptions::default(), 50, 50);
    let seg = &segments(dir.path(), "t", 0)[0];
    let len = std::fs::metadata(seg).expect("stat").len() as usize;
    let starts = frame_starts(&std::fs::read(seg).expect("read"));
    let damaged = flip16(seg, len - 20);
    let frame = starts[49] as u64;
    assert_refused(dir.path(), LogOptions::default(), seg, frame..frame + 1);
    assert_eq!(std::fs::read(seg).expect("read"), damaged);
}

#[test]
fn segment_cut_inside_its_durable_part_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), LogOptions::default(), 60, 60);
    let seg = &segments(dir.path(), "t", 0)[0];
    let bytes = std::fs::read(seg).expect("read");
    let starts = frame_starts(&bytes);
    // In the middle of a frame, and exactly on a frame boundary: both lose fsynced records.
    for cut in [starts[40] + 30, starts[55]] {
        std::fs::write(seg, &bytes[..cut]).expect("cut");
        let shown = assert_refused(dir.path(), LogOptions::default(), seg, 0..bytes.len() as u64);
        assert!(shown.contains("fsynced"), "{shown}");
        assert_eq!(std::fs::metadata(seg).expect("stat").len(), cut as u64, "nothing truncated");
    }
}

/// Records WARN events (level, fields) emitted while a closure runs on this thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut f = Fields(String::new());
            event.record(&mut f);
            self.0.lock().expect("lock").push(f.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn open_capturing(dir: &Path) -> (EmbeddedLog, Vec<String>) {
    let warnings = Warnings::default();
    let log = tracing::subscriber::with_default(warnings.clone(), || EmbeddedLog::open(dir)).expect("open");
    let seen = warnings.0.lock().expect("lock").clone();
    (log, seen)
}

#[test]
fn torn_tail_past_the_durable_point_is_dropped_with_a_warning_and_the_durable_records_kept() {
    type Damage = fn(&Path, &[u8], &[usize]) -> usize;
    let cases: [(&str, Damage, usize); 3] = [
        ("half of the last frame", |p, b, s| cut(p, &b[..s[109] + (b.len() - s[109]) / 2]), 109),
        ("garbage after the last frame", |p, _, _| append(p, &[0xde, 0xad, 0xbe, 0xef, 9, 9, 9, 9, 9]), 110),
        ("cut inside the first unflushed frame", |p, b, s| cut(p, &b[..s[100] + 11]), 100),
    ];
    fn cut(path: &Path, keep: &[u8]) -> usize {
        std::fs::write(path, keep).expect("cut");
        keep.len()
    }
    fn append(path: &Path, garbage: &[u8]) -> usize {
        let mut f = OpenOptions::new().append(true).open(path).expect("open");
        f.write_all(garbage).expect("garbage");
        garbage.len()
    }
    for (what, damage, kept) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(dir.path(), LogOptions::default(), 100, 110);
        let seg = &segments(dir.path(), "t", 0)[0];
        let bytes = std::fs::read(seg).expect("read");
        let mut starts = frame_starts(&bytes);
        starts.push(bytes.len());
        damage(seg, &bytes, &starts);
        let (log, warnings) = open_capturing(dir.path());
        assert_eq!(
            payloads(&read_all(&log, "t", 0)),
            expected(0..kept),
            "{what}: records before the tear intact"
        );
        assert_eq!(log.end_offset("t", 0).expect("end"), kept as u64, "{what}");
        assert_eq!(
            std::fs::metadata(seg).expect("stat").len(),
            starts[kept] as u64,
            "{what}: cut at the tear"
        );
        assert_eq!(log.end_offset("t", 1).expect("end"), 110, "{what}: the other partition is untouched");
        let warned = warnings.iter().filter(|w| w.contains("torn tail")).collect::<Vec<_>>();
        assert_eq!(warned.len(), 1, "{what}: one warning: {warnings:?}");
        assert!(
            warned[0].contains(&seg.display().to_string())
                && warned[0].contains(&format!("position={}", starts[kept])),
            "{what}: the warning names the file and the byte: {}",
            warned[0]
        );
        // Appends continue right after the kept records, and what was recovered is durable now: damage to
        // it is refused on the next open, not truncated.
        assert_eq!(log.append("t", to(0, 7_777)).expect("append").1, kept as u64, "{what}");
        drop(log);
        let again = EmbeddedLog::open(dir.path()).expect("reopen");
        assert_eq!(read_all(&again, "t", 0).len(), kept + 1, "{what}");
        drop(again);
        let starts = frame_starts(&std::fs::read(seg).expect("read"));
        flip16(seg, starts[kept - 1] + 9);
        let frame = starts[kept - 1] as u64;
        assert_refused(dir.path(), LogOptions::default(), seg, frame..frame + 1);
    }
}

#[test]
fn damage_in_an_older_closed_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing flushed explicitly: closing a segment fsyncs it, so closed segments are durable anyway.
    {
        let log = EmbeddedLog::open_with(dir.path(), small()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        for i in 0..200 {
            log.append("t", to(0, i)).expect("append");
        }
        assert!(log.segment_count("t", 0).expect("count") >= 4);
    }
    let files = segments(dir.path(), "t", 0);
    // The last frame of the first segment (nothing valid follows inside that file) and the middle of the
    // second one.
    for (file, at) in [(&files[0], None), (&files[1], Some(0.5))] {
        let clean = std::fs::read(file).expect("read");
        let starts = frame_starts(&clean);
        let pos = match at {
            None => clean.len() - 16,
            Some(f) => (clean.len() as f64 * f) as usize,
        };
        let damaged = flip16(file, pos);
        let frame = *starts.iter().rfind(|&&s| s <= pos).expect("frame") as u64;
        assert_refused(dir.path(), small(), file, frame..frame + 1);
        assert_eq!(&std::fs::read(file).expect("read"), &damaged, "untouched");
        std::fs::write(file, &clean).expect("restore");
    }
    let log = EmbeddedLog::open_with(dir.path(), small()).expect("restored log opens");
    assert_eq!(payloads(&read_all(&log, "t", 0)), expected(0..200));
}

#[test]
fn missing_segment_files_refuse_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), small(), 120, 120);
    let files = segments(dir.path(), "t", 0);
    assert!(files.len() >= 3);
    let newest = files.last().expect("newest");
    let saved: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("read")).collect();
    std::fs::remove_file(newest).expect("remove newest");
    let err = EmbeddedLog::open_with(dir.path(), small()).expect_err("newest segment missing");
    assert!(
        matches!(&err, Error::LogCorrupt { path, reason, .. } if path == newest && reason.contains("t[0]") && reason.contains("missing")),
        "{err}"
    );
    for f in &files {
        std::fs::remove_file(f).ok();
    }
    let err = EmbeddedLog::open_with(dir.path(), small()).expect_err("every segment missing");
    assert!(
        matches!(&err, Error::LogCorrupt { reason, .. } if reason.contains("offsets up to 120")),
        "{err}"
    );
    assert!(segments(dir.path(), "t", 0).is_empty(), "no empty segment created in their place");
    // Restoring the files makes the partition whole again.
    for (f, bytes) in files.iter().zip(&saved) {
        std::fs::write(f, bytes).expect("restore");
    }
    let log = EmbeddedLog::open_with(dir.path(), small()).expect("restored");
    assert_eq!(payloads(&read_all(&log, "t", 0)), expected(0..120));
}

#[test]
fn a_consumer_group_committed_past_the_recovered_end_refuses_to_open() {
    // A log whose checkpoint was lost and whose tail was torn: the tear is truncated as usual, but a
    // consumer group had committed past it, so those offsets must not be handed out again.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        for i in 0..20 {
            log.append("t", to(0, i)).expect("append");
        }
        log.commit_group_offset("balance-processor", "t", 0, 20).expect("commit");
    }
    std::fs::remove_file(checkpoint_file(dir.path(), "t", 0)).expect("lose the checkpoint");
    let seg = &segments(dir.path(), "t", 0)[0];
    let bytes = std::fs::read(seg).expect("read");
    let starts = frame_starts(&bytes);
    std::fs::write(seg, &bytes[..starts[17] + 5]).expect("tear");
    let err = EmbeddedLog::open(dir.path()).expect_err("the group is past the end");
    assert!(
        matches!(&err, Error::LogBehindConsumer { consumer, topic, partition: 0, committed: 20, end: 17 }
            if consumer.contains("balance-processor") && topic == "t"),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to reuse"), "{err}");
    // The refusal stands on every open: appends never start at 17.
    assert!(matches!(EmbeddedLog::open(dir.path()), Err(Error::LogBehindConsumer { .. })));
}

#[test]
fn a_group_offset_past_the_end_of_a_missing_topic_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        log.create_topic("u", cfg(1)).expect("create");
        log.append("t", to(0, 0)).expect("append");
        log.commit_group_offset("g", "t", 0, 1).expect("commit");
        log.commit_group_offset("idle", "u", 0, 0).expect("commit at 0");
    }
    std::fs::remove_dir_all(dir.path().join("topics/t")).expect("lose the topic");
    let err = EmbeddedLog::open(dir.path()).expect_err("records of t are gone");
    assert!(matches!(&err, Error::LogBehindConsumer { committed: 1, end: 0, .. }), "{err}");
    std::fs::remove_dir_all(dir.path().join("topics/u")).expect("lose the idle topic too");
    std::fs::write(
        dir.path().join("group-offsets.json"),
        r#"[{"group":"idle","topic":"u","partition":0,"next":0}]"#,
    )
    .expect("only the idle group");
    EmbeddedLog::open(dir.path()).expect("a group at offset 0 lost nothing");
}

#[test]
fn committing_a_group_offset_makes_the_consumed_records_durable() {
    // Records only written through, then consumed and committed: the commit fsyncs them first, so a later
    // loss of those bytes is damage to durable records (refused), never a torn tail quietly truncated.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path()).expect("open");
        log.create_topic("t", cfg(1)).expect("create");
        for i in 0..10 {
            log.append("t", to(0, i)).expect("append");
        }
        log.commit_group_offset("g", "t", 0, 10).expect("commit");
        log.append("t", to(0, 10)).expect("one more, not consumed");
    }
    let seg = &segments(dir.path(), "t", 0)[0];
    let bytes = std::fs::read(seg).expect("read");
    let starts = frame_starts(&bytes);
    std::fs::write(seg, &bytes[..starts[7] + 12]).expect("lose the tail");
    let err = EmbeddedLog::open(dir.path()).expect_err("consumed records were durable");
    assert!(matches!(&err, Error::LogCorrupt { path, .. } if path == seg), "{err}");
    // Losing only the record nobody consumed is an ordinary torn tail.
    std::fs::write(seg, &bytes[..starts[10] + 12]).expect("tear the unconsumed record");
    let log = EmbeddedLog::open(dir.path()).expect("torn tail past the commit");
    assert_eq!(payloads(&read_all(&log, "t", 0)), expected(0..10));
    assert_eq!(log.group_offset("g", "t", 0).expect("group"), Some(10));
}
