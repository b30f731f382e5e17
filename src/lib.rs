//! rtb workspace root package: see the member crates.
