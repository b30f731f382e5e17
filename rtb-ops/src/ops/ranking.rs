//! The ranking statement: `campaign-events` → campaign rows → ranking cache per placement+category.
//!
//! Every campaign event is merged into the campaign's row (fields present in the event replace stored
//! ones; events apply in arrival order, which is the order of their partition), and the placement+category
//! is recomputed at once from the database's rows and the cache's cumulative metrics (both placements and
//! categories when an update moves a campaign). A campaign whose `effective_from` lies ahead gets an
//! event-time timer, so it enters the ranking when the watermark reaches that time. Budget-monitor events
//! (`status_reason` BUDGET_*) only trigger a recompute: the monitor already stored the pause. A
//! `CAMPAIGN_UPDATED` that raises the daily budget above the paused day's spend clears a budget pause.
//!
//! [`recompute`] is the shared ranking step; the performance statement calls it after closed windows.

use std::sync::Arc;

use rtb_stream::runtime::Output;
use rtb_stream::state::{KeyedStore, StateScope, WriteBatch};
use rtb_stream::{Context, Operator, Record, Timestamp};

use crate::calendar::Day;
use crate::error::Result;
use crate::ranking::{is_eligible, rank, Candidate, RankingConfig};
use crate::schema::{ApprovalStatus, CampaignEvent, CampaignEventType, CampaignStatus, Placement};
use crate::sink::{Cache, CampaignRow, Database, RankedEntry};

/// Recomputes and stores the ranking of one placement and category at event time `at`: eligible rows
/// from the database, cumulative clicks/impressions and the category prior from the cache.
pub fn recompute(
    cache: &dyn Cache,
    db: &dyn Database,
    cfg: &RankingConfig,
    placement: Placement,
    category: &str,
    at: Timestamp,
) -> Result<Vec<RankedEntry>> {
    let category_totals = cache.category_totals(category)?;
    let mut candidates = Vec::new();
    for row in db.campaigns_in(placement, category)? {
        if is_eligible(&row, at) {
            let t = cache.campaign_totals(&row.campaign_id)?;
            candidates.push(Candidate {
                campaign_id: row.campaign_id,
                bid_price: row.bid_price,
                clicks: t.clicks,
                impressions: t.impressions,
            });
        }
    }
    let ranked = rank(candidates, &category_totals, cfg);
    cache.put_ranking(placement, category, &ranked)?;
    tracing::trace!(placement = %placement, category, entries = ranked.len(), "ranking recomputed");
    Ok(ranked)
}

/// Recomputes every placement+category that has campaigns (end of a replay: final rankings with the final
/// metrics).
pub fn recompute_all(cache: &dyn Cache, db: &dyn Database, cfg: &RankingConfig, at: Timestamp) -> Result<usize> {
    let mut keys: Vec<(Placement, String)> = db.campaigns()?.into_iter().map(|r| (r.placement, r.category)).collect();
    keys.sort();
    keys.dedup();
    for (p, c) in &keys {
        recompute(cache, db, cfg, *p, c, at)?;
    }
    Ok(keys.len())
}

/// Merges a campaign event into the stored row (`None`: a campaign seen for the first time).
pub fn merge_campaign(existing: Option<&CampaignRow>, ev: &CampaignEvent) -> CampaignRow {
    let mut row = existing.cloned().unwrap_or_else(|| CampaignRow {
        campaign_id: ev.campaign_id.clone(),
        advertiser_id: None,
        product_id: None,
        placement: ev.placement,
        category: ev.category.clone(),
        bid_price: 0,
        daily_budget: None,
        status: CampaignStatus::Pending,
        approval_status: ApprovalStatus::Pending,
        effective_from: None,
        rtb_impact: None,
        budget_paused_day: None,
        updated_at: ev.timestamp,
    });
    if ev.status_reason.is_some_and(|r| r.is_budget()) {
        return row; // the budget monitor stored its change itself
    }
    row.placement = ev.placement;
    row.category.clone_from(&ev.category);
    if ev.advertiser_id.is_some() {
        row.advertiser_id.clone_from(&ev.advertiser_id);
    }
    if ev.product_id.is_some() {
        row.product_id.clone_from(&ev.product_id);
    }
    if let Some(b) = ev.bid_price {
        row.bid_price = b;
    }
    if ev.daily_budget.is_some() {
        row.daily_budget = ev.daily_budget;
    }
    if let Some(s) = ev.status {
        row.status = s;
    }
    match ev.approval_status {
        Some(a) => row.approval_status = a,
        None if ev.event_type == CampaignEventType::Approved => row.approval_status = ApprovalStatus::Approved,
        None => {}
    }
    if ev.effective_from.is_some() {
        row.effective_from = ev.effective_from;
    }
    if ev.rtb_impact.is_some() {
        row.rtb_impact = ev.rtb_impact;
    }
    row.updated_at = ev.timestamp;
    row
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
}

/// The ranking statement operator (input: `campaign-events`).
#[derive(Debug)]
pub struct RankingStatement {
    cache: Arc<dyn Cache>,
    db: Arc<dyn Database>,
    cfg: RankingConfig,
    /// `(placement, category, effective_from)` → recompute when the watermark reaches it.
    timers: KeyedStore<(Placement, String, Timestamp), ()>,
    stats: RankingStats,
}

impl RankingStatement {
    /// Builds the statement; its timers live in `scope`.
    pub fn new(scope: &StateScope, cache: Arc<dyn Cache>, db: Arc<dyn Database>, cfg: RankingConfig) -> Result<Self> {
        Ok(Self { cache, db, cfg, timers: scope.keyed("ranking-timers")?, stats: RankingStats::default() })
    }

    /// Counters so far.
    pub fn stats(&self) -> RankingStats {
        self.stats
    }

    fn recompute(&mut self, placement: Placement, category: &str, at: Timestamp) -> Result<()> {
        recompute(&*self.cache, &*self.db, &self.cfg, placement, category, at)?;
        self.stats.recomputes += 1;
        Ok(())
    }

    /// Applies one campaign event (what `process` does, usable without a context).
    pub fn apply(&mut self, ev: &CampaignEvent) -> Result<()> {
        self.stats.events += 1;
        let existing = self.db.campaign(&ev.campaign_id)?;
        let row = merge_campaign(existing.as_ref(), ev);
        if let (Some(old), Some(new_budget)) = (&existing, ev.daily_budget) {
            if let Some(day) = old.budget_paused_day {
                let spent = self.cache.spend(&ev.campaign_id, day)?;
                if new_budget > old.daily_budget.unwrap_or(0) && new_budget > spent {
                    if self.db.clear_budget_pause_through(&ev.campaign_id, Day(i32::MAX))? {
                        self.stats.budget_raises += 1;
                        tracing::info!(campaign_id = %ev.campaign_id, new_budget, spent, "budget raised: pause cleared");
                    }
                }
            }
        }
        if existing.as_ref() != Some(&row) {
            self.db.upsert_campaign(&row)?;
        }
        if let Some(old) = &existing {
            if (old.placement, &old.category) != (row.placement, &row.category) {
                self.recompute(old.placement, &old.category, ev.timestamp)?;
            }
        }
        self.recompute(row.placement, &row.category, ev.timestamp)?;
        if let Some(from) = row.effective_from.filter(|f| *f > ev.timestamp) {
            self.timers.insert_with_expiry((row.placement, row.category.clone(), from), (), from);
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
            self.recompute(placement, &category, at)?;
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
