//! Test support for the `rtb replay` oracle tests.
//!
//! - [`input`]: reads and validates the four input files of REPLAY-SEMANTICS.md (dead letters included);
//! - [`batch_model`]: a plain batch recomputation of every replay output from the valid input, no streaming;
//! - [`outputs`]: the row types both sides produce, and a loader for the files `rtb replay` writes;
//! - [`compare`]: keyed diffs that print only the first few differing rows;
//! - [`lines`]: builders of fixed input lines for the golden tests;
//! - [`murmur2`]: Kafka's default partitioner (for ledger keys of clicks without `event_id`);
//! - [`run`]: runs the `rtb` binary;
//! - [`timefmt`]: RFC 3339 parsing/formatting and local days.
//!
//! Nothing here is shared with `rtb-ops`: it is an independent oracle.

// Each test crate uses a different part of the support code.
#![allow(dead_code)]

pub mod batch_model;
pub mod compare;
pub mod input;
pub mod lines;
pub mod murmur2;
pub mod outputs;
pub mod run;
pub mod timefmt;
