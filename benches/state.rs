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
//! Each bench also prints `EVENTS_PER_SEC name=<bench> value=<n>` from a manual timing loop.

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

fn print_rate(name: &str, job: &mut Job, rounds: u64) {
    let start = Instant::now();
    for _ in 0..rounds {
        job.round();
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (rounds * job.every) as f64 / secs;
    println!("EVENTS_PER_SEC name={name} value={rate:.0}");
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("state");
    group.throughput(Throughput::Elements(COMMIT_EVERY));
    group.sample_size(20);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = sled_job(&dir, false);
    group.bench_function("sled_commit_10k", |b| b.iter(|| job.round()));
    print_rate("state/sled_commit_10k", &mut job, 50);
    drop(job);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut job = sled_job(&dir, true);
    group.bench_function("sled_commit_10k_fsync", |b| b.iter(|| job.round()));
    print_rate("state/sled_commit_10k_fsync", &mut job, 50);
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
    print_rate("state/memory_commit_10k", &mut job, 100);

    let mut job = Job::new(Arc::new(MemoryBackend::new()), false, false);
    group.bench_function("keyed_update", |b| {
        b.iter(|| {
            for i in 0..COMMIT_EVERY {
                let k = job.keys.next();
                *job.store.get_or_insert_with(black_box(k), || 0) += i;
            }
        })
    });
    let start = Instant::now();
    let n = 5_000_000;
    for i in 0..n {
        let k = job.keys.next();
        *job.store.get_or_insert_with(black_box(k), || 0) += i;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("EVENTS_PER_SEC name=state/keyed_update value={rate:.0}");
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
