//! `rtb replay`: batch replay (a backfill) of recorded traffic through the CPC operators, in one of two
//! engines that write the same output files:
//!
//! - [`Engine::Merge`] (the default in memory): the three input files merged by event time into one stream
//!   that drives every operator of the plan in one thread, with one watermark; outputs to topics are routed
//!   in-process. Deterministic (the same input gives the same files) and fast. See [`merge`].
//! - [`Engine::Runtime`]: the same plan, registry, wiring and runtime as `rtb run`, in batch mode, on an
//!   in-memory log or a Kafka cluster, with the sinks in memory or on Redis / PostgreSQL. Every replay on
//!   the servers runs here. See [`runtime`].
//!
//! Both give every record the coordinates it has in the log the runtime reads: each line of a file, in
//! file order, is the next offset of the partition its key maps to (Kafka's default partitioner; partition
//! 0 for a line whose key cannot be read), so a click without `event_id` is charged under the same
//! `charge:src:{topic}/{partition}/{offset}` key by both.

pub mod input;
mod merge;
pub(crate) mod outputs;
mod runtime;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rtb_stream::kafka::KafkaConfig;
use rtb_stream::Timestamp;

use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;

/// Which engine a replay runs on (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// The input merged by event time through the operators in one thread (in memory only).
    #[default]
    Merge,
    /// The plan on the runtime, as `rtb run` runs it.
    Runtime,
}

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Input directory.
    pub input: PathBuf,
    /// Output directory.
    pub output: PathBuf,
    /// Allowed out-of-orderness of the watermark (ms).
    pub max_out_of_orderness_ms: i64,
    /// The engine.
    pub engine: Engine,
    /// Replay through these Kafka topics (give the config a prefix no other run uses) instead of an
    /// in-memory log: the input is produced to them first, then the plan runs to the end offsets it finds.
    /// Needs [`Engine::Runtime`].
    pub kafka: Option<KafkaConfig>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplaySummary {
    /// Records per topic: lines read per input file in a replay; every topic of the log in an export.
    pub events: BTreeMap<String, u64>,
    /// Dead letters per topic (invalid input).
    pub dead_letters: BTreeMap<String, u64>,
    /// Late records, per stage.
    pub late: BTreeMap<String, u64>,
    /// Compensation events emitted.
    pub compensations: u64,
    /// Conversions with no click in the attribution window.
    pub unattributed_conversions: u64,
    /// Attributed conversions.
    pub attributed_conversions: u64,
    /// Conversions of an order that already had its result (duplicate `order_id`s, not attributed twice).
    pub duplicate_orders: u64,
    /// Max event time seen, written as RFC 3339 like every other time in the outputs.
    #[serde(serialize_with = "outputs::rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub end_of_input: Option<Timestamp>,
    /// Wall-clock seconds of the replay; 0 where nothing was timed (`rtb export`), and then left out of
    /// summary.json rather than written as a placeholder.
    #[serde(skip_serializing_if = "untimed")]
    pub elapsed_s: f64,
    /// Ad-events per second of the replay; 0 (and left out of summary.json) where nothing was timed.
    #[serde(skip_serializing_if = "untimed")]
    pub ad_events_per_sec: f64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn untimed(v: &f64) -> bool {
    *v == 0.0
}

/// Runs a replay of `plan`; writes every output file and returns the summary.
pub fn replay(plan: &ExecutionPlan, opts: &ReplayOptions) -> Result<ReplaySummary> {
    if opts.max_out_of_orderness_ms < 0 {
        return Err(Error::Run(format!("--max-out-of-orderness-ms must be 0 or more, not {}", opts.max_out_of_orderness_ms)));
    }
    match opts.engine {
        Engine::Merge => {
            let servers = plan.sinks.iter().any(|s| s.backend != rtb_ops::registry::sink_kinds::EMBEDDED);
            if opts.kafka.is_some() || servers {
                return Err(Error::Run(
                    "a replay on Kafka, Redis or PostgreSQL (or any sink backend but `embedded`) runs on the runtime \
                     engine (--engine runtime)"
                        .into(),
                ));
            }
            merge::run(plan, opts)
        }
        Engine::Runtime => runtime::run(plan, opts),
    }
}

/// One input file of a replay: the plan's topic it is produced to, with that topic's key fields and
/// partitions, and the consumer groups reading it (each rejects a bad line of it).
#[derive(Debug, Clone)]
pub(crate) struct InputSpec {
    /// The file's name in the input directory.
    pub file: &'static str,
    /// The topic.
    pub topic: String,
    /// The topic's key fields.
    pub key: Vec<String>,
    /// The topic's partitions.
    pub partitions: u32,
    /// The runtime groups of the stages reading the topic.
    pub groups: Vec<String>,
}

/// The campaign, ad and conversion event files (in that order) with their topics in `plan`.
pub(crate) fn input_specs(plan: &ExecutionPlan, topics: &rtb_ops::config::TopicNames) -> Result<[InputSpec; 3]> {
    let spec = |file: &'static str, name: &str| -> Result<InputSpec> {
        let t = plan
            .topic(name)
            .ok_or_else(|| Error::Run(format!("the topology has no topic `{name}` to replay {file} into")))?;
        Ok(InputSpec {
            file,
            topic: name.to_owned(),
            key: t.key.as_ref().map(|k| k.fields().to_vec()).unwrap_or_default(),
            partitions: t.partitions,
            groups: plan
                .stages
                .iter()
                .filter(|s| s.inputs.iter().any(|i| i == name))
                .map(|s| s.runtime_group().to_owned())
                .collect(),
        })
    };
    Ok([
        spec("campaign-events.jsonl", &topics.campaign_events)?,
        spec("ad-events.jsonl", &topics.ad_events)?,
        spec("conversion-events.jsonl", &topics.conversion_events)?,
    ])
}

/// Where each line of an input file lands in the log the runtime reads: the partition of its key, the
/// next offset there (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Coordinates {
    next: Vec<u64>,
}

impl Coordinates {
    pub(crate) fn new(partitions: u32) -> Self {
        Self { next: vec![0; partitions.max(1) as usize] }
    }

    /// The partition and offset of the next line, whose key is `key` (`None`: partition 0).
    pub(crate) fn next(&mut self, key: Option<&[u8]>) -> (u32, u64) {
        let p = key.map_or(0, |k| rtb_stream::log::partition_for_key(k, self.next.len() as u32));
        let slot = &mut self.next[p as usize];
        *slot += 1;
        (p, *slot - 1)
    }
}
