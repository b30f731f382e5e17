//! `rtb run` throughput on the embedded default (durable embedded log, sled state, embedded sinks), every
//! operator of the CPC topology, traffic generated at an unlimited rate: N ad-events (default 500 000, env
//! `RTB_RUN_EVENTS`). Runs the same code as the binary (`rtb run --events N --rate 10000000 --quiet`) in
//! this process and prints ad-events per second of the whole run (production, processing, drain, report)
//! and the peak resident memory.
//!
//! `cargo bench --bench run`

use std::time::Instant;

use clap::Parser;
use rtb_topology::cli::{execute, Cli};

#[path = "support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;


fn main() {
    // Criterion-style flags (`--bench`, filters) are accepted and ignored.
    let n: u64 = std::env::var("RTB_RUN_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let dir = tempfile::tempdir().expect("temporary data directory");
    let data = dir.path().join("rtb-data");
    let args = ["rtb", "run", "--data-dir", data.to_str().expect("utf-8 path"), "--events", &n.to_string()];
    let cli = Cli::try_parse_from(args.iter().copied().chain(["--rate", "10000000", "--quiet"])).expect("arguments");
    let mut report = Vec::new();
    let t = Instant::now();
    execute(cli, &mut report).expect("rtb run");
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&report);
    let complete = text.lines().find(|l| l.starts_with("complete") || l.contains("complete:")).unwrap_or("");
    println!("run: {n} ad-events in {secs:.2} s (whole run: production, processing, drain, report); {complete}");
    println!("EVENTS_PER_SEC name=run_ad_events value={:.0}", n as f64 / secs);
    // Until every stage committed every record (the drain after it waits for the idle timeout).
    let committed = text.split("every record committed after ").nth(1).and_then(|t| t.split(' ').next()?.parse::<f64>().ok());
    if let Some(c) = committed {
        println!("EVENTS_PER_SEC name=run_ad_events_committed value={:.0}", n as f64 / c);
    }
    support::print_peak_rss("run");
}
