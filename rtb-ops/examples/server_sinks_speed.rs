//! Rough speed of the Redis and PostgreSQL sinks on the servers of `RTB_TEST_REDIS` / `RTB_TEST_POSTGRES`
//! (defaults `redis://127.0.0.1:6379`, `postgres://root@127.0.0.1:5432/test`): calls per second from 1 and
//! 4 threads for `add_spend_once` and `write_window_metrics`, and ledger entries per second applied in
//! batches of 1 and 100. Uses a unique prefix and schema, removed at the end.
//!
//! `cargo run --release -p rtb-ops --example server_sinks_speed`

use std::time::Instant;

use rtb_ops::calendar::Day;
use rtb_ops::sink::{Cache, Database, LedgerEntry, LedgerKind, Metrics, MetricsScope, PostgresDatabase, RedisCache, WindowMetrics};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tag = format!("speed_{}", std::process::id());
    let redis = std::env::var("RTB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let pg = std::env::var("RTB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let cache = RedisCache::connect(&format!("{redis}?prefix={tag}:"))?;
    let db = PostgresDatabase::connect(&format!("{pg}?schema={tag}"))?;
    let rate = |what: &str, threads: usize, n: usize, started: Instant| {
        println!("{what:<42} {threads} thread(s): {:>8.0}/s", (threads * n) as f64 / started.elapsed().as_secs_f64());
    };
    for threads in [1, 4] {
        let n = 5_000;
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..n {
                        cache.add_spend_once(&format!("c{}", i % 40), Day(1), 100, &format!("k{t}:{i}"), i as i64).expect("spend");
                    }
                });
            }
        });
        rate("redis add_spend_once", threads, n, started);
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..n {
                        let id = format!("c{}", i % 40);
                        cache
                            .write_window_metrics(&WindowMetrics {
                                scope: MetricsScope::Campaign,
                                campaign_id: id.clone(),
                                id,
                                category: "books".into(),
                                window_start: (i / 40) as i64 * 300_000,
                                window_end: (i / 40) as i64 * 300_000 + 300_000,
                                shard: t as u32,
                                metrics: Metrics { impressions: 10, clicks: 1, conversions: 0, spend: 100, revenue: 0 },
                            })
                            .expect("window");
                    }
                });
            }
        });
        rate("redis write_window_metrics", threads, n, started);
    }
    for (batch, threads) in [(1, 1), (1, 4), (100, 1), (100, 4)] {
        let n = if batch == 1 { 2_000 } else { 20_000 };
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let db = &db;
                s.spawn(move || {
                    let entries: Vec<LedgerEntry> = (0..n)
                        .map(|i| LedgerEntry {
                            idempotency_key: format!("b{batch}:t{t}:{i}"),
                            advertiser_id: format!("a{}", i % 8),
                            campaign_id: Some("c".into()),
                            kind: LedgerKind::Charge,
                            amount: -100,
                            event_time: i as i64,
                            reference: String::new(),
                            fingerprint: 1,
                        })
                        .collect();
                    for chunk in entries.chunks(batch) {
                        db.apply_ledger_batch(chunk).expect("ledger");
                    }
                });
            }
        });
        rate(&format!("postgres ledger entries, batches of {batch}"), threads, n, started);
    }
    cache.delete_all()?;
    db.drop_schema()?;
    Ok(())
}
