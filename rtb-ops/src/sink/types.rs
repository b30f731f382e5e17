//! Rows and values the sinks store. Money is `i64` KRW throughout.

use rtb_stream::{SourceCoord, Timestamp};
use serde::{Deserialize, Serialize};

use crate::calendar::Day;
use crate::schema::{ApprovalStatus, CampaignStatus, ConversionType, Placement, RtbImpact, StatusReason};

/// One ranked campaign of a placement+category ranking (the cache's sorted set member plus its price).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedEntry {
    /// 1-based rank.
    pub rank: u32,
    /// Campaign.
    pub campaign_id: String,
    /// Its bid (KRW).
    pub bid_price: i64,
    /// Its smoothed CTR.
    pub pctr: f64,
    /// `bid_price × pctr` (the sorted-set score).
    pub score: f64,
    /// The generalized-second-price CPC it pays per click (KRW).
    pub cpc: i64,
}

/// Counters of one performance window, or cumulative over many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Impressions.
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions (CONVERSION ad-events).
    pub conversions: i64,
    /// Σ `actual_price` of clicks (KRW).
    pub spend: i64,
    /// Σ `revenue_amount` (KRW).
    pub revenue: i64,
}

impl Metrics {
    /// Field-wise `self + other`.
    pub fn plus(self, o: Metrics) -> Metrics {
        Metrics {
            impressions: self.impressions + o.impressions,
            clicks: self.clicks + o.clicks,
            conversions: self.conversions + o.conversions,
            spend: self.spend + o.spend,
            revenue: self.revenue + o.revenue,
        }
    }
    /// Field-wise `self − other`.
    pub fn minus(self, o: Metrics) -> Metrics {
        Metrics {
            impressions: self.impressions - o.impressions,
            clicks: self.clicks - o.clicks,
            conversions: self.conversions - o.conversions,
            spend: self.spend - o.spend,
            revenue: self.revenue - o.revenue,
        }
    }
    /// clicks / impressions (0 without impressions).
    pub fn ctr(&self) -> f64 {
        ratio(self.clicks, self.impressions)
    }
    /// conversions / clicks (0 without clicks).
    pub fn cvr(&self) -> f64 {
        ratio(self.conversions, self.clicks)
    }
    /// The CTR of one window shown as a rate: [`Metrics::ctr`] capped at 1. A click counts in the window of
    /// its own time, which can be later than its impression's window, so a window's clicks can exceed its
    /// impressions; the counts stay as they are (and the ranking's pCTR sums the counts of every closed
    /// window, never these rates).
    pub fn ctr_rate(&self) -> f64 {
        self.ctr().min(1.0)
    }
    /// The CVR of one window shown as a rate: [`Metrics::cvr`] capped at 1 (a CONVERSION ad-event comes hours
    /// after its click, in another window).
    pub fn cvr_rate(&self) -> f64 {
        self.cvr().min(1.0)
    }
}

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Whether a window row is about a campaign or an ad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MetricsScope {
    /// Keyed by campaign id; writes adjust the campaign and category totals.
    Campaign,
    /// Keyed by ad id; stored only.
    Ad,
}

/// One performance window's counters as written by one writer (`shard`, the writing task's partition:
/// `ad-events` is partitioned by device, so several tasks hold parts of the same campaign's window).
/// Reads merge the shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowMetrics {
    /// Campaign or ad.
    pub scope: MetricsScope,
    /// The campaign id or ad id.
    pub id: String,
    /// The campaign (equal to `id` for campaign rows).
    pub campaign_id: String,
    /// The campaign's category (category totals are keyed by it).
    pub category: String,
    /// Window start (inclusive).
    pub window_start: Timestamp,
    /// Window end (exclusive).
    pub window_end: Timestamp,
    /// Writer; `0` in merged reads.
    pub shard: u32,
    /// The counters.
    pub metrics: Metrics,
}

/// An advertiser's account settings (what `advertisers.jsonl` provides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertiser {
    /// Id.
    pub advertiser_id: String,
    /// Opening balance (KRW).
    pub opening_balance: i64,
    /// IANA time zone of the budget day.
    pub time_zone: String,
}

/// An advertiser with its current balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiserRow {
    /// Id.
    pub advertiser_id: String,
    /// Opening balance (KRW).
    pub opening_balance: i64,
    /// `opening_balance + Σ ledger amounts`.
    pub balance: i64,
    /// IANA time zone of the budget day.
    pub time_zone: String,
}

/// Why a ledger row exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerKind {
    /// A click was charged (amount < 0).
    Charge,
    /// Duplicate clicks were refunded (amount > 0).
    Refund,
}

/// A balance movement, keyed by a unique idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Unique key: applying the same key twice changes nothing the second time.
    pub idempotency_key: String,
    /// Account.
    pub advertiser_id: String,
    /// Campaign concerned.
    pub campaign_id: Option<String>,
    /// Charge or refund.
    pub kind: LedgerKind,
    /// Signed change of the balance (KRW): negative for charges.
    pub amount: i64,
    /// Event time of the cause.
    pub event_time: Timestamp,
    /// What caused it (event id or source coordinates, or the compensation's id).
    pub reference: String,
    /// Fingerprint of the cause's content (`AdEvent::fingerprint`, `CompensationEvent::fingerprint`),
    /// stored with the key: the same key with the same fingerprint is a redelivery, with another one a
    /// reused id ([`LedgerOutcome::Conflict`]).
    pub fingerprint: u128,
}

