//! Timer-service throughput: register 1 M event-time timers (100 k keys, times uniformly random over 1 M ms,
//! in random order; a handful collide and are registered twice) and fire them all with a watermark advancing
//! 1 000 ms at a time. Also prints the rate per CPU-second of the bench thread (Linux), which a busy shared
//! machine does not distort as much as wall time.
//!
//! One element = one timer registered and fired.
//! Prints `EVENTS_PER_SEC name=timer/register_fire_1m value=<n>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtb_stream::state::StateScope;
use rtb_stream::timer::TimerService;

const TIMERS: u64 = 1_000_000;
const KEYS: u64 = 100_000;

/// `(key, at)` of every timer, deterministic (xorshift64*).
fn timers() -> Vec<(u64, i64)> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..TIMERS)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r % KEYS, i64::try_from((r >> 32) % TIMERS).unwrap_or(0))
        })
        .collect()
}

/// Registers every timer, then fires them all; returns how many fired.
fn round(timers: &[(u64, i64)]) -> usize {
    let mut service = TimerService::<u64>::new(&StateScope::in_memory(), "timers").expect("open timers");
    for &(key, at) in timers {
        service.register_event_time(key, at);
    }
    let mut fired = 0;
    let mut wm = 0;
    while service.next_event_time().is_some() {
        wm += 1_000;
        fired += black_box(service.fire_event_time(wm)).len();
    }
    fired
}

/// CPU time of the calling thread (Linux `schedstat`); `None` elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn benches(c: &mut Criterion) {
    let timers = timers();
    let mut group = c.benchmark_group("timer");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TIMERS));
    group.bench_function("register_fire_1m", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                black_box(round(&timers));
                spent += start.elapsed();
            }
            spent
        })
    });
    group.finish();

    let cpu_start = thread_cpu_seconds();
    let start = Instant::now();
    let fired = round(&timers);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("timer: {TIMERS} registrations, {fired} distinct timers fired in {secs:.3} s");
    if let (Some(a), Some(b)) = (cpu_start, thread_cpu_seconds()) {
        eprintln!(
            "timer: {:.0} timers per CPU-second (thread CPU time {:.3} s)",
            TIMERS as f64 / (b - a),
            b - a
        );
    }
    println!("EVENTS_PER_SEC name=timer/register_fire_1m value={:.0}", TIMERS as f64 / secs);
}

criterion_group!(timer, benches);
criterion_main!(timer);
