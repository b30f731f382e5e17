//! `rtb run` and `rtb export` over the life of a data directory, through the binary as a user runs it:
//! one process per directory (lock), corrupt stores refused by name (no partial outputs), a restart with a
//! larger `--events` continuing the first run, Ctrl-C (exit 130, `"complete": false`, resumable), and the
//! export's outputs (dead letters once per record, late records apart, a summary without placeholders).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn rtb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtb"));
    c.env_remove("RUST_LOG");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(data: &Path, events: u64, rate: u64, report: &Path) -> Output {
    rtb()
        .args(["run", "--quiet", "--data-dir"])
        .arg(data)
        .args(["--events", &events.to_string(), "--rate", &rate.to_string(), "--report-json"])
        .arg(report)
        .output()
        .expect("spawn rtb run")
}

fn spawn_run(data: &Path, events: u64, rate: u64, report: &Path) -> Child {
    rtb()
        .args(["run", "--quiet", "--data-dir"])
        .arg(data)
        .args(["--events", &events.to_string(), "--rate", &rate.to_string(), "--report-json"])
        .arg(report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rtb run")
}

fn export(data: &Path, out: &Path) -> Output {
    rtb().args(["export", "--data-dir"]).arg(data).arg("--output").arg(out).output().expect("spawn rtb export")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

fn ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
}

/// Waits until `cond` holds (or panics after `secs`).
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGINT (what Ctrl-C sends) to a child.
fn interrupt(child: &Child) {
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill -INT");
    assert!(st.success());
}

fn late_total(report: &Value) -> u64 {
    report["run"]["late"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

#[test]
fn a_second_rtb_on_a_data_dir_in_use_is_refused_before_touching_it_naming_the_holder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut first = spawn_run(&data, 50_000, 2_000, &tmp.path().join("r1.json"));
    // run.json is written once the first process holds the directory.
    wait_for(30, "the first run to start", || data.join("run.json").exists());

    let second = run(&data, 50_000, 2_000, &tmp.path().join("r2.json"));
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another rtb process"), "the refusal says why: {err}");
    assert!(err.contains(&format!("pid {}", first.id())), "and names the holder: {err}");
    assert!(!err.contains("No such file"), "the loser never opened the log: {err}");
    assert!(!tmp.path().join("r2.json").exists(), "the refused run reports nothing");

    let ex = export(&data, &tmp.path().join("export"));
    assert_eq!(ex.status.code(), Some(1), "export of a directory in use is refused too");
    assert!(text(&ex.stderr).contains("another rtb process"), "{}", text(&ex.stderr));

    first.kill().expect("SIGKILL");
    let _ = first.wait();
    // The lock dies with its process.
    let ex = export(&data, &tmp.path().join("export"));
    ok(&ex);
}

#[test]
fn ctrl_c_exits_130_with_an_incomplete_report_and_the_next_run_resumes_and_completes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (r1, r2) = (tmp.path().join("r1.json"), tmp.path().join("r2.json"));
    let child = spawn_run(&data, 8_000, 2_000, &r1);
    wait_for(30, "the first run to produce", || data.join("run.json").exists());
    std::thread::sleep(Duration::from_millis(1_500));
    interrupt(&child);
    let out = child.wait_with_output().expect("wait");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "an interrupted run has its own exit status\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("not complete: interrupted"), "{stdout}");
    let report = json(&r1);
    assert_eq!(report["complete"], Value::Bool(false), "{report}");
    assert!(report.get("resumed_after").is_none(), "the first run resumed nothing: {report}");

    let out = run(&data, 8_000, 200_000, &r2);
    ok(&out);
    let stdout = text(&out.stdout);
    let report = json(&r2);
    assert_eq!(report["complete"], Value::Bool(true), "{report}");
    let resumed = report["resumed_after"].as_u64().expect("resumed_after");
    assert!(resumed > 0, "{report}");
    assert!(stdout.contains(&format!("resumed after {resumed} events")), "the text says where it resumed: {stdout}");
    assert!(stdout.contains("complete: all 8000 ad-events"), "{stdout}");
}

#[test]
fn a_restart_with_more_events_continues_the_first_run_without_late_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (r1, r2) = (tmp.path().join("r1.json"), tmp.path().join("r2.json"));
    ok(&run(&data, 1_500, 200_000, &r1));
    let first = json(&r1);
    assert_eq!(first["complete"], Value::Bool(true), "{first}");
    let produced_first: u64 = first["run"]["events"].as_object().expect("events").values().filter_map(Value::as_u64).sum();

    let out = run(&data, 4_000, 200_000, &r2);
    ok(&out);
    let second = json(&r2);
    assert_eq!(second["complete"], Value::Bool(true), "{second}");
    assert_eq!(second["resumed_after"].as_u64(), Some(produced_first), "it continues after the first run's events");
    assert_eq!(second["run"]["events"]["ad-events"].as_u64(), Some(4_000), "{second}");
    assert_eq!(late_total(&second), 0, "the continuation is not behind the first run's watermark: {second}");
    assert!(text(&out.stdout).contains("complete: all 4000 ad-events"), "{}", text(&out.stdout));
}

