//! Co-partitioning: applying declared repartitions and checking that a keyed operator's inputs are
//! partitioned alike (same key fields, a subset of the operator's key, same partition count).

use std::collections::{HashMap, HashSet};

use super::{name_problem, EffectiveInput, PlannedRepartition};
use crate::error::{Error, Location, Result};
use crate::model::{OperatorSpec, TopicSpec};
use crate::source::Seg;
use crate::units::KeySpec;

/// Applies the declared repartitions: the inputs as the operator will read them, and the stages to add.
pub(super) fn repartitions(
    op: &OperatorSpec,
    input_topics: &[&TopicSpec],
    topics: &HashMap<&str, &TopicSpec>,
    at: &dyn Fn(&[Seg<'_>]) -> Option<Location>,
) -> Result<(Vec<EffectiveInput>, Vec<PlannedRepartition>)> {
    let mut inputs: Vec<EffectiveInput> = input_topics
        .iter()
        .map(|t| EffectiveInput {
            topic: t.name.clone(),
            partitions: t.partitions,
            key: t.key.clone(),
        })
        .collect();
    if op.repartition.is_empty() {
        return Ok((inputs, Vec::new()));
    }
    let repartitioned: HashSet<&str> = op.repartition.iter().map(|r| r.input.as_str()).collect();
    // Inputs left as they are set the partition count the repartitioned ones must match.
    let kept: Vec<&&TopicSpec> = input_topics
        .iter()
        .filter(|t| !repartitioned.contains(t.name.as_str()))
        .collect();
    let mut planned = Vec::with_capacity(op.repartition.len());
    let mut seen = HashSet::new();
    for (r, rp) in op.repartition.iter().enumerate() {
        let invalid = |reason: String| Error::InvalidRepartition {
            operator: op.id.clone(),
            input: rp.input.clone(),
            reason,
            at: at(&[Seg::Key("repartition"), Seg::Index(r)]),
        };
        let Some(key) = &op.key else {
            return Err(invalid(
                "the operator has no `key` to repartition by".to_owned(),
            ));
        };
        let Some(j) = op.inputs.iter().position(|n| *n == rp.input) else {
            if !topics.contains_key(rp.input.as_str()) {
                let at = at(&[Seg::Key("repartition"), Seg::Index(r), Seg::Key("input")]);
                let (topic, operator) = (rp.input.clone(), op.id.clone());
                return Err(Error::UnknownTopic {
                    topic,
                    operator,
                    role: "repartition input",
                    at,
                });
            }
            return Err(invalid(format!(
                "`{}` is not an input of this operator",
                rp.input
            )));
        };
        if !seen.insert(rp.input.as_str()) {
            return Err(invalid("it is declared twice".to_owned()));
        }
        let by = rp.by.clone().unwrap_or_else(|| key.clone());
        if by.is_empty() || !by.is_subset_of(key) {
            return Err(invalid(format!(
                "`by = {by}` must be made of the operator's key fields ({key})"
            )));
        }
        if rp.partitions == Some(0) {
            return Err(invalid("`partitions` must be at least 1".to_owned()));
        }
        let source = input_topics[j];
        let partitions = rp
            .partitions
            .or(kept.first().map(|t| t.partitions))
            .unwrap_or(source.partitions);
        let topic = format!("{}-{}-repartition", op.group, rp.input);
        if let Some(reason) = name_problem(&topic) {
            return Err(invalid(format!(
                "its internal topic name `{topic}` is invalid: {reason}"
            )));
        }
        if topics.contains_key(topic.as_str()) {
            return Err(Error::DuplicateTopic {
                topic,
                at: at(&[Seg::Key("repartition"), Seg::Index(r)]),
            });
        }
        let reason = repartition_reason(source, &by, partitions, kept.first().copied().copied());
        inputs[j] = EffectiveInput {
            topic: topic.clone(),
            partitions,
            key: Some(by.clone()),
        };
        planned.push(PlannedRepartition {
            source: source.name.clone(),
            by,
            topic,
            partitions,
            reason,
        });
    }
    Ok((inputs, planned))
}

/// Why a declared repartition is needed, in words for `describe`.
fn repartition_reason(
    source: &TopicSpec,
    by: &KeySpec,
    partitions: u32,
    other: Option<&TopicSpec>,
) -> String {
    match other {
        Some(o) if source.partitions != o.partitions => format!(
            "not co-partitioned: {} has {} partitions, {} {}",
            source.name, source.partitions, o.name, o.partitions
        ),
        _ if source.partitions != partitions => {
            format!(
                "{} has {} partitions, the operator reads {partitions}",
                source.name, source.partitions
            )
        }
        _ => match &source.key {
            Some(k) if k.is_subset_of(by) && !k.is_empty() => {
                "declared; the inputs were already co-partitioned".to_owned()
            }
            Some(k) => format!(
                "not co-partitioned: {} is keyed by {k}, not by {by}",
                source.name
            ),
            None => format!(
                "not co-partitioned: {} is not keyed (round-robin), needs {by}",
                source.name
            ),
        },
    }
}

/// Why a keyed operator's inputs (as it will read them) are not co-partitioned, or `None` when they are:
/// every input must be partitioned by a non-empty subset of the operator's key, all by the same fields,
/// into the same number of partitions.
pub(super) fn co_partition_problem(key: &KeySpec, inputs: &[EffectiveInput]) -> Option<String> {
    for e in inputs {
        match &e.key {
            None => {
                return Some(format!(
                    "{} is not keyed (round-robin), the operator is keyed by {key}",
                    e.topic
                ))
            }
            Some(k) if !k.is_subset_of(key) => {
                return Some(format!(
                    "{} is keyed by {k}, the operator by {key}",
                    e.topic
                ));
            }
            Some(_) => {}
        }
    }
    let first = inputs.first()?;
    for e in &inputs[1..] {
        if e.partitions != first.partitions {
            return Some(format!(
                "{} has {} partitions, {} {}",
                first.topic, first.partitions, e.topic, e.partitions
            ));
        }
        if let (Some(a), Some(b)) = (&first.key, &e.key) {
            if !a.same_fields(b) {
                return Some(format!(
                    "{} is keyed by {a}, {} by {b}",
                    first.topic, e.topic
                ));
            }
        }
    }
    None
}
