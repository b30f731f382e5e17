//! Helpers shared by the validation tests: edit one line of the shipped CPC topology, find lines,
//! check an error's location and message.
#![allow(dead_code)]

use rtb_topology::{Error, Topology, CPC_TOPOLOGY_TOML};

/// The CPC file with exactly one occurrence of `from` replaced by `to`.
pub fn cpc_with(from: &str, to: &str) -> String {
    assert_eq!(
        CPC_TOPOLOGY_TOML.matches(from).count(),
        1,
        "`{from}` must occur exactly once"
    );
    CPC_TOPOLOGY_TOML.replacen(from, to, 1)
}

/// 1-based line where the only occurrence of `needle` (which may span lines) starts.
pub fn line_of(text: &str, needle: &str) -> u32 {
    assert_eq!(
        text.matches(needle).count(),
        1,
        "`{needle}` must occur exactly once"
    );
    let start = text.find(needle).unwrap_or(0);
    u32::try_from(text[..start].matches('\n').count() + 1).unwrap_or(u32::MAX)
}

pub fn invalid(text: &str) -> Error {
    Topology::from_toml_str(text).expect_err("topology must be rejected")
}

/// Asserts the error's line and that its message names every item in `names`.
pub fn check(err: &Error, line: u32, names: &[&str]) {
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
