//! `rtb run --topology FILE` honours the file: the same simulated traffic run with the shipped CPC
//! topology edited in two places (the balance worker's group renamed; performance pointed at a second
//! cache sink) writes offsets under the declared group and metrics into the declared cache only.

use std::process::Command;
use std::sync::Arc;

use rtb_ops::sink::{EmbeddedCache, MetricsScope};
use rtb_ops::sink::Cache as _;
use rtb_stream::runtime::task_scope;
use rtb_stream::state::{JournalBackend, StoreBackend};
use rtb_topology::CPC_TOPOLOGY_TOML;

fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` must occur exactly once");
    text.replacen(from, to, 1)
}

/// Writes `topology` to `dir/name` and runs `rtb run --topology` on 2 000 events to completion; returns the
/// file and the data directory.
fn run_to_completion(dir: &std::path::Path, name: &str, topology: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let file = dir.join(name);
    std::fs::write(&file, topology).expect("write");
    let data = dir.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_rtb"))
        .args(["run", "--topology"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .args(["--events", "2000", "--rate", "200000", "--quiet"])
        .output()
        .expect("rtb runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("complete: all 2000 ad-events"), "{stdout}");
    (file, data)
}

#[test]
fn rtb_run_uses_the_declared_group_and_the_declared_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let topology = edit(CPC_TOPOLOGY_TOML, "group = \"balance-processor\"", "group = \"balance-v2\"");
    let topology = edit(
        &topology,
        "sinks = [\"cache\", \"database\"]     # metrics;",
        "sinks = [\"metrics\", \"database\"]     # metrics;",
    ) + "\n[[sink]]\nname = \"metrics\"\nkind = \"cache\"\npath = \"metrics-cache\"\n";
    let (_, data) = run_to_completion(dir.path(), "cpc.toml", &topology);

    // Offsets of the balance worker live under its declared group, not its id or the old group.
    let state: Arc<dyn StoreBackend> = Arc::new(JournalBackend::open(data.join("state")).expect("state"));
    let committed = |group: &str| -> usize {
        (0..8).map(|p| task_scope(&state, group, p).read_offsets().expect("offsets").len()).sum()
    };
    assert_eq!(committed("balance-v2"), 8, "one committed input offset per partition");
    assert_eq!(committed("balance-processor") + committed("balance"), 0);
    drop(state);

    // Performance metrics are in the `metrics` sink (its declared path), none in `cache`.
    let metrics = EmbeddedCache::open(data.join("metrics-cache")).expect("metrics cache");
    let rows = metrics.all_window_metrics(MetricsScope::Campaign).expect("rows");
    assert!(!rows.is_empty(), "performance wrote its windows to its own cache");
    drop(metrics);
    let cache = EmbeddedCache::open(data.join("cache")).expect("cache");
    assert!(cache.all_window_metrics(MetricsScope::Campaign).expect("rows").is_empty());
    assert!(!cache.rankings().expect("rankings").is_empty(), "the ranking still writes the `cache` sink");
}

#[test]
fn rtb_run_and_export_use_the_declared_topic_names() {
    // Every topic renamed in the file: the simulator produces to the declared names, every stage reads and
    // writes them, and `rtb export` reads them back; no topic of the default names is created.
    let dir = tempfile::tempdir().expect("tmp");
    let mut topology = CPC_TOPOLOGY_TOML.to_string();
    for t in ["campaign-events", "ad-events", "conversion-events", "compensation-events"] {
        topology = topology.replace(&format!("\"{t}\""), &format!("\"shop.{t}\""));
    }
    let topology = topology.replace("schema = \"shop.", "schema = \""); // schemas keep their names
    let (file, data) = run_to_completion(dir.path(), "renamed.toml", &topology);
    let topics: Vec<String> = std::fs::read_dir(data.join("log").join("topics"))
        .expect("topics")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(topics.iter().any(|t| t == "shop.ad-events"), "{topics:?}");
    assert!(!topics.iter().any(|t| t == "ad-events" || t == "compensation-events"), "{topics:?}");

    let export = dir.path().join("export");
    let out = Command::new(env!("CARGO_BIN_EXE_rtb")).args(["export", "--topology"]).arg(&file).arg("--data-dir").arg(&data).arg("--output").arg(&export).output().expect("export");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger = std::fs::read_to_string(export.join("ledger.jsonl")).expect("ledger");
    assert!(ledger.lines().count() > 10, "clicks were charged");
    assert!(ledger.contains("REFUND"), "refunds went through the renamed compensation topic");
    let compensations = std::fs::read_to_string(export.join("compensations.jsonl")).expect("compensations");
    assert!(!compensations.is_empty(), "export read the renamed compensation topic");
}
