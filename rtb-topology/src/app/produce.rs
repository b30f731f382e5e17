//! Producing simulated traffic into the embedded log exactly once, across restarts.
//!
//! Every simulated event is appended with `origin = sim[0]@seq`. The log writes each append straight to its
//! segment file, so after a crash the events present are exactly a prefix of the simulator's sequence; on
//! restart [`resume_point`] finds the highest `seq` in the log and the simulator is fast-forwarded past it.

use rtb_ops::config::TopicNames;
use rtb_stream::log::{EmbeddedLog, ProduceRecord};
use rtb_stream::SourceCoord;

use crate::sim::{SimEvent, SimTopic};

/// Origin topic name that marks records written by the simulator.
pub const SIM_ORIGIN: &str = "sim";

/// The topics the simulator writes.
pub const SIM_TOPICS: [SimTopic; 3] = [SimTopic::Campaign, SimTopic::Ad, SimTopic::Conversion];

/// The topology's name of the topic a simulated event goes to (the file may rename the topics).
pub fn topic_name(topics: &TopicNames, topic: SimTopic) -> &str {
    match topic {
        SimTopic::Campaign => &topics.campaign_events,
        SimTopic::Ad => &topics.ad_events,
        SimTopic::Conversion => &topics.conversion_events,
    }
}

/// Appends one simulated event to its topic (partitioned by key, as Kafka's default partitioner would).
pub fn append(log: &EmbeddedLog, topics: &TopicNames, ev: &SimEvent) -> rtb_stream::Result<(u32, u64)> {
    log.append(
        topic_name(topics, ev.topic),
        ProduceRecord {
            key: Some(ev.key.as_bytes().to_vec()),
            payload: ev.payload.clone(),
            timestamp: ev.timestamp,
            partition: None,
            origin: Some(SourceCoord::new(SIM_ORIGIN, 0, ev.seq)),
        },
    )
}

/// The next simulator sequence number to produce: one past the highest found in the log (0 if none).
pub fn resume_point(log: &EmbeddedLog, topics: &TopicNames) -> rtb_stream::Result<u64> {
    let mut next = 0u64;
    for topic in SIM_TOPICS {
        let name = topic_name(topics, topic);
        let partitions = log.topic_config(name)?.partitions;
        for p in 0..partitions {
            if let Some(seq) = last_sim_seq(log, name, p)? {
                next = next.max(seq + 1);
            }
        }
    }
    Ok(next)
}

/// The highest simulator sequence number in one partition, scanning back from the end in chunks (other
/// producers, such as the budget monitor, may have appended after the simulator's last record).
fn last_sim_seq(log: &EmbeddedLog, topic: &str, partition: u32) -> rtb_stream::Result<Option<u64>> {
    const CHUNK: u64 = 4_096;
    let start = log.start_offset(topic, partition)?;
    let mut end = log.end_offset(topic, partition)?;
    while end > start {
        let from = end.saturating_sub(CHUNK).max(start);
        let recs = log.read(topic, partition, from, (end - from) as usize)?;
        let best = recs
            .iter()
            .filter_map(|r| r.origin.as_ref())
            .filter(|o| &*o.topic == SIM_ORIGIN)
            .map(|o| o.offset)
            .max();
        if best.is_some() {
            return Ok(best);
        }
        end = from;
    }
    Ok(None)
}
