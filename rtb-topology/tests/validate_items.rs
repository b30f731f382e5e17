//! Validation errors about the file, topics, sinks and operators: the exact variant, a message naming
//! the offending item, and (for files) the line it was written on. Each case edits one line of the
//! shipped CPC topology, so everything else in the file is known to be valid.

mod common;

use common::{check, cpc_with, invalid, line_of};
use rtb_topology::{
    Error, OperatorSpec, SinkSpec, TopicSpec, Topology, CPC_TOPOLOGY_TOML,
};
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
fn unknown_operator_kind_names_it_and_the_registered_kinds() {
    // Kinds are registered names now (not a closed enum of the file format): an unknown one is a
    // validation error, still on its line.
    let text = cpc_with("kind = \"balance\"", "kind = \"balanse\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownKind { operator, kind, .. } if operator == "balance" && kind == "balanse"),
        "{err:?}"
    );
    check(&err, line_of(&text, "balanse"), &["`balanse`", "balance, budget-monitor"]);
}

#[test]
fn unknown_schema_names_it_and_the_registered_schemas() {
    let text = cpc_with("schema = \"conversion-events\"", "schema = \"orders\"");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownSchema { topic, schema, .. } if topic == "conversion-events" && schema == "orders"),
        "{err:?}"
    );
    check(&err, line_of(&text, "schema = \"orders\""), &["`orders`", "ad-events, campaign-events"]);
}

#[test]
fn unknown_sink_kind_names_it() {
    let text = cpc_with("kind = \"cache\"\nbackend", "kind = \"kv\"\nbackend");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::UnknownSinkKind { sink, kind, .. } if sink == "cache" && kind == "kv"),
        "{err:?}"
    );
    check(&err, line_of(&text, "kind = \"kv\""), &["`kv`", "cache, database"]);
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
fn a_redis_cache_needs_a_url() {
    let text = cpc_with(
        "kind = \"cache\"\nbackend = \"embedded\"",
        "kind = \"cache\"\nbackend = \"redis\" # redis",
    );
    let err = invalid(&text);
    assert!(matches!(&err, Error::InvalidSink { sink, .. } if sink == "cache"), "{err:?}");
    assert!(err.to_string().contains("needs a `url`"), "{err}");
    assert!(err.is_invalid_topology());
    let ok = cpc_with(
        "kind = \"cache\"\nbackend = \"embedded\"",
        "kind = \"cache\"\nbackend = \"redis\"\nurl = \"redis://cache:6379/0?prefix=prod:\"",
    );
    Topology::from_toml_str(&ok).expect("a redis cache with a url is valid");
}

#[test]
fn a_postgres_database_takes_a_url_not_a_path() {
    let ok = cpc_with(
        "kind = \"database\"\nbackend = \"embedded\"",
        "kind = \"database\"\nbackend = \"postgres\"\nurl = \"postgres://db/rtb?schema=rtb_prod\"",
    );
    Topology::from_toml_str(&ok).expect("a postgres database with a url is valid");
    let text = cpc_with(
        "kind = \"database\"\nbackend = \"embedded\"",
        "kind = \"database\"\nbackend = \"postgres\"\nurl = \"postgres://db/rtb\"\npath = \"db\"",
    );
    let err = invalid(&text);
    check(&err, line_of(&text, "path = \"db\""), &["`database`", "`path` does not apply to the postgres backend"]);
    let text = cpc_with(
        "kind = \"database\"\nbackend = \"embedded\"",
        "kind = \"database\"\nbackend = \"postgres\"\nurl = \"postgres://db/rtb?schema=Not-A-Schema\"",
    );
    let err = invalid(&text);
    check(&err, line_of(&text, "url = \"postgres://db/rtb?schema=Not-A-Schema\""), &["`database`", "PostgreSQL schema"]);
}

#[test]
fn redis_cannot_serve_a_database() {
    // Backends are registered per sink kind: no `redis` backend serves a database, and the error lists
    // the ones that do.
    let text = cpc_with(
        "kind = \"database\"\nbackend = \"embedded\"",
        "kind = \"database\"\nbackend = \"redis\"",
    );
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::BackendUnavailable { sink, kind, .. } if sink == "database" && &**kind == "database"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "backend = \"redis\""),
        &["`database`", "`redis` is not available for sink kind `database`", "[embedded, memory, postgres]"],
    );
}

#[test]
fn url_on_an_embedded_sink_is_rejected() {
    let text = cpc_with(
        "kind = \"cache\"\nbackend = \"embedded\"",
        "kind = \"cache\"\nbackend = \"embedded\"\nurl = \"redis://x\"",
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
        .topic(TopicSpec::new("ad-events", "ad-events", 8).key("device_id"))
        .topic(TopicSpec::new(
            "refunds",
            "compensation-events",
            8,
        ))
        .operator(
            OperatorSpec::new(
                "dedup",
                "duplicate-detection",
                "conversion-matcher",
            )
            .input("ad-events")
            .key("device_id")
            .output("refunds"),
        )
        .operator(
            OperatorSpec::new("balance", "balance", "conversion-matcher")
                .input("ad-events")
                .sink("db"),
        )
        .sink(SinkSpec::new("db", "database"))
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
        matches!(&err, Error::WrongInputs { operator, expected, .. } if operator == "conversion-matching" && &**expected == "[conversion-events, ad-events]"),
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
        matches!(&err, Error::WrongOutputs { operator, found, .. } if operator == "duplicate-detection" && &**found == "none"),
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
fn performance_without_its_cache_has_wrong_sinks() {
    // Performance writes metrics to its cache and reads campaigns from its database (to recompute
    // rankings): each operator gets only the sinks it declares, so both must be declared.
    let text = cpc_with(
        "key = \"campaign_id\"\nsinks = [\"cache\", \"database\"]",
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
        &["`performance`", "one cache sink and one database sink", "[database (database)]"],
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
        matches!(&err, Error::WrongKey { operator, key, .. } if operator == "performance" && &**key == "device_id"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "key = \"device_id\"\nsinks = [\"cache\", \"database\"]     # metrics"),
        &["`performance`", "device_id", "[campaign_id]"],
    );
}

#[test]
fn statement_without_key_has_wrong_key() {
    let text = cpc_with("key = [\"placement\", \"category\"]\nsinks", "sinks");
    let err = invalid(&text);
    assert!(
        matches!(&err, Error::WrongKey { operator, key, .. } if operator == "ranking" && &**key == "none"),
        "{err:?}"
    );
    check(
        &err,
        line_of(&text, "id = \"ranking\"") - 1,
        &["`ranking`", "a key is required"],
    );
}
