#![allow(clippy::unwrap_used)]

use super::*;
use rtb_stream::time::{HOUR, MINUTE};
use crate::ranking::RankingConfig;
use crate::schema::{ApprovalStatus, CampaignStatus};
use crate::sink::{CampaignRow, Database, MemoryCache, MemoryDatabase};
use rtb_stream::{Harness, SourceCoord};

const W: i64 = 5 * MINUTE;
const T0: i64 = 1_705_314_600_000; // 2024-01-15T10:30:00Z, a multiple of 5 min

fn ev(t: AdEventType, campaign: &str, ad: &str, at: i64) -> AdEvent {
    AdEvent {
        event_id: None,
        event_type: t,
        timestamp: at,
        device_id: "d".into(),
        session_id: None,
        ad_id: ad.into(),
        campaign_id: campaign.into(),
        advertiser_id: "adv".into(),
        product_id: Some("p".into()),
        placement: Placement::Home,
        category: "books".into(),
        bid_price: Some(2000),
        actual_price: Some(1000),
        search_term: None,
        revenue_amount: (t == AdEventType::Conversion).then_some(50_000),
        order_id: None,
    }
}

struct F {
    cache: MemoryCache,
    db: MemoryDatabase,
    h: Harness<PerformanceStatement>,
    offset: u64,
}

fn fixture_with(cache: MemoryCache, db: MemoryDatabase, shard: u32) -> F {
    let ranker = Ranker::new(Arc::new(cache.clone()), Arc::new(db.clone()), RankingConfig::default(), 100, "Asia/Seoul").unwrap();
    let op = PerformanceStatement::new(&StateScope::in_memory(), shard, Arc::new(cache.clone()), PerformanceConfig::default(), ranker)
        .unwrap();
    F { cache, db, h: Harness::new(op), offset: 0 }
}

fn fixture() -> F {
    fixture_with(MemoryCache::new(), MemoryDatabase::new(), 0)
}

impl F {
    fn send(&mut self, e: AdEvent) {
        self.offset += 1;
        let t = e.timestamp;
        self.h.process(Record::new("d".into(), Arc::new(e), t, SourceCoord::new("ad-events", 0, self.offset))).unwrap();
    }
    fn many(&mut self, t: AdEventType, campaign: &str, ad: &str, at: i64, n: usize) {
        for _ in 0..n {
            self.send(ev(t, campaign, ad, at));
        }
    }
    fn window(&self, scope: MetricsScope, id: &str) -> Vec<(Timestamp, Metrics)> {
        self.cache.window_metrics(scope, id).unwrap().into_iter().map(|w| (w.window_start, w.metrics)).collect()
    }
}

fn m(impressions: i64, clicks: i64, conversions: i64, spend: i64, revenue: i64) -> Metrics {
    Metrics { impressions, clicks, conversions, spend, revenue }
}

#[test]
fn window_counts_are_written_after_end_plus_grace() {
    let mut f = fixture();
    f.many(AdEventType::Impression, "c1", "a1", T0, 10);
    f.many(AdEventType::Impression, "c1", "a2", T0 + 1_000, 5);
    f.many(AdEventType::Click, "c1", "a1", T0 + 2_000, 2);
    f.send(ev(AdEventType::Conversion, "c1", "a1", T0 + W - 1)); // last ms of the window
    f.send(ev(AdEventType::Click, "c1", "a1", T0 + W)); // exactly at the end: next window
    f.h.advance_watermark(T0 + W - 1 + 10_000 - 1).unwrap();
    assert!(f.window(MetricsScope::Campaign, "c1").is_empty(), "grace not over");
    f.h.advance_watermark(T0 + W - 1 + 10_000).unwrap();
    assert_eq!(f.window(MetricsScope::Campaign, "c1"), vec![(T0, m(15, 2, 1, 2000, 50_000))]);
    assert_eq!(f.window(MetricsScope::Ad, "a1"), vec![(T0, m(10, 2, 1, 2000, 50_000))]);
    assert_eq!(f.window(MetricsScope::Ad, "a2"), vec![(T0, m(5, 0, 0, 0, 0))]);
    let row = &f.cache.window_metrics(MetricsScope::Campaign, "c1").unwrap()[0];
    assert_eq!((row.window_end, row.metrics.ctr(), row.metrics.cvr()), (T0 + W, 2.0 / 15.0, 0.5));
    assert_eq!(f.cache.category_totals("books").unwrap(), m(15, 2, 1, 2000, 50_000));
    f.h.advance_watermark(i64::MAX).unwrap();
    assert_eq!(f.window(MetricsScope::Campaign, "c1")[1], (T0 + W, m(0, 1, 0, 1000, 0)));
}

