//! `ChangelogBackend` against a `BTreeMap` model across reopens, on a real broker (the local Tansu of
//! `scripts/services.sh`; without one these tests fail naming the broker).

mod kafka_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rtb_stream::kafka::{ChangelogBackend, ChangelogOptions, KafkaLog};
use rtb_stream::runtime::task_scope;
use rtb_stream::state::{MemoryBackend, OffsetMap, StoreBackend, WriteBatch};

const GROUPS: [(&str, u32); 2] = [("alpha", 2), ("beta", 3)];

fn groups() -> Vec<(String, u32)> {
    GROUPS.iter().map(|(g, n)| (g.to_string(), *n)).collect()
}

/// The key of entry `k` in task (`group`, `p`)'s scope, laid out as the runtime lays its keys.
fn key(group: &str, p: u32, k: u8) -> Vec<u8> {
    let scratch: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    task_scope(&scratch, group, p).child("store").store_prefix(&format!("k{k}"))
}

#[derive(Debug, Clone)]
enum Step {
    /// One commit round: (task, key, value or delete) operations.
    Apply(Vec<(usize, u8, Option<Vec<u8>>)>),
    Reopen,
}

fn tasks() -> Vec<(&'static str, u32)> {
    GROUPS.iter().flat_map(|(g, n)| (0..*n).map(move |p| (*g, p))).collect()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(
            (0..5usize, 0..6u8, prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..300))),
            1..12
        )
        .prop_map(Step::Apply),
        1 => Just(Step::Reopen),
    ]
}

fn open(log: &KafkaLog, max_record_bytes: usize) -> ChangelogBackend {
    ChangelogBackend::open(log, &groups(), ChangelogOptions { max_record_bytes, ..ChangelogOptions::default() })
        .expect("open changelog backend")
}

fn content(b: &ChangelogBackend) -> BTreeMap<Vec<u8>, Vec<u8>> {
    b.scan_prefix(&[]).expect("scan").into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn changelog_backend_matches_a_btreemap_across_reopens(
        steps in prop::collection::vec(step(), 1..14),
        small in any::<bool>(),
    ) {
        let log = kafka_support::connect(kafka_support::config("changelog-model"));
        // Small records force multi-chunk batches.
        let max = if small { 200 } else { 512 << 10 };
        let mut backend = open(&log, max);
        let mut model = BTreeMap::new();
        let all = tasks();
        for s in steps {
            match s {
                Step::Apply(ops) => {
                    let mut batch = WriteBatch::new();
                    for (t, k, v) in ops {
                        let (g, p) = all[t];
                        let key = key(g, p, k);
                        match v {
                            Some(v) => {
                                model.insert(key.clone(), v.clone());
                                batch.put(key, v);
                            }
                            None => {
                                model.remove(&key);
                                batch.delete(key);
                            }
                        }
                    }
                    backend.apply(batch).expect("apply");
                }
                Step::Reopen => {
                    drop(backend);
                    backend = open(&log, max);
                }
            }
            prop_assert_eq!(&content(&backend), &model);
        }
        drop(backend);
        let reopened = open(&log, max);
        prop_assert_eq!(&content(&reopened), &model);
        prop_assert_eq!(reopened.restore_stats().keys, model.len());
    }
}

#[test]
fn offsets_and_state_of_a_task_restore_together() {
    let log = kafka_support::connect(kafka_support::config("changelog-offsets"));
    let state: Arc<dyn StoreBackend> = Arc::new(open(&log, 512 << 10));
    let scope = task_scope(&state, "beta", 2);
    let mut offsets = OffsetMap::new();
    offsets.insert(("in".into(), 2), 41);
    let mut batch = WriteBatch::new();
    scope.write_value("count", &41_u64, &mut batch).expect("value");
    scope.write_offsets(&offsets, &mut batch).expect("offsets");
    scope.write_meta("watermark", &Some(1_000_i64), &mut batch).expect("meta");
    state.apply(batch).expect("apply");
    drop(state);
    let reopened = open(&log, 512 << 10);
    let stats = reopened.restore_stats().clone();
    assert_eq!((stats.records, stats.batches, stats.incomplete, stats.keys), (1, 1, 0, 3), "one record per task commit");
    assert!(stats.first_record.is_some_and(|t| t <= stats.elapsed) && stats.records_per_s() > 0.0);
    let state: Arc<dyn StoreBackend> = Arc::new(reopened);
    let scope = task_scope(&state, "beta", 2);
    assert_eq!(scope.read_offsets().expect("offsets"), offsets);
    assert_eq!(scope.read_value::<u64>("count").expect("count"), Some(41));
    assert_eq!(scope.read_meta::<Option<i64>>("watermark").expect("meta"), Some(Some(1_000)));
}

#[test]
fn keys_outside_a_known_task_scope_are_refused_and_change_nothing() {
    let log = kafka_support::connect(kafka_support::config("changelog-refuse"));
    let backend = open(&log, 512 << 10);
    let mut batch = WriteBatch::new();
    batch.put(key("alpha", 0, 1), b"ok".to_vec());
    batch.put(key("gamma", 0, 1), b"no changelog".to_vec());
    assert!(backend.apply(batch).is_err());
    let mut batch = WriteBatch::new();
    batch.put(key("alpha", 7, 1), b"partition out of range".to_vec());
    assert!(backend.apply(batch).is_err());
    let mut batch = WriteBatch::new();
    batch.put(b"raw".to_vec(), b"no scope".to_vec());
    assert!(backend.apply(batch).is_err());
    assert!(content(&backend).is_empty());
}

/// Two processes' backends on the same changelogs: what one commits for a task, the other sees once it
/// refreshes that task (puts, deletes, multi-chunk batches), without touching the tasks it did not ask for;
/// a refresh after the other's next commits reads only what is new.
#[test]
fn a_refresh_brings_a_task_up_to_what_another_process_committed() {
    let log = kafka_support::connect(kafka_support::config("changelog-refresh"));
    let a = open(&log, 200);
    let b = open(&log, 200);
    let big = vec![7u8; 1_000]; // several chunks of 200 bytes
    let mut batch = WriteBatch::new();
    batch.put(key("alpha", 1, 1), b"one".to_vec());
    batch.put(key("alpha", 1, 2), big.clone());
    batch.put(key("beta", 2, 1), b"beta".to_vec());
    a.apply(batch).expect("apply");
    assert_eq!(b.get(&key("alpha", 1, 1)).expect("get"), None, "not refreshed yet");

    b.refresh_tasks(&[("alpha".to_string(), 1)]).expect("refresh");
    assert_eq!(b.get(&key("alpha", 1, 1)).expect("get"), Some(b"one".to_vec()));
    assert_eq!(b.get(&key("alpha", 1, 2)).expect("get"), Some(big));
    assert_eq!(b.get(&key("beta", 2, 1)).expect("get"), None, "a task not asked for is left as it was");

    let mut batch = WriteBatch::new();
    batch.delete(key("alpha", 1, 2));
    batch.put(key("alpha", 1, 1), b"uno".to_vec());
    a.apply(batch).expect("apply");
    b.refresh_tasks(&[("alpha".to_string(), 1), ("beta".to_string(), 2)]).expect("refresh");
    assert_eq!(content(&a), content(&b), "both processes see the same state");
    assert_eq!(b.get(&key("alpha", 1, 2)).expect("get"), None, "the delete reached the other process");
    assert!(b.refresh_tasks(&[("gamma".to_string(), 0)]).is_err(), "a group without a changelog is refused");
}
