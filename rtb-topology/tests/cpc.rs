//! The shipped CPC topology: the builder makes the same model as the file, the plan inserts the
//! repartitions SPEC §2 calls for, and `describe` shows them.

use rtb_topology::{
    DescribeFormat, Millis, OperatorSpec, RepartitionSpec, SinkSpec, TopicSpec, Topology,
    CPC_TOPOLOGY_TOML,
};

/// SPEC §1-2 written with the builder, independently of the file.
#[allow(non_upper_case_globals)]
fn cpc_built() -> Topology {
    const CampaignEvents: &str = "campaign-events";
    const AdEvents: &str = "ad-events";
    const ConversionEvents: &str = "conversion-events";
    const CompensationEvents: &str = "compensation-events";
    const Ranking: &str = "ranking";
    const Performance: &str = "performance";
    const ConversionMatching: &str = "conversion-matching";
    const DuplicateDetection: &str = "duplicate-detection";
    const Balance: &str = "balance";
    const BudgetMonitor: &str = "budget-monitor";
    const Compensation: &str = "compensation";
    Topology::builder()
        .data_dir("rtb-data")
        .commit_interval(Millis::ms(200))
        .topic(
            TopicSpec::new("campaign-events", CampaignEvents, 4)
                .retention(Millis::days(7))
                .key(["placement", "category"]),
        )
        .topic(
            TopicSpec::new("ad-events", AdEvents, 8)
                .retention(Millis::days(7))
                .key("device_id"),
        )
        .topic(
            TopicSpec::new("conversion-events", ConversionEvents, 4)
                .retention(Millis::days(3))
                .key("device_id"),
        )
        .topic(
            TopicSpec::new("compensation-events", CompensationEvents, 4)
                .retention(Millis::days(3))
                .key("advertiser_id"),
        )
        .operator(
            OperatorSpec::new("ranking", Ranking, "rtb-processor")
                .input("campaign-events")
                .key(["placement", "category"])
                .sink("cache")
                .sink("database")
                .setting("prior_strength", 100)
                .setting("default_prior_ctr", 0.01)
                .setting("reserve_price", 100)
                .setting("increment", 10),
        )
        .operator(
            OperatorSpec::new("performance", Performance, "performance-aggregator")
                .input("ad-events")
                .key("campaign_id")
                .sink("cache")
                .sink("database")
                .repartition(RepartitionSpec::of("ad-events").by("campaign_id"))
                .setting("window", Millis::minutes(5))
                .setting("grace", Millis::minutes(1))
                .setting("late_policy", "correct")
                .setting("max_lateness", "24h"),
        )
        .operator(
            OperatorSpec::new(
                "conversion-matching",
                ConversionMatching,
                "conversion-matcher",
            )
            .input("conversion-events")
            .input("ad-events")
            .key("device_id")
            .sink("database")
            .repartition(RepartitionSpec::of("conversion-events").by("device_id"))
            .setting("window", "24h"),
        )
        .operator(
            OperatorSpec::new(
                "duplicate-detection",
                DuplicateDetection,
                "duplicate-detector",
            )
            .input("ad-events")
            .key(["device_id", "ad_id"])
            .output("compensation-events")
            .setting("window", Millis::minutes(5)),
        )
        .operator(
            OperatorSpec::new("balance", Balance, "balance-processor")
                .input("ad-events")
                .sink("database"),
        )
        .operator(
            OperatorSpec::new("budget-monitor", BudgetMonitor, "budget-monitor")
                .input("ad-events")
                .output("campaign-events")
                .sink("cache")
                .sink("database")
                .setting("alert_thresholds_pct", [80, 100])
                .setting("pause_at_pct", 100)
                .setting("default_time_zone", "Asia/Seoul"),
        )
        .operator(
            OperatorSpec::new("compensation", Compensation, "compensation-processor")
                .input("compensation-events")
                .sink("cache")
                .sink("database"),
        )
        .sink(SinkSpec::new("cache", "cache").backend("embedded"))
        .sink(SinkSpec::new("database", "database"))
        .build()
        .expect("the CPC topology is valid")
}

#[test]
fn builder_made_cpc_equals_the_shipped_file() {
    let parsed = Topology::cpc_default().expect("shipped file parses and validates");
    assert_eq!(cpc_built(), parsed);
}

#[test]
fn shipped_file_on_disk_is_the_embedded_copy() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/cpc.toml");
    let on_disk = std::fs::read_to_string(path).expect("topologies/cpc.toml exists");
    assert_eq!(on_disk, CPC_TOPOLOGY_TOML);
    assert_eq!(Topology::from_file(path).expect("valid"), cpc_built());
}

