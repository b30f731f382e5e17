//! Reading and validating the replay input (REPLAY-SEMANTICS.md, "Validity").
//!
//! Every line of a topic file is one record (line numbers are 0-based); an invalid record becomes a
//! [`DeadLetter`] and takes no further part. Validation is written from the contract only.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::timefmt::{parse_utc, Ms, HOUR};

/// `campaign-events`.
pub const CAMPAIGN_TOPIC: &str = "campaign-events";
/// `ad-events`.
pub const AD_TOPIC: &str = "ad-events";
/// `conversion-events`.
pub const CONVERSION_TOPIC: &str = "conversion-events";

/// Largest accepted money amount, KRW.
pub const MAX_MONEY: i64 = 10_000_000;

/// A valid campaign event.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignEvent {
    pub line: usize,
    pub ts: Ms,
    pub campaign_id: String,
    pub advertiser_id: String,
    pub placement: String,
    pub category: String,
    pub bid: i64,
    pub daily_budget: i64,
    pub status: String,
    pub approval: String,
    pub effective_from: Ms,
}

/// Kind of an ad-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdKind {
    Impression,
    Click,
    Conversion,
}

/// A valid ad-event.
#[derive(Debug, Clone, PartialEq)]
pub struct AdEvent {
    pub line: usize,
    /// Its offset in its partition of `ad-events` (see [`ad_offsets`]).
    pub offset: usize,
    pub ts: Ms,
    pub kind: AdKind,
    pub device_id: String,
    pub ad_id: String,
    pub campaign_id: String,
    pub advertiser_id: String,
    pub category: String,
    pub actual_price: i64,
    pub product_id: Option<String>,
    pub revenue: i64,
    pub event_id: Option<String>,
    /// Everything the event says except its event_id (what tells a redelivery from a reused id).
    pub content: String,
}

/// A valid conversion event.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionEvent {
    pub line: usize,
    pub ts: Ms,
    pub device_id: String,
    pub order_id: String,
    pub product_id: String,
    pub revenue: i64,
    pub conversion_type: String,
}

/// One line of `advertisers.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Advertiser {
    pub advertiser_id: String,
    pub balance: i64,
    pub time_zone: String,
}

/// An invalid record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: &'static str,
    pub line: usize,
    pub reason: String,
    /// The line as read.
    pub payload: String,
}

/// The whole validated input.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub campaigns: Vec<CampaignEvent>,
    pub ads: Vec<AdEvent>,
    pub conversions: Vec<ConversionEvent>,
    pub advertisers: Vec<Advertiser>,
    pub dead: Vec<DeadLetter>,
    /// Records read per topic (valid + invalid).
    pub read: BTreeMap<&'static str, usize>,
}

impl Inputs {
    /// Dead letters per topic.
    pub fn dead_per_topic(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in &self.dead {
            *m.entry(d.topic.to_string()).or_insert(0) += 1;
        }
        m
    }
}

/// The four files' contents (advertisers may be empty).
#[derive(Debug, Clone, Default)]
pub struct RawInput {
    pub campaign: String,
    pub ad: String,
    pub conversion: String,
    pub advertisers: String,
}

impl RawInput {
    /// Reads `dir` (a missing `advertisers.jsonl` reads as empty). Bytes that are not UTF-8 (a malformed
    /// record cut inside a character) are replaced: such a line is invalid either way.
    pub fn read_dir(dir: &Path) -> std::io::Result<Self> {
        let read = |name: &str| -> std::io::Result<String> {
            Ok(String::from_utf8_lossy(&std::fs::read(dir.join(name))?).into_owned())
        };
        let advertisers = match read("advertisers.jsonl") {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            campaign: read("campaign-events.jsonl")?,
            ad: read("ad-events.jsonl")?,
            conversion: read("conversion-events.jsonl")?,
            advertisers,
        })
    }

    /// Writes the files into `dir`; `advertisers.jsonl` (optional in the contract) only when not empty.
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("campaign-events.jsonl"), &self.campaign)?;
        std::fs::write(dir.join("ad-events.jsonl"), &self.ad)?;
        std::fs::write(dir.join("conversion-events.jsonl"), &self.conversion)?;
        if self.advertisers.is_empty() {
            return Ok(());
        }
        std::fs::write(dir.join("advertisers.jsonl"), &self.advertisers)
    }
}

