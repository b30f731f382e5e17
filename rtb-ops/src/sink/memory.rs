//! In-memory sinks: one mutex around plain maps. For tests and batch replays; lost when dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use rtb_stream::Timestamp;

use super::keys::{merge_shards, Pruner};
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
    /// Applied spend keys → their event time; `spend_expiry` orders them by it for pruning.
    spend_keys: HashMap<String, Timestamp>,
    spend_expiry: BTreeSet<(Timestamp, String)>,
    marks: HashSet<String>,
}

/// A [`Cache`] in memory. Clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryCache {
    state: Arc<Mutex<CacheState>>,
    pruner: Arc<Pruner>,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::with_retention(KeyRetention::default())
    }
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

    /// An empty cache keeping idempotency keys for `retention`.
    pub fn with_retention(retention: KeyRetention) -> Self {
        Self { state: Arc::default(), pruner: Arc::new(Pruner::new(retention)) }
    }

    /// How many spend idempotency keys are held (for tests and monitoring).
    pub fn spend_keys_held(&self) -> usize {
        self.state.lock().spend_keys.len()
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

    fn add_spend_once(&self, campaign_id: &str, day: Day, delta: i64, idempotency_key: &str, event_time: Timestamp) -> Result<(i64, bool)> {
        let mut s = self.state.lock();
        let applied = !s.spend_keys.contains_key(idempotency_key);
        if applied {
            s.spend_keys.insert(idempotency_key.to_string(), event_time);
            s.spend_expiry.insert((event_time, idempotency_key.to_string()));
            self.pruner.note(event_time);
        }
        let total = s.spend.entry((campaign_id.to_string(), day)).or_insert(0);
        if applied {
            *total += delta;
        }
        Ok((*total, applied))
    }

    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        Ok(self.state.lock().spend.get(&(campaign_id.to_string(), day)).copied().unwrap_or(0))
    }

    fn prune_spend_keys(&self, before: Timestamp) -> Result<u64> {
        let mut s = self.state.lock();
        let keep = s.spend_expiry.split_off(&(before, String::new()));
        let gone = std::mem::replace(&mut s.spend_expiry, keep);
        for (_, k) in &gone {
            s.spend_keys.remove(k);
        }
        Ok(gone.len() as u64)
    }

    fn mark_once(&self, key: &str) -> Result<bool> {
        Ok(self.state.lock().marks.insert(key.to_string()))
    }

    fn sync(&self) -> Result<()> {
        if let Some(cutoff) = self.pruner.due() {
            self.prune_spend_keys(cutoff)?;
            self.pruner.done(cutoff);
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct DbState {
    advertisers: BTreeMap<String, AdvertiserRow>,
    ledger: Vec<LedgerRow>,
    ledger_seq: u64,
    /// Idempotency key → (fingerprint, event time); `ledger_expiry` orders them by event time.
    ledger_keys: HashMap<String, (u128, Timestamp)>,
    ledger_expiry: BTreeSet<(Timestamp, String)>,
    conversions: BTreeMap<String, ConversionRow>,
    /// Duplicate conversions per order (each distinct row once).
    duplicate_orders: BTreeMap<String, Vec<ConversionRow>>,
    campaigns: BTreeMap<String, CampaignRow>,
    index: BTreeMap<(Placement, String), BTreeSet<String>>,
    alerts: BTreeMap<String, AlertRow>,
}

/// A [`Database`] in memory. Clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryDatabase {
    state: Arc<Mutex<DbState>>,
    pruner: Arc<Pruner>,
}

impl Default for MemoryDatabase {
    fn default() -> Self {
        Self::with_retention(KeyRetention::default())
    }
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

    /// An empty database keeping ledger idempotency keys for `retention`.
    pub fn with_retention(retention: KeyRetention) -> Self {
        Self { state: Arc::default(), pruner: Arc::new(Pruner::new(retention)) }
    }

    /// How many ledger idempotency keys are held (for tests and monitoring).
    pub fn ledger_keys_held(&self) -> usize {
        self.state.lock().ledger_keys.len()
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
        if let Some(&(fingerprint, _)) = s.ledger_keys.get(&entry.idempotency_key) {
            return Ok(if fingerprint == entry.fingerprint { LedgerOutcome::Duplicate } else { LedgerOutcome::Conflict });
        }
        s.ledger_keys.insert(entry.idempotency_key.clone(), (entry.fingerprint, entry.event_time));
        s.ledger_expiry.insert((entry.event_time, entry.idempotency_key.clone()));
        self.pruner.note(entry.event_time);
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

    fn prune_ledger_keys(&self, before: Timestamp) -> Result<u64> {
        let mut s = self.state.lock();
        let keep = s.ledger_expiry.split_off(&(before, String::new()));
        let gone = std::mem::replace(&mut s.ledger_expiry, keep);
        for (_, k) in &gone {
            s.ledger_keys.remove(k);
        }
        Ok(gone.len() as u64)
    }

    fn sync(&self) -> Result<()> {
        if let Some(cutoff) = self.pruner.due() {
            self.prune_ledger_keys(cutoff)?;
            self.pruner.done(cutoff);
        }
        Ok(())
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

    fn record_duplicate_order(&self, row: &ConversionRow) -> Result<bool> {
        let mut s = self.state.lock();
        if s.conversions.get(&row.order_id).is_some_and(|claimer| same_conversion(claimer, row)) {
            return Ok(false);
        }
        let rows = s.duplicate_orders.entry(row.order_id.clone()).or_default();
        if rows.iter().any(|r| same_conversion(r, row)) {
            return Ok(false);
        }
        rows.push(row.clone());
        Ok(true)
    }

    fn duplicate_orders(&self) -> Result<Vec<ConversionRow>> {
        Ok(self.state.lock().duplicate_orders.values().flatten().cloned().collect())
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
