//! Validation: everything that must hold before anything starts.
//!
//! Every name is looked up in a [`Registry`]: operator kinds, schemas, sink kinds and backends. Checks, in
//! order: runtime settings; topics (names, partitions > 0, duplicates, keys, registered schema); sinks
//! (names, duplicates, kind and backend registered, options fit the backend); then each operator: id and
//! group (valid, unique), kind (registered, not the internal `repartition`), topics and sinks it names
//! exist, inputs/outputs/sinks/key fit the kind's rules, the kind's typed settings deserialise (unknown
//! fields rejected) and are in range, watermark settings are in range, declared repartitions are
//! applicable, and a keyed operator's (effective) inputs are co-partitioned. The first error found is
//! returned.

use std::collections::HashMap;
use std::path::Path;

use rtb_stream::registry::{KindRules, Registry, SinkOptions};

use crate::error::{Error, Location, Result};
use crate::model::{OperatorSpec, SinkSpec, TopicSpec, Topology};
use crate::registry::default_registry;
use crate::source::{parse_toml, Seg, SourceMap};
use crate::units::{KeySpec, Millis};

mod partitioning;

/// An input as the operator will read it: the declared topic, or the internal topic repartitioning it.
#[derive(Debug, Clone)]
pub(crate) struct EffectiveInput {
    pub topic: String,
    pub partitions: u32,
    pub key: Option<KeySpec>,
}

/// A repartition the plan must insert.
#[derive(Debug, Clone)]
pub(crate) struct PlannedRepartition {
    pub source: String,
    pub by: KeySpec,
    pub topic: String,
    pub partitions: u32,
    pub reason: String,
}

/// A validated operator with what the plan needs.
#[derive(Debug)]
pub(crate) struct OperatorAnalysis<'a> {
    pub op: &'a OperatorSpec,
    pub rules: KindRules,
    /// The kind's settings with every default filled in.
    pub settings: serde_json::Value,
    pub inputs: Vec<EffectiveInput>,
    pub partitions: u32,
    pub repartitions: Vec<PlannedRepartition>,
}

impl Topology {
    /// Checks the topology against the built-in registry (see the module docs of `validate` for the
    /// list). Errors name the offending item; this form has no file, so they carry no location.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(None)
    }

    /// [`Topology::validate`] against `registry`.
    pub fn validate_with_registry(&self, registry: &Registry) -> Result<()> {
        analyze(self, None, registry).map(|_| ())
    }

    pub(crate) fn validate_with(&self, src: Option<&SourceMap>) -> Result<()> {
        analyze(self, src, default_registry()?).map(|_| ())
    }

    /// Parses a topology written in TOML and validates it against `registry`. Errors name the line.
    pub fn from_toml_str_with(text: &str, registry: &Registry) -> Result<Topology> {
        let (topology, map) = parse_toml(text, None)?;
        analyze(&topology, Some(&map), registry)?;
        Ok(topology)
    }

    /// Reads a topology file and validates it against `registry`. Errors name the file and line.
    pub fn from_file_with(path: impl AsRef<Path>, registry: &Registry) -> Result<Topology> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (topology, map) = parse_toml(&text, Some(path))?;
        analyze(&topology, Some(&map), registry)?;
        Ok(topology)
    }
}

/// Validates and returns per-operator analyses for the planner.
pub(crate) fn analyze<'a>(
    t: &'a Topology,
    src: Option<&SourceMap>,
    registry: &Registry,
) -> Result<Vec<OperatorAnalysis<'a>>> {
    let c = Checker { src, registry };
    c.runtime(t)?;
    let topics = c.topics(t)?;
    let sinks = c.sinks(t)?;
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut groups: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(t.operators.len());
    for (i, op) in t.operators.iter().enumerate() {
        out.push(c.operator(i, op, &topics, &sinks, &mut ids, &mut groups)?);
    }
    // A repartition stage is named after its internal topic, which is also its runtime group: it must
    // not clash with an operator's stage or with a declared group (they would share offsets and state).
    for (i, a) in out.iter().enumerate() {
        for (r, rp) in a.repartitions.iter().enumerate() {
            let clash = if ids.contains_key(rp.topic.as_str()) {
                Some("an operator id")
            } else if groups.contains_key(rp.topic.as_str()) {
                Some("a consumer group")
            } else {
                None
            };
            if let Some(what) = clash {
                return Err(Error::InvalidRepartition {
                    operator: a.op.id.clone(),
                    input: rp.source.clone(),
                    reason: format!(
                        "its internal topic name `{}` (also its stage's group) is also {what}",
                        rp.topic
                    ),
                    at: c.at(&[
                        Seg::Key("operator"),
                        Seg::Index(i),
                        Seg::Key("repartition"),
                        Seg::Index(r),
                    ]),
                });
            }
        }
    }
    Ok(out)
}

