//! `KafkaLog` behaves as the embedded log through the runtime's traits (`LogIo`, `PartitionReader`,
//! `Producer`), against a real broker (the local Tansu of `scripts/services.sh`; without one these tests
//! fail naming the broker).

mod kafka_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtb_stream::io::{LogIo, PartitionReader};
use rtb_stream::kafka::TopicSpec;
use rtb_stream::log::{partition_for_key, EmbeddedLog, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::SourceCoord;

fn records(n: usize) -> Vec<ProduceRecord> {
    (0..n)
        .map(|i| ProduceRecord {
            key: (i % 7 != 3).then(|| format!("user-{}", i % 50).into_bytes()),
            payload: format!("payload {i}").into_bytes(),
            timestamp: 1_700_000_000_000 + i as i64,
            partition: (i % 11 == 5).then_some((i % 3) as u32),
            origin: (i % 2 == 0).then(|| SourceCoord::new(format!("up:stream-{}", i % 3), (i % 4) as u32, i as u64 * 3)),
        })
        .collect()
}

/// Everything of every partition of `topic`, read through `LogIo` from offset 0 to the end offset.
fn read_all(io: &dyn LogIo, topic: &str) -> Vec<Vec<LogRecord>> {
    let n = io.partitions(topic).expect("partitions");
    let topics: Vec<Arc<str>> = vec![Arc::from(topic)];
    (0..n)
        .map(|p| {
            let mut r = io.reader("g", &topics, p).expect("reader");
            assert_eq!(r.start_offset(0).expect("start"), 0);
            let end = r.end_offset(0).expect("end");
            let mut out: Vec<LogRecord> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while (out.len() as u64) < end {
                let from = out.len() as u64;
                let got = r.read(0, from, 100).expect("read");
                if got.is_empty() {
                    assert!(Instant::now() < deadline, "{topic}[{p}]: stuck at {from} of {end}");
                    r.wait(0, from, Duration::from_millis(200));
                }
                out.extend(got);
            }
            assert_eq!(out.len() as u64, end);
            out
        })
        .collect()
}

#[test]
fn appends_land_in_the_partitions_of_the_embedded_log_and_read_back_equal() {
    let kafka = kafka_support::connect(kafka_support::config("log-equal"));
    let embedded = EmbeddedLog::in_memory();
    let cfg = TopicConfig { partitions: 3, retention: None };
    kafka.ensure_topics(&[TopicSpec::new("events", cfg.clone())]).expect("topics");
    embedded.create_topic("events", cfg).expect("topic");
    let recs = records(600);
    // Several sends (one per chunk), as the runtime does per poll.
    for chunk in recs.chunks(150) {
        kafka.producer().send("events", chunk.to_vec()).expect("send");
        embedded.producer().send("events", chunk.to_vec()).expect("send");
    }
    let k = read_all(&kafka, "events");
    let e = read_all(&embedded, "events");
    assert_eq!(k.iter().map(Vec::len).sum::<usize>(), 600);
    assert_eq!(k, e, "same partitions, offsets, keys, payloads, timestamps and origins");
    for (p, recs) in k.iter().enumerate() {
        for r in recs {
            let i: usize = std::str::from_utf8(&r.payload).expect("utf8")[8..].parse().expect("index");
            match &r.key {
                Some(key) if i % 11 != 5 => {
                    assert_eq!(partition_for_key(key, 3) as usize, p, "murmur2 partition of {key:?}")
                }
                _ => {}
            }
        }
    }
    assert!(k.iter().flatten().any(|r| r.origin.is_some()) && k.iter().flatten().any(|r| r.origin.is_none()));
}

#[test]
fn end_offset_is_exact_after_large_batches() {
    // Tansu answers ListOffsets(latest) with the base offset of the last batch + 1: a batch of 2 000
    // records would read as 1 past its first record.
    let kafka = kafka_support::connect(kafka_support::config("log-end"));
    kafka.ensure_topics(&[TopicSpec::new("t", TopicConfig { partitions: 1, retention: None })]).expect("topics");
    let batch: Vec<ProduceRecord> = (0..2_000)
        .map(|i| ProduceRecord { key: None, payload: vec![7; 20], timestamp: i, partition: Some(0), origin: None })
        .collect();
    let topics: Vec<Arc<str>> = vec![Arc::from("t")];
    let mut r = kafka.reader("g", &topics, 0).expect("reader");
    assert_eq!(r.end_offset(0).expect("end"), 0, "empty partition");
    kafka.producer().send("t", batch.clone()).expect("send");
    assert_eq!(r.end_offset(0).expect("end"), 2_000);
    kafka.producer().send("t", batch[..5].to_vec()).expect("send");
    assert_eq!(r.end_offset(0).expect("end"), 2_005);
    assert_eq!(kafka.end_offset("t", 0).expect("end"), 2_005);
}

#[test]
fn reads_seek_backwards_and_forwards_and_peek_without_losing_records() {
    let kafka = kafka_support::connect(kafka_support::config("log-seek"));
    kafka.ensure_topics(&[TopicSpec::new("t", TopicConfig { partitions: 2, retention: None })]).expect("topics");
    let recs: Vec<ProduceRecord> = (0..300)
        .map(|i| ProduceRecord { key: None, payload: i.to_string().into_bytes(), timestamp: i, partition: Some(1), origin: None })
        .collect();
    kafka.producer().send("t", recs).expect("send");
    let topics: Vec<Arc<str>> = vec![Arc::from("t")];
    let mut r = kafka.reader("g", &topics, 1).expect("reader");
    let read_at = |r: &mut Box<dyn PartitionReader>, from: u64, max: usize| -> Vec<LogRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = r.read(0, from, max).expect("read");
            if !got.is_empty() || Instant::now() > deadline {
                return got;
            }
            r.wait(0, from, Duration::from_millis(100));
        }
    };
    // 250 lies inside the one batch of 300 records: Tansu serves nothing from there, the reader steps back.
    let a = read_at(&mut r, 250, 10);
    assert_eq!(a.first().map(|r| r.offset), Some(250));
    let peek = read_at(&mut r, 251, 1);
    assert_eq!(peek[0].offset, 251);
    let again = read_at(&mut r, 251, 5);
    assert_eq!(again[0].offset, 251, "a peeked record is served again");
    let back = read_at(&mut r, 10, 3);
    assert_eq!(back.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![10, 11, 12]);
    assert_eq!(back[0].payload.as_ref(), b"10");
    assert_eq!(back[0].timestamp, 10);
    // Read to the end: caught up once the fetcher reported the end.
    let mut next = 13;
    while next < 300 {
        let got = read_at(&mut r, next, 1_000);
        next = got.last().expect("records").offset + 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.caught_up(0, 300).expect("caught up") {
        assert!(Instant::now() < deadline, "never caught up");
        r.wait(0, 300, Duration::from_millis(100));
        r.read(0, 300, 10).expect("read");
    }
    assert!(!r.caught_up(0, 299).expect("caught up"), "a record is left at 299");
}

