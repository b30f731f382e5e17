//! Validating decoders: wire bytes → typed event, or an [`Invalid`] saying exactly why not.
//!
//! Decoding runs in two steps. The bytes are first read into a *raw* shape in which every field is
//! optional and every string borrows from the input where it can (no allocation unless the JSON escapes
//! it); then each field is checked and converted. That gives a typed reason per failure (which field is
//! missing, which enum value is unknown) without matching on serde's error messages, and costs about the
//! same as decoding the typed event directly.

use std::borrow::Cow;
use std::fmt;

use rtb_stream::{SourceCoord, Timestamp};
use serde::{Deserialize, Deserializer};

use super::events::*;
use super::rfc3339::{self, TimestampError};
use super::WireEnum;

/// Why an input event was rejected. Becomes the `reason` of a dead letter (its `Display`), and
/// [`Invalid::code`] gives a stable label for counting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// Not JSON, or not a JSON object.
    MalformedJson {
        /// The parser's message.
        detail: String,
    },
    /// A field has the wrong JSON type (e.g. a string price) or appears twice.
    BadField {
        /// The parser's message (names the field's type problem and position).
        detail: String,
    },
    /// A required field is absent or null.
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// An enumeration field holds a value outside its wire names.
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// A time field is not an RFC 3339 UTC timestamp.
    BadTimestamp {
        /// The field.
        field: &'static str,
        /// What it held.
        value: String,
        /// Why it was rejected.
        reason: TimestampError,
    },
    /// A money field is negative.
    NegativeAmount {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A money field is above the configured maximum.
    AbsurdAmount {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
        /// The maximum allowed.
        max: i64,
    },
    /// A click's `actual_price` exceeds its `bid_price` (a CPC never exceeds the bid).
    ActualAboveBid {
        /// `actual_price`.
        actual: i64,
        /// `bid_price`.
        bid: i64,
    },
    /// The event time is further in the future than allowed, relative to the processing time.
    FutureTimestamp {
        /// Event time (ms).
        timestamp: Timestamp,
        /// Processing time (ms).
        now: i64,
        /// Allowed lead (ms).
        max_ahead: i64,
    },
    /// An id field is longer than [`ValidationConfig::max_id_bytes`].
    IdTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// An id field holds a control character (ids are printable text).
    IdNotPrintable {
        /// The field.
        field: &'static str,
        /// Byte offset of the first control character.
        at: usize,
    },
    /// A field breaks a rule of its own (empty id, inconsistent counts, ...).
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The rule broken.
        reason: String,
    },
}

