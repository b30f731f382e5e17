//! `rtb run --redis URL --postgres URL` and `rtb export` with the same flags give what the same run on the
//! embedded sinks gives: every output file, and the money (ledger, balances). Needs the Redis and
//! PostgreSQL servers of `RTB_TEST_REDIS` / `RTB_TEST_POSTGRES` (defaults `redis://127.0.0.1:6379`,
//! `postgres://root@127.0.0.1:5432/test`); a missing one fails the test, saying how to start it. Unique
//! key prefix and schema per run, removed at the end.
//!
//! Two `rtb run`s of the same traffic are not byte-identical in four files even on the same backend (the
//! tasks and partitions interleave differently): the ledger's order (and so each row's `balance_after`),
//! the order of the stages in a dead letter (and the processing time a future timestamp's reason names),
//! which click crosses an alert threshold (the alert's spend and time), and the scores of rankings
//! recomputed at different moments. Those are compared on what is deterministic: the ledger as a set of
//! entries whose `balance_after` follow each advertiser's history to its final balance, dead letters with
//! their stages as a set, alerts by campaign, day and level, rankings as the placements and categories
//! ranked (which campaigns a ranking holds depends on the spend at the moment of its last recompute: two
//! embedded runs differ there too), each ranking checked for ranks 1..n of campaigns of its placement and
//! category. Every other file must be byte-equal.

#![allow(clippy::unwrap_used)]

mod servers_support;
mod support;

#[path = "../../rtb-ops/tests/support/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::path::Path;

use rtb_ops::sink::{Cache, Database};
use rtb_topology::app::runlog::RunLog;
use serde_json::Value;
use servers_support::{postgres_url, redis_url, Servers};
use support::run::rtb;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every ledger row's `balance_after` is the previous one of its advertiser moved by the row's amount, and
/// the last one is the advertiser's final balance. Returns Σ signed amounts.
fn check_ledger_history(dir: &Path) -> i64 {
    let balances: BTreeMap<String, i64> = lines(&dir.join("balances.jsonl"))
        .iter()
        .map(|b| (b["advertiser_id"].as_str().unwrap().to_owned(), b["balance"].as_i64().unwrap()))
        .collect();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut sum = 0;
    for r in lines(&dir.join("ledger.jsonl")) {
        let adv = r["advertiser_id"].as_str().unwrap().to_owned();
        let signed = if r["entry_type"] == "CHARGE" { -r["amount"].as_i64().unwrap() } else { r["amount"].as_i64().unwrap() };
        let after = r["balance_after"].as_i64().unwrap();
        if let Some(prev) = last.get(&adv) {
            assert_eq!(prev + signed, after, "{}: {r}", dir.display());
        }
        last.insert(adv, after);
        sum += signed;
    }
    for (adv, after) in &last {
        assert_eq!(balances.get(adv), Some(after), "{}: final balance of {adv}", dir.display());
    }
    sum
}

fn normalized(dir: &Path, file: &str) -> Vec<String> {
    let rows = lines(&dir.join(file));
    let mut v = sorted(
        rows.into_iter()
            .map(|mut r| {
                match file {
                    "ledger.jsonl" => drop(r.as_object_mut().unwrap().remove("balance_after")),
                    "rankings.jsonl" => r = serde_json::json!([r["placement"], r["category"]]),
                    // Which click crosses a threshold depends on how the partitions interleave.
                    "alerts.jsonl" => {
                        r = serde_json::json!([r["campaign_id"], r["advertiser_id"], r["day"], r["level"], r["daily_budget"]])
                    }
                    _ => {
                        if let Some(Value::Array(stages)) = r.get_mut("stages") {
                            stages.sort_by_key(|s| s.to_string());
                        }
                        // A future timestamp's reason names the processing time it was checked at (and a
                        // record rejected again after a restart gets `reasons`, one per check).
                        let timeless = |reason: &str| match reason.find(" is ") {
                            Some(i) if reason.starts_with("FUTURE_TIMESTAMP") => reason[..i].to_owned(),
                            _ => reason.to_owned(),
                        };
                        if let Some(Value::String(reason)) = r.get_mut("reason") {
                            *reason = timeless(reason);
                        }
                        let reason = r["reason"].clone();
                        if let Some(Value::Array(reasons)) = r.get("reasons") {
                            let mut all: Vec<Value> = reasons.iter().map(|x| Value::String(timeless(x.as_str().unwrap_or_default()))).collect();
                            all.sort_by_key(|v| v.to_string());
                            all.dedup();
                            if all == [reason] {
                                r.as_object_mut().unwrap().remove("reasons");
                            } else {
                                r["reasons"] = Value::Array(all);
                            }
                        }
                    }
                }
                r.to_string()
            })
            .collect(),
    );
    v.dedup();
    v
}

