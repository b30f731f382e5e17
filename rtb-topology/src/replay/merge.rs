//! The merge engine of `rtb replay` (the default in memory): recorded traffic through the operators of the
//! plan, driven in one thread.
//!
//! The three input files are decoded on background threads and merged by event time; every record goes to
//! the operators that consume its topic (as the consumer groups of the topology would), outputs to topics are
//! routed in-process (duplicate detection → compensation worker, budget monitor → ranking statement), and the
//! watermark (max event time − allowed out-of-orderness) advances every batch. End of input advances the
//! watermark to the end, so every window, join buffer and dedup window closes; the rankings are then
//! recomputed with the final metrics. Operator state is bounded by the windows and TTLs, not by the input.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rtb_ops::config::TopicNames;
use rtb_ops::ops::balance::BalanceWorker;
use rtb_ops::ops::budget::BudgetMonitor;
use rtb_ops::ops::compensation::CompensationWorker;
use rtb_ops::ops::conversion::ConversionMatcher;
use rtb_ops::ops::dedup::DuplicateClickDetector;
use rtb_ops::ops::performance::PerformanceStatement;
use rtb_ops::ops::ranking::{Ranker, RankingStatement};
use rtb_ops::ops::MatchInput;
use rtb_ops::schema::{AdEvent, AdEventType, CampaignEvent, ConversionEvent, Invalid, Validator};
use rtb_ops::sink::{Advertiser, Cache, Database, MemoryCache, MemoryDatabase};
use rtb_stream::runtime::Output;
use rtb_stream::{Context, DeadLetter, Operator, Record, SourceCoord, Timestamp, WatermarkConfig, WatermarkTracker};

use super::input::{self, DecodedFile};
use super::{outputs, Coordinates, InputSpec, ReplayOptions, ReplaySummary};
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;

enum Decoded<T> {
    Ok(T),
    Bad(Invalid, Vec<u8>),
}

struct Ops {
    ranking: RankingStatement,
    performance: PerformanceStatement,
    conversion: ConversionMatcher,
    dedup: DuplicateClickDetector,
    balance: BalanceWorker,
    budget: BudgetMonitor,
    compensation: CompensationWorker,
}

struct Driver {
    ops: Ops,
    validator: Validator,
    out: Vec<Output>,
    dead: Rejects,
    watermark: Option<Timestamp>,
    writer: outputs::Writer,
    summary: ReplaySummary,
    ranker: Ranker,
    topics: TopicNames,
}

/// What the operators reject: dead letters (invalid input) and late records (valid, too late to apply),
/// kept apart as the runtime keeps them apart.
#[derive(Default)]
struct Rejects {
    dead: Vec<DeadLetter>,
    late: Vec<DeadLetter>,
}

fn run_op<O: Operator<Out = Output>>(
    op: &mut O,
    rec: Record<O::Key, O::In>,
    out: &mut Vec<Output>,
    rejects: &mut Rejects,
    wm: Option<Timestamp>,
) -> Result<()> {
    let mut ctx = Context::with_late(out, &mut rejects.dead, &mut rejects.late, wm, 0);
    op.process(rec, &mut ctx).map_err(Error::Stream)
}

fn wm_op<O: Operator<Out = Output>>(op: &mut O, wm: Timestamp, out: &mut Vec<Output>, rejects: &mut Rejects) -> Result<()> {
    let mut ctx = Context::with_late(out, &mut rejects.dead, &mut rejects.late, Some(wm), 0);
    op.on_watermark(wm, &mut ctx).map_err(Error::Stream)
}

impl Driver {
    fn campaign(&mut self, rec: Record<String, CampaignEvent>) -> Result<()> {
        run_op(&mut self.ops.ranking, rec, &mut self.out, &mut self.dead, self.watermark)?;
        self.route()
    }

    fn ad(&mut self, rec: Record<String, AdEvent>) -> Result<()> {
        let rec = rec.map(Arc::new);
        let (out, dead, wm) = (&mut self.out, &mut self.dead, self.watermark);
        if rec.value.event_type == AdEventType::Click {
            let click = |r: &Record<String, Arc<AdEvent>>| r.clone();
            run_op(&mut self.ops.dedup, click(&rec), out, dead, wm)?;
            run_op(&mut self.ops.balance, click(&rec), out, dead, wm)?;
            run_op(&mut self.ops.budget, click(&rec), out, dead, wm)?;
            run_op(&mut self.ops.conversion, click(&rec).map(MatchInput::Ad), out, dead, wm)?;
        }
        run_op(&mut self.ops.performance, rec, out, dead, wm)?;
        self.route()
    }

