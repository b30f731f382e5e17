//! Embedded log and runtime throughput.
//!
//! - `log/append_memory`, `log/append_durable`: `append_batch` of 1 000 keyed records (100-byte payloads)
//!   into an 8-partition topic; durable = segment files, write-through, no fsync.
//! - `log/read_memory`, `log/read_durable`: sequential reads of 1 000 records from one partition; durable
//!   reads come from the segment files (the tail cache is far smaller than the data).
//! - `runtime/passthrough_memory`: a job forwarding every record of a 4-partition topic to another topic.
//! - `runtime/count_memory`: a job counting records per key (keyed store, memory backend), batch mode.
//! - `runtime/count_durable_sled`: the same job over a durable log and sled state.
//!
//! Each bench also prints `EVENTS_PER_SEC name=<bench> value=<n>` from a manual timing loop.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use rtb_stream::log::{EmbeddedLog, LogRecord, ProduceRecord, TopicConfig};
use rtb_stream::runtime::{JobConfig, Output, Runtime};
use rtb_stream::state::{MemoryBackend, SledBackend, StoreBackend};
use rtb_stream::{Context, KeyedStore, Operator, Record, WriteBatch};

const BATCH: usize = 1_000;
/// Batches appended into one log before it is replaced (bounds memory and disk use of the benches).
const BATCHES_PER_LOG: u64 = 200;
const JOB_RECORDS: usize = 200_000;

fn records(n: usize, seed: usize) -> Vec<ProduceRecord> {
    (0..n)
        .map(|i| {
            let id = (i + seed).wrapping_mul(2_654_435_761) % 10_000;
            ProduceRecord {
                key: Some(format!("user-{id}").into_bytes()),
                payload: vec![b'x'; 100],
                timestamp: (i + seed) as i64,
                partition: None,
                origin: None,
            }
        })
        .collect()
}

fn fresh_log(dir: Option<&tempfile::TempDir>, partitions: u32) -> EmbeddedLog {
    let log = match dir {
        None => EmbeddedLog::in_memory(),
        Some(d) => {
            let path = d.path().join(format!("log-{}", next_id()));
            EmbeddedLog::open(path).expect("open durable log")
        }
    };
    log.create_topic("t", TopicConfig { partitions, retention: None }).expect("create topic");
    log
}

/// A fresh directory name per log inside one temporary directory.
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Time to append `iters` batches, starting a fresh log every `BATCHES_PER_LOG` batches (untimed).
fn time_appends(durable: bool, iters: u64) -> Duration {
    let dir = durable.then(|| tempfile::tempdir().expect("tempdir"));
    let batch = records(BATCH, 0);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let log = fresh_log(dir.as_ref(), 8);
        let n = (iters - done).min(BATCHES_PER_LOG);
        let inputs: Vec<Vec<ProduceRecord>> = (0..n).map(|_| batch.clone()).collect();
        let start = Instant::now();
        for b in inputs {
            black_box(log.append_batch("t", b).expect("append"));
        }
        total += start.elapsed();
        done += n;
    }
    total
}

fn filled(durable: bool, dir: &tempfile::TempDir, n: usize) -> EmbeddedLog {
    let log = fresh_log(durable.then_some(dir), 1);
    for chunk in records(n, 0).chunks(BATCH) {
        log.append_batch("t", chunk.to_vec()).expect("append");
    }
    log
}

/// Reads `iters` chunks of `BATCH` records sequentially, wrapping around.
fn time_reads(log: &EmbeddedLog, n: u64, iters: u64) -> Duration {
    let mut next = 0;
    let start = Instant::now();
    for _ in 0..iters {
        let recs: Vec<LogRecord> = log.read("t", 0, next, BATCH).expect("read");
        next = recs.last().map_or(0, |r| r.offset + 1) % n;
        black_box(recs);
    }
    start.elapsed()
}

struct Passthrough;

impl Operator for Passthrough {
    type Key = ();
    type In = Arc<[u8]>;
    type Out = Output;
    fn process(&mut self, r: Record<(), Arc<[u8]>>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let record = ProduceRecord {
            key: None,
            payload: r.value.to_vec(),
            timestamp: r.timestamp,
            partition: Some(r.source.partition),
            origin: Some(r.source),
        };
        ctx.emit(Output { topic: "out".into(), record });
        Ok(())
    }
}

struct Count(KeyedStore<Vec<u8>, u64>);

impl Operator for Count {
    type Key = Vec<u8>;
    type In = ();
    type Out = Output;
    fn process(&mut self, r: Record<Vec<u8>, ()>, _: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        *self.0.get_or_insert_with(r.key, || 0) += 1;
        Ok(())
    }
    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.0.flush_into(batch)
    }
}

