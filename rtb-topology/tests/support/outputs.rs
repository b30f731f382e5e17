//! The replay outputs as typed rows, produced by the model or loaded from the files `rtb replay` writes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::timefmt::{parse_utc, Ms};

/// One `metrics.jsonl` row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub campaign_id: String,
    pub window_start: Ms,
    pub window_end: Ms,
    pub impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub spend: i64,
    pub revenue: i64,
    pub ctr: f64,
    pub cvr: f64,
}

/// One `conversions.jsonl` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionRow {
    pub order_id: String,
    pub device_id: String,
    pub product_id: String,
    pub campaign_id: String,
    pub ad_id: String,
    pub advertiser_id: String,
    pub click_timestamp: Ms,
    pub conversion_timestamp: Ms,
    pub revenue_amount: i64,
    pub conversion_type: String,
}

/// One `compensations.jsonl` row (SPEC compensation schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompensationRow {
    pub timestamp: Ms,
    pub advertiser_id: String,
    pub campaign_id: String,
    pub ad_id: String,
    pub device_id: String,
    pub duplicate_click_count: i64,
    pub refund_amount: i64,
    pub original_click_timestamps: Vec<Ms>,
    pub detection_window: String,
    pub reason: String,
    pub compensation_type: String,
}

/// One `ledger.jsonl` row, without `balance_after` and `timestamp` (never compared).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LedgerRow {
    pub idempotency_key: String,
    pub advertiser_id: String,
    pub campaign_id: String,
    pub entry_type: String,
    pub amount: i64,
}

/// One `alerts.jsonl` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub campaign_id: String,
    pub advertiser_id: String,
    pub day: String,
    pub level: i64,
    pub spend: i64,
    pub daily_budget: i64,
    pub timestamp: Option<Ms>,
}

/// One `rankings.jsonl` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RankingRow {
    pub placement: String,
    pub category: String,
    pub rank: i64,
    pub campaign_id: String,
    pub score: f64,
    pub cpc: i64,
}

/// One `dead_letters.jsonl` row (partition/offset/stage are not compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRow {
    pub topic: String,
    pub reason: String,
    /// The record as read (a JSON string payload as is, any other JSON value serialised).
    pub payload: String,
}

/// Every output of one replay (or of the model).
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub metrics: Vec<MetricRow>,
    pub conversions: Vec<ConversionRow>,
    /// Unattributed conversions (model: always; replay: when summary.json says).
    pub unattributed: Option<i64>,
    pub compensations: Vec<CompensationRow>,
    pub ledger: Vec<LedgerRow>,
    pub balances: BTreeMap<String, i64>,
    pub alerts: Vec<AlertRow>,
    pub rankings: Vec<RankingRow>,
    pub dead_letters: Vec<DeadRow>,
    /// campaign_id → paused_reason (replay: campaign_status.jsonl; model: budget-paused on T_end's day).
    pub paused_reason: BTreeMap<String, Option<String>>,
    /// summary.json, as written (replay only).
    pub summary: Option<Value>,
    /// Output timestamps not in the contract's form `2025-03-10T00:00:00.000Z` (file, value), first few.
    pub format_issues: Vec<String>,
    /// How many output timestamps are not in that form.
    pub format_issue_count: usize,
}

impl Outputs {
    /// Dead letters per topic.
    pub fn dead_per_topic(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in &self.dead_letters {
            *m.entry(d.topic.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Sum of every integer in summary.json whose key contains `needle` (case-insensitive), if any.
    pub fn summary_count(&self, needle: &str) -> Option<i64> {
        fn walk(v: &Value, needle: &str, found: &mut Option<i64>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        if k.to_ascii_lowercase().contains(needle) {
                            if let Some(n) = v.as_i64() {
                                *found = Some(found.unwrap_or(0) + n);
                                continue;
                            }
                        }
                        walk(v, needle, found);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, needle, found)),
                _ => {}
            }
        }
        let mut found = None;
        walk(self.summary.as_ref()?, &needle.to_ascii_lowercase(), &mut found);
        found
    }