/// Flips every 97th byte of every file of a sled store.
fn corrupt(store: &Path) {
    for entry in std::fs::read_dir(store).expect("store dir") {
        let p = entry.expect("entry").path();
        if p.is_file() && p.file_name().is_some_and(|n| n != "conf") {
            let mut b = std::fs::read(&p).expect("read");
            for i in (0..b.len()).step_by(97) {
                b[i] ^= 0xff;
            }
            std::fs::write(&p, b).expect("write");
        }
    }
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Byte flips in one store of a finished run: `export` and `run` refuse the directory, naming the store,
/// and leave nothing that reads as a fact.
fn a_corrupt_store_is_refused(store: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    ok(&run(&data, 1_500, 200_000, &tmp.path().join("r1.json")));
    corrupt(&data.join(store));

    let out_dir: PathBuf = tmp.path().join("export");
    let ex = export(&data, &out_dir);
    let err = text(&ex.stderr);
    assert_eq!(ex.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("store `{store}`")), "the error names the store: {err}");
    let left = files_in(&out_dir);
    assert!(left.is_empty(), "a failed export leaves nothing that reads as a fact: {left:?}");

    let again = run(&data, 1_500, 200_000, &tmp.path().join("r2.json"));
    let err = text(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "stdout:\n{}\nstderr:\n{err}", text(&again.stdout));
    assert!(err.contains(&format!("store `{store}`")), "{err}");
    assert!(!text(&again.stdout).contains("complete"), "{}", text(&again.stdout));
}

#[test]
fn a_corrupt_sink_fails_export_and_run_naming_the_store_and_leaves_no_outputs() {
    a_corrupt_store_is_refused("database");
    a_corrupt_store_is_refused("cache");
}

#[test]
fn a_corrupt_operator_state_fails_export_and_run_naming_the_store() {
    a_corrupt_store_is_refused("state");
}

#[test]
fn export_writes_each_dead_letter_once_late_records_apart_and_a_summary_of_real_counts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let out_dir = tmp.path().join("export");
    ok(&run(&data, 3_000, 200_000, &tmp.path().join("r.json")));
    ok(&export(&data, &out_dir));

    let dead = rows(&out_dir.join("dead_letters.jsonl"));
    assert!(!dead.is_empty(), "the simulator sends some malformed events");
    let mut sources = BTreeSet::new();
    for d in &dead {
        let key = (d["topic"].to_string(), d["partition"].to_string(), d["offset"].to_string());
        assert!(sources.insert(key), "each bad input once: {d}");
        let stages = d["stages"].as_array().expect("stages list");
        assert!(!stages.is_empty(), "{d}");
        assert!(!d["reason"].as_str().unwrap_or("LATE").starts_with("LATE"), "late records are not dead letters: {d}");
    }
    for l in rows(&out_dir.join("late_events.jsonl")) {
        assert!(!l["stages"].as_array().expect("stages").is_empty(), "{l}");
    }

    let summary = json(&out_dir.join("summary.json"));
    let conversions = rows(&out_dir.join("conversions.jsonl")).len() as u64;
    assert_eq!(summary["attributed_conversions"].as_u64(), Some(conversions), "{summary}");
    assert!(summary.get("elapsed_s").is_none(), "export times nothing: no placeholder {summary}");
    let end = summary["end_of_input"].as_str().expect("end_of_input as text");
    assert!(chrono::DateTime::parse_from_rfc3339(end).is_ok(), "RFC 3339: {end}");
    let dead_total: u64 = summary["dead_letters"].as_object().expect("per topic").values().filter_map(Value::as_u64).sum();
    assert_eq!(dead_total, dead.len() as u64, "{summary}");
    assert!(!files_in(&out_dir).iter().any(|f| f.ends_with(".partial")), "{:?}", files_in(&out_dir));
}

