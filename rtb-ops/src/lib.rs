//! # rtb-ops
//!
//! placeholder (front door written at the end)

pub mod error;
pub mod schema;

pub use error::{Error, Result};
