//! The budget monitor: every CLICK adds its price to the campaign's spend counter of the day (the day in
//! the advertiser's time zone), alerts at 80 % and 100 % of the daily budget (once per campaign, day and
//! threshold), and at 100 % pauses the campaign: the pause is stored (`budget_paused_day`, shown as status
//! PAUSED, reason BUDGET_EXHAUSTED) and a `CAMPAIGN_STATUS_CHANGED` is published to `campaign-events`
//! (keyed by placement+category) so the ranking drops it.
//!
//! Resume happens on the next budget day — when the watermark passes the advertiser's local midnight
//! (an event-time timer), when a click of a later day arrives, or (optional, for live runs) when the wall
//! clock passes midnight — and when the budget is raised above the day's spend (handled by the ranking
//! statement, which sees the `CAMPAIGN_UPDATED`). Each resume publishes a `CAMPAIGN_STATUS_CHANGED`
//! with reason `BUDGET_NEW_DAY`. Refunds lower the day's spend through the same counter (see the
//! compensation worker). The status events are full snapshots of the stored row (so they validate like
//! any campaign event); the ranking statement only recomputes on them.
//!
//! The end-of-input watermark (`Timestamp::MAX`) is not a day rollover: pauses stay as they are, and a
//! replay calls [`settle_pauses`] with its last event time to make the stored pauses exact.
//!
//! Only billable clicks count: a click the balance worker refuses ([`Billing`]: unknown advertiser,
//! campaign of another advertiser) is skipped here too (and counted in [`BudgetStats::refused`]), and a
//! click whose `event_id` was already used shares its charge's spend key, so it is not counted either.
//!
//! Exactly-once: the spend counter takes `spend:` + the charge's key ([`super::charge_key`]) as its
//! idempotency key (kept as long as the sink's key retention) and alerts are unique
//! per key, so a replay changes nothing twice. Pauses are checked on every click (applied or replayed),
//! so a crash between the counter update and the pause cannot lose the pause. Only clicks of the current
//! day (not older than the watermark's day) pause: a late click for yesterday can alert, not pause today.
//! Several tasks may each publish the same pause (one per task that saw the campaign exhausted); the
//! events are idempotent for the ranking.

use std::sync::Arc;

use chrono_tz::Tz;
use rtb_stream::runtime::Output;
use rtb_stream::state::{KeyedStore, StateScope, WriteBatch};
use rtb_stream::{Context, Operator, Record, Timestamp};
use serde::{Deserialize, Serialize};

use super::{charge_key, charge_spend_key, json_output, Billing, ZoneCache};
use crate::calendar::{Day, DEFAULT_TIME_ZONE};
use crate::error::Result;
use crate::ranking::budget_exhausted;
use crate::schema::{AdEvent, CampaignEvent, CampaignEventType, CampaignStatus, StatusReason};
use crate::sink::{AlertRow, Cache, CampaignRow, Database};

/// Settings of the budget monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// Alert thresholds in percent of the daily budget (default 80 and 100).
    pub alert_thresholds_pct: Vec<u32>,
    /// Spend (percent of the daily budget) at which the campaign is paused (default 100).
    pub pause_at_pct: u32,
    /// Zone of advertisers without one (default `Asia/Seoul`).
    pub default_time_zone: String,
    /// Also resume at local midnight by the wall clock (processing time), not only by event time
    /// (default false: in replays the wall clock is unrelated to the data).
    pub resume_on_processing_time: bool,
    /// Where status changes are published (default `campaign-events`).
    pub status_topic: String,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            alert_thresholds_pct: vec![80, 100],
            pause_at_pct: 100,
            default_time_zone: DEFAULT_TIME_ZONE.to_string(),
            resume_on_processing_time: false,
            status_topic: "campaign-events".to_string(),
        }
    }
}

/// Counters of the budget monitor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Clicks counted.
    pub clicks: u64,
    /// Clicks whose spend was already counted (replays).
    pub replayed: u64,
    /// Clicks of campaigns the database does not know (spend counted, no budget to check).
    pub unknown_campaigns: u64,
    /// Alerts inserted.
    pub alerts: u64,
    /// Pauses published.
    pub pauses: u64,
    /// Resumes published.
    pub resumes: u64,
    /// Clicks not counted because they are not billable (see [`Billing`]).
    pub refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Paused {
    day: Day,
    budget: i64,
    resume_at: Timestamp,
}

