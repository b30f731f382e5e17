//! The two stores the statements and workers write to, behind small traits.
//!
//! - [`Cache`] (Redis in production): rankings, performance windows with cumulative totals, daily spend
//!   counters, once-markers.
//! - [`Database`] (PostgreSQL in production): advertisers and balances, the ledger, conversion results,
//!   campaigns, alerts.
//!
//! Every write that a replay can repeat is idempotent by construction: window rows are *set* (and the
//! totals move by the difference to the previous value), spend and ledger changes carry idempotency keys,
//! conversions are unique per order, alerts unique per key. The traits name no backend type, so Redis and
//! PostgreSQL implementations fit them unchanged. Implementations here: [`EmbeddedCache`] and
//! [`EmbeddedDatabase`] (tables in an [`EmbeddedStore`]: in memory, journaled to disk, transactional),
//! `RedisCache` and `PostgresDatabase` (features `redis` and `postgres`, on by default: servers, every call
//! under a bounded retry loop, see `retry`) and [`MemoryCache`] / [`MemoryDatabase`] (tests, batch
//! replays). [`conformance`] holds the behaviour every implementation must show.
//!
//! Idempotency keys are kept for a [`KeyRetention`] (default 7 d input retention + 24 h correction
//! horizon) of event time and then pruned by the sink's own maintenance in `sync`; derived keys live in
//! namespaces no client id can reach (`charge:id:…`, `charge:src:…`, `refund:…`, `spend:…`).

pub mod conformance;
mod embedded_cache;
mod embedded_db;
mod keys;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres_db;
#[cfg(feature = "redis")]
pub mod redis_cache;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub mod retry;
mod store;
mod types;

pub use embedded_cache::EmbeddedCache;
pub use embedded_db::EmbeddedDatabase;
pub use memory::{MemoryCache, MemoryDatabase};
#[cfg(feature = "postgres")]
pub use postgres_db::{PostgresConfig, PostgresDatabase};
#[cfg(feature = "redis")]
pub use redis_cache::{RedisCache, RedisConfig};
#[cfg(any(feature = "redis", feature = "postgres"))]
pub use retry::RetryPolicy;
pub use store::EmbeddedStore;
pub use types::*;

use rtb_stream::Timestamp;

use crate::calendar::Day;
use crate::error::Result;
use crate::schema::Placement;

/// The ranking cache key of a placement and category: `rtb:{placement}:{category}`.
pub fn ranking_key(placement: Placement, category: &str) -> String {
    format!("rtb:{}:{category}", placement.as_str())
}

/// Rankings, performance metrics and budget counters (Redis-shaped). `Send + Sync`; implementations are
/// cheap handles shared by many tasks.
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// Replaces the ranking `rtb:{placement}:{category}` with `entries` (in rank order) atomically.
    fn put_ranking(&self, placement: Placement, category: &str, entries: &[RankedEntry]) -> Result<()>;
    /// The ranking of a placement and category, in rank order (empty if none was written).
    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>>;
    /// Every stored ranking: `(placement, category, entries)`, ordered by placement then category.
    fn rankings(&self) -> Result<Vec<(Placement, String, Vec<RankedEntry>)>>;

    /// Sets one window row (keyed by scope, id, window start and shard) and, **in the same atomic step**
    /// for [`MetricsScope::Campaign`] rows, moves the campaign's and the category's cumulative totals by
    /// `new − previously written value`. Writing the same value again changes nothing; a correction moves
    /// the totals by the correction only.
    fn write_window_metrics(&self, row: &WindowMetrics) -> Result<()>;
    /// The windows of one campaign or ad, shards merged, ordered by window start.
    fn window_metrics(&self, scope: MetricsScope, id: &str) -> Result<Vec<WindowMetrics>>;
    /// Every window of a scope, shards merged, ordered by id then window start.
    fn all_window_metrics(&self, scope: MetricsScope) -> Result<Vec<WindowMetrics>>;
    /// A campaign's cumulative totals over all its written windows.
    fn campaign_totals(&self, campaign_id: &str) -> Result<Metrics>;
    /// A category's cumulative totals over all campaign windows of the category.
    fn category_totals(&self, category: &str) -> Result<Metrics>;

    /// Adds `delta` (KRW, negative for refunds) to the campaign's spend on `day` unless
    /// `idempotency_key` was already applied; atomically. Returns `(the day's total, applied)`.
    /// `event_time` is the cause's event time: the key is kept for the sink's [`KeyRetention`] after it,
    /// then pruned by [`Cache::sync`]'s maintenance (or [`Cache::prune_spend_keys`]).
    fn add_spend_once(&self, campaign_id: &str, day: Day, delta: i64, idempotency_key: &str, event_time: Timestamp) -> Result<(i64, bool)>;
    /// Forgets the spend idempotency keys whose event time is before `before` (the counters stay);
    /// returns how many went. Idempotent.
    fn prune_spend_keys(&self, before: Timestamp) -> Result<u64>;
    /// The campaign's spend on `day` (0 if none).
    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64>;

    /// Sets `key` if absent; true the first time only (Redis `SET NX`).
    fn mark_once(&self, key: &str) -> Result<bool>;

    /// Makes every write so far durable. The runtime calls it before it commits the offsets of the records
    /// whose effects these writes are, so a crash can never keep the offsets and lose the effects. A store
    /// whose writes are durable when they return (a server) does nothing. It is also the sink's
    /// maintenance point: idempotency keys older than the [`KeyRetention`] are pruned here (at most once
    /// per `prune_step` of event time).
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// Balances, ledger, conversions, campaigns and alerts (PostgreSQL-shaped). `Send + Sync`;
/// implementations are cheap handles shared by many tasks.
pub trait Database: Send + Sync + std::fmt::Debug {
    /// Creates an advertiser or changes its opening balance and time zone; the balance moves by the
    /// change of the opening balance, so `balance = opening + Σ ledger` stays true.
    fn upsert_advertiser(&self, advertiser: &Advertiser) -> Result<()>;
    /// One advertiser.
    fn advertiser(&self, advertiser_id: &str) -> Result<Option<AdvertiserRow>>;
    /// Every advertiser, ordered by id.
    fn advertisers(&self) -> Result<Vec<AdvertiserRow>>;
    /// An advertiser's balance (`None` if it has neither an opening balance nor ledger rows).
    fn balance(&self, advertiser_id: &str) -> Result<Option<i64>>;

