//! The stores as the handlers call them: a store on a server (Redis, PostgreSQL) does blocking network I/O,
//! and the PostgreSQL client drives its own runtime (`block_on`), which must not run on a worker thread of
//! the server's runtime. [`Offload`] runs every call of such a store with `tokio::task::block_in_place`
//! (the worker hands its other tasks over and leaves the runtime context for the call); an embedded store
//! answers from memory and is called as it is (see [`offload_cache`], [`offload_database`]).

use std::sync::Arc;

use rtb_ops::calendar::Day;
use rtb_ops::schema::Placement;
use rtb_ops::sink::{
    AdvertiserRow, Advertiser, AlertRow, Cache, CampaignRow, ConversionRow, Database, LedgerEntry, LedgerOutcome, LedgerRow,
    Metrics, MetricsScope, RankedEntry, WindowMetrics,
};
use rtb_ops::Result;
use rtb_stream::Timestamp;

/// A store whose calls block: run off the async workers.
#[derive(Debug)]
pub struct Offload<T: ?Sized>(pub Arc<T>);

/// Runs `f` outside the runtime context when called on a worker of a multi-thread runtime.
fn off<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `cache`, wrapped in [`Offload`] when `blocking` (its backend is a server).
pub fn offload_cache(cache: Arc<dyn Cache>, blocking: bool) -> Arc<dyn Cache> {
    if blocking {
        Arc::new(Offload(cache))
    } else {
        cache
    }
}

/// `db`, wrapped in [`Offload`] when `blocking` (its backend is a server).
pub fn offload_database(db: Arc<dyn Database>, blocking: bool) -> Arc<dyn Database> {
    if blocking {
        Arc::new(Offload(db))
    } else {
        db
    }
}

impl Cache for Offload<dyn Cache> {
    fn put_ranking(&self, placement: Placement, category: &str, entries: &[RankedEntry]) -> Result<()> {
        off(|| self.0.put_ranking(placement, category, entries))
    }
    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>> {
        off(|| self.0.ranking(placement, category))
    }
    fn rankings(&self) -> Result<Vec<(Placement, String, Vec<RankedEntry>)>> {
        off(|| self.0.rankings())
    }
    fn write_window_metrics(&self, row: &WindowMetrics) -> Result<()> {
        off(|| self.0.write_window_metrics(row))
    }
    fn window_metrics(&self, scope: MetricsScope, id: &str) -> Result<Vec<WindowMetrics>> {
        off(|| self.0.window_metrics(scope, id))
    }
    fn all_window_metrics(&self, scope: MetricsScope) -> Result<Vec<WindowMetrics>> {
        off(|| self.0.all_window_metrics(scope))
    }
    fn campaign_totals(&self, campaign_id: &str) -> Result<Metrics> {
        off(|| self.0.campaign_totals(campaign_id))
    }
    fn category_totals(&self, category: &str) -> Result<Metrics> {
        off(|| self.0.category_totals(category))
    }
    fn add_spend_once(&self, campaign_id: &str, day: Day, delta: i64, key: &str, event_time: Timestamp) -> Result<(i64, bool)> {
        off(|| self.0.add_spend_once(campaign_id, day, delta, key, event_time))
    }
    fn prune_spend_keys(&self, before: Timestamp) -> Result<u64> {
        off(|| self.0.prune_spend_keys(before))
    }
    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        off(|| self.0.spend(campaign_id, day))
    }
    fn mark_once(&self, key: &str) -> Result<bool> {
        off(|| self.0.mark_once(key))
    }
    fn sync(&self) -> Result<()> {
        off(|| self.0.sync())
    }
}

