//! Byte-key layout and shared helpers of the sink implementations.

use std::sync::atomic::{AtomicI64, Ordering};

use rtb_stream::Timestamp;

use super::types::{KeyRetention, MetricsScope, WindowMetrics};
use crate::calendar::Day;

/// Appends a length-prefixed part (u32 big-endian length, then the bytes), so composite keys never
/// collide (`"ab" + "c"` ≠ `"a" + "bc"`) and whole-part prefixes scan correctly.
pub(crate) fn part(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&bytes[..len as usize]);
}

/// Appends a timestamp so that byte order equals numeric order.
pub(crate) fn ts(buf: &mut Vec<u8>, t: Timestamp) {
    buf.extend_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
}

pub(crate) fn scope_byte(s: MetricsScope) -> u8 {
    match s {
        MetricsScope::Campaign => b'c',
        MetricsScope::Ad => b'a',
    }
}

/// `scope ‖ id ‖ window_start ‖ shard`.
pub(crate) fn window_key(row: &WindowMetrics) -> Vec<u8> {
    let mut k = window_prefix(row.scope, Some(&row.id));
    ts(&mut k, row.window_start);
    k.extend_from_slice(&row.shard.to_be_bytes());
    k
}

/// `scope` or `scope ‖ id`: the prefix of a scope's or an id's window rows.
pub(crate) fn window_prefix(scope: MetricsScope, id: Option<&str>) -> Vec<u8> {
    let mut k = vec![scope_byte(scope)];
    if let Some(id) = id {
        part(&mut k, id.as_bytes());
    }
    k
}

/// `campaign ‖ day`.
pub(crate) fn spend_key(campaign_id: &str, day: Day) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign_id.len() + 8);
    part(&mut k, campaign_id.as_bytes());
    k.extend_from_slice(&day.0.to_be_bytes());
    k
}

/// Merges rows that differ only by shard (input ordered by scope, id, window start, shard).
pub(crate) fn merge_shards(rows: impl IntoIterator<Item = WindowMetrics>) -> Vec<WindowMetrics> {
    let mut out: Vec<WindowMetrics> = Vec::new();
    for mut row in rows {
        row.shard = 0;
        match out.last_mut() {
            Some(last) if last.scope == row.scope && last.id == row.id && last.window_start == row.window_start => {
                last.metrics = last.metrics.plus(row.metrics);
            }
            _ => out.push(row),
        }
    }
    out
}

pub(crate) fn i64_bytes(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn i64_from(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_be_bytes)
}

/// The sinks' own key maintenance: remembers the newest event time a sink was given and says when its
/// idempotency keys are due for pruning under a [`KeyRetention`]. Shared by every backend.
#[derive(Debug)]
pub(crate) struct Pruner {
    retention: KeyRetention,
    newest: AtomicI64,
    last_cutoff: AtomicI64,
}

impl Pruner {
    pub(crate) fn new(retention: KeyRetention) -> Self {
        Self { retention, newest: AtomicI64::new(i64::MIN), last_cutoff: AtomicI64::new(i64::MIN) }
    }

    /// Records the event time of a key just written.
    pub(crate) fn note(&self, event_time: Timestamp) {
        self.newest.fetch_max(event_time, Ordering::Relaxed);
    }

    /// The cut-off (keys with an event time before it go) if it moved by a step since the last prune.
    pub(crate) fn due(&self) -> Option<Timestamp> {
        let newest = self.newest.load(Ordering::Relaxed);
        if newest == i64::MIN {
            return None;
        }
        let cutoff = newest.saturating_sub(rtb_stream::span::ms(self.retention.keep));
        let last = self.last_cutoff.load(Ordering::Relaxed);
        (last == i64::MIN || cutoff >= last.saturating_add(rtb_stream::span::ms(self.retention.prune_step))).then_some(cutoff)
    }

    /// Records a finished prune up to `cutoff`.
    pub(crate) fn done(&self, cutoff: Timestamp) {
        self.last_cutoff.fetch_max(cutoff, Ordering::Relaxed);
    }
}

/// `event time ‖ key`: the expiry index of an idempotency key (byte order = event-time order).
pub(crate) fn expiry_key(event_time: Timestamp, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    ts(&mut k, event_time);
    k.extend_from_slice(key);
    k
}

/// The upper bound (exclusive) of the expiry index entries before `before`.
pub(crate) fn expiry_bound(before: Timestamp) -> Vec<u8> {
    let mut k = Vec::with_capacity(8);
    ts(&mut k, before);
    k
}