/// Validates `raw`; `now` is the processing time (timestamps more than 1 h after it are invalid).
pub fn validate(raw: &RawInput, now: Ms) -> Inputs {
    let mut inp = Inputs::default();
    for (line, text) in raw.campaign.lines().enumerate() {
        *inp.read.entry(CAMPAIGN_TOPIC).or_insert(0) += 1;
        match object(text).and_then(|o| campaign_event(&o, line, now)) {
            Ok(e) => inp.campaigns.push(e),
            Err(reason) => inp.dead.push(DeadLetter { topic: CAMPAIGN_TOPIC, line, reason, payload: text.into() }),
        }
    }
    let offsets = ad_offsets(&raw.ad);
    for (line, text) in raw.ad.lines().enumerate() {
        *inp.read.entry(AD_TOPIC).or_insert(0) += 1;
        match object(text).and_then(|o| ad_event(&o, line, now)) {
            Ok(e) => inp.ads.push(AdEvent { offset: offsets[line], ..e }),
            Err(reason) => inp.dead.push(DeadLetter { topic: AD_TOPIC, line, reason, payload: text.into() }),
        }
    }
    for (line, text) in raw.conversion.lines().enumerate() {
        *inp.read.entry(CONVERSION_TOPIC).or_insert(0) += 1;
        match object(text).and_then(|o| conversion_event(&o, line, now)) {
            Ok(e) => inp.conversions.push(e),
            Err(reason) => inp.dead.push(DeadLetter { topic: CONVERSION_TOPIC, line, reason, payload: text.into() }),
        }
    }
    for text in raw.advertisers.lines().filter(|l| !l.trim().is_empty()) {
        // The advertiser file is trusted set-up data; a bad row is a broken test input.
        let o = object(text).unwrap_or_else(|e| panic!("bad advertisers.jsonl row {text:?}: {e}"));
        let get = |f: &str| o.get(f).cloned().unwrap_or(Value::Null);
        inp.advertisers.push(Advertiser {
            advertiser_id: get("advertiser_id").as_str().unwrap_or_default().to_string(),
            balance: get("balance").as_i64().unwrap_or(0),
            time_zone: get("time_zone").as_str().unwrap_or("Asia/Seoul").to_string(),
        });
    }
    inp
}

/// Partitions of `ad-events`.
pub const AD_PARTITIONS: u32 = 8;

/// The offset of each line of `ad-events.jsonl` in its partition, as a replay produces the file: non-empty
/// lines in file order, each to the partition of its `device_id` (a string or an integer; Kafka's default
/// partitioner), partition 0 for a line without one.
pub fn ad_offsets(file: &str) -> Vec<usize> {
    let mut next = vec![0usize; AD_PARTITIONS as usize];
    file.lines()
        .map(|text| {
            if text.is_empty() {
                return 0;
            }
            let device = object(text).ok().and_then(|o| match o.get("device_id") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            });
            let p = device.map_or(0, |d| super::murmur2::partition(&d, AD_PARTITIONS)) as usize;
            next[p] += 1;
            next[p] - 1
        })
        .collect()
}

fn object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("malformed JSON: {e}")),
    }
}

fn field<'a>(o: &'a Map<String, Value>, f: &str) -> Option<&'a Value> {
    o.get(f).filter(|v| !v.is_null())
}

fn req_str(o: &Map<String, Value>, f: &str) -> Result<String, String> {
    match field(o, f) {
        None => Err(format!("missing field {f}")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("wrong type of {f}")),
    }
}

/// SPEC/issue 7: ids are non-empty, at most 128 bytes and printable (no control character).
fn check_id(s: String, f: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(format!("empty {f}"));
    }
    if s.len() > 128 {
        return Err(format!("{f} longer than 128 bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{f} holds a control character"));
    }
    Ok(s)
}

fn req_id(o: &Map<String, Value>, f: &str) -> Result<String, String> {
    check_id(req_str(o, f)?, f)
}

fn opt_id(o: &Map<String, Value>, f: &str) -> Result<Option<String>, String> {
    opt_str(o, f)?.map(|s| check_id(s, f)).transpose()
}

fn opt_str(o: &Map<String, Value>, f: &str) -> Result<Option<String>, String> {
    match field(o, f) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("wrong type of {f}")),
    }
}

fn money(v: &Value, f: &str) -> Result<i64, String> {
    let n = v.as_i64().ok_or_else(|| format!("wrong type of {f}"))?;
    if !(0..=MAX_MONEY).contains(&n) {
        return Err(format!("{f} out of range: {n}"));
    }
    Ok(n)
}

fn req_money(o: &Map<String, Value>, f: &str) -> Result<i64, String> {
    money(field(o, f).ok_or_else(|| format!("missing field {f}"))?, f)
}

fn opt_money(o: &Map<String, Value>, f: &str) -> Result<Option<i64>, String> {
    field(o, f).map(|v| money(v, f)).transpose()
}

fn req_enum(o: &Map<String, Value>, f: &str, allowed: &[&str]) -> Result<String, String> {
    let s = req_str(o, f)?;
    if allowed.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(format!("unknown {f} {s:?}"))
    }
}

