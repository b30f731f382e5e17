//! `rtb run` on a real Kafka broker (the local Tansu of `scripts/services.sh`, or `RTB_KAFKA`; without a
//! broker these tests fail naming it): the log and the operators' state on the cluster, the sinks under
//! the data directory. Its exported outputs equal those of the same run on the embedded log, every file;
//! killed with SIGKILL mid-run and restarted, it ends with the same money.

mod servers_support;
mod support;

use support::outputs::ledger_rows;
use servers_support::{brokers, require_broker};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const EVENTS: &str = "3000";
const SEED: &str = "11";

fn rtb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtb"))
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("t-{test}-{}-{nanos}-", std::process::id())
}

/// Runs `rtb run` to completion with `extra` arguments.
fn run_complete(data: &Path, extra: &[&str]) -> String {
    let out = rtb()
        .args(["run", "--data-dir"])
        .arg(data)
        .args(["--events", EVENTS, "--rate", "10000000", "--seed", SEED, "--quiet"])
        .args(extra)
        .output()
        .expect("spawn rtb run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "rtb run {extra:?} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("complete: all {EVENTS} ad-events")), "{stdout}");
    stdout
}

/// Bytes of the files under `dir` (0 when it does not exist yet).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn export(data: &Path, out: &Path) {
    let o = rtb().args(["export", "--data-dir"]).arg(data).arg("--output").arg(out).output().expect("export");
    assert!(o.status.success(), "export: {}", String::from_utf8_lossy(&o.stderr));
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path).expect("read").lines().map(str::to_string).collect();
    v.sort();
    v
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).expect("export dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect()
}

/// Dead letters with the stages that rejected each in a fixed order (stages reject concurrently), and
/// their reason's code only (a FUTURE_TIMESTAMP reason quotes the wall clock).
fn dead_letters(path: &Path) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = std::fs::read_to_string(path)
        .expect("dead letters")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
            if let Some(stages) = v.get_mut("stages").and_then(|s| s.as_array_mut()) {
                stages.sort_by_key(|s| s.to_string());
            }
            let code = v["reason"].as_str().and_then(|r| r.split(':').next()).unwrap_or_default().to_string();
            v["reason"] = serde_json::Value::String(code);
            v
        })
        .collect();
    v.sort_by_key(|v| v.to_string());
    v
}

/// Rankings as (placement, category, campaign, rank): the score and CPC depend on the CTRs the ranking
/// stage read from the cache when it ran, which the performance stage writes concurrently (timing, not
/// the log, decides them; the embedded kill-restart test leaves rankings out for the same reason).
fn rankings(path: &Path) -> BTreeSet<(String, String, String, i64)> {
    std::fs::read_to_string(path)
        .expect("rankings")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("placement"), s("category"), s("campaign_id"), v["rank"].as_i64().unwrap_or_default())
        })
        .collect()
}

/// Every exported file of `a` equals `b`'s: ledger rows as a set without `balance_after`, dead letters with
/// their stages sorted, rankings by rank, every other file as sorted lines.
fn same_exports(a: &Path, b: &Path) {
    assert_eq!(files(a), files(b), "the same files are exported");
    let (la, lb) = (ledger_rows(a), ledger_rows(b));
    assert!(la.len() > 100, "the run charged clicks ({} ledger rows)", la.len());
    let only_a: Vec<_> = la.difference(&lb).take(5).collect();
    let only_b: Vec<_> = lb.difference(&la).take(5).collect();
    assert!(only_a.is_empty() && only_b.is_empty(), "ledgers differ: only in {a:?}: {only_a:?}; only in {b:?}: {only_b:?}");
    assert_eq!(dead_letters(&a.join("dead_letters.jsonl")), dead_letters(&b.join("dead_letters.jsonl")));
    let ra = rankings(&a.join("rankings.jsonl"));
    assert!(!ra.is_empty(), "rankings are exported");
    assert_eq!(ra, rankings(&b.join("rankings.jsonl")));
    for f in files(a) {
        if ["ledger.jsonl", "dead_letters.jsonl", "rankings.jsonl"].contains(&f.as_str()) {
            continue;
        }
        let (xa, xb) = (sorted_lines(&a.join(&f)), sorted_lines(&b.join(&f)));
        assert_eq!(xa.len(), xb.len(), "{f}: row counts differ");
        assert!(xa == xb, "{f} differs: first difference {:?}", xa.iter().zip(&xb).find(|(x, y)| x != y));
    }
}

/// The shipped topology with the Kafka cluster and a topic prefix set in its `[runtime]` section.
fn topology_on_kafka(dir: &Path, prefix: &str) -> PathBuf {
    let text = rtb_topology::CPC_TOPOLOGY_TOML.replacen(
        "[runtime]\n",
        &format!("[runtime]\nkafka = \"{}\"\ntopic_prefix = \"{prefix}\"\n", brokers()),
        1,
    );
    let path = dir.join("cpc-kafka.toml");
    std::fs::write(&path, text).expect("write topology");
    path
}

