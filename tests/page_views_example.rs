//! The non-CPC example (`examples/page_views.rs` + `examples/page_views.toml`) runs end to end: its own
//! schema, operator kind and sink backend, registered by name, planned from its own topology file and
//! run on the runtime; its settings take effect and are checked like the CPC kinds'.

#[allow(dead_code)]
#[path = "../examples/page_views.rs"]
mod page_views;

use std::path::Path;

use page_views::{run, ViewCount, TOPOLOGY};
use rtb_topology::{Error, Topology};

const T0: i64 = 1_705_312_800_000;

/// Five minutes of views of three pages, one every 10 s, a page every third view.
fn views() -> Vec<(&'static str, i64)> {
    let pages = ["/home", "/cart", "/search"];
    (0..30).map(|i| (pages[i % 3], T0 + i as i64 * 10_000)).collect()
}

fn with_settings(dir: &Path, settings: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(TOPOLOGY).expect("topology file");
    let from = "settings = { window = \"1m\", min_views = 2 }";
    assert_eq!(text.matches(from).count(), 1);
    let path = dir.join("page_views.toml");
    std::fs::write(&path, text.replacen(from, settings, 1)).expect("write");
    path
}

#[test]
fn the_example_topology_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (description, counts) = run(Path::new(TOPOLOGY), dir.path(), &views()).expect("runs");
    assert!(description.contains("1. views-per-minute [group page-view-counter, counter page-view-counter, keyed by page, 4 tasks]"), "{description}");
    assert!(description.contains("settings: grace 0s, min_views 2, window 1m"), "{description}");
    // Every page is viewed twice a minute for five minutes.
    assert_eq!(counts.len(), 15, "{counts:?}");
    for (i, page) in ["/cart", "/home", "/search"].iter().enumerate() {
        for m in 0..5 {
            let want = ViewCount {
                page: (*page).to_owned(),
                window_start: T0 + m * 60_000,
                window_end: T0 + (m + 1) * 60_000,
                views: 2,
            };
            assert_eq!(counts[i * 5 + m as usize], want);
        }
    }
    assert!(dir.path().join("counts/counts.jsonl").is_file(), "the sink's declared path");
}

#[test]
fn the_example_settings_take_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let five = with_settings(dir.path(), "settings = { window = \"5m\", min_views = 10 }");
    let (_, counts) = run(&five, &dir.path().join("five"), &views()).expect("runs");
    assert_eq!(
        counts.iter().map(|c| (c.page.as_str(), c.window_end - c.window_start, c.views)).collect::<Vec<_>>(),
        [("/cart", 300_000, 10), ("/home", 300_000, 10), ("/search", 300_000, 10)]
    );
    let strict = with_settings(dir.path(), "settings = { window = \"5m\", min_views = 11 }");
    let (_, counts) = run(&strict, &dir.path().join("strict"), &views()).expect("runs");
    assert!(counts.is_empty(), "no window reaches 11 views: {counts:?}");
}

#[test]
fn the_example_kinds_are_checked_by_name_with_lines() {
    let registry = page_views::registry().expect("registry");
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = with_settings(dir.path(), "settings = { window = \"1m\", min_view = 2 }");
    let err = Topology::from_file_with(&typo, &registry).expect_err("unknown setting");
    assert!(matches!(&err, Error::InvalidSetting { setting, .. } if setting == "min_view"), "{err:?}");
    assert_eq!(err.location().map(|l| l.line), Some(22), "{err}");
    // The built-in (CPC) registry knows none of the example's names.
    let err = Topology::from_file(TOPOLOGY).expect_err("not CPC");
    assert!(matches!(&err, Error::UnknownSchema { schema, .. } if schema == "page-views"), "{err:?}");
}
