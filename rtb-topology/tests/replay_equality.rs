//! `rtb replay` on generated traffic equals the batch model of `support/batch_model.rs`, output by output
//! (REPLAY-SEMANTICS.md): metrics per window, conversions and the unattributed count, compensations, the
//! ledger as a set, balances (and their identity with the ledger), final rankings, dead letters per topic,
//! alerts within what any processing order allows.
//!
//! The out-of-orderness passed (1 h) is larger than any arrival delay of the generator (≤ 15 min), so no
//! record is late and the streaming result must be the batch result.

mod support;

use std::path::Path;

use support::batch_model::{self, Model};
use support::compare::compare_all;
use support::input::{validate, RawInput, AD_TOPIC};
use support::run::{replay, rtb, ENGINES};

/// Ad-events per generated input.
const AD_EVENTS: u64 = 30_000;
/// Out-of-orderness given to the replay.
const OOO_MS: i64 = 3_600_000;

/// What to generate.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    seed: u64,
    ad_events: u64,
    /// `--hours`; None keeps the generator's default span (30 h, across a Seoul midnight).
    hours: Option<u32>,
}

fn generate(dir: &Path, t: Traffic) {
    let out = dir.display().to_string();
    let (n, seed) = (t.ad_events.to_string(), t.seed.to_string());
    let mut args = vec!["generate", "--output", &out, "--ad-events", &n, "--seed", &seed, "--scale", "1"];
    let hours = t.hours.map(|h| h.to_string());
    if let Some(h) = &hours {
        args.extend(["--hours", h.as_str()]);
    }
    rtb(&args).unwrap_or_else(|e| panic!("{e}"));
}

/// The generated input exercises every output, so that equality on it means something.
fn assert_input_is_rich(t: Traffic, model: &Model, ads: usize) {
    let o = &model.out;
    let facts = format!(
        "{t:?}: {ads} valid ad-events, {} metrics windows, {} conversions ({:?} unattributed), {} compensations, \
         {} ledger rows, {} ranking rows, {} alerts, {} dead letters",
        o.metrics.len(),
        o.conversions.len(),
        o.unattributed,
        o.compensations.len(),
        o.ledger.len(),
        o.rankings.len(),
        o.alerts.len(),
        o.dead_letters.len()
    );
    println!("{facts}");
    assert!(ads as u64 > t.ad_events * 9 / 10, "{facts}");
    assert!(!o.metrics.is_empty() && !o.conversions.is_empty() && !o.compensations.is_empty(), "{facts}");
    assert!(o.unattributed.unwrap_or(0) > 0 && !o.rankings.is_empty() && !o.dead_letters.is_empty(), "{facts}");
}

fn check_seed(seed: u64) {
    check(Traffic { seed, ad_events: AD_EVENTS, hours: None });
}

/// Generates `t`, replays it and compares every output with the model; returns the model.
fn check(t: Traffic) -> Model {
    let seed = t.seed;
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in");
    generate(&input, t);
    let raw = RawInput::read_dir(&input).expect("read generated input");
    let inputs = validate(&raw, chrono::Utc::now().timestamp_millis());
    let model = batch_model::run(&inputs);
    assert_input_is_rich(t, &model, inputs.ads.len());
    assert!(inputs.read.get(AD_TOPIC).copied().unwrap_or(0) as u64 >= t.ad_events, "{t:?}: too few ad-event lines");

    for engine in ENGINES {
        let replayed = replay(&input, &dir.path().join(engine), OOO_MS, engine).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let mut problems = compare_all(&model, &replayed);
        if let Some(late) = replayed.summary_late().filter(|n| *n != 0) {
            problems.push(format!("summary.json reports {late} late events with out-of-orderness {OOO_MS} ms"));
        }
        assert!(
            problems.is_empty(),
            "seed {seed}: rtb replay --engine {engine} differs from the batch model ({} kinds of difference):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    model
}

#[test]
fn generated_traffic_seed_1_replay_equals_batch_model() {
    check_seed(1);
}

#[test]
fn generated_traffic_seed_7_replay_equals_batch_model() {
    check_seed(7);
}

#[test]
fn generated_traffic_seed_2024_replay_equals_batch_model() {
    check_seed(2024);
}

/// 100 000 ad-events in 2 h (one Seoul day): daily budgets run out, so alerts, budget pauses and the
/// ranking's pause rule are compared too (the 30 h runs above stay far below every budget).
#[test]
fn generated_heavy_traffic_exhausting_budgets_replay_equals_batch_model() {
    let model = check(Traffic { seed: 11, ad_events: 100_000, hours: Some(2) });
    assert!(!model.out.alerts.is_empty(), "no campaign reached 80 % of its budget: the test checks no alert");
    let paused = model.out.paused_reason.values().filter(|r| r.is_some()).count();
    assert!(paused > 0, "no campaign budget-paused at the end: the ranking's pause rule is not exercised");
}