    fn conversion(&mut self, rec: Record<String, ConversionEvent>) -> Result<()> {
        run_op(&mut self.ops.conversion, rec.map(MatchInput::Conversion), &mut self.out, &mut self.dead, self.watermark)?;
        self.route()
    }

    fn advance(&mut self, wm: Timestamp) -> Result<()> {
        if self.watermark.is_some_and(|w| w >= wm) {
            return Ok(());
        }
        self.watermark = Some(wm);
        let (o, d) = (&mut self.out, &mut self.dead);
        wm_op(&mut self.ops.ranking, wm, o, d)?;
        wm_op(&mut self.ops.performance, wm, o, d)?;
        wm_op(&mut self.ops.conversion, wm, o, d)?;
        wm_op(&mut self.ops.dedup, wm, o, d)?;
        wm_op(&mut self.ops.balance, wm, o, d)?;
        wm_op(&mut self.ops.budget, wm, o, d)?;
        wm_op(&mut self.ops.compensation, wm, o, d)?;
        self.route()
    }

    /// Delivers outputs to the operators consuming their topics, until none are left.
    fn route(&mut self) -> Result<()> {
        self.flush_rejects();
        while !self.out.is_empty() {
            let outs = std::mem::take(&mut self.out);
            for (i, o) in outs.into_iter().enumerate() {
                let coord = SourceCoord::new(o.topic.clone(), 0, i as u64);
                if o.topic == self.topics.compensation_events {
                    let ev = self
                        .validator
                        .compensation_event(&o.record.payload, &coord, None)
                        .map_err(|e| Error::Run(format!("compensation event the replay itself produced is invalid: {e}")))?;
                    self.writer.compensation(&ev)?;
                    self.summary.compensations += 1;
                    let key = ev.advertiser_id.clone();
                    let ts = ev.timestamp;
                    run_op(&mut self.ops.compensation, Record::new(key, ev, ts, coord), &mut self.out, &mut self.dead, self.watermark)?;
                } else if o.topic == self.topics.campaign_events {
                    let ev = self
                        .validator
                        .campaign_event(&o.record.payload, &coord, None)
                        .map_err(|e| Error::Run(format!("campaign event the replay itself produced is invalid: {e}")))?;
                    let key = String::from_utf8_lossy(o.record.key.as_deref().unwrap_or_default()).into_owned();
                    let ts = ev.timestamp;
                    run_op(&mut self.ops.ranking, Record::new(key, ev, ts, coord), &mut self.out, &mut self.dead, self.watermark)?;
                } else {
                    return Err(Error::Run(format!("no consumer for output topic `{}`", o.topic)));
                }
            }
            self.flush_rejects();
        }
        Ok(())
    }

    fn flush_rejects(&mut self) {
        for dl in self.dead.dead.drain(..) {
            self.writer.dead_letter(&dl);
        }
        for dl in self.dead.late.drain(..) {
            self.writer.late(&dl);
        }
    }
}

