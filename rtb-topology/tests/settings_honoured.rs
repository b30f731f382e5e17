//! Every setting of the topology file takes effect: for each one, the same input run twice through the
//! engine `rtb run` uses (the plan from the file, `Sinks::open`, `wiring::spawn_all` on the runtime over
//! the embedded log, drained until every stage has committed everything), once with the shipped value and
//! once changed, and the stores or topics differ exactly as the setting says.
//!
//! The input is hand-made (not the simulator, which writes the default topic names) so each expected
//! value is computed by hand. Topologies are the shipped CPC file with one partition per topic and a
//! short commit interval; each test edits one setting of it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtb_ops::sink::{Advertiser, LedgerKind, MetricsScope, RankedEntry};
use rtb_ops::schema::Placement;
use rtb_stream::log::{EmbeddedLog, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{RuntimeReport, Runtime};
use rtb_stream::state::{JournalBackend, StoreBackend};
use rtb_topology::app::run::total_lag;
use rtb_topology::app::wiring::{self, Sinks, DEAD_LETTER_TOPIC, LATE_TOPIC};
use rtb_topology::plan::ExecutionPlan;
use rtb_topology::registry::default_registry;
use rtb_topology::{Topology, CPC_TOPOLOGY_TOML};

/// 2024-01-15T10:00:00Z in ms.
const T0: i64 = 1_705_312_800_000;
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// The shipped CPC topology with one partition per topic (so a single pusher event moves every
/// watermark) and a 20 ms commit interval.
fn cpc_small() -> String {
    CPC_TOPOLOGY_TOML
        .replace("partitions = 8", "partitions = 1")
        .replace("partitions = 4", "partitions = 1")
        .replace("commit_interval = \"200ms\"", "commit_interval = \"20ms\"")
}

/// `text` with exactly one occurrence of `from` replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur exactly once");
    text.replacen(from, to, 1)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// An event for the topic that carries `schema` (looked up in the plan, so renamed topics get it).
struct Ev {
    schema: &'static str,
    key: String,
    ts: i64,
    json: serde_json::Value,
}

fn campaign(id: &str, bid: i64, budget: i64, ts: i64) -> Ev {
    Ev {
        schema: "campaign-events",
        key: "HOME:elec".into(),
        ts,
        json: serde_json::json!({
            "event_type": "CAMPAIGN_CREATED", "timestamp": rfc3339(ts), "campaign_id": id,
            "advertiser_id": "a1", "product_id": "p1", "placement": "HOME", "category": "elec",
            "bid_price": bid, "daily_budget": budget, "status": "ACTIVE", "approval_status": "APPROVED",
            "effective_from": rfc3339(ts - DAY)
        }),
    }
}

fn ad(kind: &str, campaign: &str, device: &str, ts: i64, price: i64) -> Ev {
    Ev {
        schema: "ad-events",
        key: device.into(),
        ts,
        json: serde_json::json!({
            "event_type": kind, "timestamp": rfc3339(ts), "device_id": device, "ad_id": format!("ad-{campaign}"),
            "campaign_id": campaign, "advertiser_id": "a1", "product_id": "p1", "placement": "HOME",
            "category": "elec", "bid_price": 1000, "actual_price": price
        }),
    }
}

fn conversion(order: &str, device: &str, ts: i64) -> Ev {
    Ev {
        schema: "conversion-events",
        key: device.into(),
        ts,
        json: serde_json::json!({
            "timestamp": rfc3339(ts), "device_id": device, "order_id": order, "product_id": "p1",
            "revenue_amount": 50000, "conversion_type": "PURCHASE"
        }),
    }
}

/// An impression of a campaign no test looks at, a day later: moves every ad-events watermark past every
/// window of the test.
fn pusher(ts: i64) -> Ev {
    ad("IMPRESSION", "tick", "tick-device", ts + DAY, 0)
}

/// A conversion of a device that never clicked, a day later: moves the conversions' watermark.
fn conversion_pusher(ts: i64) -> Ev {
    conversion("tick-order", "tick-device", ts + DAY)
}

/// Both pushers, as a pass of their own after the test's events: the conversion matcher's two inputs
/// (ad-events and the repartitioned conversions) then both hold data, so neither lets the task's watermark
/// pass a conversion before it was read.
fn pushers() -> Vec<Ev> {
    vec![pusher(T0), conversion_pusher(T0)]
}

/// The engine of `rtb run` over one data directory, run pass by pass.
struct Engine {
    plan: ExecutionPlan,
    log: EmbeddedLog,
    state: Arc<dyn StoreBackend>,
    sinks: Sinks,
}

impl Engine {
    fn open(topology: &str, data: &Path) -> Self {
        let plan = Topology::from_toml_str(topology).and_then(|t| t.plan()).expect("valid topology");
        let log = EmbeddedLog::open(data.join("log")).expect("log");
        for t in &plan.topics {
            log.create_topic(&t.name, t.topic_config()).expect("topic");
        }
        for t in [DEAD_LETTER_TOPIC, LATE_TOPIC] {
            log.create_topic(t, TopicConfig { partitions: 1, retention: None }).expect("topic");
        }
        let state: Arc<dyn StoreBackend> = Arc::new(JournalBackend::open(data.join("state")).expect("state"));
        let sinks = Sinks::open(&plan, data).expect("sinks");
        for (_, sink) in sinks.all.iter() {
            if let Ok(db) = rtb_ops::registry::database_of(sink) {
                db.upsert_advertiser(&Advertiser {
                    advertiser_id: "a1".into(),
                    opening_balance: 1_000_000,
                    time_zone: "Asia/Seoul".into(),
                })
                .expect("advertiser");
            }
        }
        Self { plan, log, state, sinks }
    }

    /// The topic carrying `schema` in this plan.
    fn topic(&self, schema: &str) -> String {
        self.plan
            .topics
            .iter()
            .find(|t| !t.internal && t.schema == schema)
            .map(|t| t.name.clone())
            .expect("a topic of the schema")
    }

    /// Appends `events`, runs every stage until all have committed everything, and stops.
    fn pass(&self, events: &[Ev]) -> RuntimeReport {
        for e in events {
            let rec = ProduceRecord {
                key: Some(e.key.as_bytes().to_vec()),
                payload: serde_json::to_vec(&e.json).expect("json"),
                timestamp: e.ts,
                partition: None,
                origin: None,
            };
            self.log.append(&self.topic(e.schema), rec).expect("append");
        }
        self.log.flush().expect("flush");
        let mut rt = Runtime::new(self.log.clone(), Arc::clone(&self.state));
        wiring::spawn_all(&mut rt, &self.plan, default_registry().expect("registry"), &self.sinks.all, false)
            .expect("spawn");
        let token = rt.shutdown_token();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut caught_up: Option<Instant> = None;
        loop {
            assert!(Instant::now() < deadline, "the stages did not catch up");
            if total_lag(&self.plan, &self.log, &self.state).expect("lag") == 0 {
                // Stay caught up for a while: a window firing late produces more input.
                if caught_up.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(600) {
                    break;
                }
            } else {
                caught_up = None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        token.trigger();
        rt.join().expect("join")
    }

    fn records(&self, topic: &str) -> Vec<LogRecord> {
        let mut out = Vec::new();
        for p in 0..self.log.topic_config(topic).expect("topic").partitions {
            let end = self.log.end_offset(topic, p).expect("end");
            out.extend(self.log.read(topic, p, 0, end as usize).expect("read"));
        }
        out
    }

    /// Late records: on the late-events output, or (operators that report them with the dead letters)
    /// dead letters whose reason starts with `LATE`.
    fn late_records(&self) -> usize {
        let dead_late = self
            .records(DEAD_LETTER_TOPIC)
            .iter()
            .filter_map(|r| serde_json::from_slice::<rtb_stream::DeadLetter>(&r.payload).ok())
            .filter(|d| d.reason.starts_with("LATE"))
            .count();
        self.records(LATE_TOPIC).len() + dead_late
    }

    /// Every dead letter and late record, as text (for failure messages).
    fn rejected(&self) -> Vec<String> {
        [DEAD_LETTER_TOPIC, LATE_TOPIC]
            .iter()
            .flat_map(|t| self.records(t))
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect()
    }

    fn ranking(&self) -> Vec<RankedEntry> {
        self.sinks.cache.ranking(Placement::Home, "elec").expect("ranking")
    }

    /// (charged, refunded) in KRW.
    fn ledger(&self) -> (i64, i64) {
        let rows = self.sinks.db.ledger().expect("ledger");
        let sum = |k: LedgerKind| rows.iter().filter(|r| r.entry.kind == k).map(|r| r.entry.amount.abs()).sum();
        (sum(LedgerKind::Charge), sum(LedgerKind::Refund))
    }
}

fn run(topology: &str, passes: &[Vec<Ev>]) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(topology, dir.path());
    for events in passes {
        engine.pass(events);
    }
    (dir, engine)
}

// ------------------------------------------------------------------ topics

#[test]
fn renamed_topics_carry_the_whole_pipeline() {
    let renamed = cpc_small()
        .replace("\"ad-events\"", "\"clicks\"")
        .replace("\"campaign-events\"", "\"campaigns\"")
        .replace("\"conversion-events\"", "\"orders\"")
        .replace("\"compensation-events\"", "\"refunds\"")
        .replace("schema = \"clicks\"", "schema = \"ad-events\"")
        .replace("schema = \"campaigns\"", "schema = \"campaign-events\"")
        .replace("schema = \"orders\"", "schema = \"conversion-events\"")
        .replace("schema = \"refunds\"", "schema = \"compensation-events\"");
    let clicks = vec![
        ad("CLICK", "c1", "d1", T0, 500),
        ad("CLICK", "c1", "d1", T0 + MIN, 500),
        ad("CLICK", "c1", "d1", T0 + 2 * MIN, 500),
    ];
    // The conversion in a pass of its own: the matcher has read the clicks before it.
    let order = vec![conversion("o1", "d1", T0 + 30 * MIN)];
    let (_dir, e) = run(&renamed, &[vec![campaign("c1", 1000, 1_000_000, T0 - MIN)], clicks, order, pushers()]);
    assert_eq!(e.topic("ad-events"), "clicks");
    // Duplicate detection published to `refunds` (its declared output), compensation read it from there.
    assert_eq!(e.records("refunds").len(), 1, "one compensation for the window with duplicates");
    assert!(e.log.end_offset("compensation-events", 0).is_err(), "no default-named topic is used");
    assert_eq!(e.ledger(), (1500, 1000), "three clicks charged, the two duplicates refunded");
    // The matcher tells its inputs apart by position (clicks second), whatever their names.
    let conversions = e.sinks.db.conversions().expect("conversions");
    let o1 = conversions
        .iter()
        .find(|c| c.order_id == "o1")
        .unwrap_or_else(|| panic!("o1 has no result: {conversions:?}; dead letters and late records: {:?}", e.rejected()));
    assert_eq!(o1.campaign_id.as_deref(), Some("c1"), "{conversions:?}");
    // The budget monitor's status topic is the declared `campaigns`: the ranking read campaigns from it.
    assert_eq!(e.ranking().len(), 1);
}

// ------------------------------------------------------------------ group

#[test]
fn renaming_a_group_starts_from_scratch_keeping_it_resumes() {
    let base = cpc_small();
    let renamed = edit(&base, "group = \"balance-processor\"", "group = \"balance-v2\"");
    let first: Vec<Ev> = (0..3).map(|i| ad("CLICK", "c1", &format!("d{i}"), T0 + i * MIN, 100)).collect();
    let second: Vec<Ev> = (3..5).map(|i| ad("CLICK", "c1", &format!("d{i}"), T0 + i * MIN, 100)).collect();

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = Engine::open(&base, dir.path());
        e.pass(&[campaign("c1", 1000, 1_000_000, T0 - MIN)]);
        let r = e.pass(&first);
        assert_eq!(r.groups.get("balance-processor").map(|g| g.records_in), Some(3));
    }
    let kept_dir = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), kept_dir.path());
    {
        // Same group: resumes after its committed offsets.
        let e = Engine::open(&base, kept_dir.path());
        let r = e.pass(&second);
        assert_eq!(r.groups.get("balance-processor").map(|g| g.records_in), Some(2), "{:?}", r.groups.keys());
        assert_eq!(e.ledger().0, 500);
    }
    {
        // Renamed group: new offsets and state, reads the topic from the start.
        let e = Engine::open(&renamed, dir.path());
        let r = e.pass(&second);
        assert_eq!(r.groups.get("balance-v2").map(|g| g.records_in), Some(5), "{:?}", r.groups.keys());
        assert!(!r.groups.contains_key("balance-processor"));
        // Starting over never charges a click twice: the ledger is idempotent per event.
        assert_eq!(e.ledger().0, 500);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

// ------------------------------------------------------------------ sinks

#[test]
fn two_cache_sinks_are_two_stores() {
    let text = edit(
        &cpc_small(),
        "sinks = [\"cache\", \"database\"]     # metrics;",
        "sinks = [\"metrics\", \"database\"]     # metrics;",
    ) + "\n[[sink]]\nname = \"metrics\"\nkind = \"cache\"\n";
    let events = vec![
        ad("IMPRESSION", "c1", "d1", T0, 0),
        ad("CLICK", "c1", "d1", T0 + MIN, 300),
        pusher(T0),
    ];
    let (dir, e) = run(&text, &[vec![campaign("c1", 1000, 1_000_000, T0 - MIN)], events]);
    let metrics = e.sinks.all.get("metrics").map(rtb_ops::registry::cache_of).expect("opened").expect("a cache");
    let rows = metrics.window_metrics(MetricsScope::Campaign, "c1").expect("rows");
    assert_eq!(rows.iter().map(|r| (r.metrics.impressions, r.metrics.clicks)).collect::<Vec<_>>(), [(1, 1)]);
    assert!(
        e.sinks.cache.window_metrics(MetricsScope::Campaign, "c1").expect("rows").is_empty(),
        "performance writes only the cache it declares"
    );
    // The budget monitor still counts spend in the `cache` sink, and only there.
    let day = rtb_ops::calendar::Day::of(T0 + MIN, rtb_ops::calendar::parse_time_zone("Asia/Seoul").expect("tz"));
    assert_eq!(e.sinks.cache.spend("c1", day).expect("spend"), 300);
    assert_eq!(metrics.spend("c1", day).expect("spend"), 0);
    assert!(dir.path().join("metrics").is_dir(), "its own directory");
}

// ------------------------------------------------------------------ performance: window, late policy

fn late_passes() -> Vec<Vec<Ev>> {
    vec![
        vec![ad("IMPRESSION", "c1", "d1", T0, 0), ad("IMPRESSION", "c1", "d1", T0 + 20 * MIN, 0)],
        // The window [10:00, 10:05) was written when the watermark passed 10:06; this one is late.
        vec![ad("IMPRESSION", "c1", "d2", T0 + MIN, 0), pusher(T0)],
    ]
}

fn first_window_impressions(e: &Engine) -> i64 {
    let rows = e.sinks.cache.window_metrics(MetricsScope::Campaign, "c1").expect("rows");
    rows.iter().find(|r| r.window_start == T0).map_or(0, |r| r.metrics.impressions)
}

#[test]
fn late_policy_correct_updates_the_window_side_output_sends_it_out() {
    let (_d1, correct) = run(&cpc_small(), &late_passes());
    assert_eq!(first_window_impressions(&correct), 2, "corrected");
    assert_eq!(correct.late_records(), 0);

    let side = edit(
        &cpc_small(),
        "late_policy = \"correct\", max_lateness = \"24h\"",
        "late_policy = \"side-output\"",
    );
    let (_d2, side) = run(&side, &late_passes());
    assert_eq!(first_window_impressions(&side), 1, "not corrected");
    assert_eq!(side.late_records(), 1, "the late impression went to the late output");
}

#[test]
fn grace_keeps_a_window_open_for_late_events() {
    // With 30 minutes of grace the window [10:00, 10:05) is not written yet when the watermark is at
    // 10:19:55: the 10:01 impression is on time, even with the side-output policy.
    let text = edit(
        &cpc_small(),
        "grace = \"1m\", late_policy = \"correct\", max_lateness = \"24h\"",
        "grace = \"30m\", late_policy = \"side-output\"",
    );
    let (_d, e) = run(&text, &late_passes());
    assert_eq!(first_window_impressions(&e), 2);
    assert_eq!(e.late_records(), 0);
}

#[test]
fn max_lateness_bounds_corrections() {
    // 10 minutes of correction: the late impression (the window completed at 10:06, the watermark is at
    // 10:19:55 when it arrives) is past it.
    let short = edit(&cpc_small(), "max_lateness = \"24h\"", "max_lateness = \"10m\"");
    let (_d, e) = run(&short, &late_passes());
    assert_eq!(first_window_impressions(&e), 1);
    assert_eq!(e.late_records(), 1);
}

#[test]
fn window_size_changes_the_performance_windows() {
    let events = || vec![ad("IMPRESSION", "c1", "d1", T0, 0), ad("IMPRESSION", "c1", "d1", T0 + 7 * MIN, 0), pusher(T0)];
    let windows = |e: &Engine| -> Vec<(i64, i64, i64)> {
        let mut rows: Vec<_> = e
            .sinks
            .cache
            .window_metrics(MetricsScope::Campaign, "c1")
            .expect("rows")
            .into_iter()
            .map(|r| ((r.window_start - T0) / MIN, (r.window_end - T0) / MIN, r.metrics.impressions))
            .collect();
        rows.sort_unstable();
        rows
    };
    let (_d1, five) = run(&cpc_small(), &[events()]);
    assert_eq!(windows(&five), [(0, 5, 1), (5, 10, 1)]);
    let ten = edit(&cpc_small(), "settings = { window = \"5m\", grace", "settings = { window = \"10m\", grace");
    let (_d2, ten) = run(&ten, &[events()]);
    assert_eq!(windows(&ten), [(0, 10, 2)]);
}

#[test]
fn dedup_window_changes_what_is_refunded() {
    let clicks = || {
        vec![
            ad("CLICK", "c1", "d1", T0, 400),
            ad("CLICK", "c1", "d1", T0 + 3 * MIN, 400),
            ad("CLICK", "c1", "d1", T0 + 7 * MIN, 400),
            pusher(T0),
        ]
    };
    // 5 minutes: [10:00, 10:05) holds two clicks (one refunded); 10:07 opens a window alone.
    let (_d1, five) = run(&cpc_small(), &[vec![campaign("c1", 1000, 1_000_000, T0 - MIN)], clicks()]);
    assert_eq!(five.ledger(), (1200, 400));
    // 10 minutes: all three in one window, two refunded.
    let ten = edit(&cpc_small(), "settings = { window = \"5m\" }", "settings = { window = \"10m\" }");
    let (_d2, ten) = run(&ten, &[vec![campaign("c1", 1000, 1_000_000, T0 - MIN)], clicks()]);
    assert_eq!(ten.ledger(), (1200, 800));
}

#[test]
fn attribution_window_bounds_conversion_matching() {
    let click = || vec![ad("CLICK", "c1", "d1", T0, 100)];
    let order = || vec![conversion("o1", "d1", T0 + 2 * 60 * MIN)];
    let attributed = |e: &Engine| e.sinks.db.conversions().expect("rows").iter().filter(|c| c.campaign_id.is_some()).count();
    let (_d1, day) = run(&cpc_small(), &[click(), order(), pushers()]);
    assert_eq!(attributed(&day), 1, "a click 2 h before is inside 24 h");
    let hour = edit(&cpc_small(), "settings = { window = \"24h\" }", "settings = { window = \"1h\" }");
    let (_d2, hour) = run(&hour, &[click(), order(), pushers()]);
    assert_eq!(attributed(&hour), 0, "but not inside 1 h");
}

// ------------------------------------------------------------------ ranking: K, reserve, increment

fn two_campaigns() -> Vec<Ev> {
    vec![campaign("c1", 1000, 1_000_000, T0), campaign("c2", 900, 1_000_000, T0 + 1)]
}

fn cpcs(e: &Engine) -> Vec<(String, i64)> {
    e.ranking().into_iter().map(|r| (r.campaign_id, r.cpc)).collect()
}

#[test]
fn reserve_and_increment_set_the_prices() {
    // No impressions yet: pCTR = m = 0.01 for both; scores 10 and 9. The winner pays
    // ceil(9 / 0.01) + increment, the last one the reserve.
    let (_d1, shipped) = run(&cpc_small(), &[two_campaigns()]);
    assert_eq!(cpcs(&shipped), [("c1".to_owned(), 910), ("c2".to_owned(), 100)]);
    let text = edit(&cpc_small(), "reserve_price = 100, increment = 10", "reserve_price = 300, increment = 50");
    let (_d2, changed) = run(&text, &[two_campaigns()]);
    assert_eq!(cpcs(&changed), [("c1".to_owned(), 950), ("c2".to_owned(), 300)]);
}

#[test]
fn default_prior_ctr_is_m_without_impressions() {
    let pctrs = |e: &Engine| -> Vec<f64> { e.ranking().iter().map(|r| r.pctr).collect() };
    let (_d1, shipped) = run(&cpc_small(), &[two_campaigns()]);
    assert_eq!(pctrs(&shipped), [0.01, 0.01]);
    let text = edit(&cpc_small(), "default_prior_ctr = 0.01", "default_prior_ctr = 0.02");
    let (_d2, changed) = run(&text, &[two_campaigns()]);
    assert_eq!(pctrs(&changed), [0.02, 0.02]);
}

#[test]
fn prior_strength_k_smooths_the_ctr() {
    // c1: 10 impressions, 5 clicks; c2: 10 impressions, 0 clicks; the category's CTR m = 5/20 = 0.25.
    // pCTR = (clicks + K·m) / (impressions + K).
    let mut traffic = Vec::new();
    for i in 0..10 {
        traffic.push(ad("IMPRESSION", "c1", &format!("d{i}"), T0 + i, 0));
        traffic.push(ad("IMPRESSION", "c2", &format!("e{i}"), T0 + i, 0));
    }
    for i in 0..5 {
        traffic.push(ad("CLICK", "c1", &format!("d{i}"), T0 + 100 + i, 10));
    }
    traffic.push(pusher(T0));
    let pctr = |e: &Engine| -> Vec<(String, f64)> { e.ranking().into_iter().map(|r| (r.campaign_id, r.pctr)).collect() };
    let near = |got: &[(String, f64)], want: [(&str, f64); 2]| {
        assert_eq!(got.len(), 2, "{got:?}");
        for ((id, p), (wid, wp)) in got.iter().zip(want) {
            assert_eq!(id, wid);
            assert!((p - wp).abs() < 1e-4, "{id}: pCTR {p}, expected {wp}");
        }
    };
    let (_d1, k100) = run(&cpc_small(), &[two_campaigns(), traffic.iter().map(clone_ev).collect()]);
    near(&pctr(&k100), [("c1", 30.0 / 110.0), ("c2", 25.0 / 110.0)]);
    let k1 = edit(&cpc_small(), "prior_strength = 100", "prior_strength = 1");
    let (_d2, k1) = run(&k1, &[two_campaigns(), traffic.iter().map(clone_ev).collect()]);
    near(&pctr(&k1), [("c1", 5.25 / 11.0), ("c2", 0.25 / 11.0)]);
}

fn clone_ev(e: &Ev) -> Ev {
    Ev { schema: e.schema, key: e.key.clone(), ts: e.ts, json: e.json.clone() }
}

// ------------------------------------------------------------------ budget monitor

#[test]
fn alert_thresholds_and_pause_threshold_are_the_files() {
    // Daily budget 1000; two clicks of 300 spend 60 %.
    let clicks = || vec![ad("CLICK", "c1", "d1", T0, 300), ad("CLICK", "c1", "d2", T0 + MIN, 300)];
    let passes = || vec![vec![campaign("c1", 1000, 1000, T0 - MIN)], clicks()];
    let alerts = |e: &Engine| -> Vec<u32> { e.sinks.db.alerts().expect("alerts").iter().map(|a| a.threshold_pct).collect() };
    let paused = |e: &Engine| e.sinks.db.campaign("c1").expect("row").and_then(|c| c.budget_paused_day).is_some();

    let (_d1, shipped) = run(&cpc_small(), &passes());
    assert!(alerts(&shipped).is_empty(), "80 % and 100 % not reached");
    assert!(!paused(&shipped));

    let text = edit(&cpc_small(), "alert_thresholds_pct = [80, 100], pause_at_pct = 100", "alert_thresholds_pct = [50], pause_at_pct = 60");
    let (_d2, changed) = run(&text, &passes());
    assert_eq!(alerts(&changed), [50]);
    assert!(paused(&changed), "paused at 60 %");
}
