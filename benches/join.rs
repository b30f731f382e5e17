//! Interval-join throughput on already-decoded rows.
//!
//! The stream: 100 k keys, one left row per 10 right rows, one row per ms of event time on average, each row
//! up to 1 s out of order, a watermark (max seen − 1 s) every 1 000 rows. The bounds `[-24 h, 0]` of the
//! conversion matcher are scaled to the stream: 24 h ↦ 300 s, so a key holds ~3 buffered right rows and a
//! left row groups ~2.7 of them — the same rows-per-key shape as a day of clicks per device.
//!
//! - `join/on_close_left_outer/u64`: the conversion matcher's mode (OnClose + LeftOuter), `u64` keys.
//! - `join/on_close_left_outer/string`: the same with `String` keys (`"device-<n>"`).
//! - `join/pairs_inner/u64`: eager pairs, inner join.
//! - `join/on_close_commit_50k/u64`: OnClose + LeftOuter with a state commit (`flush_into` + atomic apply to
//!   the in-memory backend) every 50 000 rows.
//!
//! Criterion measures the steady state (the join is pre-filled with 600 s of rows); the manual loops at the
//! end run 2.2 M rows from an empty join and print `EVENTS_PER_SEC name=<bench> value=<n>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtb_stream::join::{IntervalJoin, IntervalJoinSpec, JoinEmit, JoinEvent, JoinKind};
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::time::Timestamp;

const KEYS: u64 = 100_000;
const SCALED_DAY: i64 = 300_000;
const DISORDER: i64 = 1_000;
const WATERMARK_EVERY: u64 = 1_000;
const CHUNK: usize = 10_000;

/// One decoded row.
struct Row<K> {
    left: bool,
    key: K,
    ts: Timestamp,
    value: u64,
}

/// A deterministic row generator (xorshift64*).
struct Gen {
    state: u64,
    seq: u64,
}

impl Gen {
    fn new() -> Self {
        Self { state: 0x9E37_79B9_7F4A_7C15, seq: 0 }
    }
    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// The next row: key in `0..KEYS`, 1 in 11 left, timestamp `seq ms - [0, DISORDER)`.
    fn next<K>(&mut self, key_of: &impl Fn(u64) -> K) -> Row<K> {
        let r = self.next_u64();
        self.seq += 1;
        let jitter = i64::try_from((r >> 40) % DISORDER as u64).unwrap_or(0);
        Row {
            left: (r >> 20).is_multiple_of(11),
            key: key_of(r % KEYS),
            ts: i64::try_from(self.seq).unwrap_or(i64::MAX) - jitter,
            value: self.seq,
        }
    }
    fn chunk<K>(&mut self, n: usize, key_of: &impl Fn(u64) -> K) -> Vec<Row<K>> {
        (0..n).map(|_| self.next(key_of)).collect()
    }
}

/// A join being fed, with its watermark policy and optional commits.
struct Job<K: std::hash::Hash + Eq + Ord + Clone + serde::Serialize + serde::de::DeserializeOwned> {
    scope: StateScope,
    join: IntervalJoin<K, u64, u64>,
    out: Vec<JoinEvent<K, u64, u64>>,
    seen: u64,
    max_ts: Timestamp,
    commit_every: Option<u64>,
}

impl<K: std::hash::Hash + Eq + Ord + Clone + serde::Serialize + serde::de::DeserializeOwned> Job<K> {
    fn new(kind: JoinKind, emit: JoinEmit, commit_every: Option<u64>) -> Self {
        let scope = StateScope::in_memory().child("bench/0");
        let spec = IntervalJoinSpec { lower: -SCALED_DAY, upper: 0, kind, emit };
        let join = IntervalJoin::new(&scope, "join", spec).expect("open join");
        Self { scope, join, out: Vec::with_capacity(4 * CHUNK), seen: 0, max_ts: 0, commit_every }
    }

