//! Golden tests of `rtb replay` (REPLAY-SEMANTICS.md): tiny fixed inputs whose answers are worked out BY HAND
//! in the comments, never by the model.
//!
//! Every case is checked twice with the same hand answers: `model_*` runs the batch model of
//! `support/batch_model.rs` (so the oracle is checked independently of the binary) and `replay_*` runs the
//! `rtb replay` binary on the same files.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::batch_model;
use support::input::{validate, RawInput};
use support::lines::{advertiser, campaign, conversion, file, Ad};
use support::outputs::{AlertRow, CompensationRow, ConversionRow, Outputs};
use support::timefmt::parse_utc;

#[path = "golden/cases.rs"]
mod cases;
#[path = "golden/ranking_cases.rs"]
mod ranking_cases;
use cases::*;
use ranking_cases::*;

/// Out-of-orderness given to the replay: more than any disorder in these inputs, so no record is late.
const OOO_MS: i64 = 48 * 3_600_000;

fn ms(s: &str) -> i64 {
    parse_utc(s).unwrap_or_else(|| panic!("bad literal timestamp {s}"))
}

fn model(raw: &RawInput) -> Outputs {
    batch_model::run(&validate(raw, chrono::Utc::now().timestamp_millis())).out
}

/// The replay of `raw` by each engine.
fn replays(raw: &RawInput) -> Vec<Outputs> {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in");
    raw.write_dir(&input).expect("write input");
    support::run::ENGINES
        .iter()
        .map(|engine| {
            let out = support::run::replay(&input, &dir.path().join(engine), OOO_MS, engine)
                .unwrap_or_else(|e| panic!("--engine {engine}: {e}"));
            if let Some(late) = out.summary_late() {
                assert_eq!(late, 0, "--engine {engine}: late events reported with out-of-orderness {OOO_MS} ms: {:?}", out.summary);
            }
            out
        })
        .collect()
}

/// `model_NAME` and `replay_NAME` tests of one case: `$input()` checked by `$check`.
macro_rules! golden {
    ($input:ident, $check:ident, $model_test:ident, $replay_test:ident) => {
        #[test]
        fn $model_test() {
            $check(&model(&$input()));
        }

        #[test]
        fn $replay_test() {
            for out in replays(&$input()) {
                $check(&out);
            }
        }
    };
}

golden!(
    client_ids,
    check_client_ids,
    model_priceless_impression_redelivery_reused_event_id_and_refund_key_spelling_client_id,
    replay_priceless_impression_redelivery_reused_event_id_and_refund_key_spelling_client_id
);
golden!(
    spec_example,
    check_spec_example,
    model_spec_example_three_clicks_one_refund_of_two,
    replay_spec_example_three_clicks_one_refund_of_two
);
golden!(
    boundary_click,
    check_boundary_click,
    model_click_exactly_five_minutes_later_opens_new_window_without_compensation,
    replay_click_exactly_five_minutes_later_opens_new_window_without_compensation
);
golden!(
    attribution,
    check_attribution,
    model_last_click_wins_24h_inclusive_25h_unattributed_earliest_order_report_counts,
    replay_last_click_wins_24h_inclusive_25h_unattributed_earliest_order_report_counts
);
golden!(
    bad_input,
    check_bad_input,
    model_malformed_negative_unknown_enum_future_non_utc_lines_are_dead_letters,
    replay_malformed_negative_unknown_enum_future_non_utc_lines_are_dead_letters
);
golden!(
    ranking,
    check_ranking,
    model_ranking_pctr_score_gsp_cpc_and_eligibility,
    replay_ranking_pctr_score_gsp_cpc_and_eligibility
);
golden!(
    cross_window_click,
    check_cross_window_click,
    model_window_ctr_above_one_is_shown_capped_and_pctr_uses_the_raw_counts,
    replay_window_ctr_above_one_is_shown_capped_and_pctr_uses_the_raw_counts
);
golden!(
    budget_exhausted,
    check_budget_exhausted,
    model_budget_80_and_100_percent_alerts_paused_campaign_absent_from_ranking,
    replay_budget_80_and_100_percent_alerts_paused_campaign_absent_from_ranking
);
golden!(
    budget_next_day,
    check_budget_next_day,
    model_budget_paused_campaign_ranked_again_on_next_local_day,
    replay_budget_paused_campaign_ranked_again_on_next_local_day
);
golden!(
    budget_time_zones,
    check_budget_time_zones,
    model_budget_day_is_the_advertisers_local_day,
    replay_budget_day_is_the_advertisers_local_day
);
golden!(
    refund_below_budget,
    check_refund_below_budget,
    model_refund_lowers_day_spend_below_budget_campaign_stays_ranked,
    replay_refund_lowers_day_spend_below_budget_campaign_stays_ranked
);