/// The budget monitor (input: `ad-events`; non-click events are ignored).
#[derive(Debug)]
pub struct BudgetMonitor {
    cache: Arc<dyn Cache>,
    db: Arc<dyn Database>,
    cfg: BudgetConfig,
    zones: ZoneCache,
    billing: Billing,
    /// Campaigns this task paused, expiring (event time) at the next local midnight.
    paused: KeyedStore<String, Paused>,
    /// The same, expiring at the next local midnight by processing time (if enabled).
    wall: KeyedStore<String, Day>,
    stats: BudgetStats,
}

/// The `CAMPAIGN_STATUS_CHANGED` the budget monitor publishes: a full snapshot of the stored row with the
/// given status and reason.
pub fn status_event(row: &CampaignRow, status: CampaignStatus, reason: StatusReason, day: Day, at: Timestamp) -> CampaignEvent {
    CampaignEvent {
        event_id: Some(format!("budget:{}:{day}:{}", row.campaign_id, reason.as_str())),
        event_type: CampaignEventType::StatusChanged,
        timestamp: at,
        campaign_id: row.campaign_id.clone(),
        advertiser_id: row.advertiser_id.clone(),
        product_id: row.product_id.clone(),
        placement: row.placement,
        category: row.category.clone(),
        bid_price: row.bid_price,
        daily_budget: row.daily_budget,
        status,
        approval_status: row.approval_status,
        targeting: None,
        effective_from: row.effective_from,
        rtb_impact: row.rtb_impact,
        status_reason: Some(reason),
    }
}

/// Makes every stored budget pause agree with the spend counters at event time `at` (the end of a
/// replay: `at` = the last event time): a campaign is paused iff its spend on the local day of `at` has
/// reached the pause threshold. Publishes nothing. Returns how many rows changed.
pub fn settle_pauses(cache: &dyn Cache, db: &dyn Database, cfg: &BudgetConfig, at: Timestamp) -> Result<usize> {
    let mut zones = ZoneCache::new(&cfg.default_time_zone)?;
    let mut changed = 0;
    for row in db.campaigns()? {
        let day = Day::of(at, zones.zone(db, &row.advertiser_id)?);
        let exhausted = budget_exhausted(cache.spend(&row.campaign_id, day)?, row.daily_budget, cfg.pause_at_pct);
        let want = exhausted.then_some(day);
        if row.budget_paused_day != want && db.set_budget_pause(&row.campaign_id, want)? {
            changed += 1;
        }
    }
    Ok(changed)
}

