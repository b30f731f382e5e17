//! The replay's output files (formats in the README).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rtb_ops::schema::{CompensationEvent, Invalid};
use rtb_ops::sink::{Cache, Database, LedgerKind, LedgerRow, Metrics, MetricsScope, WindowMetrics};
use rtb_stream::DeadLetter;
use serde::Serialize;
use serde_json::json;

use super::ReplaySummary;
use crate::error::{Error, Result};
use crate::sim::Advertiser as AdvertiserLine;

/// Streams the per-record outputs and writes the rest from the stores at the end.
///
/// Every file is written under a temporary name (`.NAME.partial`) and renamed into place only by
/// [`Writer::finish`]: a run that fails half-way (a corrupt store, a full disk) leaves no partial or empty
/// file that would read as a fact; a writer dropped without `finish` removes its temporary files.
pub(crate) struct Writer {
    dir: PathBuf,
    metrics: BufWriter<File>,
    ledger: BufWriter<File>,
    /// Temporary files created so far: (temporary path, final path).
    files: Vec<(PathBuf, PathBuf)>,
    finished: bool,
    /// Rejected input, once per source record, with every stage that rejected it.
    dead: Letters,
    /// Valid records that arrived too late to be applied, once per source record.
    late: Letters,
    compensations: Vec<CompensationEvent>,
}

/// Letters (dead or late) grouped by source record, in first-seen order of stages.
#[derive(Default)]
struct Letters {
    by_source: BTreeMap<(String, u32, u64), Letter>,
}

struct Letter {
    stages: Vec<String>,
    reasons: Vec<String>,
    payload: String,
}

impl Letters {
    fn add(&mut self, topic: &str, partition: u32, offset: u64, stage: &str, reason: &str, payload: &str) {
        let e = self.by_source.entry((topic.to_string(), partition, offset)).or_insert_with(|| Letter {
            stages: Vec::new(),
            reasons: Vec::new(),
            payload: payload.to_string(),
        });
        if !e.stages.iter().any(|s| s == stage) {
            e.stages.push(stage.to_string());
            e.reasons.push(reason.to_string());
        }
    }

    /// Source records per topic.
    fn per_topic(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (topic, _, _) in self.by_source.keys() {
            *m.entry(topic.clone()).or_default() += 1;
        }
        m
    }

    /// (stage → records) over every letter.
    fn per_stage(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for l in self.by_source.values() {
            for s in &l.stages {
                *m.entry(s.clone()).or_default() += 1;
            }
        }
        m
    }

    fn rows(&self) -> Vec<serde_json::Value> {
        self.by_source
            .iter()
            .map(|((topic, partition, offset), l)| {
                let mut v = json!({"topic": topic, "partition": partition, "offset": offset, "stages": l.stages,
                    "reason": l.reasons.first(), "payload": l.payload});
                if l.reasons.iter().any(|r| Some(r) != l.reasons.first()) {
                    v["reasons"] = json!(l.reasons);
                }
                v
            })
            .collect()
    }
}

/// Whether a dead letter is really a late record (operators that still report lateness as a dead letter
/// with a `LATE_*` reason instead of through `Context::late`).
pub(crate) fn is_late_reason(reason: &str) -> bool {
    reason.starts_with("LATE")
}

/// A failure writing an output file (a run-time failure, exit 1; `Error::Io` is about the topology file).
fn out_err(path: &Path, e: std::io::Error) -> Error {
    Error::Run(format!("cannot write {}: {e}", path.display()))
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.partial"))
}

fn create_in(dir: &Path, name: &str, files: &mut Vec<(PathBuf, PathBuf)>) -> Result<BufWriter<File>> {
    let tmp = temp_path(dir, name);
    let w = File::create(&tmp)
        .map(|f| BufWriter::with_capacity(1 << 16, f))
        .map_err(|e| out_err(&tmp, e))?;
    if !files.iter().any(|(t, _)| *t == tmp) {
        files.push((tmp, dir.join(name)));
    }
    Ok(w)
}

fn line<T: Serialize>(w: &mut impl Write, path: &Path, v: &T) -> Result<()> {
    serde_json::to_writer(&mut *w, v).map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
    w.write_all(b"\n").map_err(|e| out_err(path, e))
}

/// RFC 3339 UTC, always with milliseconds (`2025-03-10T00:00:00.000Z`).
fn ts(ms: i64) -> String {
    crate::sim::fmt_ts(ms)
}

/// Serialises an optional event time (ms) as RFC 3339, like every other time in the outputs.
pub(crate) fn rfc3339_opt<S: serde::Serializer>(v: &Option<i64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(ms) => s.serialize_str(&ts(*ms)),
        None => s.serialize_none(),
    }
}