/// Each ranking ranks 1..n, each ranked campaign of its placement and category.
fn check_rankings(dir: &Path) {
    let campaigns: BTreeMap<String, (Value, Value)> = lines(&dir.join("campaign_status.jsonl"))
        .into_iter()
        .map(|c| (c["campaign_id"].as_str().unwrap().to_owned(), (c["placement"].clone(), c["category"].clone())))
        .collect();
    let mut next: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in lines(&dir.join("rankings.jsonl")) {
        let slot = next.entry((r["placement"].to_string(), r["category"].to_string())).or_insert(1);
        assert_eq!(r["rank"].as_u64(), Some(*slot), "{r}");
        *slot += 1;
        let c = &campaigns[r["campaign_id"].as_str().unwrap()];
        assert_eq!((&c.0, &c.1), (&r["placement"], &r["category"]), "{r}");
        assert!(r["cpc"].as_i64().unwrap() > 0, "{r}");
    }
}

/// Compares two export directories as the module documentation says; returns the ledger total.
/// `interrupted`: `b` comes from a run stopped and continued, whose at-least-once outputs (compensation
/// and repartition topics) hold records published twice, so `summary.json` is compared on the input
/// topics' counts and the rest of it.
fn compare_outputs(a: &Path, b: &Path, interrupted: bool, dir: &tempfile::TempDir) -> i64 {
    let mut files: Vec<String> = std::fs::read_dir(a).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut served_files: Vec<String> = std::fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    served_files.sort();
    assert_eq!(files, served_files);
    assert!(files.len() >= 11, "{files:?}");
    let mut problems = Vec::new();
    for f in &files {
        if ["ledger.jsonl", "dead_letters.jsonl", "rankings.jsonl", "alerts.jsonl"].contains(&f.as_str()) {
            if normalized(a, f) != normalized(b, f) {
                problems.push(format!("{f} differs"));
            }
        } else if f == "summary.json" {
            let summary = |d: &Path| {
                let mut v: Value = serde_json::from_slice(&std::fs::read(d.join(f)).unwrap()).unwrap();
                // A replay's timing.
                v.as_object_mut().unwrap().retain(|k, _| k != "elapsed_s" && k != "ad_events_per_sec");
                if interrupted {
                    let events = v["events"].as_object_mut().unwrap();
                    events.retain(|topic, _| ["campaign-events", "ad-events", "conversion-events"].contains(&topic.as_str()));
                }
                v
            };
            if summary(a) != summary(b) {
                problems.push(format!("{f} differs"));
            }
        } else if std::fs::read(a.join(f)).unwrap() != std::fs::read(b.join(f)).unwrap() {
            problems.push(format!("{f} differs byte for byte"));
        }
    }
    if !problems.is_empty() {
        let keep = std::env::temp_dir().join(format!("rtb-server-sinks-{}", std::process::id()));
        let _ = std::process::Command::new("cp").arg("-r").arg(dir.path()).arg(&keep).status();
        panic!("{problems:?} (outputs kept in {})", keep.display());
    }
    check_rankings(a);
    check_rankings(b);
    // Money: the same ledger total, each side's ledger consistent with its balances.
    let (sum_a, sum_b) = (check_ledger_history(a), check_ledger_history(b));
    assert_eq!(sum_a, sum_b);
    assert!(sum_a < 0, "clicks were charged");
    sum_b
}

