//! The Kafka edge (feature `kafka`): the runtime's log traits ([`LogIo`](crate::io::LogIo)) over a Kafka
//! cluster through rdkafka, and a state backend kept in changelog topics.
//!
//! - [`KafkaLog`] — topics, readers, the producer. Topic names are the plan's names behind a prefix
//!   ([`KafkaConfig::topic_prefix`]), so one cluster holds many deployments (or test runs) side by side;
//!   records read back carry the plan's names, so offsets in the state and origins are the same as on the
//!   embedded log.
//!   - A reader is one consumer per input partition, with that partition **assigned** (no group
//!     membership: the runtime's state holds the offsets), seeking where the task reads from. The end of a
//!     partition is taken from a fetch (its high watermark), never from `ListOffsets(latest)` alone:
//!     Tansu answers that with the base of the last batch + 1 (see [`KafkaLog`]).
//!   - The producer is idempotent (`enable.idempotence=true`, `acks=all`) and picks the partition itself
//!     exactly as the embedded log does (explicit partition, else Kafka's murmur2 of the key, else
//!     round-robin); `send` returns once every record is acknowledged. A record's origin travels in the
//!     header [`ORIGIN_HEADER`].
//! - Group membership (`LogIo::join_group`): one consumer per job and process subscribes to the job's
//!   first input in the job's group, so that the broker assigns partitions among the processes running the
//!   job (cooperative-sticky); the runtime starts and stops tasks as they come and go (see `member`).
//! - [`ChangelogBackend`] — a [`StoreBackend`](crate::state::StoreBackend): the map in memory, each task's
//!   part of a committed batch written as one record (chunked above a size) to the task's partition of
//!   its group's changelog topic before it is applied; restored at open by reading the changelog
//!   partitions to their end.
//!
//! Every client gets [`KafkaConfig::properties`] on top of this module's defaults, so any librdkafka
//! property can be set (security, timeouts, batching). Transient failures of metadata and offset requests
//! are retried with backoff and a `tracing` warning, then returned as [`Error::KafkaAdmin`] /
//! [`Error::KafkaConsume`]; a record that cannot be delivered fails `send` with [`Error::KafkaProduce`].

mod admin;
mod changelog;
mod log;
mod member;
mod producer;
mod reader;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::{Error, Result};

pub use admin::TopicSpec;
pub use changelog::{ChangelogBackend, ChangelogOptions, RestoreStats};
pub use log::KafkaLog;

/// Header carrying a record's origin (`partition:offset:topic`, see [`crate::log::ProduceRecord::origin`]).
pub const ORIGIN_HEADER: &str = "rtb-origin";

/// How to reach a Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `HOST:PORT[,HOST:PORT…]`.
    pub brokers: String,
    /// Prepended to every topic name on the cluster (the plan's `ad-events` is `{prefix}ad-events`).
    pub topic_prefix: String,
    /// librdkafka properties given to every client (consumers, producer, admin), over this module's
    /// defaults: anything librdkafka accepts (`security.protocol`, `linger.ms`, …).
    pub properties: BTreeMap<String, String>,
    /// How long one metadata, offset or admin request may take before it is retried (default 10 s).
    pub request_timeout: Duration,
    /// Attempts for a transient failure of such a request, with exponential backoff from 100 ms up to 5 s
    /// between them (default 8).
    pub attempts: u32,
    /// Static group membership (`group.instance.id`, KIP-345) of this process's group members
    /// ([`crate::io::LogIo::join_group`]): an id that stays the same when the process restarts and that no
    /// other live process uses. A member restarted with its id takes its partitions back at once, with no
    /// rebalance; without one, a killed member holds its partitions until the broker expires it (after
    /// `session.timeout.ms` on Apache Kafka; Tansu expires it only at the next rebalance, which a lone
    /// restarted member never gets). The price: a static member that stops in order is not removed from
    /// the group either (librdkafka sends no LeaveGroup for it), so its partitions move after the session
    /// timeout (or Tansu's next rebalance, seconds later) rather than at once. Default `None`.
    pub instance_id: Option<String>,
}

impl KafkaConfig {
    /// A configuration for `brokers` with the defaults and no topic prefix.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
            request_timeout: Duration::from_secs(10),
            attempts: 8,
            instance_id: None,
        }
    }

    /// The same configuration with static group membership under `id` (see [`KafkaConfig::instance_id`]).
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The same configuration with topic prefix `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// The cluster's name of the plan's topic `topic`.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.topic_prefix)
    }

    /// A client configuration: `bootstrap.servers`, then `defaults`, then [`KafkaConfig::properties`].
    pub(crate) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Runs `f` until it succeeds, at most `cfg.attempts` times, sleeping with exponential backoff between
/// attempts and logging each failure with `what` (a transient broker error is retried, never only logged:
/// the last one is returned).
pub(crate) fn retry<T, E: std::fmt::Display>(
    cfg: &KafkaConfig,
    what: &dyn Fn() -> String,
    mut f: impl FnMut() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let mut backoff = Duration::from_millis(100);
    let attempts = cfg.attempts.max(1);
    let mut attempt = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts => {
                tracing::warn!(attempt, attempts, error = %e, backoff_ms = backoff.as_millis() as u64,
                    "kafka: {} failed; retrying", what());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Drops `items` on parallel threads: closing a librdkafka consumer takes about 100 ms, so a run that
/// closes dozens of them one after the other would wait seconds.
pub fn close_in_parallel<T: Send>(items: Vec<T>) {
    if items.len() <= 1 {
        return;
    }
    std::thread::scope(|scope| {
        for item in items {
            scope.spawn(move || drop(item));
        }
    });
}

/// Encodes an origin as the value of [`ORIGIN_HEADER`].
pub(crate) fn encode_origin(o: &crate::record::SourceCoord) -> String {
    format!("{}:{}:{}", o.partition, o.offset, o.topic)
}

/// Decodes the value of [`ORIGIN_HEADER`].
pub(crate) fn decode_origin(bytes: &[u8]) -> Option<crate::record::SourceCoord> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut parts = s.splitn(3, ':');
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    Some(crate::record::SourceCoord::new(topic, partition, offset))
}

/// A topic's partition count must fit Kafka's `i32` partition numbers.
pub(crate) fn kafka_partition(topic: &str, p: u32) -> Result<i32> {
    i32::try_from(p).map_err(|_| Error::KafkaAdmin { topic: topic.to_string(), reason: format!("partition {p} out of range") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_header_round_trips_topics_with_colons() {
        let o = crate::record::SourceCoord::new("a:b", 3, 99);
        assert_eq!(decode_origin(encode_origin(&o).as_bytes()), Some(o));
        assert_eq!(decode_origin(b"x"), None);
    }

    #[test]
    fn properties_override_defaults() {
        let mut cfg = KafkaConfig::new("h:1");
        cfg.properties.insert("linger.ms".into(), "7".into());
        let c = cfg.client(&[("linger.ms", "1"), ("acks", "all")]);
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("bootstrap.servers"), Some("h:1"));
    }
}
