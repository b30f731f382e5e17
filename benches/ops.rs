//! Throughput of the CPC operators' hot paths, in events per second.
//!
//! - `ops/decode_ad_event`: validating decode of ad-event JSON (90 % impressions, 10 % clicks).
//! - `ops/rfc3339_parse`: the timestamp parser alone.
//! - `ops/performance`: the performance statement (two 5-minute windows per event: campaign and ad),
//!   watermark advanced every 1 000 events, memory cache.
//! - `ops/dedup_clicks`: duplicate-click detection over clicks of 10 000 device×ad keys.
//! - `ops/balance_memory`, `ops/balance_sled`: per-click ledger transaction into the in-memory and the
//!   sled database; `ops/balance_sled_batch100`: 100 charges per sled transaction.
//! - `ops/budget_memory`: the budget monitor per click (spend counter, campaign read, thresholds).
//!
//! Operator benches time only the operator (input copies and operator construction are outside the
//! timing). Each bench also prints `EVENTS_PER_SEC name=<bench> value=<n>` from a manual timing loop.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtb_ops::ops::balance::BalanceWorker;
use rtb_ops::ops::budget::{BudgetConfig, BudgetMonitor};
use rtb_ops::ops::dedup::{DedupConfig, DuplicateClickDetector};
use rtb_ops::ops::performance::{PerformanceConfig, PerformanceStatement};
use rtb_ops::ops::ranking::Ranker;
use rtb_ops::ranking::RankingConfig;
use rtb_ops::schema::{rfc3339, AdEvent, AdEventType, Placement, Validator};
use rtb_ops::sink::{Advertiser, Cache, Database, EmbeddedDatabase, MemoryCache, MemoryDatabase};
use rtb_stream::runtime::Output;
use rtb_stream::{Context, DeadLetter, Operator, Record, SourceCoord, StateScope, WriteBatch};

const T0: i64 = 1_705_314_600_000;
const N: usize = 20_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn events(n: usize, clicks_only: bool) -> Vec<AdEvent> {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|i| {
            let click = clicks_only || r.next(10) == 0;
            let ad = r.next(200);
            AdEvent {
                event_id: Some(format!("evt-{i}")),
                event_type: if click { AdEventType::Click } else { AdEventType::Impression },
                timestamp: T0 + i as i64 * 20 + r.next(1_000) as i64,
                device_id: format!("device_{}", r.next(if clicks_only { 2_500 } else { 100_000 })),
                session_id: Some(format!("session_{}", r.next(1_000_000))),
                ad_id: format!("ad_{ad}"),
                campaign_id: format!("campaign_{}", ad / 4),
                advertiser_id: format!("advertiser_{}", ad / 20),
                product_id: Some(format!("product_{}", r.next(5_000))),
                placement: Placement::Search,
                category: format!("category_{}", ad % 12),
                bid_price: Some(1_500),
                actual_price: if click { Some(100 + r.next(1_400) as i64) } else { None },
                search_term: Some("노트북".into()),
                revenue_amount: None,
                order_id: None,
            }
        })
        .collect()
}

fn records(evs: &[AdEvent]) -> Vec<Record<String, Arc<AdEvent>>> {
    evs.iter()
        .enumerate()
        .map(|(i, e)| Record::new(e.device_id.clone(), Arc::new(e.clone()), e.timestamp, SourceCoord::new("ad-events", 0, i as u64)))
        .collect()
}

/// Builds an operator with `make`, then times feeding it (owned copies of) `recs`, advancing the
/// watermark every 1 000 records and committing (`flush_state`) at the end. Cloning the input and building
/// the operator are not timed.
fn timed<O, M>(make: &M, recs: &[Record<String, Arc<AdEvent>>]) -> Duration
where
    O: Operator<Key = String, In = Arc<AdEvent>, Out = Output>,
    M: Fn() -> O,
{
    let mut op = make();
    let input: Vec<Record<String, Arc<AdEvent>>> = recs.to_vec();
    let mut out = Vec::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut wm = None;
    let start = Instant::now();
    for (i, r) in input.into_iter().enumerate() {
        let ts = r.timestamp;
        let mut ctx = Context::new(&mut out, &mut dead, wm, 0);
        op.process(r, &mut ctx).expect("process");
        if i % 1_000 == 999 {
            wm = Some(ts - 5_000);
            let mut ctx = Context::new(&mut out, &mut dead, wm, 0);
            op.on_watermark(ts - 5_000, &mut ctx).expect("watermark");
        }
    }
    op.flush_state(&mut WriteBatch::new()).expect("flush");
    let elapsed = start.elapsed();
    black_box((out.len(), dead.len()));
    elapsed
}

