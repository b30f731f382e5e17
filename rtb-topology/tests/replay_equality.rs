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
use support::run::{replay, rtb};

/// Ad-events per generated input.
const AD_EVENTS: u64 = 30_000;
/// Out-of-orderness given to the replay.
const OOO_MS: i64 = 3_600_000;

fn generate(dir: &Path, seed: u64) {
    let out = dir.display().to_string();
    let (n, seed) = (AD_EVENTS.to_string(), seed.to_string());
    rtb(&["generate", "--output", &out, "--ad-events", &n, "--seed", &seed, "--scale", "1"])
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The generated input exercises every output, so that equality on it means something.
fn assert_input_is_rich(seed: u64, model: &Model, ads: usize) {
    let o = &model.out;
    let facts = format!(
        "seed {seed}: {ads} valid ad-events, {} metrics windows, {} conversions ({:?} unattributed), {} compensations, \
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
    assert!(ads as u64 > AD_EVENTS * 9 / 10, "{facts}");
    assert!(!o.metrics.is_empty() && !o.conversions.is_empty() && !o.compensations.is_empty(), "{facts}");
    assert!(o.unattributed.unwrap_or(0) > 0 && !o.rankings.is_empty() && !o.dead_letters.is_empty(), "{facts}");
}

fn check_seed(seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in");
    generate(&input, seed);
    let raw = RawInput::read_dir(&input).expect("read generated input");
    let inputs = validate(&raw, chrono::Utc::now().timestamp_millis());
    let model = batch_model::run(&inputs);
    assert_input_is_rich(seed, &model, inputs.ads.len());
    assert!(inputs.read.get(AD_TOPIC).copied().unwrap_or(0) as u64 >= AD_EVENTS, "seed {seed}: too few ad-event lines");

    let replayed = replay(&input, &dir.path().join("out"), OOO_MS).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mut problems = compare_all(&model, &replayed);
    if let Some(late) = replayed.summary_late().filter(|n| *n != 0) {
        problems.push(format!("summary.json reports {late} late events with out-of-orderness {OOO_MS} ms"));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: rtb replay differs from the batch model ({} kinds of difference):\n{}",
        problems.len(),
        problems.join("\n")
    );
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
