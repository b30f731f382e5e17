//! The performance statement: `ad-events` → 5-minute tumbling event-time windows per campaign and per
//! ad (impressions, clicks, conversions, spend = Σ click `actual_price`, revenue) → the metrics cache.
//!
//! Built on [`rtb_stream::window::WindowedAggregate`]. A window's result is written when the watermark
//! passes its end plus the grace period. Late events are never silently lost: within
//! [`PerformanceConfig::max_lateness`] after completion they **correct** the written window (the cache
//! sets the new value and moves the cumulative totals by the difference); later than that they are counted
//! and sent to the late-records output ([`Context::late`], not the dead-letter output: a late event is
//! valid input) with the reason. The default horizon is SPEC §4's 24 h: mobile apps batch events while
//! offline, so lateness of hours is normal. After every written campaign window the ranking of
//! the campaign's placement+category is recomputed (once per watermark step and key).
//!
//! `ad-events` is partitioned by device, so each task holds part of every campaign's window; each task
//! writes its part under its own shard number and the cache merges shards on read.
//!
//! A producer may deliver the same event twice (a retry): the balance worker charges such a click once,
//! and the windows must count it once too. The statement remembers the `event_id`s it counted (64-bit
//! fingerprints in an [`ExpiringIdSet`], grouped by expiry and dropped in bulk) for exactly as long as the event's window can still
//! be corrected — until the watermark passes window end + grace + `max_lateness` — and skips an
//! event whose id it has counted ([`PerformanceStats::redelivered`]). An event with another content but a
//! reused id is skipped too (the balance worker dead-letters the click: it is not charged, so it is not
//! counted). Events without an `event_id` are identified by their source coordinates, which only repeat
//! on a replay, and the committed window state already covers those.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rtb_stream::runtime::Output;
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::span;
use rtb_stream::window::{Aggregate, LatePolicy, Tumbling, WindowEvent, WindowedAggregate};
use rtb_stream::{Context, Operator, Record, SourceCoord, Timestamp};
use serde::{Deserialize, Serialize};

use super::dead_letter;
use super::ranking::Ranker;
use crate::error::Result;
use crate::schema::{id_fingerprint, AdEvent, AdEventType, Placement};
use rtb_stream::state::ExpiringIdSet;
use crate::sink::{Cache, Metrics, MetricsScope, WindowMetrics};

/// Settings of the performance statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerformanceConfig {
    /// Window size (default 5 min).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub window: Duration,
    /// Grace after the window end before the result is written (default 10 s).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub grace: Duration,
    /// How long after completion a late event still corrects its window (default 24 h, SPEC §4's
    /// correction horizon; older events go to the late-records output).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub max_lateness: Duration,
    /// Recompute the placement+category ranking after each written campaign window (default true).
    pub recompute_rankings: bool,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            grace: Duration::from_secs(10),
            max_lateness: Duration::from_secs(24 * 3_600),
            recompute_rankings: true,
        }
    }
}

/// The window accumulator: counters plus what the cache row needs to know about the campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerfAcc {
    /// Counters.
    pub metrics: Metrics,
    /// Campaign.
    pub campaign_id: String,
    /// Category (category totals are keyed by it).
    pub category: String,
    /// Placement (for the ranking recompute).
    pub placement: Option<Placement>,
}

/// Adds ad-events to a [`PerfAcc`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PerfAggregate;

impl Aggregate for PerfAggregate {
    type In = Arc<AdEvent>;
    type Acc = PerfAcc;

    fn add(&self, acc: &mut PerfAcc, ev: &Arc<AdEvent>) {
        if acc.campaign_id.is_empty() {
            acc.campaign_id.clone_from(&ev.campaign_id);
            acc.category.clone_from(&ev.category);
            acc.placement = Some(ev.placement);
        }
        let m = &mut acc.metrics;
        match ev.event_type {
            AdEventType::Impression => m.impressions += 1,
            AdEventType::Click => {
                m.clicks += 1;
                m.spend += ev.price();
            }
            AdEventType::Conversion => {
                m.conversions += 1;
                m.revenue += ev.revenue_amount.unwrap_or(0);
            }
        }
    }

    fn merge(&self, into: &mut PerfAcc, other: &PerfAcc) {
        if into.campaign_id.is_empty() {
            into.campaign_id.clone_from(&other.campaign_id);
            into.category.clone_from(&other.category);
            into.placement = other.placement;
        }
        into.metrics = into.metrics.plus(other.metrics);
    }
}

/// Counters of the performance statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerformanceStats {
    /// Events aggregated.
    pub events: u64,
    /// Window rows written (finals and corrections, campaign and ad scope).
    pub rows_written: u64,
    /// Corrections written.
    pub corrections: u64,
    /// Events too late to correct their window (sent to the late-records output).
    pub late_events: u64,
    /// Rankings recomputed.
    pub recomputes: u64,
    /// Events skipped because their `event_id` was already counted (redeliveries).
    pub redelivered: u64,
}

type Key = (MetricsScope, String);

/// The performance statement operator (input: `ad-events`).
pub struct PerformanceStatement {
    cache: Arc<dyn Cache>,
    ranker: Ranker,
    cfg: PerformanceConfig,
    shard: u32,
    windows: WindowedAggregate<Key, PerfAggregate, Tumbling>,
    /// 64-bit fingerprints of the `event_id`s counted, grouped by when their window can no longer be
    /// corrected (dropped then, in bulk).
    seen: ExpiringIdSet,
    events: Vec<WindowEvent<Key, PerfAcc, Arc<AdEvent>>>,
    stats: PerformanceStats,
}

