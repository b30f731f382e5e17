//! The Redis cache sink against a real server (`RTB_TEST_REDIS`, default `redis://127.0.0.1:6379`): the
//! conformance checks every cache passes, plus what only a server shows (concurrent clients, the key
//! layout, pruning in `sync`, the retry loop). Each test uses its own key prefix and deletes its keys.
//! A missing server fails the tests, saying how to start one.

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/proxy.rs"]
mod proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtb_ops::calendar::Day;
use rtb_ops::schema::Placement;
use rtb_ops::sink::{conformance, Cache, KeyRetention, RankedEntry, RedisCache, RedisConfig};

fn url() -> String {
    std::env::var("RTB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A cache under a fresh prefix; its keys are deleted when dropped.
struct TestCache(RedisCache);

impl Drop for TestCache {
    fn drop(&mut self) {
        let _ = self.0.delete_all();
    }
}

fn config() -> RedisConfig {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut cfg = RedisConfig::from_url(&url()).unwrap();
    cfg.prefix = format!("test-{}-{nanos}-{}:", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    cfg.retry.give_up_after = Duration::from_secs(5);
    cfg
}

fn open(cfg: RedisConfig) -> TestCache {
    let url = cfg.url.clone();
    TestCache(RedisCache::open(cfg).unwrap_or_else(|e| {
        panic!(
            "Redis is not reachable at {url} ({e}); start it (`redis-server --daemonize yes --save '' --appendonly no`) \
             or point RTB_TEST_REDIS at one"
        )
    }))
}

fn cache() -> TestCache {
    open(config())
}

fn raw() -> redis::Connection {
    redis::Client::open(RedisConfig::from_url(&url()).unwrap().url.as_str()).unwrap().get_connection().unwrap()
}

#[test]
fn redis_cache_conforms() {
    let c = cache();
    conformance::check_cache(&c.0);
}

#[test]
fn rankings_are_sorted_sets_by_rank_with_the_cpc_alongside() {
    let c = cache();
    let e = |rank: u32, id: &str, cpc: i64| RankedEntry { rank, campaign_id: id.into(), bid_price: 900, pctr: 0.0123, score: 11.07, cpc };
    c.0.put_ranking(Placement::Home, "books", &[e(1, "b", 700), e(2, "a", 350), e(3, "c", 100)]).unwrap();
    let mut con = raw();
    let p = c.0.prefix();
    let z: Vec<(String, f64)> = redis::cmd("ZRANGE").arg(format!("{p}rtb:HOME:books")).arg(0).arg(-1).arg("WITHSCORES").query(&mut con).unwrap();
    assert_eq!(z, vec![("b".into(), 1.0), ("a".into(), 2.0), ("c".into(), 3.0)]);
    let cpc: i64 = redis::cmd("HGET").arg(format!("{p}rtb-cpc:HOME:books")).arg("a").query(&mut con).unwrap();
    assert_eq!(cpc, 350);
    assert_eq!(c.0.ranking(Placement::Home, "books").unwrap()[1], e(2, "a", 350), "floats come back exactly");
    // A shorter ranking replaces the whole set.
    c.0.put_ranking(Placement::Home, "books", &[e(1, "c", 100)]).unwrap();
    let z: Vec<String> = redis::cmd("ZRANGE").arg(format!("{p}rtb:HOME:books")).arg(0).arg(-1).query(&mut con).unwrap();
    assert_eq!(z, vec!["c".to_string()]);
    let cpcs: Vec<String> = redis::cmd("HKEYS").arg(format!("{p}rtb-cpc:HOME:books")).query(&mut con).unwrap();
    assert_eq!(cpcs, vec!["c".to_string()]);
}

#[test]
fn concurrent_add_spend_once_with_one_key_applies_once() {
    let c = cache();
    let day = Day(19_737);
    let applied = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for i in 0..50 {
                    let (_, ok) = c.0.add_spend_once("c1", day, 10, &format!("click:{i}"), 1_000 + i).unwrap();
                    if ok {
                        applied.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(applied.load(Ordering::Relaxed), 50, "each key applied by exactly one of the 8 threads");
    assert_eq!(c.0.spend("c1", day).unwrap(), 500);
    assert_eq!(c.0.spend_keys_held().unwrap(), 50);
}

#[test]
fn replayed_window_rows_move_the_totals_once_also_from_many_clients() {
    let c = cache();
    let row = |shard: u32, clicks: i64| rtb_ops::sink::WindowMetrics {
        scope: rtb_ops::sink::MetricsScope::Campaign,
        id: "c1".into(),
        campaign_id: "c1".into(),
        category: "books".into(),
        window_start: 0,
        window_end: 300_000,
        shard,
        metrics: rtb_ops::sink::Metrics { impressions: 10 * clicks, clicks, conversions: 0, spend: 1_000 * clicks, revenue: 0 },
    };
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let c = &c;
            s.spawn(move || {
                for n in 1..=20 {
                    c.0.write_window_metrics(&row(t, n)).unwrap(); // each shard grows to 20 clicks, replayed values
                    c.0.write_window_metrics(&row(t, n)).unwrap();
                }
            });
        }
    });
    let totals = c.0.campaign_totals("c1").unwrap();
    assert_eq!((totals.clicks, totals.impressions, totals.spend), (80, 800, 80_000));
    assert_eq!(c.0.category_totals("books").unwrap(), totals);
    assert_eq!(c.0.window_metrics(rtb_ops::sink::MetricsScope::Campaign, "c1").unwrap()[0].metrics, totals);
}

#[test]
fn sync_prunes_spend_keys_older_than_the_retention() {
    let mut cfg = config();
    cfg.retention = KeyRetention { keep: Duration::from_secs(5 * 3_600), prune_step: Duration::from_secs(3_600) };
    let c = open(cfg);
    const H: i64 = 3_600_000;
    for i in 0..10 {
        c.0.add_spend_once("c", Day(1), 1, &format!("spend:{i}"), i * H).unwrap();
    }
    c.0.sync().unwrap();
    assert_eq!(c.0.spend_keys_held().unwrap(), 6, "keys before 4 h pruned");
    assert_eq!(c.0.spend("c", Day(1)).unwrap(), 10, "counters stay");
    assert_eq!(c.0.add_spend_once("c", Day(1), 1, "spend:9", 9 * H).unwrap(), (10, false));
}

#[test]
fn an_unreachable_server_is_retried_with_backoff_then_an_error_names_it() {
    // Nothing listens on port 1.
    let mut cfg = RedisConfig::from_url("redis://127.0.0.1:1/0?retry_for=1s&prefix=x:").unwrap();
    assert_eq!((cfg.retry.give_up_after, cfg.prefix.as_str()), (Duration::from_secs(1), "x:"));
    cfg.timeout = Duration::from_millis(200);
    let started = Instant::now();
    let e = RedisCache::open(cfg).unwrap_err().to_string();
    assert!(started.elapsed() >= Duration::from_secs(1), "retried for the configured time");
    assert!(e.contains("redis") && e.contains("unreachable"), "{e}");
}

#[test]
fn a_server_restart_pauses_the_calls_which_resume_and_apply_once() {
    let proxy = proxy::Proxy::start(&proxy::host_port(&url()));
    let mut cfg = config();
    cfg.url = proxy::via(&cfg.url, &proxy.addr);
    cfg.retry.give_up_after = Duration::from_secs(20);
    cfg.timeout = Duration::from_millis(500);
    let c = open(cfg);
    let day = Day(19_737);
    assert_eq!(c.0.add_spend_once("c1", day, 100, "k1", 1).unwrap(), (100, true));
    proxy.down();
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1_500));
            proxy.up();
        });
        // Issued while the server is away: waits, then applies once.
        assert_eq!(c.0.add_spend_once("c1", day, 50, "k2", 2).unwrap(), (150, true));
    });
    assert!(started.elapsed() >= Duration::from_millis(1_400), "the call waited for the server");
    assert_eq!(c.0.add_spend_once("c1", day, 50, "k2", 2).unwrap(), (150, false));
    assert_eq!(c.0.spend("c1", day).unwrap(), 150);
}