/// REPLAY-SEMANTICS.md: output timestamps are RFC 3339 UTC with milliseconds ("2025-03-10T00:00:00.000Z").
#[test]
fn replay_output_timestamps_have_milliseconds() {
    for o in replays(&spec_example()) {
        assert!(!o.compensations.is_empty(), "the example has timestamps to check");
        assert_eq!(o.format_issue_count, 0, "e.g. {:?}", o.format_issues);
    }
}

#[test]
fn summary_late_counts_late_keys_and_per_topic_objects_not_latest_or_lateness() {
    let with = |v: Value| Outputs { summary: Some(v), ..Outputs::default() };
    let late = serde_json::json!({"late": {"ad-events": 3, "conversion-events": 1}, "latest_ts": 9, "max_lateness_ms": 7});
    assert_eq!(with(late).summary_late(), Some(4));
    assert_eq!(with(serde_json::json!({"counts": {"late_events": 2}})).summary_late(), Some(2));
    assert_eq!(with(serde_json::json!({"latest_ts": 9})).summary_late(), None);
    let u = serde_json::json!({"unattributed_conversions": 5});
    assert_eq!(with(u).summary_count("unattributed"), Some(5));
}

#[test]
fn contract_timestamp_form_is_exactly_millis_and_z() {
    use support::outputs::contract_timestamp;
    assert!(contract_timestamp("2025-03-10T00:00:00.000Z"));
    assert!(!contract_timestamp("2025-03-10T00:00:00Z"), "no milliseconds");
    assert!(!contract_timestamp("2025-03-10T00:00:00.000+00:00"), "offset instead of Z");
    assert!(!contract_timestamp("2025-03-10T00:00:00.000000Z"), "microseconds");
    assert!(!contract_timestamp("2025-13-10T00:00:00.000Z"), "month 13");
}

golden!(
    budget_raised,
    check_budget_raised,
    model_budget_raised_after_exhaustion_campaign_ranked_again,
    replay_budget_raised_after_exhaustion_campaign_ranked_again
);
golden!(
    unknown_advertiser,
    check_unknown_advertiser,
    model_no_advertiser_file_opens_at_zero_in_seoul,
    replay_no_advertiser_file_opens_at_zero_in_seoul
);

// ---------------------------------------------------------------------------------------------------------
// Shared assertions.

fn ledger_set(o: &Outputs) -> BTreeSet<(String, String, String, String, i64)> {
    let set: BTreeSet<_> = o
        .ledger
        .iter()
        .map(|l| {
            (l.idempotency_key.clone(), l.advertiser_id.clone(), l.campaign_id.clone(), l.entry_type.clone(), l.amount)
        })
        .collect();
    assert_eq!(set.len(), o.ledger.len(), "ledger has repeated rows: {:#?}", o.ledger);
    set
}

fn entry(key: &str, adv: &str, campaign: &str, kind: &str, amount: i64) -> (String, String, String, String, i64) {
    (key.into(), adv.into(), campaign.into(), kind.into(), amount)
}

fn balances(o: &Outputs) -> Vec<(&str, i64)> {
    o.balances.iter().map(|(a, b)| (a.as_str(), *b)).collect()
}

fn assert_unattributed(o: &Outputs, n: i64) {
    if let Some(u) = o.unattributed {
        assert_eq!(u, n, "unattributed conversions");
    }
}

fn assert_rankings(o: &Outputs, want: &[(&str, &str, i64, &str, f64, i64)]) {
    let got: Vec<_> = o
        .rankings
        .iter()
        .map(|r| (r.placement.as_str(), r.category.as_str(), r.rank, r.campaign_id.as_str(), r.cpc))
        .collect();
    let exp: Vec<_> = want.iter().map(|w| (w.0, w.1, w.2, w.3, w.5)).collect();
    assert_eq!(got, exp, "rankings (placement, category, rank, campaign, cpc)");
    for (r, w) in o.rankings.iter().zip(want) {
        assert!((r.score - w.4).abs() <= 1e-6 * w.4.abs(), "score of {}: got {}, want {}", r.campaign_id, r.score, w.4);
    }
}

