//! The typed topology model: topics, operators (with their consumer groups), sinks and runtime settings.
//!
//! The TOML file format is this model deserialised with `deny_unknown_fields`; the Rust builder
//! ([`Topology::builder`](crate::Topology::builder)) produces the same values. Per-kind rules (which inputs,
//! outputs, sinks and keys a kind takes, and its default settings) live in [`crate::kind`].
//!
//! ## File format
//! Durations are written `"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`; keys as one field or a list.
//! ```toml
//! [runtime]                        # optional; these are the defaults
//! data_dir = "rtb-data"
//! commit_interval = "200ms"
//! max_poll_records = 1024
//!
//! [[topic]]
//! name = "ad-events"
//! schema = "ad-events"             # campaign-events | ad-events | conversion-events | compensation-events
//! partitions = 8
//! retention = "7d"                 # optional: forever
//! key = "device_id"                # optional: round-robin
//!
//! [[operator]]
//! id = "performance"               # stable, unique
//! kind = "performance"             # ranking | performance | conversion-matching | duplicate-detection
//!                                  # | balance | budget-monitor | compensation
//! group = "performance-aggregator" # consumer group, unique
//! inputs = ["ad-events"]
//! key = "campaign_id"              # required for the four statements
//! outputs = []                     # topics it produces to
//! sinks = ["cache"]
//! repartition = [{ input = "ad-events", by = "campaign_id" }]   # `by`, `partitions` optional
//! settings = { window = "5m", grace = "1m", late_policy = "correct", max_lateness = "1h",
//!              max_out_of_orderness = "5s", idle_timeout = "10s" }  # all optional
//!
//! [[sink]]
//! name = "cache"
//! kind = "cache"                   # cache | database
//! backend = "embedded"             # embedded (default) | redis | postgres (reserved, not in this build)
//! path = "cache"                   # embedded: directory under data_dir (default: the name)
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::{KeySpec, Millis};

/// A whole topology: what the `rtb` binary runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Topics (`[[topic]]` in a file), in declaration order.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicSpec>,
    /// Operators (`[[operator]]`), in declaration order; each is one consumer group.
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorSpec>,
    /// Sinks (`[[sink]]`): the cache and the database operators write to.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkSpec>,
    /// Runtime settings (`[runtime]`).
    #[serde(default)]
    pub runtime: RuntimeSettings,
}

/// The event schema a topic carries (SPEC §3); operator kinds accept inputs by schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSchema {
    /// Campaign lifecycle events from the admin console and the budget monitor.
    CampaignEvents,
    /// Impressions, clicks and conversions reported by shoppers' apps.
    AdEvents,
    /// Conversions reported by external order systems.
    ConversionEvents,
    /// Refunds for duplicate clicks, produced by duplicate detection.
    CompensationEvents,
}

impl EventSchema {
    /// The name used in topology files (`ad-events` ...).
    pub fn name(self) -> &'static str {
        match self {
            EventSchema::CampaignEvents => "campaign-events",
            EventSchema::AdEvents => "ad-events",
            EventSchema::ConversionEvents => "conversion-events",
            EventSchema::CompensationEvents => "compensation-events",
        }
    }
    /// True for schemas produced by the API server (outside the topology).
    pub fn is_external(self) -> bool {
        !matches!(self, EventSchema::CompensationEvents)
    }
}

/// A topic: a named, partitioned log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name (`[A-Za-z0-9._-]`).
    pub name: String,
    /// The events it carries.
    pub schema: EventSchema,
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// How long records are kept; absent keeps them forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Millis>,
    /// The fields records are partitioned by (Kafka's murmur2 partitioner over the key); absent for
    /// round-robin partitioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySpec>,
}

impl TopicSpec {
    /// A topic with no retention limit and no key.
    pub fn new(name: impl Into<String>, schema: EventSchema, partitions: u32) -> Self {
        Self {
            name: name.into(),
            schema,
            partitions,
            retention: None,
            key: None,
        }
    }
    /// Sets the retention.
    pub fn retention(mut self, retention: Millis) -> Self {
        self.retention = Some(retention);
        self
    }
    /// Sets the partitioning key.
    pub fn key(mut self, key: impl Into<KeySpec>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// The embedded log's configuration for this topic.
    pub fn topic_config(&self) -> rtb_stream::log::TopicConfig {
        rtb_stream::log::TopicConfig {
            partitions: self.partitions,
            retention_ms: self.retention.map(Millis::as_ms),
        }
    }
}

/// What an operator does: the CPC statements and workers of SPEC §1, plus the internal repartition stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorKind {
    /// Statement: campaign events (+ CTR from the metrics) → ranking cache per placement and category.
    Ranking,
    /// Statement: ad events → 5-minute CTR/CVR windows → metrics cache.
    Performance,
    /// Statement: conversions + clicks → 24-hour last-click attribution → conversion results.
    ConversionMatching,
    /// Statement: clicks → 5-minute dedup window per device and ad → compensation events.
    DuplicateDetection,
    /// Worker: each click deducts its price from the advertiser balance.
    Balance,
    /// Worker: each click adds to the campaign's daily spend; alerts and pauses.
    BudgetMonitor,
    /// Worker: each compensation event refunds the advertiser balance.
    Compensation,
    /// Internal: re-keys one topic into an internal topic so a keyed operator's inputs are co-partitioned.
    /// Made by [`Topology::plan`](crate::Topology::plan); never declared in a topology.
    Repartition,
}

