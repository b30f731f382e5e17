//! The execution plan: a validated topology as the stages a runtime starts, with the internal repartition
//! topics and stages inserted where they are declared.

use std::collections::BTreeMap;

use rtb_stream::registry::{KindRules, PeerStage, Registry, REPARTITION};

use crate::error::Result;
use crate::kind::ResolvedSettings;
use crate::model::{RuntimeSettings, SinkSpec, Topology};
use crate::registry::default_registry;
use crate::units::{KeySpec, Millis};
use crate::validate::analyze;

/// A topic of the plan: a declared one, or an internal repartition topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTopic {
    /// Topic name.
    pub name: String,
    /// The events it carries (a registered schema).
    pub schema: String,
    /// Partitions.
    pub partitions: u32,
    /// Retention (an internal topic keeps its source's).
    pub retention: Option<Millis>,
    /// Partitioning key.
    pub key: Option<KeySpec>,
    /// True for topics the plan made (`<group>-<input>-repartition`).
    pub internal: bool,
    /// True when its schema's records come from outside the topology (for `describe`).
    pub external: bool,
}

impl PlannedTopic {
    /// The embedded log's configuration for this topic.
    pub fn topic_config(&self) -> rtb_stream::log::TopicConfig {
        rtb_stream::log::TopicConfig {
            partitions: self.partitions,
            retention: self.retention.map(Millis::to_std),
        }
    }
}

/// What a repartition stage does, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RepartitionInfo {
    /// The declared topic it reads.
    pub source: String,
    /// The key it re-partitions by.
    pub by: KeySpec,
    /// The internal topic it writes.
    pub topic: String,
    /// Partitions of the internal topic.
    pub partitions: u32,
    /// Why, in words: `not co-partitioned: conversion-events has 4 partitions, ad-events 8`.
    pub reason: String,
}

/// One stage of the plan: one consumer of one group, run as one task per partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Unique name: the operator id, or the internal topic's name for a repartition stage.
    pub name: String,
    /// The declared operator this stage belongs to (a repartition stage: the operator it feeds).
    pub operator: String,
    /// The declared consumer group (a repartition stage: its consumer's). The runtime's group is
    /// [`Stage::runtime_group`].
    pub group: String,
    /// What it runs: a registered kind, or [`REPARTITION`] for a repartition stage.
    pub kind: String,
    /// The kind's rules (empty for a repartition stage).
    pub rules: KindRules,
    /// The kind's settings, every default filled in (`null` for a repartition stage).
    pub kind_settings: serde_json::Value,
    /// Topics it reads, in the order the kind expects (internal topics in place of repartitioned inputs).
    pub inputs: Vec<String>,
    /// Key it is keyed by.
    pub key: Option<KeySpec>,
    /// Topics it produces to.
    pub outputs: Vec<String>,
    /// Sinks it writes.
    pub sinks: Vec<String>,
    /// Tasks (partitions of its co-partitioned inputs).
    pub partitions: u32,
    /// Effective watermark settings (a repartition stage has its consumer's).
    pub settings: ResolvedSettings,
    /// For a repartition stage: what it re-keys and why.
    pub repartition: Option<RepartitionInfo>,
}

/// A validated topology ready to run: topics (declared and internal), stages in dependency order (each
/// repartition stage before the stage reading its output), sinks and runtime settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionPlan {
    /// All topics: the declared ones in order, then the internal ones.
    pub topics: Vec<PlannedTopic>,
    /// Stages in the order to start them.
    pub stages: Vec<Stage>,
    /// Sinks.
    pub sinks: Vec<SinkSpec>,
    /// Runtime settings.
    pub runtime: RuntimeSettings,
}

impl Topology {
    /// Validates the topology against the built-in registry and turns it into an [`ExecutionPlan`],
    /// inserting an internal topic `<group>-<input>-repartition` and a repartition stage for every declared
    /// repartition.
    pub fn plan(&self) -> Result<ExecutionPlan> {
        self.plan_with(default_registry()?)
    }

