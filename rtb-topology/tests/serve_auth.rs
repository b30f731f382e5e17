//! `rtb serve` through real HTTP: who may do what (401 / 403), request validation (400 naming the field),
//! unknown ids (404), size limits (413), conflicts (409) — and that nothing rejected is published.

mod serve_support;

use serde_json::{json, Value};
use serve_support::*;

fn error_of(r: reqwest::blocking::Response, want: u16) -> Value {
    let status = r.status().as_u16();
    let body: Value = r.json().expect("error body is JSON");
    assert_eq!(status, want, "{body}");
    body
}

fn setup(s: &Server) {
    s.post_expect(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "acme", "opening_balance": 100_000, "time_zone": "UTC"}), 201);
    s.post_expect(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "other", "opening_balance": 100_000}), 201);
    s.post_expect(
        ACME,
        "/v1/campaigns",
        &json!({"campaign_id": "acme-1", "advertiser_id": "acme", "placement": "HOME", "category": "shoes",
                "bid_price": 1000, "daily_budget": 50_000}),
        201,
    );
}

#[test]
fn tokens_and_roles_401_and_403() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = token_file(dir.path());
    let s = Server::start(&dir.path().join("data"), &["--tokens", tokens.to_str().expect("utf8")]);
    setup(&s);

    // 401: no header, a wrong scheme, an unknown token; with WWW-Authenticate: Bearer.
    let r = s.req(s.client.get(s.url("/v1/advertisers/acme")));
    assert_eq!(r.headers().get("www-authenticate").map(|v| v.to_str().expect("ascii")), Some("Bearer"));
    let e = error_of(r, 401);
    assert!(e["message"].as_str().expect("msg").contains("Authorization"), "{e}");
    error_of(s.req(s.client.get(s.url("/v1/advertisers/acme")).basic_auth("admin", Some("x"))), 401);
    error_of(s.get("not-a-token-at-all-000000", "/v1/advertisers/acme"), 401);
    error_of(s.req(s.client.post(s.url("/v1/events/ad")).json(&json!({}))), 401);

    // An advertiser sees its own data, never another's: 403.
    assert_eq!(s.get_ok(ACME, "/v1/advertisers/acme")["balance"], 100_000);
    error_of(s.get(OTHER, "/v1/advertisers/acme"), 403);
    error_of(s.get(OTHER, "/v1/advertisers/acme/ledger"), 403);
    error_of(s.get(OTHER, "/v1/campaigns/acme-1"), 403);
    error_of(s.get(OTHER, "/v1/campaigns/acme-1/metrics"), 403);
    error_of(s.get(OTHER, "/v1/campaigns/acme-1/budget"), 403);
    error_of(s.get(OTHER, "/v1/campaigns/acme-1/conversions"), 403);
    error_of(s.patch(OTHER, "/v1/campaigns/acme-1", &json!({"bid_price": 1})), 403);
    error_of(s.post(OTHER, "/v1/campaigns/acme-1/pause", &json!({})), 403);
    error_of(s.req(s.client.delete(s.url("/v1/campaigns/acme-1")).bearer_auth(OTHER)), 403);
    // ... nor creates campaigns for another advertiser.
    error_of(
        s.post(OTHER, "/v1/campaigns", &json!({"advertiser_id": "acme", "placement": "HOME", "category": "x", "bid_price": 1, "daily_budget": 1})),
        403,
    );
    // Approval is the admin's; advertisers are created by the admin.
    error_of(s.post(ACME, "/v1/campaigns/acme-1/approve", &json!({})), 403);
    error_of(s.post(ACME, "/v1/campaigns/acme-1/reject", &json!({})), 403);
    error_of(s.post(INGEST, "/v1/campaigns/acme-1/approve", &json!({})), 403);
    error_of(s.post(ACME, "/v1/advertisers", &json!({"advertiser_id": "x", "opening_balance": 1})), 403);
    // Events are the ingest role's; rankings are not an advertiser's to read.
    let click = ad("IMPRESSION", "d1", "a1", "acme-1", "acme", "shoes", now_ms());
    error_of(s.post(ACME, "/v1/events/ad", &click), 403);
    error_of(s.post(ADMIN, "/v1/events/ad", &click), 403);
    error_of(s.get(ACME, "/v1/rankings/HOME/shoes"), 403);
    // The ingest role reads no advertiser data.
    error_of(s.get(INGEST, "/v1/advertisers/acme"), 403);
    // Allowed: the owner pauses its campaign; the admin approves.
    assert_eq!(s.post_expect(ACME, "/v1/campaigns/acme-1/pause", &json!({}), 200)["admin_status"], "PAUSED");
    assert_eq!(s.post_expect(ADMIN, "/v1/campaigns/acme-1/approve", &json!({}), 200)["approval_status"], "APPROVED");
    s.post_expect(INGEST, "/v1/events/ad", &click, 202);
}

