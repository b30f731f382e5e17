//! [`KafkaLog`]: the runtime's [`LogIo`] over a Kafka cluster.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use super::admin::{ensure_topics, partitions_of, TopicSpec};
use super::producer::KafkaProducer;
use super::reader::{probe_end, BaseConsumer, KafkaReader, Quiet, CONSUMER_DEFAULTS};
use super::KafkaConfig;
use crate::error::{Error, Result};
use crate::io::{GroupMember, LogIo, PartitionReader, Producer, RebalanceHandler};

/// Metadata: the client that asks for it and the partition counts learnt.
struct Meta {
    cfg: KafkaConfig,
    client: BaseConsumer,
    /// Partition counts by plan topic.
    partitions: RwLock<FxHashMap<String, u32>>,
}

impl Meta {
    fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.partitions.read().get(topic) {
            return Ok(*n);
        }
        let name = self.cfg.topic(topic);
        let n = partitions_of(&self.cfg, &self.client, &name, true)?.unwrap_or(0);
        self.partitions.write().insert(topic.to_string(), n);
        Ok(n)
    }
}

struct Inner {
    cfg: KafkaConfig,
    meta: Arc<Meta>,
    /// Consumers that probe end offsets, reused.
    probes: Arc<Mutex<Vec<BaseConsumer>>>,
    producer: Arc<KafkaProducer>,
}

/// A Kafka cluster as the runtime's log: see the [module docs](super). Cheap to clone.
///
/// ```no_run
/// use rtb_stream::kafka::{KafkaConfig, KafkaLog, TopicSpec};
/// use rtb_stream::log::TopicConfig;
/// let log = KafkaLog::connect(KafkaConfig::new("127.0.0.1:9092").with_prefix("demo-"))?;
/// log.ensure_topics(&[TopicSpec::new("in", TopicConfig { partitions: 4, retention: None })])?;
/// # Ok::<(), rtb_stream::Error>(())
/// ```
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.inner.cfg.brokers)
            .field("topic_prefix", &self.inner.cfg.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        super::close_in_parallel(std::mem::take(&mut *self.probes.lock()));
    }
}

impl KafkaLog {
    /// Connects to the cluster of `cfg`: fails with [`Error::KafkaAdmin`] naming the brokers when no
    /// broker answers a metadata request (after the retries of [`KafkaConfig::attempts`]).
    pub fn connect(cfg: KafkaConfig) -> Result<Self> {
        let meta: BaseConsumer = cfg
            .client(CONSUMER_DEFAULTS)
            .set("group.id", format!("{}rtb-metadata", cfg.topic_prefix))
            .create_with_context(Quiet)
            .map_err(|e| Error::KafkaAdmin { topic: String::new(), reason: format!("client for {}: {e}", cfg.brokers) })?;
        use rdkafka::consumer::Consumer;
        super::retry(&cfg, &|| format!("metadata from {}", cfg.brokers), || meta.fetch_metadata(None, cfg.request_timeout))
            .map_err(|e| Error::KafkaAdmin {
                topic: String::new(),
                reason: format!("no Kafka broker answers at {}: {e}", cfg.brokers),
            })?;
        let meta = Arc::new(Meta { cfg: cfg.clone(), client: meta, partitions: RwLock::new(FxHashMap::default()) });
        let m = Arc::clone(&meta);
        let producer = Arc::new(KafkaProducer::new(&cfg, Arc::new(move |topic: &str| m.partition_count(topic)))?);
        Ok(Self { inner: Arc::new(Inner { cfg, meta, probes: Arc::new(Mutex::new(Vec::new())), producer }) })
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.cfg
    }

    /// Creates every topic of `specs` that is missing (names are the plan's: the prefix is added); an
    /// existing topic with another partition count is an error.
    pub fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        ensure_topics(&self.inner.cfg, &self.inner.meta.client, specs)?;
        let mut known = self.inner.meta.partitions.write();
        for s in specs {
            known.insert(s.name.clone(), s.config.partitions);
        }
        Ok(())
    }

    /// The end offset of partition `partition` of the plan's topic `topic` now (a round trip; see the
    /// module docs of the reader for how it stays right on Tansu).
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        probe_end(&self.inner.cfg, &self.inner.probes, &self.inner.cfg.topic(topic), partition)
    }

    /// [`KafkaLog::end_offset`] of each `(topic, partition)`, asked in parallel (up to 16 at a time).
    pub fn end_offsets(&self, partitions: &[(&str, u32)]) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(partitions.len());
        for chunk in partitions.chunks(16) {
            let ends: Vec<Result<u64>> = std::thread::scope(|scope| {
                let handles: Vec<_> =
                    chunk.iter().map(|(t, p)| scope.spawn(move || self.end_offset(t, *p))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(Error::Config("end-offset probe panicked".into()))))
                    .collect()
            });
            for e in ends {
                out.push(e?);
            }
        }
        Ok(out)
    }
}

impl LogIo for KafkaLog {
    fn partitions(&self, topic: &str) -> Result<u32> {
        self.inner.meta.partition_count(topic)
    }

    fn reader(&self, group: &str, topics: &[Arc<str>], partition: u32) -> Result<Box<dyn PartitionReader>> {
        for t in topics {
            let n = self.partitions(t)?;
            if partition >= n {
                return Err(Error::UnknownPartition { topic: t.to_string(), partition, partitions: n });
            }
        }
        Ok(Box::new(KafkaReader::new(&self.inner.cfg, group, topics, partition, Arc::clone(&self.inner.probes))?))
    }

    fn producer(&self) -> Arc<dyn Producer> {
        Arc::clone(&self.inner.producer) as Arc<dyn Producer>
    }

    fn join_group(&self, group: &str, topic: &str, handler: RebalanceHandler) -> Result<Option<Box<dyn GroupMember>>> {
        self.partitions(topic)?;
        Ok(Some(Box::new(super::member::KafkaMember::join(&self.inner.cfg, group, topic, handler)?)))
    }
}
