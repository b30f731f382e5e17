//! The Rust builder: the same model as a topology file, written in code.

use std::path::PathBuf;

use crate::error::Result;
use crate::model::{OperatorSpec, RuntimeSettings, SinkSpec, TopicSpec, Topology};
use crate::units::Millis;

/// The CPC topology file shipped with the repository (`topologies/cpc.toml`).
pub const CPC_TOPOLOGY_TOML: &str = include_str!("../../topologies/cpc.toml");

/// Builds a [`Topology`] in code. Items keep the order they are added in, as in a file.
///
/// ```
/// use rtb_topology::{OperatorSpec, SinkSpec, TopicSpec, Topology, Millis};
///
/// let topology = Topology::builder()
///     .topic(TopicSpec::new("ad-events", "ad-events", 8)
///         .retention(Millis::days(7))
///         .key("device_id"))
///     .operator(OperatorSpec::new("balance", "balance", "balance-processor")
///         .input("ad-events")
///         .sink("database"))
///     .sink(SinkSpec::new("database", "database"))
///     .build()?;
/// assert_eq!(topology.plan()?.stages.len(), 1);
/// # Ok::<(), rtb_topology::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TopologyBuilder {
    topology: Topology,
}

impl Topology {
    /// An empty builder.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// The CPC topology of SPEC §1-2, parsed from the copy of `topologies/cpc.toml` built into the crate.
    pub fn cpc_default() -> Result<Topology> {
        Topology::from_toml_str(CPC_TOPOLOGY_TOML)
    }
}

impl TopologyBuilder {
    /// Adds a topic.
    pub fn topic(mut self, topic: TopicSpec) -> Self {
        self.topology.topics.push(topic);
        self
    }
    /// Adds an operator.
    pub fn operator(mut self, operator: OperatorSpec) -> Self {
        self.topology.operators.push(operator);
        self
    }
    /// Adds a sink.
    pub fn sink(mut self, sink: SinkSpec) -> Self {
        self.topology.sinks.push(sink);
        self
    }
    /// Replaces the runtime settings.
    pub fn runtime(mut self, runtime: RuntimeSettings) -> Self {
        self.topology.runtime = runtime;
        self
    }
    /// Sets the data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.topology.runtime.data_dir = dir.into();
        self
    }
    /// Sets the commit interval.
    pub fn commit_interval(mut self, interval: Millis) -> Self {
        self.topology.runtime.commit_interval = interval;
        self
    }
    /// Validates (against the built-in registry) and returns the topology.
    pub fn build(self) -> Result<Topology> {
        self.topology.validate()?;
        Ok(self.topology)
    }
    /// Validates against `registry` and returns the topology.
    pub fn build_with(self, registry: &crate::Registry) -> Result<Topology> {
        self.topology.validate_with_registry(registry)?;
        Ok(self.topology)
    }
    /// Returns the topology without validating it (validate it before running it).
    pub fn build_unvalidated(self) -> Topology {
        self.topology
    }
}
