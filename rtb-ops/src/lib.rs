//! # rtb-ops
//!
//! placeholder (front door written at the end)

pub mod calendar;
pub mod error;
pub mod schema;
pub mod sink;

pub use error::{Error, Result};
