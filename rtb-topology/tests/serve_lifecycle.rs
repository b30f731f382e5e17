//! `rtb serve`'s life: development tokens printed at start and accepted, health and readiness, graceful
//! shutdown on SIGTERM (exit 0, stores sealed), and a restart on the same data directory that carries on
//! with the campaigns, balances and ledger it had.

mod serve_support;

use serde_json::json;
use serve_support::*;

#[test]
fn dev_tokens_health_graceful_shutdown_and_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    // The one-time development set: an admin and an ingest token.
    let token_of = |banner: &[String], role: &str| -> String {
        banner
            .iter()
            .find_map(|l| {
                let mut parts = l.split_whitespace();
                (parts.next() == Some(role)).then(|| parts.next().expect("token").to_string())
            })
            .unwrap_or_else(|| panic!("no {role} token printed: {banner:?}"))
    };
    let admin = token_of(&s.banner, "admin");
    let ingest = token_of(&s.banner, "ingest");

    let h = s.req(s.client.get(s.url("/healthz")));
    assert_eq!(h.status(), 200);
    let r = s.req(s.client.get(s.url("/readyz")));
    assert_eq!(r.status(), 200);

    s.post_expect(&admin, "/v1/advertisers", &json!({"advertiser_id": "acme", "opening_balance": 10_000, "time_zone": "UTC"}), 201);
    s.post_expect(
        &admin,
        "/v1/campaigns",
        &json!({"campaign_id": "c1", "advertiser_id": "acme", "placement": "SEARCH", "category": "tea", "bid_price": 300, "daily_budget": 9_000}),
        201,
    );
    s.post_expect(&admin, "/v1/campaigns/c1/approve", &json!({}), 200);
    eventually(30, "c1 ranked", || {
        let r = s.get_ok(&ingest, "/v1/rankings/SEARCH/tea");
        (r["entries"].as_array().expect("e").len() == 1).then_some(())
    });
    let r = s.post_expect(&ingest, "/v1/events/ad", &ad_search("CLICK", "d1", now_ms()), 202);
    assert_eq!(r["events"][0]["actual_price"], 100, "alone in the ranking: the reserve price");
    eventually(30, "the charge", || (s.get_ok(&admin, "/v1/advertisers/acme")["balance"] == 9_900).then_some(()));

    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    assert!(data.join("stores.json").exists(), "a clean stop seals the stores");

    // Restart: new development tokens; the campaign (from the log) and the money (from the stores) remain.
    let s = Server::start(&data, &[]);
    let admin2 = token_of(&s.banner, "admin");
    assert_ne!(admin, admin2, "development tokens are new at every start");
    let r = s.req(s.client.get(s.url("/v1/advertisers/acme")).bearer_auth(&admin));
    assert_eq!(r.status(), 401, "the old development token is gone");
    assert_eq!(s.get_ok(&admin2, "/v1/advertisers/acme")["balance"], 9_900);
    let c = s.get_ok(&admin2, "/v1/campaigns/c1");
    assert_eq!((c["approval_status"].as_str(), c["status"].as_str()), (Some("APPROVED"), Some("ACTIVE")), "{c}");
    // A change after the restart starts from the restored snapshot.
    let c = s.patch(&admin2, "/v1/campaigns/c1", &json!({"bid_price": 400}));
    assert_eq!(c.status(), 200);
    let ingest2 = token_of(&s.banner, "ingest");
    eventually(30, "the new bid ranked", || {
        let r = s.get_ok(&ingest2, "/v1/rankings/SEARCH/tea");
        (r["entries"][0]["bid_price"] == 400).then_some(())
    });
    let l = s.get_ok(&admin2, "/v1/advertisers/acme/ledger");
    assert_eq!(l["entries"].as_array().expect("e").len(), 1, "{l}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let _s = Server::start(&data, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another rtb process"), "{err}");
}

#[test]
fn a_bad_token_file_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tokens");
    std::fs::write(&file, "admin-token-0000000000000001 admin\nsome-token-00000000000000001 superuser\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("superuser"), "{err}");
}

fn ad_search(kind: &str, device: &str, at: i64) -> serde_json::Value {
    let mut e = ad(kind, device, "ad-1", "c1", "acme", "tea", at);
    e["placement"] = json!("SEARCH");
    e
}
