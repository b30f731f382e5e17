//! Behaviour every [`Cache`] and [`Database`] implementation must show, as reusable checks.
//!
//! Each function takes an **empty** sink, drives it through the contract with hand-computed answers,
//! and panics (with a message) on the first difference. The crate runs them on the memory and embedded
//! implementations; the Redis and PostgreSQL implementations should run them too.

#![allow(clippy::unwrap_used)] // test support: a failed sink call is a failed check


use super::*;
use crate::schema::{ApprovalStatus, CampaignStatus, ConversionType};

fn window(scope: MetricsScope, id: &str, category: &str, start: i64, shard: u32, m: Metrics) -> WindowMetrics {
    WindowMetrics {
        scope,
        id: id.to_string(),
        campaign_id: if scope == MetricsScope::Campaign { id.to_string() } else { "c1".to_string() },
        category: category.to_string(),
        window_start: start,
        window_end: start + 300_000,
        shard,
        metrics: m,
    }
}

fn m(impressions: i64, clicks: i64, spend: i64) -> Metrics {
    Metrics { impressions, clicks, conversions: 0, spend, revenue: 0 }
}

/// Checks rankings, window writes with totals, spend counters and marks.
pub fn check_cache(cache: &dyn Cache) {
    // Rankings replace as a whole.
    let e = |rank: u32, id: &str, cpc: i64| RankedEntry {
        rank,
        campaign_id: id.to_string(),
        bid_price: 1000,
        pctr: 0.01,
        score: 10.0,
        cpc,
    };
    assert!(cache.ranking(Placement::Home, "books").unwrap().is_empty());
    cache.put_ranking(Placement::Home, "books", &[e(1, "a", 510), e(2, "b", 100)]).unwrap();
    cache.put_ranking(Placement::Home, "books", &[e(1, "b", 100)]).unwrap();
    cache.put_ranking(Placement::Search, "books", &[e(1, "z", 100)]).unwrap();
    assert_eq!(cache.ranking(Placement::Home, "books").unwrap(), vec![e(1, "b", 100)]);
    let all = cache.rankings().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].0, all[0].1.as_str()), (Placement::Home, "books"), "ordered by rtb:{{placement}}:{{category}}");

    // Window rows: set semantics, totals move by the difference, shards merge on read.
    let c = MetricsScope::Campaign;
    cache.write_window_metrics(&window(c, "c1", "books", 0, 0, m(100, 2, 2000))).unwrap();
    cache.write_window_metrics(&window(c, "c1", "books", 0, 0, m(100, 2, 2000))).unwrap(); // replay
    cache.write_window_metrics(&window(c, "c1", "books", 0, 3, m(50, 1, 900))).unwrap(); // another shard
    cache.write_window_metrics(&window(c, "c2", "books", 0, 0, m(10, 0, 0))).unwrap();
    cache.write_window_metrics(&window(c, "c1", "books", 300_000, 0, m(20, 1, 1000))).unwrap();
    cache.write_window_metrics(&window(c, "c1", "books", 300_000, 0, m(21, 2, 1500))).unwrap(); // correction
    cache.write_window_metrics(&window(MetricsScope::Ad, "ad1", "books", 0, 0, m(999, 9, 9))).unwrap();
    assert_eq!(cache.campaign_totals("c1").unwrap(), m(171, 5, 4400));
    assert_eq!(cache.category_totals("books").unwrap(), m(181, 5, 4400), "ad rows do not count");
    assert_eq!(cache.campaign_totals("nobody").unwrap(), Metrics::default());
    let w = cache.window_metrics(c, "c1").unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!((w[0].window_start, w[0].metrics, w[0].shard), (0, m(150, 3, 2900), 0));
    assert_eq!((w[1].window_start, w[1].metrics), (300_000, m(21, 2, 1500)));
    let all = cache.all_window_metrics(c).unwrap();
    assert_eq!(all.iter().map(|r| (r.id.as_str(), r.window_start)).collect::<Vec<_>>(), vec![("c1", 0), ("c1", 300_000), ("c2", 0)]);
    assert_eq!(cache.all_window_metrics(MetricsScope::Ad).unwrap().len(), 1);
    // A negative window start orders before zero.
    cache.write_window_metrics(&window(c, "c2", "books", -300_000, 0, m(1, 0, 0))).unwrap();
    assert_eq!(cache.window_metrics(c, "c2").unwrap()[0].window_start, -300_000);

    // Spend counters: exactly once per key, per campaign and day.
    let d1 = crate::calendar::Day(19_737);
    assert_eq!(cache.add_spend_once("c1", d1, 1200, "k1", 1_000).unwrap(), (1200, true));
    assert_eq!(cache.add_spend_once("c1", d1, 1200, "k1", 1_000).unwrap(), (1200, false));
    assert_eq!(cache.add_spend_once("c1", d1, 800, "k2", 2_000).unwrap(), (2000, true));
    assert_eq!(cache.add_spend_once("c1", d1.succ(), 500, "k3", 3_000).unwrap(), (500, true));
    assert_eq!(cache.add_spend_once("c1", d1, -1200, "refund:k1", 4_000).unwrap(), (800, true));
    assert_eq!(cache.spend("c1", d1).unwrap(), 800);
    assert_eq!(cache.spend("c9", d1).unwrap(), 0);

    // Pruning forgets the keys with an event time before the cut-off, never the counters.
    assert_eq!(cache.prune_spend_keys(2_000).unwrap(), 1, "k1 only (k2 is at the cut-off)");
    assert_eq!(cache.prune_spend_keys(2_000).unwrap(), 0, "idempotent");
    assert_eq!(cache.spend("c1", d1).unwrap(), 800);
    assert_eq!(cache.add_spend_once("c1", d1, 1, "k2", 2_000).unwrap(), (800, false), "k2 is kept");
    assert_eq!(cache.add_spend_once("c1", d1, 1, "k1", 1_000).unwrap(), (801, true), "k1 was forgotten");
    assert_eq!(cache.prune_spend_keys(i64::MAX).unwrap(), 4);
    assert_eq!(cache.spend("c1", d1.succ()).unwrap(), 500);

    assert!(cache.mark_once("m").unwrap());
    assert!(!cache.mark_once("m").unwrap());
    assert!(cache.mark_once("m2").unwrap());
}

