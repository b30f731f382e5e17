//! The PostgreSQL database sink against a real server (`RTB_TEST_POSTGRES`, default
//! `postgres://root@127.0.0.1:5432/test`): the conformance checks every database passes, plus what only a
//! server shows (concurrent writers, all-or-nothing batches, migrations). Each test uses its own schema,
//! dropped at the end. A missing server fails the tests, saying how to start one.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

#[path = "support/proxy.rs"]
mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtb_ops::sink::postgres_db::{migrate, MIGRATIONS};
use rtb_ops::sink::{conformance, Database, KeyRetention, LedgerEntry, LedgerKind, LedgerOutcome, PostgresConfig, PostgresDatabase};

fn url() -> String {
    std::env::var("RTB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// A database in a fresh schema, dropped with it.
struct TestDb(PostgresDatabase);

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self.0.drop_schema();
    }
}

fn config() -> PostgresConfig {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut cfg = PostgresConfig::from_url(&url()).unwrap();
    cfg.schema = format!("rtb_test_{}_{}_{}", std::process::id(), nanos % 1_000_000_000, NEXT.fetch_add(1, Ordering::Relaxed));
    cfg.retry.give_up_after = Duration::from_secs(5);
    cfg
}

fn open(cfg: PostgresConfig) -> TestDb {
    let url = cfg.url.clone();
    TestDb(PostgresDatabase::open(cfg).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}); start it (`pg_ctlcluster <version> main start`, or \
             `service postgresql start`) or point RTB_TEST_POSTGRES at one"
        )
    }))
}

fn db() -> TestDb {
    open(config())
}

fn raw() -> postgres::Client {
    let cfg = PostgresConfig::from_url(&url()).unwrap();
    cfg.url.parse::<postgres::Config>().unwrap().connect(postgres::NoTls).unwrap()
}

fn entry(key: &str, adv: &str, amount: i64) -> LedgerEntry {
    LedgerEntry {
        idempotency_key: key.into(),
        advertiser_id: adv.into(),
        campaign_id: Some("c1".into()),
        kind: if amount < 0 { LedgerKind::Charge } else { LedgerKind::Refund },
        amount,
        event_time: 1_000,
        reference: key.into(),
        fingerprint: 42,
    }
}

#[test]
fn postgres_database_conforms() {
    let d = db();
    conformance::check_database(&d.0);
}

