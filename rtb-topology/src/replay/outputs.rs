//! The replay's output files (formats in the README).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rtb_ops::config::TopicNames;
use rtb_ops::schema::{CompensationEvent, Invalid};
use rtb_ops::sink::{Cache, Database, LedgerKind, LedgerRow, Metrics, MetricsScope, WindowMetrics};
use rtb_stream::DeadLetter;
use serde::Serialize;
use serde_json::json;

use super::ReplaySummary;
use crate::error::{Error, Result};
use crate::sim::Advertiser as AdvertiserLine;

/// Streams the per-record outputs (dead letters, compensations) and writes the rest from the stores at the end.
pub(crate) struct Writer {
    dir: PathBuf,
    dead: BufWriter<File>,
    metrics: BufWriter<File>,
    ledger: BufWriter<File>,
    compensations: Vec<CompensationEvent>,
    pub(crate) topics: TopicNames,
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<File>> {
    let path = dir.join(name);
    File::create(&path).map(|f| BufWriter::with_capacity(1 << 16, f)).map_err(|e| Error::Io { path, source: e })
}

fn line<T: Serialize>(w: &mut impl Write, path: &Path, v: &T) -> Result<()> {
    serde_json::to_writer(&mut *w, v).map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
    w.write_all(b"\n").map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

/// RFC 3339 UTC, always with milliseconds (`2025-03-10T00:00:00.000Z`).
fn ts(ms: i64) -> String {
    crate::sim::fmt_ts(ms)
}

/// A compensation event in the output's timestamp format.
fn compensation_json(c: &CompensationEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["timestamp"] = json!(ts(c.timestamp));
    v["original_click_timestamps"] = json!(c.original_click_timestamps.iter().map(|t| ts(*t)).collect::<Vec<_>>());
    v
}

impl Writer {
    pub(crate) fn create(dir: &Path, topics: TopicNames) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            dead: create(dir, "dead_letters.jsonl")?,
            metrics: create(dir, "metrics.jsonl")?,
            ledger: create(dir, "ledger.jsonl")?,
            compensations: Vec::new(),
            topics,
        })
    }

    /// Streams out campaign windows (final: they can no longer be corrected) and ledger rows, so the replay's
    /// memory holds only what can still change. Per-ad windows are not part of the output and are dropped.
    pub(crate) fn spill(&mut self, windows: Vec<WindowMetrics>, ledger: Vec<LedgerRow>) -> Result<()> {
        let path = self.dir.join("metrics.jsonl");
        for w in windows.iter().filter(|w| w.scope == MetricsScope::Campaign && w.metrics != Metrics::default()) {
            line(&mut self.metrics, &path, &metrics_json(&w.campaign_id, w.window_start, w.window_end, &w.metrics))?;
        }
        let path = self.dir.join("ledger.jsonl");
        for r in &ledger {
            line(&mut self.ledger, &path, &ledger_json(r))?;
        }
        Ok(())
    }

    /// An input line that failed validation.
    pub(crate) fn invalid(
        &mut self,
        topic: &str,
        partition: u32,
        line_no: u64,
        why: Invalid,
        raw: &[u8],
        summary: &mut ReplaySummary,
    ) -> Result<()> {
        *summary.dead_letters.entry(topic.to_string()).or_default() += 1;
        let path = self.dir.join("dead_letters.jsonl");
        line(
            &mut self.dead,
            &path,
            &json!({
                "topic": topic, "partition": partition, "offset": line_no, "stage": "decode",
                "reason": why.to_string(), "payload": String::from_utf8_lossy(raw),
            }),
        )
    }

    /// A record an operator rejected (late records included).
    pub(crate) fn dead_letter(&mut self, dl: &DeadLetter, _summary: &mut ReplaySummary) -> Result<()> {
        let path = self.dir.join("dead_letters.jsonl");
        line(
            &mut self.dead,
            &path,
            &json!({
                "topic": &*dl.source.topic, "partition": dl.source.partition, "offset": dl.source.offset,
                "stage": dl.stage, "reason": dl.reason, "payload": dl.payload,
            }),
        )
    }

    pub(crate) fn compensation(&mut self, ev: &CompensationEvent) -> Result<()> {
        self.compensations.push(ev.clone());
        Ok(())
    }

    /// Writes everything read from the stores, and the summary.
    pub(crate) fn finish(mut self, cache: &dyn Cache, db: &dyn Database, summary: &ReplaySummary) -> Result<()> {
        let dead_path = self.dir.join("dead_letters.jsonl");
        self.dead.flush().map_err(|e| Error::Io { path: dead_path, source: e })?;
        let dir = self.dir.clone();
        let write_all = |name: &str, rows: Vec<serde_json::Value>| -> Result<()> {
            let path = dir.join(name);
            let mut w = create(&dir, name)?;
            for r in &rows {
                line(&mut w, &path, r)?;
            }
            w.flush().map_err(|e| Error::Io { path, source: e })
        };

        // Rankings.
        let mut rankings = Vec::new();
        let mut rk = cache.rankings()?;
        rk.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        for (placement, category, entries) in rk {
            for e in entries {
                rankings.push(json!({"placement": placement.as_str(), "category": category, "rank": e.rank,
                    "campaign_id": e.campaign_id, "score": e.score, "cpc": e.cpc}));
            }
        }
        write_all("rankings.jsonl", rankings)?;

        // Metrics: the campaign windows still held (the others were spilled), shards merged.
        let mut windows = std::collections::BTreeMap::new();
        for w in cache.all_window_metrics(MetricsScope::Campaign)? {
            let slot = windows.entry((w.campaign_id.clone(), w.window_start)).or_insert((w.window_end, Metrics::default()));
            slot.1 = slot.1.plus(w.metrics);
        }
        let path = dir.join("metrics.jsonl");
        for ((c, start), (end, m)) in windows.into_iter().filter(|(_, (_, m))| *m != Metrics::default()) {
            line(&mut self.metrics, &path, &metrics_json(&c, start, end, &m))?;
        }
        self.metrics.flush().map_err(|e| Error::Io { path, source: e })?;

        // Conversions (attributed).
        let mut conv = db.conversions()?;
        conv.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        let conv = conv
            .into_iter()
            .filter(|c| c.is_attributed())
            .map(|c| {
                json!({"order_id": c.order_id, "device_id": c.device_id, "product_id": c.product_id,
                    "campaign_id": c.campaign_id, "ad_id": c.ad_id, "advertiser_id": c.advertiser_id,
                    "click_timestamp": c.click_timestamp.map(ts), "conversion_timestamp": ts(c.conversion_timestamp),
                    "revenue_amount": c.revenue_amount, "conversion_type": c.conversion_type})
            })
            .collect();
        write_all("conversions.jsonl", conv)?;

        // Compensations.
        self.compensations.sort_by(|a, b| (&a.device_id, &a.ad_id, a.timestamp).cmp(&(&b.device_id, &b.ad_id, b.timestamp)));
        let comps = self
            .compensations
            .iter()
            .map(compensation_json)
            .collect();
        write_all("compensations.jsonl", comps)?;

        // Ledger rows not spilled yet, then balances.
        let path = dir.join("ledger.jsonl");
        for r in db.ledger()? {
            line(&mut self.ledger, &path, &ledger_json(&r))?;
        }
        self.ledger.flush().map_err(|e| Error::Io { path, source: e })?;
        let mut adv = db.advertisers()?;
        adv.sort_by(|a, b| a.advertiser_id.cmp(&b.advertiser_id));
        write_all(
            "balances.jsonl",
            adv.into_iter().map(|a| json!({"advertiser_id": a.advertiser_id, "balance": a.balance})).collect(),
        )?;

        // Campaign status and alerts.
        let mut camps = db.campaigns()?;
        camps.sort_by(|a, b| a.campaign_id.cmp(&b.campaign_id));
        let camps = camps
            .into_iter()
            .map(|c| {
                json!({"campaign_id": c.campaign_id, "advertiser_id": c.advertiser_id, "placement": c.placement.as_str(),
                    "category": c.category, "bid_price": c.bid_price, "daily_budget": c.daily_budget,
                    "status": c.effective_status(), "approval_status": c.approval_status,
                    "paused_reason": c.pause_reason(), "budget_paused_day": c.budget_paused_day.map(|d| d.to_string())})
            })
            .collect();
        write_all("campaign_status.jsonl", camps)?;
        let mut alerts = db.alerts()?;
        alerts.sort_by(|a, b| (&a.campaign_id, a.day, a.threshold_pct).cmp(&(&b.campaign_id, b.day, b.threshold_pct)));
        let alerts = alerts
            .into_iter()
            .map(|a| {
                json!({"campaign_id": a.campaign_id, "advertiser_id": a.advertiser_id, "day": a.day.to_string(),
                    "level": a.threshold_pct, "spend": a.spend, "daily_budget": a.daily_budget, "timestamp": ts(a.event_time)})
            })
            .collect();
        write_all("alerts.jsonl", alerts)?;

        let path = self.dir.join("summary.json");
        std::fs::write(&path, serde_json::to_vec_pretty(summary).unwrap_or_default())
            .map_err(|e| Error::Io { path, source: e })
    }
}

fn metrics_json(campaign: &str, start: i64, end: i64, m: &Metrics) -> serde_json::Value {
    json!({"campaign_id": campaign, "window_start": ts(start), "window_end": ts(end),
        "impressions": m.impressions, "clicks": m.clicks, "conversions": m.conversions,
        "spend": m.spend, "revenue": m.revenue, "ctr": m.ctr(), "cvr": m.cvr()})
}

fn ledger_json(r: &LedgerRow) -> serde_json::Value {
    json!({"idempotency_key": r.entry.idempotency_key, "advertiser_id": r.entry.advertiser_id,
        "campaign_id": r.entry.campaign_id,
        "entry_type": match r.entry.kind { LedgerKind::Charge => "CHARGE", LedgerKind::Refund => "REFUND" },
        "amount": r.entry.amount.abs(), "timestamp": ts(r.entry.event_time), "balance_after": r.balance_after})
}

/// Reads `advertisers.jsonl` (missing file: no advertisers).
pub(crate) fn read_advertisers(path: &Path) -> Result<Vec<AdvertiserLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io { path: path.to_path_buf(), source: e }),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Run(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}