#[test]
fn wait_returns_when_a_record_arrives_and_times_out_otherwise() {
    let kafka = kafka_support::connect(kafka_support::config("log-wait"));
    kafka.ensure_topics(&[TopicSpec::new("t", TopicConfig { partitions: 1, retention: None })]).expect("topics");
    let topics: Vec<Arc<str>> = vec![Arc::from("t")];
    let mut r = kafka.reader("g", &topics, 0).expect("reader");
    let t = Instant::now();
    assert!(!r.wait(0, 0, Duration::from_millis(300)), "nothing to wait for");
    assert!(t.elapsed() >= Duration::from_millis(250));
    let producer = kafka.producer();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        producer
            .send("t", vec![ProduceRecord { key: None, payload: b"x".to_vec(), timestamp: 1, partition: None, origin: None }])
            .expect("send");
    });
    let t = Instant::now();
    assert!(r.wait(0, 0, Duration::from_secs(10)), "the record arrived");
    assert!(t.elapsed() < Duration::from_secs(9));
    writer.join().expect("writer");
    assert_eq!(r.read(0, 0, 10).expect("read").len(), 1);
}

#[test]
fn unknown_topics_and_partitions_are_errors() {
    let kafka = kafka_support::connect(kafka_support::config("log-unknown"));
    assert!(kafka.partitions("missing").is_err());
    kafka.ensure_topics(&[TopicSpec::new("t", TopicConfig { partitions: 2, retention: None })]).expect("topics");
    assert!(kafka.reader("g", &[Arc::from("t")], 2).is_err());
    let bad = ProduceRecord { key: None, payload: vec![], timestamp: 0, partition: Some(5), origin: None };
    assert!(kafka.producer().send("t", vec![bad]).is_err());
    // Re-creating with the same partitions is fine; with others it is refused.
    kafka.ensure_topics(&[TopicSpec::new("t", TopicConfig { partitions: 2, retention: None })]).expect("same");
    assert!(kafka.ensure_topics(&[TopicSpec::new("t", TopicConfig { partitions: 3, retention: None })]).is_err());
}

#[test]
fn a_broker_that_does_not_answer_is_an_error_naming_it() {
    // Port 1 on loopback: nothing listens there.
    let mut cfg = rtb_stream::kafka::KafkaConfig::new("127.0.0.1:1");
    cfg.attempts = 2;
    cfg.request_timeout = Duration::from_secs(1);
    let t = Instant::now();
    let err = rtb_stream::kafka::KafkaLog::connect(cfg).expect_err("nothing answers on port 1").to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "retried a bounded number of times");
}