/// Runs a replay of `plan` on the merge engine; writes every output file and returns the summary.
pub(crate) fn run(plan: &ExecutionPlan, opts: &ReplayOptions) -> Result<ReplaySummary> {
    let started = Instant::now();
    let ops = crate::app::run::ops_config(plan)?;
    ops.validate()?;
    std::fs::create_dir_all(&opts.output).map_err(|e| Error::Io { path: opts.output.clone(), source: e })?;
    let mem_cache = Arc::new(MemoryCache::new());
    let mem_db = Arc::new(MemoryDatabase::new());
    let cache: Arc<dyn Cache> = Arc::clone(&mem_cache) as Arc<dyn Cache>;
    let db: Arc<dyn Database> = Arc::clone(&mem_db) as Arc<dyn Database>;
    // Windows are final once the watermark passes end − 1 + grace + max lateness.
    let horizon = rtb_stream::span::ms(ops.performance.grace.saturating_add(ops.performance.max_lateness));
    for a in outputs::read_advertisers(&opts.input.join("advertisers.jsonl"))? {
        db.upsert_advertiser(&Advertiser { advertiser_id: a.advertiser_id, opening_balance: a.balance, time_zone: a.time_zone })?;
    }
    let ops_cfg = &ops;
    let ranker = || crate::app::wiring::ranker(&cache, &db, ops_cfg);
    let scope = rtb_stream::StateScope::in_memory();
    let ops = Ops {
        ranking: RankingStatement::new(&scope.child("ranking"), Arc::clone(&cache), Arc::clone(&db), ranker()?)?,
        performance: PerformanceStatement::new(&scope.child("performance"), 0, Arc::clone(&cache), ops_cfg.performance, ranker()?)?,
        conversion: ConversionMatcher::new(&scope.child("conversion"), Arc::clone(&db), ops_cfg.conversion)?,
        dedup: DuplicateClickDetector::new(&scope.child("dedup"), ops_cfg.dedup.clone())?,
        balance: BalanceWorker::new(Arc::clone(&db)),
        budget: BudgetMonitor::new(&scope.child("budget"), Arc::clone(&cache), Arc::clone(&db), ops_cfg.budget.clone())?,
        compensation: CompensationWorker::new(Arc::clone(&cache), Arc::clone(&db), &ops_cfg.budget.default_time_zone)?,
    };
    let validator = Validator::new(ops_cfg.validation);
    let now = Some(rtb_stream::time::wall_clock_ms());
    let topics = ops_cfg.topics.clone();
    let mut d = Driver {
        ops,
        validator,
        out: Vec::new(),
        dead: Rejects::default(),
        watermark: None,
        writer: outputs::Writer::create(&opts.output)?,
        summary: ReplaySummary::default(),
        ranker: ranker()?,
        topics: topics.clone(),
    };
    // Each line's coordinates in the log the runtime would read (see the module documentation of `replay`).
    let [mut campaign_in, mut ad_in, mut conversion_in] = super::input_specs(plan, &topics)?.map(InputLines::new);

    let (v1, v2, v3) = (validator, validator, validator);
    let (t1, t2, t3) = (campaign_in.spec.topic.clone(), ad_in.spec.topic.clone(), conversion_in.spec.topic.clone());
    let mut campaigns = DecodedFile::open(&opts.input.join(campaign_in.spec.file), true, move |b, line| {
        decode(b, SourceCoord::new(t1.as_str(), 0, line), |b, c| v1.campaign_event(b, c, now))
    })
    .map_err(|e| io_err(&opts.input, e))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let mut ads = DecodedFile::open_with_workers(&opts.input.join(ad_in.spec.file), false, workers, move |b, line| {
        decode(b, SourceCoord::new(t2.as_str(), 0, line), |b, c| v2.ad_event(b, c, now))
    })
    .map_err(|e| io_err(&opts.input, e))?;
    let mut convs = DecodedFile::open(&opts.input.join(conversion_in.spec.file), true, move |b, line| {
        decode(b, SourceCoord::new(t3.as_str(), 0, line), |b, c| v3.conversion_event(b, c, now))
    })
    .map_err(|e| io_err(&opts.input, e))?;

    let mut tracker = WatermarkTracker::new(
        1,
        WatermarkConfig { max_out_of_orderness: rtb_stream::span::from_ms(opts.max_out_of_orderness_ms), idle_timeout: None },
        0,
    );
    let mut heads: [Option<(Timestamp, Head)>; 3] = [None, None, None];
    let mut n = 0u64;
    let mut max_ts: Option<Timestamp> = None;
    loop {
        if heads[0].is_none() {
            heads[0] = campaigns.next_line().map_err(|e| io_err(&opts.input, e))?.map(|l| head_of(Head::Campaign(l.item)));
        }
        if heads[1].is_none() {
            heads[1] = ads.next_line().map_err(|e| io_err(&opts.input, e))?.map(|l| head_of(Head::Ad(l.item)));
        }
        if heads[2].is_none() {
            heads[2] = convs.next_line().map_err(|e| io_err(&opts.input, e))?.map(|l| head_of(Head::Conversion(l.item)));
        }
        // Earliest head first; campaign events win ties (a campaign precedes the traffic it gets).
        let Some(i) = (0..3).filter(|i| heads[*i].is_some()).min_by_key(|i| heads[*i].as_ref().map(|h| (h.0, *i))) else {
            break;
        };
        let Some((_, head)) = heads[i].take() else { break };
        n += 1;
        match head {
            Head::Campaign(item) => {
                *d.summary.events.entry(topics.campaign_events.clone()).or_default() += 1;
                match item {
                    Decoded::Ok(ev) => {
                        observe(&mut tracker, &mut max_ts, ev.timestamp);
                        let key = format!("{}:{}", ev.placement.as_str(), ev.category);
                        let coord = campaign_in.coord(&key);
                        let ts = ev.timestamp;
                        d.campaign(Record::new(key, ev, ts, coord))?;
                    }
                    Decoded::Bad(inv, raw) => campaign_in.reject(&mut d.writer, inv, &raw),
                }
            }
            Head::Ad(item) => {
                *d.summary.events.entry(topics.ad_events.clone()).or_default() += 1;
                match item {
                    Decoded::Ok(ev) => {
                        observe(&mut tracker, &mut max_ts, ev.timestamp);
                        // A click without event_id is charged under these coordinates.
                        let key = ev.device_id.clone();
                        let coord = ad_in.coord(&key);
                        let ts = ev.timestamp;
                        d.ad(Record::new(key, ev, ts, coord))?;
                    }
                    Decoded::Bad(inv, raw) => ad_in.reject(&mut d.writer, inv, &raw),
                }
            }
            Head::Conversion(item) => {
                *d.summary.events.entry(topics.conversion_events.clone()).or_default() += 1;
                match item {
                    Decoded::Ok(ev) => {
                        observe(&mut tracker, &mut max_ts, ev.timestamp);
                        let key = ev.device_id.clone();
                        let coord = conversion_in.coord(&key);
                        let ts = ev.timestamp;
                        d.conversion(Record::new(key, ev, ts, coord))?;
                    }
                    Decoded::Bad(inv, raw) => conversion_in.reject(&mut d.writer, inv, &raw),
                }
            }
        }
        if n.is_multiple_of(256) {
            if let Some(wm) = tracker.current() {
                d.advance(wm)?;
                if n.is_multiple_of(65_536) {
                    let windows = mem_cache.take_windows_ending_by(wm.saturating_sub(horizon));
                    d.writer.spill(windows, mem_db.take_ledger())?;
                }
            }
        }
    }
    // End of input: everything closes.
    d.advance(tracker.finish())?;
    if let Some(end) = max_ts {
        d.ranker.recompute_all(end)?;
    }
    d.summary.end_of_input = max_ts;
    d.summary.late = late_counts(&d.ops);
    d.summary.dead_letters = d.writer.dead_per_topic();
    let cs = d.ops.conversion.stats();
    d.summary.attributed_conversions = cs.attributed;
    d.summary.unattributed_conversions = cs.unattributed;
    d.summary.duplicate_orders = cs.duplicate_orders;
    d.summary.elapsed_s = started.elapsed().as_secs_f64();
    let ads_n = d.summary.events.get(&topics.ad_events).copied().unwrap_or(0);
    d.summary.ad_events_per_sec = ads_n as f64 / d.summary.elapsed_s.max(1e-9);
    d.writer.finish(cache.as_ref(), db.as_ref(), &d.summary)?;
    Ok(d.summary)
}