impl BudgetMonitor {
    /// Builds the monitor; its pause timers live in `scope`.
    pub fn new(scope: &StateScope, cache: Arc<dyn Cache>, db: Arc<dyn Database>, cfg: BudgetConfig) -> Result<Self> {
        Ok(Self {
            zones: ZoneCache::new(&cfg.default_time_zone)?,
            billing: Billing::default(),
            cache,
            db,
            cfg,
            paused: scope.keyed("budget-paused")?,
            wall: scope.keyed("budget-wall-timers")?,
            stats: BudgetStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> BudgetStats {
        self.stats
    }

    fn emit(&self, row: &CampaignRow, status: CampaignStatus, reason: StatusReason, day: Day, at: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        let ev = status_event(row, status, reason, day, at);
        ctx.emit(json_output(&self.cfg.status_topic, &ev.partition_key(), &ev, at, "campaign status event")?);
        Ok(())
    }

    fn pause(&mut self, row: &CampaignRow, day: Day, budget: i64, tz: Tz, at: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        let c = &row.campaign_id;
        if self.paused.get(c).is_some_and(|p| p.day == day && p.budget == budget) {
            return Ok(()); // this task already paused it for this day and budget
        }
        self.db.set_budget_pause(c, Some(day))?;
        let p = Paused { day, budget, resume_at: day.succ().start_in(tz) };
        self.emit(row, CampaignStatus::Paused, StatusReason::BudgetExhausted, day, at, ctx)?;
        self.stats.pauses += 1;
        tracing::info!(campaign_id = %c, %day, budget, "daily budget exhausted: campaign paused");
        if self.cfg.resume_on_processing_time {
            self.wall.insert_with_expiry(c.clone(), day, p.resume_at);
        }
        let resume_at = p.resume_at;
        self.paused.insert_with_expiry(c.clone(), p, resume_at);
        Ok(())
    }

    /// Clears a pause of a day `<= through` and publishes the resume (also when another task cleared it
    /// first: a crash between clearing and publishing must not lose the event).
    fn resume(&mut self, campaign_id: &str, through: Day, at: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        let cleared = self.db.clear_budget_pause_through(campaign_id, through)?;
        if let Some(row) = self.db.campaign(campaign_id)?.filter(|r| cleared || r.budget_paused_day.is_none()) {
            self.emit(&row, row.status, StatusReason::BudgetNewDay, through, at, ctx)?;
            self.stats.resumes += 1;
            tracing::info!(campaign_id, day = %through, "new budget day: campaign resumed");
        }
        if self.paused.get(&campaign_id.to_string()).is_some_and(|q| q.day <= through) {
            self.paused.remove(&campaign_id.to_string());
        }
        Ok(())
    }

    fn on_click(&mut self, ev: &AdEvent, click: &str, ctx: &mut Context<'_, Output>) -> Result<()> {
        self.stats.clicks += 1;
        let tz = self.zones.zone(&*self.db, &ev.advertiser_id)?;
        let day = Day::of(ev.timestamp, tz);
        let (total, applied) =
            self.cache.add_spend_once(&ev.campaign_id, day, ev.price(), &charge_spend_key(click), ev.timestamp)?;
        if !applied {
            self.stats.replayed += 1;
        }
        let Some(mut row) = self.db.campaign(&ev.campaign_id)? else {
            self.stats.unknown_campaigns += 1;
            return Ok(());
        };
        let current = ctx.watermark().is_none_or(|w| day >= Day::of(w, tz));
        if let Some(paused_on) = row.budget_paused_day {
            if paused_on < day && current {
                self.resume(&ev.campaign_id, Day(day.0 - 1), ev.timestamp, ctx)?;
                row.budget_paused_day = None;
            }
        }
        let budget = row.daily_budget;
        for &pct in &self.cfg.alert_thresholds_pct {
            if budget_exhausted(total, budget, pct) {
                let alert = AlertRow {
                    key: format!("budget:{}:{day}:{pct:03}", ev.campaign_id),
                    campaign_id: ev.campaign_id.clone(),
                    advertiser_id: ev.advertiser_id.clone(),
                    day,
                    threshold_pct: pct,
                    spend: total,
                    daily_budget: budget,
                    event_time: ev.timestamp,
                };
                if self.db.insert_alert_once(&alert)? {
                    self.stats.alerts += 1;
                    tracing::info!(campaign_id = %ev.campaign_id, %day, pct, total, budget, "budget alert");
                }
            }
        }
        if current && budget_exhausted(total, budget, self.cfg.pause_at_pct) {
            self.pause(&row, day, budget, tz, ev.timestamp, ctx)?;
        }
        Ok(())
    }
}

impl Operator for BudgetMonitor {
    type Key = String;
    type In = Arc<AdEvent>;
    type Out = Output;

    fn process(&mut self, record: Record<String, Arc<AdEvent>>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        if record.value.is_click() {
            if self.billing.check(&*self.db, &record.value.advertiser_id, &record.value.campaign_id)?.is_err() {
                self.stats.refused += 1;
                return Ok(());
            }
            let click = charge_key(&record.value, &record.source);
            self.on_click(&record.value, &click, ctx)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        // The end-of-input watermark closes windows; it is not a day rollover (see `settle_pauses`).
        if watermark == Timestamp::MAX {
            return Ok(());
        }
        for (campaign, p) in self.paused.expire(watermark) {
            self.resume(&campaign, p.day, p.resume_at, ctx)?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: i64, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        for (campaign, day) in self.wall.expire(now) {
            if self.paused.get(&campaign).is_some_and(|p| p.day == day) {
                self.resume(&campaign, day, now, ctx)?;
            }
        }
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.paused.flush_into(batch)?;
        self.wall.flush_into(batch)
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
