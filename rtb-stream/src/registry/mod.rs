//! An open registry of operator kinds, event schemas and sink backends, by name.
//!
//! A declarative topology (a file, or a builder producing the same plan) names what each operator is
//! (`kind = "..."`), what each topic carries (`schema = "..."`) and where each sink keeps its data
//! (`kind` + `backend`). This module is where those names are defined: a product crate (or a library
//! user) registers its kinds, schemas and sink backends in a [`Registry`]; the topology layer validates,
//! plans, describes and spawns through it without knowing any kind by name.
//!
//! - [`OperatorKind`]: a kind's name, its typed settings (deserialised from the topology's `settings`
//!   table with unknown fields rejected), its [`KindRules`] (input/output schemas, sink kinds, key fields)
//!   and its factory ([`OperatorKind::spawn`]), which starts the stage on a [`Runtime`] given its
//!   [`StageContext`] (job configuration, resolved topic names, opened sinks).
//! - [`Schema`]: an event schema by name, with key extraction for repartition stages.
//! - [`SinkBackend`]: opens a sink of one kind (`cache`, `metrics-store` ...) on one backend (`embedded`
//!   ...), returning an [`OpenedSink`] the factories downcast to the handle type they expect.
//!
//! The name `repartition` is reserved for the planner's internal repartition stages.
//!
//! ```
//! use rtb_stream::registry::{JsonSchema, KindRules, OperatorKind, Registry, StageContext};
//! use rtb_stream::runtime::Runtime;
//! use serde::{Deserialize, Serialize};
//!
//! /// Settings of `noop`: written in the topology file as `settings = { verbose = true }`.
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct NoopSettings { verbose: bool }
//!
//! struct Noop;
//! impl OperatorKind for Noop {
//!     type Settings = NoopSettings;
//!     fn name(&self) -> &str { "noop" }
//!     fn rules(&self) -> KindRules { KindRules::new().input("lines") }
//!     fn spawn(&self, _rt: &mut Runtime, _stage: StageContext<'_>, _s: &NoopSettings) -> rtb_stream::Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! let mut registry = Registry::new();
//! registry.register_schema(JsonSchema::new("lines"))?;
//! registry.register_kind(Noop)?;
//! let kind = registry.kind("noop").expect("registered");
//! let resolved = kind.resolve_settings(&serde_json::json!({ "verbose": true })).expect("valid");
//! assert_eq!(resolved, serde_json::json!({ "verbose": true }));
//! let err = kind.resolve_settings(&serde_json::json!({ "verbos": true })).expect_err("unknown field");
//! assert_eq!(err.field.as_deref(), Some("verbos"));
//! # Ok::<(), rtb_stream::Error>(())
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::log::LogRecord;
use crate::runtime::{JobConfig, Runtime};

mod millis;

pub use millis::Millis;

/// The kind name reserved for the planner's internal repartition stages.
pub const REPARTITION: &str = "repartition";

/// Why an operator's settings (or a sink's options) are not acceptable: the field (when one is to blame)
/// and the reason, so the topology layer can point at the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The offending field, when the error is about one.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl SettingsError {
    /// An error about `field`.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: Some(field.into()), reason: reason.into() }
    }
    /// An error about the settings as a whole.
    pub fn whole(reason: impl Into<String>) -> Self {
        Self { field: None, reason: reason.into() }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "`{field}`: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// What a kind takes and produces, by name: checked by the topology layer before anything starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindRules {
    /// The schemas of its inputs, in the order the kind reads them.
    pub inputs: Vec<String>,
    /// The schemas of the topics it produces to, in order.
    pub outputs: Vec<String>,
    /// The sink kinds it writes, one sink of each.
    pub sinks: Vec<String>,
    /// Sink kinds it also reads, with what it reads (for `describe`).
    pub reads: Vec<(String, String)>,
    /// The fields its key may be made of (a key must be a non-empty subset).
    pub key_fields: Vec<String>,
    /// True when the operator must be keyed.
    pub requires_key: bool,
    /// A word for `describe` (`statement`, `worker` ...; default `operator`).
    pub role: String,
}

