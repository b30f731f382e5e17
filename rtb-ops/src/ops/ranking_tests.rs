#![allow(clippy::unwrap_used)]

use super::*;
use crate::schema::{rfc3339, ApprovalStatus, CampaignEventType, CampaignStatus, StatusReason};
use crate::sink::{MemoryCache, MemoryDatabase, Metrics, MetricsScope, WindowMetrics};
use rtb_stream::{Harness, SourceCoord};

const T0: i64 = 1_705_314_600_000; // 2024-01-15T10:30:00Z

struct Fixture {
    cache: MemoryCache,
    db: MemoryDatabase,
    h: Harness<RankingStatement>,
    offset: u64,
}

fn ranker(cache: &MemoryCache, db: &MemoryDatabase) -> Ranker {
    Ranker::new(Arc::new(cache.clone()), Arc::new(db.clone()), RankingConfig::default(), 100, "Asia/Seoul").unwrap()
}

fn fixture() -> Fixture {
    let cache = MemoryCache::new();
    let db = MemoryDatabase::new();
    let op = RankingStatement::new(&StateScope::in_memory(), Arc::new(cache.clone()), Arc::new(db.clone()), ranker(&cache, &db)).unwrap();
    Fixture { cache, db, h: Harness::new(op), offset: 0 }
}

fn event(t: CampaignEventType, id: &str, category: &str, ts: i64) -> CampaignEvent {
    CampaignEvent {
        event_id: None,
        event_type: t,
        timestamp: ts,
        campaign_id: id.into(),
        advertiser_id: "adv".into(),
        product_id: None,
        placement: Placement::Home,
        category: category.into(),
        bid_price: 1000,
        daily_budget: 10_000,
        status: CampaignStatus::Active,
        approval_status: ApprovalStatus::Approved,
        targeting: None,
        effective_from: None,
        rtb_impact: None,
        status_reason: None,
    }
}

fn created(id: &str, bid: i64, approved: bool, ts: i64) -> CampaignEvent {
    CampaignEvent {
        bid_price: bid,
        approval_status: if approved { ApprovalStatus::Approved } else { ApprovalStatus::Pending },
        ..event(CampaignEventType::Created, id, "books", ts)
    }
}

impl Fixture {
    fn send(&mut self, ev: CampaignEvent) {
        self.offset += 1;
        let key = ev.partition_key();
        let ts = ev.timestamp;
        self.h.process(Record::new(key, ev, ts, SourceCoord::new("campaign-events", 0, self.offset))).unwrap();
    }
    fn ranking(&self, category: &str) -> Vec<(String, i64)> {
        self.cache.ranking(Placement::Home, category).unwrap().into_iter().map(|e| (e.campaign_id, e.cpc)).collect()
    }
}

fn r(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
}

#[test]
fn every_campaign_change_recomputes_its_ranking_at_once() {
    let mut f = fixture();
    f.send(created("c1", 1000, true, T0));
    assert_eq!(f.ranking("books"), r(&[("c1", 100)]), "single campaign pays the reserve");
    f.send(created("c2", 1500, false, T0 + 1));
    assert_eq!(f.ranking("books"), r(&[("c1", 100)]), "pending approval is not eligible");
    // Approval brings a competitor. Both pCTR = 0.01 (empty category):
    // c2 score 15 pays ceil(10 / 0.01) + 10 = 1010; c1 pays the reserve.
    f.send(CampaignEvent { bid_price: 1500, ..event(CampaignEventType::Approved, "c2", "books", T0 + 2) });
    assert_eq!(f.ranking("books"), r(&[("c2", 1010), ("c1", 100)]));
    // A bid update reorders: c1 score 20 pays ceil(15 / 0.01) + 10 = 1510.
    f.send(CampaignEvent { bid_price: 2000, ..event(CampaignEventType::Updated, "c1", "books", T0 + 3) });
    assert_eq!(f.ranking("books"), r(&[("c1", 1510), ("c2", 100)]));
    // A status change to PAUSED drops it.
    f.send(CampaignEvent { status: CampaignStatus::Paused, bid_price: 2000, ..event(CampaignEventType::StatusChanged, "c1", "books", T0 + 4) });
    assert_eq!(f.ranking("books"), r(&[("c2", 100)]));
    assert_eq!(f.h.operator.stats().recomputes, 5);
}

#[test]
fn the_latest_event_by_time_wins_over_a_later_arrival() {
    let mut f = fixture();
    f.send(created("c1", 1000, true, T0 + 10));
    f.send(CampaignEvent { status: CampaignStatus::Paused, ..event(CampaignEventType::StatusChanged, "c1", "books", T0 + 5) });
    assert_eq!(f.ranking("books"), r(&[("c1", 100)]), "the older PAUSED event is ignored");
    assert_eq!(f.h.operator.stats().stale, 1);
    f.send(CampaignEvent { bid_price: 700, ..event(CampaignEventType::Updated, "c1", "books", T0 + 10) });
    assert_eq!(f.db.campaign("c1").unwrap().unwrap().bid_price, 700, "equal times: the later arrival wins");
}

#[test]
fn moving_a_campaign_recomputes_both_categories() {
    let mut f = fixture();
    f.send(created("c1", 1000, true, T0));
    f.send(created("c2", 900, true, T0));
    f.send(CampaignEvent { bid_price: 900, ..event(CampaignEventType::Updated, "c2", "toys", T0 + 1) });
    assert_eq!(f.ranking("books"), r(&[("c1", 100)]));
    assert_eq!(f.ranking("toys"), r(&[("c2", 100)]));
    assert_eq!(f.db.campaigns_in(Placement::Home, "books").unwrap().len(), 1);
}

