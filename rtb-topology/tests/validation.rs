//! Every validation error: the exact variant, a message naming the offending item, and (for files) the
//! line it was written on. Each case edits one line of the shipped CPC topology, so everything else in
//! the file is known to be valid.

use rtb_topology::{
    Error, EventSchema, OperatorKind, OperatorSpec, RepartitionSpec, SinkKind, SinkSpec, TopicSpec,
    Topology, CPC_TOPOLOGY_TOML,
};

/// The CPC file with exactly one occurrence of `from` replaced by `to`.
fn cpc_with(from: &str, to: &str) -> String {
    assert_eq!(
        CPC_TOPOLOGY_TOML.matches(from).count(),
        1,
        "`{from}` must occur exactly once"
    );
    CPC_TOPOLOGY_TOML.replacen(from, to, 1)
}

/// 1-based line where the only occurrence of `needle` (which may span lines) starts.
fn line_of(text: &str, needle: &str) -> u32 {
    assert_eq!(
        text.matches(needle).count(),
        1,
        "`{needle}` must occur exactly once"
    );
    let start = text.find(needle).unwrap_or(0);
    u32::try_from(text[..start].matches('\n').count() + 1).unwrap_or(u32::MAX)
}

fn invalid(text: &str) -> Error {
    Topology::from_toml_str(text).expect_err("topology must be rejected")
}

/// Asserts the error's line and that its message names every item in `names`.
fn check(err: &Error, line: u32, names: &[&str]) {
    let at = err
        .location()
        .unwrap_or_else(|| panic!("no location in {err:?}"));
    assert_eq!(at.line, line, "wrong line for: {err}");
    let msg = err.to_string();
    for n in names {
        assert!(msg.contains(n), "message `{msg}` does not name `{n}`");
    }
    assert!(
        msg.contains(&format!("line {line}")),
        "message `{msg}` does not give the line"
    );
    assert!(err.is_invalid_topology());
}

#[test]
fn shipped_topology_is_valid() {
    Topology::from_toml_str(CPC_TOPOLOGY_TOML).expect("valid");
}

// ------------------------------------------------------------------ file format

#[test]
fn unknown_field_is_a_parse_error_on_its_line() {
    let text = cpc_with("partitions = 8\n", "partitions = 8\ncolour = \"red\"\n");
    let err = invalid(&text);
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    check(&err, line_of(&text, "colour"), &["unknown field `colour`"]);
}

#[test]
fn unknown_operator_kind_is_a_parse_error_naming_it() {
    let text = cpc_with("kind = \"balance\"", "kind = \"balanse\"");
    let err = invalid(&text);
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    check(&err, line_of(&text, "balanse"), &["balanse"]);
}

#[test]
fn malformed_duration_is_a_parse_error_naming_the_unit() {
    let text = cpc_with(
        "retention = \"3d\"\nkey = \"advertiser_id\"",
        "retention = \"3w\"\nkey = \"advertiser_id\"",
    );
    let err = invalid(&text);
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    check(&err, line_of(&text, "3w"), &["unknown unit `w`"]);
}

#[test]
fn toml_syntax_error_has_its_line() {
    let text = cpc_with("partitions = 8\n", "partitions = = 8\n");
    let err = invalid(&text);
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    check(&err, line_of(&text, "= = 8"), &[]);
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let err = Topology::from_file("/nonexistent/topology.toml").expect_err("missing");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/topology.toml"),
        "{err}"
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, cpc_with("partitions = 8\n", "partitions = 0\n")).expect("write");
    let err = Topology::from_file(&path).expect_err("invalid");
    assert!(matches!(err, Error::ZeroPartitions { .. }), "{err:?}");
    assert_eq!(
        err.location().and_then(|l| l.path.as_deref()),
        Some(path.as_path())
    );
    assert!(err.to_string().contains("bad.toml"), "{err}");
}

// ------------------------------------------------------------------ topics and sinks

#[test]
fn zero_partitions_names_the_topic() {
    let text = cpc_with("partitions = 8\n", "partitions = 0\n");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::ZeroPartitions { topic, .. } if topic == "ad-events"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "partitions = 0"),
        &["`ad-events`", "0 partitions"],
    );
}

