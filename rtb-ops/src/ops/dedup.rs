//! Duplicate-click detection: per (`device_id`, `ad_id`), the first click opens a dedup window
//! `[t₀, t₀ + 5 min)`; later clicks inside it are duplicates; the next click after it opens a new window.
//! When a window closes with duplicates, ONE `compensation-events` record is emitted (keyed by
//! advertiser): timestamp = window end, advertiser and campaign of the first click, count = all clicks,
//! refund = Σ `actual_price` of all but the first, every click time in order.
//!
//! ## Event time, out-of-order clicks
//! Windows are decided on **event time**, whatever the arrival order. Clicks are buffered per key
//! (sorted by time) in a `KeyedStore` until the watermark says the earliest buffered click's window is
//! complete: with `t₀` the earliest buffered click, no click earlier than `t₀` and none inside
//! `[t₀, t₀ + 5 min)` can still arrive once `watermark >= t₀ + 5 min − 1`. The window is then cut from the
//! buffer in timestamp order, the compensation emitted, and the next buffered click (if any) becomes the
//! next `t₀`. The result equals sessionizing the key's clicks sorted by (time, arrival), as long as no
//! click is late.
//!
//! ## Late clicks
//! A click that arrives after the window that should contain it (or an earlier one) was closed —
//! `ts < end of the key's last closed window`, or more than the retention horizon behind the watermark
//! (the key's memory may already be gone) — cannot be placed correctly any more. It is **not dropped
//! silently**: it is counted ([`DedupStats::late_clicks`]) and sent to the late-records output ([`Context::late`]) with the
//! reason. (The balance worker still charged it; the late record is the trail for a manual refund.)
//!
//! State per key: the buffered clicks and the end of the last closed window. A key's entry expires (is
//! forgotten) `retention` after its last window closed with nothing buffered.


use std::sync::Arc;
use std::time::Duration;

use rtb_stream::runtime::Output;
use rtb_stream::state::{KeyedStore, StateScope, WriteBatch};
use rtb_stream::span;
use rtb_stream::{Context, Operator, Record, Timestamp};
use serde::{Deserialize, Serialize};

use super::{dead_letter, json_output};
use crate::error::Result;
use crate::schema::{AdEvent, CompensationEvent, CompensationReason, CompensationType, DetectionWindow};

/// Settings of the duplicate-click detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupConfig {
    /// Dedup window length (default 5 min; the emitted `detection_window` says `5_MINUTES`).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub window: Duration,
    /// How long (event time) a key is remembered after its last window closed, to recognise late
    /// clicks (default 1 h).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub retention: Duration,
    /// Output topic (default `compensation-events`).
    pub output_topic: String,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            retention: Duration::from_secs(3_600),
            output_topic: "compensation-events".to_string(),
        }
    }
}

/// Counters of the detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Clicks seen.
    pub clicks: u64,
    /// Windows closed.
    pub windows: u64,
    /// Compensations emitted (windows with duplicates).
    pub compensations: u64,
    /// Duplicate clicks (refunded).
    pub duplicates: u64,
    /// Clicks that arrived too late to be placed (sent to the late-records output).
    pub late_clicks: u64,
    /// Clicks delivered again with the identity of a buffered click (ignored: not duplicates).
    pub redelivered: u64,
}

/// A buffered click.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Click {
    ts: Timestamp,
    price: i64,
    campaign_id: String,
    advertiser_id: String,
    /// The click's identity (`event_id`, else source coordinates): a redelivered click is not a duplicate.
    #[serde(default)]
    id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyState {
    /// Buffered clicks, ascending by time (equal times in arrival order).
    pending: Vec<Click>,
    /// End of the last closed window.
    closed_until: Option<Timestamp>,
}

type Key = (String, String);

/// The duplicate-click detector (input: `ad-events`; non-click events are ignored).
#[derive(Debug)]
pub struct DuplicateClickDetector {
    cfg: DedupConfig,
    keys: KeyedStore<Key, KeyState>,
    stats: DedupStats,
}

impl DuplicateClickDetector {
    /// Builds the detector; its buffers live in `scope`.
    pub fn new(scope: &StateScope, cfg: DedupConfig) -> Result<Self> {
        Ok(Self { keys: scope.keyed("dedup-keys")?, cfg, stats: DedupStats::default() })
    }

    /// Counters so far.
    pub fn stats(&self) -> DedupStats {
        self.stats
    }

    /// Keys currently remembered.
    pub fn keys_held(&self) -> usize {
        self.keys.len()
    }

