#![allow(clippy::unwrap_used)]

use super::*;
use crate::schema::{rfc3339, AdEventType, ApprovalStatus, Placement};
use crate::sink::{Advertiser, MemoryCache, MemoryDatabase};
use rtb_stream::{Harness, SourceCoord};

fn ts(s: &str) -> i64 {
    rfc3339::parse(s).unwrap()
}

fn jan(d: u32) -> Day {
    Day::from_ymd(2024, 1, d).unwrap()
}

struct F {
    cache: MemoryCache,
    db: MemoryDatabase,
    h: Harness<BudgetMonitor>,
}

fn fixture(cfg: BudgetConfig) -> F {
    let cache = MemoryCache::new();
    let db = MemoryDatabase::new();
    db.upsert_advertiser(&Advertiser { advertiser_id: "adv".into(), opening_balance: 1_000_000, time_zone: "Asia/Seoul".into() }).unwrap();
    db.upsert_campaign(&CampaignRow {
        campaign_id: "c1".into(),
        advertiser_id: "adv".into(),
        product_id: None,
        placement: Placement::Home,
        category: "books".into(),
        bid_price: 5000,
        daily_budget: 10_000,
        status: CampaignStatus::Active,
        approval_status: ApprovalStatus::Approved,
        effective_from: None,
        rtb_impact: None,
        budget_paused_day: None,
        updated_at: 0,
    })
    .unwrap();
    let op = BudgetMonitor::new(&StateScope::in_memory(), Arc::new(cache.clone()), Arc::new(db.clone()), cfg).unwrap();
    F { cache, db, h: Harness::new(op) }
}

fn click(t: i64, price: i64, offset: u64) -> Record<String, Arc<AdEvent>> {
    let ev = AdEvent {
        event_id: None,
        event_type: AdEventType::Click,
        timestamp: t,
        device_id: "d".into(),
        session_id: None,
        ad_id: "ad".into(),
        campaign_id: "c1".into(),
        advertiser_id: "adv".into(),
        product_id: None,
        placement: Placement::Home,
        category: "books".into(),
        bid_price: Some(20_000),
        actual_price: Some(price),
        search_term: None,
        revenue_amount: None,
        order_id: None,
    };
    Record::new("d".into(), Arc::new(ev), t, SourceCoord::new("ad-events", 1, offset))
}

impl F {
    fn statuses(&mut self) -> Vec<(CampaignStatus, StatusReason, String)> {
        self.h
            .drain()
            .into_iter()
            .map(|o| {
                assert_eq!(o.topic, "campaign-events");
                assert_eq!(o.record.key.as_deref(), Some(b"HOME:books".as_slice()));
                let ev: CampaignEvent = serde_json::from_slice(&o.record.payload).unwrap();
                assert_eq!(ev.event_type, CampaignEventType::StatusChanged);
                (ev.status, ev.status_reason.unwrap(), rfc3339::format(ev.timestamp).unwrap())
            })
            .collect()
    }
    fn alerts(&self) -> Vec<(String, u32, i64)> {
        self.db.alerts().unwrap().into_iter().map(|a| (a.day.to_string(), a.threshold_pct, a.spend)).collect()
    }
    fn paused_day(&self) -> Option<Day> {
        self.db.campaign("c1").unwrap().unwrap().budget_paused_day
    }
}