    /// Inserts the ledger row unless its idempotency key exists, and moves the advertiser's balance by
    /// `entry.amount`, in one atomic transaction. The key is stored with `entry.fingerprint` and
    /// `entry.event_time`: an existing key with the same fingerprint is a redelivery
    /// ([`LedgerOutcome::Duplicate`]), with another fingerprint a reused id ([`LedgerOutcome::Conflict`]);
    /// neither changes anything. An advertiser seen for the first time is created with opening balance 0
    /// and the default time zone (the workers refuse charges for unknown advertisers before this).
    fn apply_ledger(&self, entry: &LedgerEntry) -> Result<LedgerOutcome>;
    /// [`Database::apply_ledger`] for several entries in order (a key repeated inside the batch applies
    /// once). Implementations should make it one transaction / round trip; the default loops.
    fn apply_ledger_batch(&self, entries: &[LedgerEntry]) -> Result<Vec<LedgerOutcome>> {
        entries.iter().map(|e| self.apply_ledger(e)).collect()
    }
    /// The whole ledger in application order.
    fn ledger(&self) -> Result<Vec<LedgerRow>>;
    /// Forgets the ledger idempotency keys whose entry's event time is before `before` (the rows, the
    /// account history, stay); returns how many went. Idempotent. [`Database::sync`]'s maintenance calls
    /// it with the [`KeyRetention`] cut-off.
    fn prune_ledger_keys(&self, before: Timestamp) -> Result<u64>;

    /// Inserts a conversion result unless its `order_id` exists; true if inserted.
    fn insert_conversion_once(&self, row: &ConversionRow) -> Result<bool>;
    /// Every conversion result, ordered by order id.
    fn conversions(&self) -> Result<Vec<ConversionRow>>;
    /// Records `row`, a later conversion of an order that already has its result (a duplicate `order_id`,
    /// SPEC §4: ignored for attribution, but counted). Idempotent, by the row's `source` (where the
    /// conversion was read): the conversion that claimed the order, redelivered after a restart, or a
    /// duplicate already recorded, records nothing. A row without a `source` is told apart by its content.
    /// True if recorded.
    fn record_duplicate_order(&self, row: &ConversionRow) -> Result<bool>;
    /// Every recorded duplicate conversion, ordered by order id.
    fn duplicate_orders(&self) -> Result<Vec<ConversionRow>>;

    /// Inserts or replaces a campaign, **keeping** the stored `budget_paused_day` (which only
    /// [`Database::set_budget_pause`] changes), and keeps the placement+category index right when they
    /// change. Returns the previous row.
    fn upsert_campaign(&self, row: &CampaignRow) -> Result<Option<CampaignRow>>;
    /// One campaign.
    fn campaign(&self, campaign_id: &str) -> Result<Option<CampaignRow>>;
    /// The campaigns of a placement and category, ordered by id.
    fn campaigns_in(&self, placement: Placement, category: &str) -> Result<Vec<CampaignRow>>;
    /// Every campaign, ordered by id.
    fn campaigns(&self) -> Result<Vec<CampaignRow>>;
    /// Sets (`Some(day)`: paused by budget on that day) or clears (`None`) the budget pause; returns
    /// whether it changed. Does nothing (false) for an unknown campaign.
    fn set_budget_pause(&self, campaign_id: &str, pause: Option<Day>) -> Result<bool>;
    /// Clears the budget pause atomically **only if** it was set for a day `<= through` (so a resume for
    /// an old day cannot undo a newer day's pause); returns whether it cleared one.
    fn clear_budget_pause_through(&self, campaign_id: &str, through: Day) -> Result<bool>;

    /// Inserts an alert unless its key exists; true if inserted.
    fn insert_alert_once(&self, alert: &AlertRow) -> Result<bool>;
    /// Every alert, ordered by key.
    fn alerts(&self) -> Result<Vec<AlertRow>>;

    /// Makes every write so far durable and runs the key maintenance (see [`Cache::sync`]).
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