#[test]
fn late_events_correct_the_window_and_move_totals_by_the_difference_only() {
    let mut f = fixture();
    f.many(AdEventType::Impression, "c1", "a1", T0, 4);
    f.h.advance_watermark(T0 + W + 20_000).unwrap();
    assert_eq!(f.cache.campaign_totals("c1").unwrap().impressions, 4);
    f.send(ev(AdEventType::Click, "c1", "a1", T0 + 10)); // late, within max lateness
    assert_eq!(f.window(MetricsScope::Campaign, "c1"), vec![(T0, m(4, 1, 0, 1000, 0))]);
    assert_eq!(f.cache.campaign_totals("c1").unwrap(), m(4, 1, 0, 1000, 0), "not 8 impressions");
    assert_eq!(f.h.operator.stats().corrections, 2, "campaign and ad rows");
    assert!(f.h.dead_letters.is_empty());
}

#[test]
fn by_default_an_event_a_day_late_still_corrects_its_window() {
    // SPEC §4: mobile apps batch events offline; by default a late event corrects its window for 24 h.
    assert_eq!(PerformanceConfig::default().max_lateness, std::time::Duration::from_secs(24 * 3_600));
    let mut f = fixture();
    f.send(ev(AdEventType::Impression, "c1", "a1", T0));
    f.h.advance_watermark(T0 + W - 1 + 10_000 + 23 * HOUR).unwrap();
    f.send(ev(AdEventType::Click, "c1", "a1", T0 + 5)); // 23 h late
    assert_eq!(f.window(MetricsScope::Campaign, "c1"), vec![(T0, m(1, 1, 0, 1000, 0))]);
    assert_eq!(f.h.operator.stats().late_events, 0);
    assert!(f.h.late.is_empty() && f.h.dead_letters.is_empty());
}

#[test]
fn events_beyond_max_lateness_go_to_the_late_output_and_are_counted() {
    let mut f = fixture();
    f.send(ev(AdEventType::Impression, "c1", "a1", T0));
    f.h.advance_watermark(T0 + W - 1 + 10_000 + 24 * HOUR).unwrap();
    f.send(ev(AdEventType::Click, "c1", "a1", T0 + 5));
    assert_eq!(f.h.operator.stats().late_events, 1);
    // SPEC §4: a late event is valid input that arrived late, not a dead letter.
    assert!(f.h.dead_letters.is_empty(), "{:?}", f.h.dead_letters);
    assert_eq!(f.h.late.len(), 1, "one late record per event, not per scope");
    assert!(f.h.late[0].reason.starts_with("LATE_EVENT"));
    assert_eq!(f.h.late[0].stage, "performance");
    assert_eq!(f.window(MetricsScope::Campaign, "c1"), vec![(T0, m(1, 0, 0, 0, 0))]);
}

#[test]
fn a_redelivered_event_is_counted_once_and_its_id_is_kept_for_the_correction_horizon() {
    let mut f = fixture();
    let mut click = ev(AdEventType::Click, "c1", "a1", T0 + 1);
    click.event_id = Some("clk-1".into());
    let mut imp = ev(AdEventType::Impression, "c1", "a1", T0 + 2);
    imp.event_id = Some("imp-1".into());
    for e in [&click, &imp, &click, &imp] {
        f.send(e.clone()); // the producer retried both
    }
    // The same id with other content (a reused id): not counted either (the balance worker refuses it).
    let mut reused = click.clone();
    reused.actual_price = Some(1);
    f.send(reused);
    f.h.advance_watermark(T0 + W + 10_000).unwrap();
    assert_eq!(f.window(MetricsScope::Campaign, "c1"), vec![(T0, m(1, 1, 0, 1000, 0))]);
    assert_eq!(f.h.operator.stats().redelivered, 3);
    // A day later the window can still be corrected: a redelivery then is still recognised.
    f.h.advance_watermark(T0 + W + 10_000 + 23 * HOUR).unwrap();
    assert_eq!(f.h.operator.ids_held(), 2);
    f.send(click.clone());
    assert_eq!(f.window(MetricsScope::Campaign, "c1"), vec![(T0, m(1, 1, 0, 1000, 0))]);
    // Past the horizon the ids are forgotten (the window is final; the event would be late anyway).
    f.h.advance_watermark(T0 + W + 10_000 + 24 * HOUR).unwrap();
    assert_eq!(f.h.operator.ids_held(), 0);
}

