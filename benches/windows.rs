//! Window operator throughput on already-decoded records (one core).
//!
//! Input: 1 M records over 10 000 keys chosen uniformly at random, timestamps ascending with up to 1 s
//! of disorder, a watermark (max timestamp − 2 s) every 1 000 records, and a final watermark that fires
//! everything. No record is late. Cases:
//! - `tumbling_count_u64`: 1-minute tumbling count, `u64` keys, 10 minutes of event time
//!   (~100 000 windows, ~10 records per window);
//! - `tumbling_count_string`: the same with short `String` keys (moved in, as a decoder would);
//! - `tumbling_count_commit`: the `u64` case with a state flush every 100 000 records;
//! - `hopping_count`: 5-minute windows every minute (5 windows per record), 10 minutes;
//! - `session_count`: 30 s gap over 60 minutes (a key every ~36 s on average, ~2.3 records per session).
//!
//! Prints criterion's figures and, at the end, `EVENTS_PER_SEC name=<bench> value=<n>` lines (median of
//! five manual runs, wall clock) and `EVENTS_PER_CPU_SEC` lines (the same runs per second on the CPU, which
//! stays meaningful when other processes compete for the cores).

use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::window::{Count, Hopping, LatePolicy, SessionWindows, Tumbling, WindowEvent, WindowedAggregate};
use rtb_stream::Timestamp;

/// A span of `v` milliseconds.
fn ms(v: i64) -> std::time::Duration {
    rtb_stream::span::from_ms(v)
}

const RECORDS: usize = 1_000_000;
const KEYS: u64 = 10_000;
const WATERMARK_EVERY: usize = 1_000;
const LAG: i64 = 2_000;

/// `(key, timestamp)` pairs spread over `span_ms` of event time.
fn input(span_ms: i64, seed: u64) -> Vec<(u64, Timestamp)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let base: Timestamp = 1_700_000_000_000;
    (0..RECORDS)
        .map(|i| {
            let ts = base + (i as i64) * span_ms / RECORDS as i64 - rng.gen_range(0..1_000);
            (rng.gen_range(0..KEYS), ts)
        })
        .collect()
}

type Events<K> = Vec<WindowEvent<K, u64, ()>>;

/// The two operator types behind one driver.
trait Windowed<K> {
    fn process(&mut self, key: K, ts: Timestamp, out: &mut Events<K>);
    fn on_watermark(&mut self, wm: Timestamp, out: &mut Events<K>);
    fn commit(&mut self);
}

impl<K, W> Windowed<K> for WindowedAggregate<K, Count, W>
where
    K: std::hash::Hash + Eq + Clone + Ord + serde::Serialize + serde::de::DeserializeOwned + Send,
    W: rtb_stream::window::WindowAssigner,
{
    #[inline]
    fn process(&mut self, key: K, ts: Timestamp, out: &mut Events<K>) {
        WindowedAggregate::process(self, key, ts, &(), out);
    }
    fn on_watermark(&mut self, wm: Timestamp, out: &mut Events<K>) {
        WindowedAggregate::on_watermark(self, wm, out);
    }
    fn commit(&mut self) {
        let mut batch = WriteBatch::new();
        self.flush_into(&mut batch).expect("flush");
        std::hint::black_box(batch);
    }
}

impl Windowed<u64> for SessionWindows<u64, Count> {
    #[inline]
    fn process(&mut self, key: u64, ts: Timestamp, out: &mut Events<u64>) {
        SessionWindows::process(self, key, ts, &(), out);
    }
    fn on_watermark(&mut self, wm: Timestamp, out: &mut Events<u64>) {
        SessionWindows::on_watermark(self, wm, out);
    }
    fn commit(&mut self) {
        let mut batch = WriteBatch::new();
        self.flush_into(&mut batch).expect("flush");
        std::hint::black_box(batch);
    }
}

/// Feeds `records` with a watermark every 1 000 records (committing every 100 000 if `commit`), then a
/// final watermark; returns the number of events emitted.
fn drive<K>(op: &mut impl Windowed<K>, records: impl Iterator<Item = (K, Timestamp)>, commit: bool) -> usize {
    let mut out: Events<K> = Vec::with_capacity(16 * 1024);
    let mut emitted = 0;
    let mut max_ts = Timestamp::MIN;
    for (i, (key, ts)) in records.enumerate() {
        max_ts = max_ts.max(ts);
        op.process(key, ts, &mut out);
        if (i + 1) % WATERMARK_EVERY == 0 {
            op.on_watermark(max_ts - LAG, &mut out);
            emitted += out.len();
            out.clear();
        }
        if commit && (i + 1) % 100_000 == 0 {
            op.commit();
        }
    }
    op.on_watermark(Timestamp::MAX, &mut out);
    emitted + out.len()
}

