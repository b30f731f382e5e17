//! End-to-end latency of the CPC system on Kafka (issue 8, Performance): the time from producing a click
//! to the moment its charge is visible in PostgreSQL, at 1 k, 5 k and 20 k ad-events/s (target: p99 ≤ 100 ms
//! at 5 k/s).
//!
//! The topology runs in this process on a thread, as `rtb run --kafka BROKERS --topic-prefix P
//! --no-generator --redis URL?prefix=P: --postgres URL?schema=P`: it seeds the advertisers, runs every
//! consumer group, and drains once the log holds every event of the run. The bench is the generator: it
//! replays the same simulator (same seed, scale, pace and total, so the topology's count of the run's events
//! matches) into the same topics with the library's [`Batcher`] (origin `sim@seq`, as `rtb run
//! --generator-only` writes them), paced in ad-events per second, phase by phase. Every click with a new
//! `event_id` is a sample: its produce instant is taken just before the batch holding it is appended, and a
//! poller on a dedicated PostgreSQL connection queries `ledger_keys` (the ledger's idempotency keys,
//! written in the transaction that inserts the ledger row and moves the balance) for the pending
//! `charge:id:{event_id}` keys in a tight loop; the latency is the first poll that sees the key.
//!
//! Before the measured phases a warm-up (3 000 ad-events at 1 k/s) runs until each of its clicks is
//! charged, so consumer-group joins are not counted. Phases: 1 k, 5 k, 20 k ad-events/s, each for
//! `RTB_LATENCY_SECS` seconds (default 10). Prints `LATENCY name=charge_visible_{rate} p50_ms=… p99_ms=…`.
//! Needs the local broker (`scripts/services.sh`; `RTB_KAFKA` names another), Redis and PostgreSQL
//! (`RTB_TEST_REDIS` / `RTB_TEST_POSTGRES`); the key prefix and schema are removed at the end.
//!
//! `cargo bench --bench latency`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rtb_ops::config::TopicNames;
use rtb_ops::sink::{PostgresDatabase, RedisCache};
use rtb_stream::kafka::{KafkaConfig, KafkaLog};
use rtb_topology::app::pricing::GspPricer;
use rtb_topology::app::produce::Batcher;
use rtb_topology::app::runlog::{KafkaRunLog, RunLog};
use rtb_topology::cli::{execute, Cli};
use rtb_topology::sim::{SimConfig, SimTopic, Simulator, DEFAULT_PACE_MS};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEED: u64 = 42;
const SCALE: u32 = 1;
const WARMUP_AD_EVENTS: u64 = 3_000;
const WARMUP_RATE: f64 = 1_000.0;
/// The most ad-events held before an append while on schedule.
const MAX_BATCH: usize = 256;
/// How long the bench waits for the charges of a phase before calling the rest missing.
const SETTLE: Duration = Duration::from_secs(30);