    /// Late events reported by summary.json: the sum of every integer under keys named `late`, `late_*` or
    /// `*_late*` (not `latest*` nor `*lateness*`; a per-topic object under such a key counts whole), if any.
    pub fn summary_late(&self) -> Option<i64> {
        fn sum_all(v: &Value) -> i64 {
            match v {
                Value::Object(m) => m.values().map(sum_all).sum(),
                Value::Array(a) => a.iter().map(sum_all).sum(),
                v => v.as_i64().unwrap_or(0),
            }
        }
        fn walk(v: &Value, found: &mut Option<i64>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        let k = k.to_ascii_lowercase();
                        let named = (k == "late" || k.starts_with("late_") || k.contains("_late"))
                            && !k.contains("latest")
                            && !k.contains("lateness");
                        if named && (v.is_i64() || v.is_object() || v.is_array()) {
                            *found = Some(found.unwrap_or(0) + sum_all(v));
                        } else {
                            walk(v, found);
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut found = None;
        walk(self.summary.as_ref()?, &mut found);
        found
    }

    /// Loads the files `rtb replay` wrote into `dir`.
    pub fn load_replay(dir: &Path) -> Result<Self, String> {
        let mut o = Outputs {
            metrics: rows(dir, "metrics.jsonl", metric)?,
            conversions: rows(dir, "conversions.jsonl", conversion)?,
            compensations: rows(dir, "compensations.jsonl", compensation)?,
            ledger: rows(dir, "ledger.jsonl", ledger)?,
            alerts: rows(dir, "alerts.jsonl", alert)?,
            rankings: rows(dir, "rankings.jsonl", ranking)?,
            dead_letters: rows(dir, "dead_letters.jsonl", dead)?,
            ..Default::default()
        };
        for (a, b) in rows(dir, "balances.jsonl", |v| Ok((s(v, "advertiser_id")?, i(v, "balance")?)))? {
            if o.balances.insert(a.clone(), b).is_some() {
                return Err(format!("balances.jsonl: advertiser {a} twice"));
            }
        }
        let status = rows(dir, "campaign_status.jsonl", |v| {
            let reason = match v.get("paused_reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(r)) => Some(r.clone()),
                Some(x) => return Err(format!("paused_reason not a string: {x}")),
            };
            Ok((s(v, "campaign_id")?, reason))
        })?;
        o.paused_reason = status.into_iter().collect();
        let summary = std::fs::read_to_string(dir.join("summary.json")).map_err(|e| format!("summary.json: {e}"))?;
        o.summary = Some(serde_json::from_str(&summary).map_err(|e| format!("summary.json: {e}"))?);
        o.unattributed = o.summary_count("unattributed");
        for file in ["metrics.jsonl", "conversions.jsonl", "compensations.jsonl", "ledger.jsonl", "alerts.jsonl"] {
            let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
                for ts in timestamp_fields(&v) {
                    if !contract_timestamp(ts) {
                        o.format_issue_count += 1;
                        if o.format_issues.len() < 5 {
                            o.format_issues.push(format!("{file}: {ts:?}"));
                        }
                    }
                }
            }
        }
        Ok(o)
    }
}

/// The timestamp values of an output row.
fn timestamp_fields(v: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    for f in ["window_start", "window_end", "click_timestamp", "conversion_timestamp", "timestamp"] {
        out.extend(v.get(f).and_then(Value::as_str));
    }
    if let Some(a) = v.get("original_click_timestamps").and_then(Value::as_array) {
        out.extend(a.iter().filter_map(Value::as_str));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as REPLAY-SEMANTICS.md writes output timestamps.
pub fn contract_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && parse_utc(s).is_some()
}

/// The rows of `dir/ledger.jsonl` as a set: what two runs charged and refunded, whatever the order their
/// advertisers' entries interleaved in (which `balance_after` depends on).
pub fn ledger_rows(dir: &Path) -> std::collections::BTreeSet<LedgerRow> {
    rows(dir, "ledger.jsonl", ledger).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).into_iter().collect()
}

fn rows<T>(dir: &Path, file: &str, f: impl Fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{file}:{}: {e}", n + 1))?;
        out.push(f(&v).map_err(|e| format!("{file}:{}: {e} in {line}", n + 1))?);
    }
    Ok(out)
}