#[test]
fn alerts_pause_and_resume_across_a_seoul_midnight() {
    let mut f = fixture(BudgetConfig::default());
    // 23:00 KST on Jan 15 = 14:00 UTC.
    f.h.process(click(ts("2024-01-15T14:00:00Z"), 4000, 0)).unwrap();
    f.h.process(click(ts("2024-01-15T14:01:00Z"), 4000, 1)).unwrap(); // 8000 = 80 %
    assert_eq!(f.alerts(), vec![("2024-01-15".to_string(), 80, 8000)]);
    f.h.process(click(ts("2024-01-15T14:02:00Z"), 1000, 2)).unwrap(); // 9000: no new alert
    assert_eq!(f.alerts().len(), 1);
    assert!(f.statuses().is_empty());
    f.h.process(click(ts("2024-01-15T14:03:00Z"), 1000, 3)).unwrap(); // 10 000 = 100 %
    assert_eq!(f.alerts().len(), 2);
    assert_eq!(f.paused_day(), Some(jan(15)));
    assert_eq!(f.db.campaign("c1").unwrap().unwrap().effective_status(), CampaignStatus::Paused);
    assert_eq!(f.statuses(), vec![(CampaignStatus::Paused, StatusReason::BudgetExhausted, "2024-01-15T14:03:00Z".to_string())]);
    // The same click replayed, and one more in-flight click, change neither alerts nor status events.
    f.h.process(click(ts("2024-01-15T14:03:00Z"), 1000, 3)).unwrap();
    f.h.process(click(ts("2024-01-15T14:30:00Z"), 500, 4)).unwrap();
    assert_eq!(f.cache.spend("c1", jan(15)).unwrap(), 10_500);
    assert_eq!((f.alerts().len(), f.statuses().len()), (2, 0));
    assert_eq!(f.h.operator.stats().replayed, 1);
    // Midnight in Seoul is 15:00 UTC: one ms before, still paused; at midnight, resumed.
    f.h.advance_watermark(ts("2024-01-15T15:00:00Z") - 1).unwrap();
    assert_eq!(f.paused_day(), Some(jan(15)));
    f.h.advance_watermark(ts("2024-01-15T15:00:00Z")).unwrap();
    assert_eq!(f.paused_day(), None);
    assert_eq!(f.statuses(), vec![(CampaignStatus::Active, StatusReason::BudgetNewDay, "2024-01-15T15:00:00Z".to_string())]);
    // The new day counts from zero.
    f.h.process(click(ts("2024-01-15T15:00:01Z"), 7000, 5)).unwrap();
    assert_eq!(f.cache.spend("c1", jan(16)).unwrap(), 7000);
    assert_eq!(f.alerts().len(), 2);
    f.h.process(click(ts("2024-01-15T16:00:00Z"), 1000, 6)).unwrap(); // 8000 on Jan 16
    assert_eq!(f.alerts().last().unwrap(), &("2024-01-16".to_string(), 80, 8000));
    let s = f.h.operator.stats();
    assert_eq!((s.clicks, s.alerts, s.pauses, s.resumes), (8, 3, 1, 1));
}

#[test]
fn a_click_of_the_next_day_resumes_without_a_watermark() {
    let mut f = fixture(BudgetConfig::default());
    f.h.process(click(ts("2024-01-15T14:00:00Z"), 10_000, 0)).unwrap();
    assert_eq!(f.paused_day(), Some(jan(15)));
    f.statuses();
    f.h.process(click(ts("2024-01-15T15:10:00Z"), 300, 1)).unwrap(); // 00:10 KST Jan 16
    assert_eq!(f.paused_day(), None);
    assert_eq!(f.statuses(), vec![(CampaignStatus::Active, StatusReason::BudgetNewDay, "2024-01-15T15:10:00Z".to_string())]);
    // The timer registered at the pause finds nothing left to resume.
    f.h.advance_watermark(ts("2024-01-16T00:00:00Z")).unwrap();
    assert!(f.statuses().is_empty());
}

#[test]
fn a_late_click_of_yesterday_alerts_but_does_not_pause_today() {
    let mut f = fixture(BudgetConfig::default());
    f.h.process(click(ts("2024-01-15T10:00:00Z"), 9_000, 0)).unwrap();
    f.h.advance_watermark(ts("2024-01-15T16:00:00Z")).unwrap(); // 01:00 KST Jan 16
    f.h.process(click(ts("2024-01-15T11:00:00Z"), 1_000, 1)).unwrap(); // Jan 15 reaches 100 %
    assert_eq!(f.alerts().iter().map(|a| a.1).collect::<Vec<_>>(), vec![80, 100]);
    assert_eq!(f.paused_day(), None);
    assert!(f.statuses().is_empty());
}

