//! `rtb run` killed with SIGKILL at random moments — and stopped by SIGKILL, SIGSTOP or SIGINT in its drain,
//! after the last event was produced — then restarted on the same data directory ends with exactly the
//! outputs of an uninterrupted run on the same seed: no click charged twice or lost, no refund applied twice
//! or lost, every window closed and every conversion matched.

mod support;

use support::outputs::ledger_rows;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

const EVENTS: &str = "6000";
const RATE: &str = "2500";

fn rtb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtb"))
}

/// Runs to the end: "complete" means every stage committed every input and its watermark reached the end
/// of the data — also after SIGKILLs (stream time is committed with the watermark and restored).
fn run_to_completion(data: &Path) {
    let out = rtb()
        .args(["run", "--data-dir"])
        .arg(data)
        .args(["--events", EVENTS, "--rate", RATE, "--seed", "5", "--quiet"])
        .output()
        .expect("spawn rtb run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "rtb run failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("complete: all 6000 ad-events"), "{stdout}");
}

fn export(data: &Path, out: &Path) {
    let st = rtb().args(["export", "--data-dir"]).arg(data).arg("--output").arg(out).status().expect("export");
    assert!(st.success());
}

fn name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn lines(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name)).expect(name).lines().map(str::to_string).collect()
}

#[test]
fn sigkill_at_random_moments_then_restart_gives_the_uninterrupted_ledger() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (tmp.path().join("uninterrupted"), tmp.path().join("killed"));
    run_to_completion(&a);

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = rtb()
            .args(["run", "--data-dir"])
            .arg(&b)
            .args(["--events", EVENTS, "--rate", RATE, "--seed", "5", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1_800)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 2, "the run must have been killed mid-way (killed {kills} times)");
    run_to_completion(&b);

    same_outputs(tmp.path(), &a, &b);
}

/// Exports both data directories and asserts that every output is the same.
fn same_outputs(tmp: &Path, a: &Path, b: &Path) {
    let (ea, eb) = (tmp.join(format!("export-{}", name(a))), tmp.join(format!("export-{}", name(b))));
    export(a, &ea);
    export(b, &eb);
    let (la, lb) = (ledger_rows(&ea), ledger_rows(&eb));
    assert!(la.len() > 100, "the run charged clicks ({} ledger rows)", la.len());
    assert!(la.iter().any(|r| r.entry_type == "REFUND"), "duplicate clicks were refunded");
    let only_a: Vec<_> = la.difference(&lb).take(5).collect();
    let only_b: Vec<_> = lb.difference(&la).take(5).collect();
    assert!(only_a.is_empty() && only_b.is_empty(), "ledgers differ: only uninterrupted {only_a:?}, only killed {only_b:?}");
    assert_eq!(lines(&ea, "balances.jsonl"), lines(&eb, "balances.jsonl"));
    assert_eq!(lines(&ea, "compensations.jsonl"), lines(&eb, "compensations.jsonl"));
    // Every other output too: the windows closed by the drain after the kills, the last conversions.
    for name in ["metrics.jsonl", "conversions.jsonl", "alerts.jsonl", "campaign_status.jsonl"] {
        let (mut xa, mut xb) = (lines(&ea, name), lines(&eb, name));
        xa.sort();
        xb.sort();
        assert!(!xa.is_empty() || name == "alerts.jsonl", "{name} is empty");
        assert_eq!(xa.len(), xb.len(), "{name}: row counts differ");
        assert!(xa == xb, "{name} differs: first difference {:?}", xa.iter().zip(&xb).find(|(x, y)| x != y));
    }
}

/// A run at an unlimited rate (the same events: event times do not depend on the rate) whose processing
/// lags its production; returns once the run logs that its generator has finished and the drain has
/// begun, so that a signal sent now lands in the drain.
fn run_in_drain(data: &Path) -> std::process::Child {
    let mut child = rtb()
        .args(["run", "--data-dir"])
        .arg(data)
        .args(["--events", EVENTS, "--rate", "10000000", "--seed", "5", "--quiet"])
        .env("RUST_LOG", "warn,rtb_topology=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        // Keeps reading to the end, so that the child never blocks on a full pipe.
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("draining") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the run logs the start of its drain");
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let st = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill");
    assert!(st.success(), "kill {sig}");
}

#[test]
fn stopped_in_the_drain_by_sigkill_sigstop_or_sigint_the_run_still_ends_with_every_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let reference = tmp.path().join("uninterrupted");
    run_to_completion(&reference);

    // SIGKILL after the last event was produced; the restart must close the last windows and matches.
    let killed = tmp.path().join("killed-in-drain");
    let mut child = run_in_drain(&killed);
    assert!(child.try_wait().expect("wait").is_none(), "still draining when killed");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    run_to_completion(&killed);
    same_outputs(tmp.path(), &reference, &killed);

    // SIGSTOP for 15 s (longer than the idle timeout) in the drain, then SIGCONT: a stalled process is not a
    // quiet partition; nothing may become late, no conversion may go to an older click.
    let stopped = tmp.path().join("stopped-in-drain");
    let mut child = run_in_drain(&stopped);
    signal(&child, "-STOP");
    std::thread::sleep(Duration::from_secs(15));
    signal(&child, "-CONT");
    let st = child.wait().expect("wait");
    assert!(st.success(), "the stopped run finishes by itself: {st:?}");
    same_outputs(tmp.path(), &reference, &stopped);

    // SIGINT (Ctrl-C) in the drain: exit 130, not complete; the restart completes it.
    let interrupted = tmp.path().join("interrupted-in-drain");
    let mut child = run_in_drain(&interrupted);
    signal(&child, "-INT");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(130), "an interrupted run says so");
    run_to_completion(&interrupted);
    same_outputs(tmp.path(), &reference, &interrupted);
}
