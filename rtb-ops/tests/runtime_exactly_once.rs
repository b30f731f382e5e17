//! The balance, duplicate-click and compensation operators run by the real runtime over the embedded log,
//! twice from scratch against the same sinks (the worst crash: no offset ever committed), and once more
//! with the committed offsets. Balances, ledger and spend must equal a naive model computed from the input
//! every time.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use rtb_ops::calendar::{parse_time_zone, Day};
use rtb_ops::ops::balance::BalanceWorker;
use rtb_ops::ops::budget::{BudgetConfig, BudgetMonitor};
use rtb_ops::ops::compensation::CompensationWorker;
use rtb_ops::ops::dedup::{DedupConfig, DuplicateClickDetector};
use rtb_ops::schema::{AdEvent, AdEventType, Placement};
use rtb_ops::sink::{Advertiser, Cache, Database, LedgerKind, MemoryCache, MemoryDatabase};
use rtb_ops::wire::{Clock, WireDecoder};
use rtb_stream::log::{EmbeddedLog, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{JobConfig, Runtime};
use rtb_stream::state::MemoryBackend;
use rtb_stream::time::HOUR;
use rtb_stream::{StoreBackend, WatermarkConfig};

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    rtb_stream::span::from_ms(v)
}

const T0: i64 = 1_705_314_600_000; // 2024-01-15T10:30:00Z
const OPENING: i64 = 10_000_000;

fn clicks() -> Vec<AdEvent> {
    let mut seed = 11u64;
    let mut rnd = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut out = Vec::new();
    for _ in 0..400 {
        let ad = rnd(4);
        let device = rnd(15);
        let ts = T0 + rnd(2 * HOUR as u64) as i64;
        let burst = if rnd(5) == 0 { 1 + rnd(3) } else { 0 }; // some clicks come with quick repeats
        for k in 0..=burst {
            out.push(AdEvent {
                event_id: None,
                event_type: AdEventType::Click,
                timestamp: ts + k as i64 * 2_000,
                device_id: format!("dev{device}"),
                session_id: None,
                ad_id: format!("ad{ad}"),
                campaign_id: format!("camp{ad}"),
                advertiser_id: format!("adv{}", ad % 2),
                product_id: None,
                placement: Placement::Home,
                category: "books".into(),
                bid_price: Some(2_000),
                actual_price: Some(100 + rnd(900) as i64),
                search_term: None,
                revenue_amount: None,
                order_id: None,
            });
        }
    }
    out
}

/// The naive model: charges per advertiser, and refunds from sessionizing each (device, ad)'s clicks by
/// (time, arrival).
fn model(input: &[AdEvent]) -> (BTreeMap<String, i64>, i64, usize) {
    let mut balance: BTreeMap<String, i64> = BTreeMap::new();
    for c in input {
        *balance.entry(c.advertiser_id.clone()).or_insert(OPENING) -= c.price();
    }
    let mut per_key: BTreeMap<(String, String), Vec<(i64, usize)>> = BTreeMap::new();
    for (i, c) in input.iter().enumerate() {
        per_key.entry((c.device_id.clone(), c.ad_id.clone())).or_default().push((c.timestamp, i));
    }
    let (mut refunds, mut windows) = (0, 0);
    for (_, mut v) in per_key {
        v.sort();
        let mut i = 0;
        while i < v.len() {
            let end = v[i].0 + 300_000;
            let j = i + v[i..].iter().take_while(|c| c.0 < end).count();
            if j - i > 1 {
                windows += 1;
                for &(_, idx) in &v[i + 1..j] {
                    refunds += input[idx].price();
                    *balance.get_mut(&input[idx].advertiser_id).unwrap() += input[idx].price();
                }
            }
            i = j;
        }
    }
    (balance, refunds, windows)
}

fn job(group: &str, topic: &str) -> JobConfig {
    let mut cfg = JobConfig::new(group, [topic]);
    cfg.stop_at_end = true;
    cfg.dead_letter_topic = Some("dead-letters".into());
    cfg.watermark = WatermarkConfig { max_out_of_orderness: ms(3 * HOUR), idle_timeout: None };
    cfg
}

