//! Event types and their enumerations.

use rtb_stream::Timestamp;
use serde::{Deserialize, Serialize};

use super::rfc3339;
use super::wire_enum;

wire_enum! {
    /// What happened to a campaign (`campaign-events.event_type`).
    CampaignEventType {
        /// A new campaign (the admin console created it).
        Created => "CAMPAIGN_CREATED",
        /// Some of its fields changed (bid, budget, targeting, ...).
        Updated => "CAMPAIGN_UPDATED",
        /// Review finished; a new competitor may enter the ranking.
        Approved => "CAMPAIGN_APPROVED",
        /// Its status changed (by the admin, or by the budget monitor).
        StatusChanged => "CAMPAIGN_STATUS_CHANGED",
    }
}

wire_enum! {
    /// Where an ad is shown.
    Placement {
        /// Home screen.
        Home => "HOME",
        /// Category listing.
        Category => "CATEGORY",
        /// Product detail page.
        ProductDetail => "PRODUCT_DETAIL",
        /// Search results.
        Search => "SEARCH",
    }
}

wire_enum! {
    /// A campaign's lifecycle status as set by the advertiser or the admin.
    CampaignStatus {
        /// Not running yet.
        Pending => "PENDING",
        /// Running.
        Active => "ACTIVE",
        /// Stopped for now.
        Paused => "PAUSED",
        /// Gone.
        Deleted => "DELETED",
    }
}

wire_enum! {
    /// Review state of a campaign.
    ApprovalStatus {
        /// Waiting for review.
        Pending => "PENDING",
        /// May serve.
        Approved => "APPROVED",
        /// May not serve.
        Rejected => "REJECTED",
    }
}

wire_enum! {
    /// How much a campaign change is expected to move its ranking (a hint only, never a reason to skip
    /// a recompute).
    RtbImpact {
        /// Popular category, high bid.
        High => "HIGH",
        /// In between.
        Medium => "MEDIUM",
        /// Niche category, low bid.
        Low => "LOW",
    }
}

wire_enum! {
    /// Why a `CAMPAIGN_STATUS_CHANGED` happened (extension field `status_reason`; absent = the admin).
    StatusReason {
        /// The admin or advertiser changed it.
        Manual => "MANUAL",
        /// The budget monitor paused it: the day's spend reached the daily budget.
        BudgetExhausted => "BUDGET_EXHAUSTED",
        /// The budget monitor resumed it: a new budget day began.
        BudgetNewDay => "BUDGET_NEW_DAY",
        /// It was resumed because its daily budget was raised above the day's spend.
        BudgetRaised => "BUDGET_RAISED",
    }
}

impl StatusReason {
    /// Whether the budget monitor (not a person) caused the change.
    pub fn is_budget(self) -> bool {
        !matches!(self, StatusReason::Manual)
    }
}

wire_enum! {
    /// Kind of user action in `ad-events`.
    AdEventType {
        /// The ad was shown.
        Impression => "IMPRESSION",
        /// The ad was clicked (billable).
        Click => "CLICK",
        /// A conversion reported on the ad stream.
        Conversion => "CONVERSION",
    }
}

wire_enum! {
    /// Kind of conversion in `conversion-events`.
    ConversionType {
        /// An order.
        Purchase => "PURCHASE",
        /// Added to cart.
        AddToCart => "ADD_TO_CART",
        /// Signed up.
        Signup => "SIGNUP",
    }
}

wire_enum! {
    /// The dedup window used by duplicate-click detection.
    DetectionWindow {
        /// Five minutes from the first click.
        FiveMinutes => "5_MINUTES",
    }
}

wire_enum! {
    /// Why a compensation was issued.
    CompensationReason {
        /// Several clicks of one device on one ad within the dedup window.
        DuplicateClickDetected => "DUPLICATE_CLICK_DETECTED",
    }
}

wire_enum! {
    /// How a compensation is paid.
    CompensationType {
        /// Credited back to the advertiser's balance.
        BalanceRefund => "BALANCE_REFUND",
    }
}

