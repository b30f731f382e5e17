//! State and offsets commit atomically — in process, and across a `SIGKILL`.
//!
//! The kill tests re-execute this test binary as a child (`--exact <test> --nocapture` with
//! `RTB_STATE_CRASH_CHILD=<dir>`). The child resumes from the committed offset of a sled state and loops
//! over records `i = offset, offset + 1, …`: `counter[i % 17] += i`, `applied = i + 1`, committing the
//! counters, `applied` and the offset `i + 1` in one batch every few records (with or without an fsync per
//! commit). The parent kills it at random moments, several rounds in a row, and after every kill checks
//! that the state is exactly the effect of records `0..offset`: nothing applied twice, nothing skipped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use rtb_stream::state::{
    JournalBackend, JournalOptions, KeyedOptions, KeyedStore, MemoryBackend, OffsetMap, SledBackend, StateScope, StoreBackend, ValueStore,
    WriteBatch,
};

const CHILD_DIR: &str = "RTB_STATE_CRASH_CHILD";
const CHILD_FSYNC: &str = "RTB_STATE_CRASH_FSYNC";
/// `sled` or `journal`: the backend the child writes (and the parent checks).
const CHILD_BACKEND: &str = "RTB_STATE_CRASH_BACKEND";
const COUNTERS: u64 = 17;
const COMMIT_EVERY: u64 = 7;
const TOPIC: &str = "input";
/// What the child prints, followed by its resume offset, once it has opened the state.
const READY: &str = "READY offset=";
/// A child that is never killed (parent gone) stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

/// One counter per page, so every commit writes several sled keys besides the offsets.
fn counter_options() -> KeyedOptions {
    KeyedOptions { max_page_entries: 1, ..KeyedOptions::default() }
}

fn scope_at(dir: &Path) -> StateScope {
    scope_on(dir, "sled")
}

/// The scope on `backend`: sled, or the journal with a small compaction threshold so that kills also land
/// in the middle of compactions.
fn scope_on(dir: &Path, backend: &str) -> StateScope {
    let backend: Arc<dyn StoreBackend> = match backend {
        "journal" => Arc::new(
            JournalBackend::open_with(dir.join("journal"), JournalOptions { compact_at: 64 << 10 }).expect("open journal"),
        ),
        _ => Arc::new(SledBackend::open(dir.join("state"), "state").expect("open sled")),
    };
    StateScope::new(backend, "job/0")
}

fn offset_of(scope: &StateScope) -> u64 {
    let offsets = scope.read_offsets().expect("read offsets");
    offsets.get(&(TOPIC.to_string(), 0)).copied().unwrap_or(0)
}

/// The writer loop run by the child process; never returns.
fn child_writer(dir: &Path, fsync: bool, backend: &str) -> ! {
    let scope = scope_on(dir, backend);
    let mut next = offset_of(&scope);
    let mut counters: KeyedStore<u64, u64> =
        KeyedStore::open_with(&scope, "counters", counter_options()).expect("open counters");
    let mut applied: ValueStore<u64> = scope.value("applied").expect("open applied");
    println!("{READY}{next}");
    let started = Instant::now();
    loop {
        let i = next;
        *counters.get_or_insert_with(i % COUNTERS, || 0) += i;
        applied.set(i + 1);
        next = i + 1;
        if next.is_multiple_of(COMMIT_EVERY) {
            let mut batch = WriteBatch::new();
            counters.flush_into(&mut batch).expect("flush counters");
            applied.flush_into(&mut batch).expect("flush applied");
            let offsets: OffsetMap = [((TOPIC.to_string(), 0), next)].into_iter().collect();
            scope.write_offsets(&offsets, &mut batch).expect("offsets");
            scope.backend().apply(batch).expect("commit");
            if fsync {
                scope.backend().flush().expect("fsync");
            }
            if started.elapsed() > CHILD_LIFETIME {
                std::process::exit(3);
            }
        }
    }
}