impl Invalid {
    /// A stable upper-case label of the reason (for counters and reports).
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::MalformedJson { .. } => "MALFORMED_JSON",
            Invalid::BadField { .. } => "BAD_FIELD",
            Invalid::MissingField { .. } => "MISSING_FIELD",
            Invalid::UnknownEnum { .. } => "UNKNOWN_ENUM",
            Invalid::BadTimestamp { .. } => "BAD_TIMESTAMP",
            Invalid::NegativeAmount { .. } => "NEGATIVE_AMOUNT",
            Invalid::AbsurdAmount { .. } => "ABSURD_AMOUNT",
            Invalid::ActualAboveBid { .. } => "ACTUAL_ABOVE_BID",
            Invalid::FutureTimestamp { .. } => "FUTURE_TIMESTAMP",
            Invalid::IdTooLong { .. } => "ID_TOO_LONG",
            Invalid::IdNotPrintable { .. } => "ID_NOT_PRINTABLE",
            Invalid::InvalidValue { .. } => "INVALID_VALUE",
        }
    }

    /// The dead letter for this rejection: `stage` is the decoder or operator, `payload` the raw bytes.
    pub fn into_dead_letter(self, source: SourceCoord, stage: &str, payload: &[u8]) -> rtb_stream::DeadLetter {
        rtb_stream::DeadLetter {
            source,
            stage: stage.to_string(),
            reason: self.to_string(),
            payload: String::from_utf8_lossy(payload).into_owned(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.code())?;
        match self {
            Invalid::MalformedJson { detail } | Invalid::BadField { detail } => f.write_str(detail),
            Invalid::MissingField { field } => write!(f, "required field `{field}` is missing"),
            Invalid::UnknownEnum { field, value } => write!(f, "`{field}` has unknown value `{value}`"),
            Invalid::BadTimestamp { field, value, reason } => write!(f, "`{field}` = `{value}`: {reason}"),
            Invalid::NegativeAmount { field, value } => write!(f, "`{field}` = {value} is negative"),
            Invalid::AbsurdAmount { field, value, max } => write!(f, "`{field}` = {value} exceeds {max}"),
            Invalid::ActualAboveBid { actual, bid } => {
                write!(f, "actual_price {actual} exceeds bid_price {bid}")
            }
            Invalid::FutureTimestamp { timestamp, now, max_ahead } => write!(
                f,
                "timestamp {} is {} ms ahead of processing time {} (max {max_ahead} ms)",
                rfc3339::format(*timestamp).unwrap_or_else(|_| timestamp.to_string()),
                timestamp - now,
                rfc3339::format(*now).unwrap_or_else(|_| now.to_string()),
            ),
            Invalid::IdTooLong { field, len, max } => write!(f, "`{field}` is {len} bytes long (max {max})"),
            Invalid::IdNotPrintable { field, at } => {
                write!(f, "`{field}` holds a control character at byte {at}")
            }
            Invalid::InvalidValue { field, reason } => write!(f, "`{field}`: {reason}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Limits applied by the validating decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ValidationConfig {
    /// Largest acceptable `bid_price` / `actual_price` in KRW (default 10 000 000).
    pub max_price: i64,
    /// Largest acceptable `daily_budget`, `revenue_amount`, `refund_amount` in KRW (default 10 000 000).
    pub max_amount: i64,
    /// How far an event time may lie ahead of the processing time (default 1 h).
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub max_future: std::time::Duration,
    /// Longest acceptable id in bytes (default 128): `event_id`, `device_id`, `session_id`, `ad_id`,
    /// `campaign_id`, `advertiser_id`, `product_id`, `order_id`, and `category` (a cache key part). Ids
    /// must also be printable (no control characters); both rules keep client input from bloating or
    /// corrupting the keys the stores derive from it.
    pub max_id_bytes: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { max_price: 10_000_000, max_amount: 10_000_000, max_future: std::time::Duration::from_secs(3_600), max_id_bytes: 128 }
    }
}

/// Decodes and validates the four event types under one [`ValidationConfig`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Validator {
    /// The limits.
    pub config: ValidationConfig,
}

/// A string field that borrows from the input unless JSON escapes forced a copy.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

type OStr<'a> = Option<Str<'a>>;

#[derive(Deserialize)]
struct RawCampaign<'a> {
    #[serde(borrow)]
    event_id: OStr<'a>,
    #[serde(borrow)]
    event_type: OStr<'a>,
    #[serde(borrow)]
    timestamp: OStr<'a>,
    #[serde(borrow)]
    campaign_id: OStr<'a>,
    #[serde(borrow)]
    advertiser_id: OStr<'a>,
    #[serde(borrow)]
    product_id: OStr<'a>,
    #[serde(borrow)]
    placement: OStr<'a>,
    #[serde(borrow)]
    category: OStr<'a>,
    bid_price: Option<i64>,
    daily_budget: Option<i64>,
    #[serde(borrow)]
    status: OStr<'a>,
    #[serde(borrow)]
    approval_status: OStr<'a>,
    targeting: Option<Targeting>,
    #[serde(borrow)]
    effective_from: OStr<'a>,
    #[serde(borrow)]
    rtb_impact: OStr<'a>,
    #[serde(borrow)]
    status_reason: OStr<'a>,
}

