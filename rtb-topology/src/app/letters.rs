//! The dead-letter and late-record tallies of `rtb run`, read from the log's dead-letter and late topics.
//!
//! A bad input is rejected by every stage that reads it (each of the five consumer groups of `ad-events`
//! validates the same record), so the dead-letter topic holds one letter per rejecting stage. A bad input is
//! counted **once**, by its source coordinates: the progress line while the run goes and the report at the
//! end read the same [`LetterTally`], so they show the same figure.

use std::collections::{BTreeMap, HashSet};

use rtb_stream::{DeadLetter, SourceCoord};

use super::runlog::RunLog;
use super::wiring::{DEAD_LETTER_TOPIC, LATE_TOPIC};
use crate::error::Result;
use crate::replay::outputs::is_late_reason;
use crate::report::RunCounters;

/// Dead letters and late records counted so far; [`LetterTally::update`] reads what was appended since.
#[derive(Debug, Default)]
pub struct LetterTally {
    /// Topics whose records are conversions (the declared topic and its repartition topics).
    conversion_topics: HashSet<String>,
    /// (topic, partition) → next offset to read.
    next: BTreeMap<(&'static str, u32), u64>,
    dead_seen: HashSet<SourceCoord>,
    late_seen: HashSet<(SourceCoord, String)>,
    late_conversion_seen: HashSet<SourceCoord>,
    /// Distinct bad inputs per source topic.
    dead_letters: BTreeMap<String, u64>,
    /// Distinct bad inputs per reason (the first rejecting stage's reason, up to its first `:`).
    reasons: BTreeMap<String, u64>,
    /// Late records per stage.
    late: BTreeMap<String, u64>,
    conversion_dead: u64,
}

impl LetterTally {
    /// A tally that also counts, apart, the dead and late records of `conversion_topics`.
    pub fn new(conversion_topics: impl IntoIterator<Item = String>) -> Self {
        Self { conversion_topics: conversion_topics.into_iter().collect(), ..Self::default() }
    }

    /// Reads the letters appended since the last call.
    pub fn update(&mut self, log: &dyn RunLog) -> Result<()> {
        for topic in [LATE_TOPIC, DEAD_LETTER_TOPIC] {
            for p in 0..log.partitions(topic)? {
                let end = log.end_offset(topic, p)?;
                let start = log.start_offset(topic, p)?;
                let mut from = *self.next.entry((topic, p)).or_insert(start);
                while from < end {
                    let recs = log.read(topic, p, from, 4_096)?;
                    let Some(last) = recs.last() else { break };
                    from = last.offset + 1;
                    self.next.insert((topic, p), from);
                    for r in recs {
                        let Ok(dl) = serde_json::from_slice::<DeadLetter>(&r.payload) else { continue };
                        // Operators not yet moved to `Context::late` report late records as dead letters (LATE_*).
                        if topic == LATE_TOPIC || is_late_reason(&dl.reason) {
                            self.add_late(dl);
                        } else {
                            self.add_dead(dl);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_late(&mut self, dl: DeadLetter) {
        if self.conversion_topics.contains(&*dl.source.topic) {
            self.late_conversion_seen.insert(dl.source.clone());
        }
        if self.late_seen.insert((dl.source, dl.stage.clone())) {
            *self.late.entry(dl.stage).or_default() += 1;
        }
    }

    fn add_dead(&mut self, dl: DeadLetter) {
        if !self.dead_seen.insert(dl.source.clone()) {
            return;
        }
        if self.conversion_topics.contains(&*dl.source.topic) {
            self.conversion_dead += 1;
        }
        *self.dead_letters.entry(dl.source.topic.to_string()).or_default() += 1;
        let reason = dl.reason.split(':').next().unwrap_or(&dl.reason).to_string();
        *self.reasons.entry(reason).or_default() += 1;
    }

    /// Distinct bad inputs so far (the figure of the progress line and of the report).
    pub fn dead_letters(&self) -> u64 {
        self.dead_seen.len() as u64
    }

    /// Writes the tallies into the run's counters.
    pub fn fill(&self, c: &mut RunCounters) {
        c.dead_letters = self.dead_letters.clone();
        c.dead_letter_reasons = self.reasons.clone();
        c.late = self.late.clone();
        c.conversion_inputs.dead_letters = self.conversion_dead;
        c.conversion_inputs.late = self.late_conversion_seen.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use rtb_stream::log::{EmbeddedLog, ProduceRecord, TopicConfig};

    use super::*;

    fn letter(topic: &str, offset: u64, stage: &str, reason: &str) -> ProduceRecord {
        let dl = DeadLetter {
            source: SourceCoord::new(topic, 0, offset),
            stage: stage.to_string(),
            reason: reason.to_string(),
            payload: "{}".to_string(),
        };
        ProduceRecord {
            key: None,
            payload: serde_json::to_vec(&dl).expect("json"),
            timestamp: 0,
            partition: Some(0),
            origin: None,
        }
    }

    #[test]
    fn a_bad_input_rejected_by_five_groups_counts_once_and_conversions_are_counted_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EmbeddedLog::open(dir.path()).expect("log");
        for t in [DEAD_LETTER_TOPIC, LATE_TOPIC] {
            log.create_topic(t, TopicConfig { partitions: 1, retention: None }).expect("topic");
        }
        let groups = ["performance", "dedup", "conversion-matcher", "balance", "budget"];
        for g in groups {
            log.append(DEAD_LETTER_TOPIC, letter("ad-events", 7, g, "DECODE: not json")).expect("append");
        }
        let mut tally = LetterTally::new(["conversion-events".to_string(), "cm-conversion-events-repartition".to_string()]);
        tally.update(&log).expect("update");
        assert_eq!(tally.dead_letters(), 1, "five letters of one record");

        // More letters arrive while the run goes: read incrementally, still by source.
        log.append(DEAD_LETTER_TOPIC, letter("ad-events", 7, "budget", "DECODE: not json")).expect("append");
        log.append(DEAD_LETTER_TOPIC, letter("ad-events", 9, "balance", "UNKNOWN_ADVERTISER: a9")).expect("append");
        log.append(DEAD_LETTER_TOPIC, letter("conversion-events", 3, "cm-conversion-events-repartition", "DECODE: x"))
            .expect("append");
        log.append(LATE_TOPIC, letter("cm-conversion-events-repartition", 4, "conversion-matcher", "LATE_CONVERSION: o"))
            .expect("append");
        log.append(DEAD_LETTER_TOPIC, letter("ad-events", 11, "conversion-matcher", "LATE_CLICK: c")).expect("append");
        tally.update(&log).expect("update");
        assert_eq!(tally.dead_letters(), 3);

        let mut c = RunCounters::default();
        tally.fill(&mut c);
        assert_eq!(c.dead_letters, BTreeMap::from([("ad-events".into(), 2), ("conversion-events".into(), 1)]));
        assert_eq!(c.dead_letters.values().sum::<u64>(), tally.dead_letters(), "the progress line's figure is the report's");
        assert_eq!(c.dead_letter_reasons, BTreeMap::from([("DECODE".into(), 2), ("UNKNOWN_ADVERTISER".into(), 1)]));
        assert_eq!(c.late, BTreeMap::from([("conversion-matcher".into(), 2)]), "a late click and a late conversion");
        assert_eq!((c.conversion_inputs.dead_letters, c.conversion_inputs.late), (1, 1));
    }
}