/// A stored ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// Application order (increasing).
    pub seq: u64,
    /// The entry.
    pub entry: LedgerEntry,
    /// The advertiser's balance right after it.
    pub balance_after: i64,
}

/// What [`super::Database::apply_ledger`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// Inserted, and the balance moved to `balance`.
    Applied {
        /// Balance after the entry.
        balance: i64,
    },
    /// The idempotency key was already there with the same fingerprint (a redelivery): nothing changed.
    Duplicate,
    /// The idempotency key was already there with a **different** fingerprint: another cause reused the
    /// id. Nothing changed; the caller must report it (it is neither applied nor a redelivery).
    Conflict,
}

/// How long the sinks keep idempotency keys (ledger keys, spend-counter keys): exactly as long as a
/// replay can reach the records that wrote them — the input retention plus the correction horizon —
/// measured in event time back from the newest event time the sink has been given. Older keys are
/// pruned by the sink's own maintenance ([`super::Database::sync`], [`super::Cache::sync`]), not on
/// lookups. Ledger **rows** are the account history and are never pruned; only their keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRetention {
    /// Event time a key is kept after its cause's event time (default 7 d input retention + 24 h
    /// correction horizon).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub keep: std::time::Duration,
    /// Maintenance prunes once the cut-off has advanced by at least this much event time since the last
    /// prune (default 1 h), so a commit does not scan for keys every time.
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub prune_step: std::time::Duration,
}

impl KeyRetention {
    /// The default: SPEC §2's 7-day `ad-events` retention plus SPEC §4's 24 h correction horizon.
    pub const DEFAULT_KEEP: std::time::Duration = std::time::Duration::from_secs(8 * 24 * 3_600);
}

impl Default for KeyRetention {
    fn default() -> Self {
        Self { keep: Self::DEFAULT_KEEP, prune_step: std::time::Duration::from_secs(3_600) }
    }
}

/// A conversion attribution result (one per order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionRow {
    /// Order (unique).
    pub order_id: String,
    /// Device.
    pub device_id: String,
    /// Product.
    pub product_id: String,
    /// Attributed campaign (`None`: unattributed).
    pub campaign_id: Option<String>,
    /// Attributed ad.
    pub ad_id: Option<String>,
    /// Attributed advertiser.
    pub advertiser_id: Option<String>,
    /// The winning (last) click's time.
    pub click_timestamp: Option<Timestamp>,
    /// The conversion's time.
    pub conversion_timestamp: Timestamp,
    /// Revenue (KRW).
    pub revenue_amount: i64,
    /// Kind.
    pub conversion_type: ConversionType,
    /// Where the conversion that made this row was read (topic, partition, offset), when known: a later
    /// report of the same order is a duplicate even when its bytes are identical; the same coordinates
    /// again are a redelivery.
    #[serde(default)]
    pub source: Option<SourceCoord>,
}

/// Whether two rows come from the same conversion event: the same source coordinates, or, where either
/// has none, the same content.
pub fn same_conversion(a: &ConversionRow, b: &ConversionRow) -> bool {
    match (&a.source, &b.source) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl ConversionRow {
    /// Whether a click was found.
    pub fn is_attributed(&self) -> bool {
        self.campaign_id.is_some()
    }
}

/// A campaign as stored: its latest event (by event time), plus the budget monitor's pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRow {
    /// Id.
    pub campaign_id: String,
    /// Owner.
    pub advertiser_id: String,
    /// Product.
    pub product_id: Option<String>,
    /// Placement.
    pub placement: Placement,
    /// Category.
    pub category: String,
    /// Bid (KRW).
    pub bid_price: i64,
    /// Daily budget (KRW).
    pub daily_budget: i64,
    /// Status as set by the advertiser/admin.
    pub status: CampaignStatus,
    /// Review status.
    pub approval_status: ApprovalStatus,
    /// Serving start.
    pub effective_from: Option<Timestamp>,
    /// Impact hint.
    pub rtb_impact: Option<RtbImpact>,
    /// The budget day on which the budget monitor paused it (`None`: not paused by budget). Only
    /// [`super::Database::set_budget_pause`] changes it.
    pub budget_paused_day: Option<Day>,
    /// Event time of the event the row was taken from.
    pub updated_at: Timestamp,
}

impl CampaignRow {
    /// The status to show: `PAUSED` while the budget monitor holds it, else the admin's status.
    pub fn effective_status(&self) -> CampaignStatus {
        if self.budget_paused_day.is_some() {
            CampaignStatus::Paused
        } else {
            self.status
        }
    }
    /// `BUDGET_EXHAUSTED` while the budget monitor holds it.
    pub fn pause_reason(&self) -> Option<StatusReason> {
        self.budget_paused_day.map(|_| StatusReason::BudgetExhausted)
    }
}

/// A budget alert (one per campaign, day and threshold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRow {
    /// Unique key `budget:{campaign}:{day}:{pct, 3 digits}` (so keys sort by threshold).
    pub key: String,
    /// Campaign.
    pub campaign_id: String,
    /// Advertiser.
    pub advertiser_id: String,
    /// Budget day.
    pub day: Day,
    /// Threshold crossed, in percent of the daily budget.
    pub threshold_pct: u32,
    /// The day's spend when it was crossed (KRW).
    pub spend: i64,
    /// The daily budget (KRW).
    pub daily_budget: i64,
    /// Event time of the click that crossed it.
    pub event_time: Timestamp,
}