#[test]
fn duplicate_topic_points_at_the_second_declaration() {
    let text = cpc_with(
        "name = \"compensation-events\"",
        "name = \"conversion-events\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::DuplicateTopic { topic, .. } if topic == "conversion-events"),
        "{err:?}"
    );
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"conversion-events\""))
        .map(|(i, _)| i as u32 + 1)
        .last();
    check(&err, second.unwrap_or(0), &["`conversion-events`"]);
}

#[test]
fn topic_name_with_a_space_is_an_invalid_name() {
    let text = cpc_with("name = \"ad-events\"", "name = \"ad events\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidName { what: "topic", name, .. } if name == "ad events"),
        "{err:?}"
    );
    check(&err, line_of(&text, "\"ad events\""), &["`ad events`"]);
}

#[test]
fn duplicate_sink_names_it() {
    let text = cpc_with("name = \"database\"", "name = \"cache\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::DuplicateSink { sink, .. } if sink == "cache"),
        "{err:?}"
    );
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"cache\""))
        .map(|(i, _)| i as u32 + 1)
        .last();
    check(&err, second.unwrap_or(0), &["`cache`"]);
}

#[test]
fn redis_cache_is_not_available_in_this_build() {
    let text = cpc_with(
        "backend = \"embedded\"              # redis: reserved for the real-services build",
        "backend = \"redis\" # redis",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::BackendUnavailable { sink, backend, .. } if sink == "cache" && backend == "redis"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "backend = \"redis\""),
        &["`cache`", "`redis`", "not available in this build"],
    );
}

#[test]
fn postgres_database_is_not_available_in_this_build() {
    let text = cpc_with(
        "backend = \"embedded\"              # postgres: reserved for the real-services build",
        "backend = \"postgres\"\nurl = \"postgres://db/rtb\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::BackendUnavailable { backend, .. } if backend == "postgres"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "backend = \"postgres\""),
        &["`database`", "not available in this build"],
    );
}

#[test]
fn redis_cannot_serve_a_database() {
    let text = cpc_with(
        "backend = \"embedded\"              # postgres: reserved for the real-services build",
        "backend = \"redis\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSink { sink, .. } if sink == "database"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "backend = \"redis\""),
        &["`database`", "`redis` cannot serve a database sink"],
    );
}

#[test]
fn url_on_an_embedded_sink_is_rejected() {
    let text = cpc_with(
        "backend = \"embedded\"              # redis: reserved for the real-services build",
        "url = \"redis://x\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSink { sink, .. } if sink == "cache"),
        "{err:?}"
    );
    check(&err, line_of(&text, "redis://x"), &["`cache`", "`url`"]);
}

// ------------------------------------------------------------------ operators: names, groups, kinds

#[test]
fn duplicate_operator_id_points_at_the_second() {
    let text = cpc_with("id = \"budget-monitor\"", "id = \"balance\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::DuplicateOperatorId { id, .. } if id == "balance"),
        "{err:?}"
    );
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("id = \"balance\""))
        .map(|(i, _)| i as u32 + 1)
        .last();
    check(&err, second.unwrap_or(0), &["`balance`"]);
}

#[test]
fn duplicate_consumer_group_names_both_operators() {
    let text = cpc_with(
        "group = \"budget-monitor\"",
        "group = \"balance-processor\"",
    );
    let err = invalid(&text);
    match &err {
        Error::DuplicateGroup {
            group,
            first,
            second,
            ..
        } => {
            assert_eq!(
                (group.as_str(), first.as_str(), second.as_str()),
                ("balance-processor", "balance", "budget-monitor")
            );
        }
        other => panic!("expected DuplicateGroup, got {other:?}"),
    }
    check(
        &err,
        line_of(&text, "id = \"budget-monitor\"") + 2,
        &["`balance-processor`", "`balance`", "`budget-monitor`"],
    );
}

