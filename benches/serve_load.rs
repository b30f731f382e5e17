//! Load on `rtb serve` (embedded default, durable log, the whole topology running): the server runs in this
//! process (`rtb_topology::serve::serve`, the code the binary runs) on a free loopback port, and a client
//! sends closed-loop requests for `RTB_SERVE_SECS` seconds (default 10) per scenario:
//!
//! - `single_ingest` — `POST /v1/events/ad` with one impression (202 once fsynced in the log), with 64 and
//!   with 256 concurrent connections (shoppers' apps each posting their own events);
//! - `batch_ingest` — `POST /v1/events/ad` with 1 000 impressions (8 connections);
//! - `rankings` — `GET /v1/rankings/HOME/laptops` (64 connections).
//!
//! The client is `wrk` (Debian's package: `apt-get install wrk`) when it is on the PATH — a C load generator
//! that leaves the server most of the 2 cores — else a Rust client (reqwest on tokio, in this process);
//! `RTB_SERVE_CLIENT=wrk|reqwest` chooses. Any answer other than the expected status fails the bench.
//! Prints requests/s (events/s for batches) with p50 and p99 latency. `cargo bench --bench serve_load`

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rtb_topology::serve::{serve, Limits, ServeOptions};
use rtb_topology::Topology;
use serde_json::{json, Value};

// The allocator the `rtb` binary runs with (see `rtb-topology/src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin-token-000000001";
const INGEST: &str = "bench-ingest-token-00000001";

/// Sends each line the server prints to the bench.
struct Lines(mpsc::Sender<String>, Vec<u8>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(i) = self.1.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=i).collect();
            let _ = self.0.send(String::from_utf8_lossy(&line).trim().to_string());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn impression(i: u64) -> Value {
    json!({"event_type": "IMPRESSION", "device_id": format!("d{}", i % 10_000), "ad_id": "a1", "campaign_id": "c1",
           "advertiser_id": "acme", "placement": "HOME", "category": "laptops"})
}

/// Runs `clients` closed loops of `make` for `secs`; returns (requests, latencies in µs, elapsed s).
async fn load(
    client: &reqwest::Client,
    clients: u64,
    secs: u64,
    make: impl Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + Clone + 'static,
    want: u16,
) -> (u64, Vec<u64>, f64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c * 1_000_000;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = make(&client, i).send().await.expect("request");
                assert_eq!(r.status().as_u16(), want, "{}", r.text().await.unwrap_or_default());
                let _ = r.bytes().await;
                lat.push(t.elapsed().as_micros() as u64);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as u64, all, elapsed)
}

/// Runs `wrk` for `secs` with `conns` connections against `url` (`script` sets method, headers and body);
/// returns (requests/s, p50 ms, p99 ms). Panics on a non-2xx answer or a socket error.
fn wrk(url: &str, script: &std::path::Path, conns: u64, secs: u64) -> (f64, f64, f64) {
    let out = std::process::Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("Non-2xx"), "the server answered errors under load:\n{text}");
    assert!(!text.contains("Socket errors"), "socket errors under load:\n{text}");
    let ms = |v: &str| -> f64 {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let x: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => x / 1000.0,
            "ms" => x,
            "s" => x * 1000.0,
            _ => f64::NAN,
        }
    };
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk's output:\n{text}"))
    };
    let rps: f64 = field("Requests/sec:").parse().expect("requests/s");
    (rps, ms(&field("50%")), ms(&field("99%")))
}