#[derive(Deserialize)]
struct RawAd<'a> {
    #[serde(borrow)]
    event_id: OStr<'a>,
    #[serde(borrow)]
    event_type: OStr<'a>,
    #[serde(borrow)]
    timestamp: OStr<'a>,
    #[serde(borrow)]
    device_id: OStr<'a>,
    #[serde(borrow)]
    session_id: OStr<'a>,
    #[serde(borrow)]
    ad_id: OStr<'a>,
    #[serde(borrow)]
    campaign_id: OStr<'a>,
    #[serde(borrow)]
    advertiser_id: OStr<'a>,
    #[serde(borrow)]
    product_id: OStr<'a>,
    #[serde(borrow)]
    placement: OStr<'a>,
    #[serde(borrow)]
    category: OStr<'a>,
    bid_price: Option<i64>,
    actual_price: Option<i64>,
    #[serde(borrow)]
    search_term: OStr<'a>,
    revenue_amount: Option<i64>,
    #[serde(borrow)]
    order_id: OStr<'a>,
}

#[derive(Deserialize)]
struct RawConversion<'a> {
    #[serde(borrow)]
    event_id: OStr<'a>,
    #[serde(borrow)]
    timestamp: OStr<'a>,
    #[serde(borrow)]
    device_id: OStr<'a>,
    #[serde(borrow)]
    session_id: OStr<'a>,
    #[serde(borrow)]
    order_id: OStr<'a>,
    #[serde(borrow)]
    product_id: OStr<'a>,
    revenue_amount: Option<i64>,
    #[serde(borrow)]
    conversion_type: OStr<'a>,
    attribution_window: Option<i64>,
    #[serde(borrow)]
    referrer_url: OStr<'a>,
}

#[derive(Deserialize)]
struct RawCompensation<'a> {
    #[serde(borrow)]
    event_id: OStr<'a>,
    #[serde(borrow)]
    timestamp: OStr<'a>,
    #[serde(borrow)]
    advertiser_id: OStr<'a>,
    #[serde(borrow)]
    campaign_id: OStr<'a>,
    #[serde(borrow)]
    ad_id: OStr<'a>,
    #[serde(borrow)]
    device_id: OStr<'a>,
    duplicate_click_count: Option<i64>,
    refund_amount: Option<i64>,
    #[serde(borrow)]
    original_click_timestamps: Option<Vec<Str<'a>>>,
    #[serde(borrow)]
    detection_window: OStr<'a>,
    #[serde(borrow)]
    reason: OStr<'a>,
    #[serde(borrow)]
    compensation_type: OStr<'a>,
}

fn parse_raw<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Invalid> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        _ => return Err(Invalid::MalformedJson { detail: "not a JSON object".to_string() }),
    }
    // One UTF-8 check for the whole line; `from_str` then skips the per-string checks of `from_slice`.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Invalid::MalformedJson { detail: format!("not UTF-8: {e}") })?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Invalid::BadField { detail: e.to_string() },
        _ => Invalid::MalformedJson { detail: e.to_string() },
    })
}

fn required<'a>(v: OStr<'a>, field: &'static str) -> Result<Cow<'a, str>, Invalid> {
    match v {
        Some(Str(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(Invalid::InvalidValue { field, reason: "must not be empty".to_string() }),
        None => Err(Invalid::MissingField { field }),
    }
}

fn owned(v: OStr<'_>) -> Option<String> {
    v.map(|Str(s)| s.into_owned())
}

/// An id is at most `max` bytes and holds no control character (checked on bytes: every byte of a
/// multi-byte UTF-8 character is >= 0x80, so only ASCII controls and the C1 range need a look).
fn check_id(s: &str, field: &'static str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::IdTooLong { field, len: s.len(), max });
    }
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        // ASCII controls (and DEL); C1 controls U+0080..U+009F are encoded as 0xC2 0x80..=0x9F.
        if c < 0x20 || c == 0x7f || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n))) {
            return Err(Invalid::IdNotPrintable { field, at: i });
        }
    }
    Ok(())
}

fn enum_value<E: WireEnum>(v: &str, field: &'static str) -> Result<E, Invalid> {
    E::parse(v).ok_or_else(|| Invalid::UnknownEnum { field, value: v.to_string() })
}

fn required_enum<E: WireEnum>(v: OStr<'_>, field: &'static str) -> Result<E, Invalid> {
    match v {
        Some(Str(s)) => enum_value(&s, field),
        None => Err(Invalid::MissingField { field }),
    }
}