/// Audience targeting of a campaign (carried through, not interpreted by the statements).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targeting {
    /// Device types, e.g. `MOBILE`, `DESKTOP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<String>,
    /// Age groups, e.g. `20-29`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_groups: Vec<String>,
}

/// A `campaign-events` record: a full snapshot of the campaign.
///
/// Required: `event_type`, `timestamp`, `campaign_id`, `advertiser_id`, `placement`, `category`,
/// `bid_price`, `daily_budget`, `status`, `approval_status`. Optional: `event_id`, `product_id`,
/// `targeting`, `effective_from` (absent = the event's own time), `rtb_impact`, `status_reason`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignEvent {
    /// Unique id assigned by the producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What happened.
    pub event_type: CampaignEventType,
    /// Event time.
    #[serde(with = "rfc3339::serde_ms")]
    pub timestamp: Timestamp,
    /// Campaign.
    pub campaign_id: String,
    /// Owner.
    pub advertiser_id: String,
    /// Advertised product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Placement (half of the ranking key and of the partitioning key).
    pub placement: Placement,
    /// Category (the other half).
    pub category: String,
    /// Maximum CPC in KRW.
    pub bid_price: i64,
    /// Daily budget in KRW.
    pub daily_budget: i64,
    /// Lifecycle status.
    pub status: CampaignStatus,
    /// Review status.
    pub approval_status: ApprovalStatus,
    /// Targeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting: Option<Targeting>,
    /// When the campaign may start serving (absent: from the event's time).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339::serde_opt_ms")]
    pub effective_from: Option<Timestamp>,
    /// Ranking-impact hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtb_impact: Option<RtbImpact>,
    /// Extension: why the status changed (set by the budget monitor on the events it publishes; the
    /// ranking statement does not take the campaign's fields from such events, the monitor stored its
    /// change itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<StatusReason>,
}

impl CampaignEvent {
    /// The partitioning key of `campaign-events`: `placement:category` (matches the ranking cache key).
    pub fn partition_key(&self) -> String {
        campaign_partition_key(self.placement, &self.category)
    }
}

/// The `campaign-events` partitioning key of a placement and category.
pub fn campaign_partition_key(placement: Placement, category: &str) -> String {
    let mut k = String::with_capacity(placement.as_str().len() + 1 + category.len());
    k.push_str(placement.as_str());
    k.push(':');
    k.push_str(category);
    k
}

/// An `ad-events` record.
///
/// Which fields an event carries depends on its type (SPEC §3 field table):
///
/// | field | IMPRESSION | CLICK | CONVERSION |
/// |---|---|---|---|
/// | `event_type`, `timestamp`, `device_id`, `ad_id`, `campaign_id`, `advertiser_id`, `placement`, `category` | required | required | required |
/// | `bid_price` | optional | required | optional |
/// | `actual_price` (≤ `bid_price`) | ignored (`None`) | required | ignored (`None`) |
/// | `revenue_amount`, `order_id` | optional | optional | required |
/// | `event_id`, `session_id`, `product_id`, `search_term` | optional | optional | optional |
///
/// The validating decoder ([`super::Validator::ad_event`]) guarantees this shape: a decoded CLICK always
/// has `bid_price` and `actual_price`, a decoded CONVERSION always has `revenue_amount` and `order_id`,
/// and only a CLICK has an `actual_price`. A click without `product_id` cannot be matched to a conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdEvent {
    /// Unique id assigned by the producer (the balance worker's idempotency key when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Impression, click or conversion.
    pub event_type: AdEventType,
    /// Event time.
    #[serde(with = "rfc3339::serde_ms")]
    pub timestamp: Timestamp,
    /// Device (the partitioning key).
    pub device_id: String,
    /// App session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Ad creative.
    pub ad_id: String,
    /// Campaign.
    pub campaign_id: String,
    /// Advertiser billed.
    pub advertiser_id: String,
    /// Advertised product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Where it was shown.
    pub placement: Placement,
    /// Category.
    pub category: String,
    /// The campaign's bid at serving time (KRW); always present on a CLICK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_price: Option<i64>,
    /// What a click costs (KRW, the GSP price, ≤ `bid_price`); present on (and charged for) CLICK
    /// events only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_price: Option<i64>,
    /// Search term (SEARCH placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_term: Option<String>,
    /// Revenue (CONVERSION).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_amount: Option<i64>,
    /// Order (CONVERSION).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl AdEvent {
    /// Whether this is a billable click.
    pub fn is_click(&self) -> bool {
        self.event_type == AdEventType::Click
    }
    /// A fingerprint of the event's content (every field but `event_id`), stable across processes and
    /// versions: two deliveries of the same event have the same fingerprint, two different events that
    /// reuse one `event_id` (almost surely) do not. Stored with the charge's idempotency key so a reused
    /// `event_id` is recognised as such instead of being mistaken for a redelivery.
    pub fn fingerprint(&self) -> u128 {
        let mut h = Fingerprint::new();
        h.str(self.event_type.as_str());
        h.i64(self.timestamp);
        h.str(&self.device_id);
        h.opt_str(self.session_id.as_deref());
        h.str(&self.ad_id);
        h.str(&self.campaign_id);
        h.str(&self.advertiser_id);
        h.opt_str(self.product_id.as_deref());
        h.str(self.placement.as_str());
        h.str(&self.category);
        h.opt_i64(self.bid_price);
        h.opt_i64(self.actual_price);
        h.opt_str(self.search_term.as_deref());
        h.opt_i64(self.revenue_amount);
        h.opt_str(self.order_id.as_deref());
        h.finish()
    }

    /// What this event costs the advertiser: `actual_price` for a click, 0 otherwise.
    pub fn price(&self) -> i64 {
        if self.is_click() {
            self.actual_price.unwrap_or(0)
        } else {
            0
        }
    }
}

