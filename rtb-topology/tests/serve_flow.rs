//! The whole loop through `rtb serve` on the embedded default, over real HTTP: advertisers and campaigns
//! created and approved, the ranking, impressions and clicks (duplicates among them) priced by GSP, the
//! charge and the refund in the ledger, performance windows, an attributed conversion, and the budget
//! pause — each seen through the API. Then the same loop with the sinks on Redis and PostgreSQL
//! (`rtb serve --redis URL --postgres URL`), and with the log on Kafka as well (`--kafka`), checked in the
//! servers too.

mod serve_support;
mod servers_support;

use rtb_ops::schema::Placement;
use rtb_ops::sink::{Cache, Database, LedgerKind};
use serde_json::{json, Value};
use serve_support::*;

fn ranking(s: &Server, category: &str) -> Vec<(String, i64)> {
    s.get_ok(INGEST, &format!("/v1/rankings/HOME/{category}"))["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["campaign_id"].as_str().expect("id").to_string(), e["cpc"].as_i64().expect("cpc")))
        .collect()
}

#[test]
fn campaigns_traffic_charges_refunds_metrics_conversions_and_budget_pause() {
    whole_loop(&[]);
}

#[test]
fn the_same_loop_on_redis_and_postgres_writes_the_servers() {
    let servers = servers_support::Servers::new();
    whole_loop(&["--redis", &servers.redis, "--postgres", &servers.postgres]);
    check_servers(&servers);
}

/// Kafka (the log and the operators' state: `rtb serve --kafka`), Redis and PostgreSQL together: the
/// API publishes to the cluster's topics, the topology consumes them and writes the servers.
#[test]
fn the_same_loop_on_kafka_redis_and_postgres() {
    servers_support::require_broker();
    let brokers = servers_support::brokers();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let prefix = format!("t-serve-{}-{nanos}-", std::process::id());
    let servers = servers_support::Servers::new();
    whole_loop(&["--kafka", &brokers, "--topic-prefix", &prefix, "--redis", &servers.redis, "--postgres", &servers.postgres]);
    check_servers(&servers);
}

/// What the API answered came from the servers: the ledger is in PostgreSQL, the ranking in Redis.
fn check_servers(servers: &servers_support::Servers) {
    let ledger = servers.db.ledger().expect("ledger in PostgreSQL");
    let acme: Vec<(LedgerKind, i64)> =
        ledger.iter().filter(|r| r.entry.advertiser_id == "acme").map(|r| (r.entry.kind, r.entry.amount)).collect();
    assert_eq!(acme.iter().filter(|(k, _)| *k == LedgerKind::Charge).count(), 3, "{acme:?}");
    assert!(acme.contains(&(LedgerKind::Refund, 1_620)), "{acme:?}");
    assert_eq!(
        servers.db.balance("acme").expect("balance"),
        Some(1_000_000 + acme.iter().map(|(_, a)| a).sum::<i64>()),
        "balance = opening + the ledger"
    );
    let ranked = servers.cache.ranking(Placement::Home, "laptops").expect("ranking in Redis");
    assert!(ranked.iter().any(|e| e.campaign_id == "other-o"), "{ranked:?}");
    assert!(!ranked.iter().any(|e| e.campaign_id == "acme-b"), "paused then deleted: {ranked:?}");
}

/// The loop through a fresh `rtb serve` started with `extra` arguments.
fn whole_loop(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = token_file(dir.path());
    let mut args = vec!["--tokens", tokens.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    let s = Server::start(&dir.path().join("data"), &args);

    s.post_expect(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "acme", "opening_balance": 1_000_000, "time_zone": "UTC"}), 201);
    s.post_expect(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "other", "opening_balance": 500_000, "time_zone": "UTC"}), 201);
    let create = |token: &str, id: &str, adv: &str, bid: i64, budget: i64, product: &str| {
        let c = s.post_expect(
            token,
            "/v1/campaigns",
            &json!({"campaign_id": id, "advertiser_id": adv, "product_id": product, "placement": "HOME",
                    "category": "laptops", "bid_price": bid, "daily_budget": budget}),
            201,
        );
        assert_eq!((c["status"].as_str(), c["approval_status"].as_str()), (Some("PENDING"), Some("PENDING")), "{c}");
    };
    create(ACME, "acme-a", "acme", 1_000, 1_000_000, "p-a");
    create(ADMIN, "acme-b", "acme", 800, 1_000_000, "p-b");
    create(OTHER, "other-o", "other", 600, 1_500, "p-o");
    // Not approved: nothing ranked, and the campaign says why.
    let c = eventually(30, "acme-a processed", || {
        let c = s.get_ok(ACME, "/v1/campaigns/acme-a");
        (c["processed"] == true).then_some(c)
    });
    assert!(c["why"].as_str().expect("why").contains("awaiting approval"), "{c}");
    assert!(ranking(&s, "laptops").is_empty());

    for id in ["acme-a", "acme-b", "other-o"] {
        let c = s.post_expect(ADMIN, &format!("/v1/campaigns/{id}/approve"), &json!({}), 200);
        assert_eq!((c["status"].as_str(), c["approval_status"].as_str()), (Some("ACTIVE"), Some("APPROVED")), "{c}");
    }
    // Equal pCTR (no data yet): ranked by bid; GSP: each pays the next one's bid + 10, the last the reserve.
    let ranked = eventually(30, "three campaigns ranked", || {
        let r = ranking(&s, "laptops");
        (r.len() == 3).then_some(r)
    });
    assert_eq!(
        ranked,
        vec![("acme-a".to_string(), 810), ("acme-b".to_string(), 610), ("other-o".to_string(), 100)]
    );
    let c = s.get_ok(ACME, "/v1/campaigns/acme-a");
    assert_eq!((c["rank"].as_i64(), c["cpc"].as_i64()), (Some(1), Some(810)), "{c}");
    assert!(c["why"].as_str().expect("why").starts_with("serving: rank 1 of 3"), "{c}");

    // Traffic 20–25 minutes ago: 10 impressions of acme-a, and device d1 clicking ad a1 three times within
    // a minute (two duplicates). No actual_price: the server fills the live GSP price.
    // t0 is just after the start of a 5-minute window, so that every event below falls in that one window.
    let t0 = (now_ms() - 20 * 60_000).div_euclid(300_000) * 300_000 + 1_000;
    let mut batch: Vec<Value> =
        (0..10).map(|i| ad("IMPRESSION", &format!("d{i}"), "a1", "acme-a", "acme", "laptops", t0 + i)).collect();
    for k in 0..3 {
        let mut click = ad("CLICK", "d1", "a1", "acme-a", "acme", "laptops", t0 + 1_000 + k * 10_000);
        click["product_id"] = json!("p-a"); // what a conversion of p-a is attributed by
        batch.push(click);
    }
    let r = s.post_expect(INGEST, "/v1/events/ad", &json!(batch), 202);
    assert_eq!(r["accepted"], 13);
    let prices: Vec<i64> = r["events"].as_array().expect("events").iter().filter_map(|e| e["actual_price"].as_i64()).collect();
    assert_eq!(prices, vec![810, 810, 810], "each click priced by the live ranking");
    // An order of the clicked product on d1, 5 minutes after the clicks.
    s.post_expect(
        INGEST,
        "/v1/events/conversion",
        &json!({"timestamp": ts(t0 + 300_000), "device_id": "d1", "order_id": "order-1", "product_id": "p-a",
                "revenue_amount": 50_000, "conversion_type": "PURCHASE"}),
        202,
    );
    // Every click is charged at once.
    let ledger = eventually(30, "three charges", || {
        let l = s.get_ok(ACME, "/v1/advertisers/acme/ledger");
        (l["entries"].as_array().expect("entries").len() >= 3).then_some(l)
    });
    let amounts: Vec<i64> = ledger["entries"].as_array().expect("e").iter().map(|e| e["amount"].as_i64().expect("amount")).collect();
    assert_eq!(amounts[..3], [-810, -810, -810]);
    assert!(ledger["entries"].as_array().expect("e").iter().all(|e| e["campaign_id"] == "acme-a"));

    // Present traffic moves the watermark past the old windows (the other partitions go idle).
    let now = now_ms();
    s.post_expect(INGEST, "/v1/events/ad", &json!([ad("IMPRESSION", "d1", "a1", "acme-a", "acme", "laptops", now)]), 202);
    s.post_expect(
        INGEST,
        "/v1/events/conversion",
        &json!({"device_id": "d1", "order_id": "order-2", "product_id": "p-zzz", "revenue_amount": 1, "conversion_type": "SIGNUP"}),
        202,
    );

    // The duplicates are refunded once their 5-minute dedup window closes: 2 × 810.
    let ledger = eventually(90, "the refund", || {
        let l = s.get_ok(ADMIN, "/v1/advertisers/acme/ledger");
        l["entries"].as_array().expect("e").iter().any(|e| e["kind"] == "REFUND").then_some(l)
    });
    let refund = ledger["entries"].as_array().expect("e").iter().find(|e| e["kind"] == "REFUND").expect("refund").clone();
    assert_eq!(refund["amount"], 1_620, "{refund}");
    let balance = s.get_ok(ACME, "/v1/advertisers/acme")["balance"].as_i64().expect("balance");
    assert_eq!(balance, 1_000_000 - 3 * 810 + 1_620);
    // Paging: one row a page, following next_after.
    let p1 = s.get_ok(ACME, "/v1/advertisers/acme/ledger?limit=1");
    assert_eq!(p1["entries"].as_array().expect("e").len(), 1);
    let after = p1["next_after"].as_u64().expect("more pages");
    let p2 = s.get_ok(ACME, &format!("/v1/advertisers/acme/ledger?limit=1&after={after}"));
    assert!(p2["entries"][0]["seq"].as_u64().expect("seq") > after);
    let all = s.get_ok(ACME, "/v1/advertisers/acme/ledger?limit=1000");
    assert!(all.get("next_after").is_none(), "{all}");

    // The 5-minute window of t0: 10 impressions, 3 clicks, spend 2 430.
    let from = ts(t0 - 600_000);
    let m = eventually(90, "the window of t0", || {
        let m = s.get_ok(ACME, &format!("/v1/campaigns/acme-a/metrics?from={from}"));
        (m["totals"]["impressions"].as_i64() >= Some(10)).then_some(m)
    });
    let w = &m["windows"][0];
    assert_eq!((w["impressions"].as_i64(), w["clicks"].as_i64(), w["spend"].as_i64()), (Some(10), Some(3), Some(2_430)), "{m}");
    assert!((w["ctr"].as_f64().expect("ctr") - 0.3).abs() < 1e-9, "{w}");
    let empty = s.get_ok(ACME, &format!("/v1/campaigns/acme-a/metrics?to={}", ts(t0 - 600_000)));
    assert_eq!(empty["windows"], json!([]));

    // The order is attributed to the last click on d1 of the ordered product.
    let conv = eventually(90, "the attributed conversion", || {
        let c = s.get_ok(ACME, "/v1/campaigns/acme-a/conversions");
        (!c["conversions"].as_array().expect("c").is_empty()).then_some(c)
    });
    assert_eq!(conv["conversions"][0]["order_id"], "order-1", "{conv}");
    assert_eq!(conv["conversions"][0]["revenue_amount"], 50_000);

    // Budget: other-o (1 500 KRW a day) is paused once three clicks at 600 spend 1 800 today.
    let clicks: Vec<Value> = (0..3)
        .map(|i| {
            let mut c = ad("CLICK", &format!("o{i}"), "o1", "other-o", "other", "laptops", now_ms());
            c["bid_price"] = json!(600);
            c["actual_price"] = json!(600);
            c
        })
        .collect();
    s.post_expect(INGEST, "/v1/events/ad", &json!(clicks), 202);
    let b = eventually(60, "the budget pause", || {
        let b = s.get_ok(OTHER, "/v1/campaigns/other-o/budget");
        (b["paused_by_budget"] == true).then_some(b)
    });
    assert_eq!((b["spend"].as_i64(), b["daily_budget"].as_i64(), b["remaining"].as_i64()), (Some(1_800), Some(1_500), Some(0)), "{b}");
    let c = s.get_ok(OTHER, "/v1/campaigns/other-o");
    assert_eq!(c["status"], "PAUSED", "{c}");
    assert_eq!(c["admin_status"], "ACTIVE", "{c}");
    assert!(c["why"].as_str().expect("why").contains("budget"), "{c}");
    let r = eventually(30, "other-o out of the ranking", || {
        let r = ranking(&s, "laptops");
        (!r.iter().any(|(id, _)| id == "other-o")).then_some(r)
    });
    assert_eq!(r.len(), 2, "{r:?}");
    // Raising the budget above the day's spend resumes it.
    s.patch(OTHER, "/v1/campaigns/other-o", &json!({"daily_budget": 10_000}));
    eventually(60, "other-o resumed", || (s.get_ok(OTHER, "/v1/campaigns/other-o")["status"] == "ACTIVE").then_some(()));
    eventually(30, "other-o ranked again", || ranking(&s, "laptops").iter().any(|(id, _)| id == "other-o").then_some(()));

    // A manual pause takes the campaign out of the ranking too; delete is final.
    s.post_expect(ACME, "/v1/campaigns/acme-b/pause", &json!({}), 200);
    eventually(30, "acme-b out", || (!ranking(&s, "laptops").iter().any(|(id, _)| id == "acme-b")).then_some(()));
    let d = s.req(s.client.delete(s.url("/v1/campaigns/acme-b")).bearer_auth(ACME));
    assert_eq!(d.status(), 200);
    eventually(30, "acme-b deleted", || (s.get_ok(ACME, "/v1/campaigns/acme-b")["why"] == "deleted").then_some(()));
}
