//! Jobs that are members of their consumer group (`Runtime::with_group_membership`) on a real broker (the
//! local Tansu of `scripts/services.sh`; without one these tests fail naming the broker): two runtimes
//! (two processes, each with its own changelog-backed state) share one job's partitions; one leaves in
//! order, and the other takes its partitions over with their committed state. Every record is counted
//! once: none lost, none twice.

mod kafka_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtb_stream::io::LogIo;
use rtb_stream::kafka::{ChangelogBackend, ChangelogOptions, KafkaLog, TopicSpec};
use rtb_stream::log::{LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{task_scope, JobConfig, Output, Runtime};
use rtb_stream::state::{KeyedStore, StateScope, StoreBackend};
use rtb_stream::{Context, Operator, Record};

const PARTITIONS: u32 = 4;
const KEYS: u64 = 40;
const GROUP: &str = "count";

/// Counts records per key in its state (flushed with every commit).
struct Count {
    counts: KeyedStore<String, u64>,
}

impl Operator for Count {
    type Key = String;
    type In = ();
    type Out = Output;

    fn process(&mut self, r: Record<String, ()>, _ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        *self.counts.get_or_insert_with(r.key, || 0) += 1;
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut rtb_stream::state::WriteBatch) -> rtb_stream::Result<()> {
        self.counts.flush_into(batch)
    }
}

fn decode(r: &LogRecord) -> Result<Record<String, ()>, String> {
    let key = String::from_utf8(r.key.as_deref().unwrap_or(&[]).to_vec()).map_err(|e| e.to_string())?;
    Ok(Record::new(key, (), r.timestamp, r.coord()))
}

/// A "process": the job's runtime on its own changelog-backed state.
fn start(log: &KafkaLog) -> (Runtime, Arc<dyn StoreBackend>) {
    let state: Arc<dyn StoreBackend> = Arc::new(
        ChangelogBackend::open(log, &[(GROUP.to_string(), PARTITIONS)], ChangelogOptions::default()).expect("changelog"),
    );
    let mut rt = Runtime::new(log.clone(), Arc::clone(&state)).with_group_membership(true);
    let cfg = JobConfig { commit_interval: Duration::from_millis(100), ..JobConfig::new(GROUP, ["in"]) };
    rt.spawn(cfg, decode, |_task, scope: &StateScope| Ok(Count { counts: KeyedStore::open(scope, "counts")? })).expect("spawn");
    // Every job spawned: member tasks start once each job has partitions.
    rt.seal();
    (rt, state)
}

fn produce(log: &KafkaLog, from: u64, to: u64) {
    let records: Vec<ProduceRecord> = (from..to)
        .map(|i| ProduceRecord {
            key: Some(format!("k{}", i % KEYS).into_bytes()),
            payload: Vec::new(),
            timestamp: 1_000 + i as i64,
            partition: None,
            origin: None,
        })
        .collect();
    log.producer().send("in", records).expect("produce");
}

/// The counts committed for every key, over every partition, as `state` sees them.
fn committed_counts(state: &Arc<dyn StoreBackend>) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for p in 0..PARTITIONS {
        let store: KeyedStore<String, u64> = KeyedStore::open(&task_scope(state, GROUP, p), "counts").expect("store");
        for (k, v) in store.iter() {
            assert!(all.insert(k.clone(), *v).is_none(), "key {k} counted in two partitions");
        }
    }
    all
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_runtimes_share_a_group_and_one_takes_over_when_the_other_leaves() {
    let log = kafka_support::connect(kafka_support::config("member"));
    log.ensure_topics(&[TopicSpec::new("in", TopicConfig { partitions: PARTITIONS, retention: None })]).expect("topic");
    produce(&log, 0, 2_000);

    let (a, state_a) = start(&log);
    wait_until("process A to own every partition", Duration::from_secs(60), || {
        a.assigned_partitions().get(GROUP).is_some_and(|ps| ps.len() == PARTITIONS as usize)
    });
    let (b, state_b) = start(&log);
    wait_until("the group to give process B some partitions", Duration::from_secs(60), || {
        let (pa, pb) = (a.assigned_partitions()[GROUP].len(), b.assigned_partitions()[GROUP].len());
        pb > 0 && pa + pb == PARTITIONS as usize
    });
    let (pa, pb) = (a.assigned_partitions()[GROUP].clone(), b.assigned_partitions()[GROUP].clone());
    assert!(pa.iter().all(|p| !pb.contains(p)), "no partition runs in both: A {pa:?}, B {pb:?}");
    produce(&log, 2_000, 4_000);
    // B processes its share; A leaves in order (its tasks commit, then it hands its partitions over).
    wait_until("B to commit some records", Duration::from_secs(60), || {
        b.refresh_remote_tasks().expect("refresh");
        committed_counts(&state_b).values().sum::<u64>() > 2_000
    });
    a.shutdown_token().trigger();
    a.join().expect("A stops cleanly");
    drop(state_a);
    wait_until("B to own every partition", Duration::from_secs(60), || {
        b.assigned_partitions()[GROUP].len() == PARTITIONS as usize
    });
    produce(&log, 4_000, 6_000);
    wait_until("B to count every record once", Duration::from_secs(60), || {
        committed_counts(&state_b).values().sum::<u64>() >= 6_000
    });
    let counts = committed_counts(&state_b);
    b.shutdown_token().trigger();
    b.join().expect("B stops cleanly");
    let expected: BTreeMap<String, u64> = (0..KEYS).map(|k| (format!("k{k}"), 6_000 / KEYS)).collect();
    assert_eq!(counts, expected, "every record counted exactly once across the takeover");

    // A third process restores the same from the changelogs.
    let c: Arc<dyn StoreBackend> = Arc::new(
        ChangelogBackend::open(&log, &[(GROUP.to_string(), PARTITIONS)], ChangelogOptions::default()).expect("reopen"),
    );
    assert_eq!(committed_counts(&c), expected);
}

#[test]
fn group_membership_on_a_log_without_groups_is_refused() {
    let log = rtb_stream::log::EmbeddedLog::in_memory();
    log.create_topic("in", TopicConfig { partitions: 2, retention: None }).expect("topic");
    let mut rt = Runtime::new(log, Arc::new(rtb_stream::state::MemoryBackend::new())).with_group_membership(true);
    let err = rt
        .spawn(JobConfig::new(GROUP, ["in"]), decode, |_t, scope: &StateScope| Ok(Count { counts: KeyedStore::open(scope, "counts")? }))
        .expect_err("refused");
    assert!(err.to_string().contains("no consumer groups"), "{err}");
}
