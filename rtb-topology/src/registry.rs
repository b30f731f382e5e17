//! The registry a topology is validated, planned and run with.
//!
//! [`default_registry`] is the built-in one: the CPC system's schemas, operator kinds and embedded sink
//! backends (`rtb_ops::registry::register`). A library user builds their own
//! [`Registry`] (with or without the CPC entries) and passes it to [`Topology::plan_with`],
//! [`Topology::validate_with_registry`] and [`Topology::from_file_with`](crate::Topology::from_file_with).
//!
//! [`Topology::plan_with`]: crate::Topology::plan_with
//! [`Topology::validate_with_registry`]: crate::Topology::validate_with_registry

use std::sync::OnceLock;

pub use rtb_stream::registry::Registry;

use crate::error::{Error, Result};

/// The built-in registry (the CPC entries, validating event times against the system clock), built once.
pub fn default_registry() -> Result<&'static Registry> {
    static DEFAULT: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| rtb_ops::registry::cpc_registry().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Run(format!("cannot build the built-in registry: {e}")))
}