/// A compensation event in the output's timestamp format.
fn compensation_json(c: &CompensationEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["timestamp"] = json!(ts(c.timestamp));
    v["original_click_timestamps"] = json!(c.original_click_timestamps.iter().map(|t| ts(*t)).collect::<Vec<_>>());
    v
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            for (tmp, _) in &self.files {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

impl Writer {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let metrics = create_in(dir, "metrics.jsonl", &mut files)?;
        let ledger = create_in(dir, "ledger.jsonl", &mut files)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics,
            ledger,
            files,
            finished: false,
            dead: Letters::default(),
            late: Letters::default(),
            compensations: Vec::new(),
        })
    }

    /// Streams out campaign windows (final: they can no longer be corrected) and ledger rows, so the replay's
    /// memory holds only what can still change. Per-ad windows are not part of the output and are dropped.
    pub(crate) fn spill(&mut self, windows: Vec<WindowMetrics>, ledger: Vec<LedgerRow>) -> Result<()> {
        let path = temp_path(&self.dir, "metrics.jsonl");
        for w in windows.iter().filter(|w| w.scope == MetricsScope::Campaign && w.metrics != Metrics::default()) {
            line(&mut self.metrics, &path, &metrics_json(&w.campaign_id, w.window_start, w.window_end, &w.metrics))?;
        }
        let path = temp_path(&self.dir, "ledger.jsonl");
        for r in &ledger {
            line(&mut self.ledger, &path, &ledger_json(r))?;
        }
        Ok(())
    }

    /// An input line that failed validation, at its coordinates, rejected by each of `stages` (the consumer
    /// groups of its topic).
    pub(crate) fn invalid(&mut self, topic: &str, partition: u32, offset: u64, why: Invalid, raw: &[u8], stages: &[String]) {
        let (reason, payload) = (why.to_string(), String::from_utf8_lossy(raw));
        for stage in stages {
            self.dead.add(topic, partition, offset, stage, &reason, &payload);
        }
    }

    /// A record an operator rejected. A `LATE_*` reason is a late record, not a dead letter.
    pub(crate) fn dead_letter(&mut self, dl: &DeadLetter) {
        let to = if is_late_reason(&dl.reason) { &mut self.late } else { &mut self.dead };
        to.add(&dl.source.topic, dl.source.partition, dl.source.offset, &dl.stage, &dl.reason, &dl.payload);
    }

    /// A valid record that arrived too late to be applied.
    pub(crate) fn late(&mut self, dl: &DeadLetter) {
        self.late.add(&dl.source.topic, dl.source.partition, dl.source.offset, &dl.stage, &dl.reason, &dl.payload);
    }

    /// Dead letters per topic (each rejected source record once).
    pub(crate) fn dead_per_topic(&self) -> BTreeMap<String, u64> {
        self.dead.per_topic()
    }

    /// Late records per stage.
    pub(crate) fn late_per_stage(&self) -> BTreeMap<String, u64> {
        self.late.per_stage()
    }

    pub(crate) fn compensation(&mut self, ev: &CompensationEvent) -> Result<()> {
        self.compensations.push(ev.clone());
        Ok(())
    }

    /// Writes everything read from the stores, and the summary.
    /// Renames the temporary files into place only once every one of them is complete.
    pub(crate) fn finish(mut self, cache: &dyn Cache, db: &dyn Database, summary: &ReplaySummary) -> Result<()> {
        let dir = self.dir.clone();
        let mut files = std::mem::take(&mut self.files);
        let result = self.write_rest(cache, db, summary, &dir, &mut files);
        self.files = files;
        result?;
        for (tmp, path) in &self.files {
            std::fs::rename(tmp, path).map_err(|e| out_err(path, e))?;
        }
        self.finished = true;
        Ok(())
    }

    fn write_rest(
        &mut self,
        cache: &dyn Cache,
        db: &dyn Database,
        summary: &ReplaySummary,
        dir: &Path,
        files: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<()> {
        let mut write_all = |name: &str, rows: Vec<serde_json::Value>| -> Result<()> {
            let path = temp_path(dir, name);
            let mut w = create_in(dir, name, files)?;
            for r in &rows {
                line(&mut w, &path, r)?;
            }
            w.flush().and_then(|()| w.get_ref().sync_data()).map_err(|e| out_err(&path, e))
        };
        write_all("dead_letters.jsonl", self.dead.rows())?;
        write_all("late_events.jsonl", self.late.rows())?;

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
        let path = temp_path(dir, "metrics.jsonl");
        for ((c, start), (end, m)) in windows.into_iter().filter(|(_, (_, m))| *m != Metrics::default()) {
            line(&mut self.metrics, &path, &metrics_json(&c, start, end, &m))?;
        }
        self.metrics.flush().and_then(|()| self.metrics.get_ref().sync_data()).map_err(|e| out_err(&path, e))?;

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
        let path = temp_path(dir, "ledger.jsonl");
        for r in db.ledger()? {
            line(&mut self.ledger, &path, &ledger_json(&r))?;
        }
        self.ledger.flush().and_then(|()| self.ledger.get_ref().sync_data()).map_err(|e| out_err(&path, e))?;
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

        let path = temp_path(dir, "summary.json");
        let json = serde_json::to_vec_pretty(summary).map_err(|e| Error::Run(format!("summary.json: {e}")))?;
        let mut w = create_in(dir, "summary.json", files)?;
        w.write_all(&json).and_then(|()| w.flush()).map_err(|e| out_err(&path, e))
    }
}

/// One `metrics.jsonl` row: the window's raw counts, and its CTR and CVR as rates capped at 1 (a click can
/// fall in a later window than its impression, a conversion hours after its click: see [`Metrics::ctr_rate`]).
fn metrics_json(campaign: &str, start: i64, end: i64, m: &Metrics) -> serde_json::Value {
    json!({"campaign_id": campaign, "window_start": ts(start), "window_end": ts(end),
        "impressions": m.impressions, "clicks": m.clicks, "conversions": m.conversions,
        "spend": m.spend, "revenue": m.revenue, "ctr": m.ctr_rate(), "cvr": m.cvr_rate()})
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