fn bench_op<O, M>(c: &mut Criterion, name: &str, recs: &[Record<String, Arc<AdEvent>>], make: M)
where
    O: Operator<Key = String, In = Arc<AdEvent>, Out = Output>,
    M: Fn() -> O,
{
    let mut g = c.benchmark_group("ops");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.sample_size(10);
    g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| timed(&make, recs)).sum()));
    g.finish();
    let (mut total, mut n) = (Duration::ZERO, 0usize);
    while total < Duration::from_secs(2) {
        total += timed(&make, recs);
        n += recs.len();
    }
    println!("EVENTS_PER_SEC name=ops/{name} value={:.0}", n as f64 / total.as_secs_f64());
}

fn report(name: &str, events: usize, f: impl Fn()) {
    f(); // warm
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(2) {
        f();
        rounds += 1;
    }
    let rate = (events * rounds) as f64 / start.elapsed().as_secs_f64();
    println!("EVENTS_PER_SEC name={name} value={rate:.0}");
}

fn decode(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = events(N, false).iter().map(|e| serde_json::to_vec(e).expect("json")).collect();
    let v = Validator::default();
    let coord = SourceCoord::new("ad-events", 0, 0);
    let run = || {
        for p in &payloads {
            black_box(v.ad_event(p, &coord, Some(T0)).expect("valid"));
        }
    };
    let mut g = c.benchmark_group("ops");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode_ad_event", |b| b.iter(run));
    let stamps: Vec<String> = (0..N as i64).map(|i| rfc3339::format(T0 + i * 1_037).expect("format")).collect();
    let parse = || {
        for s in &stamps {
            black_box(rfc3339::parse(s).expect("parse"));
        }
    };
    g.bench_function("rfc3339_parse", |b| b.iter(parse));
    g.finish();
    report("ops/decode_ad_event", N, run);
    report("ops/rfc3339_parse", N, parse);
}

/// A database with the advertisers of [`events`] registered (clicks of unknown advertisers are refused).
fn registered(db: impl Database + 'static) -> Arc<dyn Database> {
    for a in 0..10 {
        db.upsert_advertiser(&Advertiser { advertiser_id: format!("advertiser_{a}"), opening_balance: 0, time_zone: "Asia/Seoul".into() })
            .expect("advertiser");
    }
    Arc::new(db)
}

fn operators(c: &mut Criterion) {
    let mixed = records(&events(N, false));
    let clicks = records(&events(N, true));
    bench_op(c, "performance", &mixed, || {
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new());
        let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        let ranker = Ranker::new(cache.clone(), db, RankingConfig::default(), 100, "Asia/Seoul").expect("ranker");
        PerformanceStatement::new(&StateScope::in_memory(), 0, cache, PerformanceConfig::default(), ranker).expect("performance")
    });
    bench_op(c, "dedup_clicks", &clicks, || {
        DuplicateClickDetector::new(&StateScope::in_memory(), DedupConfig::default()).expect("dedup")
    });
    bench_op(c, "balance_memory", &clicks, || BalanceWorker::new(registered(MemoryDatabase::new())));
    bench_op(c, "balance_sled", &clicks, || BalanceWorker::new(registered(EmbeddedDatabase::temporary().expect("sled"))));
    bench_op(c, "balance_sled_batch100", &clicks, || {
        BalanceWorker::with_batch_size(registered(EmbeddedDatabase::temporary().expect("sled")), 100)
    });
    bench_op(c, "budget_memory", &clicks, || {
        let db = registered(MemoryDatabase::new());
        BudgetMonitor::new(&StateScope::in_memory(), Arc::new(MemoryCache::new()), db, BudgetConfig::default()).expect("budget")
    });
}

criterion_group!(benches, decode, operators);
criterion_main!(benches);