#[derive(Clone, Copy)]
enum Job {
    PassthroughMemory,
    CountMemory,
    CountDurableSled,
}

/// Runs one batch-mode job over `JOB_RECORDS` records (4 partitions); returns the time from spawn to join.
fn time_job(job: Job) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let durable = matches!(job, Job::CountDurableSled);
    let log = fresh_log(durable.then_some(&dir), 4);
    log.create_topic("out", TopicConfig { partitions: 4, retention: None }).expect("create");
    for chunk in records(JOB_RECORDS, 0).chunks(BATCH) {
        log.append_batch("t", chunk.to_vec()).expect("append");
    }
    let state: Arc<dyn StoreBackend> = if durable {
        Arc::new(SledBackend::open(dir.path().join("state"), "jobs").expect("sled"))
    } else {
        Arc::new(MemoryBackend::new())
    };
    let mut rt = Runtime::new(log, state);
    let cfg = JobConfig { stop_at_end: true, ..JobConfig::new("bench", ["t"]) };
    let start = Instant::now();
    match job {
        Job::PassthroughMemory => {
            let decode = |r: &LogRecord| Ok(Record::new((), Arc::clone(&r.payload), r.timestamp, r.coord()));
            rt.spawn(cfg, decode, |_, _| Ok(Passthrough)).expect("spawn");
        }
        Job::CountMemory | Job::CountDurableSled => {
            let decode = |r: &LogRecord| {
                let key = r.key.as_deref().ok_or("no key")?.to_vec();
                Ok(Record::new(key, (), r.timestamp, r.coord()))
            };
            rt.spawn(cfg, decode, |_, scope| Ok(Count(scope.keyed("counts")?))).expect("spawn");
        }
    }
    let report = rt.join().expect("job");
    let elapsed = start.elapsed();
    assert_eq!(report.groups["bench"].records_in, JOB_RECORDS as u64);
    elapsed
}

fn log_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("append_memory", |b| b.iter_custom(|iters| time_appends(false, iters)));
    g.bench_function("append_durable", |b| b.iter_custom(|iters| time_appends(true, iters)));
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 200_000;
    let mem = filled(false, &dir, n);
    g.bench_function("read_memory", |b| b.iter_custom(|iters| time_reads(&mem, n as u64, iters)));
    let disk = filled(true, &dir, n);
    g.bench_function("read_durable", |b| b.iter_custom(|iters| time_reads(&disk, n as u64, iters)));
    g.finish();
}

fn runtime_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("runtime");
    g.sample_size(10);
    g.throughput(Throughput::Elements(JOB_RECORDS as u64));
    for (name, job) in [
        ("passthrough_memory", Job::PassthroughMemory),
        ("count_memory", Job::CountMemory),
        ("count_durable_sled", Job::CountDurableSled),
    ] {
        g.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| time_job(job)).sum()));
    }
    g.finish();
}

fn print_rate(name: &str, events: u64, elapsed: Duration) {
    println!("EVENTS_PER_SEC name={name} value={:.0}", events as f64 / elapsed.as_secs_f64());
}

/// Best of three: the machine running the benches may be shared, and contention only ever slows a run.
fn best_of_3(mut run: impl FnMut() -> Duration) -> Duration {
    (0..3).map(|_| run()).min().unwrap_or_default()
}

/// A short manual timing of every bench, printed in a grep-friendly form.
fn manual_figures() {
    let batches = 500;
    let events = batches * BATCH as u64;
    print_rate("log/append_memory", events, best_of_3(|| time_appends(false, batches)));
    print_rate("log/append_durable", events, best_of_3(|| time_appends(true, batches)));
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 200_000_u64;
    let mem = filled(false, &dir, n as usize);
    print_rate("log/read_memory", n, best_of_3(|| time_reads(&mem, n, n / BATCH as u64)));
    let disk = filled(true, &dir, n as usize);
    print_rate("log/read_durable", n, best_of_3(|| time_reads(&disk, n, n / BATCH as u64)));
    for (name, job) in [
        ("runtime/passthrough_memory", Job::PassthroughMemory),
        ("runtime/count_memory", Job::CountMemory),
        ("runtime/count_durable_sled", Job::CountDurableSled),
    ] {
        print_rate(name, JOB_RECORDS as u64, best_of_3(|| time_job(job)));
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    log_benches(&mut c);
    runtime_benches(&mut c);
    c.final_summary();
    manual_figures();
}