fn brokers() -> String {
    std::env::var("RTB_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn with_setting(url: &str, setting: &str) -> String {
    format!("{url}{}{setting}", if url.contains('?') { '&' } else { '?' })
}

/// Clicks produced and not yet seen charged: idempotency key → (phase, produce instant).
type Pending = Arc<Mutex<HashMap<String, (usize, Instant)>>>;

/// Polls `ledger_keys` for the pending keys until `stop`; each key seen is moved to the results as
/// (phase, latency).
fn poll_charges(db: &PostgresDatabase, pending: &Pending, done: &Mutex<Vec<(usize, Duration)>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let keys: Vec<String> = pending.lock().expect("lock").keys().cloned().collect();
        if keys.is_empty() {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let found: Vec<String> = db
            .call("latency_poll", |c| {
                c.query("SELECT idempotency_key FROM ledger_keys WHERE idempotency_key = ANY($1)", &[&keys])
                    .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })
            .expect("poll ledger_keys");
        let seen = Instant::now();
        if found.is_empty() {
            continue;
        }
        let mut p = pending.lock().expect("lock");
        let mut d = done.lock().expect("lock");
        for k in found {
            if let Some((phase, t)) = p.remove(&k) {
                d.push((phase, seen.duration_since(t)));
            }
        }
    }
}

/// The charge key of a click payload with an `event_id`; `None` for anything else (or malformed bytes).
fn click_key(payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v.get("event_type")?.as_str()? != "CLICK" {
        return None;
    }
    Some(format!("charge:id:{}", v.get("event_id")?.as_str()?))
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let secs: f64 = std::env::var("RTB_LATENCY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10.0);
    let rates = [1_000.0f64, 5_000.0, 20_000.0];
    let counts: Vec<u64> = rates.iter().map(|r| (r * secs) as u64).collect();
    let total = WARMUP_AD_EVENTS + counts.iter().sum::<u64>();

    let tag = format!(
        "lat_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() % 1_000_000_000
    );
    let prefix = format!("bench-{tag}-");
    let redis_base = std::env::var("RTB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let pg_base = std::env::var("RTB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let redis = with_setting(&redis_base, &format!("prefix={tag}:&retry_for=5s"));
    let postgres = with_setting(&pg_base, &format!("schema={tag}&retry_for=5s"));
    let cache = RedisCache::connect(&redis)
        .unwrap_or_else(|e| panic!("Redis is not reachable ({e}); start it or set RTB_TEST_REDIS"));
    let db = PostgresDatabase::connect(&postgres)
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable ({e}); start it or set RTB_TEST_POSTGRES"));

    // The topology, without the generator.
    let dir = tempfile::tempdir().expect("temporary data directory");
    let data = dir.path().join("rtb-data");
    let args: Vec<String> = [
        "rtb", "run", "--data-dir", data.to_str().expect("utf-8 path"), "--kafka", &brokers(), "--topic-prefix", &prefix,
        "--no-generator", "--events", &total.to_string(), "--seed", &SEED.to_string(), "--scale", &SCALE.to_string(),
        "--redis", &redis, "--postgres", &postgres, "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cli = Cli::try_parse_from(args).expect("arguments");
    let topology = std::thread::spawn(move || {
        let mut report = Vec::new();
        let r = execute(cli, &mut report).map(|_| ());
        (r, String::from_utf8_lossy(&report).into_owned())
    });

    // The topology has created the topics and seeded the advertisers once they are in the database.
    let t = Instant::now();
    loop {
        let n = db.call("advertisers", |c| c.query_one("SELECT count(*) FROM advertisers", &[]).map(|r| r.get::<_, i64>(0)));
        if matches!(n, Ok(n) if n > 0) {
            break;
        }
        assert!(!topology.is_finished(), "the topology ended before it started");
        assert!(t.elapsed() < Duration::from_secs(120), "the topology did not seed the advertisers within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("topology up after {:.2} s", t.elapsed().as_secs_f64());

    let pending: Pending = Arc::default();
    let done = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (pending, done, stop) = (Arc::clone(&pending), Arc::clone(&done), Arc::clone(&stop));
        let db = PostgresDatabase::connect(&postgres).expect("poller connection");
        std::thread::spawn(move || poll_charges(&db, &pending, &done, &stop))
    };

    let log = KafkaRunLog::new(KafkaLog::connect(KafkaConfig::new(brokers()).with_prefix(prefix.clone())).expect("connect"));
    let topics = TopicNames::default();
    let sim_cfg = SimConfig { seed: SEED, scale: SCALE, ad_events: total, pace_ms: DEFAULT_PACE_MS, ..SimConfig::default() };
    let mut sim = Simulator::new(sim_cfg, GspPricer::default()).peekable();
    let mut batch = Batcher::new(&log as &dyn RunLog, &topics, MAX_BATCH * 4);
    let mut seen_ids = std::collections::HashSet::new();

    let phases: Vec<(String, f64, u64)> = std::iter::once(("warmup".to_string(), WARMUP_RATE, WARMUP_AD_EVENTS))
        .chain(rates.iter().zip(&counts).map(|(r, n)| (format!("{}k", *r as u64 / 1000), *r, *n)))
        .collect();
    let mut results = Vec::new();
    for (phase, (name, rate, n)) in phases.iter().enumerate() {
        let last = phase + 1 == phases.len();
        let start = Instant::now();
        let mut sent_ad = 0u64;
        let mut held: Vec<String> = Vec::new();
        let mut held_n = 0usize;
        let append = |batch: &mut Batcher, held: &mut Vec<String>, held_n: &mut usize| {
            let t = Instant::now();
            {
                let mut p = pending.lock().expect("lock");
                for k in held.drain(..) {
                    p.insert(k, (phase, t));
                }
            }
            batch.flush().expect("produce");
            *held_n = 0;
        };
        while sent_ad < *n || (last && sim.peek().is_some()) {
            let Some(ev) = sim.next() else { break };
            if ev.topic == SimTopic::Ad {
                sent_ad += 1;
                if let Some(k) = click_key(&ev.payload) {
                    if seen_ids.insert(k.clone()) {
                        held.push(k);
                    }
                }
            }
            batch.push(ev).expect("produce");
            held_n += 1;
            let due = Duration::from_secs_f64(sent_ad as f64 / rate);
            let ahead = due.checked_sub(start.elapsed()).filter(|w| *w >= Duration::from_millis(1));
            if ahead.is_some() || held_n >= MAX_BATCH {
                append(&mut batch, &mut held, &mut held_n);
            }
            if let Some(wait) = ahead {
                std::thread::sleep(wait);
            }
        }
        append(&mut batch, &mut held, &mut held_n);
        let produced_s = start.elapsed().as_secs_f64();
        // Wait for the phase's charges before the next phase, so a backlog is not carried into it.
        let t = Instant::now();
        while pending.lock().expect("lock").values().any(|(p, _)| *p == phase) && t.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(5));
        }
        let missing = pending.lock().expect("lock").values().filter(|(p, _)| *p == phase).count();
        let mut lat: Vec<Duration> = done.lock().expect("lock").iter().filter(|(p, _)| *p == phase).map(|(_, d)| *d).collect();
        lat.sort();
        let achieved = sent_ad as f64 / produced_s;
        if lat.is_empty() {
            println!("{name}: {sent_ad} ad-events in {produced_s:.2} s ({achieved:.0}/s): no charge seen, {missing} missing");
            continue;
        }
        let (p50, p99, max) = (percentile(&lat, 0.5), percentile(&lat, 0.99), percentile(&lat, 1.0));
        println!(
            "{name}: {sent_ad} ad-events in {produced_s:.2} s ({achieved:.0} ad-events/s achieved), {} clicks charged: \
             p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; {missing} not charged within {} s",
            lat.len(),
            SETTLE.as_secs()
        );
        if phase > 0 {
            println!(
                "LATENCY name=charge_visible_{name} p50_ms={p50:.1} p99_ms={p99:.1} samples={} achieved_rate={achieved:.0} missing={missing}",
                lat.len()
            );
            results.push((*rate, p99));
        }
    }
    log.flush().expect("flush");
    let missing: Vec<String> = pending.lock().expect("lock").keys().take(8).cloned().collect();
    if !missing.is_empty() {
        println!("never seen charged (first 8): {}", missing.join(", "));
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().expect("poller");
    if let Some((_, p99)) = results.iter().find(|(r, _)| *r == 5_000.0) {
        println!("target p99 <= 100 ms at 5k ad-events/s: {} (p99 {p99:.1} ms)", if *p99 <= 100.0 { "MET" } else { "NOT MET" });
    }

    let (r, report) = topology.join().expect("topology thread");
    if let Err(e) = r {
        println!("topology run failed: {e}");
    } else {
        let complete = report.lines().find(|l| l.contains("complete: ")).unwrap_or("(no completion line)");
        println!("topology run: {complete}");
    }
    let _ = cache.delete_all();
    let _ = db.drop_schema();
    println!("load: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}