/// A wrk script sending `method` with the bearer `token` and `body` (JSON), written under `dir`.
fn wrk_script(dir: &std::path::Path, name: &str, method: &str, token: &str, body: Option<&Value>) -> std::path::PathBuf {
    let mut lua = format!("wrk.method = \"{method}\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n");
    if let Some(b) = body {
        // A Lua long string holds the JSON as it is.
        lua.push_str(&format!("wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{b}]==]\n"));
    }
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua).expect("wrk script");
    path
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let secs = env("RTB_SERVE_SECS", 10);
    let client_kind = match std::env::var("RTB_SERVE_CLIENT") {
        Ok(k) if k == "wrk" || k == "reqwest" => k,
        Ok(k) => panic!("RTB_SERVE_CLIENT={k}: use wrk or reqwest"),
        Err(_) if std::process::Command::new("wrk").arg("--version").output().is_ok() => "wrk".to_string(),
        Err(_) => "reqwest".to_string(),
    };
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{ADMIN} admin\n{INGEST} ingest\n")).expect("tokens");
    let plan = Topology::cpc_default().and_then(|t| t.plan()).expect("plan");
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: Some(tokens),
        data_dir: dir.path().join("data"),
        limits: Limits::default(),
        kafka: None,
    };
    let (lines_tx, lines) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut out = Lines(lines_tx, Vec::new());
        serve(&plan, &opts, &mut out, async move {
            let _ = stop_rx.await;
        })
    });
    let base = lines
        .iter()
        .find_map(|l| l.strip_prefix("rtb serve listening on ").map(str::to_string))
        .expect("server address");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");
        let post = |token: &str, path: &str, body: Value| {
            client.post(format!("{base}{path}")).bearer_auth(token).json(&body).send()
        };
        post(ADMIN, "/v1/advertisers", json!({"advertiser_id": "acme", "opening_balance": 1_000_000_000})).await.expect("advertiser");
        post(ADMIN, "/v1/campaigns", json!({"campaign_id": "c1", "advertiser_id": "acme", "placement": "HOME", "category": "laptops", "bid_price": 1000, "daily_budget": 10_000_000})).await.expect("campaign");
        post(ADMIN, "/v1/campaigns/c1/approve", json!({})).await.expect("approve");

        let url = format!("{base}/v1/events/ad");
        let rank_url = format!("{base}/v1/rankings/HOME/laptops");
        let batch: Value = Value::Array((0..1_000).map(impression).collect());
        let report = |name: &str, what: &str, per_req: f64, rps: f64, p50: f64, p99: f64, conns: u64| {
            println!("serve {name}: {:.0} {what}/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({conns} connections, {client_kind})", rps * per_req);
            println!("EVENTS_PER_SEC name=serve_{name} value={:.0}", rps * per_req);
        };
        if client_kind == "wrk" {
            let single = wrk_script(dir.path(), "single", "POST", INGEST, Some(&impression(1)));
            for conns in [64, 256] {
                let (rps, p50, p99) = wrk(&url, &single, conns, secs);
                report(&format!("single_ingest_c{conns}"), "requests", 1.0, rps, p50, p99, conns);
            }
            let batched = wrk_script(dir.path(), "batch", "POST", INGEST, Some(&batch));
            let (rps, p50, p99) = wrk(&url, &batched, 8, secs);
            report("batch_ingest", "events", 1000.0, rps, p50, p99, 8);
            let rank = wrk_script(dir.path(), "rank", "GET", INGEST, None);
            let (rps, p50, p99) = wrk(&rank_url, &rank, 64, secs);
            report("rankings", "requests", 1.0, rps, p50, p99, 64);
        } else {
            for conns in [64, 256] {
                let u = url.clone();
                let (n, lat, s) = load(&client, conns, secs, move |c, i| c.post(&u).bearer_auth(INGEST).json(&impression(i)), 202).await;
                report(&format!("single_ingest_c{conns}"), "requests", 1.0, n as f64 / s, pct(&lat, 0.5), pct(&lat, 0.99), conns);
            }
            let u = url.clone();
            let (n, lat, s) = load(&client, 8, secs, move |c, _| c.post(&u).bearer_auth(INGEST).json(&batch), 202).await;
            report("batch_ingest", "events", 1000.0, n as f64 / s, pct(&lat, 0.5), pct(&lat, 0.99), 8);
            let u = rank_url.clone();
            let (n, lat, s) = load(&client, 64, secs, move |c, _| c.get(&u).bearer_auth(INGEST), 200).await;
            report("rankings", "requests", 1.0, n as f64 / s, pct(&lat, 0.5), pct(&lat, 0.99), 64);
        }
    });
    let _ = stop_tx.send(());
    server.join().expect("server thread").expect("rtb serve");
}