/// A `conversion-events` record. Required: `timestamp`, `device_id`, `order_id`, `product_id`,
/// `revenue_amount`, `conversion_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversionEvent {
    /// Unique id assigned by the producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Conversion time.
    #[serde(with = "rfc3339::serde_ms")]
    pub timestamp: Timestamp,
    /// Device (the partitioning key).
    pub device_id: String,
    /// App session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Order (one attribution result per order).
    pub order_id: String,
    /// Product bought.
    pub product_id: String,
    /// Revenue in KRW.
    pub revenue_amount: i64,
    /// Kind.
    pub conversion_type: ConversionType,
    /// The producer's attribution window in hours (informational; the matcher's window is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution_window: Option<u32>,
    /// Referrer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_url: Option<String>,
}

/// A `compensation-events` record (produced by duplicate-click detection). All spec fields are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompensationEvent {
    /// Unique id (optional; the refund's idempotency key is derived from device, ad and window start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When the dedup window closed (its end).
    #[serde(with = "rfc3339::serde_ms")]
    pub timestamp: Timestamp,
    /// Advertiser to refund (the partitioning key).
    pub advertiser_id: String,
    /// Campaign whose spend is lowered.
    pub campaign_id: String,
    /// Ad.
    pub ad_id: String,
    /// Device.
    pub device_id: String,
    /// All clicks in the window, the billable first one included.
    pub duplicate_click_count: u32,
    /// Σ `actual_price` of the duplicates (every click but the first).
    pub refund_amount: i64,
    /// Every click's time, ascending; the first is the window start.
    #[serde(with = "rfc3339::serde_vec_ms")]
    pub original_click_timestamps: Vec<Timestamp>,
    /// Always `5_MINUTES`.
    pub detection_window: DetectionWindow,
    /// Always `DUPLICATE_CLICK_DETECTED`.
    pub reason: CompensationReason,
    /// Always `BALANCE_REFUND`.
    pub compensation_type: CompensationType,
}

