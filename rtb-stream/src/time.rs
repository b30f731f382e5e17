//! Event time and watermarks.
//!
//! Time is `i64` milliseconds since the Unix epoch (UTC). A watermark `w` asserts that no record with a
//! timestamp `<= w` is expected any more; records at or below the current watermark are *late*.
//!
//! [`WatermarkTracker`] keeps one bounded-out-of-orderness watermark per input partition:
//! `partition watermark = max timestamp seen − allowed out-of-orderness`. The operator's watermark is the
//! minimum over its partitions. A partition that is *caught up* (nothing left to read: see
//! [`WatermarkTracker::set_caught_up`]) and has received nothing for `idle_timeout` of processing time is
//! *idle* and stops holding the minimum back until it receives a record again. A partition with unread
//! records is never idle: a stalled process (a GC pause, a slow disk, a suspended VM) is not a quiet
//! partition. The combined watermark never goes backwards. The max timestamp seen per partition (its
//! *stream time*) is what the watermark is derived from: [`WatermarkTracker::stream_time`] and
//! [`WatermarkTracker::restore_stream_time`] let a runtime commit and restore it with the watermark.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type Timestamp = i64;

/// The wall clock as a [`Timestamp`]: milliseconds since the Unix epoch (0 before it). The runtime's default
/// processing-time clock.
pub fn wall_clock_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One minute in milliseconds.
pub const MINUTE: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR: i64 = 60 * MINUTE;
/// One day in milliseconds.
pub const DAY: i64 = 24 * HOUR;

/// How watermarks are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkConfig {
    /// Allowed out-of-orderness: the watermark trails the max timestamp seen by this much.
    #[serde(with = "crate::span::serde_ms")]
    pub max_out_of_orderness: Duration,
    /// Processing time after which a silent partition no longer holds the watermark back.
    /// `None` disables idleness (a silent partition holds the watermark forever, as in Flink's default).
    #[serde(with = "crate::span::serde_ms_opt")]
    pub idle_timeout: Option<Duration>,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self { max_out_of_orderness: Duration::from_secs(5), idle_timeout: Some(Duration::from_secs(10)) }
    }
}

#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    max_ts: Option<Timestamp>,
    last_activity: i64,
    idle: bool,
    caught_up: bool,
}

/// Per-partition watermark generation and the minimum over partitions. See the module docs.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    config: WatermarkConfig,
    parts: Vec<PartitionClock>,
    current: Option<Timestamp>,
}

impl WatermarkTracker {
    /// A tracker over `partitions` input partitions; `now` is the current processing time in ms.
    pub fn new(partitions: usize, config: WatermarkConfig, now: i64) -> Self {
        let clock = PartitionClock { max_ts: None, last_activity: now, idle: false, caught_up: true };
        Self { config, parts: vec![clock; partitions], current: None }
    }

    /// Adds an input partition (e.g. an upstream partition first seen through a repartition topic) and
    /// returns its index. It holds the watermark back from its first record on, like the others; the
    /// current watermark never goes back.
    pub fn add_partition(&mut self, now: i64) -> usize {
        self.parts.push(PartitionClock { max_ts: None, last_activity: now, idle: false, caught_up: true });
        self.parts.len() - 1
    }

    /// The configuration.
    pub fn config(&self) -> &WatermarkConfig {
        &self.config
    }

    /// Number of tracked partitions.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Records that `partition` delivered a record with event time `ts` at processing time `now`.
    /// Returns the new combined watermark if it advanced.
    pub fn observe(&mut self, partition: usize, ts: Timestamp, now: i64) -> Option<Timestamp> {
        let p = &mut self.parts[partition];
        p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
        p.last_activity = now;
        p.idle = false;
        self.recompute()
    }

    /// Marks idle every caught-up partition that has received nothing for the idle timeout (processing
    /// time `now`); returns the new combined watermark if it advanced.
    pub fn tick(&mut self, now: i64) -> Option<Timestamp> {
        if let Some(timeout) = self.config.idle_timeout.map(crate::span::ms) {
            for p in &mut self.parts {
                if !p.idle && p.caught_up && now - p.last_activity >= timeout {
                    p.idle = true;
                }
            }
        }
        self.recompute()
    }