    fn feed(&mut self, rows: Vec<Row<K>>) {
        for row in rows {
            if row.left {
                self.join.process_left(row.key, row.ts, row.value, &mut self.out);
            } else {
                self.join.process_right(row.key, row.ts, row.value, &mut self.out);
            }
            self.max_ts = self.max_ts.max(row.ts);
            self.seen += 1;
            if self.seen.is_multiple_of(WATERMARK_EVERY) {
                self.join.on_watermark(self.max_ts - DISORDER, &mut self.out);
                black_box(self.out.len());
                self.out.clear();
            }
            if self.commit_every.is_some_and(|n| self.seen.is_multiple_of(n)) {
                let mut batch = WriteBatch::new();
                self.join.flush_into(&mut batch).expect("flush");
                self.scope.backend().apply(batch).expect("apply");
            }
        }
    }
}

fn device(n: u64) -> String {
    format!("device-{n}")
}

fn bench_case<K>(
    c: &mut Criterion,
    name: &str,
    kind: JoinKind,
    emit: JoinEmit,
    commit: Option<u64>,
    key_of: impl Fn(u64) -> K,
) where
    K: std::hash::Hash + Eq + Ord + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    if !selected(name) {
        return;
    }
    let mut job = Job::<K>::new(kind, emit, commit);
    let mut gen = Gen::new();
    // steady state: two scaled days of rows first
    for _ in 0..(2 * SCALED_DAY as usize / CHUNK) {
        job.feed(gen.chunk(CHUNK, &key_of));
    }
    let mut group = c.benchmark_group("join");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let rows = gen.chunk(CHUNK, &key_of);
                let start = Instant::now();
                job.feed(rows);
                spent += start.elapsed();
            }
            spent
        })
    });
    group.finish();
    eprintln!("{name}: buffered (left, right) = {:?}", job.join.buffered());
}

/// CPU time of the calling thread (Linux `schedstat`), to report a figure that does not depend on how busy
/// a shared machine is. `None` elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Whether a bench name passes the command line's filter (a non-option, non-numeric argument), so a
/// filtered run skips the other manual loops too.
fn selected(name: &str) -> bool {
    let filters: Vec<String> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err()).collect();
    filters.is_empty() || filters.iter().any(|f| format!("join/{name}").contains(f.as_str()))
}

/// 2.2 M rows from an empty join; prints the grep-able figure.
fn manual<K>(name: &str, kind: JoinKind, emit: JoinEmit, commit: Option<u64>, key_of: impl Fn(u64) -> K)
where
    K: std::hash::Hash + Eq + Ord + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    const TOTAL: usize = 2_200_000;
    if !selected(name) {
        return;
    }
    let mut job = Job::<K>::new(kind, emit, commit);
    let mut gen = Gen::new();
    let chunks: Vec<Vec<Row<K>>> = (0..TOTAL / CHUNK).map(|_| gen.chunk(CHUNK, &key_of)).collect();
    let cpu_start = thread_cpu_seconds();
    let start = Instant::now();
    for rows in chunks {
        job.feed(rows);
    }
    let secs = start.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (cpu_start, thread_cpu_seconds()) {
        eprintln!(
            "{name}: {:.0} rows per CPU-second (thread CPU time {:.3} s)",
            TOTAL as f64 / (b - a),
            b - a
        );
    }
    let s = job.join.stats();
    eprintln!(
        "{name}: {TOTAL} rows in {secs:.3} s; pairs {} groups {} unmatched {} late {}/{}",
        s.pairs, s.groups, s.unmatched, s.late_left, s.late_right
    );
    println!("EVENTS_PER_SEC name=join/{name} value={:.0}", TOTAL as f64 / secs);
}

fn benches(c: &mut Criterion) {
    use JoinEmit::*;
    use JoinKind::*;
    bench_case(c, "on_close_left_outer/u64", LeftOuter, OnClose, None, |k| k);
    bench_case(c, "on_close_left_outer/string", LeftOuter, OnClose, None, device);
    bench_case(c, "pairs_inner/u64", Inner, Pairs, None, |k| k);
    bench_case(c, "on_close_commit_50k/u64", LeftOuter, OnClose, Some(50_000), |k| k);
    manual("on_close_left_outer/u64", LeftOuter, OnClose, None, |k| k);
    manual("on_close_left_outer/string", LeftOuter, OnClose, None, device);
    manual("pairs_inner/u64", Inner, Pairs, None, |k| k);
    manual("on_close_commit_50k/u64", LeftOuter, OnClose, Some(50_000), |k| k);
}

criterion_group!(join, benches);
criterion_main!(join);