#[test]
fn a_run_on_kafka_exports_what_the_same_run_on_the_embedded_log_exports() {
    require_broker();
    let tmp = tempfile::tempdir().expect("tmp");
    let (embedded, kafka) = (tmp.path().join("embedded"), tmp.path().join("kafka"));
    run_complete(&embedded, &[]);
    // The cluster comes from the topology's `[runtime]` section here (the flags in the other tests).
    let file = topology_on_kafka(tmp.path(), &unique_prefix("equal"));
    run_complete(&kafka, &["--topology", &file.display().to_string()]);
    let (ea, eb) = (tmp.path().join("export-embedded"), tmp.path().join("export-kafka"));
    export(&embedded, &ea);
    export(&kafka, &eb);
    same_exports(&ea, &eb);
    assert!(!kafka.join("log").exists() && !kafka.join("state").exists(), "log and state are on the cluster");
    // The sinks of a directory belong to the log its run used: switching logs is refused.
    let o = rtb()
        .args(["run", "--data-dir"])
        .arg(&embedded)
        .args(["--events", EVENTS, "--seed", SEED, "--quiet", "--kafka", &brokers(), "--topic-prefix", "other-"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("holds the sinks of a run on the embedded log"), "{err}");
}

#[test]
fn a_kafka_run_killed_mid_run_and_restarted_ends_with_the_same_money() {
    require_broker();
    let tmp = tempfile::tempdir().expect("tmp");
    let (reference, killed) = (tmp.path().join("reference"), tmp.path().join("killed"));
    let brokers = brokers();
    let ref_prefix = unique_prefix("kill-ref");
    run_complete(&reference, &["--kafka", &brokers, "--topic-prefix", &ref_prefix]);

    let prefix = unique_prefix("kill");
    let mut kills = 0;
    for _ in 0..2 {
        let before = dir_size(&killed);
        let mut child = rtb()
            .args(["run", "--data-dir"])
            .arg(&killed)
            .args(["--events", EVENTS, "--rate", "1500", "--seed", SEED, "--quiet", "--kafka", &brokers, "--topic-prefix", &prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Killed once this attempt has processed something (its embedded sinks grew), not after a fixed
        // time: on a loaded machine the start on Kafka (topics, restore, consumers) alone takes seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none()
            && dir_size(&killed) < before + 8_192
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 1, "the run must have been killed mid-way");
    let out = run_complete(&killed, &["--kafka", &brokers, "--topic-prefix", &prefix]);
    assert!(out.contains("resumed after"), "the restart continued the killed run: {out}");

    let (ea, eb) = (tmp.path().join("export-reference"), tmp.path().join("export-killed"));
    export(&reference, &ea);
    export(&killed, &eb);
    let (la, lb) = (ledger_rows(&ea), ledger_rows(&eb));
    assert!(la.iter().any(|r| r.entry_type == "REFUND"), "duplicate clicks were refunded");
    assert!(!sorted_lines(&ea.join("compensations.jsonl")).is_empty(), "compensations were published");
    assert_eq!(la, lb, "the same charges and refunds, none twice, none lost");
    assert_eq!(sorted_lines(&ea.join("balances.jsonl")), sorted_lines(&eb.join("balances.jsonl")));
    assert_eq!(sorted_lines(&ea.join("compensations.jsonl")), sorted_lines(&eb.join("compensations.jsonl")));
}

#[test]
fn generator_only_and_topology_only_processes_together_make_the_same_run() {
    require_broker();
    let tmp = tempfile::tempdir().expect("tmp");
    let (both, topo, generator) = (tmp.path().join("both"), tmp.path().join("topology"), tmp.path().join("generator"));
    let brokers = brokers();
    run_complete(&both, &["--kafka", &brokers, "--topic-prefix", &unique_prefix("split-ref")]);
    let prefix = unique_prefix("split");
    // The topology instance starts first and waits for the generator's events.
    let topology = rtb()
        .args(["run", "--data-dir"])
        .arg(&topo)
        .args(["--events", EVENTS, "--rate", "10000000", "--seed", SEED, "--quiet", "--no-generator"])
        .args(["--kafka", &brokers, "--topic-prefix", &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn topology");
    std::thread::sleep(Duration::from_secs(3));
    let g = rtb()
        .args(["run", "--data-dir"])
        .arg(&generator)
        .args(["--events", EVENTS, "--rate", "10000000", "--seed", SEED, "--quiet", "--generator-only"])
        .args(["--kafka", &brokers, "--topic-prefix", &prefix])
        .output()
        .expect("generator");
    assert!(g.status.success(), "generator: {}", String::from_utf8_lossy(&g.stderr));
    let t = topology.wait_with_output().expect("topology");
    let stdout = String::from_utf8_lossy(&t.stdout);
    assert!(t.status.success(), "topology: {stdout}\n{}", String::from_utf8_lossy(&t.stderr));
    assert!(stdout.contains(&format!("complete: all {EVENTS} ad-events")), "{stdout}");
    let (ea, eb) = (tmp.path().join("export-both"), tmp.path().join("export-split"));
    export(&both, &ea);
    export(&topo, &eb);
    same_exports(&ea, &eb);
}

#[test]
fn kafka_settings_without_a_cluster_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (args, says) in [
        (&["--no-generator"][..], "need --kafka"),
        (&["--generator-only"][..], "need --kafka"),
        (&["--topic-prefix", "p-"][..], "need a Kafka cluster"),
        (&["--kafka-property", "linger.ms=5"][..], "need a Kafka cluster"),
        (&["--group-membership"][..], "--group-membership needs --kafka"),
    ] {
        let o = rtb()
            .args(["run", "--data-dir"])
            .arg(tmp.path().join(args[0].trim_start_matches('-')))
            .args(["--quiet"])
            .args(args)
            .env_remove("RTB_KAFKA")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn kafka_properties_reach_the_clients() {
    require_broker();
    let tmp = tempfile::tempdir().expect("tmp");
    // librdkafka refuses a property it does not know: the flag reaches the clients it creates.
    let o = rtb()
        .args(["run", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--events", "10", "--quiet", "--kafka", &brokers(), "--topic-prefix", &unique_prefix("props")])
        .args(["--kafka-property", "no.such.property=1"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no.such.property"), "{err}");
}
