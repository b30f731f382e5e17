//! The typed topology model: topics, operators (with their consumer groups), sinks and runtime settings.
//!
//! The TOML file format is this model deserialised with `deny_unknown_fields`; the Rust builder
//! ([`Topology::builder`](crate::Topology::builder)) produces the same values. Operator kinds, schemas and
//! sink kinds/backends are names looked up in an [`rtb_stream::registry::Registry`] when the topology is
//! validated: the built-in one ([`crate::registry::default_registry`]) holds the CPC system's
//! (`rtb_ops::registry`), and a library user registers their own the same way.
//!
//! ## File format
//! Durations are written `"500ms"`, `"30s"`, `"5m"`, `"24h"`, `"7d"`; keys as one field or a list.
//! ```toml
//! [runtime]                        # optional; these are the defaults
//! data_dir = "rtb-data"
//! commit_interval = "200ms"
//! max_poll_records = 1024
//! max_ahead = "1h"                 # timestamp outliers ahead of the data are set aside ("0s": off)
//! max_behind = "24h"               # records further behind the watermark go to the late output ("0s": off)
//!
//! [[topic]]
//! name = "ad-events"
//! schema = "ad-events"             # a registered schema
//! partitions = 8
//! retention = "7d"                 # optional: forever
//! key = "device_id"                # optional: round-robin
//!
//! [[operator]]
//! id = "performance"               # stable, unique
//! kind = "performance"             # a registered operator kind
//! group = "performance-aggregator" # consumer group and state namespace, unique; no `/`
//! inputs = ["ad-events"]           # in the order the kind reads them
//! key = "campaign_id"              # required by some kinds
//! outputs = []                     # topics it produces to, in the order the kind produces them
//! sinks = ["cache", "database"]    # one sink of each kind the kind writes
//! repartition = [{ input = "ad-events", by = "campaign_id" }]   # `by`, `partitions` optional
//! settings = { window = "5m", late_policy = "correct" }         # the kind's own settings (typed;
//!                                                               # unknown fields rejected)
//! watermark = { max_out_of_orderness = "5s", idle_timeout = "10s" }  # optional
//!
//! [[sink]]
//! name = "cache"
//! kind = "cache"                   # a registered sink kind
//! backend = "embedded"             # a backend registered for that kind (default `embedded`)
//! path = "cache"                   # file-keeping backends: directory under data_dir (default: the name)
//! url = "redis://..."              # server backends: where to connect
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

/// A topic: a named, partitioned log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name (`[A-Za-z0-9._-]`).
    pub name: String,
    /// The events it carries (a registered schema name).
    pub schema: String,
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
    pub fn new(name: impl Into<String>, schema: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            schema: schema.into(),
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
            retention: self.retention.map(Millis::to_std),
        }
    }
}

/// One operator: a kind, the consumer group it reads with, its input and output topics, the sinks it
/// writes, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Stable id (`[A-Za-z0-9._-]`): names the operator in errors, metrics and state.
    pub id: String,
    /// What it does: a registered operator kind.
    pub kind: String,
    /// Its consumer group: the runtime's group for offsets and state (a repartition stage's group is
    /// derived from it). Unique among operators; renaming it starts the operator from scratch.
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
    /// The kind's own settings (its typed settings, see the kind's documentation); absent fields take the
    /// kind's defaults, unknown ones are rejected.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Watermark settings; absent ones take the defaults.
    #[serde(default, skip_serializing_if = "WatermarkSettings::is_empty")]
    pub watermark: WatermarkSettings,
}

impl OperatorSpec {
    /// An operator with no inputs, outputs, sinks, key or settings yet.
    pub fn new(id: impl Into<String>, kind: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            group: group.into(),
            inputs: Vec::new(),
            key: None,
            outputs: Vec::new(),
            sinks: Vec::new(),
            repartition: Vec::new(),
            settings: serde_json::Map::new(),
            watermark: WatermarkSettings::default(),
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
    /// Sets one of the kind's settings (`.setting("window", Millis::minutes(5))`,
    /// `.setting("prior_strength", 50)`), as `settings = { name = value }` in a file.
    pub fn setting(mut self, name: impl Into<String>, value: impl serde::Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.settings.insert(name.into(), value);
        self
    }
    /// Sets the watermark's allowed out-of-orderness.
    pub fn max_out_of_orderness(mut self, delay: Millis) -> Self {
        self.watermark.max_out_of_orderness = Some(delay);
        self
    }
    /// Sets the idle timeout after which a silent partition stops holding the watermark back.
    pub fn idle_timeout(mut self, timeout: Millis) -> Self {
        self.watermark.idle_timeout = Some(timeout);
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

/// Watermark settings of an operator as written; `None` takes the default
/// ([`crate::kind::DEFAULT_MAX_OUT_OF_ORDERNESS`], [`crate::kind::DEFAULT_IDLE_TIMEOUT`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSettings {
    /// The watermark trails the highest timestamp seen by this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_out_of_orderness: Option<Millis>,
    /// A partition silent this long (processing time) stops holding the watermark back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Millis>,
}

impl WatermarkSettings {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == WatermarkSettings::default()
    }
}

/// The backend a sink uses when its file names none.
pub const DEFAULT_BACKEND: &str = "embedded";

fn default_backend() -> String {
    DEFAULT_BACKEND.to_owned()
}

/// A sink operators write to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Sink name, referred to by operators' `sinks`.
    pub name: String,
    /// What it stores: a registered sink kind.
    pub kind: String,
    /// Where it keeps its data: a backend registered for the kind (default `embedded`).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// File-keeping backends: directory under the data directory (default: the sink's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Server backends: the URL to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl SinkSpec {
    /// A sink on the default (`embedded`) backend.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            backend: default_backend(),
            path: None,
            url: None,
        }
    }
    /// Sets the backend.
    pub fn backend(mut self, backend: impl Into<String>) -> Self {
        self.backend = backend.into();
        self
    }
    /// Sets the embedded directory (relative to the data directory).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }
    /// Sets the server URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
    /// File-keeping backends: the sink's directory, given the data directory.
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
    /// Timestamp outliers (a client with a bad clock): a record more than this far ahead of the data seen
    /// (and, in a live run, of the wall clock), whose next record is back at the old time, is set aside as a
    /// dead letter without moving the watermark (default 1 h; `"0s"` turns the check off). Applies to
    /// topics written from outside the topology.
    pub max_ahead: Millis,
    /// The correction horizon: a record more than this far behind its stage's watermark reaches no
    /// operator and goes to the late output (default 24 h, SPEC §4). An operator's own `max_lateness`
    /// cannot reach further back than this.
    pub max_behind: Millis,
    /// `rtb run` on a Kafka cluster at this `HOST:PORT` (topics and operators' state there, sinks under
    /// `data_dir`) instead of the embedded log; `--kafka` / `RTB_KAFKA` override it (default: none).
    pub kafka: Option<String>,
    /// Prefix of every topic on the Kafka cluster; `--topic-prefix` overrides it (default: none).
    pub topic_prefix: String,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("rtb-data"),
            commit_interval: Millis::ms(200),
            max_poll_records: 1024,
            max_ahead: Millis::hours(1),
            max_behind: Millis::hours(24),
            kafka: None,
            topic_prefix: String::new(),
        }
    }
}
