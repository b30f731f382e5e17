//! `rtb replay` throughput: N ad-events (default 10 M, env `RTB_REPLAY_EVENTS`) of simulated traffic, plus
//! their campaign and conversion events, replayed through every CPC operator by the merge engine (or, with
//! `RTB_REPLAY_ENGINE=runtime`, by the plan on the runtime). Prints ad-events/s and the
//! peak resident memory of the replay (the generation step is excluded: its peak is reset before).
//!
//! `cargo bench --bench replay` (input cached under `target/replay-bench/N`).

use std::path::PathBuf;
use std::time::Instant;

use rtb_topology::replay::{replay, Engine, ReplayOptions};

#[path = "support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;


fn main() {
    // Criterion-style flags (`--bench`, filters) are accepted and ignored.
    let n: u64 = std::env::var("RTB_REPLAY_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("replay-bench");
    let input = root.join(format!("in-{n}"));
    if !input.join("ad-events.jsonl").exists() {
        eprintln!("generating {n} ad-events into {} ...", input.display());
        let t = Instant::now();
        let scale = u32::try_from((n / 250_000).clamp(1, 40)).unwrap_or(1);
        rtb_topology::app::generate::write_inputs(&input, 42, scale, n, 72).expect("generate");
        eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
    }
    // Reset the peak-RSS watermark so it measures the replay alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let output = root.join(format!("out-{n}"));
    // `RTB_REPLAY_ENGINE=runtime`: the plan on the runtime instead of the merge engine.
    let runtime = std::env::var("RTB_REPLAY_ENGINE").is_ok_and(|e| e == "runtime");
    let (engine, label) = if runtime { (Engine::Runtime, "replay_runtime") } else { (Engine::Merge, "replay") };
    let opts = ReplayOptions { input, output, max_out_of_orderness_ms: 300_000, engine, kafka: None };
    let plan = rtb_topology::Topology::from_toml_str(rtb_topology::CPC_TOPOLOGY_TOML)
        .and_then(|t| t.plan())
        .expect("the shipped topology");
    let t = Instant::now();
    let s = replay(&plan, &opts).expect("replay");
    let total = t.elapsed().as_secs_f64();
    let ads = s.events.get("ad-events").copied().unwrap_or(0);
    println!(
        "replay: {} events ({ads} ad-events), {:.2} s processing + outputs {:.2} s; dead letters {}, compensations {}, conversions {}",
        s.events.values().sum::<u64>(),
        s.elapsed_s,
        total - s.elapsed_s,
        s.dead_letters.values().sum::<u64>(),
        s.compensations,
        s.attributed_conversions
    );
    println!("EVENTS_PER_SEC name={label}_ad_events value={:.0}", s.ad_events_per_sec);
    println!("EVENTS_PER_SEC name={label}_ad_events_incl_outputs value={:.0}", ads as f64 / total);
    support::print_peak_rss(label);
}