#[test]
fn rtb_run_on_redis_and_postgres_equals_the_embedded_run() {
    let servers = Servers::new();
    let dir = tempfile::tempdir().unwrap();
    let (embedded, served) = (dir.path().join("embedded"), dir.path().join("served"));
    let common = ["--events", "5000", "--seed", "11", "--scale", "1", "--rate", "10000000", "--quiet"];
    for (data, extra) in [(&embedded, vec![]), (&served, vec!["--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()])] {
        let d = data.join("data").display().to_string();
        let o = data.join("out").display().to_string();
        let mut run = vec!["run", "--data-dir", d.as_str()];
        run.extend(common);
        run.extend(extra.iter().copied());
        rtb(&run).unwrap_or_else(|e| panic!("{e}"));
        let mut export = vec!["export", "--data-dir", d.as_str(), "--output", o.as_str()];
        export.extend(extra.iter().copied());
        rtb(&export).unwrap_or_else(|e| panic!("{e}"));
    }
    let (a, b) = (embedded.join("out"), served.join("out"));

    // The served run kept its sinks on the servers, not under its data directory.
    for sink in ["cache", "database"] {
        assert!(embedded.join("data").join(sink).exists(), "the embedded run keeps `{sink}` in its data directory");
        assert!(!served.join("data").join(sink).exists(), "the served run keeps no `{sink}` in its data directory");
    }
    let ledger_rows = servers.db.ledger().unwrap().len();
    assert!(ledger_rows > 100, "the ledger is in PostgreSQL: {ledger_rows} rows");
    assert_eq!(ledger_rows, lines(&b.join("ledger.jsonl")).len());
    assert!(!servers.cache.rankings().unwrap().is_empty(), "the rankings are in Redis");

    let sum_b = compare_outputs(&a, &b, false, &dir);
    let pg_sum: i64 = servers.db.ledger().unwrap().iter().map(|r| r.entry.amount).sum();
    assert_eq!(pg_sum, sum_b);
}

/// Redis restarted empty mid-stream (the test deletes the prefix's keys, the epoch first, as a restart
/// loses them all at once): the run stops with an error naming the loss instead of counting spend from zero
/// (it would miss pauses and alerts), and nothing is written to the emptied cache. Restarted on the same
/// data directory, `rtb run` rebuilds the cache by re-processing the stages that write it and finishes;
/// the export then equals an uninterrupted embedded run of the same traffic, money included.
#[test]
fn redis_emptied_mid_stream_stops_the_run_and_the_restart_rebuilds_the_cache() {
    let servers = Servers::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let common = ["--events", "20000", "--seed", "5", "--scale", "1", "--quiet"];
    let mut args = vec!["run", "--data-dir", data.as_str(), "--rate", "4000"];
    args.extend(common);
    args.extend(["--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-stream: once budget counters exist.
    let started = std::time::Instant::now();
    let prefix = servers.cache.prefix().to_owned();
    let mut con = redis::Client::open(redis_url().as_str()).unwrap().get_connection().unwrap();
    loop {
        let spend: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}rtb-spend:*")).query(&mut con).unwrap();
        if spend.len() >= 5 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no spend counters written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    servers.cache.delete_all().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the run fails: {err}");
    assert!(err.contains("lost its data"), "{err}");
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut con).unwrap();
    assert!(left.is_empty(), "nothing written to the emptied cache: {left:?}");
    // An export refuses the lost cache.
    let served_out = dir.path().join("served-out").display().to_string();
    let export = ["export", "--data-dir", data.as_str(), "--output", served_out.as_str(), "--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()];
    let e = rtb(&export).unwrap_err();
    assert!(e.contains("lost its data"), "{e}");

    // The restart rebuilds the cache and completes the run.
    args[4] = "10000000";
    rtb(&args).unwrap_or_else(|e| panic!("{e}"));
    let rebuilds: Value = serde_json::from_slice(&std::fs::read(dir.path().join("data").join("cache-rebuilds.json")).unwrap()).unwrap();
    assert_eq!(rebuilds["generation"], 1);
    rtb(&export).unwrap_or_else(|e| panic!("{e}"));

    equals_embedded(&servers, &served_out, &common, true, &dir);
}

/// Both servers unreachable for two seconds mid-stream (every connection cut, new ones refused — what a
/// restart looks like to a client; here through proxies, the data stays): the stages pause on their sink
/// calls with a warning, resume, and the run completes; its export equals the uninterrupted embedded run.
#[test]
fn servers_down_mid_stream_pause_the_run_which_resumes_and_loses_nothing() {
    let servers = Servers::new();
    let redis_proxy = proxy::Proxy::start(&proxy::host_port(&redis_url()));
    let pg_proxy = proxy::Proxy::start(&proxy::host_port(&postgres_url()));
    let (redis, postgres) = (proxy::via(&servers.redis, &redis_proxy.addr), proxy::via(&servers.postgres, &pg_proxy.addr));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let out = dir.path().join("out").display().to_string();
    let common = ["--events", "20000", "--seed", "7", "--scale", "1", "--quiet"];
    let mut args = vec!["run", "--data-dir", data.as_str(), "--rate", "4000"];
    args.extend(common);
    args.extend(["--redis", redis.as_str(), "--postgres", postgres.as_str()]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while servers.db.ledger().unwrap().len() < 20 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no ledger rows written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    redis_proxy.down();
    pg_proxy.down();
    std::thread::sleep(std::time::Duration::from_secs(2));
    redis_proxy.up();
    pg_proxy.up();
    let run = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the run resumes and completes: {err}");
    assert!(err.contains("unreachable: pausing") && err.contains("reachable again: resuming"), "logged: {err}");
    rtb(&["export", "--data-dir", data.as_str(), "--output", out.as_str(), "--redis", redis.as_str(), "--postgres", postgres.as_str()])
        .unwrap_or_else(|e| panic!("{e}"));
    equals_embedded(&servers, &out, &common, false, &dir);
}

/// `rtb run` on the servers SIGKILLed mid-stream and restarted on the same data directory: every sink write
/// a replay repeats is idempotent (ledger and spend keys, window rows set, conversions and alerts once), so
/// the export equals an uninterrupted embedded run — no click charged twice, none lost.
#[test]
fn a_served_run_killed_mid_stream_and_restarted_charges_each_click_once() {
    let servers = Servers::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let out = dir.path().join("out").display().to_string();
    let common = ["--events", "20000", "--seed", "9", "--scale", "1", "--quiet"];
    let mut args = vec!["run", "--data-dir", data.as_str(), "--rate", "4000"];
    args.extend(common);
    args.extend(["--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while servers.db.ledger().unwrap().len() < 100 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no ledger rows written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    args[4] = "10000000";
    rtb(&args).unwrap_or_else(|e| panic!("{e}"));
    served_equals_embedded(&servers, &data, &out, &common, &dir);
}

/// Exports what a run on the servers left (data directory `data`) into `out`, then [`equals_embedded`].
fn served_equals_embedded(servers: &Servers, data: &str, out: &str, common: &[&str], dir: &tempfile::TempDir) {
    rtb(&["export", "--data-dir", data, "--output", out, "--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()])
        .unwrap_or_else(|e| panic!("{e}"));
    equals_embedded(servers, out, common, true, dir);
}

/// Runs the same traffic (`common`) uninterrupted on the embedded default and checks that its export
/// equals `served_out` (what the run on the servers exported; `interrupted`: that run was stopped and
/// restarted), money included, and that the ledger in PostgreSQL adds up to the same.
fn equals_embedded(servers: &Servers, served_out: &str, common: &[&str], interrupted: bool, dir: &tempfile::TempDir) {
    let (edata, eout) = (dir.path().join("embedded").display().to_string(), dir.path().join("embedded-out").display().to_string());
    let mut run = vec!["run", "--data-dir", edata.as_str(), "--rate", "10000000"];
    run.extend(common);
    rtb(&run).unwrap_or_else(|e| panic!("{e}"));
    rtb(&["export", "--data-dir", edata.as_str(), "--output", eout.as_str()]).unwrap_or_else(|e| panic!("{e}"));
    let sum = compare_outputs(Path::new(&eout), Path::new(served_out), interrupted, dir);
    let pg_sum: i64 = servers.db.ledger().unwrap().iter().map(|r| r.entry.amount).sum();
    assert_eq!(pg_sum, sum, "the ledger in PostgreSQL");
}

/// `rtb replay --kafka --redis --postgres` (the runtime engine: the input produced to fresh topics, the
/// topology run on them to their end, the effects written to the servers and the outputs read back from
/// them) writes what the in-memory replay of the same input (the merge engine) writes. Fails (never skips)
/// without a broker.
#[test]
fn rtb_replay_on_kafka_redis_and_postgres_equals_the_merge_engine_in_memory() {
    servers_support::require_broker();
    let brokers = servers_support::brokers();
    let servers = Servers::new();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in").display().to_string();
    rtb(&["generate", "--output", &input, "--ad-events", "4000", "--seed", "5", "--hours", "4"]).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (dir.path().join("memory"), dir.path().join("served"));
    // An hour of out-of-orderness, more than any delay of the generator: no record is near the lateness
    // boundary, where the runtime's per-partition watermarks decide by how the partitions interleave.
    let ooo = "3600000";
    rtb(&["replay", "--input", &input, "--output", &a.display().to_string(), "--max-out-of-orderness-ms", ooo])
        .unwrap_or_else(|e| panic!("{e}"));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("t-replay-{}-{nanos}-", std::process::id());
    rtb(&[
        "replay", "--input", &input, "--output", &b.display().to_string(), "--max-out-of-orderness-ms", ooo, "--kafka", &brokers,
        "--topic-prefix", &prefix, "--redis", &servers.redis, "--postgres", &servers.postgres,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    // The input went through the cluster, under the prefix given: every ad-event line is in its topic.
    let cluster = rtb_topology::app::runlog::KafkaRunLog::new(
        rtb_stream::kafka::KafkaLog::connect(rtb_stream::kafka::KafkaConfig::new(brokers.as_str()).with_prefix(prefix.as_str())).unwrap(),
    );
    let in_topic: u64 = (0..cluster.partitions("ad-events").unwrap()).map(|p| cluster.end_offset("ad-events", p).unwrap()).sum();
    let in_file = std::fs::read_to_string(dir.path().join("in").join("ad-events.jsonl")).unwrap().lines().filter(|l| !l.is_empty()).count();
    assert_eq!(in_topic, in_file as u64, "ad-events under the prefix `{prefix}`");
    // The effects are on the servers: the ledger read back from PostgreSQL is the replay's.
    let ledger = servers.db.ledger().unwrap();
    assert_eq!(ledger.len(), lines(&b.join("ledger.jsonl")).len());
    assert!(!ledger.is_empty());
    compare_outputs(&a, &b, false, &dir);
}

/// The replay's settings take effect: `--kafka-property` reaches the Kafka clients (an unknown one is
/// refused, naming it), `--topic-prefix` and `--kafka-property` need `--kafka`, and the merge engine
/// refuses to run on servers.
#[test]
fn rtb_replay_settings_take_effect() {
    servers_support::require_broker();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in").display().to_string();
    rtb(&["generate", "--output", &input, "--ad-events", "200", "--hours", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out").display().to_string();
    let base = ["replay", "--input", input.as_str(), "--output", out.as_str()];
    let brokers = servers_support::brokers();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("t-replay-props-{}-{nanos}-", std::process::id());
    for (extra, says) in [
        (vec!["--kafka", brokers.as_str(), "--topic-prefix", prefix.as_str(), "--kafka-property", "no.such.property=1"], "no.such.property"),
        (vec!["--topic-prefix", "p-"], "--kafka"),
        (vec!["--kafka-property", "linger.ms=5"], "--kafka"),
        (vec!["--engine", "merge", "--redis", "redis://127.0.0.1:6379"], "--engine runtime"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let err = rtb(&args).expect_err("refused");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
}

/// One `rtb run --no-generator` process of a deployment shared through Kafka consumer groups, its log
/// (`rtb_stream` at info: the group's assignments) in `{name}.log`.
struct Instance {
    /// `None` once finished.
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
    data: String,
}

impl Instance {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Self {
        Self::start_logged(dir, name, name, args)
    }

    /// On data directory `name`, logging to `{log_name}.log`.
    fn start_logged(dir: &Path, name: &str, log_name: &str, args: &[&str]) -> Self {
        let data = dir.join(name).display().to_string();
        let log = dir.join(format!("{log_name}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
            .args(["run", "--data-dir", data.as_str(), "--no-generator", "--group-membership"])
            .args(args)
            .env("RUST_LOG", "warn,rtb_stream=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child: Some(child), log, data }
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.child.as_mut().unwrap()
    }

    /// Assignments received so far (log lines), per consumer group.
    fn assignments(&self) -> BTreeMap<String, usize> {
        assignments(&self.log)
    }

    /// Waits for the process to end by itself; its stdout.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn wait_for(what: &str, timeout_s: u64, mut ok: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ok() {
        assert!(started.elapsed() < std::time::Duration::from_secs(timeout_s), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The assignments an instance's log at `path` records, per consumer group.
fn assignments(path: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut per = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("partitions assigned to this process")) {
        let group = line.split("group=").nth(1).and_then(|g| g.split_whitespace().next()).unwrap_or("?").to_string();
        *per.entry(group).or_default() += 1;
    }
    per
}

impl Drop for Instance {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two topology processes sharing the consumer groups on Kafka, with the generator in a third; mid-stream
/// the second is stopped (`graceful`: SIGTERM, it commits and leaves the groups; else SIGKILL, then it is
/// started again). The first (and the restarted one) finish the run; the export from Redis and PostgreSQL
/// equals an uninterrupted embedded run of the same traffic: every click charged once, none lost.
fn scale_out_and_failover(graceful: bool) {
    servers_support::require_broker();
    let servers = Servers::new();
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("t-failover-{graceful}-{}-{nanos}-", std::process::id());
    let brokers = servers_support::brokers();
    // The idle timeout must outlast a takeover (on Tansu a killed member's partitions move at the next
    // rebalance, seconds later): a repartition partition whose upstream task is between owners is quiet,
    // not idle, and the simulator compresses 30 h of event time into seconds, so a downstream watermark
    // that moved on without it would make the records behind the takeover hours late.
    let cpc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/cpc.toml")).unwrap();
    assert!(!cpc.contains("watermark ="), "the test sets each operator's watermark itself");
    let topology = dir.path().join("cpc-idle-120s.toml");
    std::fs::write(&topology, cpc.replace("[[operator]]", "[[operator]]\nwatermark = { idle_timeout = \"120s\" }")).unwrap();
    let topology = topology.display().to_string();
    let common = ["--events", "20000", "--seed", "9", "--scale", "1", "--quiet", "--topology", topology.as_str()];
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["--rate", "10000000", "--kafka", brokers.as_str(), "--topic-prefix", prefix.as_str()]);
    args.extend(["--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()]);

    let a = Instance::start(dir.path(), "a", &args);
    let mut b = Instance::start(dir.path(), "b", &args);
    // Every group has given both processes partitions before the traffic starts.
    wait_for("both processes to be given partitions", 120, || {
        let (x, y) = (a.assignments(), b.assignments());
        x.len() >= 5 && y.len() >= 5
    });
    let gdata = dir.path().join("generator").display().to_string();
    let mut gen_args = vec!["run", "--data-dir", gdata.as_str(), "--generator-only"];
    gen_args.extend(common);
    gen_args.extend(["--rate", "3000", "--kafka", brokers.as_str(), "--topic-prefix", prefix.as_str()]);
    let generator = std::process::Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(&gen_args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("clicks charged", 120, || servers.db.ledger().unwrap().len() >= 200);
    assert!(b.child().try_wait().unwrap().is_none(), "the second process is still running mid-stream");
    let b = if graceful {
        let pid = b.child().id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", pid.as_str()]).status().unwrap().success());
        let log = b.log.clone();
        let (status, _) = b.finish();
        assert!(status.code().is_some(), "stopped in order, not by a signal: {status}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("partitions revoked from this process"), "its tasks committed and stopped: {text}");
        assert!(text.contains("left the consumer group"), "it left the groups: {text}");
        None
    } else {
        b.child().kill().unwrap(); // SIGKILL
        b.child().wait().unwrap();
        drop(b);
        // Started again on its data directory, it rejoins; the group hands the dead member's partitions on.
        Some(Instance::start_logged(dir.path(), "b", "b-restarted", &args))
    };
    let g = generator.wait_with_output().unwrap();
    assert!(g.status.success(), "generator: {}", String::from_utf8_lossy(&g.stderr));
    let (data_a, log_a) = (a.data.clone(), a.log.clone());
    let (status, stdout) = a.finish();
    assert!(status.success() && stdout.contains("complete: all 20000 ad-events"), "first process: {stdout}");
    let taken_over = assignments(&log_a);
    if let Some(b) = b {
        let (status, stdout) = b.finish();
        assert!(status.success() && stdout.contains("complete: all 20000 ad-events"), "restarted process: {stdout}");
    } else {
        assert!(
            taken_over.values().any(|n| *n >= 2),
            "the first process was given the stopped one's partitions: {taken_over:?}"
        );
    }

    let out = dir.path().join("out").display().to_string();
    served_equals_embedded(&servers, &data_a, &out, &common, &dir);
}

#[test]
fn two_instances_share_the_groups_and_one_stopped_in_order_hands_its_partitions_over() {
    scale_out_and_failover(true);
}

#[test]
fn two_instances_share_the_groups_and_one_killed_and_restarted_loses_and_doubles_nothing() {
    scale_out_and_failover(false);
}
