//! Producing simulated traffic into the embedded log exactly once, across restarts.
//!
//! Every simulated event is appended with `origin = sim[0]@seq`, in batches ([`Batcher`]) written in
//! sequence order; the log writes each append straight to its segment files. After a crash a batch may have
//! reached some partitions and not others; on restart [`Resume`] tells, per event, whether its partition
//! already holds it, and the simulator (deterministic) is replayed from the start, appending only what is
//! missing.

use rtb_ops::config::TopicNames;
use rtb_stream::log::ProduceRecord;
use rtb_stream::SourceCoord;

use super::runlog::RunLog;
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

/// Appends simulated events in batches (as a Kafka producer lingers to fill a batch): one log append per
/// run of events bound for the same topic, so that a consumer wakes once per batch, not once per event.
/// Events are appended in sequence order; what a crash leaves is found again by [`Resume`].
pub struct Batcher<'a> {
    log: &'a dyn RunLog,
    topics: &'a TopicNames,
    pending: Vec<SimEvent>,
    capacity: usize,
}

impl<'a> Batcher<'a> {
    /// A batcher that appends once `capacity` events are pending (or on [`Batcher::flush`]).
    pub fn new(log: &'a dyn RunLog, topics: &'a TopicNames, capacity: usize) -> Self {
        Self { log, topics, pending: Vec::with_capacity(capacity), capacity: capacity.max(1) }
    }