impl KindRules {
    /// No inputs, outputs, sinks or key; role `operator`.
    pub fn new() -> Self {
        Self { role: "operator".to_owned(), ..Self::default() }
    }
    /// Adds an input schema.
    pub fn input(mut self, schema: &str) -> Self {
        self.inputs.push(schema.to_owned());
        self
    }
    /// Adds an output schema.
    pub fn output(mut self, schema: &str) -> Self {
        self.outputs.push(schema.to_owned());
        self
    }
    /// Adds a sink kind it writes.
    pub fn sink(mut self, kind: &str) -> Self {
        self.sinks.push(kind.to_owned());
        self
    }
    /// Declares that it reads `what` from its sink of `kind`.
    pub fn reads(mut self, kind: &str, what: &str) -> Self {
        self.reads.push((kind.to_owned(), what.to_owned()));
        self
    }
    /// The fields it may be keyed by; `required` when it must be keyed.
    pub fn key(mut self, fields: &[&str], required: bool) -> Self {
        self.key_fields = fields.iter().map(|f| (*f).to_owned()).collect();
        self.requires_key = required;
        self
    }
    /// Sets the role shown by `describe`.
    pub fn role(mut self, role: &str) -> Self {
        self.role = role.to_owned();
        self
    }
}

/// A stage of another operator of the same plan: its kind and resolved settings (some kinds must agree
/// with a related kind, e.g. a statement that recomputes what another one computes).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStage {
    /// The operator id.
    pub operator: String,
    /// Its kind.
    pub kind: String,
    /// Its resolved settings.
    pub settings: Value,
}

/// Everything a factory needs to start one stage.
#[derive(Debug, Clone)]
pub struct StageContext<'a> {
    /// The job: group (the declared consumer group), inputs (the plan's actual topic names, in the order of
    /// [`KindRules::inputs`]), watermark, commit interval, dead-letter and late topics.
    pub job: JobConfig,
    /// The declared operator id.
    pub operator: &'a str,
    /// The topics it produces to, in the order of [`KindRules::outputs`].
    pub outputs: &'a [String],
    /// Its key fields, when keyed.
    pub key: Option<&'a [String]>,
    /// The sinks it writes, in the order of [`KindRules::sinks`] (one per sink kind).
    pub sinks: Vec<OpenedSink>,
    /// Every operator stage of the plan (this one included).
    pub peers: &'a [PeerStage],
}

impl StageContext<'_> {
    /// The stage's sink of `kind`.
    pub fn sink(&self, kind: &str) -> Result<&OpenedSink> {
        self.sinks.iter().find(|s| s.kind == kind).ok_or_else(|| {
            Error::Config(format!("operator `{}` was given no sink of kind `{kind}`", self.operator))
        })
    }
    /// The output topic at `index` of [`KindRules::outputs`].
    pub fn output(&self, index: usize) -> Result<&str> {
        self.outputs.get(index).map(String::as_str).ok_or_else(|| {
            Error::Config(format!("operator `{}` has no output #{index}", self.operator))
        })
    }
}

/// An operator kind: typed settings, rules and a factory. Register it with [`Registry::register_kind`].
pub trait OperatorKind: Send + Sync + 'static {
    /// Its settings, deserialised from the topology's `settings` table. Use
    /// `#[serde(default, deny_unknown_fields)]` so absent fields take defaults and misspelt ones are
    /// rejected.
    type Settings: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The name used in topology files (`kind = "..."`).
    fn name(&self) -> &str;

    /// Its inputs, outputs, sinks and key rules.
    fn rules(&self) -> KindRules;

    /// Checks values serde cannot (ranges, consistency). Default: everything deserialisable is valid.
    fn check(&self, settings: &Self::Settings) -> std::result::Result<(), SettingsError> {
        let _ = settings;
        Ok(())
    }

    /// Starts the stage on `rt` (usually one [`Runtime::spawn`]).
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, settings: &Self::Settings) -> Result<()>;
}

/// [`OperatorKind`] with its settings as JSON: what the registry stores.
pub trait DynOperatorKind: Send + Sync {
    /// The kind's name.
    fn name(&self) -> &str;
    /// The kind's rules.
    fn rules(&self) -> KindRules;
    /// Deserialises and checks `settings` (an object; `null` means none written) and returns them with
    /// every default filled in.
    fn resolve_settings(&self, settings: &Value) -> std::result::Result<Value, SettingsError>;
    /// Starts the stage with its resolved settings.
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, settings: &Value) -> Result<()>;
}

