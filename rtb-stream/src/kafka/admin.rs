//! Topic creation and metadata.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;

use super::reader::BaseConsumer;
use rdkafka::types::RDKafkaErrorCode;

use super::{retry, KafkaConfig};
use crate::error::{Error, Result};
use crate::log::TopicConfig;

/// A topic to create when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The plan's name (the cluster's name is [`KafkaConfig::topic`] of it).
    pub name: String,
    /// Partitions and retention.
    pub config: TopicConfig,
    /// `cleanup.policy=compact` (changelogs): only the last record per key needs keeping.
    pub compact: bool,
    /// Replication factor (1 on a single broker).
    pub replication: i32,
}

impl TopicSpec {
    /// A delete-policy topic with replication 1.
    pub fn new(name: impl Into<String>, config: TopicConfig) -> Self {
        Self { name: name.into(), config, compact: false, replication: 1 }
    }
}

/// Creates every topic of `specs` that does not exist, then waits until the cluster's metadata shows each
/// with its partitions. An existing topic with another partition count is an error
/// ([`Error::TopicMismatch`]); its other settings are left as they are.
pub(crate) fn ensure_topics(cfg: &KafkaConfig, meta: &BaseConsumer, specs: &[TopicSpec]) -> Result<()> {
    let mut missing = Vec::new();
    for spec in specs {
        let name = cfg.topic(&spec.name);
        match partitions_of(cfg, meta, &name, false)? {
            Some(n) if n == spec.config.partitions => {}
            Some(n) => {
                return Err(Error::TopicMismatch { topic: name, existing: n, requested: spec.config.partitions })
            }
            None => missing.push(spec),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = cfg
        .client(&[])
        .create()
        .map_err(|e| Error::KafkaAdmin { topic: cfg.topic(&missing[0].name), reason: format!("admin client: {e}") })?;
    let names: Vec<String> = missing.iter().map(|s| cfg.topic(&s.name)).collect();
    let retention: Vec<String> = missing
        .iter()
        .map(|s| s.config.retention.map_or_else(|| "-1".to_string(), |r| r.as_millis().to_string()))
        .collect();
    let mut topics = Vec::new();
    for (i, spec) in missing.iter().enumerate() {
        let partitions = i32::try_from(spec.config.partitions)
            .map_err(|_| Error::Config(format!("topic `{}`: too many partitions", spec.name)))?;
        let mut t = NewTopic::new(&names[i], partitions, TopicReplication::Fixed(spec.replication))
            .set("retention.ms", &retention[i]);
        if spec.compact {
            t = t.set("cleanup.policy", "compact");
        }
        topics.push(t);
    }
    let opts = AdminOptions::new().operation_timeout(Some(cfg.request_timeout)).request_timeout(Some(cfg.request_timeout));
    let results = retry(cfg, &|| format!("creating topics {names:?}"), || {
        futures_executor::block_on(admin.create_topics(topics.iter(), &opts))
    })
    .map_err(|e| Error::KafkaAdmin { topic: names.join(","), reason: e.to_string() })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::KafkaAdmin { topic, reason: format!("create: {code}") }),
        }
    }
    // Wait until the metadata shows every partition (creation is asynchronous on some brokers).
    for (i, spec) in missing.iter().enumerate() {
        let deadline = Instant::now() + cfg.request_timeout.max(Duration::from_secs(5));
        loop {
            match partitions_of(cfg, meta, &names[i], false)? {
                Some(n) if n == spec.config.partitions => break,
                _ if Instant::now() >= deadline => {
                    return Err(Error::KafkaAdmin {
                        topic: names[i].clone(),
                        reason: "created, but the metadata does not show it".into(),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    tracing::info!(topics = ?names, "kafka: topics created");
    Ok(())
}

/// The partition count of the cluster's topic `name`, `None` if it does not exist (`required`: then an
/// [`Error::UnknownTopic`]).
pub(crate) fn partitions_of(cfg: &KafkaConfig, meta: &BaseConsumer, name: &str, required: bool) -> Result<Option<u32>> {
    let md = retry(cfg, &|| format!("metadata of topic `{name}`"), || {
        meta.fetch_metadata(Some(name), cfg.request_timeout)
    })
    .map_err(|e| Error::KafkaAdmin { topic: name.to_string(), reason: format!("metadata: {e}") })?;
    let found = md.topics().iter().find(|t| t.name() == name).and_then(|t| match t.error() {
        None if !t.partitions().is_empty() => Some(t.partitions().len() as u32),
        _ => None,
    });
    match found {
        None if required => Err(Error::UnknownTopic(name.to_string())),
        n => Ok(n),
    }
}