    /// Queues `ev`; appends the pending events when the batch is full.
    pub fn push(&mut self, ev: SimEvent) -> rtb_stream::Result<()> {
        self.pending.push(ev);
        if self.pending.len() >= self.capacity {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends every pending event (each partitioned by key, as Kafka's default partitioner would).
    pub fn flush(&mut self) -> rtb_stream::Result<()> {
        let mut events = std::mem::take(&mut self.pending).into_iter().peekable();
        let mut runs = Vec::new();
        while let Some(first) = events.next() {
            let topic = first.topic;
            let mut run = vec![record(first)];
            while let Some(ev) = events.next_if(|e| e.topic == topic) {
                run.push(record(ev));
            }
            runs.push((topic_name(self.topics, topic).to_string(), run));
        }
        // In order: each partition receives its events in sequence order (what `Resume` relies on).
        self.log.append(runs)
    }
}

fn record(ev: SimEvent) -> ProduceRecord {
    ProduceRecord {
        key: Some(ev.key.into_bytes()),
        payload: ev.payload,
        timestamp: ev.timestamp,
        partition: None,
        origin: Some(SourceCoord::new(SIM_ORIGIN, 0, ev.seq)),
    }
}

/// Which simulated events a data directory already holds. Events are appended in sequence order and each
/// partition keeps its records in append order, so event `seq` bound for partition `p` is in the log exactly
/// when `p`'s highest simulator sequence number is at least `seq` — also after a crash in the middle of a
/// batch that reached some partitions and not others.
#[derive(Debug, Default)]
pub struct Resume {
    /// Highest sequence number per (topic, partition) and the partition count of each topic.
    last: std::collections::HashMap<String, (u32, Vec<Option<u64>>)>,
}

impl Resume {
    /// Reads the highest simulator sequence number of every partition of the simulator's topics.
    pub fn scan(log: &dyn RunLog, topics: &TopicNames) -> rtb_stream::Result<Self> {
        let mut last = std::collections::HashMap::new();
        for topic in SIM_TOPICS {
            let name = topic_name(topics, topic);
            let partitions = log.partitions(name)?;
            let seqs = (0..partitions).map(|p| last_sim_seq(log, name, p)).collect::<rtb_stream::Result<Vec<_>>>()?;
            last.insert(name.to_string(), (partitions, seqs));
        }
        Ok(Self { last })
    }

    /// One past the highest sequence number found (0 for an empty log): the run resumes after it.
    pub fn point(&self) -> u64 {
        self.last.values().flat_map(|(_, seqs)| seqs.iter().flatten()).max().map_or(0, |s| s + 1)
    }

    /// Whether `ev` is already in the log.
    pub fn contains(&self, topics: &TopicNames, ev: &SimEvent) -> bool {
        let Some((partitions, seqs)) = self.last.get(topic_name(topics, ev.topic)) else { return false };
        let p = rtb_stream::log::partition_for_key(ev.key.as_bytes(), *partitions) as usize;
        seqs.get(p).copied().flatten().is_some_and(|last| last >= ev.seq)
    }
}

/// The highest simulator sequence number in one partition, scanning back from the end in chunks (other
/// producers, such as the budget monitor, may have appended after the simulator's last record).
fn last_sim_seq(log: &dyn RunLog, topic: &str, partition: u32) -> rtb_stream::Result<Option<u64>> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rtb_stream::log::{EmbeddedLog, TopicConfig};

    use super::*;
    use crate::app::pricing::GspPricer;
    use crate::sim::{SimConfig, Simulator};

    fn log_for(topics: &TopicNames) -> EmbeddedLog {
        let log = EmbeddedLog::in_memory();
        for (name, partitions) in
            [(&topics.campaign_events, 4), (&topics.ad_events, 8), (&topics.conversion_events, 4)]
        {
            log.create_topic(name, TopicConfig { partitions, retention: None }).expect("topic");
        }
        log
    }

    fn events(n: u64) -> Vec<SimEvent> {
        let cfg = SimConfig { seed: 7, ad_events: n, ..SimConfig::default() };
        Simulator::new(cfg, GspPricer::default()).collect()
    }

    /// Simulator sequence number → how many times it is in the log.
    fn copies(log: &EmbeddedLog, topics: &TopicNames) -> BTreeMap<u64, u32> {
        let mut seen = BTreeMap::new();
        for topic in SIM_TOPICS {
            let name = topic_name(topics, topic);
            for p in 0..log.topic_config(name).expect("topic").partitions {
                for r in log.read(name, p, 0, usize::MAX).expect("read") {
                    *seen.entry(r.origin.expect("origin").offset).or_insert(0) += 1;
                }
            }
        }
        seen
    }

    #[test]
    fn a_batch_cut_short_by_a_crash_is_completed_on_resume_each_event_once() {
        let topics = TopicNames::default();
        let log = log_for(&topics);
        let all = events(3_000);
        let total = all.len() as u64;
        // The first run appended 1 000 events, then crashed while appending the next batch: the batch
        // reached the partitions of `ad-events` 0 to 3 and no other.
        let mut b = Batcher::new(&log, &topics, 256);
        for ev in all.iter().take(1_000).cloned() {
            b.push(ev).expect("push");
        }
        b.flush().expect("flush");
        let cut: Vec<SimEvent> = all[1_000..1_500]
            .iter()
            .filter(|e| {
                e.topic == SimTopic::Ad && rtb_stream::log::partition_for_key(e.key.as_bytes(), 8) < 4
            })
            .cloned()
            .collect();
        assert!(!cut.is_empty());
        for ev in &cut {
            log.append(&topics.ad_events, record(ev.clone())).expect("append");
        }

        // The restart: every event not in the log is appended, none twice.
        let present = Resume::scan(&log, &topics).expect("scan");
        assert_eq!(present.point(), cut.last().expect("cut").seq + 1);
        let mut b = Batcher::new(&log, &topics, 256);
        let mut appended = 0;
        for ev in all.iter().cloned() {
            if !present.contains(&topics, &ev) {
                appended += 1;
                b.push(ev).expect("push");
            }
        }
        b.flush().expect("flush");
        assert_eq!(appended, total - 1_000 - cut.len() as u64);
        let seen = copies(&log, &topics);
        assert_eq!(seen.len() as u64, total, "every event is in the log");
        assert!(seen.values().all(|&n| n == 1), "and none twice");
    }
}