impl Database for Offload<dyn Database> {
    fn upsert_advertiser(&self, advertiser: &Advertiser) -> Result<()> {
        off(|| self.0.upsert_advertiser(advertiser))
    }
    fn advertiser(&self, advertiser_id: &str) -> Result<Option<AdvertiserRow>> {
        off(|| self.0.advertiser(advertiser_id))
    }
    fn advertisers(&self) -> Result<Vec<AdvertiserRow>> {
        off(|| self.0.advertisers())
    }
    fn balance(&self, advertiser_id: &str) -> Result<Option<i64>> {
        off(|| self.0.balance(advertiser_id))
    }
    fn apply_ledger(&self, entry: &LedgerEntry) -> Result<LedgerOutcome> {
        off(|| self.0.apply_ledger(entry))
    }
    fn apply_ledger_batch(&self, entries: &[LedgerEntry]) -> Result<Vec<LedgerOutcome>> {
        off(|| self.0.apply_ledger_batch(entries))
    }
    fn ledger(&self) -> Result<Vec<LedgerRow>> {
        off(|| self.0.ledger())
    }
    fn prune_ledger_keys(&self, before: Timestamp) -> Result<u64> {
        off(|| self.0.prune_ledger_keys(before))
    }
    fn insert_conversion_once(&self, row: &ConversionRow) -> Result<bool> {
        off(|| self.0.insert_conversion_once(row))
    }
    fn conversions(&self) -> Result<Vec<ConversionRow>> {
        off(|| self.0.conversions())
    }
    fn record_duplicate_order(&self, row: &ConversionRow) -> Result<bool> {
        off(|| self.0.record_duplicate_order(row))
    }
    fn duplicate_orders(&self) -> Result<Vec<ConversionRow>> {
        off(|| self.0.duplicate_orders())
    }
    fn upsert_campaign(&self, row: &CampaignRow) -> Result<Option<CampaignRow>> {
        off(|| self.0.upsert_campaign(row))
    }
    fn campaign(&self, campaign_id: &str) -> Result<Option<CampaignRow>> {
        off(|| self.0.campaign(campaign_id))
    }
    fn campaigns_in(&self, placement: Placement, category: &str) -> Result<Vec<CampaignRow>> {
        off(|| self.0.campaigns_in(placement, category))
    }
    fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        off(|| self.0.campaigns())
    }
    fn set_budget_pause(&self, campaign_id: &str, pause: Option<Day>) -> Result<bool> {
        off(|| self.0.set_budget_pause(campaign_id, pause))
    }
    fn clear_budget_pause_through(&self, campaign_id: &str, through: Day) -> Result<bool> {
        off(|| self.0.clear_budget_pause_through(campaign_id, through))
    }
    fn insert_alert_once(&self, alert: &AlertRow) -> Result<bool> {
        off(|| self.0.insert_alert_once(alert))
    }
    fn alerts(&self) -> Result<Vec<AlertRow>> {
        off(|| self.0.alerts())
    }
    fn sync(&self) -> Result<()> {
        off(|| self.0.sync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtb_ops::sink::MemoryDatabase;

    /// A database that, like the PostgreSQL client, drives a runtime of its own on every call.
    #[derive(Debug)]
    struct OwnRuntime(MemoryDatabase);

    impl OwnRuntime {
        fn blocking<R>(&self, f: impl FnOnce(&MemoryDatabase) -> R) -> R {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async { f(&self.0) })
        }
    }

    #[test]
    fn a_store_that_blocks_on_its_own_runtime_can_be_called_from_a_handler() {
        let db = Arc::new(OwnRuntime(MemoryDatabase::new()));
        db.0.upsert_advertiser(&Advertiser { advertiser_id: "a".into(), opening_balance: 7, time_zone: "UTC".into() }).expect("advertiser");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let balance = rt.block_on(async {
            let db = Arc::clone(&db);
            tokio::spawn(async move { off(|| db.blocking(|d| d.balance("a"))) }).await.expect("task")
        });
        assert_eq!(balance.expect("balance"), Some(7));
        // Without the offload the same call panics ("Cannot start a runtime from within a runtime").
        let panicked = rt.block_on(async {
            let db = Arc::clone(&db);
            tokio::spawn(async move { db.blocking(|d| d.balance("a")) }).await.is_err()
        });
        assert!(panicked);
    }
}
