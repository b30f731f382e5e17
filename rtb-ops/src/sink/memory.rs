//! In-memory sinks: one mutex around plain maps. For tests and batch replays; lost when dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rtb_stream::Timestamp;

use super::keys::merge_shards;
use super::types::*;
use super::{ranking_key, Cache, Database};
use crate::calendar::{Day, DEFAULT_TIME_ZONE};
use crate::error::Result;
use crate::schema::Placement;

#[derive(Debug, Default)]
struct CacheState {
    rankings: BTreeMap<String, (Placement, String, Vec<RankedEntry>)>,
    windows: BTreeMap<(MetricsScope, String, Timestamp, u32), WindowMetrics>,
    campaign_totals: HashMap<String, Metrics>,
    category_totals: HashMap<String, Metrics>,
    spend: HashMap<(String, Day), i64>,
    spend_keys: HashSet<String>,
    marks: HashSet<String>,
}

/// A [`Cache`] in memory. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryCache {
    state: Arc<Mutex<CacheState>>,
}

impl MemoryCache {
    /// Removes and returns every window row whose window ended at or before `end` (ordered by scope, id and
    /// start). Totals are kept. For batch jobs that stream final windows out instead of holding them: call it
    /// only for windows that can no longer be corrected, or a later correction would count them again.
    pub fn take_windows_ending_by(&self, end: Timestamp) -> Vec<WindowMetrics> {
        let mut s = self.state.lock();
        let done: Vec<_> = s.windows.iter().filter(|(_, w)| w.window_end <= end).map(|(k, _)| k.clone()).collect();
        done.into_iter().filter_map(|k| s.windows.remove(&k)).collect()
    }

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

fn adjust(totals: &mut HashMap<String, Metrics>, key: &str, delta: Metrics) {
    if delta == Metrics::default() {
        return;
    }
    let t = totals.entry(key.to_string()).or_default();
    *t = t.plus(delta);
}

impl Cache for MemoryCache {
    fn put_ranking(&self, placement: Placement, category: &str, entries: &[RankedEntry]) -> Result<()> {
        self.state
            .lock()
            .rankings
            .insert(ranking_key(placement, category), (placement, category.to_string(), entries.to_vec()));
        Ok(())
    }

    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>> {
        Ok(self.state.lock().rankings.get(&ranking_key(placement, category)).map(|r| r.2.clone()).unwrap_or_default())
    }

    fn rankings(&self) -> Result<Vec<(Placement, String, Vec<RankedEntry>)>> {
        Ok(self.state.lock().rankings.values().cloned().collect())
    }

    fn write_window_metrics(&self, row: &WindowMetrics) -> Result<()> {
        let mut s = self.state.lock();
        let key = (row.scope, row.id.clone(), row.window_start, row.shard);
        let old = s.windows.insert(key, row.clone());
        if row.scope == MetricsScope::Campaign {
            if let Some(old) = &old {
                adjust(&mut s.campaign_totals, &old.campaign_id, Metrics::default().minus(old.metrics));
                adjust(&mut s.category_totals, &old.category, Metrics::default().minus(old.metrics));
            }
            adjust(&mut s.campaign_totals, &row.campaign_id, row.metrics);
            adjust(&mut s.category_totals, &row.category, row.metrics);
        }
        Ok(())
    }

    fn window_metrics(&self, scope: MetricsScope, id: &str) -> Result<Vec<WindowMetrics>> {
        let s = self.state.lock();
        let from = (scope, id.to_string(), Timestamp::MIN, 0);
        let rows = s.windows.range(from..).take_while(|(k, _)| k.0 == scope && k.1 == id).map(|(_, v)| v.clone());
        Ok(merge_shards(rows))
    }

    fn all_window_metrics(&self, scope: MetricsScope) -> Result<Vec<WindowMetrics>> {
        let s = self.state.lock();
        Ok(merge_shards(s.windows.iter().filter(|(k, _)| k.0 == scope).map(|(_, v)| v.clone())))
    }

    fn campaign_totals(&self, campaign_id: &str) -> Result<Metrics> {
        Ok(self.state.lock().campaign_totals.get(campaign_id).copied().unwrap_or_default())
    }

    fn category_totals(&self, category: &str) -> Result<Metrics> {
        Ok(self.state.lock().category_totals.get(category).copied().unwrap_or_default())
    }

    fn add_spend_once(&self, campaign_id: &str, day: Day, delta: i64, idempotency_key: &str) -> Result<(i64, bool)> {
        let mut s = self.state.lock();
        let applied = s.spend_keys.insert(idempotency_key.to_string());
        let total = s.spend.entry((campaign_id.to_string(), day)).or_insert(0);
        if applied {
            *total += delta;
        }
        Ok((*total, applied))
    }

    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        Ok(self.state.lock().spend.get(&(campaign_id.to_string(), day)).copied().unwrap_or(0))
    }

    fn mark_once(&self, key: &str) -> Result<bool> {
        Ok(self.state.lock().marks.insert(key.to_string()))
    }
}

#[derive(Debug, Default)]
struct DbState {
    advertisers: BTreeMap<String, AdvertiserRow>,
    ledger: Vec<LedgerRow>,
    ledger_seq: u64,
    ledger_keys: HashSet<String>,
    conversions: BTreeMap<String, ConversionRow>,
    campaigns: BTreeMap<String, CampaignRow>,
    index: BTreeMap<(Placement, String), BTreeSet<String>>,
    alerts: BTreeMap<String, AlertRow>,
}