    /// Tells whether `partition` has nothing left to read (default: true). A partition that is not caught
    /// up is never marked idle, whatever the time since its last record, and its quiet time restarts from
    /// the moment it is caught up again (`now`).
    pub fn set_caught_up(&mut self, partition: usize, caught_up: bool, now: i64) {
        let p = &mut self.parts[partition];
        if !caught_up {
            p.last_activity = p.last_activity.max(now);
        }
        p.caught_up = caught_up;
    }

    /// The max event time seen on `partition` (its stream time), if it has delivered a record.
    pub fn stream_time(&self, partition: usize) -> Option<Timestamp> {
        self.parts[partition].max_ts
    }

    /// The max event time seen on any partition.
    pub fn max_stream_time(&self) -> Option<Timestamp> {
        self.parts.iter().filter_map(|p| p.max_ts).max()
    }

    /// Restores the stream time of `partition` committed before a restart (never moves it backwards). The
    /// combined watermark is not recomputed here: restore it with [`Self::restore`].
    pub fn restore_stream_time(&mut self, partition: usize, ts: Timestamp) {
        let p = &mut self.parts[partition];
        p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
    }

    /// Stops `partition` from holding the watermark back until it delivers a record again (e.g. an input
    /// whose records are tracked per origin instead).
    pub fn retire(&mut self, partition: usize) -> Option<Timestamp> {
        self.parts[partition].idle = true;
        self.recompute()
    }

    /// Whether `partition` is currently idle.
    pub fn is_idle(&self, partition: usize) -> bool {
        self.parts[partition].idle
    }

    /// The current combined watermark, `None` before any partition has produced one.
    pub fn current(&self) -> Option<Timestamp> {
        self.current
    }

    /// End of input: every partition is finished, the watermark jumps to `Timestamp::MAX` so every window
    /// and join buffer closes.
    pub fn finish(&mut self) -> Timestamp {
        self.current = Some(Timestamp::MAX);
        Timestamp::MAX
    }

    /// Marks every partition idle (the input has ended for now, but may go on later: unlike
    /// [`WatermarkTracker::finish`]) and returns the watermark if it advanced: the maximum event time seen
    /// over all partitions minus the allowed out-of-orderness — where the idle timeout would bring it once
    /// every partition had been quiet for that long.
    pub fn idle_all(&mut self) -> Option<Timestamp> {
        for p in &mut self.parts {
            p.idle = true;
        }
        self.recompute()
    }

    /// Restores a previously committed watermark (after a restart) so it never goes backwards.
    pub fn restore(&mut self, wm: Option<Timestamp>) {
        if wm > self.current {
            self.current = wm;
        }
    }

