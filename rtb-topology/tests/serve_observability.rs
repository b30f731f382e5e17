//! `rtb serve`'s `/metrics` (Prometheus text) and `/openapi.json` (generated from the code), over HTTP.

mod serve_support;

use serde_json::{json, Value};
use serve_support::*;

/// The value of the first sample of `name` whose labels contain every `label`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_requests_by_route_events_by_topic_and_show_consumer_lag() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = token_file(dir.path());
    let s = Server::start(&dir.path().join("data"), &["--tokens", tokens.to_str().expect("utf8")]);
    s.post_expect(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "acme", "opening_balance": 1_000}), 201);
    s.post_expect(
        ADMIN,
        "/v1/campaigns",
        &json!({"campaign_id": "c1", "advertiser_id": "acme", "placement": "HOME", "category": "tea", "bid_price": 300, "daily_budget": 900}),
        201,
    );
    for _ in 0..3 {
        assert_eq!(s.get(OTHER, "/v1/advertisers/acme").status(), 403);
    }
    let events: Vec<Value> = (0..4).map(|i| ad("IMPRESSION", &format!("d{i}"), "a", "c1", "acme", "tea", now_ms())).collect();
    s.post_expect(INGEST, "/v1/events/ad", &json!(events), 202);
    // A record the topology rejects cannot come from the API; dead letters are still exported (0 here).

    let text = eventually(30, "lag back to 0 after the events are processed", || {
        let t = s.req(s.client.get(s.url("/metrics"))).text().expect("text");
        (sample(&t, "rtb_consumer_lag", &["group=\"balance-processor\""]) == Some(0.0)).then_some(t)
    });
    assert_eq!(sample(&text, "rtb_http_requests_total", &["route=\"/v1/advertisers/{id}\"", "status=\"403\"", "method=\"GET\""]), Some(3.0), "{text}");
    assert_eq!(sample(&text, "rtb_http_requests_total", &["route=\"/v1/events/ad\"", "status=\"202\""]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "rtb_events_published_total", &["topic=\"ad-events\""]), Some(4.0), "{text}");
    assert_eq!(sample(&text, "rtb_events_published_total", &["topic=\"campaign-events\""]), Some(1.0), "{text}");
    assert!(sample(&text, "rtb_http_request_duration_seconds_count", &["route=\"/v1/events/ad\""]).is_some(), "{text}");
    assert!(text.contains("rtb_http_request_duration_seconds_bucket"), "a histogram: {text}");
    for group in ["rtb-processor", "performance-aggregator", "duplicate-detector", "conversion-matcher", "budget-monitor"] {
        assert!(sample(&text, "rtb_consumer_lag", &[&format!("group=\"{group}\"")]).is_some(), "lag of {group}: {text}");
    }
    assert_eq!(sample(&text, "rtb_stage_dead_letters", &["group=\"balance-processor\""]), Some(0.0), "{text}");
    assert!(sample(&text, "rtb_stage_records_in", &["group=\"balance-processor\""]).is_some_and(|n| n >= 4.0), "{text}");
}

#[test]
fn openapi_document_lists_every_route_with_bearer_security() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = token_file(dir.path());
    let s = Server::start(&dir.path().join("data"), &["--tokens", tokens.to_str().expect("utf8")]);
    let r = s.req(s.client.get(s.url("/openapi.json")));
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."), "{doc}");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let paths = doc["paths"].as_object().expect("paths");
    let want: &[(&str, &str)] = &[
        ("/v1/advertisers", "post"),
        ("/v1/advertisers/{id}", "get"),
        ("/v1/advertisers/{id}/ledger", "get"),
        ("/v1/campaigns", "post"),
        ("/v1/campaigns/{id}", "get"),
        ("/v1/campaigns/{id}", "patch"),
        ("/v1/campaigns/{id}", "delete"),
        ("/v1/campaigns/{id}/approve", "post"),
        ("/v1/campaigns/{id}/reject", "post"),
        ("/v1/campaigns/{id}/pause", "post"),
        ("/v1/campaigns/{id}/resume", "post"),
        ("/v1/campaigns/{id}/metrics", "get"),
        ("/v1/campaigns/{id}/budget", "get"),
        ("/v1/campaigns/{id}/conversions", "get"),
        ("/v1/rankings/{placement}/{category}", "get"),
        ("/v1/events/ad", "post"),
        ("/v1/events/conversion", "post"),
    ];
    for (path, method) in want {
        assert!(paths.get(*path).and_then(|p| p.get(*method)).is_some(), "{method} {path} missing from the document");
    }
    // Every documented operation is served (401 without a token, not 404), and the schemas are there.
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "x").replace("{placement}", "HOME").replace("{category}", "tea");
        for method in ops.as_object().expect("ops").keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = s.req(s.client.request(m, s.url(&concrete)));
            assert_eq!(r.status(), 401, "{method} {path}");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["NewCampaign", "CampaignView", "LedgerPage", "AcceptedView", "ErrorBody", "BudgetView", "MetricsView"] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    assert!(schemas["NewCampaign"]["required"].as_array().expect("required").contains(&json!("bid_price")));
}

#[test]
fn dashboard_page_assets_bundled_and_its_data_for_admins_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = token_file(dir.path());
    let s = Server::start(&dir.path().join("data"), &["--tokens", tokens.to_str().expect("utf8")]);
    let page = s.req(s.client.get(s.url("/")));
    assert_eq!(page.status(), 200);
    let html = page.text().expect("html");
    // Everything the page loads comes from this server: no CDN.
    for src in html.split("src=\"").skip(1).chain(html.split("href=\"").skip(1)) {
        let url = src.split('"').next().expect("url");
        assert!(url.starts_with('/'), "the page loads `{url}` from elsewhere");
        let r = s.req(s.client.get(s.url(url)));
        assert_eq!(r.status(), 200, "{url}");
        assert!(r.text().expect("asset").len() > 100, "{url}");
    }
    assert!(html.contains("/assets/uplot.iife.min.js"));

    assert_eq!(s.get(ACME, "/v1/dashboard").status(), 403);
    assert_eq!(s.get(INGEST, "/v1/dashboard").status(), 403);
    s.post_expect(ADMIN, "/v1/advertisers", &json!({"advertiser_id": "acme", "opening_balance": 7_000}), 201);
    s.post_expect(
        ADMIN,
        "/v1/campaigns",
        &json!({"campaign_id": "c1", "advertiser_id": "acme", "placement": "HOME", "category": "tea", "bid_price": 300, "daily_budget": 900}),
        201,
    );
    s.post_expect(ADMIN, "/v1/campaigns/c1/approve", &json!({}), 200);
    let d = eventually(30, "the ranking on the dashboard", || {
        let d = s.get_ok(ADMIN, "/v1/dashboard");
        // The slot's ranking is written (empty) when the campaign is created, and again once its approval
        // is processed: wait for the approved campaign in it.
        let ranked = d["rankings"].as_array().expect("r").len() == 1 && !d["rankings"][0]["entries"].as_array().expect("e").is_empty();
        ranked.then_some(d)
    });
    assert_eq!(d["rankings"][0]["entries"][0]["campaign_id"], "c1");
    assert_eq!(d["campaigns"][0]["campaign_id"], "c1");
    assert_eq!(d["campaigns"][0]["daily_budget"], 900);
    assert_eq!(d["advertisers"][0]["balance"], 7_000);
    assert_eq!(d["dead_letters"]["total"], 0);
}
