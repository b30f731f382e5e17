//! Validation errors about co-partitioning, repartitions and settings, and errors of builder-made
//! topologies (no location). Same method as `validate_items.rs`: one edit of the shipped CPC topology.

mod common;

use common::{check, cpc_with, invalid, line_of};
use rtb_topology::{
    Error, OperatorSpec, RepartitionSpec, SinkSpec, TopicSpec, Topology,
};
// ------------------------------------------------------------------ co-partitioning and repartitions

#[test]
fn conversion_join_without_repartition_is_not_co_partitioned() {
    let text = cpc_with(
        "repartition = [{ input = \"conversion-events\", by = \"device_id\" }]\n",
        "",
    );
    let err = invalid(&text);
    match &err {
        Error::NotCoPartitioned {
            operator, detail, ..
        } => {
            assert_eq!(operator, "conversion-matching");
            assert_eq!(detail, "conversion-events has 4 partitions, ad-events 8");
        }
        other => panic!("expected NotCoPartitioned, got {other:?}"),
    }
    check(
        &err,
        line_of(&text, "inputs = [\"conversion-events\", \"ad-events\"]"),
        &[
            "`conversion-matching`",
            "conversion-events has 4 partitions, ad-events 8",
        ],
    );
}

#[test]
fn conversion_join_is_valid_without_repartition_when_partition_counts_match() {
    let text = cpc_with(
        "repartition = [{ input = \"conversion-events\", by = \"device_id\" }]\n",
        "",
    )
    .replacen(
        "schema = \"conversion-events\"\npartitions = 4",
        "schema = \"conversion-events\"\npartitions = 8",
        1,
    );
    let plan = Topology::from_toml_str(&text)
        .and_then(|t| t.plan())
        .expect("co-partitioned");
    assert_eq!(
        plan.stage("conversion-matching").map(|s| s.inputs.clone()),
        Some(vec!["conversion-events".to_owned(), "ad-events".to_owned()])
    );
    assert!(plan
        .topic("conversion-matcher-conversion-events-repartition")
        .is_none());
}

#[test]
fn performance_without_repartition_is_not_keyed_by_campaign() {
    let text = cpc_with(
        "repartition = [{ input = \"ad-events\", by = \"campaign_id\" }]\n",
        "",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::NotCoPartitioned { operator, detail, .. } if operator == "performance" && detail == "ad-events is keyed by device_id, the operator by campaign_id"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "inputs = [\"ad-events\"]\nkey = \"campaign_id\""),
        &["`performance`"],
    );
}

#[test]
fn inputs_with_equal_partitions_but_different_keys_are_not_co_partitioned() {
    let t = Topology::builder()
        .topic(TopicSpec::new("conv", "conversion-events", 8).key("product_id"))
        .topic(TopicSpec::new("ads", "ad-events", 8).key("device_id"))
        .operator(
            OperatorSpec::new("m", "conversion-matching", "g")
                .input("conv")
                .input("ads")
                .key(["device_id", "product_id"])
                .sink("db"),
        )
        .sink(SinkSpec::new("db", "database"))
        .build_unvalidated();
    let err = t.validate().expect_err("keys differ");
    assert!(
        matches!(&err, Error::NotCoPartitioned { detail, at: None, .. } if detail == "conv is keyed by product_id, ads by device_id"),
        "{err:?}"
    );
    // Repartitioning one side by the other's key fixes it.
    let fixed = Topology {
        operators: vec![t.operators[0]
            .clone()
            .repartition(RepartitionSpec::of("conv").by("device_id"))],
        ..t
    };
    let plan = fixed.plan().expect("valid with repartition");
    assert_eq!(
        plan.stage("g-conv-repartition")
            .and_then(|s| s.repartition.as_ref())
            .map(|r| r.reason.clone())
            .as_deref(),
        Some("not co-partitioned: conv is keyed by product_id, not by device_id")
    );
}

#[test]
fn unkeyed_input_topic_is_not_co_partitioned_for_a_keyed_operator() {
    let text = cpc_with(
        "key = [\"placement\", \"category\"]   # matches",
        "# no key",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::NotCoPartitioned { operator, detail, .. } if operator == "ranking" && detail.contains("campaign-events is not keyed")),
        "{err:?}"
    );
}

#[test]
fn repartition_of_a_topic_that_is_not_an_input() {
    let text = cpc_with(
        "input = \"ad-events\", by = \"campaign_id\"",
        "input = \"conversion-events\", by = \"campaign_id\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidRepartition { operator, input, .. } if operator == "performance" && input == "conversion-events"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "input = \"conversion-events\", by = \"campaign_id\""),
        &["`performance`", "`conversion-events`", "not an input"],
    );
}

#[test]
fn repartition_of_an_undeclared_topic_is_an_unknown_topic() {
    let text = cpc_with(
        "input = \"ad-events\", by = \"campaign_id\"",
        "input = \"clicks\", by = \"campaign_id\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownTopic { topic, role: "repartition input", .. } if topic == "clicks"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "\"clicks\""),
        &["`clicks`", "`performance`"],
    );
}