#[test]
fn replay_writes_late_records_to_late_events_not_dead_letters_and_ignores_a_bom() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (input, out_dir) = (tmp.path().join("in"), tmp.path().join("out"));
    let g = rtb().args(["generate", "--ad-events", "3000", "--hours", "2", "--seed", "3", "--output"]).arg(&input).output().expect("generate");
    ok(&g);
    // One valid impression two days behind the rest: beyond the 24 h correction horizon, so it is late.
    let ads_path = input.join("ad-events.jsonl");
    let mut ads = std::fs::read_to_string(&ads_path).expect("ad-events");
    let mut old: Value = ads
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event_type"] == "IMPRESSION" && v["timestamp"].is_string())
        .expect("an impression");
    old["timestamp"] = Value::from("2025-03-08T00:00:00.000Z");
    old["event_id"] = Value::from("ad-very-late-1");
    ads.push_str(&format!("{old}\n"));
    let late_line = ads.lines().count() as u64 - 1;
    std::fs::write(&ads_path, ads).expect("write");
    // An editor's byte-order mark at the start of a file.
    let camp_path = input.join("campaign-events.jsonl");
    let mut camp = b"\xEF\xBB\xBF".to_vec();
    camp.extend(std::fs::read(&camp_path).expect("campaign-events"));
    std::fs::write(&camp_path, camp).expect("write");

    let r = rtb().args(["replay", "--input"]).arg(&input).arg("--output").arg(&out_dir).output().expect("replay");
    ok(&r);
    let late = rows(&out_dir.join("late_events.jsonl"));
    let summary = json(&out_dir.join("summary.json"));
    let summary_late: u64 = summary["late"].as_object().expect("late per stage").values().filter_map(Value::as_u64).sum();
    assert!(summary_late > 0, "the replay counted the late record: {summary}");
    // Its coordinates are the replay's log's: its device's partition, its offset there.
    assert!(
        late.iter().any(|l| l["topic"] == "ad-events"
            && l["payload"].as_str().is_some_and(|p| p.contains("ad-very-late-1"))
            && l["offset"].as_u64().is_some_and(|o| o <= late_line)),
        "late_events.jsonl has it: {late:?}"
    );
    let dead = rows(&out_dir.join("dead_letters.jsonl"));
    assert!(dead.iter().all(|d| !d["reason"].as_str().unwrap_or_default().starts_with("LATE")), "no late record among dead letters");
    assert!(
        !dead.iter().any(|d| d["topic"] == "campaign-events" && d["offset"] == 0),
        "the BOM did not reject the first campaign event: {dead:?}"
    );
    let mut sources = BTreeSet::new();
    for d in &dead {
        assert!(sources.insert((d["topic"].to_string(), d["partition"].to_string(), d["offset"].to_string())), "once: {d}");
    }
    let end = summary["end_of_input"].as_str().expect("end_of_input as text");
    assert!(chrono::DateTime::parse_from_rfc3339(end).is_ok(), "{end}");
}

