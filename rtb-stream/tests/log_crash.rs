//! The durable log across a `SIGKILL`: a killed process never leaves the log refused as corrupt, never
//! loses a record whose append returned, never reuses an offset.
//!
//! The kill test re-executes this test binary as a child (`--exact <test> --nocapture` with
//! `RTB_LOG_CRASH_CHILD=<dir>`). The child opens the log and loops: it appends batches (small ones and
//! large ones, so a kill can land in the middle of one large write), flushes every few batches and commits
//! a consumer group at the flushed end. Every record's payload names its partition and offset. The parent
//! kills the child at random moments, several rounds in a row, and after each kill reopens the log and
//! checks every record.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use rtb_stream::log::{EmbeddedLog, LogOptions, ProduceRecord, TopicConfig};

const CHILD_DIR: &str = "RTB_LOG_CRASH_CHILD";
const PARTITIONS: u32 = 2;
const GROUP: &str = "writer";
/// What the child prints, followed by its resume offsets, once it has opened the log.
const READY: &str = "READY ends=";
/// A child that is never killed (parent gone) stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn options() -> LogOptions {
    // Segments of 256 KiB: rolls (and their checkpoint moves) happen every few hundred records.
    LogOptions { segment_bytes: 256 << 10, index_interval_bytes: 4 << 10, cache_bytes: 64 << 10 }
}

fn payload(partition: u32, offset: u64) -> Vec<u8> {
    let mut p = format!("{partition}:{offset}:").into_bytes();
    p.resize(200 + (offset % 300) as usize, b'a' + (offset % 26) as u8);
    p
}

fn open(dir: &Path) -> EmbeddedLog {
    let log = EmbeddedLog::open_with(dir, options()).expect("a killed process never leaves a refused log");
    log.create_topic("t", TopicConfig { partitions: PARTITIONS, retention: None }).expect("create");
    log
}

/// The writer loop run by the child process; never returns.
fn child_writer(dir: &Path) -> ! {
    let log = open(dir);
    let mut next: Vec<u64> = (0..PARTITIONS).map(|p| log.end_offset("t", p).expect("end")).collect();
    println!("{READY}{next:?}");
    let started = Instant::now();
    for round in 0_u64.. {
        // Every fifth batch is large (one write of about 1 MB per partition).
        let per_partition = if round % 5 == 4 { 3_000 } else { 20 };
        let mut batch = Vec::new();
        for i in 0..per_partition {
            for p in 0..PARTITIONS {
                let offset = next[p as usize] + i;
                batch.push(ProduceRecord {
                    key: None,
                    payload: payload(p, offset),
                    timestamp: offset as i64,
                    partition: Some(p),
                    origin: None,
                });
            }
        }
        log.append_batch("t", batch).expect("append");
        for n in &mut next {
            *n += per_partition;
        }
        if round % 3 == 2 {
            log.flush().expect("flush");
            for p in 0..PARTITIONS {
                log.commit_group_offset(GROUP, "t", p, next[p as usize]).expect("commit");
            }
        }
        if started.elapsed() > CHILD_LIFETIME {
            std::process::exit(3);
        }
    }
    unreachable!("the loop only ends by exit")
}

/// Reopens the log and checks every record of every partition; returns the end offsets.
fn check_log(dir: &Path) -> Vec<u64> {
    let log = open(dir);
    (0..PARTITIONS)
        .map(|p| {
            let end = log.end_offset("t", p).expect("end");
            let mut next = 0;
            while next < end {
                let chunk = log.read("t", p, next, 1_000).expect("read");
                assert!(!chunk.is_empty(), "partition {p}: nothing at {next} before the end {end}");
                for r in chunk {
                    assert_eq!(r.offset, next, "partition {p}: offsets are contiguous");
                    assert_eq!(&r.payload[..], &payload(p, next)[..], "partition {p} offset {next}");
                    next += 1;
                }
            }
            let committed = log.group_offset(GROUP, "t", p).expect("group").unwrap_or(0);
            assert!(committed <= end, "partition {p}: committed {committed} past the end {end}");
            end
        })
        .collect()
}

fn kill_rounds(test_name: &str, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SmallRng::seed_from_u64(seed);
    let exe = std::env::current_exe().expect("test binary path");
    let mut last = vec![0; PARTITIONS as usize];
    let mut rounds_with_progress = 0;
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer child");
        // Round 0 kills the child while it may still be opening (recovering) the log; the others kill it
        // a random time after it started writing.
        if round > 0 {
            let stdout = child.stdout.take().expect("piped stdout");
            let ready = BufReader::new(stdout).lines().map_while(|l| l.ok()).find(|l| l.contains(READY));
            let resumed =
                ready.as_deref().and_then(|l| l.split(READY).nth(1)).map(str::trim).map(str::to_owned);
            assert_eq!(
                resumed,
                Some(format!("{last:?}")),
                "the child resumes at the ends found after the kill"
            );
        }
        let delay = Duration::from_millis(rng.gen_range(if round == 0 { 0..20 } else { 20..400 }));
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "the child must die by the signal, not finish: {status:?}");
        let ends = check_log(dir.path());
        for (p, (end, before)) in ends.iter().zip(&last).enumerate() {
            assert!(end >= before, "partition {p}: records lost across a kill: {end} < {before}");
        }
        if ends.iter().zip(&last).any(|(e, b)| e > b) {
            rounds_with_progress += 1;
        }
        last = ends;
    }
    assert!(rounds_with_progress >= 3, "the child made progress in only {rounds_with_progress} rounds");
    eprintln!("{test_name} seed {seed}: ends {last:?}, {rounds_with_progress} rounds with progress");
}

#[test]
fn sigkill_never_leaves_a_refused_log_nor_loses_or_reuses_offsets() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child_writer(Path::new(&dir));
    }
    for seed in [11, 12] {
        kill_rounds("sigkill_never_leaves_a_refused_log_nor_loses_or_reuses_offsets", seed);
    }
}