impl std::fmt::Debug for PerformanceStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceStatement").field("shard", &self.shard).field("stats", &self.stats).finish()
    }
}

impl PerformanceStatement {
    /// Builds the statement for the task writing as `shard` (its partition); windows live in `scope`;
    /// `ranker` recomputes rankings after written windows.
    pub fn new(scope: &StateScope, shard: u32, cache: Arc<dyn Cache>, cfg: PerformanceConfig, ranker: Ranker) -> Result<Self> {
        let windows = WindowedAggregate::new(
            scope,
            "performance",
            Tumbling::of(cfg.window),
            PerfAggregate,
            cfg.grace,
            LatePolicy::Correct { max_lateness: cfg.max_lateness },
        )?;
        let seen = ExpiringIdSet::open(scope, "performance-counted-ids")?;
        Ok(Self { cache, ranker, cfg, shard, windows, seen, events: Vec::new(), stats: PerformanceStats::default() })
    }

    /// Counters so far.
    pub fn stats(&self) -> PerformanceStats {
        self.stats
    }

    /// How many counted `event_id`s are remembered (they are forgotten with their correction horizon).
    pub fn ids_held(&self) -> usize {
        self.seen.len()
    }

    fn write(&mut self, key: &Key, start: Timestamp, end: Timestamp, acc: &PerfAcc) -> Result<()> {
        self.cache.write_window_metrics(&WindowMetrics {
            scope: key.0,
            id: key.1.clone(),
            campaign_id: acc.campaign_id.clone(),
            category: acc.category.clone(),
            window_start: start,
            window_end: end,
            shard: self.shard,
            metrics: acc.metrics,
        })?;
        self.stats.rows_written += 1;
        Ok(())
    }

    /// Writes the pending window events to the cache, sends late ones to the late-records output (attributed to `late_source`,
    /// the record being processed) and recomputes the rankings of the campaigns written.
    fn drain_events(&mut self, late_source: Option<&SourceCoord>, ctx: &mut Context<'_, Output>) -> Result<()> {
        let mut recompute_at: BTreeMap<(Placement, String), Timestamp> = BTreeMap::new();
        let mut late_reported = false;
        for ev in std::mem::take(&mut self.events) {
            let (key, window, acc) = match ev {
                WindowEvent::Final { key, window, acc } => (key, window, acc),
                WindowEvent::Correction { key, window, current, .. } => {
                    self.stats.corrections += 1;
                    (key, window, current)
                }
                WindowEvent::Late { key, timestamp, input } => {
                    self.stats.late_events += u64::from(key.0 == MetricsScope::Campaign);
                    if let (Some(source), false) = (late_source, late_reported) {
                        late_reported = true;
                        let reason = format!(
                            "LATE_EVENT: event at {timestamp} ms is more than {} ms behind its completed {} ms window",
                            span::ms(self.cfg.max_lateness), span::ms(self.cfg.window)
                        );
                        ctx.late(dead_letter(source, "performance", reason, &*input));
                    }
                    continue;
                }
            };
            self.write(&key, window.start, window.end, &acc)?;
            if key.0 == MetricsScope::Campaign {
                if let Some(p) = acc.placement {
                    let at = recompute_at.entry((p, acc.category.clone())).or_insert(window.end);
                    *at = (*at).max(window.end);
                }
            }
        }
        if self.cfg.recompute_rankings {
            for ((placement, category), at) in recompute_at {
                self.ranker.recompute(placement, &category, at)?;
                self.stats.recomputes += 1;
            }
        }
        Ok(())
    }
}

impl Operator for PerformanceStatement {
    type Key = String;
    type In = Arc<AdEvent>;
    type Out = Output;

    fn process(&mut self, record: Record<String, Arc<AdEvent>>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let Record { value, source, .. } = record;
        let ts = value.timestamp;
        if let Some(id) = &value.event_id {
            let fp = id_fingerprint(id);
            // Remembered while the window can be corrected: until window end + grace + max lateness.
            let window = span::ms(self.cfg.window).max(1);
            let end = ts.div_euclid(window).saturating_mul(window).saturating_add(window);
            let expires_at = end.saturating_add(span::ms(self.cfg.grace)).saturating_add(span::ms(self.cfg.max_lateness));
            if !self.seen.insert((fp as u64) ^ ((fp >> 64) as u64), expires_at) {
                self.stats.redelivered += 1;
                return Ok(());
            }
        }
        self.stats.events += 1;
        let ev = value;
        let campaign = (MetricsScope::Campaign, ev.campaign_id.clone());
        let ad = (MetricsScope::Ad, ev.ad_id.clone());
        self.windows.process(campaign, ts, &ev, &mut self.events);
        self.windows.process(ad, ts, &ev, &mut self.events);
        if !self.events.is_empty() {
            self.drain_events(Some(&source), ctx)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.seen.expire(watermark);
        self.windows.on_watermark(watermark, &mut self.events);
        if !self.events.is_empty() {
            self.drain_events(None, ctx)?;
        }
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.seen.flush_into(batch)?;
        self.windows.flush_into(batch)
    }
}

#[cfg(test)]
#[path = "performance_tests.rs"]
mod tests;