fn optional_enum<E: WireEnum>(v: OStr<'_>, field: &'static str) -> Result<Option<E>, Invalid> {
    v.map(|Str(s)| enum_value(&s, field)).transpose()
}

fn time_value(s: &str, field: &'static str) -> Result<Timestamp, Invalid> {
    rfc3339::parse(s).map_err(|reason| Invalid::BadTimestamp { field, value: s.to_string(), reason })
}

fn required_amount(v: Option<i64>, field: &'static str, max: i64) -> Result<i64, Invalid> {
    amount(v, field, max)?.ok_or(Invalid::MissingField { field })
}

fn amount(v: Option<i64>, field: &'static str, max: i64) -> Result<Option<i64>, Invalid> {
    match v {
        Some(x) if x < 0 => Err(Invalid::NegativeAmount { field, value: x }),
        Some(x) if x > max => Err(Invalid::AbsurdAmount { field, value: x, max }),
        other => Ok(other),
    }
}

impl Validator {
    /// A validator with the given limits.
    pub fn new(config: ValidationConfig) -> Self {
        Self { config }
    }

    /// A required id: present, not empty, bounded and printable.
    fn id(&self, v: OStr<'_>, field: &'static str) -> Result<String, Invalid> {
        let s = required(v, field)?;
        check_id(&s, field, self.config.max_id_bytes)?;
        Ok(s.into_owned())
    }

    /// An optional id: when present, not empty, bounded and printable.
    fn opt_id(&self, v: OStr<'_>, field: &'static str) -> Result<Option<String>, Invalid> {
        v.map(|v| self.id(Some(v), field)).transpose()
    }

    fn event_time(&self, v: OStr<'_>, now: Option<i64>) -> Result<Timestamp, Invalid> {
        let ts = time_value(&required(v, "timestamp")?, "timestamp")?;
        if let Some(now) = now {
            let max_future = rtb_stream::span::ms(self.config.max_future);
            if ts > now.saturating_add(max_future) {
                return Err(Invalid::FutureTimestamp { timestamp: ts, now, max_ahead: max_future });
            }
        }
        Ok(ts)
    }

    /// Decodes a `campaign-events` payload. `now` is the processing time for the future-timestamp check
    /// (`None` skips it); `coord` only feeds the trace log.
    pub fn campaign_event(&self, bytes: &[u8], coord: &SourceCoord, now: Option<i64>) -> Result<CampaignEvent, Invalid> {
        self.campaign_inner(bytes, now).inspect_err(|e| trace_reject(coord, e))
    }

    fn campaign_inner(&self, bytes: &[u8], now: Option<i64>) -> Result<CampaignEvent, Invalid> {
        let r: RawCampaign<'_> = parse_raw(bytes)?;
        let event_type: CampaignEventType = required_enum(r.event_type, "event_type")?;
        let timestamp = self.event_time(r.timestamp, now)?;
        let campaign_id = self.id(r.campaign_id, "campaign_id")?;
        let placement = required_enum(r.placement, "placement")?;
        let category = self.id(r.category, "category")?;
        let advertiser_id = self.id(r.advertiser_id, "advertiser_id")?;
        let bid_price = required_amount(r.bid_price, "bid_price", self.config.max_price)?;
        let daily_budget = required_amount(r.daily_budget, "daily_budget", self.config.max_amount)?;
        let status = required_enum(r.status, "status")?;
        let approval_status = required_enum(r.approval_status, "approval_status")?;
        Ok(CampaignEvent {
            event_id: self.opt_id(r.event_id, "event_id")?,
            event_type,
            timestamp,
            campaign_id,
            advertiser_id,
            product_id: self.opt_id(r.product_id, "product_id")?,
            placement,
            category,
            bid_price,
            daily_budget,
            status,
            approval_status,
            targeting: r.targeting,
            effective_from: r.effective_from.map(|Str(s)| time_value(&s, "effective_from")).transpose()?,
            rtb_impact: optional_enum(r.rtb_impact, "rtb_impact")?,
            status_reason: optional_enum(r.status_reason, "status_reason")?,
        })
    }