fn assert_alerts(o: &Outputs, want: &[(&str, &str, &str, i64, i64, i64)]) {
    let got: Vec<_> = o
        .alerts
        .iter()
        .map(|a: &AlertRow| {
            (a.campaign_id.as_str(), a.advertiser_id.as_str(), a.day.as_str(), a.level, a.spend, a.daily_budget)
        })
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want.to_vec(), "alerts (campaign, advertiser, day, level, spend, daily_budget)");
}

fn compensation(device: &str, ad: &str, campaign: &str, adv: &str, clicks: &[&str], refund: i64) -> CompensationRow {
    let ts: Vec<i64> = clicks.iter().map(|c| ms(c)).collect();
    CompensationRow {
        timestamp: ts[0] + 300_000,
        advertiser_id: adv.into(),
        campaign_id: campaign.into(),
        ad_id: ad.into(),
        device_id: device.into(),
        duplicate_click_count: ts.len() as i64,
        refund_amount: refund,
        original_click_timestamps: ts,
        detection_window: "5_MINUTES".into(),
        reason: "DUPLICATE_CLICK_DETECTED".into(),
        compensation_type: "BALANCE_REFUND".into(),
    }
}

/// A dead letter's payload is the record as read (or the same JSON value).
fn same_payload(payload: &str, line: &str) -> bool {
    payload.trim() == line.trim()
        || matches!(
            (serde_json::from_str::<Value>(payload), serde_json::from_str::<Value>(line)),
            (Ok(a), Ok(b)) if a == b
        )
}

// ---------------------------------------------------------------------------------------------------------
// Units of the oracle itself (independent of the binary).

/// Kafka's own test vectors for `Utils.murmur2` (clients/src/test/.../UtilsTest.java).
#[test]
fn murmur2_matches_kafka_test_vectors() {
    use support::murmur2::murmur2;
    for (key, want) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        ("abc", 479_470_107),
    ] {
        assert_eq!(murmur2(key.as_bytes()), want, "murmur2({key})");
    }
}

/// device_12345 → murmur2 −1118536418 → & 0x7fffffff = 1028947230 → % 8 = 6 (cross-checked with an independent
/// Python port of Kafka's Java code).
#[test]
fn partition_of_spec_device_is_6_of_8() {
    assert_eq!(support::murmur2::partition("device_12345", 8), 6);
}

#[test]
fn timestamps_parse_only_rfc3339_utc_and_format_with_millis() {
    use support::timefmt::{fmt_ms, local_day, zone};
    // 2024-01-15 = 19 737 days after 1970-01-01 (2024-01-01 = 19 723); + 10:30:15 = 37 815 s.
    assert_eq!(parse_utc("2024-01-15T10:30:15Z"), Some(1_705_314_615_000));
    assert_eq!(parse_utc("2024-01-15T10:30:15.250Z"), Some(1_705_314_615_250));
    assert_eq!(parse_utc("2024-01-15T19:30:15+09:00"), None, "not UTC");
    assert_eq!(parse_utc("2024-01-15 10:30:15"), None, "no offset");
    assert_eq!(fmt_ms(1_705_314_615_000), "2024-01-15T10:30:15.000Z");
    // 2024-01-15T15:00:00Z is midnight of 2024-01-16 in Seoul (UTC+9) and still 2024-01-15 in UTC.
    assert_eq!(local_day(ms("2024-01-15T15:00:00Z"), zone("Asia/Seoul")), "2024-01-16");
    assert_eq!(local_day(ms("2024-01-15T14:59:59.999Z"), zone("Asia/Seoul")), "2024-01-15");
    assert_eq!(local_day(ms("2024-01-15T15:00:00Z"), zone("UTC")), "2024-01-15");
    assert_eq!(local_day(ms("2024-01-15T15:00:00Z"), zone("Not/AZone")), "2024-01-16", "unknown zone = Seoul");
}

#[test]
fn gsp_cpc_by_hand() {
    use batch_model::gsp_cpc;
    // next score 210.909.. / own pCTR 0.23636.. = 892.3 → ceil 893 + 10 = 903 < bid 1000.
    assert_eq!(gsp_cpc(1000, 26.0 / 110.0, Some(23_200.0 / 110.0)), 903);
    // capped by the bid; never below the reserve; the last pays the reserve, never above its bid.
    assert_eq!(gsp_cpc(700, 0.25, Some(175.0)), 700);
    assert_eq!(gsp_cpc(5000, 0.5, Some(10.0)), 100);
    assert_eq!(gsp_cpc(800, 0.3, None), 100);
    assert_eq!(gsp_cpc(90, 0.3, None), 90);
}