/// Reads the committed state and checks it is exactly the effect of records `0..offset`; returns the offset.
fn check_committed_state(dir: &Path, backend: &str) -> u64 {
    let scope = scope_on(dir, backend);
    let offset = offset_of(&scope);
    let counters: KeyedStore<u64, u64> = scope.keyed("counters").expect("open counters");
    let applied: ValueStore<u64> = scope.value("applied").expect("open applied");
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..offset {
        *want.entry(i % COUNTERS).or_default() += i;
    }
    let got: BTreeMap<u64, u64> = counters.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(got, want, "counters must be the sum over records 0..{offset}");
    assert_eq!(*applied.get(), offset, "`applied` commits with the offset");
    assert_eq!(offset % COMMIT_EVERY, 0, "offsets are only committed every {COMMIT_EVERY} records");
    offset
}

/// Spawns this test as a writer child, kills it at random moments and checks the state after each kill.
fn kill_rounds(test_name: &str, fsync: bool, seed: u64, backend: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = SmallRng::seed_from_u64(seed);
    let exe = std::env::current_exe().expect("test binary path");
    let mut last = 0;
    let mut rounds_with_progress = 0;
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_FSYNC, if fsync { "1" } else { "0" })
            .env(CHILD_BACKEND, backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer child");
        // Round 0 kills the child while it may still be opening (recovering) the state; the others kill
        // it a random time after it started writing.
        if round > 0 {
            let stdout = child.stdout.take().expect("piped stdout");
            let ready = BufReader::new(stdout).lines().map_while(|l| l.ok()).find(|l| l.contains(READY));
            // libtest prints `test <name> ... ` on the same line before the test's own output.
            let resumed: u64 = ready
                .as_deref()
                .and_then(|l| l.split(READY).nth(1))
                .and_then(|n| n.trim().parse().ok())
                .expect("child reports its resume offset");
            assert_eq!(resumed, last, "the child resumes from the committed offset");
        }
        let delay = Duration::from_millis(rng.gen_range(if round == 0 { 0..20 } else { 20..300 }));
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "the child must die by the signal, not finish: {status:?}");
        let offset = check_committed_state(dir.path(), backend);
        assert!(offset >= last, "a commit was lost after a kill: {offset} < {last}");
        if offset > last {
            rounds_with_progress += 1;
        }
        last = offset;
    }
    assert!(rounds_with_progress >= 3, "the child made progress in only {rounds_with_progress} rounds");
    eprintln!(
        "{test_name} seed {seed}: {last} records committed, {rounds_with_progress} rounds with progress"
    );
}

/// In a child process: becomes the writer and never returns.
fn maybe_child() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let fsync = std::env::var(CHILD_FSYNC).is_ok_and(|v| v == "1");
        let backend = std::env::var(CHILD_BACKEND).unwrap_or_else(|_| "sled".into());
        child_writer(Path::new(&dir), fsync, &backend);
    }
}

#[test]
fn sigkill_with_fsync_per_commit_loses_and_duplicates_nothing() {
    maybe_child();
    for seed in [1, 2] {
        kill_rounds("sigkill_with_fsync_per_commit_loses_and_duplicates_nothing", true, seed, "sled");
    }
}

#[test]
fn sigkill_without_fsync_never_tears_a_batch() {
    // Without an fsync per commit the kill may catch sled with commits still in its buffers; what is
    // recovered must still be whole batches.
    maybe_child();
    for seed in [3, 4] {
        kill_rounds("sigkill_without_fsync_never_tears_a_batch", false, seed, "sled");
    }
}

#[test]
fn journal_sigkill_with_fsync_per_commit_loses_and_duplicates_nothing() {
    maybe_child();
    for seed in [5, 6] {
        kill_rounds("journal_sigkill_with_fsync_per_commit_loses_and_duplicates_nothing", true, seed, "journal");
    }
}

#[test]
fn journal_sigkill_without_fsync_loses_and_duplicates_nothing() {
    // Every commit is one write(2): once `apply` returns, a killed process cannot lose it (only a machine
    // crash can, without fsync). Kills also land inside compactions (64 KiB threshold).
    maybe_child();
    for seed in [7, 8] {
        kill_rounds("journal_sigkill_without_fsync_loses_and_duplicates_nothing", false, seed, "journal");
    }
}

