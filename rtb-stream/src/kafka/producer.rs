//! [`KafkaProducer`]: the runtime's [`Producer`] on Kafka — idempotent, partitioning as the embedded log,
//! `send` returning once every record is acknowledged.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use rustc_hash::FxHashMap;

use super::{encode_origin, KafkaConfig, ORIGIN_HEADER};
use crate::error::{Error, Result};
use crate::io::{ProduceRecord, Producer};
use crate::log::partition_for_key;

/// Defaults of the producer (overridden by [`KafkaConfig::properties`]).
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "2"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "200000"),
    ("message.max.bytes", "8388608"),
];

/// One `send` call waiting for its deliveries.
#[derive(Default)]
pub(crate) struct Pending {
    state: Mutex<PendingState>,
    cv: Condvar,
}

#[derive(Default)]
struct PendingState {
    outstanding: usize,
    error: Option<(String, u32, String)>,
}

impl Pending {
    fn delivered(&self, failure: Option<(String, u32, String)>) {
        let mut s = self.state.lock();
        s.outstanding = s.outstanding.saturating_sub(1);
        if s.error.is_none() {
            s.error = failure;
        }
        if s.outstanding == 0 {
            self.cv.notify_all();
        }
    }
}

/// Routes delivery reports to the `send` call that produced the record.
pub(crate) struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Self::DeliveryOpaque) {
        use rdkafka::message::Message;
        match result {
            Ok(_) => pending.delivered(None),
            Err((e, m)) => pending.delivered(Some((m.topic().to_string(), m.partition().max(0) as u32, e.to_string()))),
        }
    }
}

/// Partition count of a plan topic.
pub(crate) type PartitionCount = Arc<dyn Fn(&str) -> Result<u32> + Send + Sync>;

/// The producer every task of a [`super::KafkaLog`] appends with.
pub(crate) struct KafkaProducer {
    cfg: KafkaConfig,
    producer: ThreadedProducer<DeliveryContext>,
    /// Partition counts by plan topic (learnt from the metadata once).
    partitions: PartitionCount,
    round_robin: Mutex<FxHashMap<String, Arc<AtomicU32>>>,
}

impl KafkaProducer {
    pub(crate) fn new(cfg: &KafkaConfig, partitions: PartitionCount) -> Result<Self> {
        let producer = cfg
            .client(PRODUCER_DEFAULTS)
            .create_with_context(DeliveryContext)
            .map_err(|e| Error::KafkaProduce { topic: String::new(), partition: None, reason: format!("producer: {e}") })?;
        Ok(Self { cfg: cfg.clone(), producer, partitions, round_robin: Mutex::new(FxHashMap::default()) })
    }

    /// The partition of `rec` in `topic` (plan name): explicit, else the key's, else round-robin — as the
    /// embedded log picks it.
    fn pick(&self, topic: &str, rec: &ProduceRecord) -> Result<u32> {
        let n = (self.partitions)(topic)?;
        match (rec.partition, &rec.key) {
            (Some(p), _) if p < n => Ok(p),
            (Some(p), _) => Err(Error::UnknownPartition { topic: topic.to_string(), partition: p, partitions: n }),
            (None, Some(key)) => Ok(partition_for_key(key, n)),
            (None, None) => {
                let counter = Arc::clone(self.round_robin.lock().entry(topic.to_string()).or_default());
                Ok(counter.fetch_add(1, Ordering::Relaxed) % n.max(1))
            }
        }
    }
}

impl KafkaProducer {
    /// Queues every record of `batches`, then waits for every acknowledgement.
    fn send_batches<S: AsRef<str>>(&self, batches: &[(S, Vec<ProduceRecord>)]) -> Result<()> {
        let total: usize = batches.iter().map(|(_, r)| r.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let pending = Arc::new(Pending::default());
        pending.state.lock().outstanding = total;
        let mut queued = 0;
        for (topic, records) in batches {
            let topic = topic.as_ref();
            let name = self.cfg.topic(topic);
            for rec in records {
                if let Err(e) = self.queue(topic, &name, rec, &pending) {
                    // Records queued before this one still report to `pending`; wait for them so no delivery
                    // is outstanding when the caller sees the error.
                    let mut s = pending.state.lock();
                    s.outstanding = s.outstanding.saturating_sub(total - queued);
                    while s.outstanding > 0 {
                        pending.cv.wait(&mut s);
                    }
                    return Err(e);
                }
                queued += 1;
            }
        }
        let mut s = pending.state.lock();
        while s.outstanding > 0 {
            pending.cv.wait(&mut s);
        }
        match s.error.take() {
            None => Ok(()),
            Some((topic, partition, reason)) => Err(Error::KafkaProduce { topic, partition: Some(partition), reason }),
        }
    }

    /// Queues one record (waiting while librdkafka's queue is full).
    fn queue(&self, topic: &str, name: &str, rec: &ProduceRecord, pending: &Arc<Pending>) -> Result<()> {
        let partition = self.pick(topic, rec)?;
        let p = super::kafka_partition(name, partition)?;
        let origin = rec.origin.as_ref().map(encode_origin);
        let mut backoff = Duration::from_millis(1);
        loop {
            let mut r: BaseRecord<'_, [u8], [u8], Arc<Pending>> = BaseRecord::with_opaque_to(name, Arc::clone(pending))
                .partition(p)
                .payload(rec.payload.as_slice())
                .timestamp(rec.timestamp);
            if let Some(key) = &rec.key {
                r = r.key(key.as_slice());
            }
            if let Some(o) = &origin {
                r = r.headers(OwnedHeaders::new().insert(Header { key: ORIGIN_HEADER, value: Some(o.as_str()) }));
            }
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The local queue is full: wait for deliveries to make room (never dropped).
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(Error::KafkaProduce { topic: name.to_string(), partition: Some(partition), reason: e.to_string() })
                }
            }
        }
    }
}

impl Producer for KafkaProducer {
    fn send(&self, topic: &str, records: Vec<ProduceRecord>) -> Result<()> {
        self.send_batches(&[(topic, records)])
    }

    fn send_all(&self, batches: Vec<(String, Vec<ProduceRecord>)>) -> Result<()> {
        self.send_batches(&batches)
    }

    fn flush(&self) -> Result<()> {
        // `send` returns only once its records are acknowledged by every in-sync replica (`acks=all`).
        self.producer
            .flush(self.cfg.request_timeout)
            .map_err(|e| Error::KafkaProduce { topic: String::new(), partition: None, reason: format!("flush: {e}") })
    }
}

