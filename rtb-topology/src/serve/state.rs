//! What the handlers share: the log's producer, the stores, the campaigns the server has published, the
//! validator, and the id generator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rtb_ops::config::{OpsConfig, TopicNames};
use rtb_ops::schema::{CampaignEvent, Validator};
use rtb_ops::sink::{Cache, Database};
use rtb_stream::io::{ProduceRecord, Producer};
use rtb_stream::log::EmbeddedLog;
use rtb_stream::runtime::{RuntimeMetrics, ShutdownToken};
use rtb_stream::state::StoreBackend;

use crate::plan::ExecutionPlan;

use super::api::ApiError;
use super::Limits;
use crate::error::{Error, Result};

/// Shared by every handler.
pub struct AppState {
    /// Appends to the topics the topology consumes, durably, in group commits.
    pub flush: Arc<GroupFlush>,
    /// The embedded log (readiness).
    pub log: EmbeddedLog,
    /// Rankings, metrics, spend counters.
    pub cache: Arc<dyn Cache>,
    /// Advertisers, ledger, campaigns, conversions, alerts.
    pub db: Arc<dyn Database>,
    /// The operators' configuration (topic names, validation limits, budget settings).
    pub ops: OpsConfig,
    /// The same validation the topology's decoders apply: nothing they would reject is published.
    pub validator: Validator,
    /// Every campaign's latest snapshot as published by this server (or found in the log at start):
    /// what a PATCH or a status change starts from, before the topology has processed it.
    pub campaigns: RwLock<BTreeMap<String, CampaignEvent>>,
    /// Serialises campaign changes (each is read-modify-publish of one snapshot).
    pub campaign_writes: tokio::sync::Mutex<()>,
    /// Server-assigned ids.
    pub ids: IdGen,
    /// Body and batch limits.
    pub limits: Limits,
    /// Triggered when a stage of the topology failed (not ready) or at shutdown.
    pub runtime: ShutdownToken,
    /// The topology's counters (for `/metrics`).
    pub runtime_metrics: Arc<RuntimeMetrics>,
    /// The plan the topology runs (its stages' groups and inputs, for consumer lag).
    pub plan: ExecutionPlan,
    /// The operators' state (committed offsets, for consumer lag).
    pub state_store: Arc<dyn StoreBackend>,
}

impl AppState {
    /// The topic names.
    pub fn topics(&self) -> &TopicNames {
        &self.ops.topics
    }

    /// Appends `records` to `topic` and returns once they are durable (fsync, shared with the concurrent
    /// requests: see [`GroupFlush`]).
    pub async fn publish(&self, topic: &str, records: Vec<ProduceRecord>) -> std::result::Result<(), ApiError> {
        let n = records.len();
        self.flush.publish(topic.to_string(), records).await?;
        super::telemetry::published(topic, n);
        Ok(())
    }
}

/// Unique ids: a random prefix per server start and a counter.
#[derive(Debug)]
pub struct IdGen {
    prefix: String,
    next: AtomicU64,
}

