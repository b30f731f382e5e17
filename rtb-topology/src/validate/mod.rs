//! Validation: everything that must hold before anything starts.
//!
//! Checks, in order: runtime settings; topics (names, partitions > 0, duplicates, keys); sinks (names,
//! duplicates, backend fits kind, backend available); then each operator: id and group (valid, unique),
//! kind (not the internal `repartition`), topics and sinks it names exist, inputs/outputs/sinks/key fit the
//! kind, settings apply to the kind and are in range, declared repartitions are applicable, and a keyed
//! operator's (effective) inputs are co-partitioned. The first error found is returned.

use std::collections::HashMap;

use crate::error::{Error, Location, Result};
use crate::model::{
    Backend, EventSchema, LatePolicyKind, OperatorKind, OperatorSpec, SinkKind, SinkSpec,
    TopicSpec, Topology,
};
use crate::source::{Seg, SourceMap};
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
    pub inputs: Vec<EffectiveInput>,
    pub partitions: u32,
    pub repartitions: Vec<PlannedRepartition>,
}

impl Topology {
    /// Checks the topology (see the module docs of `validate` for the list). Errors name the offending
    /// item; this form has no file, so they carry no location.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(None)
    }

    pub(crate) fn validate_with(&self, src: Option<&SourceMap>) -> Result<()> {
        analyze(self, src).map(|_| ())
    }
}