/// Why a name is not acceptable as a topic, operator id, group or sink name (Kafka's topic rules).
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 249 {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are reserved")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("only letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    }
}

fn list<T: AsRef<str>>(items: &[T]) -> String {
    let names: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", names.join(", "))
}

fn schemas(items: &[String]) -> String {
    if items.is_empty() {
        return "no topic".to_owned();
    }
    list(items)
}

/// `[a, b (ad-events)]`: each topic, with its schema when the name differs from it.
fn topics_with_schemas(names: &[String], topics: &HashMap<&str, &TopicSpec>) -> String {
    let items: Vec<String> = names
        .iter()
        .map(|n| match topics.get(n.as_str()) {
            Some(t) if t.schema != *n => format!("{n} ({})", t.schema),
            _ => n.clone(),
        })
        .collect();
    list(&items)
}

fn sink_kinds(kinds: &[String]) -> String {
    match kinds {
        [] => "no sink".to_owned(),
        _ => kinds
            .iter()
            .map(|k| format!("one {k} sink"))
            .collect::<Vec<_>>()
            .join(" and "),
    }
}

struct Checker<'s> {
    src: Option<&'s SourceMap>,
    registry: &'s Registry,
}

impl Checker<'_> {
    fn at(&self, path: &[Seg<'_>]) -> Option<Location> {
        self.src.and_then(|s| s.locate(path))
    }

    fn runtime(&self, t: &Topology) -> Result<()> {
        let at = |f| self.at(&[Seg::Key("runtime"), Seg::Key(f)]);
        if t.runtime.commit_interval == Millis::ZERO {
            let reason = "must be greater than 0".to_owned();
            return Err(Error::InvalidRuntime {
                setting: "commit_interval",
                reason,
                at: at("commit_interval"),
            });
        }
        if t.runtime.max_poll_records == 0 {
            let reason = "must be at least 1".to_owned();
            return Err(Error::InvalidRuntime {
                setting: "max_poll_records",
                reason,
                at: at("max_poll_records"),
            });
        }
        Ok(())
    }

    fn topics<'t>(&self, t: &'t Topology) -> Result<HashMap<&'t str, &'t TopicSpec>> {
        let mut topics = HashMap::new();
        for (i, topic) in t.topics.iter().enumerate() {
            let at = |f| self.at(&[Seg::Key("topic"), Seg::Index(i), Seg::Key(f)]);
            if let Some(reason) = name_problem(&topic.name) {
                return Err(Error::InvalidName {
                    what: "topic",
                    name: topic.name.clone(),
                    reason,
                    at: at("name"),
                });
            }
            if topic.partitions == 0 {
                return Err(Error::ZeroPartitions {
                    topic: topic.name.clone(),
                    at: at("partitions"),
                });
            }
            if topic.key.as_ref().is_some_and(KeySpec::is_empty) {
                let reason = "a topic key needs at least one field";
                return Err(Error::InvalidName {
                    what: "key of topic",
                    name: topic.name.clone(),
                    reason,
                    at: at("key"),
                });
            }
            if self.registry.schema(&topic.schema).is_none() {
                return Err(Error::UnknownSchema {
                    topic: topic.name.clone(),
                    schema: topic.schema.clone(),
                    known: list(&self.registry.schema_names()),
                    at: at("schema"),
                });
            }
            if topics.insert(topic.name.as_str(), topic).is_some() {
                return Err(Error::DuplicateTopic {
                    topic: topic.name.clone(),
                    at: at("name"),
                });
            }
        }
        Ok(topics)
    }

    fn sinks<'t>(&self, t: &'t Topology) -> Result<HashMap<&'t str, &'t SinkSpec>> {
        let mut sinks = HashMap::new();
        for (i, sink) in t.sinks.iter().enumerate() {
            let at = |f| self.at(&[Seg::Key("sink"), Seg::Index(i), Seg::Key(f)]);
            if let Some(reason) = name_problem(&sink.name) {
                return Err(Error::InvalidName {
                    what: "sink",
                    name: sink.name.clone(),
                    reason,
                    at: at("name"),
                });
            }
            if sinks.insert(sink.name.as_str(), sink).is_some() {
                return Err(Error::DuplicateSink {
                    sink: sink.name.clone(),
                    at: at("name"),
                });
            }
            let Some(backend) = self.registry.sink_backend(&sink.kind, &sink.backend) else {
                if self.registry.backend_names(&sink.kind).is_empty() {
                    return Err(Error::UnknownSinkKind {
                        sink: sink.name.clone(),
                        kind: sink.kind.clone(),
                        known: list(&self.registry.sink_kind_names()),
                        at: at("kind"),
                    });
                }
                return Err(Error::BackendUnavailable {
                    sink: sink.name.clone(),
                    backend: sink.backend.as_str().into(),
                    kind: sink.kind.as_str().into(),
                    available: list(&self.registry.backend_names(&sink.kind)).into(),
                    at: at("backend"),
                });
            };
            let options = SinkOptions {
                name: &sink.name,
                path: sink.path.as_deref(),
                url: sink.url.as_deref(),
                data_dir: &t.runtime.data_dir,
            };
            if let Err(e) = backend.check(&options) {
                let field = match e.field.as_deref() {
                    Some("url") => "url",
                    Some("path") => "path",
                    _ => "backend",
                };
                return Err(Error::InvalidSink {
                    sink: sink.name.clone(),
                    kind: sink.kind.as_str().into(),
                    reason: e.reason,
                    at: at(field),
                });
            }
        }
        Ok(sinks)
    }

    #[allow(clippy::too_many_arguments)]
    fn operator<'t>(
        &self,
        i: usize,
        op: &'t OperatorSpec,
        topics: &HashMap<&str, &TopicSpec>,
        sinks: &HashMap<&str, &SinkSpec>,
        ids: &mut HashMap<&'t str, usize>,
        groups: &mut HashMap<&'t str, &'t str>,
    ) -> Result<OperatorAnalysis<'t>> {
        let at = |rest: &[Seg<'_>]| {
            let mut path = vec![Seg::Key("operator"), Seg::Index(i)];
            path.extend_from_slice(rest);
            self.at(&path)
        };
        let field = |f| at(&[Seg::Key(f)]);
        let kind = op.kind.clone();
        let id = || op.id.clone();

        if let Some(reason) = name_problem(&op.id) {
            return Err(Error::InvalidName {
                what: "operator id",
                name: id(),
                reason,
                at: field("id"),
            });
        }
        if ids.insert(op.id.as_str(), i).is_some() {
            return Err(Error::DuplicateOperatorId {
                id: id(),
                at: field("id"),
            });
        }
        if let Some(reason) = name_problem(&op.group) {
            return Err(Error::InvalidName {
                what: "consumer group",
                name: op.group.clone(),
                reason,
                at: field("group"),
            });
        }
        if let Some(first) = groups.insert(op.group.as_str(), op.id.as_str()) {
            return Err(Error::DuplicateGroup {
                group: op.group.clone(),
                first: first.to_owned(),
                second: id(),
                at: field("group"),
            });
        }
        if kind == rtb_stream::registry::REPARTITION {
            return Err(Error::InternalKind {
                operator: id(),
                at: field("kind"),
            });
        }
        let Some(def) = self.registry.kind(&kind) else {
            return Err(Error::UnknownKind {
                operator: id(),
                kind,
                known: list(&self.registry.kind_names()),
                at: field("kind"),
            });
        };
        let rules = def.rules();

        // Every named topic and sink exists.
        let mut input_topics = Vec::with_capacity(op.inputs.len());
        for (j, name) in op.inputs.iter().enumerate() {
            match topics.get(name.as_str()) {
                Some(t) => input_topics.push(*t),
                None => {
                    let at = at(&[Seg::Key("inputs"), Seg::Index(j)]);
                    return Err(Error::UnknownTopic {
                        topic: name.clone(),
                        operator: id(),
                        role: "input",
                        at,
                    });
                }
            }
        }
        let mut output_schemas = Vec::with_capacity(op.outputs.len());
        for (j, name) in op.outputs.iter().enumerate() {
            match topics.get(name.as_str()) {
                Some(t) => output_schemas.push(t.schema.clone()),
                None => {
                    let at = at(&[Seg::Key("outputs"), Seg::Index(j)]);
                    return Err(Error::UnknownTopic {
                        topic: name.clone(),
                        operator: id(),
                        role: "output",
                        at,
                    });
                }
            }
        }
        let mut kinds_written = Vec::with_capacity(op.sinks.len());
        for (j, name) in op.sinks.iter().enumerate() {
            match sinks.get(name.as_str()) {
                Some(s) => kinds_written.push(s.kind.clone()),
                None => {
                    let at = at(&[Seg::Key("sinks"), Seg::Index(j)]);
                    return Err(Error::UnknownSink {
                        sink: name.clone(),
                        operator: id(),
                        at,
                    });
                }
            }
        }

        // Inputs, outputs, sinks and key fit the kind.
        let input_schemas: Vec<String> = input_topics.iter().map(|t| t.schema.clone()).collect();
        if input_schemas != rules.inputs {
            return Err(Error::WrongInputs {
                operator: id(),
                kind: kind.as_str().into(),
                expected: schemas(&rules.inputs).into(),
                found: topics_with_schemas(&op.inputs, topics).into(),
                at: field("inputs"),
            });
        }
        if output_schemas != rules.outputs {
            return Err(Error::WrongOutputs {
                operator: id(),
                kind: kind.as_str().into(),
                expected: schemas(&rules.outputs).into(),
                found: if op.outputs.is_empty() {
                    "none".into()
                } else {
                    topics_with_schemas(&op.outputs, topics).into()
                },
                at: field("outputs"),
            });
        }
        let mut written = kinds_written.clone();
        written.sort();
        let mut needed = rules.sinks.clone();
        needed.sort();
        if written != needed {
            let found: Vec<String> = op
                .sinks
                .iter()
                .zip(&kinds_written)
                .map(|(n, k)| format!("{n} ({k})"))
                .collect();
            return Err(Error::WrongSinks {
                operator: id(),
                kind: kind.as_str().into(),
                expected: sink_kinds(&rules.sinks).into(),
                found: if found.is_empty() {
                    "none".into()
                } else {
                    list(&found).into()
                },
                at: field("sinks"),
            });
        }
        self.key(op, &rules, &field)?;
        let settings = self.settings(op, def.as_ref(), &at)?;

        let (inputs, repartitions) = partitioning::repartitions(op, &input_topics, topics, &at)?;
        let partitions = inputs.iter().map(|e| e.partitions).max().unwrap_or(1);
        if let Some(key) = &op.key {
            if let Some(detail) = partitioning::co_partition_problem(key, &inputs) {
                return Err(Error::NotCoPartitioned {
                    operator: id(),
                    detail,
                    at: field("inputs"),
                });
            }
        }
        Ok(OperatorAnalysis {
            op,
            rules,
            settings,
            inputs,
            partitions,
            repartitions,
        })
    }

    fn key(
        &self,
        op: &OperatorSpec,
        rules: &KindRules,
        field: &dyn Fn(&'static str) -> Option<Location>,
    ) -> Result<()> {
        let allowed = &rules.key_fields;
        let wrong = |key: String, expected: String| Error::WrongKey {
            operator: op.id.clone(),
            kind: op.kind.as_str().into(),
            key: key.into(),
            expected: expected.into(),
            at: field("key"),
        };
        match &op.key {
            None if rules.requires_key => Err(wrong(
                "none".to_owned(),
                format!("a key is required, made of {}", list(allowed)),
            )),
            None => Ok(()),
            Some(k) if k.is_empty() || !k.fields().iter().all(|f| allowed.contains(f)) => Err(wrong(
                k.to_string(),
                format!("the key must be made of {}", list(allowed)),
            )),
            Some(_) => Ok(()),
        }
    }

    /// The kind's typed settings (defaults filled in), and the watermark settings' ranges.
    fn settings(
        &self,
        op: &OperatorSpec,
        def: &dyn rtb_stream::registry::DynOperatorKind,
        at: &dyn Fn(&[Seg<'_>]) -> Option<Location>,
    ) -> Result<serde_json::Value> {
        let written = serde_json::Value::Object(op.settings.clone());
        let resolved = def.resolve_settings(&written).map_err(|e| {
            let (setting, at) = match e.field {
                Some(f) if op.settings.contains_key(&f) => {
                    let at = at(&[Seg::Key("settings"), Seg::Key(&f)]);
                    (f, at)
                }
                Some(f) => (f, at(&[Seg::Key("settings")]).or_else(|| at(&[Seg::Key("kind")]))),
                None => ("settings".to_owned(), at(&[Seg::Key("settings")]).or_else(|| at(&[Seg::Key("kind")]))),
            };
            Error::InvalidSetting { operator: op.id.clone(), setting, reason: e.reason, at }
        })?;
        if op.watermark.idle_timeout == Some(Millis::ZERO) {
            return Err(Error::InvalidSetting {
                operator: op.id.clone(),
                setting: "idle_timeout".to_owned(),
                reason: "must be greater than 0".to_owned(),
                at: at(&[Seg::Key("watermark"), Seg::Key("idle_timeout")]),
            });
        }
        Ok(resolved)
    }
}