impl OperatorKind {
    /// The kinds a topology may declare (all but [`OperatorKind::Repartition`]).
    pub const DECLARABLE: [OperatorKind; 7] = [
        OperatorKind::Ranking,
        OperatorKind::Performance,
        OperatorKind::ConversionMatching,
        OperatorKind::DuplicateDetection,
        OperatorKind::Balance,
        OperatorKind::BudgetMonitor,
        OperatorKind::Compensation,
    ];

    /// The name used in topology files (`conversion-matching` ...).
    pub fn name(self) -> &'static str {
        match self {
            OperatorKind::Ranking => "ranking",
            OperatorKind::Performance => "performance",
            OperatorKind::ConversionMatching => "conversion-matching",
            OperatorKind::DuplicateDetection => "duplicate-detection",
            OperatorKind::Balance => "balance",
            OperatorKind::BudgetMonitor => "budget-monitor",
            OperatorKind::Compensation => "compensation",
            OperatorKind::Repartition => "repartition",
        }
    }
    /// True for the four stream statements, false for the workers and the internal repartition.
    pub fn is_statement(self) -> bool {
        matches!(
            self,
            OperatorKind::Ranking
                | OperatorKind::Performance
                | OperatorKind::ConversionMatching
                | OperatorKind::DuplicateDetection
        )
    }
}

impl std::fmt::Display for OperatorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One operator: a kind, the consumer group it reads with, its input and output topics, the sinks it
/// writes, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Stable id (`[A-Za-z0-9._-]`): names the operator in errors, metrics and state.
    pub id: String,
    /// What it does.
    pub kind: OperatorKind,
    /// Its consumer group (offsets and state are kept per group). Unique among operators.
    pub group: String,
    /// Topics it reads, in the order its kind expects (conversion matching: conversions, then clicks).
    pub inputs: Vec<String>,
    /// The field(s) it is keyed by. A keyed operator needs its inputs partitioned by (a subset of) this
    /// key with equal partition counts, or a declared [`RepartitionSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySpec>,
    /// Topics it produces to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Sinks it writes (by sink name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<String>,
    /// Inputs to re-key into internal topics before this operator reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repartition: Vec<RepartitionSpec>,
    /// Windows, grace, late policy and watermark settings; absent ones take the kind's defaults.
    #[serde(default, skip_serializing_if = "OperatorSettings::is_empty")]
    pub settings: OperatorSettings,
}

impl OperatorSpec {
    /// An operator with no inputs, outputs, sinks, key or settings yet.
    pub fn new(id: impl Into<String>, kind: OperatorKind, group: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            group: group.into(),
            inputs: Vec::new(),
            key: None,
            outputs: Vec::new(),
            sinks: Vec::new(),
            repartition: Vec::new(),
            settings: OperatorSettings::default(),
        }
    }
    /// Adds an input topic.
    pub fn input(mut self, topic: impl Into<String>) -> Self {
        self.inputs.push(topic.into());
        self
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<KeySpec>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Adds an output topic.
    pub fn output(mut self, topic: impl Into<String>) -> Self {
        self.outputs.push(topic.into());
        self
    }
    /// Adds a sink it writes.
    pub fn sink(mut self, sink: impl Into<String>) -> Self {
        self.sinks.push(sink.into());
        self
    }
    /// Declares a repartition of one of its inputs.
    pub fn repartition(mut self, repartition: RepartitionSpec) -> Self {
        self.repartition.push(repartition);
        self
    }
    /// Replaces all settings.
    pub fn settings(mut self, settings: OperatorSettings) -> Self {
        self.settings = settings;
        self
    }
    /// Sets the window size (performance: tumbling window; conversion matching: attribution window;
    /// duplicate detection: dedup window).
    pub fn window(mut self, window: Millis) -> Self {
        self.settings.window = Some(window);
        self
    }
    /// Sets the grace period after a window's end.
    pub fn grace(mut self, grace: Millis) -> Self {
        self.settings.grace = Some(grace);
        self
    }
    /// Sets the late-record policy.
    pub fn late_policy(mut self, policy: LatePolicyKind) -> Self {
        self.settings.late_policy = Some(policy);
        self
    }
    /// Sets how long a `correct` late policy keeps windows open for corrections.
    pub fn max_lateness(mut self, lateness: Millis) -> Self {
        self.settings.max_lateness = Some(lateness);
        self
    }
    /// Sets the watermark's allowed out-of-orderness.
    pub fn max_out_of_orderness(mut self, delay: Millis) -> Self {
        self.settings.max_out_of_orderness = Some(delay);
        self
    }
    /// Sets the idle timeout after which a silent partition stops holding the watermark back.
    pub fn idle_timeout(mut self, timeout: Millis) -> Self {
        self.settings.idle_timeout = Some(timeout);
        self
    }
}