fn campaign(id: &str, placement: Placement, category: &str, bid: i64) -> CampaignRow {
    CampaignRow {
        campaign_id: id.to_string(),
        advertiser_id: "adv".to_string(),
        product_id: None,
        placement,
        category: category.to_string(),
        bid_price: bid,
        daily_budget: 10_000,
        status: CampaignStatus::Active,
        approval_status: ApprovalStatus::Approved,
        effective_from: None,
        rtb_impact: None,
        budget_paused_day: None,
        updated_at: 0,
    }
}

fn ledger(key: &str, adv: &str, kind: LedgerKind, amount: i64) -> LedgerEntry {
    LedgerEntry {
        idempotency_key: key.to_string(),
        advertiser_id: adv.to_string(),
        campaign_id: Some("c1".to_string()),
        kind,
        amount,
        event_time: 0,
        reference: key.to_string(),
        fingerprint: 7,
    }
}

/// Checks advertisers, the ledger, conversions, campaigns and alerts.
pub fn check_database(db: &dyn Database) {
    // Ledger: exactly once per key; balance = opening + Σ amounts, also when the opening comes later.
    db.upsert_advertiser(&Advertiser { advertiser_id: "a1".into(), opening_balance: 100_000, time_zone: "Asia/Seoul".into() }).unwrap();
    assert_eq!(db.apply_ledger(&ledger("k1", "a1", LedgerKind::Charge, -1200)).unwrap(), LedgerOutcome::Applied { balance: 98_800 });
    assert_eq!(db.apply_ledger(&ledger("k1", "a1", LedgerKind::Charge, -1200)).unwrap(), LedgerOutcome::Duplicate);
    assert_eq!(db.apply_ledger(&ledger("k2", "a1", LedgerKind::Charge, -1200)).unwrap(), LedgerOutcome::Applied { balance: 97_600 });
    assert_eq!(db.apply_ledger(&ledger("r1", "a1", LedgerKind::Refund, 1200)).unwrap(), LedgerOutcome::Applied { balance: 98_800 });
    assert_eq!(db.apply_ledger(&ledger("k3", "new", LedgerKind::Charge, -500)).unwrap(), LedgerOutcome::Applied { balance: -500 });
    db.upsert_advertiser(&Advertiser { advertiser_id: "new".into(), opening_balance: 2_000, time_zone: "UTC".into() }).unwrap();
    assert_eq!(db.balance("new").unwrap(), Some(1_500));
    assert_eq!(db.balance("a1").unwrap(), Some(98_800));
    assert_eq!(db.balance("ghost").unwrap(), None);
    let rows = db.ledger().unwrap();
    assert_eq!(rows.iter().map(|r| r.entry.idempotency_key.as_str()).collect::<Vec<_>>(), vec!["k1", "k2", "r1", "k3"], "application order");
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(rows[2].balance_after, 98_800);
    let advs = db.advertisers().unwrap();
    assert_eq!(advs.iter().map(|a| (a.advertiser_id.as_str(), a.balance)).collect::<Vec<_>>(), vec![("a1", 98_800), ("new", 1_500)]);
    assert_eq!(db.advertiser("new").unwrap().map(|a| a.time_zone), Some("UTC".to_string()));
    // A batch applies in order, each key once (also a key repeated inside the batch).
    let batch = [
        ledger("b1", "a1", LedgerKind::Charge, -100),
        ledger("k1", "a1", LedgerKind::Charge, -1200),
        ledger("b2", "a1", LedgerKind::Charge, -200),
        ledger("b1", "a1", LedgerKind::Charge, -100),
    ];
    assert_eq!(
        db.apply_ledger_batch(&batch).unwrap(),
        vec![
            LedgerOutcome::Applied { balance: 98_700 },
            LedgerOutcome::Duplicate,
            LedgerOutcome::Applied { balance: 98_500 },
            LedgerOutcome::Duplicate
        ]
    );
    assert_eq!(db.ledger().unwrap().len(), 6);

    // The same key with another fingerprint is a conflict (a reused id): nothing changes.
    let reused = LedgerEntry { fingerprint: 8, amount: -999, ..ledger("k1", "a1", LedgerKind::Charge, -1200) };
    assert_eq!(db.apply_ledger(&reused).unwrap(), LedgerOutcome::Conflict);
    assert_eq!(db.apply_ledger_batch(std::slice::from_ref(&reused)).unwrap(), vec![LedgerOutcome::Conflict]);
    assert_eq!(db.balance("a1").unwrap(), Some(98_500));
    assert_eq!(db.ledger().unwrap().len(), 6);
    // Inside one batch too: the first content wins, the other is a conflict.
    let first = ledger("b3", "a1", LedgerKind::Charge, -10);
    let other = LedgerEntry { fingerprint: 9, ..first.clone() };
    assert_eq!(
        db.apply_ledger_batch(&[first.clone(), other, first]).unwrap(),
        vec![LedgerOutcome::Applied { balance: 98_490 }, LedgerOutcome::Conflict, LedgerOutcome::Duplicate]
    );

    // Pruning forgets keys older than the cut-off (by the entry's event time); rows and balances stay.
    let at = |key: &str, t: i64| LedgerEntry { event_time: t, ..ledger(key, "a1", LedgerKind::Charge, -1) };
    assert!(matches!(db.apply_ledger(&at("t1", 1_000)).unwrap(), LedgerOutcome::Applied { .. }));
    assert!(matches!(db.apply_ledger(&at("t2", 2_000)).unwrap(), LedgerOutcome::Applied { .. }));
    assert_eq!(db.prune_ledger_keys(1).unwrap(), 7, "the seven keys at event time 0");
    assert_eq!(db.prune_ledger_keys(2_000).unwrap(), 1, "t1; t2 is at the cut-off");
    assert_eq!(db.prune_ledger_keys(2_000).unwrap(), 0, "idempotent");
    assert_eq!(db.ledger().unwrap().len(), 9, "the history is never pruned");
    assert_eq!(db.balance("a1").unwrap(), Some(98_488));
    assert_eq!(db.apply_ledger(&at("t2", 2_000)).unwrap(), LedgerOutcome::Duplicate, "t2 is kept");
    assert!(matches!(db.apply_ledger(&at("t1", 1_000)).unwrap(), LedgerOutcome::Applied { .. }), "t1 was forgotten");
    assert_eq!(db.balance("a1").unwrap(), Some(98_487));

    // Conversions: one per order.
    let conv = |order: &str, campaign: Option<&str>| ConversionRow {
        order_id: order.to_string(),
        device_id: "d".into(),
        product_id: "p".into(),
        campaign_id: campaign.map(str::to_string),
        ad_id: None,
        advertiser_id: None,
        click_timestamp: None,
        conversion_timestamp: 5,
        revenue_amount: 50_000,
        conversion_type: ConversionType::Purchase,
        source: None,
    };
    assert!(db.insert_conversion_once(&conv("o1", Some("c1"))).unwrap());
    assert!(!db.insert_conversion_once(&conv("o1", Some("c2"))).unwrap());
    assert!(db.insert_conversion_once(&conv("o0", None)).unwrap());
    let convs = db.conversions().unwrap();
    assert_eq!(convs.iter().map(|c| (c.order_id.as_str(), c.campaign_id.as_deref())).collect::<Vec<_>>(), vec![("o0", None), ("o1", Some("c1"))]);
    // Duplicate orders: recorded once each; the order's own result (a redelivery) is not a duplicate.
    assert!(!db.record_duplicate_order(&conv("o1", Some("c1"))).unwrap(), "the order's result redelivered");
    let later = ConversionRow { conversion_timestamp: 9, ..conv("o1", Some("c2")) };
    assert!(db.record_duplicate_order(&later).unwrap());
    assert!(!db.record_duplicate_order(&later).unwrap(), "the same duplicate redelivered");
    assert!(db.record_duplicate_order(&conv("o0", Some("c3"))).unwrap());
    let dups = db.duplicate_orders().unwrap();
    assert_eq!(dups, vec![conv("o0", Some("c3")), later]);
    assert_eq!(db.conversions().unwrap(), convs, "a duplicate changes no result");
    // With source coordinates, a byte-identical report of an order read at another offset is a duplicate;
    // the same coordinates again are a redelivery.
    let at = |order: &str, offset: u64| ConversionRow {
        source: Some(rtb_stream::SourceCoord::new("conversions", 0, offset)),
        ..conv(order, None)
    };
    assert!(db.insert_conversion_once(&at("o2", 10)).unwrap());
    assert!(!db.record_duplicate_order(&at("o2", 10)).unwrap(), "the claimer redelivered");
    assert!(db.record_duplicate_order(&at("o2", 11)).unwrap(), "identical bytes, another offset");
    assert!(!db.record_duplicate_order(&at("o2", 11)).unwrap(), "that duplicate redelivered");
    assert_eq!(db.duplicate_orders().unwrap().iter().filter(|r| r.order_id == "o2").count(), 1);

    // Campaigns: index follows placement/category changes; upsert keeps the budget pause.
    let day = crate::calendar::Day(19_737);
    assert!(db.upsert_campaign(&campaign("c2", Placement::Home, "books", 900)).unwrap().is_none());
    db.upsert_campaign(&campaign("c1", Placement::Home, "books", 1000)).unwrap();
    db.upsert_campaign(&campaign("c3", Placement::Search, "books", 1000)).unwrap();
    assert!(!db.set_budget_pause("ghost", Some(day)).unwrap());
    assert!(db.set_budget_pause("c1", Some(day)).unwrap());
    assert!(!db.set_budget_pause("c1", Some(day)).unwrap());
    let mut changed = campaign("c1", Placement::Home, "books", 1100);
    changed.budget_paused_day = None; // must not clear the pause
    let prev = db.upsert_campaign(&changed).unwrap().unwrap();
    assert_eq!(prev.bid_price, 1000);
    let now = db.campaign("c1").unwrap().unwrap();
    assert_eq!((now.bid_price, now.budget_paused_day, now.effective_status()), (1100, Some(day), CampaignStatus::Paused));
    let ids = |p, c| db.campaigns_in(p, c).unwrap().into_iter().map(|r| r.campaign_id).collect::<Vec<_>>();
    assert_eq!(ids(Placement::Home, "books"), vec!["c1", "c2"]);
    db.upsert_campaign(&campaign("c2", Placement::Search, "books", 900)).unwrap();
    assert_eq!(ids(Placement::Home, "books"), vec!["c1"]);
    assert_eq!(ids(Placement::Search, "books"), vec!["c2", "c3"]);
    assert!(ids(Placement::Home, "toys").is_empty());
    assert!(!db.clear_budget_pause_through("c1", crate::calendar::Day(day.0 - 1)).unwrap(), "paused on a later day");
    assert!(db.clear_budget_pause_through("c1", day).unwrap());
    assert!(!db.clear_budget_pause_through("c1", day).unwrap());
    assert!(db.set_budget_pause("c1", Some(day)).unwrap());
    assert!(db.set_budget_pause("c1", None).unwrap());
    assert_eq!(db.campaign("c1").unwrap().unwrap().effective_status(), CampaignStatus::Active);
    assert_eq!(db.campaigns().unwrap().len(), 3);

    // Alerts: once per key.
    let alert = |key: &str| AlertRow {
        key: key.to_string(),
        campaign_id: "c1".into(),
        advertiser_id: "a1".into(),
        day,
        threshold_pct: 80,
        spend: 8_000,
        daily_budget: 10_000,
        event_time: 0,
    };
    assert!(db.insert_alert_once(&alert("budget:c1:2024-01-15:80")).unwrap());
    assert!(!db.insert_alert_once(&alert("budget:c1:2024-01-15:80")).unwrap());
    assert!(db.insert_alert_once(&alert("budget:c1:2024-01-15:100")).unwrap());
    assert_eq!(db.alerts().unwrap().len(), 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cache_conforms() {
        check_cache(&MemoryCache::new());
    }

    #[test]
    fn memory_database_conforms() {
        check_database(&MemoryDatabase::new());
    }

    #[test]
    fn embedded_cache_conforms() {
        check_cache(&EmbeddedCache::temporary().unwrap());
    }

    #[test]
    fn embedded_database_conforms() {
        check_database(&EmbeddedDatabase::temporary().unwrap());
    }

    #[test]
    fn embedded_sinks_survive_reopen_and_share_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = super::super::EmbeddedStore::open(dir.path()).unwrap();
            let cache = EmbeddedCache::with_store(&db);
            let store = EmbeddedDatabase::with_store(&db);
            cache.add_spend_once("c", crate::calendar::Day(1), 7, "k", 0).unwrap();
            store.apply_ledger(&ledger("k", "a", LedgerKind::Charge, -7)).unwrap();
            cache.flush().unwrap();
            store.flush().unwrap();
        }
        let db = super::super::EmbeddedStore::open(dir.path()).unwrap();
        let cache = EmbeddedCache::with_store(&db);
        let store = EmbeddedDatabase::with_store(&db);
        assert_eq!(cache.add_spend_once("c", crate::calendar::Day(1), 7, "k", 0).unwrap(), (7, false));
        assert_eq!(store.apply_ledger(&ledger("k", "a", LedgerKind::Charge, -7)).unwrap(), LedgerOutcome::Duplicate);
        assert_eq!(store.balance("a").unwrap(), Some(-7));
    }

    /// `sync` is the sinks' maintenance: keys older than the retention (behind the newest event time the
    /// sink was given) are pruned there, once the cut-off moved by a step.
    fn check_maintenance(cache: &dyn Cache, db: &dyn Database, cache_keys: &dyn Fn() -> usize, db_keys: &dyn Fn() -> usize) {
        const H: i64 = 3_600_000;
        let day = crate::calendar::Day(1);
        for i in 0..10 {
            cache.add_spend_once("c", day, 1, &format!("spend:{i}"), i * H).unwrap();
            db.apply_ledger(&LedgerEntry { event_time: i * H, ..ledger(&format!("charge:{i}"), "a", LedgerKind::Charge, -1) }).unwrap();
        }
        assert_eq!((cache_keys(), db_keys()), (10, 10));
        // Newest = 9 h, retention 5 h: keys before 4 h go (0, 1, 2, 3 h).
        cache.sync().unwrap();
        db.sync().unwrap();
        assert_eq!((cache_keys(), db_keys()), (6, 6));
        // Newest moves by less than the 1 h step: nothing is scanned.
        cache.add_spend_once("c", day, 1, "spend:late", 9 * H + 1).unwrap();
        db.apply_ledger(&LedgerEntry { event_time: 9 * H + 1, ..ledger("charge:late", "a", LedgerKind::Charge, -1) }).unwrap();
        cache.sync().unwrap();
        db.sync().unwrap();
        assert_eq!((cache_keys(), db_keys()), (7, 7));
        // A step later the 4 h keys go too.
        cache.add_spend_once("c", day, 1, "spend:10", 10 * H).unwrap();
        db.apply_ledger(&LedgerEntry { event_time: 10 * H, ..ledger("charge:10", "a", LedgerKind::Charge, -1) }).unwrap();
        cache.sync().unwrap();
        db.sync().unwrap();
        assert_eq!((cache_keys(), db_keys()), (7, 7));
        assert_eq!(db.ledger().unwrap().len(), 12, "rows stay");
        assert_eq!(cache.spend("c", day).unwrap(), 12);
        // A replay of a pruned key is out of reach by construction; the kept ones are still recognised.
        assert_eq!(cache.add_spend_once("c", day, 1, "spend:9", 9 * H).unwrap(), (12, false));
    }

    #[test]
    fn sinks_prune_old_idempotency_keys_in_their_maintenance() {
        let r = KeyRetention { keep: std::time::Duration::from_secs(5 * 3_600), prune_step: std::time::Duration::from_secs(3_600) };
        let (cache, db) = (MemoryCache::with_retention(r), MemoryDatabase::with_retention(r));
        check_maintenance(&cache, &db, &|| cache.spend_keys_held(), &|| db.ledger_keys_held());
        let (cache, db) =
            (EmbeddedCache::temporary().unwrap().with_retention(r), EmbeddedDatabase::temporary().unwrap().with_retention(r));
        check_maintenance(&cache, &db, &|| cache.spend_keys_held(), &|| db.ledger_keys_held());
    }

    #[test]
    fn the_default_key_retention_is_input_retention_plus_the_correction_horizon() {
        assert_eq!(KeyRetention::default().keep, std::time::Duration::from_secs((7 * 24 + 24) * 3_600));
    }

    #[test]
    fn concurrent_ledger_writers_apply_each_key_once() {
        let db = EmbeddedDatabase::temporary().unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        db.apply_ledger(&ledger(&format!("k{i}"), "a", LedgerKind::Charge, -10)).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(db.balance("a").unwrap(), Some(-2_000));
        assert_eq!(db.ledger().unwrap().len(), 200);
    }
}