#[test]
fn remembered_ids_survive_a_restart() {
    let scope = StateScope::in_memory();
    let cache = MemoryCache::new();
    let db = MemoryDatabase::new();
    let ranker = || Ranker::new(Arc::new(cache.clone()), Arc::new(db.clone()), RankingConfig::default(), 100, "Asia/Seoul").unwrap();
    let mut click = ev(AdEventType::Click, "c1", "a1", T0 + 1);
    click.event_id = Some("clk-1".into());
    let rec = |o| Record::new("d".to_string(), Arc::new(click.clone()), click.timestamp, SourceCoord::new("ad-events", 0, o));
    {
        let op = PerformanceStatement::new(&scope, 0, Arc::new(cache.clone()), PerformanceConfig::default(), ranker()).unwrap();
        let mut h = Harness::new(op);
        h.process(rec(0)).unwrap();
        let mut batch = rtb_stream::state::WriteBatch::new();
        h.operator.flush_state(&mut batch).unwrap();
        scope.backend().apply(batch).unwrap();
    }
    let op = PerformanceStatement::new(&scope, 0, Arc::new(cache.clone()), PerformanceConfig::default(), ranker()).unwrap();
    let mut h = Harness::new(op);
    h.process(rec(1)).unwrap(); // redelivered after the restart
    h.advance_watermark(T0 + W + 10_000).unwrap();
    assert_eq!(h.operator.stats().redelivered, 1);
    assert_eq!(cache.window_metrics(MetricsScope::Campaign, "c1").unwrap()[0].metrics.clicks, 1);
}

#[test]
fn shards_of_one_campaign_window_merge_in_the_cache() {
    let cache = MemoryCache::new();
    let db = MemoryDatabase::new();
    let mut a = fixture_with(cache.clone(), db.clone(), 0);
    let mut b = fixture_with(cache.clone(), db, 1);
    a.many(AdEventType::Impression, "c1", "a1", T0, 3);
    b.many(AdEventType::Impression, "c1", "a1", T0, 7);
    b.send(ev(AdEventType::Click, "c1", "a1", T0));
    a.h.advance_watermark(i64::MAX).unwrap();
    b.h.advance_watermark(i64::MAX).unwrap();
    assert_eq!(a.window(MetricsScope::Campaign, "c1"), vec![(T0, m(10, 1, 0, 1000, 0))]);
    assert_eq!(cache.category_totals("books").unwrap().impressions, 10);
}

#[test]
fn closed_windows_recompute_the_campaigns_ranking() {
    let mut f = fixture();
    for (id, bid) in [("c1", 1000), ("c2", 1100)] {
        f.db.upsert_campaign(&CampaignRow {
            campaign_id: id.into(),
            advertiser_id: "adv".into(),
            product_id: None,
            placement: Placement::Home,
            category: "books".into(),
            bid_price: bid,
            daily_budget: 1_000_000,
            status: CampaignStatus::Active,
            approval_status: ApprovalStatus::Approved,
            effective_from: None,
            rtb_impact: None,
            budget_paused_day: None,
            updated_at: 0,
        })
        .unwrap();
    }
    // c1: 100 impressions, 10 clicks; c2: 100 impressions, 0 clicks. m = 10/200 = 0.05.
    // c1 pCTR (10 + 5)/200 = 0.075, score 75; c2 (0 + 5)/200 = 0.025, score 27.5.
    f.many(AdEventType::Impression, "c1", "a1", T0, 100);
    f.many(AdEventType::Click, "c1", "a1", T0, 10);
    f.many(AdEventType::Impression, "c2", "b1", T0, 100);
    f.h.advance_watermark(T0 + W + 10_000).unwrap();
    let r = f.cache.ranking(Placement::Home, "books").unwrap();
    // c1 pays ceil(27.5 / 0.075) + 10 = ceil(366.67) + 10 = 377.
    assert_eq!(r.iter().map(|e| (e.campaign_id.as_str(), e.cpc)).collect::<Vec<_>>(), vec![("c1", 377), ("c2", 100)]);
    assert_eq!(f.h.operator.stats().recomputes, 1, "one recompute per key and watermark step");
}
