//! The ranking statement: `campaign-events` → campaign rows → ranking cache per placement+category.
//!
//! Each campaign event is a full snapshot; the stored row is the campaign's **latest event by event
//! time** (an event older than the stored one is ignored; equal times: the later arrival wins). Every
//! event recomputes its placement+category at once (both old and new when an update moves the campaign),
//! from the database's rows and the cache's cumulative metrics, as of the latest event time seen. A campaign whose `effective_from` lies
//! ahead gets an event-time timer, so it enters the ranking when the watermark reaches that time.
//! Budget-monitor events (`status_reason` BUDGET_*) only trigger a recompute: the monitor stored its
//! change itself. A `CAMPAIGN_UPDATED` that raises the daily budget above the paused day's spend clears
//! a budget pause.
//!
//! [`Ranker`] is the shared ranking step; the performance statement uses it after closed windows and a
//! replay calls [`Ranker::recompute_all`] at the end.

use std::sync::Arc;

use rtb_stream::runtime::Output;
use rtb_stream::state::{KeyedStore, StateScope, WriteBatch};
use rtb_stream::{Context, Operator, Record, Timestamp};

use super::ZoneCache;
use crate::calendar::Day;
use crate::error::Result;
use crate::ranking::{budget_exhausted, is_eligible, rank, Candidate, RankingConfig};
use crate::schema::{CampaignEvent, Placement};
use crate::sink::{Cache, CampaignRow, Database, RankedEntry};

/// Recomputes rankings from the sinks: eligible campaigns (status, approval, `effective_from`, and the
/// day's spend below the budget — the budget monitor's rule, read from the spend counter of the day of
/// the recompute's event time in the advertiser's zone), their cumulative clicks and impressions, and the
/// category prior.
#[derive(Debug)]
pub struct Ranker {
    cache: Arc<dyn Cache>,
    db: Arc<dyn Database>,
    cfg: RankingConfig,
    pause_at_pct: u32,
    zones: ZoneCache,
}

impl Ranker {
    /// A ranker over the sinks; `pause_at_pct` and `default_time_zone` as in the budget monitor's config.
    pub fn new(cache: Arc<dyn Cache>, db: Arc<dyn Database>, cfg: RankingConfig, pause_at_pct: u32, default_time_zone: &str) -> Result<Self> {
        Ok(Self { zones: ZoneCache::new(default_time_zone)?, cache, db, cfg, pause_at_pct })
    }

    /// The ranking parameters.
    pub fn config(&self) -> &RankingConfig {
        &self.cfg
    }

    /// Recomputes and stores the ranking of one placement and category at event time `at` — or later: the
    /// stored ranking is the slot's latest state, so it is never computed as of a time before a campaign
    /// change the slot already holds (a recompute after an older window closed would otherwise drop the
    /// campaigns created or updated since, until their next change).
    pub fn recompute(&mut self, placement: Placement, category: &str, at: Timestamp) -> Result<Vec<RankedEntry>> {
        let category_totals = self.cache.category_totals(category)?;
        let rows = self.db.campaigns_in(placement, category)?;
        let at = rows.iter().map(|r| r.updated_at).fold(at, Timestamp::max);
        let mut candidates = Vec::new();
        for row in rows {
            let day = Day::of(at, self.zones.zone(&*self.db, &row.advertiser_id)?);
            let spent = self.cache.spend(&row.campaign_id, day)?;
            if is_eligible(&row, at, budget_exhausted(spent, row.daily_budget, self.pause_at_pct)) {
                let t = self.cache.campaign_totals(&row.campaign_id)?;
                candidates.push(Candidate {
                    campaign_id: row.campaign_id,
                    bid_price: row.bid_price,
                    clicks: t.clicks,
                    impressions: t.impressions,
                });
            }
        }
        let ranked = rank(candidates, &category_totals, &self.cfg);
        self.cache.put_ranking(placement, category, &ranked)?;
        tracing::trace!(placement = %placement, category, entries = ranked.len(), "ranking recomputed");
        Ok(ranked)
    }

    /// Recomputes every placement+category that has campaigns (the end of a replay: final rankings with the
    /// final metrics at `at` = the last event time). Returns how many rankings were written.
    pub fn recompute_all(&mut self, at: Timestamp) -> Result<usize> {
        let mut keys: Vec<(Placement, String)> = self.db.campaigns()?.into_iter().map(|r| (r.placement, r.category)).collect();
        keys.sort();
        keys.dedup();
        for (p, c) in &keys {
            self.recompute(*p, c, at)?;
        }
        Ok(keys.len())
    }
}