#[test]
fn repartition_by_a_field_outside_the_operator_key() {
    let text = cpc_with(
        "input = \"conversion-events\", by = \"device_id\"",
        "input = \"conversion-events\", by = \"order_id\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidRepartition { input, .. } if input == "conversion-events"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "by = \"order_id\""),
        &["`conversion-matching`", "order_id"],
    );
}

#[test]
fn repartition_declared_twice() {
    let text = cpc_with(
        "repartition = [{ input = \"conversion-events\", by = \"device_id\" }]",
        "repartition = [{ input = \"conversion-events\" },\n  { input = \"conversion-events\" }]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidRepartition { reason, .. } if reason.contains("twice")),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "  { input = \"conversion-events\" }]"),
        &["`conversion-events`"],
    );
}

#[test]
fn repartition_to_zero_partitions() {
    let text = cpc_with(
        "by = \"device_id\" }]",
        "by = \"device_id\", partitions = 0 }]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidRepartition { reason, .. } if reason.contains("at least 1")),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "partitions = 0 }"),
        &["`conversion-matching`"],
    );
}

#[test]
fn repartition_to_a_count_that_still_differs_is_not_co_partitioned() {
    let text = cpc_with(
        "by = \"device_id\" }]",
        "by = \"device_id\", partitions = 6 }]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::NotCoPartitioned { detail, .. } if detail == "conversion-matcher-conversion-events-repartition has 6 partitions, ad-events 8"),
        "{err:?}"
    );
}

#[test]
fn repartition_on_an_unkeyed_worker_is_invalid() {
    let text = cpc_with("inputs = [\"ad-events\"]\nsinks = [\"database\"]", "inputs = [\"ad-events\"]\nsinks = [\"database\"]\nrepartition = [{ input = \"ad-events\" }]");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidRepartition { operator, reason, .. } if operator == "balance" && reason.contains("no `key`")),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "repartition = [{ input = \"ad-events\" }]"),
        &["`balance`"],
    );
}

#[test]
fn repartition_topic_clashing_with_a_declared_topic_is_a_duplicate_topic() {
    let clash = "performance-aggregator-ad-events-repartition";
    let text = cpc_with(
        "name = \"compensation-events\"",
        &format!("name = \"{clash}\""),
    )
    .replace(
        "inputs = [\"compensation-events\"]",
        &format!("inputs = [\"{clash}\"]"),
    )
    .replace(
        "outputs = [\"compensation-events\"]",
        &format!("outputs = [\"{clash}\"]"),
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::DuplicateTopic { topic, .. } if topic == "performance-aggregator-ad-events-repartition"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "repartition = [{ input = \"ad-events\""),
        &["`performance-aggregator-ad-events-repartition`"],
    );
}

#[test]
fn explicit_repartition_partitions_are_used() {
    let text = cpc_with(
        "by = \"campaign_id\" }]",
        "by = \"campaign_id\", partitions = 16 }]",
    );
    let plan = Topology::from_toml_str(&text)
        .and_then(|t| t.plan())
        .expect("valid");
    assert_eq!(
        plan.topic("performance-aggregator-ad-events-repartition")
            .map(|t| t.partitions),
        Some(16)
    );
    assert_eq!(plan.stage("performance").map(|s| s.partitions), Some(16));
    assert_eq!(
        plan.stage("performance-aggregator-ad-events-repartition")
            .map(|s| s.partitions),
        Some(8)
    );
}

// ------------------------------------------------------------------ settings

#[test]
fn window_on_a_worker_is_an_invalid_setting() {
    let text = cpc_with(
        "inputs = [\"ad-events\"]\nsinks = [\"database\"]",
        "inputs = [\"ad-events\"]\nsinks = [\"database\"]\nsettings = { window = \"1m\" }",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { operator, setting, .. } if operator == "balance" && setting == "window"),
        "{err:?}"
    );
    // The balance kind takes no settings: `window` is an unknown field of it.
    check(
        &err,
        line_of(&text, "settings = { window = \"1m\" }"),
        &["`balance`", "`window`", "unknown field"],
    );
}

#[test]
fn zero_window_is_an_invalid_setting() {
    let text = cpc_with("window = \"24h\"", "window = \"0s\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { setting, operator, .. } if operator == "conversion-matching" && setting == "window"),
        "{err:?}"
    );
    check(&err, line_of(&text, "window = \"0s\""), &["greater than 0"]);
}

#[test]
fn max_lateness_without_correct_policy_is_an_invalid_setting() {
    let text = cpc_with(
        "late_policy = \"correct\", max_lateness = \"24h\"",
        "late_policy = \"side-output\", max_lateness = \"24h\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { setting, .. } if setting == "max_lateness"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "late_policy = \"side-output\", max_lateness"),
        &["`performance`", "correct"],
    );
}

