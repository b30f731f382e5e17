//! State-store throughput: keyed `u64` counter updates over 100 k keys.
//!
//! - `state/sled_commit_10k`: updates on a [`KeyedStore`] over a [`SledBackend`], committed (flush_into +
//!   atomic apply) every 10 000 updates — the runtime's commit path without fsync.
//! - `state/sled_commit_10k_fsync`: the same with `StoreBackend::flush` (fsync) after every commit.
//! - `state/sled_sparse_commit_100`: 100 updates per commit on the same 100 k-key store — the worst case
//!   for paged stores (each changed key rewrites its page).
//! - `state/memory_commit_10k`: the same over a [`MemoryBackend`].
//! - `state/keyed_update`: the in-memory update alone (no commit).
//!
//! Each bench also prints `EVENTS_PER_SEC name=<bench> value=<n>` from a manual timing loop, and on Linux
//! `EVENTS_PER_CPU_SEC name=<bench> value=<n>`: events per second of CPU time used by the whole process
//! (sled's background threads included) — the per-core rate, robust to a machine shared with other jobs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtb_stream::state::{KeyedStore, MemoryBackend, SledBackend, StateScope, StoreBackend, WriteBatch};

const KEYS: u64 = 100_000;
const COMMIT_EVERY: u64 = 10_000;

/// A deterministic stream of keys in `0..KEYS` (xorshift64*), so runs are comparable.
struct Keys(u64);

impl Keys {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % KEYS
    }
}

/// A store plus the commit policy under test.
struct Job {
    scope: StateScope,
    store: KeyedStore<u64, u64>,
    keys: Keys,
    fsync: bool,
    commit: bool,
    /// Updates per commit.
    every: u64,
}

impl Job {
    fn new(backend: Arc<dyn StoreBackend>, commit: bool, fsync: bool) -> Self {
        let scope = StateScope::new(backend, "bench/0");
        let mut store = scope.keyed::<u64, u64>("counters").expect("open store");
        // Start from a full store, as a long-running job would be.
        for k in 0..KEYS {
            store.insert(k, 0);
        }
        let mut job =
            Self { scope, store, keys: Keys(0x9E37_79B9_7F4A_7C15), fsync, commit, every: COMMIT_EVERY };
        job.commit_now();
        job
    }

    fn commit_now(&mut self) {
        let mut batch = WriteBatch::new();
        self.store.flush_into(&mut batch).expect("flush_into");
        if !self.commit {
            return;
        }
        self.scope.backend().apply(batch).expect("apply");
        if self.fsync {
            self.scope.backend().flush().expect("fsync");
        }
    }

    /// `self.every` updates followed by one commit.
    fn round(&mut self) {
        for i in 0..self.every {
            let k = self.keys.next();
            *self.store.get_or_insert_with(k, || 0) += i;
        }
        self.commit_now();
    }
}

fn sled_job(dir: &tempfile::TempDir, fsync: bool) -> Job {
    let backend = SledBackend::open(dir.path().join("state"), "state").expect("open sled");
    Job::new(Arc::new(backend), true, fsync)
}

/// CPU time (user + system, all threads) of this process, from `/proc/self/stat` (Linux, 100 ticks/s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Prints the wall-clock and CPU-time rates of `events` events run by `work`.
fn report(name: &str, events: u64, work: impl FnOnce()) {
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    work();
    let secs = start.elapsed().as_secs_f64();
    println!("EVENTS_PER_SEC name={name} value={:.0}", events as f64 / secs);
    if let (Some(a), Some(b)) = (cpu_start, cpu_seconds()) {
        if b > a {
            println!("EVENTS_PER_CPU_SEC name={name} value={:.0}", events as f64 / (b - a));
        }
    }
}

fn print_rate(name: &str, job: &mut Job, rounds: u64) {
    report(name, rounds * job.every, || {
        for _ in 0..rounds {
            job.round();
        }
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(COMMIT_EVERY));
    group.sample_size(20);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = sled_job(&dir, false);
    group.bench_function("sled_commit_10k", |b| b.iter(|| job.round()));
    print_rate("state/sled_commit_10k", &mut job, 200);
    drop(job);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = sled_job(&dir, true);
    group.bench_function("sled_commit_10k_fsync", |b| b.iter(|| job.round()));
    print_rate("state/sled_commit_10k_fsync", &mut job, 200);
    drop(job);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = sled_job(&dir, false);
    job.every = 100;
    group.throughput(Throughput::Elements(job.every));
    group.bench_function("sled_sparse_commit_100", |b| b.iter(|| job.round()));
    print_rate("state/sled_sparse_commit_100", &mut job, 2_000);
    drop(job);
    group.throughput(Throughput::Elements(COMMIT_EVERY));

    let mut job = Job::new(Arc::new(MemoryBackend::new()), true, false);
    group.bench_function("memory_commit_10k", |b| b.iter(|| job.round()));
    print_rate("state/memory_commit_10k", &mut job, 300);

    let mut job = Job::new(Arc::new(MemoryBackend::new()), false, false);
    group.bench_function("keyed_update", |b| {
        b.iter(|| {
            for i in 0..COMMIT_EVERY {
                let k = job.keys.next();
                *job.store.get_or_insert_with(black_box(k), || 0) += i;
            }
        })
    });
    let n = 5_000_000;
    report("state/keyed_update", n, || {
        for i in 0..n {
            let k = job.keys.next();
            *job.store.get_or_insert_with(black_box(k), || 0) += i;
        }
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