#[test]
fn conversion_matcher_split_into_two_operators_of_one_group_is_a_duplicate_group() {
    // The legitimate shape is one operator with two inputs; two operators sharing the group are not.
    let t = Topology::builder()
        .topic(TopicSpec::new("ad-events", EventSchema::AdEvents, 8).key("device_id"))
        .topic(TopicSpec::new(
            "refunds",
            EventSchema::CompensationEvents,
            8,
        ))
        .operator(
            OperatorSpec::new(
                "dedup",
                OperatorKind::DuplicateDetection,
                "conversion-matcher",
            )
            .input("ad-events")
            .key("device_id")
            .output("refunds"),
        )
        .operator(
            OperatorSpec::new("balance", OperatorKind::Balance, "conversion-matcher")
                .input("ad-events")
                .sink("db"),
        )
        .sink(SinkSpec::new("db", SinkKind::Database))
        .build_unvalidated();
    let err = t.validate().expect_err("shared group");
    assert!(
        matches!(&err, Error::DuplicateGroup { group, first, second, at: None } if group == "conversion-matcher" && first == "dedup" && second == "balance"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`conversion-matcher`"), "{err}");
}

#[test]
fn declared_repartition_kind_is_internal() {
    let text = cpc_with("kind = \"balance\"", "kind = \"repartition\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InternalKind { operator, .. } if operator == "balance"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "kind = \"repartition\""),
        &["`balance`", "internal"],
    );
}

// ------------------------------------------------------------------ operators: topics and sinks they name

#[test]
fn unknown_input_topic_names_topic_operator_and_line() {
    let text = cpc_with(
        "inputs = [\"compensation-events\"]",
        "inputs = [\"compensation-evnts\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownTopic { topic, operator, role: "input", .. } if topic == "compensation-evnts" && operator == "compensation"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "compensation-evnts"),
        &["`compensation-evnts`", "`compensation`"],
    );
}

#[test]
fn unknown_output_topic_is_reported_as_output() {
    let text = cpc_with(
        "outputs = [\"campaign-events\"]",
        "outputs = [\"campaign-event\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownTopic { role: "output", operator, .. } if operator == "budget-monitor"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "\"campaign-event\"]"),
        &["`campaign-event`", "output"],
    );
}

#[test]
fn second_of_two_inputs_unknown_points_at_that_input() {
    let text = cpc_with(
        "inputs = [\"conversion-events\", \"ad-events\"]",
        "inputs = [\"conversion-events\",\n  \"ad-evnts\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownTopic { topic, .. } if topic == "ad-evnts"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "\"ad-evnts\""),
        &["`ad-evnts`", "`conversion-matching`"],
    );
    assert_eq!(err.location().map(|l| l.column), Some(3));
}

#[test]
fn unknown_sink_names_sink_and_operator() {
    let text = cpc_with(
        "inputs = [\"ad-events\"]\nsinks = [\"database\"]",
        "inputs = [\"ad-events\"]\nsinks = [\"ledger\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownSink { sink, operator, .. } if sink == "ledger" && operator == "balance"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "\"ledger\""),
        &["`ledger`", "`balance`"],
    );
}

// ------------------------------------------------------------------ operators: fit to their kind

#[test]
fn ranking_with_two_inputs_has_wrong_inputs() {
    let text = cpc_with(
        "inputs = [\"campaign-events\"]",
        "inputs = [\"campaign-events\", \"ad-events\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongInputs { operator, .. } if operator == "ranking"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "inputs = [\"campaign-events\", \"ad-events\"]"),
        &[
            "`ranking`",
            "[campaign-events]",
            "[campaign-events, ad-events]",
        ],
    );
}

#[test]
fn conversion_matching_inputs_in_the_wrong_order_are_wrong_inputs() {
    let text = cpc_with(
        "inputs = [\"conversion-events\", \"ad-events\"]",
        "inputs = [\"ad-events\", \"conversion-events\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongInputs { operator, expected, .. } if operator == "conversion-matching" && expected == "[conversion-events, ad-events]"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "inputs = [\"ad-events\", \"conversion-events\"]"),
        &["`conversion-matching`"],
    );
}

#[test]
fn worker_reading_a_topic_of_the_wrong_schema_has_wrong_inputs() {
    let text = cpc_with(
        "inputs = [\"compensation-events\"]",
        "inputs = [\"campaign-events\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongInputs { operator, .. } if operator == "compensation"),
        "{err:?}"
    );
    check(
        &err,
        line_of(
            &text,
            "inputs = [\"campaign-events\"]\nsinks = [\"cache\", \"database\"]     # refund",
        ),
        &["[compensation-events]", "[campaign-events]"],
    );
}

#[test]
fn duplicate_detection_without_output_has_wrong_outputs() {
    let text = cpc_with("outputs = [\"compensation-events\"]\n", "");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongOutputs { operator, found, .. } if operator == "duplicate-detection" && found == "none"),
        "{err:?}"
    );
    // No `outputs` line any more: the error points at the operator.
    let op_line = line_of(&text, "id = \"duplicate-detection\"") - 1;
    check(
        &err,
        op_line,
        &["`duplicate-detection`", "[compensation-events]"],
    );
}