/// The lines of one input file as records of its topic: each gets its coordinates in the log the runtime
/// would read, and a bad one is rejected by every consumer group of the topic, as in the runtime.
struct InputLines {
    spec: InputSpec,
    at: Coordinates,
}

impl InputLines {
    fn new(spec: InputSpec) -> Self {
        Self { at: Coordinates::new(spec.partitions), spec }
    }

    /// The coordinates of the next line, a valid record with key `key`.
    fn coord(&mut self, key: &str) -> SourceCoord {
        let (p, offset) = self.at.next(Some(key.as_bytes()));
        SourceCoord::new(self.spec.topic.as_str(), p, offset)
    }

    /// The next line is invalid: a dead letter at its coordinates (its key read from the raw line if it can be).
    fn reject(&mut self, writer: &mut outputs::Writer, why: Invalid, raw: &[u8]) {
        let key = input::scan(raw, &self.spec.key).0;
        let (p, offset) = self.at.next(key.as_deref().map(str::as_bytes));
        writer.invalid(&self.spec.topic, p, offset, why, raw, &self.spec.groups);
    }
}

enum Head {
    Campaign(Decoded<CampaignEvent>),
    Ad(Decoded<AdEvent>),
    Conversion(Decoded<ConversionEvent>),
}

fn head_of(h: Head) -> (Timestamp, Head) {
    let ts = match &h {
        Head::Campaign(Decoded::Ok(e)) => e.timestamp,
        Head::Ad(Decoded::Ok(e)) => e.timestamp,
        Head::Conversion(Decoded::Ok(e)) => e.timestamp,
        // Invalid lines carry no usable time: let them through at once.
        _ => Timestamp::MIN,
    };
    (ts, h)
}

fn observe(t: &mut WatermarkTracker, max_ts: &mut Option<Timestamp>, ts: Timestamp) {
    t.observe(0, ts, 0);
    *max_ts = Some(max_ts.map_or(ts, |m| m.max(ts)));
}

fn decode<T>(bytes: &[u8], coord: SourceCoord, f: impl Fn(&[u8], &SourceCoord) -> std::result::Result<T, Invalid>) -> Decoded<T> {
    match f(bytes, &coord) {
        Ok(v) => Decoded::Ok(v),
        Err(e) => Decoded::Bad(e, bytes.to_vec()),
    }
}

fn late_counts(ops: &Ops) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    m.insert("performance".to_string(), ops.performance.stats().late_events);
    m.insert("duplicate-detection".to_string(), ops.dedup.stats().late_clicks);
    let c = ops.conversion.stats();
    m.insert("conversion-matching".to_string(), c.late_conversions + c.late_clicks);
    m.retain(|_, v| *v > 0);
    m
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

