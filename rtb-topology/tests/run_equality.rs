//! `rtb run` — the runtime path users run: the plan, the registry's wiring, repartition topics, consumer
//! groups, group commit, the durable embedded log and sled — on simulated traffic, exported with
//! `rtb export`, equals the independent batch model of `support/batch_model.rs` on the same traffic written
//! by `rtb generate` (same seed, same simulated timeline).
//!
//! Every stage runs with 1 h of allowed out-of-orderness (more than any arrival delay of the simulator), so
//! nothing is late and the streaming result must be the batch result. A live run ends when every record is
//! committed and every watermark reached the end of the data less that hour: windows (and dedup windows,
//! and the conversions they hold back) in the last hour are still open, so the comparison covers what had
//! to be final — every charge, every refund and compensation of a closed dedup window, balances against the
//! run's own ledger, metrics windows and conversions up to the final watermark, dead letters per topic.

mod support;

use std::path::Path;

use support::batch_model;
use support::compare::{balance_identity, diff_keyed, same_metric};
use support::input::{validate, RawInput};
use support::outputs::Outputs;
use support::run::rtb;

const AD_EVENTS: u64 = 20_000;
/// 20 000 ad-events at the simulator's default pace (30 h per 100 000) span 6 h: `rtb generate --hours 6`
/// writes the timeline `rtb run` produces.
const HOURS: &str = "6";
const OOO_MS: i64 = 3_600_000;

/// The shipped topology with 1 h of out-of-orderness on every operator's watermark.
fn topology(dir: &Path) -> std::path::PathBuf {
    let text = rtb_topology::CPC_TOPOLOGY_TOML.replace(
        "\n[[operator]]\nid = ",
        "\n[[operator]]\nwatermark = { max_out_of_orderness = \"1h\" }\nid = ",
    );
    assert_eq!(text.matches("max_out_of_orderness = \"1h\"").count(), 7, "every operator");
    let path = dir.join("cpc-1h.toml");
    std::fs::write(&path, text).expect("write topology");
    path
}

#[test]
fn rtb_run_exported_equals_the_batch_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let (input, data, out) = (dir.path().join("in"), dir.path().join("data"), dir.path().join("out"));
    let file = topology(dir.path());
    let (file_s, n) = (file.display().to_string(), AD_EVENTS.to_string());
    rtb(&["generate", "--output", &input.display().to_string(), "--ad-events", &n, "--seed", "3", "--scale", "1", "--hours", HOURS])
        .unwrap_or_else(|e| panic!("{e}"));
    rtb(&[
        "run", "--topology", &file_s, "--data-dir", &data.display().to_string(), "--events", &n, "--seed", "3",
        "--scale", "1", "--rate", "10000000", "--quiet",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    rtb(&["export", "--topology", &file_s, "--data-dir", &data.display().to_string(), "--output", &out.display().to_string()])
        .unwrap_or_else(|e| panic!("{e}"));

    let ads = std::fs::read_to_string(input.join("ad-events.jsonl")).expect("ad-events");
    let priceless = ads.lines().filter(|l| l.contains("\"IMPRESSION\"") && !l.contains("actual_price")).count();
    assert!(priceless > 10_000, "impressions without actual_price (SPEC §3) are part of the traffic: {priceless}");
    let raw = RawInput::read_dir(&input).expect("read generated input");
    let inputs = validate(&raw, chrono::Utc::now().timestamp_millis());
    let model = batch_model::run(&inputs);
    let run = Outputs::load_replay(&out).unwrap_or_else(|e| panic!("export: {e}"));
    let m = &model.out;
    assert!(m.ledger.len() > 500 && !m.compensations.is_empty() && !m.conversions.is_empty(), "rich input");

    let end = inputs.ads.iter().map(|a| a.ts).max().expect("ad-events");
    let final_wm = end - OOO_MS;
    let mut problems = Vec::new();
    // Money: every charge; every refund of a dedup window closed by the final watermark (its start + 5 min);
    // balances equal opening − charges + refunds of the run's own ledger.
    let settled = |r: &&support::outputs::LedgerRow| {
        r.entry_type != "REFUND"
            || r.idempotency_key.rsplit('/').next().and_then(|t| t.parse::<i64>().ok()).is_some_and(|start| start + 300_000 <= final_wm)
    };
    let model_ledger: Vec<_> = m.ledger.iter().filter(settled).cloned().collect();
    let run_ledger: Vec<_> = run.ledger.iter().filter(settled).cloned().collect();
    assert!(model_ledger.iter().any(|r| r.entry_type == "REFUND"), "refunds are compared");
    problems.extend(diff_keyed("ledger", &model_ledger, &run_ledger, |r| r.clone(), |_, _| true));
    problems.extend(balance_identity(&model, &run));
    let closed_comp = |r: &&support::outputs::CompensationRow| r.timestamp <= final_wm;
    let model_comp: Vec<_> = m.compensations.iter().filter(closed_comp).cloned().collect();
    let run_comp: Vec<_> = run.compensations.iter().filter(closed_comp).cloned().collect();
    problems.extend(diff_keyed(
        "compensations (closed windows)",
        &model_comp,
        &run_comp,
        |r| (r.device_id.clone(), r.ad_id.clone(), r.timestamp),
        |a, b| a == b,
    ));
    // What the final watermark (end of the data − 1 h) made final.
    let closed = |r: &&support::outputs::MetricRow| r.window_end + 60_000 <= final_wm;
    let model_metrics: Vec<_> = m.metrics.iter().filter(closed).cloned().collect();
    let run_metrics: Vec<_> = run.metrics.iter().filter(closed).cloned().collect();
    assert!(model_metrics.len() > 100, "{} closed windows", model_metrics.len());
    problems.extend(diff_keyed(
        "metrics (closed windows)",
        &model_metrics,
        &run_metrics,
        |r| (r.campaign_id.clone(), r.window_start),
        same_metric,
    ));
    let matched = |r: &&support::outputs::ConversionRow| r.conversion_timestamp <= final_wm;
    let model_conv: Vec<_> = m.conversions.iter().filter(matched).cloned().collect();
    let run_conv: Vec<_> = run.conversions.iter().filter(matched).cloned().collect();
    assert!(model_conv.len() > 20 && model_comp.len() > 10, "{} conversions, {} compensations compared", model_conv.len(), model_comp.len());
    problems.extend(diff_keyed("conversions (before the final watermark)", &model_conv, &run_conv, |r| r.order_id.clone(), |a, b| a == b));
    let dead = |o: &Outputs| o.dead_per_topic().into_iter().collect::<Vec<_>>();
    problems.extend(diff_keyed("dead letters per topic", &dead(m), &dead(&run), |r| r.0.clone(), |a, b| a == b));
    assert!(problems.is_empty(), "rtb run differs from the batch model:\n{}", problems.join("\n"));
}