#[test]
fn future_effective_from_enters_the_ranking_when_the_watermark_reaches_it() {
    let mut f = fixture();
    let from = rfc3339::parse("2024-01-15T11:00:00Z").unwrap();
    f.send(CampaignEvent { effective_from: Some(from), ..created("c1", 1000, true, T0) });
    assert!(f.ranking("books").is_empty());
    f.h.advance_watermark(from - 1).unwrap();
    assert!(f.ranking("books").is_empty(), "one ms before effective_from");
    f.h.advance_watermark(from).unwrap();
    assert_eq!(f.ranking("books"), r(&[("c1", 100)]));
}

#[test]
fn ctr_from_closed_windows_moves_the_ranking() {
    let mut f = fixture();
    f.send(created("c1", 1000, true, T0));
    f.send(created("c2", 1200, true, T0));
    // c1 has 20 clicks in 400 impressions, c2 none in 600: category m = 20/1000 = 0.02.
    // c1 pCTR (20 + 2)/500 = 0.044 → score 44; c2 (0 + 2)/700 = 1/350 → score 3.428…
    for (id, imp, clk) in [("c1", 400, 20), ("c2", 600, 0)] {
        f.cache
            .write_window_metrics(&WindowMetrics {
                scope: MetricsScope::Campaign,
                id: id.into(),
                campaign_id: id.into(),
                category: "books".into(),
                window_start: T0,
                window_end: T0 + 300_000,
                shard: 0,
                metrics: Metrics { impressions: imp, clicks: clk, ..Metrics::default() },
            })
            .unwrap();
    }
    let mut rk = ranker(&f.cache, &f.db);
    let ranked = rk.recompute(Placement::Home, "books", T0 + 300_000).unwrap();
    // c1 pays ceil((1200/350) / 0.044) + 10 = ceil(77.92…) + 10 = 88 → raised to the reserve 100.
    assert_eq!(ranked.iter().map(|e| (e.campaign_id.as_str(), e.cpc)).collect::<Vec<_>>(), vec![("c1", 100), ("c2", 100)]);
    assert!((ranked[0].pctr - 0.044).abs() < 1e-12);
    assert_eq!(rk.recompute_all(T0).unwrap(), 1);
}

#[test]
fn exhausted_budget_of_the_day_is_not_eligible_and_a_raise_clears_the_pause() {
    let mut f = fixture();
    f.send(created("c1", 1000, true, T0));
    f.send(created("c2", 900, true, T0));
    let day = Day(19_737); // 2024-01-15, the Seoul day of T0
    // The budget monitor counts 10 000 of spend, stores the pause and publishes the event.
    f.cache.add_spend_once("c1", day, 10_000, "k", 0).unwrap();
    f.db.set_budget_pause("c1", Some(day)).unwrap();
    f.send(CampaignEvent {
        status: CampaignStatus::Paused,
        status_reason: Some(StatusReason::BudgetExhausted),
        ..event(CampaignEventType::StatusChanged, "c1", "books", T0 + 1)
    });
    let row = f.db.campaign("c1").unwrap().unwrap();
    assert_eq!((row.status, row.effective_status()), (CampaignStatus::Active, CampaignStatus::Paused));
    assert_eq!(f.ranking("books"), r(&[("c2", 100)]));
    // The next Seoul day (15:00 UTC) has no spend: eligible again even before the monitor resumes it.
    let mut rk = ranker(&f.cache, &f.db);
    assert_eq!(rk.recompute(Placement::Home, "books", rfc3339::parse("2024-01-15T15:00:00Z").unwrap()).unwrap().len(), 2);
    // Raising the budget to exactly the spend does not resume; above it does.
    f.send(CampaignEvent { daily_budget: 10_000, ..event(CampaignEventType::Updated, "c1", "books", T0 + 2) });
    assert_eq!(f.ranking("books"), r(&[("c2", 100)]));
    f.send(CampaignEvent { daily_budget: 15_000, ..event(CampaignEventType::Updated, "c1", "books", T0 + 3) });
    assert_eq!(f.ranking("books"), r(&[("c1", 910), ("c2", 100)]));
    assert_eq!(f.h.operator.stats().budget_raises, 1);
    assert_eq!(f.db.campaign("c1").unwrap().unwrap().budget_paused_day, None);
}

#[test]
fn a_recompute_for_an_older_window_keeps_campaigns_created_or_updated_since() {
    // The performance statement recomputes when a window closes, at the window's end: campaigns created
    // (or re-bid) after that time are in the slot already and must stay in its ranking.
    let mut f = fixture();
    f.send(created("c1", 1000, true, T0));
    f.send(created("c2", 1500, true, T0 + 600_000));
    assert_eq!(f.ranking("books").len(), 2);
    let mut ranker = ranker(&f.cache, &f.db);
    let ranked = ranker.recompute(Placement::Home, "books", T0 + 300_000).unwrap();
    assert_eq!(ranked.len(), 2, "c2 (created 5 minutes after the window's end) stays: {ranked:?}");
    assert_eq!(f.ranking("books").len(), 2);
    // A campaign whose own effective_from lies ahead of every change still waits for it.
    f.send(CampaignEvent { effective_from: Some(T0 + 3_600_000), ..created("c3", 2000, true, T0 + 700_000) });
    let ranked = ranker.recompute(Placement::Home, "books", T0 + 300_000).unwrap();
    assert_eq!(ranked.iter().map(|e| e.campaign_id.as_str()).collect::<Vec<_>>().len(), 2, "{ranked:?}");
}