impl<K: OperatorKind> DynOperatorKind for K {
    fn name(&self) -> &str {
        OperatorKind::name(self)
    }

    fn rules(&self) -> KindRules {
        OperatorKind::rules(self)
    }

    fn resolve_settings(&self, settings: &Value) -> std::result::Result<Value, SettingsError> {
        let typed = typed_settings::<K::Settings>(settings)?;
        self.check(&typed)?;
        serde_json::to_value(&typed).map_err(|e| SettingsError::whole(e.to_string()))
    }

    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, settings: &Value) -> Result<()> {
        let typed = typed_settings::<K::Settings>(settings).map_err(|e| {
            Error::Config(format!("operator `{}`: settings {e}", stage.operator))
        })?;
        OperatorKind::spawn(self, rt, stage, &typed)
    }
}

/// Deserialises settings written as JSON (`null` = none written), naming the field serde complains about.
pub fn typed_settings<T: DeserializeOwned>(settings: &Value) -> std::result::Result<T, SettingsError> {
    let value = match settings {
        Value::Null => Value::Object(serde_json::Map::new()),
        other => other.clone(),
    };
    serde_json::from_value(value.clone()).map_err(|e| {
        let message = e.to_string();
        // serde names unknown and missing fields in backticks; point at a written field it names.
        let named = message
            .split('`')
            .skip(1)
            .step_by(2)
            .find(|name| value.get(name).is_some() || message.starts_with("unknown field"))
            .map(str::to_owned);
        // A wrong type or value is not named by serde: find the written field that fails on its own.
        let field = named.or_else(|| {
            value.as_object()?.iter().find_map(|(name, v)| {
                let alone = Value::Object(std::iter::once((name.clone(), v.clone())).collect());
                match serde_json::from_value::<T>(alone) {
                    Err(e) if !e.to_string().starts_with("missing field") => Some(name.clone()),
                    _ => None,
                }
            })
        });
        SettingsError { field, reason: message }
    })
}

/// An event schema: its name and how a repartition stage finds a record's key fields.
pub trait Schema: Send + Sync + 'static {
    /// The name used in topology files (`schema = "..."`).
    fn name(&self) -> &str;
    /// True when records of this schema come from outside the topology (drawn as such by `describe`).
    fn external(&self) -> bool {
        true
    }
    /// The key of `rec` made of `fields` (values joined with `:`), or why there is none (the record then
    /// goes to the dead-letter output).
    fn key(&self, rec: &LogRecord, fields: &[String]) -> std::result::Result<String, String>;
}

/// A schema of JSON objects whose key fields are top-level strings or integers.
#[derive(Debug, Clone)]
pub struct JsonSchema {
    name: String,
    external: bool,
}

impl JsonSchema {
    /// An external JSON schema.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), external: true }
    }
    /// Marks it as produced inside the topology (by an operator), not from outside.
    pub fn internal(mut self) -> Self {
        self.external = false;
        self
    }
}

impl Schema for JsonSchema {
    fn name(&self) -> &str {
        &self.name
    }
    fn external(&self) -> bool {
        self.external
    }
    fn key(&self, rec: &LogRecord, fields: &[String]) -> std::result::Result<String, String> {
        let value: Value = serde_json::from_slice(&rec.payload).map_err(|e| format!("invalid JSON: {e}"))?;
        join_key(fields, |f| match value.get(f)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    }
}

/// Joins the named fields' values with `:` (`placement:category`); an absent field is an error.
pub fn join_key(fields: &[String], get: impl Fn(&str) -> Option<String>) -> std::result::Result<String, String> {
    let mut key = String::new();
    for (i, f) in fields.iter().enumerate() {
        let part = get(f).ok_or_else(|| format!("missing field `{f}`"))?;
        if i > 0 {
            key.push(':');
        }
        key.push_str(&part);
    }
    Ok(key)
}

/// An opened sink's handle: made durable before the runtime commits offsets.
pub trait SinkHandle: Send + Sync + fmt::Debug + 'static {
    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;
    /// The handle as [`Any`], for [`OpenedSink::handle`].
    fn as_any(&self) -> &dyn Any;
}

/// A sink opened by its backend.
#[derive(Debug, Clone)]
pub struct OpenedSink {
    /// The sink's name in the topology.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// The backend's handle.
    pub handle: Arc<dyn SinkHandle>,
}