impl IdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        let r: u64 = rand::random();
        Self { prefix: format!("{r:016x}"), next: AtomicU64::new(1) }
    }
    /// `{kind}_{random prefix}{counter}`.
    pub fn next(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{kind}_{}{n:08x}", self.prefix)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// The campaigns found in the campaign topic: each one's latest snapshot written by the API (the budget
/// monitor's events carry `status_reason` BUDGET_* and only mark a pause, which the database row holds).
pub fn campaigns_in_log(log: &EmbeddedLog, topic: &str) -> Result<BTreeMap<String, CampaignEvent>> {
    let mut out: BTreeMap<String, CampaignEvent> = BTreeMap::new();
    let partitions = log.topic_config(topic)?.partitions;
    for p in 0..partitions {
        let mut at = log.start_offset(topic, p)?;
        let end = log.end_offset(topic, p)?;
        while at < end {
            let recs = log.read(topic, p, at, 4_096)?;
            let Some(last) = recs.last() else { break };
            at = last.offset + 1;
            for r in recs {
                let Ok(ev) = serde_json::from_slice::<CampaignEvent>(&r.payload) else { continue };
                if ev.status_reason.is_some_and(|s| s.is_budget()) {
                    continue;
                }
                match out.get(&ev.campaign_id) {
                    Some(prev) if prev.timestamp > ev.timestamp => {}
                    _ => {
                        out.insert(ev.campaign_id.clone(), ev);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A failure of a store at start.
pub fn store_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Run(format!("{what}: {e}"))
}

/// Group commit of the API's appends: each request appends its records at once, then waits until a
/// flush (fsync) that began after its append has finished. One flusher thread runs those flushes back to
/// back, so concurrent requests share one fsync instead of queueing one each.
pub struct GroupFlush {
    producer: Arc<dyn Producer>,
    /// Appends finished so far (a request's number is taken after its append returned).
    appended: AtomicU64,
    /// The highest append number a request waits for, and whether to stop.
    wanted: parking_lot::Mutex<(u64, bool)>,
    wake: parking_lot::Condvar,
    /// (every append up to this number is durable, the error of the flush that said so, if it failed).
    durable: tokio::sync::watch::Sender<(u64, Option<String>)>,
}

impl GroupFlush {
    /// A group flush over `producer`, with its flusher thread (stopped by [`GroupFlush::stop`]).
    pub fn start(producer: Arc<dyn Producer>) -> Result<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let (durable, _) = tokio::sync::watch::channel((0, None));
        let me = Arc::new(Self {
            producer,
            appended: AtomicU64::new(0),
            wanted: parking_lot::Mutex::new((0, false)),
            wake: parking_lot::Condvar::new(),
            durable,
        });
        let flusher = Arc::clone(&me);
        let handle = std::thread::Builder::new()
            .name("rtb-serve-flush".into())
            .spawn(move || flusher.run())
            .map_err(|e| Error::Run(format!("cannot start the flusher thread: {e}")))?;
        Ok((me, handle))
    }

    fn run(&self) {
        let mut done = 0u64;
        loop {
            let target = {
                let mut w = self.wanted.lock();
                while w.0 <= done && !w.1 {
                    self.wake.wait(&mut w);
                }
                if w.0 <= done {
                    return; // stopping, and nothing is waiting
                }
                w.0
            };
            let err = self.producer.flush().err().map(|e| e.to_string());
            done = target;
            self.durable.send_replace((target, err));
        }
    }

    /// Appends `records` to `topic` and returns once they are durable.
    pub async fn publish(self: &Arc<Self>, topic: String, records: Vec<ProduceRecord>) -> std::result::Result<(), ApiError> {
        let me = Arc::clone(self);
        let mut durable = self.durable.subscribe();
        let seq = tokio::task::spawn_blocking(move || -> rtb_stream::Result<u64> {
            me.producer.send(&topic, records)?;
            Ok(me.appended.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .await
        .map_err(|e| ApiError::internal(format!("publishing: {e}")))??;
        {
            let mut w = self.wanted.lock();
            w.0 = w.0.max(seq);
        }
        self.wake.notify_one();
        let state = durable
            .wait_for(|(d, _)| *d >= seq)
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
        match &state.1 {
            None => Ok(()),
            Some(e) => Err(ApiError::internal(format!("log flush: {e}"))),
        }
    }

    /// Stops the flusher once every waiting request's flush is done.
    pub fn stop(&self) {
        self.wanted.lock().1 = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtb_stream::log::TopicConfig;

    /// The embedded log in memory, counting flushes and the appends each flush started after.
    struct Counting {
        log: EmbeddedLog,
        sent: AtomicU64,
        flushes: AtomicU64,
        /// The largest number of appends done when a flush began.
        covered: AtomicU64,
        fail: bool,
    }

    impl Producer for Counting {
        fn send(&self, topic: &str, records: Vec<ProduceRecord>) -> rtb_stream::Result<()> {
            self.log.append_batch(topic, records)?;
            self.sent.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn flush(&self) -> rtb_stream::Result<()> {
            self.covered.fetch_max(self.sent.load(Ordering::SeqCst), Ordering::SeqCst);
            self.flushes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5)); // an fsync takes a while
            if self.fail {
                return Err(rtb_stream::Error::Config("disk on fire".into()));
            }
            Ok(())
        }
    }

    fn rec(i: u64) -> ProduceRecord {
        ProduceRecord { key: Some(i.to_be_bytes().to_vec()), payload: b"{}".to_vec(), timestamp: 0, partition: None, origin: None }
    }

    fn producer(fail: bool) -> Arc<Counting> {
        let log = EmbeddedLog::in_memory();
        log.create_topic("t", TopicConfig { partitions: 2, retention: None }).expect("topic");
        Arc::new(Counting { log, sent: AtomicU64::new(0), flushes: AtomicU64::new(0), covered: AtomicU64::new(0), fail })
    }

    #[test]
    fn concurrent_publishes_share_flushes_and_each_returns_after_a_flush_that_covers_it() {
        let p = producer(false);
        let (flush, thread) = GroupFlush::start(Arc::clone(&p) as Arc<dyn Producer>).expect("start");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("rt");
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..64u64 {
                let flush = Arc::clone(&flush);
                let p = Arc::clone(&p);
                tasks.push(tokio::spawn(async move {
                    flush.publish("t".into(), vec![rec(i), rec(i + 1_000)]).await.expect("publish");
                    // This publish's append is among those done before the flush that released it began.
                    assert!(p.covered.load(Ordering::SeqCst) >= 1);
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
        });
        flush.stop();
        thread.join().expect("flusher");
        let stored: u64 = (0..2).map(|part| p.log.end_offset("t", part).expect("end")).sum();
        assert_eq!(stored, 128);
        assert_eq!(p.covered.load(Ordering::SeqCst), 64, "the last flush covers every append");
        let flushes = p.flushes.load(Ordering::SeqCst);
        assert!((1..64).contains(&flushes), "{flushes} flushes for 64 concurrent publishes");
    }

    #[test]
    fn a_failed_flush_fails_the_requests_it_was_for() {
        let p = producer(true);
        let (flush, thread) = GroupFlush::start(Arc::clone(&p) as Arc<dyn Producer>).expect("start");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let err = rt.block_on(flush.publish("t".into(), vec![rec(1)])).expect_err("flush failed");
        assert_eq!(err.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.message.contains("disk on fire"), "{}", err.message);
        flush.stop();
        thread.join().expect("flusher");
    }
}
