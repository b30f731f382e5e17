//! The one error type of `rtb-topology`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;


/// Where in a topology file something was written.
///
/// Lines and columns count from 1. Topologies made with the Rust builder have no file, so their errors carry
/// no location (`None` in the variants' `at` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, when the topology was read from one (not for [`Topology::from_toml_str`](crate::Topology)).
    pub path: Option<Arc<Path>>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(
                f,
                "{}, line {}, column {}",
                p.display(),
                self.line,
                self.column
            ),
            None => write!(f, "line {}, column {}", self.line, self.column),
        }
    }
}

/// Formats an optional location as a suffix: ` (at line 3, column 5)` or nothing.
struct At<'a>(&'a Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(loc) => write!(f, " (at {loc})"),
            None => Ok(()),
        }
    }
}

/// Everything that can fail in `rtb-topology`: reading and validating a topology, and the commands of the
/// `rtb` binary.
///
/// Validation errors name the offending item (topic, operator, sink) and, for topologies read from a file,
/// where it was written ([`Location`]). [`Error::is_invalid_topology`] separates a bad topology or bad usage
/// from a failure while running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The topology file could not be read.
    #[error("cannot read topology file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The topology file is not valid TOML or does not fit the topology format (unknown field, wrong type,
    /// malformed duration ...).
    #[error("invalid topology file{}: {message}", At(at))]
    Parse {
        /// The parser's message.
        message: String,
        /// Where the parser stopped.
        at: Option<Location>,
    },
    /// A topic, operator id or consumer group name is empty or uses characters outside `[A-Za-z0-9._-]`.
    #[error("invalid {what} name `{name}`: {reason}{}", At(at))]
    InvalidName {
        /// `topic`, `operator id`, `consumer group` or `sink`.
        what: &'static str,
        /// The name as written.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
        /// Where it was written.
        at: Option<Location>,
    },
    /// A topic was declared with zero partitions.
    #[error("topic `{topic}` has 0 partitions; it needs at least 1{}", At(at))]
    ZeroPartitions {
        /// The topic.
        topic: String,
        /// Where the partition count was written.
        at: Option<Location>,
    },
    /// Two topics have the same name (also: a repartition topic that clashes with a declared one).
    #[error("topic `{topic}` is declared twice{}", At(at))]
    DuplicateTopic {
        /// The topic.
        topic: String,
        /// Where the second declaration is.
        at: Option<Location>,
    },
    /// An operator names a topic that is not declared.
    #[error("unknown topic `{topic}` ({role} of operator `{operator}`){}", At(at))]
    UnknownTopic {
        /// The topic as written.
        topic: String,
        /// The operator naming it.
        operator: String,
        /// `input`, `output` or `repartition input`.
        role: &'static str,
        /// Where it was written.
        at: Option<Location>,
    },
    /// Two operators have the same id.
    #[error("duplicate operator id `{id}`{}", At(at))]
    DuplicateOperatorId {
        /// The id.
        id: String,
        /// Where the second one is.
        at: Option<Location>,
    },
    /// Two operators use the same consumer group. A group that reads several topics is one operator with
    /// several inputs; the only legitimate sharing (a repartition stage and its consumer) is made by
    /// [`Topology::plan`](crate::Topology::plan), never declared.
    #[error("consumer group `{group}` is used by operators `{first}` and `{second}`; each operator needs its own group{}", At(at))]
    DuplicateGroup {
        /// The group.
        group: String,
        /// The operator declaring it first.
        first: String,
        /// The operator declaring it again.
        second: String,
        /// Where the second declaration is.
        at: Option<Location>,
    },
    /// An operator of kind `repartition` was declared; repartitions are declared on the consuming operator.
    #[error("operator `{operator}` has kind `repartition`, which is internal: declare a `repartition` on the operator that needs it{}", At(at))]
    InternalKind {
        /// The operator.
        operator: String,
        /// Where the kind was written.
        at: Option<Location>,
    },
    /// An operator names a kind that is not registered.
    #[error("operator `{operator}`: unknown kind `{kind}` (registered: {known}){}", At(at))]
    UnknownKind {
        /// The operator.
        operator: String,
        /// The kind as written.
        kind: String,
        /// The registered kinds.
        known: String,
        /// Where the kind was written.
        at: Option<Location>,
    },
    /// A topic names a schema that is not registered.
    #[error("topic `{topic}`: unknown schema `{schema}` (registered: {known}){}", At(at))]
    UnknownSchema {
        /// The topic.
        topic: String,
        /// The schema as written.
        schema: String,
        /// The registered schemas.
        known: String,
        /// Where the schema was written.
        at: Option<Location>,
    },
    /// A sink names a kind no backend is registered for.
    #[error("sink `{sink}`: unknown sink kind `{kind}` (registered: {known}){}", At(at))]
    UnknownSinkKind {
        /// The sink.
        sink: String,
        /// The kind as written.
        kind: String,
        /// The registered sink kinds.
        known: String,
        /// Where the kind was written.
        at: Option<Location>,
    },
    /// An operator's inputs do not fit its kind (count or event schema).
    #[error(
        "operator `{operator}` (kind {kind}) expects inputs {expected}, found {found}{}",
        At(at)
    )]
    WrongInputs {
        /// The operator.
        operator: String,
        /// Its kind (boxed: keeps the error small).
        kind: Box<str>,
        /// What the kind takes.
        expected: Box<str>,
        /// What was declared.
        found: Box<str>,
        /// Where the inputs were written.
        at: Option<Location>,
    },
    /// An operator's outputs do not fit its kind (count or event schema).
    #[error(
        "operator `{operator}` (kind {kind}) produces {expected}, declared outputs {found}{}",
        At(at)
    )]
    WrongOutputs {
        /// The operator.
        operator: String,
        /// Its kind (boxed: keeps the error small).
        kind: Box<str>,
        /// What the kind produces.
        expected: Box<str>,
        /// What was declared.
        found: Box<str>,
        /// Where the outputs were written.
        at: Option<Location>,
    },
    /// An operator's key does not fit its kind (missing, or a field the kind is not keyed by).
    #[error(
        "operator `{operator}` (kind {kind}) cannot be keyed by {key}: {expected}{}",
        At(at)
    )]
    WrongKey {
        /// The operator.
        operator: String,
        /// Its kind (boxed: keeps the error small).
        kind: Box<str>,
        /// The key as declared (`none` when absent).
        key: Box<str>,
        /// What the kind accepts.
        expected: Box<str>,
        /// Where the key was written.
        at: Option<Location>,
    },
    /// An operator writes a sink that is not declared.
    #[error("unknown sink `{sink}` (written by operator `{operator}`){}", At(at))]
    UnknownSink {
        /// The sink as written.
        sink: String,
        /// The operator naming it.
        operator: String,
        /// Where it was written.
        at: Option<Location>,
    },
    /// An operator's sinks do not fit its kind (it needs a cache, a database, both or none).
    #[error(
        "operator `{operator}` (kind {kind}) writes {expected}, declared sinks {found}{}",
        At(at)
    )]
    WrongSinks {
        /// The operator.
        operator: String,
        /// Its kind (boxed: keeps the error small).
        kind: Box<str>,
        /// What the kind writes.
        expected: Box<str>,
        /// What was declared.
        found: Box<str>,
        /// Where the sinks were written.
        at: Option<Location>,
    },
    /// Two sinks have the same name.
    #[error("sink `{sink}` is declared twice{}", At(at))]
    DuplicateSink {
        /// The sink.
        sink: String,
        /// Where the second declaration is.
        at: Option<Location>,
    },
    /// A sink names a backend that is not registered for its kind (not built into this binary, or unable
    /// to serve that kind).
    #[error(
        "sink `{sink}`: backend `{backend}` is not available for sink kind `{kind}` in this build (available: {available}){}",
        At(at)
    )]
    BackendUnavailable {
        /// The sink.
        sink: String,
        /// The backend.
        backend: Box<str>,
        /// The sink's kind (boxed: keeps the error small).
        kind: Box<str>,
        /// Backends registered for that kind.
        available: Box<str>,
        /// Where the backend was written.
        at: Option<Location>,
    },
    /// A sink's options do not fit its backend (a `url` for a backend that takes a `path` ...).
    #[error("sink `{sink}` (kind {kind}): {reason}{}", At(at))]
    InvalidSink {
        /// The sink.
        sink: String,
        /// Its kind (boxed: keeps the error small).
        kind: Box<str>,
        /// What is wrong.
        reason: String,
        /// Where it was written.
        at: Option<Location>,
    },
    /// A keyed operator's inputs are not co-partitioned and no repartition makes them so.
    #[error("operator `{operator}`: inputs are not co-partitioned: {detail}; declare a `repartition` of one input{}", At(at))]
    NotCoPartitioned {
        /// The operator.
        operator: String,
        /// Which inputs differ and how (`conversion-events has 4 partitions, ad-events 8`).
        detail: String,
        /// Where the operator's inputs were written.
        at: Option<Location>,
    },
    /// A declared repartition cannot be applied.
    #[error(
        "operator `{operator}`: invalid repartition of `{input}`: {reason}{}",
        At(at)
    )]
    InvalidRepartition {
        /// The operator.
        operator: String,
        /// The input to repartition.
        input: String,
        /// Why it is invalid.
        reason: String,
        /// Where it was written.
        at: Option<Location>,
    },
    /// An operator setting is unknown to the operator's kind, of the wrong type, or out of range.
    #[error("operator `{operator}`: setting `{setting}`: {reason}{}", At(at))]
    InvalidSetting {
        /// The operator.
        operator: String,
        /// The setting (`settings` when the error is about the table as a whole).
        setting: String,
        /// What is wrong.
        reason: String,
        /// Where it was written.
        at: Option<Location>,
    },
    /// A runtime setting is out of range.
    #[error("runtime setting `{setting}` {reason}{}", At(at))]
    InvalidRuntime {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
        /// Where it was written.
        at: Option<Location>,
    },
    /// An operator or sink failed.
    #[error(transparent)]
    Ops(#[from] rtb_ops::Error),
    /// The run or replay failed.
    #[error("{0}")]
    Run(String),
    /// The topology could not be written as TOML.
    #[error("cannot write topology as TOML: {message}")]
    Serialize {
        /// The serialiser's message.
        message: String,
    },
    /// Writing the command's output failed.
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    /// The streaming runtime failed.
    #[error(transparent)]
    Stream(#[from] rtb_stream::Error),
}

impl Error {
    /// True for errors that mean the topology (or the way it was given) is invalid, as opposed to a failure
    /// while running. The `rtb` binary exits with status 2 for these and 1 for the others.
    pub fn is_invalid_topology(&self) -> bool {
        !matches!(
            self,
            Error::Ops(_) | Error::Run(_) | Error::Output(_) | Error::Stream(_)
        )
    }

    /// The location in the topology file, when the error has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Parse { at, .. }
            | Error::InvalidName { at, .. }
            | Error::ZeroPartitions { at, .. }
            | Error::DuplicateTopic { at, .. }
            | Error::UnknownTopic { at, .. }
            | Error::DuplicateOperatorId { at, .. }
            | Error::DuplicateGroup { at, .. }
            | Error::InternalKind { at, .. }
            | Error::UnknownKind { at, .. }
            | Error::UnknownSchema { at, .. }
            | Error::UnknownSinkKind { at, .. }
            | Error::WrongInputs { at, .. }
            | Error::WrongOutputs { at, .. }
            | Error::WrongKey { at, .. }
            | Error::UnknownSink { at, .. }
            | Error::WrongSinks { at, .. }
            | Error::DuplicateSink { at, .. }
            | Error::BackendUnavailable { at, .. }
            | Error::InvalidSink { at, .. }
            | Error::NotCoPartitioned { at, .. }
            | Error::InvalidRepartition { at, .. }
            | Error::InvalidSetting { at, .. }
            | Error::InvalidRuntime { at, .. } => at.as_ref(),
            Error::Io { .. }
            | Error::Ops(_)
            | Error::Run(_)
            | Error::Serialize { .. }
            | Error::Output(_)
            | Error::Stream(_) => None,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