    fn recompute(&mut self) -> Option<Timestamp> {
        let mut min: Option<Timestamp> = None;
        let mut any_active = false;
        for p in &self.parts {
            if p.idle {
                continue;
            }
            any_active = true;
            match p.max_ts {
                // An active partition that has never produced holds the watermark back entirely.
                None => return None,
                Some(m) => {
                    let w = m.saturating_sub(crate::span::ms(self.config.max_out_of_orderness));
                    min = Some(min.map_or(w, |x: Timestamp| x.min(w)));
                }
            }
        }
        if !any_active {
            // All idle: the watermark may advance to the max over partitions (Flink's behaviour when every
            // input is idle is to hold; we advance to what has been seen so that windows close).
            min = self
                .parts
                .iter()
                .filter_map(|p| p.max_ts)
                .max()
                .map(|m| m.saturating_sub(crate::span::ms(self.config.max_out_of_orderness)));
        }
        match min {
            Some(w) if Some(w) > self.current => {
                self.current = Some(w);
                Some(w)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ooo: i64, idle: Option<i64>) -> WatermarkConfig {
        WatermarkConfig { max_out_of_orderness: crate::span::from_ms(ooo), idle_timeout: idle.map(crate::span::from_ms) }
    }

    #[test]
    fn minimum_over_partitions_with_out_of_orderness() {
        let mut t = WatermarkTracker::new(2, cfg(100, None), 0);
        assert_eq!(t.observe(0, 1_000, 0), None, "partition 1 has produced nothing yet");
        assert_eq!(t.observe(1, 500, 0), Some(400));
        assert_eq!(t.observe(1, 2_000, 0), Some(900));
        assert_eq!(t.current(), Some(900));
    }

    #[test]
    fn never_goes_backwards() {
        let mut t = WatermarkTracker::new(1, cfg(0, None), 0);
        t.observe(0, 1_000, 0);
        assert_eq!(t.observe(0, 10, 0), None);
        assert_eq!(t.current(), Some(1_000));
    }

    #[test]
    fn idle_all_advances_to_the_max_seen_and_partitions_rejoin() {
        let mut t = WatermarkTracker::new(3, cfg(1_000, None), 0);
        t.observe(0, 5_000, 0);
        t.observe(1, 9_000, 0);
        assert_eq!(t.current(), None, "partition 2 never produced");
        assert_eq!(t.idle_all(), Some(8_000), "max seen (9 000) minus the out-of-orderness");
        assert_eq!(t.idle_all(), None, "nothing new");
        // Not `finish`: a later record makes its partition active again and time goes on from there.
        assert_eq!(t.observe(2, 20_000, 1), Some(19_000));
        assert!(!t.is_idle(2));
    }

    #[test]
    fn idle_partition_stops_holding_back_and_rejoins() {
        let mut t = WatermarkTracker::new(2, cfg(0, Some(1_000)), 0);
        t.observe(0, 5_000, 0);
        assert_eq!(t.current(), None, "partition 1 silent but not yet idle");
        t.observe(0, 6_000, 999);
        assert_eq!(t.tick(999), None, "999 ms < timeout");
        assert_eq!(t.tick(1_000), Some(6_000));
        assert!(t.is_idle(1));
        // Partition 1 wakes up behind the watermark: it is active again but cannot pull the watermark back.
        assert_eq!(t.observe(1, 100, 1_500), None);
        assert!(!t.is_idle(1));
        assert_eq!(t.current(), Some(6_000));
        assert_eq!(t.observe(1, 7_000, 1_600), None, "partition 0 (6 000) is now the minimum");
        assert_eq!(t.observe(0, 8_000, 1_600), Some(7_000));
    }

    #[test]
    fn added_partitions_join_the_minimum() {
        let mut t = WatermarkTracker::new(0, cfg(0, None), 0);
        assert_eq!(t.current(), None);
        let a = t.add_partition(0);
        assert_eq!(t.observe(a, 1_000, 0), Some(1_000));
        let b = t.add_partition(0);
        assert_eq!(t.observe(a, 2_000, 0), None, "b has not produced: it holds the watermark");
        assert_eq!(t.observe(b, 1_500, 0), Some(1_500));
        assert_eq!(t.observe(b, 5_000, 0), Some(2_000));
    }

    #[test]
    fn a_partition_with_unread_records_is_never_idle() {
        let mut t = WatermarkTracker::new(2, cfg(0, Some(1_000)), 0);
        t.observe(0, 5_000, 0);
        t.observe(1, 1_000, 0);
        assert_eq!(t.current(), Some(1_000));
        // The process stalls for 15 s; partition 1 has records waiting that were not read yet.
        t.set_caught_up(1, false, 15_000);
        t.observe(0, 6_000, 15_000);
        assert_eq!(t.tick(15_000), None, "partition 1 lags: it is not idle, the watermark waits for it");
        assert!(!t.is_idle(1));
        // Caught up again: its quiet time counts from now.
        t.set_caught_up(1, true, 15_100);
        assert_eq!(t.tick(15_900), None, "quiet for 900 ms since it caught up");
        assert_eq!(t.tick(16_100), Some(6_000));
    }

    #[test]
    fn stream_time_is_restored() {
        let mut t = WatermarkTracker::new(2, cfg(100, None), 0);
        t.restore_stream_time(0, 9_000);
        t.restore_stream_time(1, 4_000);
        assert_eq!((t.stream_time(0), t.stream_time(1), t.max_stream_time()), (Some(9_000), Some(4_000), Some(9_000)));
        assert_eq!(t.observe(1, 3_000, 0), Some(3_900), "the restored stream time counts, not only the new record");
    }

    #[test]
    fn finish_closes_everything() {
        let mut t = WatermarkTracker::new(3, cfg(10, None), 0);
        assert_eq!(t.finish(), Timestamp::MAX);
        assert_eq!(t.current(), Some(Timestamp::MAX));
    }

    #[test]
    fn restore_keeps_committed_watermark() {
        let mut t = WatermarkTracker::new(1, cfg(0, None), 0);
        t.restore(Some(5_000));
        assert_eq!(t.observe(0, 1_000, 0), None);
        assert_eq!(t.current(), Some(5_000));
    }
}