fn s(v: &Value, f: &str) -> Result<String, String> {
    v.get(f).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("no string {f}"))
}

fn i(v: &Value, f: &str) -> Result<i64, String> {
    v.get(f).and_then(Value::as_i64).ok_or_else(|| format!("no integer {f}"))
}

fn x(v: &Value, f: &str) -> Result<f64, String> {
    v.get(f).and_then(Value::as_f64).ok_or_else(|| format!("no number {f}"))
}

fn t(v: &Value, f: &str) -> Result<Ms, String> {
    let text = s(v, f)?;
    parse_utc(&text).ok_or_else(|| format!("{f} not RFC 3339 UTC: {text}"))
}

fn metric(v: &Value) -> Result<MetricRow, String> {
    Ok(MetricRow {
        campaign_id: s(v, "campaign_id")?,
        window_start: t(v, "window_start")?,
        window_end: t(v, "window_end")?,
        impressions: i(v, "impressions")?,
        clicks: i(v, "clicks")?,
        conversions: i(v, "conversions")?,
        spend: i(v, "spend")?,
        revenue: i(v, "revenue")?,
        ctr: x(v, "ctr")?,
        cvr: x(v, "cvr")?,
    })
}

fn conversion(v: &Value) -> Result<ConversionRow, String> {
    Ok(ConversionRow {
        order_id: s(v, "order_id")?,
        device_id: s(v, "device_id")?,
        product_id: s(v, "product_id")?,
        campaign_id: s(v, "campaign_id")?,
        ad_id: s(v, "ad_id")?,
        advertiser_id: s(v, "advertiser_id")?,
        click_timestamp: t(v, "click_timestamp")?,
        conversion_timestamp: t(v, "conversion_timestamp")?,
        revenue_amount: i(v, "revenue_amount")?,
        conversion_type: s(v, "conversion_type")?,
    })
}

fn compensation(v: &Value) -> Result<CompensationRow, String> {
    let clicks = v
        .get("original_click_timestamps")
        .and_then(Value::as_array)
        .ok_or("no array original_click_timestamps")?
        .iter()
        .map(|c| c.as_str().and_then(parse_utc).ok_or_else(|| format!("bad click timestamp {c}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CompensationRow {
        timestamp: t(v, "timestamp")?,
        advertiser_id: s(v, "advertiser_id")?,
        campaign_id: s(v, "campaign_id")?,
        ad_id: s(v, "ad_id")?,
        device_id: s(v, "device_id")?,
        duplicate_click_count: i(v, "duplicate_click_count")?,
        refund_amount: i(v, "refund_amount")?,
        original_click_timestamps: clicks,
        detection_window: s(v, "detection_window")?,
        reason: s(v, "reason")?,
        compensation_type: s(v, "compensation_type")?,
    })
}

fn ledger(v: &Value) -> Result<LedgerRow, String> {
    Ok(LedgerRow {
        idempotency_key: s(v, "idempotency_key")?,
        advertiser_id: s(v, "advertiser_id")?,
        campaign_id: s(v, "campaign_id")?,
        entry_type: s(v, "entry_type")?,
        amount: i(v, "amount")?,
    })
}

fn alert(v: &Value) -> Result<AlertRow, String> {
    Ok(AlertRow {
        campaign_id: s(v, "campaign_id")?,
        advertiser_id: s(v, "advertiser_id")?,
        day: s(v, "day")?,
        level: i(v, "level")?,
        spend: i(v, "spend")?,
        daily_budget: i(v, "daily_budget")?,
        timestamp: t(v, "timestamp").ok(),
    })
}

fn ranking(v: &Value) -> Result<RankingRow, String> {
    Ok(RankingRow {
        placement: s(v, "placement")?,
        category: s(v, "category")?,
        rank: i(v, "rank")?,
        campaign_id: s(v, "campaign_id")?,
        score: x(v, "score")?,
        cpc: i(v, "cpc")?,
    })
}

fn dead(v: &Value) -> Result<DeadRow, String> {
    let payload = match v.get("payload") {
        Some(Value::String(p)) => p.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(DeadRow { topic: s(v, "topic")?, reason: s(v, "reason")?, payload })
}