#[test]
fn performance_refuses_to_drop_late_events() {
    let text = cpc_with("late_policy = \"correct\", max_lateness = \"24h\"", "late_policy = \"drop\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { operator, setting, .. } if operator == "performance" && setting == "late_policy"),
        "{err:?}"
    );
    check(&err, line_of(&text, "late_policy = \"drop\""), &["`performance`", "never silently lost"]);
}

#[test]
fn late_policy_is_not_a_setting_of_kinds_that_cannot_honour_it() {
    // Conversion matching and duplicate detection send late records to the late-events output, always:
    // a late_policy there would be decoration, so it is an unknown field.
    let text = cpc_with("settings = { window = \"24h\" }", "settings = { window = \"24h\", late_policy = \"side-output\" }");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { operator, setting, .. } if operator == "conversion-matching" && setting == "late_policy"),
        "{err:?}"
    );
    check(&err, line_of(&text, "late_policy = \"side-output\""), &["unknown field `late_policy`"]);
}

#[test]
fn misspelt_ranking_setting_is_rejected_on_its_line() {
    let text = cpc_with("settings = { prior_strength = 100,", "settings = { prior_strenght = 100,");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { operator, setting, .. } if operator == "ranking" && setting == "prior_strenght"),
        "{err:?}"
    );
    check(&err, line_of(&text, "prior_strenght"), &["`ranking`", "unknown field `prior_strenght`", "prior_strength"]);
}

#[test]
fn out_of_range_operator_settings_are_rejected() {
    for (from, to, setting) in [
        ("default_prior_ctr = 0.01", "default_prior_ctr = 1.5", "default_prior_ctr"),
        ("reserve_price = 100", "reserve_price = -1", "reserve_price"),
        ("pause_at_pct = 100", "pause_at_pct = 0", "pause_at_pct"),
        ("default_time_zone = \"Asia/Seoul\"", "default_time_zone = \"Asia/Nowhere\"", "default_time_zone"),
        ("alert_thresholds_pct = [80, 100]", "alert_thresholds_pct = \"80\"", "alert_thresholds_pct"),
    ] {
        let text = cpc_with(from, to);
        let err = invalid(&text);
        assert!(
            matches!(&err, Error::InvalidSetting { setting: s, .. } if s == setting),
            "{to}: {err:?}"
        );
        check(&err, line_of(&text, to), &[setting]);
    }
}

#[test]
fn zero_idle_timeout_is_an_invalid_setting() {
    let t = Topology::cpc_default().expect("valid");
    let mut ops = t.operators.clone();
    ops[4] = ops[4].clone().idle_timeout(rtb_topology::Millis::ZERO);
    let err = Topology {
        operators: ops,
        ..t
    }
    .validate()
    .expect_err("invalid");
    assert!(
        matches!(&err, Error::InvalidSetting { setting, operator, at: None, .. } if operator == "balance" && setting == "idle_timeout"),
        "{err:?}"
    );
}

#[test]
fn zero_commit_interval_is_an_invalid_runtime_setting() {
    let text = cpc_with("commit_interval = \"200ms\"", "commit_interval = \"0ms\"");
    let err = invalid(&text);
    assert!(
        matches!(
            &err,
            Error::InvalidRuntime {
                setting: "commit_interval",
                ..
            }
        ),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "commit_interval"),
        &["`commit_interval`"],
    );
}

#[test]
fn zero_max_poll_records_is_an_invalid_runtime_setting() {
    let text = cpc_with("max_poll_records = 1024", "max_poll_records = 0");
    let err = invalid(&text);
    assert!(
        matches!(
            &err,
            Error::InvalidRuntime {
                setting: "max_poll_records",
                ..
            }
        ),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "max_poll_records"),
        &["`max_poll_records`"],
    );
}

// ------------------------------------------------------------------ builder topologies have no locations

#[test]
fn builder_errors_name_the_item_without_a_location() {
    let err = Topology::builder()
        .topic(TopicSpec::new("ad-events", "ad-events", 8).key("device_id"))
        .operator(
            OperatorSpec::new("balance", "balance", "g")
                .input("ad-evnts")
                .sink("db"),
        )
        .sink(SinkSpec::new("db", "database"))
        .build()
        .expect_err("unknown topic");
    assert!(
        matches!(&err, Error::UnknownTopic { topic, operator, at: None, .. } if topic == "ad-evnts" && operator == "balance"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "unknown topic `ad-evnts` (input of operator `balance`)"
    );
}

#[test]
fn repartition_group_clashing_with_a_declared_group_is_rejected() {
    // The performance repartition stage runs as group `performance-aggregator-ad-events-repartition`:
    // a declared operator with that group would share its offsets and state.
    let text = cpc_with(
        "group = \"balance-processor\"",
        "group = \"performance-aggregator-ad-events-repartition\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidRepartition { operator, input, .. } if operator == "performance" && input == "ad-events"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "repartition = [{ input = \"ad-events\""),
        &["`performance`", "is also a consumer group"],
    );
}