impl OpenedSink {
    /// The handle as the backend's concrete type, or a configuration error naming the sink.
    pub fn handle<T: 'static>(&self) -> Result<&T> {
        self.handle.as_any().downcast_ref::<T>().ok_or_else(|| {
            Error::Config(format!(
                "sink `{}` (kind {}) is not a {}",
                self.name,
                self.kind,
                std::any::type_name::<T>()
            ))
        })
    }
}

/// What a sink was declared with.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions<'a> {
    /// The sink's name.
    pub name: &'a str,
    /// Directory (relative to the data directory) for backends that keep files; `None` = the name.
    pub path: Option<&'a Path>,
    /// Server URL for backends that connect to one.
    pub url: Option<&'a str>,
    /// The run's data directory.
    pub data_dir: &'a Path,
}

impl SinkOptions<'_> {
    /// `data_dir/path`, or `data_dir/name`.
    pub fn dir(&self) -> std::path::PathBuf {
        self.data_dir.join(self.path.unwrap_or_else(|| Path::new(self.name)))
    }
}

/// Opens sinks of one kind on one backend. Register it with [`Registry::register_sink_backend`].
pub trait SinkBackend: Send + Sync + 'static {
    /// The sink kind it serves (`kind = "..."` of a `[[sink]]`).
    fn kind(&self) -> &str;
    /// The backend name (`backend = "..."`).
    fn backend(&self) -> &str;
    /// Checks the declared options (e.g. a `url` where the backend takes a `path`).
    fn check(&self, options: &SinkOptions<'_>) -> std::result::Result<(), SettingsError>;
    /// Opens (creating if needed) the sink.
    fn open(&self, options: &SinkOptions<'_>) -> Result<OpenedSink>;
}

/// Operator kinds, schemas and sink backends by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn DynOperatorKind>>,
    schemas: BTreeMap<String, Arc<dyn Schema>>,
    backends: BTreeMap<(String, String), Arc<dyn SinkBackend>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .field("schemas", &self.schemas.keys().collect::<Vec<_>>())
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(Error::Config(format!(
            "cannot register {what} `{name}`: use letters, digits, `.`, `_` and `-`"
        )));
    }
    Ok(())
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an operator kind; its name must be new (and not `repartition`), and the schemas its rules
    /// name must be registered first.
    pub fn register_kind<K: OperatorKind>(&mut self, kind: K) -> Result<()> {
        let name = OperatorKind::name(&kind).to_owned();
        check_name("operator kind", &name)?;
        if name == REPARTITION {
            return Err(Error::Config(format!(
                "cannot register operator kind `{REPARTITION}`: the name is reserved for repartition stages"
            )));
        }
        if self.kinds.contains_key(&name) {
            return Err(Error::Config(format!("operator kind `{name}` is registered twice")));
        }
        let rules = OperatorKind::rules(&kind);
        if let Some(s) = rules.inputs.iter().chain(&rules.outputs).find(|s| !self.schemas.contains_key(*s)) {
            return Err(Error::Config(format!(
                "operator kind `{name}` names schema `{s}`, which is not registered"
            )));
        }
        self.kinds.insert(name, Arc::new(kind));
        Ok(())
    }

    /// Registers a schema; its name must be new.
    pub fn register_schema<S: Schema>(&mut self, schema: S) -> Result<()> {
        let name = schema.name().to_owned();
        check_name("schema", &name)?;
        if self.schemas.contains_key(&name) {
            return Err(Error::Config(format!("schema `{name}` is registered twice")));
        }
        self.schemas.insert(name, Arc::new(schema));
        Ok(())
    }

    /// Registers a sink backend for its (kind, backend) pair, which must be new.
    pub fn register_sink_backend<B: SinkBackend>(&mut self, backend: B) -> Result<()> {
        let key = (backend.kind().to_owned(), backend.backend().to_owned());
        check_name("sink kind", &key.0)?;
        check_name("sink backend", &key.1)?;
        if self.backends.contains_key(&key) {
            return Err(Error::Config(format!(
                "sink backend `{}` of kind `{}` is registered twice",
                key.1, key.0
            )));
        }
        self.backends.insert(key, Arc::new(backend));
        Ok(())
    }

    /// The operator kind `name`.
    pub fn kind(&self, name: &str) -> Option<&Arc<dyn DynOperatorKind>> {
        self.kinds.get(name)
    }

    /// The schema `name`.
    pub fn schema(&self, name: &str) -> Option<&Arc<dyn Schema>> {
        self.schemas.get(name)
    }

    /// The backend `backend` of sink kind `kind`.
    pub fn sink_backend(&self, kind: &str, backend: &str) -> Option<&Arc<dyn SinkBackend>> {
        self.backends.get(&(kind.to_owned(), backend.to_owned()))
    }

    /// Registered operator kind names, sorted.
    pub fn kind_names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// Registered schema names, sorted.
    pub fn schema_names(&self) -> Vec<&str> {
        self.schemas.keys().map(String::as_str).collect()
    }

    /// Registered sink kind names, sorted, without repeats.
    pub fn sink_kind_names(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.backends.keys().map(|(k, _)| k.as_str()).collect();
        kinds.dedup();
        kinds
    }

    /// Backends registered for sink kind `kind`, sorted.
    pub fn backend_names(&self, kind: &str) -> Vec<&str> {
        self.backends.keys().filter(|(k, _)| k == kind).map(|(_, b)| b.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct S {
        size: Millis,
        count: u32,
    }
    impl Default for S {
        fn default() -> Self {
            Self { size: Millis::minutes(5), count: 3 }
        }
    }
    struct K;
    impl OperatorKind for K {
        type Settings = S;
        fn name(&self) -> &str {
            "k"
        }
        fn rules(&self) -> KindRules {
            KindRules::new().input("in")
        }
        fn check(&self, s: &S) -> std::result::Result<(), SettingsError> {
            if s.count == 0 {
                return Err(SettingsError::field("count", "must be at least 1"));
            }
            Ok(())
        }
        fn spawn(&self, _: &mut Runtime, _: StageContext<'_>, _: &S) -> Result<()> {
            Ok(())
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register_schema(JsonSchema::new("in")).unwrap();
        r.register_kind(K).unwrap();
        r
    }

    #[test]
    fn settings_take_defaults_and_come_back_resolved() {
        let r = registry();
        let k = r.kind("k").unwrap();
        assert_eq!(k.resolve_settings(&Value::Null).unwrap(), serde_json::json!({"size": "5m", "count": 3}));
        assert_eq!(
            k.resolve_settings(&serde_json::json!({"size": "1h"})).unwrap(),
            serde_json::json!({"size": "1h", "count": 3})
        );
    }

    #[test]
    fn unknown_wrong_and_out_of_range_settings_name_the_field() {
        let r = registry();
        let k = r.kind("k").unwrap();
        let e = k.resolve_settings(&serde_json::json!({"sise": "1h"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sise"), "{e}");
        let e = k.resolve_settings(&serde_json::json!({"count": 0})).unwrap_err();
        assert_eq!(e, SettingsError::field("count", "must be at least 1"));
        let e = k.resolve_settings(&serde_json::json!({"count": 2, "size": "5 weeks"})).unwrap_err();
        assert!(e.reason.contains("invalid duration"), "{e}");
        assert_eq!(e.field.as_deref(), Some("size"), "the field whose value is wrong");
    }

    #[test]
    fn names_are_unique_and_repartition_is_reserved() {
        let mut r = registry();
        assert!(r.register_kind(K).is_err(), "registered twice");
        assert!(r.register_schema(JsonSchema::new("in")).is_err());
        struct R;
        impl OperatorKind for R {
            type Settings = S;
            fn name(&self) -> &str {
                REPARTITION
            }
            fn rules(&self) -> KindRules {
                KindRules::new()
            }
            fn spawn(&self, _: &mut Runtime, _: StageContext<'_>, _: &S) -> Result<()> {
                Ok(())
            }
        }
        assert!(r.register_kind(R).is_err());
        let mut empty = Registry::new();
        assert!(empty.register_kind(K).is_err(), "its input schema is not registered");
    }

    #[test]
    fn json_schema_keys_by_top_level_fields() {
        let rec = LogRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            payload: Arc::from(br#"{"a":"x","n":7}"#.as_slice()),
            origin: None,
        };
        let s = JsonSchema::new("t");
        assert_eq!(s.key(&rec, &["a".into(), "n".into()]), Ok("x:7".to_owned()));
        assert_eq!(s.key(&rec, &["b".into()]), Err("missing field `b`".to_owned()));
    }
}