impl CompensationEvent {
    /// The dedup window start (the first click).
    pub fn window_start(&self) -> Timestamp {
        self.original_click_timestamps.first().copied().unwrap_or(self.timestamp)
    }
    /// The refund's idempotency key `refund:{device_id}/{ad_id}/{window start ms}` (derived from device,
    /// ad and window start, as the spec asks), with `%` and `/` in the ids escaped as `%25` and `%2F` so
    /// that two different (device, ad) pairs never share a key. It lives in the `refund:` namespace, apart
    /// from every charge key (`charge:…`, see `crate::ops::charge_key`): no client `event_id` can block a
    /// refund.
    pub fn refund_key(&self) -> String {
        let mut k = String::with_capacity(self.device_id.len() + self.ad_id.len() + 30);
        k.push_str("refund:");
        escape_into(&mut k, &self.device_id);
        k.push('/');
        escape_into(&mut k, &self.ad_id);
        k.push('/');
        k.push_str(&self.window_start().to_string());
        k
    }

    /// A fingerprint of the compensation's content (see [`AdEvent::fingerprint`]).
    pub fn fingerprint(&self) -> u128 {
        let mut h = Fingerprint::new();
        h.i64(self.timestamp);
        h.str(&self.advertiser_id);
        h.str(&self.campaign_id);
        h.str(&self.ad_id);
        h.str(&self.device_id);
        h.i64(i64::from(self.duplicate_click_count));
        h.i64(self.refund_amount);
        for t in &self.original_click_timestamps {
            h.i64(*t);
        }
        h.finish()
    }
}

/// The 128-bit FNV-1a fingerprint of an id (e.g. an `event_id`), for state that must recognise ids
/// without holding their text.
pub fn id_fingerprint(id: &str) -> u128 {
    let mut h = Fingerprint::new();
    h.bytes(id.as_bytes());
    h.finish()
}

/// Appends `s` with `%` → `%25` and `/` → `%2F`, so `/` can separate parts of a derived key.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// FNV-1a, 128 bits, over length-prefixed fields (so `("ab","c")` and `("a","bc")` differ). Chosen for
/// being fixed forever (the value is stored) and dependency-free; it tells honest redeliveries from
/// reused ids, it is not a defence against crafted collisions.
struct Fingerprint(u128);

