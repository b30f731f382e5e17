//! Starts the real `rtb serve` binary on a free port with a temporary data directory, and drives it over
//! HTTP (reqwest, blocking).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

pub const ADMIN: &str = "admin-token-0000000000000001";
pub const INGEST: &str = "ingest-token-000000000000001";
pub const ACME: &str = "acme-token-00000000000000001";
pub const OTHER: &str = "other-token-0000000000000001";

/// The token file of the tests.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.txt");
    std::fs::write(
        &path,
        format!("# test tokens\n{ADMIN} admin\n{INGEST} ingest\n{ACME} advertiser:acme\n{OTHER} advertiser:other\n"),
    )
    .expect("write tokens");
    path
}

/// A running `rtb serve`.
pub struct Server {
    pub child: Option<Child>,
    pub base: String,
    /// Everything it printed on stdout up to the listening line (and the token lines after it).
    pub banner: Vec<String>,
    pub client: Client,
}

impl Server {
    /// Starts `rtb serve --listen 127.0.0.1:0 --data-dir DATA` with `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtb"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn rtb serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            banner.push(line.clone());
            if let Some(addr) = line.strip_prefix("rtb serve listening on ") {
                base = Some(addr.trim().to_string());
                break;
            }
        }
        let base = base.unwrap_or_else(|| panic!("rtb serve printed no address: {banner:?}"));
        // The development token lines follow the address when no --tokens is given.
        if !extra.contains(&"--tokens") {
            for line in lines.by_ref().take(3) {
                banner.push(line.expect("read stdout"));
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for _ in lines {}
        });
        let client = Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Server { child: Some(child), base, banner, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, token: &str, path: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(token).send().expect("GET")
    }

    pub fn post(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client.post(self.url(path)).bearer_auth(token).json(body).send().expect("POST")
    }

    pub fn patch(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client.patch(self.url(path)).bearer_auth(token).json(body).send().expect("PATCH")
    }

    pub fn req(&self, b: RequestBuilder) -> Response {
        b.send().expect("request")
    }

    /// `GET` that must answer 200; its JSON.
    pub fn get_ok(&self, token: &str, path: &str) -> Value {
        let r = self.get(token, path);
        let status = r.status();
        let v: Value = r.json().expect("json");
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// `POST` that must answer `want`; its JSON.
    pub fn post_expect(&self, token: &str, path: &str, body: &Value, want: u16) -> Value {
        let r = self.post(token, path, body);
        let status = r.status();
        let v: Value = r.json().expect("json");
        assert_eq!(status.as_u16(), want, "POST {path} {body}: {v}");
        v
    }

    /// Sends SIGTERM and waits for the exit (at most 60 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "rtb serve did not exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with milliseconds.
pub fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// An ad-event body.
pub fn ad(kind: &str, device: &str, ad_id: &str, campaign: &str, advertiser: &str, category: &str, at: i64) -> Value {
    serde_json::json!({
        "event_type": kind, "timestamp": ts(at), "device_id": device, "ad_id": ad_id,
        "campaign_id": campaign, "advertiser_id": advertiser, "placement": "HOME", "category": category,
    })
}