/// A declared repartition: records of `input` are re-keyed `by` the given fields into the internal topic
/// `<group>-<input>-repartition`, which the operator then reads instead of `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepartitionSpec {
    /// The input topic to repartition (one of the operator's inputs).
    pub input: String,
    /// The new key; defaults to the operator's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<KeySpec>,
    /// Partitions of the internal topic; defaults to the partition count of the operator's other inputs
    /// (or of `input` itself when there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

impl RepartitionSpec {
    /// Repartition `input` by the operator's key into the co-partitioned partition count.
    pub fn of(input: impl Into<String>) -> Self {
        Self {
            input: input.into(),
            by: None,
            partitions: None,
        }
    }
    /// Sets the new key.
    pub fn by(mut self, key: impl Into<KeySpec>) -> Self {
        self.by = Some(key.into());
        self
    }
    /// Sets the partition count of the internal topic.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }
}

/// What a windowed operator does with a record that arrives after its window was completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicyKind {
    /// Count it and drop it.
    Drop,
    /// Send it to the late-records output.
    SideOutput,
    /// Update the emitted window and emit a correction (for `max_lateness`; later ones go to the output).
    Correct,
}

/// Per-operator settings as written; `None` takes the kind's default (see [`crate::ResolvedSettings`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSettings {
    /// Window size (windowed kinds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Millis>,
    /// Grace after a window's end before its result is final (windowed kinds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Millis>,
    /// Late-record policy (windowed kinds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_policy: Option<LatePolicyKind>,
    /// How long windows stay correctable (only with `late_policy = "correct"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lateness: Option<Millis>,
    /// The watermark trails the highest timestamp seen by this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_out_of_orderness: Option<Millis>,
    /// A partition silent this long (processing time) stops holding the watermark back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Millis>,
}

impl OperatorSettings {
    /// True when nothing is set (every setting takes the kind's default).
    pub fn is_empty(&self) -> bool {
        *self == OperatorSettings::default()
    }
}

/// What a sink stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Rankings, metrics and budget counters (Redis in production).
    Cache,
    /// Balances, ledger, conversion results and campaign status (PostgreSQL in production).
    Database,
}

impl SinkKind {
    /// The name used in topology files.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Cache => "cache",
            SinkKind::Database => "database",
        }
    }
}

/// Where a sink keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// sled-backed, under the runtime's data directory. The only backend of this build.
    #[default]
    Embedded,
    /// A Redis server (cache sinks). Reserved: not available in this build.
    Redis,
    /// A PostgreSQL server (database sinks). Reserved: not available in this build.
    Postgres,
}

impl Backend {
    /// The name used in topology files.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Redis => "redis",
            Backend::Postgres => "postgres",
        }
    }
}

/// A sink operators write to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Sink name, referred to by operators' `sinks`.
    pub name: String,
    /// What it stores.
    pub kind: SinkKind,
    /// Where it keeps its data (default `embedded`).
    #[serde(default)]
    pub backend: Backend,
    /// Embedded backend: directory under the data directory (default: the sink's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Redis/PostgreSQL backends: the server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl SinkSpec {
    /// An embedded sink.
    pub fn new(name: impl Into<String>, kind: SinkKind) -> Self {
        Self {
            name: name.into(),
            kind,
            backend: Backend::Embedded,
            path: None,
            url: None,
        }
    }
    /// Sets the backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    /// Sets the embedded directory (relative to the data directory).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }
    /// Sets the server URL (Redis/PostgreSQL).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    /// Embedded backend: the sink's directory, given the data directory.
    pub fn embedded_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        data_dir.join(
            self.path
                .clone()
                .unwrap_or_else(|| PathBuf::from(&self.name)),
        )
    }
}

/// Settings of the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Where the embedded log, state and embedded sinks live (default `rtb-data`).
    pub data_dir: PathBuf,
    /// How often tasks commit state and offsets together (default 200 ms).
    pub commit_interval: Millis,
    /// Most records a task reads from one partition per poll (default 1024).
    pub max_poll_records: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("rtb-data"),
            commit_interval: Millis::ms(200),
            max_poll_records: 1024,
        }
    }
}
