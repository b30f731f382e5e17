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
use rtb_stream::runtime::{RuntimeMetrics, ShutdownToken};
use rtb_stream::state::StoreBackend;

use crate::app::runlog::RunLog;
use crate::plan::ExecutionPlan;

use super::api::ApiError;
use super::Limits;
use crate::error::{Error, Result};

/// Shared by every handler.
pub struct AppState {
    /// Appends to the topics the topology consumes, durably, in group commits.
    pub flush: Arc<GroupFlush>,
    /// The log (readiness, dead letters, consumer lag): embedded, or a Kafka cluster.
    pub log: Arc<dyn RunLog>,
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
pub fn campaigns_in_log(log: &dyn RunLog, topic: &str) -> Result<BTreeMap<String, CampaignEvent>> {
    let mut out: BTreeMap<String, CampaignEvent> = BTreeMap::new();
    let partitions = log.partitions(topic)?;
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

/// Group commit of the API's publishes: a request queues its records and waits; one flusher thread takes
/// everything queued, appends it with **one** append per topic (records of a topic in queue order), then
/// makes it durable with one flush (fsync), and releases every request of that group. Concurrent requests
/// share one write and one fsync, and no request blocks a thread of the async runtime.
///
/// A failed append or flush fails the requests of its group and every later one (the log's state after a
/// failed fsync is unknown; the server stops being ready — see `/readyz`): a request is answered 202 only
/// if its group, and every group before it, was appended and flushed.
pub struct GroupFlush {
    producer: Arc<dyn Producer>,
    queue: parking_lot::Mutex<Queue>,
    wake: parking_lot::Condvar,
    /// Every request up to this number is durable; `failed`: the first request number of the first
    /// group that failed, with the error.
    durable: tokio::sync::watch::Sender<Durable>,
}

#[derive(Default)]
struct Queue {
    /// Queued records, in request order.
    items: Vec<(String, Vec<ProduceRecord>)>,
    /// The number of the last request queued (requests are numbered from 1).
    last: u64,
    stop: bool,
}

#[derive(Debug, Clone, Default)]
struct Durable {
    through: u64,
    failed: Option<(u64, String)>,
}

impl GroupFlush {
    /// A group flush over `producer`, with its flusher thread (stopped by [`GroupFlush::stop`]).
    pub fn start(producer: Arc<dyn Producer>) -> Result<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let (durable, _) = tokio::sync::watch::channel(Durable::default());
        let me = Arc::new(Self { producer, queue: parking_lot::Mutex::new(Queue::default()), wake: parking_lot::Condvar::new(), durable });
        let flusher = Arc::clone(&me);
        let handle = std::thread::Builder::new()
            .name("rtb-serve-flush".into())
            .spawn(move || flusher.run())
            .map_err(|e| Error::Run(format!("cannot start the flusher thread: {e}")))?;
        Ok((me, handle))
    }

    fn run(&self) {
        let mut done = 0u64;
        let mut failed: Option<(u64, String)> = None;
        loop {
            let (items, through) = {
                let mut q = self.queue.lock();
                while q.items.is_empty() && !q.stop {
                    self.wake.wait(&mut q);
                }
                if q.items.is_empty() {
                    return; // stopping, and nothing is waiting
                }
                (std::mem::take(&mut q.items), q.last)
            };
            if failed.is_none() {
                if let Err(e) = self.append_and_flush(items) {
                    tracing::error!(error = %e, "rtb serve: appending or flushing the log failed; every request from now on fails");
                    failed = Some((done + 1, e.to_string()));
                }
            }
            done = through;
            self.durable.send_replace(Durable { through, failed: failed.clone() });
        }
    }

    /// One append per topic (in the order the topics were first queued), then one flush.
    fn append_and_flush(&self, items: Vec<(String, Vec<ProduceRecord>)>) -> rtb_stream::Result<()> {
        let mut by_topic: Vec<(String, Vec<ProduceRecord>)> = Vec::new();
        for (topic, records) in items {
            match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, all)) => all.extend(records),
                None => by_topic.push((topic, records)),
            }
        }
        for (topic, records) in by_topic {
            self.producer.send(&topic, records)?;
        }
        self.producer.flush()
    }

    /// Queues `records` for `topic` and returns once they are appended and durable.
    pub async fn publish(self: &Arc<Self>, topic: String, records: Vec<ProduceRecord>) -> std::result::Result<(), ApiError> {
        let mut durable = self.durable.subscribe();
        let seq = {
            let mut q = self.queue.lock();
            if q.stop {
                return Err(ApiError::unavailable("the server is shutting down"));
            }
            q.items.push((topic, records));
            q.last += 1;
            q.last
        };
        self.wake.notify_one();
        let state = durable
            .wait_for(|d| d.through >= seq)
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
        match &state.failed {
            Some((first, e)) if *first <= seq => Err(ApiError::internal(format!("log append/flush: {e}"))),
            _ => Ok(()),
        }
    }

    /// Whether an append or flush has failed (the server is then not ready).
    pub fn failed(&self) -> Option<String> {
        self.durable.borrow().failed.as_ref().map(|(_, e)| e.clone())
    }

    /// Stops the flusher once every queued request's group is done; later publishes are refused.
    pub fn stop(&self) {
        self.queue.lock().stop = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtb_stream::log::{EmbeddedLog, TopicConfig};

    /// The embedded log in memory, counting flushes and remembering which records were appended before a
    /// flush began; its flushes fail from the `fail_from`-th on (counted from 0).
    struct Counting {
        log: EmbeddedLog,
        appended: parking_lot::Mutex<Vec<Vec<u8>>>,
        /// Keys of the records appended before some flush began.
        flushed: parking_lot::Mutex<std::collections::HashSet<Vec<u8>>>,
        sends: AtomicU64,
        flushes: AtomicU64,
        fail_from: u64,
    }

    impl Producer for Counting {
        fn send(&self, topic: &str, records: Vec<ProduceRecord>) -> rtb_stream::Result<()> {
            self.appended.lock().extend(records.iter().filter_map(|r| r.key.clone()));
            self.log.append_batch(topic, records)?;
            self.sends.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn flush(&self) -> rtb_stream::Result<()> {
            let n = self.flushes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5)); // an fsync takes a while
            if n >= self.fail_from {
                return Err(rtb_stream::Error::Config("disk on fire".into()));
            }
            self.flushed.lock().extend(self.appended.lock().iter().cloned());
            Ok(())
        }
    }

    fn rec(i: u64) -> ProduceRecord {
        ProduceRecord { key: Some(i.to_be_bytes().to_vec()), payload: b"{}".to_vec(), timestamp: 0, partition: None, origin: None }
    }

    fn producer(fail_from: u64) -> Arc<Counting> {
        let log = EmbeddedLog::in_memory();
        for t in ["t", "u"] {
            log.create_topic(t, TopicConfig { partitions: 2, retention: None }).expect("topic");
        }
        Arc::new(Counting {
            log,
            appended: Default::default(),
            flushed: Default::default(),
            sends: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            fail_from,
        })
    }

    #[test]
    fn concurrent_publishes_share_appends_and_flushes_and_each_returns_once_durable() {
        let p = producer(u64::MAX);
        let (flush, thread) = GroupFlush::start(Arc::clone(&p) as Arc<dyn Producer>).expect("start");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("rt");
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..64u64 {
                let flush = Arc::clone(&flush);
                let p = Arc::clone(&p);
                tasks.push(tokio::spawn(async move {
                    let topic = if i % 2 == 0 { "t" } else { "u" };
                    flush.publish(topic.into(), vec![rec(i), rec(i + 1_000)]).await.expect("publish");
                    // Both records were appended before a flush that finished before this returned.
                    let flushed = p.flushed.lock();
                    assert!(flushed.contains(&i.to_be_bytes().to_vec()) && flushed.contains(&(i + 1_000).to_be_bytes().to_vec()));
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
        });
        flush.stop();
        thread.join().expect("flusher");
        let stored: u64 = ["t", "u"].iter().flat_map(|t| (0..2).map(|part| p.log.end_offset(t, part).expect("end"))).sum();
        assert_eq!(stored, 128, "every record appended once");
        let (flushes, sends) = (p.flushes.load(Ordering::SeqCst), p.sends.load(Ordering::SeqCst));
        assert!((1..64).contains(&flushes), "{flushes} flushes for 64 concurrent publishes");
        assert!(sends <= 2 * flushes, "one append per topic per group: {sends} appends, {flushes} flushes");
        assert!(flush.failed().is_none());
    }

    #[test]
    fn a_failed_flush_fails_its_requests_and_every_later_one_and_earlier_ones_stay_accepted() {
        let p = producer(1);
        let (flush, thread) = GroupFlush::start(Arc::clone(&p) as Arc<dyn Producer>).expect("start");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(flush.publish("t".into(), vec![rec(1)])).expect("the first flush succeeds");
        let err = rt.block_on(flush.publish("t".into(), vec![rec(2)])).expect_err("flush failed");
        assert_eq!(err.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.message.contains("disk on fire"), "{}", err.message);
        let err = rt.block_on(flush.publish("u".into(), vec![rec(3)])).expect_err("later requests fail too");
        assert!(err.message.contains("disk on fire"), "{}", err.message);
        assert_eq!(p.flushes.load(Ordering::SeqCst), 2, "nothing is flushed after a failure");
        assert!(flush.failed().is_some_and(|e| e.contains("disk on fire")));
        flush.stop();
        thread.join().expect("flusher");
        assert!(rt.block_on(flush.publish("t".into(), vec![rec(4)])).is_err(), "refused after stop");
    }
}