/// The row a campaign event leaves: the event's fields, the stored budget pause kept (`None`: first event).
pub fn campaign_row(existing: Option<&CampaignRow>, ev: &CampaignEvent) -> CampaignRow {
    CampaignRow {
        campaign_id: ev.campaign_id.clone(),
        advertiser_id: ev.advertiser_id.clone(),
        product_id: ev.product_id.clone(),
        placement: ev.placement,
        category: ev.category.clone(),
        bid_price: ev.bid_price,
        daily_budget: ev.daily_budget,
        status: ev.status,
        approval_status: ev.approval_status,
        effective_from: ev.effective_from,
        rtb_impact: ev.rtb_impact,
        budget_paused_day: existing.and_then(|r| r.budget_paused_day),
        updated_at: ev.timestamp,
    }
}

/// Counters of the ranking statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankingStats {
    /// Campaign events applied.
    pub events: u64,
    /// Rankings recomputed.
    pub recomputes: u64,
    /// Budget pauses cleared by a budget raise.
    pub budget_raises: u64,
    /// Events older than the stored row (ignored).
    pub stale: u64,
}

/// The ranking statement operator (input: `campaign-events`).
#[derive(Debug)]
pub struct RankingStatement {
    cache: Arc<dyn Cache>,
    db: Arc<dyn Database>,
    ranker: Ranker,
    /// `(placement, category, effective_from)` → recompute when the watermark reaches it.
    timers: KeyedStore<(Placement, String, Timestamp), ()>,
    /// The latest event time seen: recomputes are evaluated at it, so a late event does not rank as of
    /// the past.
    now: Timestamp,
    stats: RankingStats,
}

impl RankingStatement {
    /// Builds the statement around `ranker`; its timers live in `scope`.
    pub fn new(scope: &StateScope, cache: Arc<dyn Cache>, db: Arc<dyn Database>, ranker: Ranker) -> Result<Self> {
        Ok(Self { cache, db, ranker, timers: scope.keyed("ranking-timers")?, now: Timestamp::MIN, stats: RankingStats::default() })
    }

    /// Counters so far.
    pub fn stats(&self) -> RankingStats {
        self.stats
    }

    fn recompute(&mut self, placement: Placement, category: &str, at: Timestamp) -> Result<()> {
        self.ranker.recompute(placement, category, at)?;
        self.stats.recomputes += 1;
        Ok(())
    }

    /// Applies one campaign event (what `process` does, usable without a context).
    pub fn apply(&mut self, ev: &CampaignEvent) -> Result<()> {
        self.stats.events += 1;
        let now = self.now.max(ev.timestamp);
        self.now = now;
        let existing = self.db.campaign(&ev.campaign_id)?;
        let budget_event = ev.status_reason.is_some_and(|r| r.is_budget());
        let row = match existing {
            Some(old) if budget_event => old,
            None if budget_event => return Ok(()), // a budget event for a campaign never stored here
            Some(old) if ev.timestamp < old.updated_at => {
                self.stats.stale += 1;
                tracing::debug!(campaign_id = %ev.campaign_id, "campaign event older than the stored one ignored");
                old
            }
            existing => {
                let row = campaign_row(existing.as_ref(), ev);
                if let Some(old) = &existing {
                    self.clear_pause_if_raised(old, &row)?;
                }
                if existing.as_ref() != Some(&row) {
                    self.db.upsert_campaign(&row)?;
                }
                if let Some(old) = existing.filter(|o| (o.placement, &o.category) != (row.placement, &row.category)) {
                    self.recompute(old.placement, &old.category, now)?;
                }
                row
            }
        };
        self.recompute(row.placement, &row.category, now)?;
        if let Some(from) = row.effective_from.filter(|f| *f > ev.timestamp) {
            self.timers.insert_with_expiry((row.placement, row.category.clone(), from), (), from);
        }
        Ok(())
    }

    /// A raise of the daily budget above the paused day's spend clears the budget pause.
    fn clear_pause_if_raised(&mut self, old: &CampaignRow, new: &CampaignRow) -> Result<()> {
        let Some(day) = old.budget_paused_day else { return Ok(()) };
        if new.daily_budget <= old.daily_budget {
            return Ok(());
        }
        let spent = self.cache.spend(&new.campaign_id, day)?;
        if !budget_exhausted(spent, new.daily_budget, self.ranker.pause_at_pct)
            && self.db.clear_budget_pause_through(&new.campaign_id, Day(i32::MAX))?
        {
            self.stats.budget_raises += 1;
            tracing::info!(campaign_id = %new.campaign_id, budget = new.daily_budget, spent, "budget raised: pause cleared");
        }
        Ok(())
    }
}

impl Operator for RankingStatement {
    type Key = String;
    type In = CampaignEvent;
    type Out = Output;

    fn process(&mut self, record: Record<String, CampaignEvent>, _ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        Ok(self.apply(&record.value)?)
    }

    fn on_watermark(&mut self, watermark: Timestamp, _ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        for ((placement, category, at), ()) in self.timers.expire(watermark) {
            self.now = self.now.max(at);
            self.recompute(placement, &category, self.now)?;
        }
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.timers.flush_into(batch)
    }
}

#[cfg(test)]
#[path = "ranking_tests.rs"]
mod tests;