/// Validates and returns per-operator analyses for the planner.
pub(crate) fn analyze<'a>(
    t: &'a Topology,
    src: Option<&SourceMap>,
) -> Result<Vec<OperatorAnalysis<'a>>> {
    let c = Checker { src };
    c.runtime(t)?;
    let topics = c.topics(t)?;
    let sinks = c.sinks(t)?;
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut groups: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(t.operators.len());
    for (i, op) in t.operators.iter().enumerate() {
        out.push(c.operator(i, op, &topics, &sinks, &mut ids, &mut groups)?);
    }
    // A repartition stage is named after its internal topic; it must not clash with an operator's stage.
    for (i, a) in out.iter().enumerate() {
        for (r, rp) in a.repartitions.iter().enumerate() {
            if ids.contains_key(rp.topic.as_str()) {
                return Err(Error::InvalidRepartition {
                    operator: a.op.id.clone(),
                    input: rp.source.clone(),
                    reason: format!(
                        "its internal topic name `{}` is also an operator id",
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

fn schemas(items: &[EventSchema]) -> String {
    if items.is_empty() {
        return "no topic".to_owned();
    }
    let names: Vec<&str> = items.iter().map(|s| s.name()).collect();
    list(&names)
}

/// `[a, b (ad-events)]`: each topic, with its schema when the name differs from it.
fn topics_with_schemas(names: &[String], topics: &HashMap<&str, &TopicSpec>) -> String {
    let items: Vec<String> = names
        .iter()
        .map(|n| match topics.get(n.as_str()) {
            Some(t) if t.schema.name() != n => format!("{n} ({})", t.schema.name()),
            _ => n.clone(),
        })
        .collect();
    list(&items)
}

fn sink_kinds(kinds: &[SinkKind]) -> String {
    match kinds {
        [] => "no sink".to_owned(),
        _ => kinds
            .iter()
            .map(|k| format!("one {} sink", k.name()))
            .collect::<Vec<_>>()
            .join(" and "),
    }
}

struct Checker<'s> {
    src: Option<&'s SourceMap>,
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
            let invalid = |reason: String, field| Error::InvalidSink {
                sink: sink.name.clone(),
                kind: sink.kind,
                reason,
                at: at(field),
            };
            match (sink.kind, sink.backend) {
                (SinkKind::Cache, Backend::Postgres) | (SinkKind::Database, Backend::Redis) => {
                    let other = if sink.kind == SinkKind::Cache {
                        "redis"
                    } else {
                        "postgres"
                    };
                    let reason = format!(
                        "backend `{}` cannot serve a {} sink (use `embedded` or `{other}`)",
                        sink.backend.name(),
                        sink.kind.name()
                    );
                    return Err(invalid(reason, "backend"));
                }
                (_, Backend::Embedded) if sink.url.is_some() => {
                    return Err(invalid(
                        "`url` applies to the redis and postgres backends only".to_owned(),
                        "url",
                    ));
                }
                (_, Backend::Redis | Backend::Postgres) if sink.path.is_some() => {
                    return Err(invalid(
                        "`path` applies to the embedded backend only".to_owned(),
                        "path",
                    ));
                }
                (_, Backend::Redis | Backend::Postgres) => {
                    return Err(Error::BackendUnavailable {
                        sink: sink.name.clone(),
                        backend: sink.backend.name().to_owned(),
                        at: at("backend"),
                    });
                }
                (_, Backend::Embedded) => {}
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
        let kind = op.kind;
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
        if kind == OperatorKind::Repartition {
            return Err(Error::InternalKind {
                operator: id(),
                at: field("kind"),
            });
        }

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
                Some(t) => output_schemas.push(t.schema),
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
                Some(s) => kinds_written.push(s.kind),
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
        let input_schemas: Vec<EventSchema> = input_topics.iter().map(|t| t.schema).collect();
        if input_schemas != kind.input_schemas() {
            return Err(Error::WrongInputs {
                operator: id(),
                kind,
                expected: schemas(kind.input_schemas()),
                found: topics_with_schemas(&op.inputs, topics),
                at: field("inputs"),
            });
        }
        if output_schemas != kind.output_schemas() {
            return Err(Error::WrongOutputs {
                operator: id(),
                kind,
                expected: schemas(kind.output_schemas()),
                found: if op.outputs.is_empty() {
                    "none".to_owned()
                } else {
                    topics_with_schemas(&op.outputs, topics)
                },
                at: field("outputs"),
            });
        }
        let mut written = kinds_written.clone();
        written.sort_by_key(|k| k.name());
        let mut needed = kind.sink_kinds().to_vec();
        needed.sort_by_key(|k| k.name());
        if written != needed {
            let found: Vec<String> = op
                .sinks
                .iter()
                .zip(&kinds_written)
                .map(|(n, k)| format!("{n} ({})", k.name()))
                .collect();
            return Err(Error::WrongSinks {
                operator: id(),
                kind,
                expected: sink_kinds(kind.sink_kinds()),
                found: if found.is_empty() {
                    "none".to_owned()
                } else {
                    list(&found)
                },
                at: field("sinks"),
            });
        }
        self.key(op, &field)?;
        self.settings(op, &at)?;

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
            inputs,
            partitions,
            repartitions,
        })
    }

    fn key(
        &self,
        op: &OperatorSpec,
        field: &dyn Fn(&'static str) -> Option<Location>,
    ) -> Result<()> {
        let allowed = op.kind.key_fields();
        let wrong = |key: String, expected: String| Error::WrongKey {
            operator: op.id.clone(),
            kind: op.kind,
            key,
            expected,
            at: field("key"),
        };
        match &op.key {
            None if op.kind.requires_key() => Err(wrong(
                "none".to_owned(),
                format!("a key is required, made of {}", list(allowed)),
            )),
            None => Ok(()),
            Some(k)
                if k.is_empty() || !k.fields().iter().all(|f| allowed.contains(&f.as_str())) =>
            {
                Err(wrong(
                    k.to_string(),
                    format!("the key must be made of {}", list(allowed)),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    fn settings(
        &self,
        op: &OperatorSpec,
        at: &dyn Fn(&[Seg<'_>]) -> Option<Location>,
    ) -> Result<()> {
        let s = &op.settings;
        let invalid = |setting: &'static str, reason: String| Error::InvalidSetting {
            operator: op.id.clone(),
            setting,
            reason,
            at: at(&[Seg::Key("settings"), Seg::Key(setting)]),
        };
        if !op.kind.is_windowed() {
            let windowed = [
                ("window", s.window.is_some()),
                ("grace", s.grace.is_some()),
                ("late_policy", s.late_policy.is_some()),
                ("max_lateness", s.max_lateness.is_some()),
            ];
            if let Some((name, _)) = windowed.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    name,
                    format!("does not apply to kind {} (it has no window)", op.kind),
                ));
            }
        }
        if s.window == Some(Millis::ZERO) {
            return Err(invalid("window", "must be greater than 0".to_owned()));
        }
        if s.idle_timeout == Some(Millis::ZERO) {
            return Err(invalid("idle_timeout", "must be greater than 0".to_owned()));
        }
        let policy = s.late_policy.unwrap_or(op.kind.default_late_policy());
        if s.max_lateness.is_some() && policy != LatePolicyKind::Correct {
            return Err(invalid(
                "max_lateness",
                "only applies with late_policy = \"correct\"".to_owned(),
            ));
        }
        Ok(())
    }
}