#[test]
fn worker_producing_to_a_topic_has_wrong_outputs() {
    let text = cpc_with(
        "inputs = [\"ad-events\"]\nsinks = [\"database\"]",
        "inputs = [\"ad-events\"]\noutputs = [\"compensation-events\"]\nsinks = [\"database\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongOutputs { operator, .. } if operator == "balance"),
        "{err:?}"
    );
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("outputs = [\"compensation-events\"]"))
        .map(|(i, _)| i as u32 + 1)
        .last();
    check(&err, line.unwrap_or(0), &["`balance`", "no topic"]);
}

#[test]
fn performance_writing_the_database_has_wrong_sinks() {
    let text = cpc_with(
        "key = \"campaign_id\"\nsinks = [\"cache\"]",
        "key = \"campaign_id\"\nsinks = [\"database\"]",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongSinks { operator, .. } if operator == "performance"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "key = \"campaign_id\"\nsinks") + 1,
        &["`performance`", "one cache sink", "database (database)"],
    );
}

#[test]
fn budget_monitor_missing_its_cache_has_wrong_sinks() {
    let text = cpc_with(
        "sinks = [\"cache\", \"database\"]     # spend",
        "sinks = [\"database\"]     # spend",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongSinks { operator, .. } if operator == "budget-monitor"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "# spend"),
        &["one cache sink and one database sink"],
    );
}

#[test]
fn performance_keyed_by_device_has_wrong_key() {
    let text = cpc_with("key = \"campaign_id\"", "key = \"device_id\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongKey { operator, key, .. } if operator == "performance" && key == "device_id"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "key = \"device_id\"\nsinks = [\"cache\"]"),
        &["`performance`", "device_id", "[campaign_id]"],
    );
}

#[test]
fn statement_without_key_has_wrong_key() {
    let text = cpc_with("key = [\"placement\", \"category\"]\nsinks", "sinks");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongKey { operator, key, .. } if operator == "ranking" && key == "none"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "id = \"ranking\"") - 1,
        &["`ranking`", "a key is required"],
    );
}

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
        .topic(TopicSpec::new("conv", EventSchema::ConversionEvents, 8).key("product_id"))
        .topic(TopicSpec::new("ads", EventSchema::AdEvents, 8).key("device_id"))
        .operator(
            OperatorSpec::new("m", OperatorKind::ConversionMatching, "g")
                .input("conv")
                .input("ads")
                .key(["device_id", "product_id"])
                .sink("db"),
        )
        .sink(SinkSpec::new("db", SinkKind::Database))
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
        "inputs = [\"ad-events\"]\nsinks = [\"database\"]\nsettings = { window = \"5m\" }",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { operator, setting: "window", .. } if operator == "balance"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "settings = { window = \"5m\" }"),
        &["`balance`", "`window`", "no window"],
    );
}

#[test]
fn zero_window_is_an_invalid_setting() {
    let text = cpc_with("window = \"24h\"", "window = \"0s\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::InvalidSetting { setting: "window", operator, .. } if operator == "conversion-matching"),
        "{err:?}"
    );
    check(&err, line_of(&text, "window = \"0s\""), &["greater than 0"]);
}

#[test]
fn max_lateness_without_correct_policy_is_an_invalid_setting() {
    let text = cpc_with(
        "window = \"24h\", late_policy = \"side-output\"",
        "window = \"24h\", late_policy = \"side-output\", max_lateness = \"1h\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(
            &err,
            Error::InvalidSetting {
                setting: "max_lateness",
                ..
            }
        ),
        "{err:?}"
    );
    check(
        &err,
        line_of(
            &text,
            "max_lateness = \"1h\" }\n\n[[operator]]\nid = \"duplicate",
        ),
        &["`conversion-matching`", "correct"],
    );
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
        matches!(&err, Error::InvalidSetting { setting: "idle_timeout", operator, at: None, .. } if operator == "balance"),
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
        .topic(TopicSpec::new("ad-events", EventSchema::AdEvents, 8).key("device_id"))
        .operator(
            OperatorSpec::new("balance", OperatorKind::Balance, "g")
                .input("ad-evnts")
                .sink("db"),
        )
        .sink(SinkSpec::new("db", SinkKind::Database))
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