impl Fingerprint {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new() -> Self {
        Self(Self::OFFSET)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u128::from(x);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }
    fn str(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.bytes(&[0]),
            Some(s) => {
                self.bytes(&[1]);
                self.str(s);
            }
        }
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.bytes(&[0]),
            Some(v) => {
                self.bytes(&[1]);
                self.i64(v);
            }
        }
    }
    fn finish(self) -> u128 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::WireEnum;

    #[test]
    fn every_enum_round_trips_through_its_wire_name() {
        fn check<E: WireEnum + PartialEq + std::fmt::Debug>() {
            for v in E::ALL {
                assert_eq!(E::parse(v.as_str()), Some(*v));
            }
            assert_eq!(E::parse("nope"), None);
        }
        check::<CampaignEventType>();
        check::<Placement>();
        check::<CampaignStatus>();
        check::<ApprovalStatus>();
        check::<RtbImpact>();
        check::<StatusReason>();
        check::<AdEventType>();
        check::<ConversionType>();
        check::<DetectionWindow>();
        check::<CompensationReason>();
        check::<CompensationType>();
        assert_eq!(Placement::parse("home"), None, "wire names are case-sensitive");
        assert_eq!(DetectionWindow::FiveMinutes.as_str(), "5_MINUTES");
    }

    #[test]
    fn spec_compensation_example_round_trips_exactly() {
        let json = r#"{"timestamp":"2024-01-15T10:35:00Z","advertiser_id":"advertiser_50","campaign_id":"campaign_100","ad_id":"ad_001","device_id":"device_12345","duplicate_click_count":3,"refund_amount":2400,"original_click_timestamps":["2024-01-15T10:30:15Z","2024-01-15T10:30:18Z","2024-01-15T10:30:22Z"],"detection_window":"5_MINUTES","reason":"DUPLICATE_CLICK_DETECTED","compensation_type":"BALANCE_REFUND"}"#;
        let ev: CompensationEvent = serde_json::from_str(json).expect("spec example");
        assert_eq!(ev.duplicate_click_count, 3);
        assert_eq!(ev.original_click_timestamps[1] - ev.original_click_timestamps[0], 3_000);
        assert_eq!(ev.refund_key(), "refund:device_12345/ad_001/1705314615000");
        assert_eq!(serde_json::to_string(&ev).expect("encode"), json);
    }

    const FINGERPRINT_OF_SPEC_CLICK: u128 = 0xd11a_7cd6_12b7_dbb7_ff55_3278_5922_f52d;

    #[test]
    fn fingerprint_is_fnv1a_128() {
        // Published FNV-1a 128 test vectors: "" and "a".
        assert_eq!(Fingerprint::new().finish(), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        let mut h = Fingerprint::new();
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    }

    #[test]
    fn refund_keys_of_different_pairs_never_collide() {
        let json = r#"{"timestamp":"2024-01-15T10:35:00Z","advertiser_id":"a","campaign_id":"c","ad_id":"z","device_id":"x/y","duplicate_click_count":2,"refund_amount":1,"original_click_timestamps":["2024-01-15T10:30:15Z","2024-01-15T10:30:18Z"],"detection_window":"5_MINUTES","reason":"DUPLICATE_CLICK_DETECTED","compensation_type":"BALANCE_REFUND"}"#;
        let a: CompensationEvent = serde_json::from_str(json).expect("a");
        let mut b = a.clone();
        (b.device_id, b.ad_id) = ("x".into(), "y/z".into());
        assert_ne!(a.refund_key(), b.refund_key());
        assert_eq!(a.refund_key(), "refund:x%2Fy/z/1705314615000");
        assert_eq!(b.refund_key(), "refund:x/y%2Fz/1705314615000");
    }

    #[test]
    fn spec_campaign_and_ad_examples_round_trip() {
        let c = r#"{"event_type":"CAMPAIGN_CREATED","timestamp":"2024-01-15T10:30:00Z","campaign_id":"campaign_100","advertiser_id":"advertiser_50","product_id":"product_200","placement":"HOME","category":"전자제품/컴퓨터","bid_price":1500,"daily_budget":100000,"status":"ACTIVE","approval_status":"APPROVED","targeting":{"device_types":["MOBILE","DESKTOP"],"age_groups":["20-29","30-39"]},"effective_from":"2024-01-15T11:00:00Z","rtb_impact":"HIGH"}"#;
        let ev: CampaignEvent = serde_json::from_str(c).expect("campaign");
        assert_eq!(ev.effective_from, Some(1_705_316_400_000));
        assert_eq!(ev.partition_key(), "HOME:전자제품/컴퓨터");
        assert_eq!(serde_json::to_string(&ev).expect("encode"), c);
        let a = r#"{"event_type":"CLICK","timestamp":"2024-01-15T10:30:00Z","device_id":"device_12345","session_id":"session_67890","ad_id":"ad_001","campaign_id":"campaign_100","advertiser_id":"advertiser_50","product_id":"product_200","placement":"HOME","bid_price":1500,"actual_price":1200,"search_term":"노트북","category":"전자제품/컴퓨터","revenue_amount":50000,"order_id":"order_789"}"#;
        let ad: AdEvent = serde_json::from_str(a).expect("ad");
        assert_eq!(ad.price(), 1200);
        // Stored with ledger keys: the value must never change between versions.
        assert_eq!(ad.fingerprint(), FINGERPRINT_OF_SPEC_CLICK, "{:#x}", ad.fingerprint());
        let mut other = ad.clone();
        other.event_id = Some("id".into());
        assert_eq!(other.fingerprint(), ad.fingerprint(), "the event_id is not content");
        other.actual_price = Some(1201);
        assert_ne!(other.fingerprint(), ad.fingerprint());
        let (mut a1, mut a2) = (ad.clone(), ad.clone());
        (a1.device_id, a1.ad_id, a2.device_id, a2.ad_id) = ("ab".into(), "c".into(), "a".into(), "bc".into());
        assert_ne!(a1.fingerprint(), a2.fingerprint(), "fields are length-prefixed");
        let back: AdEvent = serde_json::from_str(&serde_json::to_string(&ad).expect("encode")).expect("again");
        assert_eq!(back, ad);
    }
}