#[test]
fn refunds_lower_the_day_and_a_raised_budget_pauses_again_at_the_new_limit() {
    let mut f = fixture(BudgetConfig::default());
    f.h.process(click(ts("2024-01-15T01:00:00Z"), 10_000, 0)).unwrap();
    assert_eq!(f.statuses().len(), 1);
    // A refund of 2000 lowers the day's spend (the compensation worker's call), idempotently.
    assert_eq!(f.cache.add_spend_once("c1", jan(15), -2000, "refund:x", 0).unwrap(), (8_000, true));
    assert_eq!(f.cache.add_spend_once("c1", jan(15), -2000, "refund:x", 0).unwrap(), (8_000, false));
    // The ranking statement cleared the pause after a raise to 20 000 (simulated here).
    f.db.set_budget_pause("c1", None).unwrap();
    let mut row = f.db.campaign("c1").unwrap().unwrap();
    row.daily_budget = 20_000;
    f.db.upsert_campaign(&row).unwrap();
    f.h.process(click(ts("2024-01-15T02:00:00Z"), 11_000, 1)).unwrap(); // 19 000
    assert_eq!(f.paused_day(), None);
    f.h.process(click(ts("2024-01-15T03:00:00Z"), 1_000, 2)).unwrap(); // 20 000
    assert_eq!(f.paused_day(), Some(jan(15)));
    assert_eq!(f.statuses().len(), 1, "paused again at the new budget");
}

#[test]
fn wall_clock_resume_when_enabled() {
    let mut f = fixture(BudgetConfig { resume_on_processing_time: true, ..BudgetConfig::default() });
    f.h.process(click(ts("2024-01-15T14:00:00Z"), 10_000, 0)).unwrap();
    f.statuses();
    f.h.advance_processing_time(ts("2024-01-15T14:59:59Z")).unwrap();
    assert_eq!(f.paused_day(), Some(jan(15)));
    f.h.advance_processing_time(ts("2024-01-15T15:00:00Z")).unwrap();
    assert_eq!(f.paused_day(), None);
    assert_eq!(f.statuses().len(), 1);
}

#[test]
fn unknown_campaigns_and_other_time_zones() {
    let mut f = fixture(BudgetConfig::default());
    f.db.upsert_advertiser(&Advertiser { advertiser_id: "adv".into(), opening_balance: 0, time_zone: "UTC".into() }).unwrap();
    // A fresh monitor (zones are cached per monitor): in UTC, 14:00Z and 23:59Z are one day.
    let mut h = Harness::new(
        BudgetMonitor::new(&StateScope::in_memory(), Arc::new(f.cache.clone()), Arc::new(f.db.clone()), BudgetConfig::default()).unwrap(),
    );
    h.process(click(ts("2024-01-15T14:00:00Z"), 5_000, 0)).unwrap();
    h.process(click(ts("2024-01-15T23:59:00Z"), 5_000, 1)).unwrap();
    assert_eq!(f.cache.spend("c1", jan(15)).unwrap(), 10_000);
    assert_eq!(f.paused_day(), Some(jan(15)));
    let mut other = click(ts("2024-01-15T14:00:00Z"), 100, 2);
    Arc::make_mut(&mut other.value).campaign_id = "ghost".into();
    f.h.process(other).unwrap();
    assert_eq!(f.h.operator.stats().unknown_campaigns, 1);
}

#[test]
fn the_end_of_input_watermark_is_no_day_rollover_and_settle_makes_pauses_exact() {
    let mut f = fixture(BudgetConfig::default());
    f.h.process(click(ts("2024-01-15T14:00:00Z"), 10_000, 0)).unwrap();
    f.statuses();
    f.h.advance_watermark(i64::MAX).unwrap();
    assert_eq!(f.paused_day(), Some(jan(15)), "finishing the input resumes nothing");
    assert!(f.statuses().is_empty());
    let cfg = BudgetConfig::default();
    // At the last event time (still Jan 15 in Seoul) the pause is right: nothing changes.
    assert_eq!(settle_pauses(&f.cache, &f.db, &cfg, ts("2024-01-15T14:30:00Z")).unwrap(), 0);
    // Had the data ended on Jan 16 (Seoul), the campaign is not exhausted that day: resumed.
    assert_eq!(settle_pauses(&f.cache, &f.db, &cfg, ts("2024-01-15T15:30:00Z")).unwrap(), 1);
    assert_eq!(f.paused_day(), None);
    // And a campaign exhausted on the final day without a stored pause gets one.
    f.cache.add_spend_once("c1", jan(16), 10_000, "x", 0).unwrap();
    assert_eq!(settle_pauses(&f.cache, &f.db, &cfg, ts("2024-01-15T15:30:00Z")).unwrap(), 1);
    assert_eq!(f.paused_day(), Some(jan(16)));
}