    fn deadline(&self, st: &KeyState) -> Option<Timestamp> {
        match (st.pending.first(), st.closed_until) {
            (Some(first), _) => Some(first.ts + span::ms(self.cfg.window) - 1),
            (None, Some(end)) => Some(end - 1 + span::ms(self.cfg.retention)),
            (None, None) => None,
        }
    }

    /// Closes every complete window of one key at watermark `wm`, emitting compensations.
    fn close(&mut self, key: &Key, st: &mut KeyState, wm: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        while let Some(t0) = st.pending.first().map(|c| c.ts) {
            let end = t0 + span::ms(self.cfg.window);
            if end - 1 > wm {
                break;
            }
            let n = st.pending.partition_point(|c| c.ts < end);
            let clicks: Vec<Click> = st.pending.drain(..n).collect();
            st.closed_until = Some(end);
            self.stats.windows += 1;
            if clicks.len() < 2 {
                continue;
            }
            let refund: i64 = clicks[1..].iter().map(|c| c.price).sum();
            let first = &clicks[0];
            let ev = CompensationEvent {
                event_id: None,
                timestamp: end,
                advertiser_id: first.advertiser_id.clone(),
                campaign_id: first.campaign_id.clone(),
                ad_id: key.1.clone(),
                device_id: key.0.clone(),
                duplicate_click_count: u32::try_from(clicks.len()).unwrap_or(u32::MAX),
                refund_amount: refund,
                original_click_timestamps: clicks.iter().map(|c| c.ts).collect(),
                detection_window: DetectionWindow::FiveMinutes,
                reason: CompensationReason::DuplicateClickDetected,
                compensation_type: CompensationType::BalanceRefund,
            };
            self.stats.compensations += 1;
            self.stats.duplicates += clicks.len() as u64 - 1;
            tracing::debug!(device = %key.0, ad = %key.1, count = clicks.len(), refund, "duplicate clicks");
            ctx.emit(json_output(&self.cfg.output_topic, &ev.advertiser_id, &ev, end, "compensation event")?);
        }
        Ok(())
    }
}

impl Operator for DuplicateClickDetector {
    type Key = String;
    type In = Arc<AdEvent>;
    type Out = Output;

    fn process(&mut self, record: Record<String, Arc<AdEvent>>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let ev = &record.value;
        if !ev.is_click() {
            return Ok(());
        }
        self.stats.clicks += 1;
        let ts = ev.timestamp;
        let key: Key = (ev.device_id.clone(), ev.ad_id.clone());
        let wm = ctx.watermark();
        let closed_until = self.keys.get(&key).and_then(|s| s.closed_until);
        let beyond_horizon = wm.is_some_and(|w| ts <= w.saturating_sub(span::ms(self.cfg.retention)));
        if closed_until.is_some_and(|end| ts < end) || beyond_horizon {
            self.stats.late_clicks += 1;
            let reason = match closed_until {
                Some(end) if ts < end => format!(
                    "LATE_CLICK: dedup window of device {} / ad {} ending at {end} ms already closed",
                    ev.device_id, ev.ad_id
                ),
                _ => format!("LATE_CLICK: more than {} ms behind the watermark", span::ms(self.cfg.retention)),
            };
            tracing::warn!(source = %record.source, %reason, "late click");
            ctx.late(dead_letter(&record.source, "duplicate-detector", reason, ev));
            return Ok(());
        }
        let id = super::charge_key(ev, &record.source);
        let mut st = self.keys.remove(&key).unwrap_or_default();
        if st.pending.iter().any(|c| c.id == id) {
            // The same click delivered again (a producer retry): the balance worker charged it once, and it
            // must not count as a second click — that would refund a real, billable click.
            self.stats.redelivered += 1;
            if let Some(d) = self.deadline(&st) {
                self.keys.insert_with_expiry(key, st, d);
            }
            return Ok(());
        }
        let at = st.pending.partition_point(|c| c.ts <= ts);
        let click = Click { ts, price: ev.price(), campaign_id: ev.campaign_id.clone(), advertiser_id: ev.advertiser_id.clone(), id };
        st.pending.insert(at, click);
        if let Some(w) = wm {
            self.close(&key, &mut st, w, ctx)?;
        }
        if let Some(d) = self.deadline(&st) {
            self.keys.insert_with_expiry(key, st, d);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        for (key, mut st) in self.keys.expire(watermark) {
            self.close(&key, &mut st, watermark, ctx)?;
            match self.deadline(&st) {
                Some(d) if d > watermark => {
                    self.keys.insert_with_expiry(key, st, d);
                }
                _ => {} // nothing buffered and past retention: forget the key
            }
        }
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.keys.flush_into(batch)
    }
}

#[cfg(test)]
#[path = "dedup_tests.rs"]
mod tests;