    /// Decodes an `ad-events` payload (see [`Self::campaign_event`] for `now` and `coord`).
    pub fn ad_event(&self, bytes: &[u8], coord: &SourceCoord, now: Option<i64>) -> Result<AdEvent, Invalid> {
        self.ad_inner(bytes, now).inspect_err(|e| trace_reject(coord, e))
    }

    fn ad_inner(&self, bytes: &[u8], now: Option<i64>) -> Result<AdEvent, Invalid> {
        let r: RawAd<'_> = parse_raw(bytes)?;
        let event_type: AdEventType = required_enum(r.event_type, "event_type")?;
        let timestamp = self.event_time(r.timestamp, now)?;
        let device_id = self.id(r.device_id, "device_id")?;
        let ad_id = self.id(r.ad_id, "ad_id")?;
        let campaign_id = self.id(r.campaign_id, "campaign_id")?;
        let advertiser_id = self.id(r.advertiser_id, "advertiser_id")?;
        let product_id = self.opt_id(r.product_id, "product_id")?;
        let placement = required_enum(r.placement, "placement")?;
        let category = self.id(r.category, "category")?;
        // SPEC §3 field table: what an event must carry depends on its type.
        let max_price = self.config.max_price;
        let max_amount = self.config.max_amount;
        let (bid_price, actual_price, revenue_amount, order_id) = match event_type {
            AdEventType::Click => {
                let bid = required_amount(r.bid_price, "bid_price", max_price)?;
                let actual = required_amount(r.actual_price, "actual_price", max_price)?;
                if actual > bid {
                    return Err(Invalid::ActualAboveBid { actual, bid });
                }
                let revenue = amount(r.revenue_amount, "revenue_amount", max_amount)?;
                (Some(bid), Some(actual), revenue, self.opt_id(r.order_id, "order_id")?)
            }
            AdEventType::Impression => (
                amount(r.bid_price, "bid_price", max_price)?,
                None, // optional and ignored: only a click is charged
                amount(r.revenue_amount, "revenue_amount", max_amount)?,
                self.opt_id(r.order_id, "order_id")?,
            ),
            AdEventType::Conversion => (
                amount(r.bid_price, "bid_price", max_price)?,
                None, // optional and ignored: only a click is charged
                Some(required_amount(r.revenue_amount, "revenue_amount", max_amount)?),
                Some(self.id(r.order_id, "order_id")?),
            ),
        };
        Ok(AdEvent {
            event_id: self.opt_id(r.event_id, "event_id")?,
            event_type,
            timestamp,
            device_id,
            session_id: self.opt_id(r.session_id, "session_id")?,
            ad_id,
            campaign_id,
            advertiser_id,
            product_id,
            placement,
            category,
            bid_price,
            actual_price,
            search_term: owned(r.search_term),
            revenue_amount,
            order_id,
        })
    }

    /// Decodes a `conversion-events` payload (see [`Self::campaign_event`] for `now` and `coord`).
    pub fn conversion_event(&self, bytes: &[u8], coord: &SourceCoord, now: Option<i64>) -> Result<ConversionEvent, Invalid> {
        self.conversion_inner(bytes, now).inspect_err(|e| trace_reject(coord, e))
    }

    fn conversion_inner(&self, bytes: &[u8], now: Option<i64>) -> Result<ConversionEvent, Invalid> {
        let r: RawConversion<'_> = parse_raw(bytes)?;
        let timestamp = self.event_time(r.timestamp, now)?;
        let attribution_window = match r.attribution_window {
            None => None,
            Some(h) => Some(u32::try_from(h).map_err(|_| Invalid::InvalidValue {
                field: "attribution_window",
                reason: format!("{h} is not a number of hours >= 0"),
            })?),
        };
        Ok(ConversionEvent {
            event_id: self.opt_id(r.event_id, "event_id")?,
            timestamp,
            device_id: self.id(r.device_id, "device_id")?,
            session_id: self.opt_id(r.session_id, "session_id")?,
            order_id: self.id(r.order_id, "order_id")?,
            product_id: self.id(r.product_id, "product_id")?,
            revenue_amount: required_amount(r.revenue_amount, "revenue_amount", self.config.max_amount)?,
            conversion_type: required_enum(r.conversion_type, "conversion_type")?,
            attribution_window,
            referrer_url: owned(r.referrer_url),
        })
    }