#[test]
fn cpc_topics_match_spec_section_2() {
    let t = Topology::cpc_default().expect("valid");
    let got: Vec<(&str, u32, Option<i64>, String)> = t
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.partitions,
                t.retention.map(Millis::as_ms),
                t.key.as_ref().map(|k| k.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    let day = 86_400_000;
    assert_eq!(
        got,
        [
            (
                "campaign-events",
                4,
                Some(7 * day),
                "placement+category".to_owned()
            ),
            ("ad-events", 8, Some(7 * day), "device_id".to_owned()),
            (
                "conversion-events",
                4,
                Some(3 * day),
                "device_id".to_owned()
            ),
            (
                "compensation-events",
                4,
                Some(3 * day),
                "advertiser_id".to_owned()
            ),
        ]
    );
}

#[test]
fn cpc_consumer_groups_are_the_spec_defaults() {
    let plan = Topology::cpc_default()
        .and_then(|t| t.plan())
        .expect("plans");
    let groups = plan.consumer_groups();
    assert_eq!(groups["campaign-events"], ["rtb-processor"]);
    assert_eq!(
        groups["ad-events"],
        [
            "performance-aggregator",
            "conversion-matcher",
            "duplicate-detector",
            "balance-processor",
            "budget-monitor"
        ]
    );
    assert_eq!(groups["conversion-events"], ["conversion-matcher"]);
    assert_eq!(groups["compensation-events"], ["compensation-processor"]);
}

#[test]
fn plan_repartitions_conversions_into_ad_events_partitions() {
    let plan = Topology::cpc_default()
        .and_then(|t| t.plan())
        .expect("plans");
    let internal = "conversion-matcher-conversion-events-repartition";
    let topic = plan.topic(internal).expect("internal topic planned");
    assert!(topic.internal);
    assert_eq!(
        (topic.partitions, topic.schema.as_str()),
        (8, "conversion-events")
    );
    assert_eq!(
        topic.key.as_ref().map(ToString::to_string).as_deref(),
        Some("device_id")
    );
    assert_eq!(
        topic.retention,
        Some(Millis::days(3)),
        "keeps the source's retention"
    );

    let stages: Vec<_> = plan.stages_of("conversion-matching").collect();
    assert_eq!(stages.len(), 2);
    let (rp, matcher) = (stages[0], stages[1]);
    assert_eq!(rp.kind, "repartition");
    assert_eq!(
        (rp.group.as_str(), rp.name.as_str()),
        ("conversion-matcher", internal)
    );
    assert_eq!(rp.runtime_group(), internal, "its own offsets and state, derived from the group");
    assert_eq!(rp.inputs, ["conversion-events"]);
    assert_eq!(rp.outputs, [internal]);
    assert_eq!(rp.partitions, 4, "one task per source partition");
    let info = rp.repartition.as_ref().expect("repartition info");
    assert_eq!(
        info.reason,
        "not co-partitioned: conversion-events has 4 partitions, ad-events 8"
    );

    assert_eq!(matcher.kind, "conversion-matching");
    assert_eq!(matcher.group, "conversion-matcher");
    assert_eq!(matcher.runtime_group(), "conversion-matcher", "the declared group runs it");
    assert_eq!(matcher.inputs, [internal, "ad-events"]);
    assert_eq!(matcher.partitions, 8);
    assert_eq!(matcher.sinks, ["database"]);
    assert_eq!(matcher.kind_settings["window"], "1d");
}

#[test]
fn plan_repartitions_ad_events_by_campaign_for_performance() {
    let plan = Topology::cpc_default()
        .and_then(|t| t.plan())
        .expect("plans");
    let internal = "performance-aggregator-ad-events-repartition";
    assert_eq!(
        plan.topic(internal).map(|t| (t.partitions, t.internal)),
        Some((8, true))
    );
    let rp = plan.stage(internal).expect("repartition stage");
    assert_eq!(
        rp.repartition.as_ref().map(|r| r.by.to_string()).as_deref(),
        Some("campaign_id")
    );
    assert_eq!(
        rp.repartition.as_ref().map(|r| r.reason.as_str()),
        Some("not co-partitioned: ad-events is keyed by device_id, not by campaign_id")
    );
    let perf = plan.stage("performance").expect("stage");
    assert_eq!(perf.inputs, [internal]);
    // SPEC §4: late events correct their window for the 24 h attribution window by default.
    assert_eq!(perf.kind_settings["late_policy"], "correct");
    assert_eq!(perf.kind_settings["max_lateness"], "1d");
}

#[test]
fn plan_has_no_repartition_for_co_partitioned_operators() {
    let plan = Topology::cpc_default()
        .and_then(|t| t.plan())
        .expect("plans");
    // Duplicate detection is keyed by device_id+ad_id over a topic partitioned by device_id: already fine.
    for id in [
        "ranking",
        "duplicate-detection",
        "balance",
        "budget-monitor",
        "compensation",
    ] {
        assert_eq!(plan.stages_of(id).count(), 1, "{id}");
    }
    assert_eq!(plan.stages.len(), 9);
    assert_eq!(plan.topics.iter().filter(|t| t.internal).count(), 2);
    // Each repartition stage comes right before the stage reading its output.
    for (i, s) in plan.stages.iter().enumerate() {
        if let Some(rp) = &s.repartition {
            assert!(plan.stages[i + 1].inputs.contains(&rp.topic), "{}", s.name);
        }
    }
}

#[test]
fn toml_round_trip_keeps_the_model() {
    let cpc = cpc_built();
    let text = cpc.to_toml_string().expect("serialises");
    assert_eq!(Topology::from_toml_str(&text).expect("reads back"), cpc);
}

#[test]
fn describe_text_shows_topics_stages_and_repartition_reasons() {
    let text = Topology::cpc_default()
        .and_then(|t| t.plan())
        .expect("plans")
        .describe(DescribeFormat::Text);
    let has = |needle: &str| assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    let line = |start: &str| -> String {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line `{start}`:\n{text}"))
            .to_owned()
    };
    has("Topology: 4 topics (+2 internal), 7 operators in 9 stages, 2 sinks");
    let words = |l: String| {
        l.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        words(line("campaign-events ")),
        "campaign-events 4 7d placement+category declared rtb-processor"
    );
    assert_eq!(
        words(line("conversion-events ")),
        "conversion-events 4 3d device_id declared conversion-matcher"
    );
    assert_eq!(
        words(line("conversion-matcher-conversion-events-repartition ")),
        "conversion-matcher-conversion-events-repartition 8 3d device_id internal conversion-matcher"
    );
    has("reason: not co-partitioned: conversion-events has 4 partitions, ad-events 8");
    has("reason: not co-partitioned: ad-events is keyed by device_id, not by campaign_id");
    has("conversion-events → repartition by device_id → conversion-matcher-conversion-events-repartition (4 → 8 partitions, feeds conversion-matching)");
    has("conversion-matcher-conversion-events-repartition + ad-events → conversion-matching → database (sink)");
    has("ad-events → duplicate-detection → compensation-events");
    has("ad-events → budget-monitor → campaign-events, cache (sink), database (sink)");
    has("performance-aggregator-ad-events-repartition → performance → cache (sink), database (sink)");
    has("compensation-events → compensation → cache (sink), database (sink)");
    has("5. conversion-matching [group conversion-matcher, statement conversion-matching, keyed by device_id, 8 tasks]");
    has("settings: grace 1m, late_policy correct, max_lateness 1d, recompute_rankings true, window 5m");
    has("settings: default_prior_ctr 0.01, increment 10, prior_strength 100, reserve_price 100");
    has("cache     cache     embedded (rtb-data/cache)");
}

#[test]
fn mermaid_has_the_shape_of_spec_section_1() {
    let m = Topology::cpc_default()
        .and_then(|t| t.plan())
        .expect("plans")
        .describe(DescribeFormat::Mermaid);
    assert!(m.starts_with("flowchart LR\n"), "{m}");
    let edges: Vec<&str> = m
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("-->") || l.contains(".->"))
        .collect();
    for edge in [
        // API server → the external topics, and only those.
        "api --> t_campaign_events",
        "api --> t_ad_events",
        "api --> t_conversion_events",
        // topics → statements and workers → stores
        "t_campaign_events --> s_ranking",
        "s_ranking --> k_cache",
        "t_ad_events --> s_balance",
        "s_balance --> k_database",
        "t_ad_events --> s_duplicate_detection",
        // duplicate detection → compensation-events → compensation worker
        "s_duplicate_detection --> t_compensation_events",
        "t_compensation_events --> s_compensation",
        "s_compensation --> k_database",
        // budget monitor → campaign-events
        "s_budget_monitor --> t_campaign_events",
        // repartition: conversion-events → repartition → internal topic → conversion matching
        "t_conversion_events --> s_conversion_matcher_conversion_events_repartition",
        "s_conversion_matcher_conversion_events_repartition --> t_conversion_matcher_conversion_events_repartition",
        "t_conversion_matcher_conversion_events_repartition --> s_conversion_matching",
        "t_ad_events --> s_conversion_matching",
        "s_conversion_matching --> k_database",
        "k_cache -. CTR .-> s_ranking",
    ] {
        assert!(edges.contains(&edge), "missing edge `{edge}` in:\n{m}");
    }
    assert!(
        !edges.contains(&"api --> t_compensation_events"),
        "compensation events come from duplicate detection"
    );
    assert!(
        !edges
            .iter()
            .any(|e| e.starts_with("t_conversion_events --> s_conversion_matching")),
        "join reads the repartitioned topic"
    );
    // Statements and workers sit in their own subgraphs.
    let statements = section(&m, "subgraph statements");
    let workers = section(&m, "subgraph workers");
    assert!(
        statements.contains("s_ranking[") && statements.contains("s_conversion_matching["),
        "{statements}"
    );
    assert!(
        workers.contains("s_balance[")
            && workers.contains("s_compensation[")
            && !workers.contains("s_ranking"),
        "{workers}"
    );
    assert!(
        m.contains("k_database[(\"database<br/>database · embedded\")]"),
        "{m}"
    );
}

/// The lines of a Mermaid subgraph, from its header to its `end`.
fn section<'a>(m: &'a str, header: &str) -> String {
    m.lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with(header))
        .take_while(|l| *l != "end")
        .collect::<Vec<&'a str>>()
        .join("\n")
}