fn time_value(s: &str, f: &str) -> Result<Ms, String> {
    parse_utc(s).ok_or_else(|| format!("{f} not RFC 3339 UTC: {s:?}"))
}

fn req_ts(o: &Map<String, Value>, now: Ms) -> Result<Ms, String> {
    let ts = time_value(&req_str(o, "timestamp")?, "timestamp")?;
    if ts > now + HOUR {
        return Err(format!("timestamp {ts} more than 1 h after processing time {now}"));
    }
    Ok(ts)
}

const PLACEMENTS: [&str; 4] = ["HOME", "CATEGORY", "PRODUCT_DETAIL", "SEARCH"];

fn campaign_event(o: &Map<String, Value>, line: usize, now: Ms) -> Result<CampaignEvent, String> {
    req_enum(
        o,
        "event_type",
        &["CAMPAIGN_CREATED", "CAMPAIGN_UPDATED", "CAMPAIGN_APPROVED", "CAMPAIGN_STATUS_CHANGED"],
    )?;
    let ts = req_ts(o, now)?;
    let effective_from = match opt_str(o, "effective_from")? {
        Some(s) => time_value(&s, "effective_from")?,
        None => ts,
    };
    Ok(CampaignEvent {
        line,
        ts,
        campaign_id: req_id(o, "campaign_id")?,
        advertiser_id: req_id(o, "advertiser_id")?,
        placement: req_enum(o, "placement", &PLACEMENTS)?,
        category: req_id(o, "category")?,
        bid: req_money(o, "bid_price")?,
        daily_budget: req_money(o, "daily_budget")?,
        status: req_enum(o, "status", &["PENDING", "ACTIVE", "PAUSED", "DELETED"])?,
        approval: req_enum(o, "approval_status", &["PENDING", "APPROVED", "REJECTED"])?,
        effective_from,
    })
}

fn ad_event(o: &Map<String, Value>, line: usize, now: Ms) -> Result<AdEvent, String> {
    let kind = match req_enum(o, "event_type", &["IMPRESSION", "CLICK", "CONVERSION"])?.as_str() {
        "IMPRESSION" => AdKind::Impression,
        "CLICK" => AdKind::Click,
        _ => AdKind::Conversion,
    };
    let ts = req_ts(o, now)?;
    let device_id = req_id(o, "device_id")?;
    let ad_id = req_id(o, "ad_id")?;
    let campaign_id = req_id(o, "campaign_id")?;
    let advertiser_id = req_id(o, "advertiser_id")?;
    req_enum(o, "placement", &PLACEMENTS)?;
    let category = req_id(o, "category")?;
    let session_id = opt_id(o, "session_id")?;
    let placement = req_str(o, "placement")?;
    // SPEC §3 field table: prices are required on a click only; a conversion needs revenue and order.
    let (bid, actual_price) = if kind == AdKind::Click {
        let bid = req_money(o, "bid_price")?;
        let actual_price = req_money(o, "actual_price")?;
        if actual_price > bid {
            return Err(format!("actual_price {actual_price} > bid_price {bid}"));
        }
        (Some(bid), actual_price)
    } else {
        (opt_money(o, "bid_price")?, 0)
    };
    let order_id = if kind == AdKind::Conversion {
        req_money(o, "revenue_amount")?;
        Some(req_id(o, "order_id")?)
    } else {
        opt_id(o, "order_id")?
    };
    let product_id = opt_id(o, "product_id")?;
    let revenue = opt_money(o, "revenue_amount")?.unwrap_or(0);
    let event_id = opt_id(o, "event_id")?;
    let search_term = opt_str(o, "search_term")?;
    let content = format!(
        "{kind:?}|{ts}|{device_id:?}|{session_id:?}|{ad_id:?}|{campaign_id:?}|{advertiser_id:?}|{product_id:?}|{placement}|\
         {category:?}|{bid:?}|{actual_price}|{search_term:?}|{revenue}|{order_id:?}"
    );
    Ok(AdEvent {
        line,
        offset: 0, // set by `validate` from the whole file
        ts,
        kind,
        device_id,
        ad_id,
        campaign_id,
        advertiser_id,
        category,
        actual_price,
        product_id,
        revenue: if kind == AdKind::Conversion { revenue } else { 0 },
        event_id,
        content,
    })
}

fn conversion_event(o: &Map<String, Value>, line: usize, now: Ms) -> Result<ConversionEvent, String> {
    let ts = req_ts(o, now)?;
    Ok(ConversionEvent {
        line,
        ts,
        device_id: req_id(o, "device_id")?,
        order_id: req_id(o, "order_id")?,
        product_id: req_id(o, "product_id")?,
        revenue: req_money(o, "revenue_amount")?,
        conversion_type: req_enum(o, "conversion_type", &["PURCHASE", "ADD_TO_CART", "SIGNUP"])?,
    })
}