fn run_pipeline(log: &EmbeddedLog, state: Arc<dyn StoreBackend>, cache: &MemoryCache, db: &MemoryDatabase) {
    let decoder = WireDecoder::new(Default::default(), Clock::Unchecked);
    let (cache_dyn, db_dyn): (Arc<dyn Cache>, Arc<dyn Database>) = (Arc::new(cache.clone()), Arc::new(db.clone()));
    let mut rt = Runtime::new(log.clone(), state.clone());
    let d = db_dyn.clone();
    rt.spawn(job("balance-processor", "ad-events"), decoder.ad_decoder(), move |_, _| Ok(BalanceWorker::new(d.clone())))
        .unwrap();
    rt.spawn(job("duplicate-detector", "ad-events"), decoder.ad_decoder(), |_, scope| {
        DuplicateClickDetector::new(scope, DedupConfig::default()).map_err(Into::into)
    })
    .unwrap();
    let (c, d) = (cache_dyn.clone(), db_dyn.clone());
    rt.spawn(job("budget-monitor", "ad-events"), decoder.ad_decoder(), move |_, scope| {
        BudgetMonitor::new(scope, c.clone(), d.clone(), BudgetConfig::default()).map_err(Into::into)
    })
    .unwrap();
    rt.join().unwrap();
    // Compensations exist only once duplicate detection has finished: a second runtime reads them.
    let mut rt = Runtime::new(log.clone(), state);
    let (c, d) = (cache_dyn, db_dyn);
    rt.spawn(job("compensation-processor", "compensation-events"), decoder.compensation_decoder(), move |_, _| {
        CompensationWorker::with_default_zone(c.clone(), d.clone()).map_err(Into::into)
    })
    .unwrap();
    rt.join().unwrap();
}

#[test]
fn replays_from_scratch_change_no_balance_ledger_or_spend() {
    let input = clicks();
    let (expected, refunds, windows) = model(&input);
    assert!(windows > 10 && refunds > 0, "the input must exercise duplicates: {windows} windows");
    let log = EmbeddedLog::in_memory();
    for (t, p) in [("ad-events", 8), ("compensation-events", 4), ("dead-letters", 1)] {
        log.create_topic(t, TopicConfig { partitions: p, retention: None }).unwrap();
    }
    for c in &input {
        let payload = serde_json::to_vec(c).unwrap();
        let rec = ProduceRecord { key: Some(c.device_id.clone().into_bytes()), payload, timestamp: c.timestamp, partition: None, origin: None };
        log.append("ad-events", rec).unwrap();
    }
    let cache = MemoryCache::new();
    let db = MemoryDatabase::new();
    for a in ["adv0", "adv1"] {
        db.upsert_advertiser(&Advertiser { advertiser_id: a.into(), opening_balance: OPENING, time_zone: "Asia/Seoul".into() }).unwrap();
    }
    let seoul = parse_time_zone("Asia/Seoul").unwrap();
    let check = |round: &str| {
        let balances: BTreeMap<String, i64> = db.advertisers().unwrap().into_iter().map(|a| (a.advertiser_id, a.balance)).collect();
        assert_eq!(balances, expected, "{round}: balance = opening − charges + refunds");
        let ledger = db.ledger().unwrap();
        let charges = ledger.iter().filter(|r| r.entry.kind == LedgerKind::Charge).count();
        let refund_rows = ledger.iter().filter(|r| r.entry.kind == LedgerKind::Refund).count();
        assert_eq!((charges, refund_rows), (input.len(), windows), "{round}: one ledger row per click and per window");
        // Spend per campaign and day = charges of that day's clicks − refunds closing that day.
        let total_spend: i64 = (0..4)
            .map(|ad| {
                let day = Day::of(T0, seoul);
                cache.spend(&format!("camp{ad}"), day).unwrap() + cache.spend(&format!("camp{ad}"), day.succ()).unwrap()
            })
            .sum();
        assert_eq!(total_spend, input.iter().map(|c| c.price()).sum::<i64>() - refunds, "{round}: spend");
    };
    let first_state: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
    run_pipeline(&log, first_state.clone(), &cache, &db);
    check("first run");
    run_pipeline(&log, Arc::new(MemoryBackend::new()), &cache, &db);
    check("replay from offset 0");
    run_pipeline(&log, first_state, &cache, &db);
    check("restart from committed offsets");
}