#[test]
fn concurrent_ledger_writers_apply_each_key_once() {
    let d = db();
    let applied = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (d, applied) = (&d, &applied);
            s.spawn(move || {
                // Batches of 10 over the same 200 keys, each thread in another order.
                let mut keys: Vec<usize> = (0..200).collect();
                if t % 2 == 1 {
                    keys.reverse();
                }
                for chunk in keys.chunks(10) {
                    let batch: Vec<_> = chunk.iter().map(|i| entry(&format!("k{i}"), &format!("a{}", i % 3), -10)).collect();
                    for o in d.0.apply_ledger_batch(&batch).unwrap() {
                        match o {
                            LedgerOutcome::Applied { .. } => drop(applied.fetch_add(1, Ordering::Relaxed)),
                            LedgerOutcome::Duplicate => {}
                            LedgerOutcome::Conflict => panic!("same fingerprint: never a conflict"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(applied.load(Ordering::Relaxed), 200);
    assert_eq!(d.0.ledger().unwrap().len(), 200);
    let total: i64 = d.0.advertisers().unwrap().iter().map(|a| a.balance).sum();
    assert_eq!(total, -2_000);
    // Every row's balance_after is its advertiser's balance at that point of the history.
    let mut running = std::collections::HashMap::new();
    for r in d.0.ledger().unwrap() {
        let b = running.entry(r.entry.advertiser_id.clone()).or_insert(0i64);
        *b += r.entry.amount;
        assert_eq!(*b, r.balance_after, "{r:?}");
    }
}

#[test]
fn a_ledger_batch_failing_midway_rolls_back_whole() {
    let d = db();
    d.0.apply_ledger(&entry("before", "a", -5)).unwrap();
    // The third entry overflows BIGINT: the first two must not stay applied.
    let batch = [entry("x1", "a", -100), entry("x2", "big", i64::MAX), entry("x3", "big", 1)];
    let e = d.0.apply_ledger_batch(&batch).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    assert_eq!(d.0.balance("a").unwrap(), Some(-5));
    assert_eq!(d.0.balance("big").unwrap(), None);
    assert_eq!(d.0.ledger().unwrap().len(), 1);
    assert_eq!(d.0.ledger_keys_held().unwrap(), 1);
    // The same keys apply later (nothing of the failed batch was kept).
    assert!(matches!(d.0.apply_ledger(&entry("x1", "a", -100)).unwrap(), LedgerOutcome::Applied { balance: -105 }));
}

#[test]
fn migrations_applied_twice_are_a_no_op() {
    let d = db();
    let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(d.0.migration_versions().unwrap(), versions);
    let mut c = raw();
    assert_eq!(migrate(&mut c, d.0.schema(), None).unwrap(), Vec::<i32>::new());
    // Reopening (what every start does) applies nothing either and keeps the data.
    d.0.apply_ledger(&entry("k", "a", -7)).unwrap();
    let again = PostgresDatabase::open(config_for(d.0.schema())).unwrap();
    assert_eq!(again.migration_versions().unwrap(), versions);
    assert_eq!(again.balance("a").unwrap(), Some(-7));
}

fn config_for(schema: &str) -> PostgresConfig {
    let mut cfg = config();
    cfg.schema = schema.to_owned();
    cfg
}

#[test]
fn a_schema_at_an_older_migration_is_upgraded_keeping_its_data() {
    let cfg = config();
    let mut c = raw();
    assert_eq!(migrate(&mut c, &cfg.schema, Some(1)).unwrap(), vec![1]);
    c.batch_execute(&format!(
        "INSERT INTO \"{}\".advertisers (advertiser_id, opening_balance, balance, time_zone) VALUES ('old', 1000, 1000, 'UTC')",
        cfg.schema
    ))
    .unwrap();
    let d = open(cfg);
    assert_eq!(d.0.migration_versions().unwrap(), vec![1, 2, 3], "versions 2 and 3 applied at start");
    assert_eq!(d.0.apply_ledger(&entry("k", "old", -100)).unwrap(), LedgerOutcome::Applied { balance: 900 });
}

#[test]
fn sync_prunes_ledger_keys_older_than_the_retention() {
    let mut cfg = config();
    cfg.retention = KeyRetention { keep: Duration::from_secs(5 * 3_600), prune_step: Duration::from_secs(3_600) };
    let d = open(cfg);
    const H: i64 = 3_600_000;
    let batch: Vec<_> = (0..10).map(|i| LedgerEntry { event_time: i * H, ..entry(&format!("k{i}"), "a", -1) }).collect();
    d.0.apply_ledger_batch(&batch).unwrap();
    d.0.sync().unwrap();
    assert_eq!(d.0.ledger_keys_held().unwrap(), 6);
    assert_eq!(d.0.ledger().unwrap().len(), 10, "rows stay");
}

#[test]
fn an_unreachable_server_is_retried_with_backoff_then_an_error_names_it() {
    let mut cfg = PostgresConfig::from_url("postgres://root@127.0.0.1:1/test?retry_for=1s&schema=x").unwrap();
    assert_eq!((cfg.retry.give_up_after, cfg.schema.as_str()), (Duration::from_secs(1), "x"));
    cfg.connect_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let e = PostgresDatabase::open(cfg).unwrap_err().to_string();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(e.contains("postgres") && e.contains("unreachable"), "{e}");
    assert!(PostgresConfig::from_url("postgres://h/db?schema=Bad-Name").is_err(), "schema names are checked");
}

#[test]
fn a_server_restart_pauses_the_calls_which_resume_and_apply_once() {
    let proxy = proxy::Proxy::start(&proxy::host_port(&url()));
    let mut cfg = config();
    cfg.url = proxy::via(&cfg.url, &proxy.addr);
    cfg.retry.give_up_after = Duration::from_secs(20);
    let d = open(cfg);
    assert!(matches!(d.0.apply_ledger(&entry("k1", "a", -100)).unwrap(), LedgerOutcome::Applied { balance: -100 }));
    proxy.down();
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1_500));
            proxy.up();
        });
        let batch = [entry("k2", "a", -10), entry("k1", "a", -100)];
        assert_eq!(d.0.apply_ledger_batch(&batch).unwrap(), vec![LedgerOutcome::Applied { balance: -110 }, LedgerOutcome::Duplicate]);
    });
    assert!(started.elapsed() >= Duration::from_millis(1_400), "the call waited for the server");
    assert_eq!(d.0.balance("a").unwrap(), Some(-110));
    assert_eq!(d.0.ledger().unwrap().len(), 2);
}