    /// Decodes a `compensation-events` payload (see [`Self::campaign_event`] for `now` and `coord`).
    /// Beyond the field checks: at least two click times in ascending order, and `duplicate_click_count`
    /// equal to their number.
    pub fn compensation_event(&self, bytes: &[u8], coord: &SourceCoord, now: Option<i64>) -> Result<CompensationEvent, Invalid> {
        self.compensation_inner(bytes, now).inspect_err(|e| trace_reject(coord, e))
    }

    fn compensation_inner(&self, bytes: &[u8], now: Option<i64>) -> Result<CompensationEvent, Invalid> {
        let r: RawCompensation<'_> = parse_raw(bytes)?;
        let timestamp = self.event_time(r.timestamp, now)?;
        let advertiser_id = self.id(r.advertiser_id, "advertiser_id")?;
        let campaign_id = self.id(r.campaign_id, "campaign_id")?;
        let ad_id = self.id(r.ad_id, "ad_id")?;
        let device_id = self.id(r.device_id, "device_id")?;
        let count = r.duplicate_click_count.ok_or(Invalid::MissingField { field: "duplicate_click_count" })?;
        let refund_amount = required_amount(r.refund_amount, "refund_amount", self.config.max_amount)?;
        let times = r.original_click_timestamps.ok_or(Invalid::MissingField { field: "original_click_timestamps" })?;
        let times = times
            .iter()
            .map(|Str(s)| time_value(s, "original_click_timestamps"))
            .collect::<Result<Vec<_>, _>>()?;
        let bad = |field, reason: String| Invalid::InvalidValue { field, reason };
        if times.len() < 2 {
            return Err(bad("original_click_timestamps", format!("{} click(s): a duplicate needs at least 2", times.len())));
        }
        if times.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad("original_click_timestamps", "not in ascending order".to_string()));
        }
        if u64::try_from(count).ok() != Some(times.len() as u64) {
            return Err(bad("duplicate_click_count", format!("{count} but {} click timestamps", times.len())));
        }
        Ok(CompensationEvent {
            event_id: self.opt_id(r.event_id, "event_id")?,
            timestamp,
            advertiser_id,
            campaign_id,
            ad_id,
            device_id,
            duplicate_click_count: times.len() as u32,
            refund_amount,
            original_click_timestamps: times,
            detection_window: required_enum(r.detection_window, "detection_window")?,
            reason: required_enum(r.reason, "reason")?,
            compensation_type: required_enum(r.compensation_type, "compensation_type")?,
        })
    }
}

fn trace_reject(coord: &SourceCoord, e: &Invalid) {
    tracing::debug!(source = %coord, code = e.code(), reason = %e, "rejected input event");
}

/// [`Validator::campaign_event`] with the default limits; `now` is the processing time.
pub fn decode_campaign_event(bytes: &[u8], coord: &SourceCoord, now: i64) -> Result<CampaignEvent, Invalid> {
    Validator::default().campaign_event(bytes, coord, Some(now))
}

/// [`Validator::ad_event`] with the default limits; `now` is the processing time.
pub fn decode_ad_event(bytes: &[u8], coord: &SourceCoord, now: i64) -> Result<AdEvent, Invalid> {
    Validator::default().ad_event(bytes, coord, Some(now))
}

/// [`Validator::conversion_event`] with the default limits; `now` is the processing time.
pub fn decode_conversion_event(bytes: &[u8], coord: &SourceCoord, now: i64) -> Result<ConversionEvent, Invalid> {
    Validator::default().conversion_event(bytes, coord, Some(now))
}

/// [`Validator::compensation_event`] with the default limits; `now` is the processing time.
pub fn decode_compensation_event(bytes: &[u8], coord: &SourceCoord, now: i64) -> Result<CompensationEvent, Invalid> {
    Validator::default().compensation_event(bytes, coord, Some(now))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
