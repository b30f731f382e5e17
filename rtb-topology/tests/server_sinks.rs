//! `rtb run --redis URL --postgres URL` and `rtb export` with the same flags give what the same run on the
//! embedded sinks gives: every output file, and the money (ledger, balances). Needs the Redis and
//! PostgreSQL servers of `RTB_TEST_REDIS` / `RTB_TEST_POSTGRES` (defaults `redis://127.0.0.1:6379`,
//! `postgres://root@127.0.0.1:5432/test`); a missing one fails the test, saying how to start it. Unique
//! key prefix and schema per run, removed at the end.
//!
//! Two `rtb run`s of the same traffic are not byte-identical in three files even on the same backend (the
//! tasks interleave differently): the ledger's order (and so each row's `balance_after`), the order of
//! the stages in a dead letter (and the processing time a future timestamp's reason names), and the scores of rankings recomputed at different moments. Those three are
//! compared on what is deterministic: the ledger as a set of entries whose `balance_after` follow each
//! advertiser's history to its final balance, dead letters with their stages as a set, rankings as the
//! campaigns of each placement and category. Every other file must be byte-equal.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use rtb_ops::sink::{Cache, Database, PostgresDatabase, RedisCache};
use serde_json::Value;
use support::run::rtb;

fn redis_url() -> String {
    std::env::var("RTB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn postgres_url() -> String {
    std::env::var("RTB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

fn with_setting(url: &str, setting: &str) -> String {
    format!("{url}{}{setting}", if url.contains('?') { '&' } else { '?' })
}

/// The test's key prefix and schema, emptied and dropped when it ends.
struct Servers {
    cache: RedisCache,
    db: PostgresDatabase,
    redis: String,
    postgres: String,
}

impl Servers {
    fn new() -> Self {
        let tag = format!(
            "e2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000
        );
        let redis = with_setting(&redis_url(), &format!("prefix={tag}:&retry_for=5s"));
        let postgres = with_setting(&postgres_url(), &format!("schema={tag}&retry_for=5s"));
        let cache = RedisCache::connect(&redis).unwrap_or_else(|e| {
            panic!("Redis is not reachable ({e}); start it (`redis-server --daemonize yes`) or set RTB_TEST_REDIS")
        });
        let db = PostgresDatabase::connect(&postgres).unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable ({e}); start it (`service postgresql start`) or set RTB_TEST_POSTGRES")
        });
        Self { cache, db, redis, postgres }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.cache.delete_all();
        let _ = self.db.drop_schema();
    }
}

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
    sorted(
        rows.into_iter()
            .map(|mut r| {
                match file {
                    "ledger.jsonl" => drop(r.as_object_mut().unwrap().remove("balance_after")),
                    "rankings.jsonl" => r = serde_json::json!([r["placement"], r["category"], r["campaign_id"]]),
                    _ => {
                        if let Some(Value::Array(stages)) = r.get_mut("stages") {
                            stages.sort_by_key(|s| s.to_string());
                        }
                        // A future timestamp's reason names the processing time it was checked at.
                        if let Some(Value::String(reason)) = r.get_mut("reason") {
                            if reason.starts_with("FUTURE_TIMESTAMP") {
                                if let Some(i) = reason.find(" is ") {
                                    reason.truncate(i);
                                }
                            }
                        }
                    }
                }
                r.to_string()
            })
            .collect(),
    )
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

    let mut files: Vec<String> = std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut served_files: Vec<String> = std::fs::read_dir(&b).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    served_files.sort();
    assert_eq!(files, served_files);
    assert!(files.len() >= 11, "{files:?}");
    let mut problems = Vec::new();
    for f in &files {
        if ["ledger.jsonl", "dead_letters.jsonl", "rankings.jsonl"].contains(&f.as_str()) {
            if normalized(&a, f) != normalized(&b, f) {
                problems.push(format!("{f} differs"));
            }
        } else if std::fs::read(a.join(f)).unwrap() != std::fs::read(b.join(f)).unwrap() {
            problems.push(format!("{f} differs byte for byte"));
        }
    }
    assert!(problems.is_empty(), "{problems:?} (outputs in {})", dir.keep().display());
    // Money: the same ledger total, each side's ledger consistent with its balances.
    let (sum_a, sum_b) = (check_ledger_history(&a), check_ledger_history(&b));
    assert_eq!(sum_a, sum_b);
    assert!(sum_a < 0, "clicks were charged");
    let pg_sum: i64 = servers.db.ledger().unwrap().iter().map(|r| r.entry.amount).sum();
    assert_eq!(pg_sum, sum_b);
}