/// A commit of counter `c` += 1 and offset `n`, both in one batch.
fn commit_pair(scope: &StateScope, counters: &mut KeyedStore<u64, u64>, n: u64) -> WriteBatch {
    *counters.get_or_insert_with(n % COUNTERS, || 0) += 1;
    let mut batch = WriteBatch::new();
    counters.flush_into(&mut batch).expect("flush");
    let offsets: OffsetMap = [((TOPIC.to_string(), 0), n)].into_iter().collect();
    scope.write_offsets(&offsets, &mut batch).expect("offsets");
    batch
}

fn both_or_neither(scope: &StateScope) {
    let mut counters: KeyedStore<u64, u64> =
        KeyedStore::open_with(scope, "counters", counter_options()).expect("open");
    let first = commit_pair(scope, &mut counters, 1);
    scope.backend().apply(first).expect("apply");
    // The next batch is built but never applied (the process died before the commit).
    let lost = commit_pair(scope, &mut counters, 2);
    assert!(lost.len() >= 2, "state and offsets are in the same batch");
    drop(lost);
    let reopened: KeyedStore<u64, u64> = scope.keyed("counters").expect("reopen");
    assert_eq!(offset_of(scope), 1, "neither: the offset of the lost batch is not visible");
    assert_eq!(reopened.iter().map(|(_, v)| *v).sum::<u64>(), 1, "neither: its state is not visible");
    // Rebuilt from the committed state, the same batch commits both.
    let mut counters = reopened;
    let again = commit_pair(scope, &mut counters, 2);
    scope.backend().apply(again).expect("apply");
    let reopened: KeyedStore<u64, u64> = scope.keyed("counters").expect("reopen");
    assert_eq!(offset_of(scope), 2, "both: the offset");
    assert_eq!(reopened.get(&2), Some(&1), "both: the state");
    assert_eq!(reopened.iter().map(|(_, v)| *v).sum::<u64>(), 2);
}

#[test]
fn state_and_offsets_in_one_batch_are_both_or_neither_visible_memory() {
    both_or_neither(&StateScope::new(Arc::new(MemoryBackend::new()), "job/0"));
}

#[test]
fn state_and_offsets_in_one_batch_are_both_or_neither_visible_sled() {
    let dir = tempfile::tempdir().expect("tempdir");
    both_or_neither(&scope_at(dir.path()));
    // And after closing and reopening the database.
    let scope = scope_at(dir.path());
    assert_eq!(offset_of(&scope), 2);
    let counters: KeyedStore<u64, u64> = scope.keyed("counters").expect("reopen");
    assert_eq!(counters.iter().map(|(_, v)| *v).sum::<u64>(), 2);
}

#[test]
fn a_concurrent_reader_never_sees_an_offset_without_its_state() {
    // The reader copies the whole backend in one `scan_prefix` (one read lock) and checks the copy:
    // if `apply` let readers in between its operations, a copy would hold a new offset with old counters.
    let backend = Arc::new(MemoryBackend::new());
    let scope = StateScope::new(Arc::clone(&backend) as Arc<dyn StoreBackend>, "job/0");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (backend, done) = (Arc::clone(&backend), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut checked = 0_u64;
            while !done.load(Ordering::Relaxed) || checked == 0 {
                let snapshot = backend.scan_prefix(&[]).expect("scan");
                let copy = Arc::new(MemoryBackend::new());
                let mut batch = WriteBatch::new();
                for (k, v) in snapshot {
                    batch.put(k, v);
                }
                copy.apply(batch).expect("copy");
                let view = StateScope::new(copy, "job/0");
                let offset = offset_of(&view);
                let counters: KeyedStore<u64, u64> = view.keyed("counters").expect("open copy");
                assert_eq!(counters.iter().map(|(_, v)| *v).sum::<u64>(), offset, "torn commit seen");
                checked += 1;
            }
            checked
        })
    };
    let mut counters: KeyedStore<u64, u64> =
        KeyedStore::open_with(&scope, "counters", counter_options()).expect("open");
    for n in 1..=3_000 {
        let batch = commit_pair(&scope, &mut counters, n);
        scope.backend().apply(batch).expect("apply");
    }
    done.store(true, Ordering::Relaxed);
    let checked = reader.join().expect("reader panicked");
    assert!(checked > 0);
}