#[test]
fn invalid_requests_400_name_the_field_404_409_413_and_publish_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = token_file(dir.path());
    let s = Server::start(&dir.path().join("data"), &["--tokens", tokens.to_str().expect("utf8"), "--max-body-bytes", "4096", "--max-batch", "5"]);
    setup(&s);

    let field = |r: reqwest::blocking::Response, f: &str| {
        let e = error_of(r, 400);
        assert_eq!(e["field"], f, "{e}");
        assert!(e["message"].as_str().expect("msg").contains(f), "the message names `{f}`: {e}");
        e
    };
    // Schema: wrong type, missing field, unknown field, bad enum, not JSON.
    field(s.post(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "x", "opening_balance": "lots"})), "opening_balance");
    field(s.post(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "x"})), "opening_balance");
    field(s.post(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "x", "opening_balance": 1, "colour": "red"})), "colour");
    field(s.post(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "x", "opening_balance": -5})), "opening_balance");
    field(s.post(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "x", "opening_balance": 5, "time_zone": "Mars/Base"})), "time_zone");
    let e = error_of(s.req(s.client.post(s.url("/v1/advertisers")).bearer_auth(ADMIN).body("{not json")), 400);
    assert!(e["message"].as_str().expect("msg").contains("not valid JSON"), "{e}");
    let campaign = |patch: Value| {
        let mut c = json!({"advertiser_id": "acme", "placement": "HOME", "category": "shoes", "bid_price": 500, "daily_budget": 10_000});
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    field(s.post(ACME, "/v1/campaigns", &campaign(json!({"placement": "ROOF"}))), "placement");
    field(s.post(ACME, "/v1/campaigns", &campaign(json!({"bid_price": -1}))), "bid_price");
    field(s.post(ACME, "/v1/campaigns", &campaign(json!({"category": ""}))), "category");
    field(s.post(ACME, "/v1/campaigns", &campaign(json!({"effective_from": "tomorrow"}))), "effective_from");
    field(s.post(ADMIN, "/v1/campaigns", &campaign(json!({"advertiser_id": "ghost"}))), "advertiser_id");
    field(s.patch(ACME, "/v1/campaigns/acme-1", &json!({"daily_budget": "big"})), "daily_budget");
    error_of(s.patch(ACME, "/v1/campaigns/acme-1", &json!({})), 400);
    field(s.get(ACME, "/v1/advertisers/acme/ledger?limit=0"), "limit");
    field(s.get(ACME, "/v1/advertisers/acme/ledger?after=minus-one"), "after");
    field(s.get(ACME, "/v1/campaigns/acme-1/metrics?from=yesterday"), "from");
    field(s.get(INGEST, "/v1/rankings/ROOF/shoes"), "placement");

    // Events: the topology's own validation, with the index in a batch.
    let now = now_ms();
    let good = ad("IMPRESSION", "d1", "a1", "acme-1", "acme", "shoes", now);
    let mut no_device = good.clone();
    no_device.as_object_mut().expect("obj").remove("device_id");
    let e = field(s.post(INGEST, "/v1/events/ad", &json!([good, good, no_device])), "[2].device_id");
    assert!(e["message"].as_str().expect("msg").contains("MISSING_FIELD"), "{e}");
    let mut future = good.clone();
    future["timestamp"] = json!(ts(now + 3 * 3_600_000));
    field(s.post(INGEST, "/v1/events/ad", &future), "timestamp");
    let mut priced = ad("CLICK", "d1", "a1", "acme-1", "acme", "shoes", now);
    priced["bid_price"] = json!(500);
    priced["actual_price"] = json!(900);
    field(s.post(INGEST, "/v1/events/ad", &priced), "actual_price");
    // A click without a price for a campaign that is not ranked (acme-1 is not approved): nothing to fill.
    let e = field(s.post(INGEST, "/v1/events/ad", &ad("CLICK", "d1", "a1", "acme-1", "acme", "shoes", now)), "actual_price");
    assert!(e["message"].as_str().expect("msg").contains("ranking"), "{e}");
    field(s.post(INGEST, "/v1/events/ad", &ad("IMPRESSION", "d1", "a1", "ghost", "acme", "shoes", now)), "campaign_id");
    field(s.post(INGEST, "/v1/events/ad", &ad("IMPRESSION", "d1", "a1", "acme-1", "other", "shoes", now)), "advertiser_id");
    let mut with_id = good.clone();
    with_id["event_id"] = json!("mine");
    field(s.post(INGEST, "/v1/events/ad", &with_id), "event_id");
    field(s.post(INGEST, "/v1/events/conversion", &json!({"device_id": "d1", "order_id": "o1", "product_id": "p1", "revenue_amount": 10, "conversion_type": "REFUND"})), "conversion_type");
    error_of(s.post(INGEST, "/v1/events/ad", &json!([])), 400);
    error_of(s.post(INGEST, "/v1/events/ad", &json!("click")), 400);

    // 413: a batch over --max-batch, a body over --max-body-bytes.
    let six: Vec<Value> = (0..6).map(|_| good.clone()).collect();
    error_of(s.post(INGEST, "/v1/events/ad", &json!(six)), 413);
    let mut big = good.clone();
    big["search_term"] = json!("x".repeat(5_000));
    error_of(s.post(INGEST, "/v1/events/ad", &big), 413);

    // 404: unknown ids and routes; 409: duplicates and deleted campaigns.
    error_of(s.get(ADMIN, "/v1/advertisers/ghost"), 404);
    error_of(s.get(ADMIN, "/v1/advertisers/ghost/ledger"), 404);
    for path in ["/v1/campaigns/ghost", "/v1/campaigns/ghost/metrics", "/v1/campaigns/ghost/budget", "/v1/campaigns/ghost/conversions"] {
        error_of(s.get(ADMIN, path), 404);
    }
    error_of(s.post(ADMIN, "/v1/campaigns/ghost/approve", &json!({})), 404);
    error_of(s.patch(ADMIN, "/v1/campaigns/ghost", &json!({"bid_price": 5})), 404);
    error_of(s.get(ADMIN, "/v1/nothing-here"), 404);
    error_of(s.post(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "acme", "opening_balance": 1})), 409);
    error_of(s.post(ACME, "/v1/campaigns", &campaign(json!({"campaign_id": "acme-1"}))), 409);
    error_of(s.post(ACME, "/v1/campaigns/acme-1/resume", &json!({})), 409); // not approved yet
    s.req(s.client.delete(s.url("/v1/campaigns/acme-1")).bearer_auth(ACME));
    error_of(s.post(ADMIN, "/v1/campaigns/acme-1/approve", &json!({})), 409);

    // Nothing rejected was published: the one valid ad-event batch below is the first, and the ledger is
    // empty (no click was ever accepted).
    let r = s.post_expect(INGEST, "/v1/events/ad", &json!([good, good]), 202);
    assert_eq!(r["accepted"], 2);
    let ids: Vec<&str> = r["events"].as_array().expect("events").iter().map(|e| e["event_id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "server-assigned ids are unique");
    assert_eq!(s.get_ok(ACME, "/v1/advertisers/acme/ledger")["entries"], json!([]));
    assert_eq!(s.get_ok(ACME, "/v1/advertisers/acme")["balance"], 100_000);
}