#[test]
fn the_report_accounts_for_every_conversion_event_duplicate_order_ids_included() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let r = tmp.path().join("r.json");
    let out = run(&data, 40_000, 400_000, &r);
    ok(&out);
    let stdout = text(&out.stdout);
    let report = json(&r);
    assert_eq!(report["complete"], Value::Bool(true), "{report}");
    let acc = &report["conversion_events"];
    let n = |k: &str| acc[k].as_i64().unwrap_or_else(|| panic!("{k} in {acc}"));
    let dups = n("duplicate_orders");
    assert_eq!(report["duplicate_orders"].as_i64(), Some(dups), "{report}");
    assert_eq!(n("events"), report["run"]["events"]["conversion-events"].as_i64().expect("events"), "{report}");
    assert_eq!(n("attributed"), report["conversions"].as_i64().expect("conversions"), "{report}");
    assert_eq!(
        n("events"),
        n("attributed") + n("unattributed") + dups + n("dead_letters") + n("late") + n("unsettled"),
        "{acc}"
    );
    // Attributing a duplicate order again would make this negative.
    assert!(n("unsettled") >= 0, "{acc}");

    // Independently, from the log: valid conversion events per order_id; every order's later events are
    // duplicates (the ones still undecided aside).
    ok(&export(&data, &tmp.path().join("export")));
    let dead: BTreeSet<(String, u64, u64)> = rows(&tmp.path().join("export/dead_letters.jsonl"))
        .iter()
        .map(|d| (d["topic"].as_str().expect("topic").to_string(), d["partition"].as_u64().expect("p"), d["offset"].as_u64().expect("o")))
        .collect();
    let conversion_dead = dead.iter().filter(|d| d.0 == "conversion-events").count() as i64;
    assert_eq!(n("dead_letters"), conversion_dead, "{acc}");
    let log = rtb_stream::log::EmbeddedLog::open(data.join("log")).expect("open log");
    // Valid records of a topic: (event time, payload).
    let valid = |topic: &str| {
        let mut out = Vec::new();
        for p in 0..log.topic_config(topic).expect("topic").partitions {
            let end = log.end_offset(topic, p).expect("end");
            let mut from = 0;
            while from < end {
                let recs = log.read(topic, p, from, 1_024).expect("read");
                from = recs.last().expect("records").offset + 1;
                let ok = |r: &rtb_stream::log::LogRecord| !dead.contains(&(topic.to_string(), u64::from(p), r.offset));
                out.extend(recs.into_iter().filter(ok).map(|r| (r.timestamp, r.payload)));
            }
        }
        out
    };
    let conversions = valid("conversion-events");
    let mut per_order = std::collections::BTreeMap::<String, i64>::new();
    for (_, payload) in &conversions {
        let v: Value = serde_json::from_slice(payload).expect("a valid conversion is JSON");
        *per_order.entry(v["order_id"].as_str().expect("order_id").to_string()).or_default() += 1;
    }
    let model_dups: i64 = per_order.values().map(|k| k - 1).sum();
    assert!(model_dups > 0, "the simulator reports some orders twice (byte for byte): {acc}");
    assert!(dups <= model_dups && model_dups <= dups + n("unsettled"), "model {model_dups}: {acc}");
    // Undecided are only conversions at the very end of the data: a complete run's watermarks are within
    // the out-of-orderness (5 s) of the end of each partition; 10 minutes is a generous bound.
    let end = valid("ad-events").iter().map(|r| r.0).chain(conversions.iter().map(|r| r.0)).max().expect("events");
    let at_the_end = conversions.iter().filter(|r| r.0 > end - 600_000).count() as i64;
    assert!(n("unsettled") <= at_the_end, "{} undecided, {at_the_end} in the last 10 minutes: {acc}", n("unsettled"));
    assert!(
        stdout.contains(&format!("{dups} duplicate order ids (not attributed twice)")),
        "the text shows them: {stdout}"
    );
}

#[test]
fn export_of_a_run_killed_while_creating_its_topics_exports_what_there_is() {
    // What `rtb run` leaves when killed right after claiming the directory: run.json and a log holding only
    // its first topic.
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    std::fs::write(data.join("run.json"), r#"{"seed":42,"scale":1,"events":1000}"#).expect("run.json");
    let log = rtb_stream::log::EmbeddedLog::open(data.join("log")).expect("log");
    log.create_topic("campaign-events", rtb_stream::log::TopicConfig { partitions: 4, retention: None }).expect("topic");
    drop(log);
    let ex = export(&data, &tmp.path().join("export"));
    ok(&ex);
    assert!(text(&ex.stdout).contains("0 compensations"), "{}", text(&ex.stdout));
}
