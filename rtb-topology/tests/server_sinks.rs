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

    // The same traffic, uninterrupted, on the embedded sinks.
    let (edata, eout) = (dir.path().join("embedded").display().to_string(), dir.path().join("embedded-out").display().to_string());
    let mut run = vec!["run", "--data-dir", edata.as_str(), "--rate", "10000000"];
    run.extend(common);
    rtb(&run).unwrap_or_else(|e| panic!("{e}"));
    rtb(&["export", "--data-dir", edata.as_str(), "--output", eout.as_str()]).unwrap_or_else(|e| panic!("{e}"));
    let sum = compare_outputs(Path::new(&eout), Path::new(&served_out), true, &dir);
    let pg_sum: i64 = servers.db.ledger().unwrap().iter().map(|r| r.entry.amount).sum();
    assert_eq!(pg_sum, sum, "the ledger in PostgreSQL");
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
    let (edata, eout) = (dir.path().join("embedded").display().to_string(), dir.path().join("embedded-out").display().to_string());
    let mut run = vec!["run", "--data-dir", edata.as_str(), "--rate", "10000000"];
    run.extend(common);
    rtb(&run).unwrap_or_else(|e| panic!("{e}"));
    rtb(&["export", "--data-dir", edata.as_str(), "--output", eout.as_str()]).unwrap_or_else(|e| panic!("{e}"));
    let sum = compare_outputs(Path::new(&eout), Path::new(&out), false, &dir);
    let pg_sum: i64 = servers.db.ledger().unwrap().iter().map(|r| r.entry.amount).sum();
    assert_eq!(pg_sum, sum, "the ledger in PostgreSQL");
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
    rtb(&["export", "--data-dir", data.as_str(), "--output", out.as_str(), "--redis", servers.redis.as_str(), "--postgres", servers.postgres.as_str()])
        .unwrap_or_else(|e| panic!("{e}"));
    let (edata, eout) = (dir.path().join("embedded").display().to_string(), dir.path().join("embedded-out").display().to_string());
    let mut run = vec!["run", "--data-dir", edata.as_str(), "--rate", "10000000"];
    run.extend(common);
    rtb(&run).unwrap_or_else(|e| panic!("{e}"));
    rtb(&["export", "--data-dir", edata.as_str(), "--output", eout.as_str()]).unwrap_or_else(|e| panic!("{e}"));
    let sum = compare_outputs(Path::new(&eout), Path::new(&out), true, &dir);
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