fn tumbling_u64(records: &[(u64, Timestamp)], commit: bool) -> usize {
    let scope = StateScope::in_memory();
    let op = WindowedAggregate::new(&scope, "t", Tumbling::of(ms(60_000)), Count, ms(0), LatePolicy::Drop);
    drive(&mut op.expect("open"), records.iter().copied(), commit)
}

fn tumbling_string(records: Vec<(String, Timestamp)>) -> usize {
    let scope = StateScope::in_memory();
    let op = WindowedAggregate::new(&scope, "t", Tumbling::of(ms(60_000)), Count, ms(0), LatePolicy::Drop);
    drive(&mut op.expect("open"), records.into_iter(), false)
}

fn hopping(records: &[(u64, Timestamp)]) -> usize {
    let scope = StateScope::in_memory();
    let op = WindowedAggregate::new(&scope, "h", Hopping::of(ms(300_000), ms(60_000)), Count, ms(0), LatePolicy::Drop);
    drive(&mut op.expect("open"), records.iter().copied(), false)
}

fn sessions(records: &[(u64, Timestamp)]) -> usize {
    let scope = StateScope::in_memory();
    let op = SessionWindows::new(&scope, "s", ms(30_000), Count, ms(0), LatePolicy::Drop);
    drive(&mut op.expect("open"), records.iter().copied(), false)
}

fn string_keys(records: &[(u64, Timestamp)]) -> Vec<(String, Timestamp)> {
    records.iter().map(|&(k, ts)| (format!("ad-{k:05}"), ts)).collect()
}

struct Inputs {
    ten_minutes: Vec<(u64, Timestamp)>,
    ten_minutes_strings: Vec<(String, Timestamp)>,
    hour: Vec<(u64, Timestamp)>,
}

fn benches(c: &mut Criterion, inputs: &Inputs) {
    let mut g = c.benchmark_group("windows");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    g.bench_function("tumbling_count_u64", |b| b.iter(|| tumbling_u64(&inputs.ten_minutes, false)));
    g.bench_function("tumbling_count_string", |b| {
        b.iter_batched(|| inputs.ten_minutes_strings.clone(), tumbling_string, BatchSize::LargeInput)
    });
    g.bench_function("tumbling_count_commit", |b| b.iter(|| tumbling_u64(&inputs.ten_minutes, true)));
    g.bench_function("hopping_count", |b| b.iter(|| hopping(&inputs.ten_minutes)));
    g.bench_function("session_count", |b| b.iter(|| sessions(&inputs.hour)));
    g.finish();
}

/// On-CPU time of this thread in ns (Linux `schedstat`), to tell the operator's cost apart from time
/// lost to other processes on a busy machine.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Median events per wall-clock second and per on-CPU second of five timed runs of `f` (setup excluded).
fn events_per_sec<S>(mut setup: impl FnMut() -> S, mut f: impl FnMut(S) -> usize) -> (f64, Option<f64>) {
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..5 {
        let s = setup();
        let (c0, t) = (thread_cpu_ns(), Instant::now());
        std::hint::black_box(f(s));
        wall.push(RECORDS as f64 / t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c0, thread_cpu_ns()) {
            cpu.push(RECORDS as f64 * 1e9 / (c1.saturating_sub(c0).max(1)) as f64);
        }
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    (wall[2], cpu.get(2).copied())
}

fn main() {
    let ten_minutes = input(10 * 60_000, 7);
    let inputs =
        Inputs { ten_minutes_strings: string_keys(&ten_minutes), ten_minutes, hour: input(60 * 60_000, 11) };
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &inputs);
    c.final_summary();
    // Only when benchmarking (not under `cargo test --benches`, nor when profiling with --profile-time).
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--profile-time") {
        return;
    }
    let report = |name: &str, (wall, cpu): (f64, Option<f64>)| {
        println!("EVENTS_PER_SEC name={name} value={wall:.0}");
        if let Some(cpu) = cpu {
            println!("EVENTS_PER_CPU_SEC name={name} value={cpu:.0}");
        }
    };
    report("tumbling_count_u64", events_per_sec(|| (), |_| tumbling_u64(&inputs.ten_minutes, false)));
    report(
        "tumbling_count_string",
        events_per_sec(|| inputs.ten_minutes_strings.clone(), tumbling_string),
    );
    report("tumbling_count_commit", events_per_sec(|| (), |_| tumbling_u64(&inputs.ten_minutes, true)));
    report("hopping_count", events_per_sec(|| (), |_| hopping(&inputs.ten_minutes)));
    report("session_count", events_per_sec(|| (), |_| sessions(&inputs.hour)));
}
