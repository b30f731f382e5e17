//! Helpers shared by the runtime integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rtb_stream::log::{LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{task_scope, JobConfig, Output, Runtime, RuntimeReport, TaskInfo};
use rtb_stream::state::StoreBackend;
use rtb_stream::time::Timestamp;
use rtb_stream::{Context, KeyedStore, Operator, Record, StateScope, WriteBatch};

pub type Hook = Arc<dyn Fn(&Record<String, ()>) -> rtb_stream::Result<()> + Send + Sync>;

/// Counts records per key in a persisted keyed store; an optional hook runs before each record.
pub struct CountOp {
    pub counts: KeyedStore<String, u64>,
    pub hook: Option<Hook>,
}

impl Operator for CountOp {
    type Key = String;
    type In = ();
    type Out = Output;
    fn process(&mut self, r: Record<String, ()>, _ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        if let Some(h) = &self.hook {
            h(&r)?;
        }
        *self.counts.get_or_insert_with(r.key, || 0) += 1;
        Ok(())
    }
    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.counts.flush_into(batch)
    }
}

pub fn count_factory(
    hook: Option<Hook>,
) -> impl Fn(&TaskInfo, &StateScope) -> rtb_stream::Result<CountOp> + Send + Sync + 'static {
    move |_, scope| Ok(CountOp { counts: scope.keyed("counts")?, hook: hook.clone() })
}

/// Payload = key (UTF-8); anything else is undecodable.
pub fn decode_key(r: &LogRecord) -> Result<Record<String, ()>, String> {
    let key = std::str::from_utf8(&r.payload).map_err(|e| format!("not UTF-8: {e}"))?;
    Ok(Record::new(key.to_string(), (), r.timestamp, r.coord()))
}

pub fn keyed(key: &str, ts: Timestamp) -> ProduceRecord {
    ProduceRecord {
        key: Some(key.as_bytes().to_vec()),
        payload: key.as_bytes().to_vec(),
        timestamp: ts,
        partition: None,
        origin: None,
    }
}

pub fn topic(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, retention: None }
}

pub fn batch_job(group: &str, inputs: &[&str]) -> JobConfig {
    JobConfig { stop_at_end: true, ..JobConfig::new(group, inputs.iter().copied()) }
}

/// Committed counts of every task of `group`, merged.
pub fn committed_counts(
    state: &Arc<dyn StoreBackend>,
    group: &str,
    partitions: u32,
) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        let store: KeyedStore<String, u64> = task_scope(state, group, p).keyed("counts").expect("open");
        for (k, v) in store.iter() {
            assert!(all.insert(k.clone(), *v).is_none(), "key {k} counted by two tasks");
        }
    }
    all
}

pub fn direct_count<'a>(keys: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k.clone()).or_insert(0) += 1;
    }
    m
}

/// `join` with a deadline, so a runtime that never stops fails the test instead of hanging it.
pub fn join_within(rt: Runtime, secs: u64) -> rtb_stream::Result<RuntimeReport> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rt.join());
    });
    rx.recv_timeout(Duration::from_secs(secs)).expect("runtime did not stop in time")
}

pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
