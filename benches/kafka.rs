//! The Kafka edge against the local broker (`scripts/services.sh` starts Tansu; `RTB_KAFKA` names another):
//! 1. `rtb run --kafka` with every consumer group of the CPC topology running, against the same run on the
//!    embedded log: ad-events per second of the whole run (production, processing, drain), N ad-events
//!    (default 20 000, env `RTB_KAFKA_BENCH_EVENTS`);
//! 2. a bare rdkafka consumer reading the same `ad-events` topic the Kafka run wrote (records per second,
//!    and the ad-events/s of the run as a share of it: the library's own overhead);
//! 3. restoring a changelog of M state entries (default 200 000, env `RTB_KAFKA_BENCH_ENTRIES`) written as
//!    commit rounds of 1 000 keys over 8 tasks: time to first record, records/s, total.
//!
//! `cargo bench --bench kafka`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rtb_stream::kafka::{ChangelogBackend, ChangelogOptions, KafkaConfig, KafkaLog};
use rtb_stream::runtime::task_scope;
use rtb_stream::state::{MemoryBackend, StoreBackend, WriteBatch};
use rtb_topology::cli::{execute, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn brokers() -> String {
    std::env::var("RTB_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `rtb run` with `extra` arguments; returns the seconds it took.
fn run(n: u64, extra: &[&str]) -> f64 {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let data = dir.path().join("rtb-data");
    let n_s = n.to_string();
    let args = ["rtb", "run", "--data-dir", data.to_str().expect("utf-8 path"), "--events", &n_s, "--rate", "10000000", "--quiet"];
    let cli = Cli::try_parse_from(args.iter().copied().chain(extra.iter().copied())).expect("arguments");
    let mut report = Vec::new();
    let t = Instant::now();
    execute(cli, &mut report).expect("rtb run");
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&report);
    assert!(text.contains("complete: all"), "the run completed: {text}");
    secs
}

/// A bare rdkafka consumer reading every partition of `topic` from the start to its end; (records, seconds
/// from the assign, seconds from the first record).
fn bare_consume(topic: &str, partitions: i32) -> (u64, f64, f64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "rtb-bench-bare")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    let t = Instant::now();
    consumer.assign(&tpl).expect("assign");
    let mut eof = vec![false; partitions as usize];
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    while eof.iter().any(|e| !e) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
            Some(Err(e)) => panic!("consume: {e}"),
            None => assert!(t.elapsed() < Duration::from_secs(120), "bare consumer stuck"),
        }
    }
    (n, t.elapsed().as_secs_f64(), first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
}

fn restore(entries: u64) {
    let prefix = format!("bench-restore-{}-", std::process::id());
    let log = KafkaLog::connect(KafkaConfig::new(brokers()).with_prefix(prefix)).expect("connect");
    let groups = vec![("g".to_string(), 8u32)];
    let backend = ChangelogBackend::open(&log, &groups, ChangelogOptions::default()).expect("open");
    let scratch: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    let prefixes: Vec<Vec<u8>> = (0..8).map(|p| task_scope(&scratch, "g", p).store_prefix("s")).collect();
    let t = Instant::now();
    let mut written = 0u64;
    while written < entries {
        let mut batch = WriteBatch::new();
        for i in 0..1_000u64.min(entries - written) {
            let k = written + i;
            let mut key = prefixes[(k % 8) as usize].clone();
            key.extend_from_slice(&k.to_be_bytes());
            batch.put(key, vec![7u8; 64]);
        }
        written += batch.len() as u64;
        backend.apply(batch).expect("apply");
    }
    println!("restore: wrote {entries} entries (64-byte values) in {:.2} s", t.elapsed().as_secs_f64());
    drop(backend);
    let reopened = ChangelogBackend::open(&log, &groups, ChangelogOptions::default()).expect("reopen");
    let s = reopened.restore_stats();
    assert_eq!(s.keys as u64, entries);
    println!(
        "restore: {} keys from {} records ({} bytes) in {:.2} s, first record after {:.0} ms, {:.0} records/s, {:.0} keys/s",
        s.keys,
        s.records,
        s.bytes,
        s.elapsed.as_secs_f64(),
        s.first_record.unwrap_or_default().as_secs_f64() * 1e3,
        s.records_per_s(),
        s.keys as f64 / s.elapsed.as_secs_f64()
    );
    println!("EVENTS_PER_SEC name=kafka_restore_keys value={:.0}", s.keys as f64 / s.elapsed.as_secs_f64());
}

fn main() {
    let n = env_u64("RTB_KAFKA_BENCH_EVENTS", 20_000);
    let embedded = run(n, &[]);
    println!("embedded: {n} ad-events in {embedded:.2} s: {:.0} ad-events/s", n as f64 / embedded);
    let prefix = format!("bench-run-{}-", std::process::id());
    let kafka = run(n, &["--kafka", &brokers(), "--topic-prefix", &prefix]);
    println!("kafka:    {n} ad-events in {kafka:.2} s: {:.0} ad-events/s", n as f64 / kafka);
    println!("EVENTS_PER_SEC name=run_ad_events_embedded value={:.0}", n as f64 / embedded);
    println!("EVENTS_PER_SEC name=run_ad_events_kafka value={:.0}", n as f64 / kafka);
    let (records, secs, streaming) = bare_consume(&format!("{prefix}ad-events"), 8);
    println!(
        "bare rdkafka consumer: {records} records of ad-events in {secs:.2} s from the assign ({:.0} records/s), \
         {streaming:.2} s from the first record ({:.0} records/s); the Kafka run's ad-events/s is {:.1}% of the \
         former (the run produces them too, and six consumer groups read them)",
        records as f64 / secs,
        records as f64 / streaming.max(1e-9),
        100.0 * (n as f64 / kafka) / (records as f64 / secs)
    );
    println!("EVENTS_PER_SEC name=bare_rdkafka_consumer value={:.0}", records as f64 / secs);
    restore(env_u64("RTB_KAFKA_BENCH_ENTRIES", 200_000));
}
