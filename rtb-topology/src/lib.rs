//! # rtb-topology
//!
//! Declarative topologies: topics, operators (each one consumer group), sinks and runtime settings,
//! written as a TOML file or with a Rust builder; validated before anything starts; planned into stages
//! (with internal repartition topics where inputs are not co-partitioned); described as text or as a
//! Mermaid diagram; run on the `rtb_stream` runtime. Operator kinds, schemas and sink backends are names
//! looked up in an [`rtb_stream::registry::Registry`]: the built-in one holds the CPC ad system of
//! `shared/SPEC.md` (`rtb_ops::registry`), and a library user registers their own kinds the same way.
//! The `rtb` binary (the CPC system) lives here too.
//!
//! ## Layout
//! - [`model`] — the typed model ([`Topology`], [`TopicSpec`], [`OperatorSpec`], [`SinkSpec`], ...).
//! - [`units`] — durations written as `"5m"` ([`Millis`]) and key field lists ([`KeySpec`]).
//! - [`registry`] — the registry topologies are checked and run with ([`registry::default_registry`]).
//! - [`kind`] — settings every stage has: the watermark defaults.
//! - [`builder`] — [`Topology::builder`] and the built-in CPC topology ([`Topology::cpc_default`]).
//! - [`source`] — reading TOML ([`Topology::from_file`]), with line numbers for errors.
//! - [`validate`] — [`Topology::validate`]: every check, errors naming what and where.
//! - [`plan`] — [`Topology::plan`] / [`Topology::plan_with`]: the [`ExecutionPlan`] a runtime starts.
//! - [`app`] — the plan on the runtime ([`app::wiring::spawn_all`]) and the CPC app's commands.
//! - [`describe`] — the plan as text or Mermaid.
//! - [`cli`] — the `rtb` command line.
//! - [`error`] — the crate's one [`Error`].
//!
//! ## Example
//! ```
//! use rtb_topology::Topology;
//!
//! let cpc = Topology::cpc_default()?;
//! let plan = cpc.plan()?;
//! // conversion-events (4 partitions) is re-keyed into ad-events' 8 partitions before the join.
//! let matcher = plan.stage("conversion-matching").expect("declared");
//! assert_eq!(matcher.inputs, ["conversion-matcher-conversion-events-repartition", "ad-events"]);
//! assert_eq!(plan.topic(&matcher.inputs[0]).map(|t| t.partitions), Some(8));
//! assert_eq!(plan.stage("conversion-matcher-conversion-events-repartition").map(|s| s.kind.as_str()),
//!            Some("repartition"));
//! # Ok::<(), rtb_topology::Error>(())
//! ```

pub mod app;
pub mod builder;
pub mod cli;
pub mod describe;
pub mod error;
pub mod kind;
pub mod model;
pub mod plan;
pub mod registry;
pub mod replay;
pub mod report;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sim;
pub mod source;
pub mod units;
pub mod validate;

pub use builder::{TopologyBuilder, CPC_TOPOLOGY_TOML};
pub use describe::DescribeFormat;
pub use error::{Error, Location, Result};
pub use kind::ResolvedSettings;
pub use model::{
    OperatorSpec, RepartitionSpec, RuntimeSettings, SinkSpec, TopicSpec, Topology, WatermarkSettings,
};
pub use registry::Registry;
pub use plan::{ExecutionPlan, PlannedTopic, RepartitionInfo, Stage};
pub use units::{KeySpec, Millis};
