//! The `rtb` binary as a user runs it: output, messages and exit status (0 ok, 2 invalid topology or
//! usage, 1 runtime failure).

use std::process::{Command, Output};

fn rtb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("runs rtb")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn describe_default_prints_the_cpc_topology_and_exits_0() {
    let out = rtb(&["describe"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "reason: not co-partitioned: conversion-events has 4 partitions, ad-events 8"
        ),
        "{stdout}"
    );
}

#[test]
fn describe_mermaid_prints_a_flowchart() {
    let out = rtb(&["describe", "--format", "mermaid"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("flowchart LR\n")
            && stdout.contains("s_duplicate_detection --> t_compensation_events"),
        "{stdout}"
    );
}

#[test]
fn validate_invalid_file_exits_2_naming_item_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.toml");
    let bad = rtb_topology::CPC_TOPOLOGY_TOML.replacen(
        "inputs = [\"compensation-events\"]",
        "inputs = [\"refunds\"]",
        1,
    );
    std::fs::write(&path, &bad).expect("write");
    let out = rtb(&["validate", "--topology", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let line = bad
        .lines()
        .position(|l| l.contains("\"refunds\""))
        .map(|i| i + 1)
        .expect("edited line");
    assert!(
        stderr.starts_with("error: unknown topic `refunds` (input of operator `compensation`)"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_valid_file_exits_0() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../topologies/cpc.toml");
    let out = rtb(&["validate", "--topology", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": valid (6 topics, 7 operators in 9 stages, 2 sinks)"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(rtb(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(rtb(&["run", "--seed", "minus-one"]).status.code(), Some(2));
    assert_eq!(rtb(&["replay", "--input", "x"]).status.code(), Some(2));
    assert_eq!(
        rtb(&["describe", "--topology", "/nonexistent.toml"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn run_completes_with_a_report_and_refuses_another_seed_on_the_same_data_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data").display().to_string();
    let out = rtb(&["run", "--data-dir", &data, "--events", "3000", "--rate", "200000", "--quiet"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout, text(&out.stderr));
    for section in ["-- rankings", "-- campaigns", "-- advertisers", "-- money --", "-- budget --", "-- dead letters"] {
        assert!(stdout.contains(section), "report lacks {section}:\n{stdout}");
    }
    assert!(stdout.contains("complete: all 3000 ad-events"), "{stdout}");
    assert!(!stdout.contains("MISMATCH"), "every balance reconciles:\n{stdout}");
    let other = rtb(&["run", "--data-dir", &data, "--events", "3000", "--seed", "7", "--quiet"]);
    assert_eq!(other.status.code(), Some(1));
    assert!(text(&other.stderr).contains("--seed 42"), "{}", text(&other.stderr));
}