/// A [`Database`] in memory. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryDatabase {
    state: Arc<Mutex<DbState>>,
}

impl MemoryDatabase {
    /// Removes and returns the ledger rows written so far (balances and idempotency keys are kept), for batch
    /// jobs that stream the ledger out instead of holding it.
    pub fn take_ledger(&self) -> Vec<LedgerRow> {
        std::mem::take(&mut self.state.lock().ledger)
    }

    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Database for MemoryDatabase {
    fn upsert_advertiser(&self, a: &Advertiser) -> Result<()> {
        let mut s = self.state.lock();
        let row = s.advertisers.entry(a.advertiser_id.clone()).or_insert_with(|| AdvertiserRow {
            advertiser_id: a.advertiser_id.clone(),
            opening_balance: 0,
            balance: 0,
            time_zone: a.time_zone.clone(),
        });
        row.balance += a.opening_balance - row.opening_balance;
        row.opening_balance = a.opening_balance;
        row.time_zone = a.time_zone.clone();
        Ok(())
    }

    fn advertiser(&self, advertiser_id: &str) -> Result<Option<AdvertiserRow>> {
        Ok(self.state.lock().advertisers.get(advertiser_id).cloned())
    }

    fn advertisers(&self) -> Result<Vec<AdvertiserRow>> {
        Ok(self.state.lock().advertisers.values().cloned().collect())
    }

    fn balance(&self, advertiser_id: &str) -> Result<Option<i64>> {
        Ok(self.state.lock().advertisers.get(advertiser_id).map(|a| a.balance))
    }

    fn apply_ledger(&self, entry: &LedgerEntry) -> Result<LedgerOutcome> {
        let mut s = self.state.lock();
        if !s.ledger_keys.insert(entry.idempotency_key.clone()) {
            return Ok(LedgerOutcome::Duplicate);
        }
        let row = s.advertisers.entry(entry.advertiser_id.clone()).or_insert_with(|| AdvertiserRow {
            advertiser_id: entry.advertiser_id.clone(),
            opening_balance: 0,
            balance: 0,
            time_zone: DEFAULT_TIME_ZONE.to_string(),
        });
        row.balance += entry.amount;
        let balance = row.balance;
        let seq = s.ledger_seq;
        s.ledger_seq += 1;
        s.ledger.push(LedgerRow { seq, entry: entry.clone(), balance_after: balance });
        Ok(LedgerOutcome::Applied { balance })
    }

    fn ledger(&self) -> Result<Vec<LedgerRow>> {
        Ok(self.state.lock().ledger.clone())
    }

    fn insert_conversion_once(&self, row: &ConversionRow) -> Result<bool> {
        let mut s = self.state.lock();
        if s.conversions.contains_key(&row.order_id) {
            return Ok(false);
        }
        s.conversions.insert(row.order_id.clone(), row.clone());
        Ok(true)
    }

    fn conversions(&self) -> Result<Vec<ConversionRow>> {
        Ok(self.state.lock().conversions.values().cloned().collect())
    }

    fn upsert_campaign(&self, row: &CampaignRow) -> Result<Option<CampaignRow>> {
        let mut s = self.state.lock();
        let mut new = row.clone();
        let old = s.campaigns.get(&row.campaign_id).cloned();
        if let Some(old) = &old {
            new.budget_paused_day = old.budget_paused_day;
            if let Some(ids) = s.index.get_mut(&(old.placement, old.category.clone())) {
                ids.remove(&old.campaign_id);
            }
        } else {
            new.budget_paused_day = None;
        }
        s.index.entry((new.placement, new.category.clone())).or_default().insert(new.campaign_id.clone());
        s.campaigns.insert(new.campaign_id.clone(), new);
        Ok(old)
    }

    fn campaign(&self, campaign_id: &str) -> Result<Option<CampaignRow>> {
        Ok(self.state.lock().campaigns.get(campaign_id).cloned())
    }

    fn campaigns_in(&self, placement: Placement, category: &str) -> Result<Vec<CampaignRow>> {
        let s = self.state.lock();
        let Some(ids) = s.index.get(&(placement, category.to_string())) else { return Ok(Vec::new()) };
        Ok(ids.iter().filter_map(|id| s.campaigns.get(id).cloned()).collect())
    }

    fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        Ok(self.state.lock().campaigns.values().cloned().collect())
    }

    fn set_budget_pause(&self, campaign_id: &str, pause: Option<Day>) -> Result<bool> {
        let mut s = self.state.lock();
        let Some(row) = s.campaigns.get_mut(campaign_id) else { return Ok(false) };
        let changed = row.budget_paused_day != pause;
        row.budget_paused_day = pause;
        Ok(changed)
    }

    fn clear_budget_pause_through(&self, campaign_id: &str, through: Day) -> Result<bool> {
        let mut s = self.state.lock();
        match s.campaigns.get_mut(campaign_id) {
            Some(row) if row.budget_paused_day.is_some_and(|d| d <= through) => {
                row.budget_paused_day = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn insert_alert_once(&self, alert: &AlertRow) -> Result<bool> {
        let mut s = self.state.lock();
        if s.alerts.contains_key(&alert.key) {
            return Ok(false);
        }
        s.alerts.insert(alert.key.clone(), alert.clone());
        Ok(true)
    }

    fn alerts(&self) -> Result<Vec<AlertRow>> {
        Ok(self.state.lock().alerts.values().cloned().collect())
    }
}
