//! [`KafkaMember`]: a process's membership in a Kafka consumer group ([`GroupMember`]).
//!
//! One consumer per job and process **subscribes** to the job's first input topic in the job's group
//! (`{prefix}{group}`) and never reads records: it only takes part in the group protocol, so that the
//! broker assigns the topic's partitions among the processes running the job. The tasks read through
//! their own assigned readers ([`super::reader`]) from the offsets committed in their state; nothing is
//! committed to the group.
//!
//! Rebalances are cooperative (`partition.assignment.strategy=cooperative-sticky`, where the broker
//! supports it; librdkafka falls back to eager otherwise): a rebalance revokes only the partitions that
//! move. librdkafka calls the rebalance callback from [`GroupMember::poll`] on the polling thread; the
//! handler runs there, **before** the revocation is acknowledged to the group, so a revoked partition is
//! committed and stopped here before any other member can be given it. A revocation after the assignment
//! was lost (this member was expelled: session timeout, `max.poll.interval.ms`) is reported as
//! [`Rebalance::Lost`]: another member may own those partitions already.
//!
//! With [`KafkaConfig::instance_id`] the member is static (`group.instance.id`): a restarted process
//! takes its partitions back without a rebalance.
//!
//! The subscription's own fetches are paused as soon as partitions are assigned (and the consumer's queue
//! is kept small): the membership costs a heartbeat, not a second read of the data.

use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance as RdRebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};

use super::KafkaConfig;
use crate::error::{Error, Result};
use crate::io::{GroupMember, Rebalance, RebalanceHandler};

/// Defaults of the membership consumer (overridden by [`KafkaConfig::properties`]).
const MEMBER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    // A member that stops heartbeating (a killed process) loses its partitions after this long.
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    // Also the rebalance timeout: how long a rebalance waits for a member to rejoin before it goes on
    // without it. The member polls every 100 ms (longer only while a rebalance restores or commits tasks).
    ("max.poll.interval.ms", "20000"),
    ("queued.max.messages.kbytes", "64"),
    ("allow.auto.create.topics", "false"),
];

/// The membership consumer's context: runs the handler from librdkafka's rebalance callback.
struct MemberContext {
    group: String,
    handler: Mutex<RebalanceHandler>,
    /// The first error of the handler (returned by the next `poll`).
    failed: Mutex<Option<Error>>,
}

impl MemberContext {
    fn call(&self, change: &Rebalance) {
        if self.failed.lock().is_some() {
            return;
        }
        tracing::info!(group = %self.group, change = ?change, "kafka: consumer group rebalance");
        if let Err(e) = (self.handler.lock())(change) {
            tracing::error!(group = %self.group, error = %e, "kafka: rebalance handler failed");
            *self.failed.lock() = Some(e);
        }
    }
}

impl ClientContext for MemberContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::warn!(group = %self.group, %error, reason, "kafka: group member: client error; librdkafka retries");
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &RdRebalance<'_>) {
        match rebalance {
            RdRebalance::Revoke(tpl) => {
                let partitions = partitions_of(tpl);
                if partitions.is_empty() {
                    return;
                }
                if consumer.assignment_lost() {
                    self.call(&Rebalance::Lost(partitions));
                } else {
                    self.call(&Rebalance::Revoked(partitions));
                }
            }
            RdRebalance::Assign(_) => {}
            RdRebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "kafka: rebalance error; the group retries");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &RdRebalance<'_>) {
        if let RdRebalance::Assign(tpl) = rebalance {
            let partitions = partitions_of(tpl);
            if partitions.is_empty() {
                return;
            }
            // The membership reads nothing: stop its fetches of the new partitions.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(group = %self.group, error = %e, "kafka: group member: pause failed (it fetches unread records)");
            }
            self.call(&Rebalance::Assigned(partitions));
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<u32> {
    let mut ps: Vec<u32> = tpl.elements().iter().filter_map(|e| u32::try_from(e.partition()).ok()).collect();
    ps.sort_unstable();
    ps
}

/// A process's membership in one consumer group. See the module docs.
pub(crate) struct KafkaMember {
    consumer: BaseConsumer<MemberContext>,
    group: String,
}

impl KafkaMember {
    /// Joins `{prefix}{group}` subscribed to the cluster's topic of `topic`.
    pub(crate) fn join(cfg: &KafkaConfig, group: &str, topic: &str, handler: RebalanceHandler) -> Result<Self> {
        let name = cfg.topic(topic);
        let context = MemberContext { group: group.to_string(), handler: Mutex::new(handler), failed: Mutex::new(None) };
        let mut client = cfg.client(MEMBER_DEFAULTS);
        client.set("group.id", cfg.topic(group));
        if let Some(id) = &cfg.instance_id {
            client.set("group.instance.id", id);
        }
        let consumer: BaseConsumer<MemberContext> = client
            .create_with_context(context)
            .map_err(|e| Error::KafkaConsume { topic: name.clone(), partition: 0, offset: 0, reason: format!("group member: {e}") })?;
        consumer.subscribe(&[&name]).map_err(|e| Error::KafkaConsume {
            topic: name.clone(),
            partition: 0,
            offset: 0,
            reason: format!("group `{}`: subscribe: {e}", cfg.topic(group)),
        })?;
        tracing::info!(group = %cfg.topic(group), topic = %name, "kafka: joined the consumer group");
        Ok(Self { consumer, group: group.to_string() })
    }

    fn take_failure(&self) -> Result<()> {
        match self.consumer.context().failed.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl GroupMember for KafkaMember {
    fn poll(&mut self, timeout: Duration) -> Result<()> {
        // Records are never expected (fetches are paused); one that slips in before the pause is dropped.
        match self.consumer.poll(timeout) {
            None | Some(Ok(_)) => {}
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
            Some(Err(e)) => tracing::warn!(group = %self.group, error = %e, "kafka: group member: consumer error"),
        }
        self.take_failure()
    }

    fn leave(self: Box<Self>) -> Result<()> {
        // Closing revokes what is assigned (the handler runs) and leaves the group at once.
        self.consumer.unsubscribe();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.consumer.assignment().map(|a| a.count() == 0).unwrap_or(true) && std::time::Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(50));
        }
        self.take_failure()?;
        tracing::info!(group = %self.group, "kafka: left the consumer group");
        drop(self);
        Ok(())
    }
}