    /// [`Topology::plan`] with the kinds, schemas and sink backends of `registry`.
    pub fn plan_with(&self, registry: &Registry) -> Result<ExecutionPlan> {
        let analyses = analyze(self, None, registry)?;
        let mut topics: Vec<PlannedTopic> = self
            .topics
            .iter()
            .map(|t| PlannedTopic {
                name: t.name.clone(),
                schema: t.schema.clone(),
                partitions: t.partitions,
                retention: t.retention,
                key: t.key.clone(),
                internal: false,
                external: registry.schema(&t.schema).is_some_and(|s| s.external()),
            })
            .collect();
        let mut stages = Vec::new();
        for a in &analyses {
            let op = a.op;
            let settings = ResolvedSettings::resolve(&op.watermark);
            for rp in &a.repartitions {
                let Some(source) = self.topics.iter().find(|t| t.name == rp.source) else {
                    continue;
                };
                topics.push(PlannedTopic {
                    name: rp.topic.clone(),
                    schema: source.schema.clone(),
                    partitions: rp.partitions,
                    retention: source.retention,
                    key: Some(rp.by.clone()),
                    internal: true,
                    external: false,
                });
                stages.push(Stage {
                    name: rp.topic.clone(),
                    operator: op.id.clone(),
                    group: op.group.clone(),
                    kind: REPARTITION.to_owned(),
                    rules: KindRules::default(),
                    kind_settings: serde_json::Value::Null,
                    inputs: vec![rp.source.clone()],
                    key: Some(rp.by.clone()),
                    outputs: vec![rp.topic.clone()],
                    sinks: Vec::new(),
                    partitions: source.partitions,
                    settings,
                    repartition: Some(RepartitionInfo {
                        source: rp.source.clone(),
                        by: rp.by.clone(),
                        topic: rp.topic.clone(),
                        partitions: rp.partitions,
                        reason: rp.reason.clone(),
                    }),
                });
            }
            stages.push(Stage {
                name: op.id.clone(),
                operator: op.id.clone(),
                group: op.group.clone(),
                kind: op.kind.clone(),
                rules: a.rules.clone(),
                kind_settings: a.settings.clone(),
                inputs: a.inputs.iter().map(|e| e.topic.clone()).collect(),
                key: op.key.clone(),
                outputs: op.outputs.clone(),
                sinks: op.sinks.clone(),
                partitions: a.partitions,
                settings,
                repartition: None,
            });
        }
        Ok(ExecutionPlan {
            topics,
            stages,
            sinks: self.sinks.clone(),
            runtime: self.runtime.clone(),
        })
    }
}

impl Stage {
    /// The runtime's group (consumer offsets and state namespace): the declared `group` for an operator's
    /// stage, `<group>-<input>-repartition` (its internal topic's name, derived from the consumer's group)
    /// for a repartition stage. Renaming a group starts its stages from scratch; keeping it resumes.
    pub fn runtime_group(&self) -> &str {
        if self.repartition.is_some() {
            &self.name
        } else {
            &self.group
        }
    }
}

impl ExecutionPlan {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&PlannedTopic> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The stages of one declared operator: its repartition stages, then itself.
    pub fn stages_of<'a>(&'a self, operator: &'a str) -> impl Iterator<Item = &'a Stage> + 'a {
        self.stages.iter().filter(move |s| s.operator == operator)
    }

    /// The sink named `name`.
    pub fn sink(&self, name: &str) -> Option<&SinkSpec> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// Consumer groups of each topic, as in SPEC §2's table (groups in stage order).
    pub fn consumer_groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in &self.stages {
            for input in &s.inputs {
                let groups = map.entry(input.as_str()).or_default();
                if !groups.contains(&s.group.as_str()) {
                    groups.push(s.group.as_str());
                }
            }
        }
        map
    }

    /// The operator stages (not the repartitions) with their kinds and resolved settings, for kinds that
    /// must agree with a related operator.
    pub fn peers(&self) -> Vec<PeerStage> {
        self.stages
            .iter()
            .filter(|s| s.repartition.is_none())
            .map(|s| PeerStage { operator: s.name.clone(), kind: s.kind.clone(), settings: s.kind_settings.clone() })
            .collect()
    }

    /// Stages that produce to `topic`.
    pub fn producers_of<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a Stage> + 'a {
        self.stages
            .iter()
            .filter(move |s| s.outputs.iter().any(|o| o == topic))
    }
}
