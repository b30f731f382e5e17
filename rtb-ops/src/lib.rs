//! # rtb-ops
//!
//! placeholder (front door written at the end)

pub mod calendar;
pub mod config;
pub mod error;
pub mod ops;
pub mod ranking;
pub mod schema;
pub mod sink;
pub mod wire;

pub use error::{Error, Result};