#[test]
fn a_cache_whose_data_was_lost_refuses_to_count_or_serve_and_writes_nothing() {
    let c = cache();
    let day = Day(19_737);
    assert_eq!(c.0.add_spend_once("c1", day, 9_000, "k1", 1).unwrap(), (9_000, true));
    let epoch = c.0.epoch().to_owned();
    // What a Redis restarted without persistence looks like to this prefix.
    c.0.delete_all().unwrap();
    let lost = |r: Result<(), rtb_ops::Error>| {
        let e = r.unwrap_err();
        assert!(matches!(e, rtb_ops::Error::CacheLost { .. }), "{e}");
    };
    // A click's spend must not restart from zero (it would miss the pause at 10 000).
    lost(c.0.add_spend_once("c1", day, 2_000, "k2", 2).map(drop));
    lost(c.0.spend("c1", day).map(drop));
    lost(c.0.campaign_totals("c1").map(drop));
    lost(c.0.put_ranking(Placement::Home, "books", &[]));
    lost(c.0.mark_once("m").map(drop));
    lost(c.0.rankings().map(drop));
    let mut con = raw();
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", c.0.prefix())).query(&mut con).unwrap();
    assert!(left.is_empty(), "nothing written after the loss: {left:?}");
    // Opening it again with the epoch it had fails too; a deliberate fresh open starts a new epoch.
    let mut again = config();
    again.prefix = c.0.prefix().to_owned();
    again.expect_epoch = Some(epoch.clone());
    assert!(matches!(RedisCache::open(again.clone()).unwrap_err(), rtb_ops::Error::CacheLost { .. }));
    again.expect_epoch = None;
    let fresh = open(again);
    assert_ne!(fresh.0.epoch(), epoch);
    assert_eq!(fresh.0.add_spend_once("c1", day, 1, "k3", 3).unwrap(), (1, true));
}
