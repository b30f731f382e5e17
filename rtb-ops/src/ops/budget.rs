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
//! compensation worker).
//!
//! Exactly-once: the spend counter takes `spend:{click id}` as its idempotency key and alerts are unique
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

use super::{click_id, json_output, ZoneCache};
use crate::calendar::{Day, DEFAULT_TIME_ZONE};
use crate::error::Result;
use crate::schema::{campaign_partition_key, AdEvent, CampaignEvent, CampaignEventType, CampaignStatus, Placement, StatusReason};
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Paused {
    day: Day,
    budget: i64,
    resume_at: Timestamp,
    placement: Placement,
    category: String,
    advertiser_id: Option<String>,
}

/// The budget monitor (input: `ad-events`; non-click events are ignored).
#[derive(Debug)]
pub struct BudgetMonitor {
    cache: Arc<dyn Cache>,
    db: Arc<dyn Database>,
    cfg: BudgetConfig,
    zones: ZoneCache,
    /// Campaigns this task paused, expiring (event time) at the next local midnight.
    paused: KeyedStore<String, Paused>,
    /// The same, expiring at the next local midnight by processing time (if enabled).
    wall: KeyedStore<String, Day>,
    stats: BudgetStats,
}

/// A status-change event published by the budget monitor.
fn status_event(campaign_id: &str, p: &Paused, status: CampaignStatus, reason: StatusReason, at: Timestamp) -> CampaignEvent {
    CampaignEvent {
        event_id: Some(format!("budget:{campaign_id}:{}:{}", p.day, reason.as_str())),
        event_type: CampaignEventType::StatusChanged,
        timestamp: at,
        campaign_id: campaign_id.to_string(),
        advertiser_id: p.advertiser_id.clone(),
        product_id: None,
        placement: p.placement,
        category: p.category.clone(),
        bid_price: None,
        daily_budget: None,
        status: Some(status),
        approval_status: None,
        targeting: None,
        effective_from: None,
        rtb_impact: None,
        status_reason: Some(reason),
    }
}

impl BudgetMonitor {
    /// Builds the monitor; its pause timers live in `scope`.
    pub fn new(scope: &StateScope, cache: Arc<dyn Cache>, db: Arc<dyn Database>, cfg: BudgetConfig) -> Result<Self> {
        Ok(Self {
            zones: ZoneCache::new(db.clone(), &cfg.default_time_zone)?,
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

    fn emit(&self, campaign_id: &str, p: &Paused, status: CampaignStatus, reason: StatusReason, at: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        let ev = status_event(campaign_id, p, status, reason, at);
        let key = campaign_partition_key(p.placement, &p.category);
        ctx.emit(json_output(&self.cfg.status_topic, &key, &ev, at, "campaign status event")?);
        Ok(())
    }

    fn pause(&mut self, row: &CampaignRow, day: Day, budget: i64, tz: Tz, at: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        let c = &row.campaign_id;
        if self.paused.get(c).is_some_and(|p| p.day == day && p.budget == budget) {
            return Ok(()); // this task already paused it for this day and budget
        }
        self.db.set_budget_pause(c, Some(day))?;
        let p = Paused {
            day,
            budget,
            resume_at: day.succ().start_in(tz),
            placement: row.placement,
            category: row.category.clone(),
            advertiser_id: row.advertiser_id.clone(),
        };
        self.emit(c, &p, CampaignStatus::Paused, StatusReason::BudgetExhausted, at, ctx)?;
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
    fn resume(&mut self, campaign_id: &str, p: &Paused, through: Day, at: Timestamp, ctx: &mut Context<'_, Output>) -> Result<()> {
        let cleared = self.db.clear_budget_pause_through(campaign_id, through)?;
        let row = self.db.campaign(campaign_id)?;
        if cleared || row.as_ref().is_some_and(|r| r.budget_paused_day.is_none()) {
            let status = row.map_or(CampaignStatus::Active, |r| r.status);
            self.emit(campaign_id, p, status, StatusReason::BudgetNewDay, at, ctx)?;
            self.stats.resumes += 1;
            tracing::info!(campaign_id, day = %p.day, "new budget day: campaign resumed");
        }
        if self.paused.get(&campaign_id.to_string()).is_some_and(|q| q.day <= through) {
            self.paused.remove(&campaign_id.to_string());
        }
        Ok(())
    }

    fn on_click(&mut self, ev: &AdEvent, click: &str, ctx: &mut Context<'_, Output>) -> Result<()> {
        self.stats.clicks += 1;
        let tz = self.zones.zone(&ev.advertiser_id)?;
        let day = Day::of(ev.timestamp, tz);
        let (total, applied) = self.cache.add_spend_once(&ev.campaign_id, day, ev.price(), &format!("spend:{click}"))?;
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
                let p = Paused {
                    day: paused_on,
                    budget: row.daily_budget.unwrap_or(0),
                    resume_at: ev.timestamp,
                    placement: row.placement,
                    category: row.category.clone(),
                    advertiser_id: row.advertiser_id.clone(),
                };
                self.resume(&ev.campaign_id, &p, Day(day.0 - 1), ev.timestamp, ctx)?;
                row.budget_paused_day = None;
            }
        }
        let Some(budget) = row.daily_budget.filter(|b| *b > 0) else { return Ok(()) };
        let reached = |pct: u32| i128::from(total) * 100 >= i128::from(budget) * i128::from(pct);
        for &pct in &self.cfg.alert_thresholds_pct {
            if reached(pct) {
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
        if current && reached(self.cfg.pause_at_pct) {
            self.pause(&row, day, budget, tz, ev.timestamp, ctx)?;
        }
        Ok(())
    }
}

impl Operator for BudgetMonitor {
    type Key = String;
    type In = AdEvent;
    type Out = Output;

    fn process(&mut self, record: Record<String, AdEvent>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        if record.value.is_click() {
            let click = click_id(&record.value, &record.source);
            self.on_click(&record.value, &click, ctx)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        for (campaign, p) in self.paused.expire(watermark) {
            self.resume(&campaign, &p, p.day, p.resume_at, ctx)?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, now: i64, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        for (campaign, day) in self.wall.expire(now) {
            if let Some(p) = self.paused.get(&campaign).filter(|p| p.day == day).cloned() {
                self.resume(&campaign, &p, day, now, ctx)?;
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
