//! The `rtb` command line: typed arguments (clap) and the command bodies.
//!
//! `main` parses [`Cli`], installs the tracing subscriber and calls [`execute`]; everything else lives here
//! so it can be tested. Exit status: 0 on success, 2 for an invalid topology or bad usage
//! ([`Error::is_invalid_topology`]; clap itself exits 2 on usage errors), 1 for a failure while running,
//! [`EXIT_INTERRUPTED`] (130) for an `rtb run` interrupted by Ctrl-C before it was complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::describe::DescribeFormat;
use crate::error::{Error, Result};
use crate::model::Topology;

/// Exit status of an `rtb run` interrupted by Ctrl-C (SIGINT) before every event was produced and processed
/// (128 + SIGINT, the shell's convention). The state is committed: run again to continue.
pub const EXIT_INTERRUPTED: u8 = 130;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Done (for `rtb run`: complete, or stopped by `--duration`).
    Done,
    /// `rtb run` was interrupted (Ctrl-C) before it was complete; exit status [`EXIT_INTERRUPTED`].
    Interrupted,
}

/// `rtb`: the CPC ad system on the embedded stream runtime.
#[derive(Debug, Parser)]
#[command(
    name = "rtb",
    version,
    about = "The CPC sponsored-product ad system on an embedded stream runtime: describe, validate, run, replay",
    after_help = "Exit status: 0 success; 1 failure while running (e.g. a corrupt store, a data directory \
                  in use by another rtb); 2 invalid topology or usage; 130 `rtb run` interrupted by Ctrl-C \
                  before it was complete (state committed: run again with the same --data-dir to continue)."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `rtb`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the topology: topics, stages (with repartitions and why), sinks; or a Mermaid diagram.
    Describe(DescribeArgs),
    /// Check a topology file and exit 0 (valid) or 2 (invalid, with the reason and line).
    Validate(ValidateArgs),
    /// Run the whole system on the embedded log, state and sinks (or on Kafka: --kafka), with the built-in
    /// traffic generator.
    ///
    /// Exits 130 when interrupted by Ctrl-C before it was complete, 1 on a failure, 0 otherwise: complete,
    /// or ended short for another reason it names (--duration over; a watermark that cannot reach the end of
    /// the data) — `"complete"` in --report-json tells them apart.
    Run(RunArgs),
    /// Replay recorded traffic (JSON Lines) through the same operators in batch mode.
    Replay(ReplayArgs),
    /// Write simulated traffic as replay input files (deterministic per seed).
    Generate(GenerateArgs),
    /// Write the stores of a stopped `rtb run` data directory as JSON Lines (the replay's output format).
    Export(ExportArgs),
    /// Serve the HTTP API (and run the topology) on the embedded default, until Ctrl-C or SIGTERM.
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
}

/// Arguments of `rtb serve`.
#[cfg(feature = "serve")]
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Token file: one `TOKEN ROLE` pair a line, ROLE = admin | ingest | advertiser:{id}. Without it a
    /// development set (admin, ingest) is made and printed at start.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Data directory for the log, state and sinks (default: the topology's `runtime.data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Topology file (default: the built-in CPC topology).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_bytes: u64,
    /// Most events in one batch request (more: 413).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch: u64,
    // `--redis URL` / `--postgres URL`: the sinks on servers.
    #[command(flatten)]
    pub servers: crate::app::servers::ServerSinks,
    /// The log and the operators' state on the Kafka cluster at HOST:PORT (as `rtb run --kafka`): the API
    /// publishes to its topics and the topology consumes them (default: the topology's `runtime.kafka`;
    /// none: the embedded log).
    #[arg(long, value_name = "HOST:PORT", env = "RTB_KAFKA")]
    pub kafka: Option<String>,
    /// Prefix of every topic on the Kafka cluster (default: the topology's `runtime.topic_prefix`).
    #[arg(long, value_name = "PREFIX", env = "RTB_TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,
    /// A librdkafka property given to every Kafka client (repeatable), e.g. `linger.ms=5`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = key_value)]
    pub kafka_properties: Vec<(String, String)>,
}

/// Arguments of `rtb export`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ExportArgs {
    /// Data directory of a stopped `rtb run`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Directory the JSON Lines files are written to.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Topology file (default: the built-in CPC topology).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    // `--redis URL` / `--postgres URL`: the sinks on servers.
    #[command(flatten)]
    pub servers: crate::app::servers::ServerSinks,
    /// The Kafka cluster's address now, when it moved since `rtb run --kafka` (default: the one the run
    /// recorded in the data directory; its topic prefix is always the recorded one).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
}

/// Arguments of `rtb describe`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DescribeArgs {
    /// Topology file (default: the built-in CPC topology, topologies/cpc.toml).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
    pub format: DescribeFormat,
}

/// Arguments of `rtb validate`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ValidateArgs {
    /// Topology file (default: the built-in CPC topology).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
}

/// Arguments of `rtb run`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct RunArgs {
    /// Data directory for the log, state and sinks (default: the topology's `runtime.data_dir`).
    /// Restarting on the same directory continues where the last run stopped.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Topology file (default: the built-in CPC topology).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Generated events per second (all topics).
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value_t = 5000.0, value_parser = positive_f64)]
    pub rate: f64,
    /// Stop after this many seconds (default: until --events is reached or Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub duration: Option<Duration>,
    /// Seed of the traffic generator (same seed, same traffic).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Size factor: 8·scale advertisers, 40·scale campaigns (five or more per placement+category used), 2 000·scale devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub scale: u32,
    /// Ad-events to generate in total; a restart on the same data directory continues up to this.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub events: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the final report as JSON to this file (`"complete": true|false`, and `"resumed_after": N`
    /// when the run continued an earlier one).
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    // `--redis URL` / `--postgres URL`: the sinks on servers.
    #[command(flatten)]
    pub servers: crate::app::servers::ServerSinks,
    /// Run on the Kafka cluster at HOST:PORT: topics (created when missing) and the operators' state
    /// (changelog topics) are on the cluster, the sinks under --data-dir (default: the topology's
    /// `runtime.kafka`; none: the embedded log).
    #[arg(long, value_name = "HOST:PORT", env = "RTB_KAFKA")]
    pub kafka: Option<String>,
    /// Prefix of every topic on the Kafka cluster (one namespace per deployment or test run; default: the
    /// topology's `runtime.topic_prefix`).
    #[arg(long, value_name = "PREFIX", env = "RTB_TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,
    /// A librdkafka property given to every Kafka client (repeatable), e.g. `linger.ms=5`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = key_value)]
    pub kafka_properties: Vec<(String, String)>,
    /// Run only the topology, not the traffic generator (another `rtb run --generator-only` produces):
    /// drains once the log holds every event of the run. Needs --kafka.
    #[arg(long, conflicts_with = "generator_only")]
    pub no_generator: bool,
    /// Run only the traffic generator (no operators, no sinks). Needs --kafka.
    #[arg(long)]
    pub generator_only: bool,
    /// Share the stages' consumer groups with other `rtb run --group-membership` processes on the same
    /// cluster and prefix: this process runs only the partitions the groups assign it and takes over those
    /// of an instance that stops or dies (every instance of a deployment must pass it). Needs --kafka and
    /// the sinks on servers (--redis, --postgres).
    #[arg(long, conflicts_with = "generator_only")]
    pub group_membership: bool,
}

/// Parses `KEY=VALUE`.
fn key_value(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Arguments of `rtb replay`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ReplayArgs {
    /// Directory with campaign-events.jsonl, ad-events.jsonl, conversion-events.jsonl and optionally
    /// advertisers.jsonl.
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,
    /// Directory the JSON Lines outputs are written to.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Topology file (default: the built-in CPC topology).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Allowed out-of-orderness of the replay's watermark, in ms: records further behind the newest event
    /// time than this are late (corrected, or reported in late_events.jsonl).
    #[arg(long, value_name = "MS", default_value_t = 300_000)]
    pub max_out_of_orderness_ms: i64,
    /// The engine: `merge` (the input merged by event time through the operators in one thread;
    /// deterministic and fast; in memory only) or `runtime` (the plan on the runtime, as `rtb run` runs
    /// it). Default: `runtime` with --kafka, --redis or --postgres, else `merge`.
    #[arg(long, value_enum)]
    pub engine: Option<crate::replay::Engine>,
    // `--redis URL` / `--postgres URL`: the effects written to servers (an empty key prefix and schema),
    // and the outputs read back from them.
    #[command(flatten)]
    pub servers: crate::app::servers::ServerSinks,
    /// Replay through the Kafka cluster at HOST:PORT: the input is produced to fresh topics, then the
    /// topology runs to the end offsets it finds (default: an in-memory log).
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// Prefix of the replay's topics on the Kafka cluster (default: `rtb-replay-{time}-{pid}-`, new for
    /// every replay).
    #[arg(long, value_name = "PREFIX", requires = "kafka")]
    pub topic_prefix: Option<String>,
    /// A librdkafka property given to every Kafka client (repeatable), e.g. `linger.ms=5`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = key_value, requires = "kafka")]
    pub kafka_properties: Vec<(String, String)>,
}

/// Arguments of `rtb generate`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct GenerateArgs {
    /// Directory the input files are written to.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// Ad-events to generate.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub ad_events: u64,
    /// Seed (same seed, same traffic).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Size factor: 8·scale advertisers, 40·scale campaigns (five or more per placement+category used), 2 000·scale devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub scale: u32,
    /// Simulated hours the traffic spans (default 30: crosses a Seoul midnight).
    #[arg(long, default_value_t = 30)]
    pub hours: u32,
}

fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` must be a number greater than 0"))
    }
}

fn seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of seconds"))?;
    Ok(Duration::from_secs(v))
}

/// Loads and validates the topology file, or the built-in CPC topology when no file is given.
pub fn load_topology(path: Option<&Path>) -> Result<Topology> {
    match path {
        Some(p) => Topology::from_file(p),
        None => Topology::cpc_default(),
    }
}

/// Runs one command, writing its normal output to `out`.
pub fn execute(cli: Cli, out: &mut dyn Write) -> Result<Finished> {
    let done = |r: Result<()>| r.map(|()| Finished::Done);
    match cli.command {
        Command::Describe(args) => done(describe(&args, out)),
        Command::Validate(args) => done(validate(&args, out)),
        Command::Run(args) => run(&args, out),
        Command::Replay(args) => done(replay(&args, out)),
        Command::Generate(args) => done(generate(&args, out)),
        Command::Export(args) => done(export(&args, out)),
        #[cfg(feature = "serve")]
        Command::Serve(args) => done(serve(&args, out)),
    }
}

/// `rtb describe`.
pub fn describe(args: &DescribeArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load_topology(args.topology.as_deref())?.plan()?;
    out.write_all(plan.describe(args.format).as_bytes())
        .map_err(Error::Output)
}

/// `rtb validate`.
pub fn validate(args: &ValidateArgs, out: &mut dyn Write) -> Result<()> {
    let plan = load_topology(args.topology.as_deref())?.plan()?;
    let name = args.topology.as_ref().map_or_else(
        || "built-in CPC topology".to_owned(),
        |p| p.display().to_string(),
    );
    let operators = plan
        .stages
        .iter()
        .filter(|s| s.repartition.is_none())
        .count();
    writeln!(
        out,
        "{name}: valid ({} topics, {operators} operators in {} stages, {} sinks)",
        plan.topics.len(),
        plan.stages.len(),
        plan.sinks.len()
    )
    .map_err(Error::Output)
}

/// The Kafka cluster of `rtb run`: `--kafka` (or `RTB_KAFKA`), else the topology's `runtime.kafka`. A topic
/// prefix or a Kafka property without a cluster is refused (it would have no effect).
fn kafka_config(
    kafka: &Option<String>,
    topic_prefix: &Option<String>,
    kafka_properties: &[(String, String)],
    plan: &crate::plan::ExecutionPlan,
) -> Result<Option<rtb_stream::kafka::KafkaConfig>> {
    let Some(brokers) = kafka.clone().or_else(|| plan.runtime.kafka.clone()) else {
        if topic_prefix.is_some() || !kafka_properties.is_empty() {
            return Err(Error::Run(
                "--topic-prefix and --kafka-property need a Kafka cluster (--kafka, RTB_KAFKA or `runtime.kafka`)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let prefix = topic_prefix.clone().unwrap_or_else(|| plan.runtime.topic_prefix.clone());
    let mut cfg = rtb_stream::kafka::KafkaConfig::new(brokers).with_prefix(prefix);
    cfg.properties.extend(kafka_properties.iter().cloned());
    Ok(Some(cfg))
}

/// `rtb run`: the CPC system on the embedded default with the traffic simulator; prints the report.
pub fn run(args: &RunArgs, out: &mut dyn Write) -> Result<Finished> {
    let mut plan = load_topology(args.topology.as_deref())?.plan()?;
    args.servers.apply(&mut plan)?;
    let opts = crate::app::run::RunOptions {
        data_dir: args.data_dir.clone().unwrap_or_else(|| plan.runtime.data_dir.clone()),
        events: args.events,
        rate: Some(args.rate),
        duration: args.duration,
        seed: args.seed,
        scale: args.scale,
        progress: !args.quiet,
        kafka: kafka_config(&args.kafka, &args.topic_prefix, &args.kafka_properties, &plan)?,
        group_membership: args.group_membership,
        mode: match (args.no_generator, args.generator_only) {
            (true, _) => crate::app::run::RunMode::TopologyOnly,
            (_, true) => crate::app::run::RunMode::GeneratorOnly,
            _ => crate::app::run::RunMode::Both,
        },
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    // A second Ctrl-C is not caught: it ends the process at once (state stays consistent).
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    let outcome = crate::app::run::run(&plan, &opts, stop)?;
    let text = outcome.report.render(3, 15);
    writeln!(out, "{text}").map_err(Error::Output)?;
    if let Some(n) = outcome.report.resumed_after {
        writeln!(out, "resumed after {n} events already in {}", opts.data_dir.display()).map_err(Error::Output)?;
    }
    match &outcome.incomplete {
        None => writeln!(
            out,
            "complete: all {} ad-events produced and processed to the end ({})",
            args.events.max(outcome.report.run.events.get("ad-events").copied().unwrap_or(0)),
            opts.data_dir.display()
        ),
        Some(why) => writeln!(
            out,
            "not complete: {why}; run again with the same --data-dir {} to continue",
            opts.data_dir.display()
        ),
    }
    .map_err(Error::Output)?;
    if let Some(path) = &args.report_json {
        let json = serde_json::to_vec_pretty(&outcome.report).map_err(|e| Error::Run(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
    }
    Ok(match outcome.incomplete {
        Some(crate::app::run::Incomplete::Interrupted) => Finished::Interrupted,
        _ => Finished::Done,
    })
}

/// `rtb replay`: batch replay of recorded traffic through the same operators.
pub fn replay(args: &ReplayArgs, out: &mut dyn Write) -> Result<()> {
    let mut plan = load_topology(args.topology.as_deref())?.plan()?;
    args.servers.apply(&mut plan)?;
    let kafka = args.kafka.as_ref().map(|brokers| {
        let prefix = args.topic_prefix.clone().unwrap_or_else(|| {
            let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            format!("rtb-replay-{ms}-{}-", std::process::id())
        });
        let mut cfg = rtb_stream::kafka::KafkaConfig::new(brokers.clone()).with_prefix(prefix);
        cfg.properties.extend(args.kafka_properties.iter().cloned());
        cfg
    });
    let on_servers = kafka.is_some() || args.servers.redis.is_some() || args.servers.postgres.is_some();
    let engine = args.engine.unwrap_or(if on_servers { crate::replay::Engine::Runtime } else { crate::replay::Engine::Merge });
    let opts = crate::replay::ReplayOptions {
        input: args.input.clone(),
        output: args.output.clone(),
        max_out_of_orderness_ms: args.max_out_of_orderness_ms,
        engine,
        kafka,
    };
    let s = crate::replay::replay(&plan, &opts)?;
    let dead: u64 = s.dead_letters.values().sum();
    let ad_topic = crate::app::run::ops_config(&plan)?.topics.ad_events;
    let ads = s.events.get(&ad_topic).copied().unwrap_or(0);
    let late: u64 = s.late.values().sum();
    writeln!(
        out,
        "replayed {} events ({ads} ad-events) in {:.2} s: {:.0} ad-events/s; {dead} dead letters, {late} late records, \
         {} compensations, {} conversions attributed, {} unattributed; outputs in {}",
        s.events.values().sum::<u64>(),
        s.elapsed_s,
        s.ad_events_per_sec,
        s.compensations,
        s.attributed_conversions,
        s.unattributed_conversions,
        args.output.display()
    )
    .map_err(Error::Output)
}

/// `rtb export`: a stopped run's stores as JSON Lines.
pub fn export(args: &ExportArgs, out: &mut dyn Write) -> Result<()> {
    let mut plan = load_topology(args.topology.as_deref())?.plan()?;
    args.servers.apply(&mut plan)?;
    let s = crate::app::export::export(&plan, &args.data_dir, &args.output, args.kafka.as_deref())?;
    writeln!(out, "exported {} ({} compensations) to {}", args.data_dir.display(), s.compensations, args.output.display())
        .map_err(Error::Output)
}

/// `rtb serve`: the API server and the topology on the embedded default, until Ctrl-C or SIGTERM.
#[cfg(feature = "serve")]
pub fn serve(args: &ServeArgs, out: &mut dyn Write) -> Result<()> {
    let mut plan = load_topology(args.topology.as_deref())?.plan()?;
    args.servers.apply(&mut plan)?;
    let opts = crate::serve::ServeOptions {
        listen: args.listen,
        tokens: args.tokens.clone(),
        data_dir: args.data_dir.clone().unwrap_or_else(|| plan.runtime.data_dir.clone()),
        limits: crate::serve::Limits {
            max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
            max_batch: usize::try_from(args.max_batch).unwrap_or(usize::MAX),
        },
        kafka: kafka_config(&args.kafka, &args.topic_prefix, &args.kafka_properties, &plan)?,
    };
    crate::serve::serve(&plan, &opts, out, std::future::pending())
}

/// `rtb generate`: simulated traffic as replay input files.
pub fn generate(args: &GenerateArgs, out: &mut dyn Write) -> Result<()> {
    let n = crate::app::generate::write_inputs(&args.output, args.seed, args.scale, args.ad_events, args.hours)?;
    writeln!(out, "wrote {n} events ({} ad-events) to {}", args.ad_events, args.output.display()).map_err(Error::Output)
}

/// The process exit status for a command's result: 0, 130 (interrupted run), 2 (invalid topology or usage)
/// or 1 (runtime).
pub fn exit_status(result: &Result<Finished>) -> u8 {
    match result {
        Ok(Finished::Done) => 0,
        Ok(Finished::Interrupted) => EXIT_INTERRUPTED,
        Err(e) if e.is_invalid_topology() => 2,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rtb").chain(args.iter().copied()))
    }

    #[test]
    fn run_options_parse_into_typed_fields() {
        let cli = parse(&[
            "run",
            "--data-dir",
            "d",
            "--rate",
            "2500",
            "--duration",
            "30",
            "--seed",
            "7",
            "--scale",
            "3",
            "--events",
            "1000",
            "--report-json",
            "r.json",
        ])
        .expect("valid");
        let Command::Run(a) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(a.data_dir, Some(PathBuf::from("d")));
        assert_eq!(a.rate, 2500.0);
        assert_eq!(a.duration, Some(Duration::from_secs(30)));
        assert_eq!((a.seed, a.scale, a.events), (7, 3, 1000));
        assert_eq!(a.report_json, Some(PathBuf::from("r.json")));
        assert_eq!(a.topology, None);
    }

    #[test]
    fn run_defaults_when_options_are_absent() {
        let Command::Run(a) = parse(&["run"]).expect("valid").command else {
            panic!("expected run")
        };
        assert_eq!(
            (a.rate, a.seed, a.scale, a.events, a.duration),
            (5000.0, 42, 1, 100_000, None)
        );
    }

    #[test]
    fn zero_scale_is_a_usage_error() {
        assert!(parse(&["run", "--scale", "0"]).is_err());
        assert!(parse(&["run", "--scale", "0.5"]).is_err(), "scale is a whole factor");
    }

    #[test]
    fn zero_or_negative_rate_is_a_usage_error() {
        for bad in ["0", "-5", "fast", "inf"] {
            let err = parse(&["run", "--rate", bad]).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn replay_requires_input_and_output() {
        assert!(parse(&["replay", "--input", "in"]).is_err());
        let Command::Replay(a) = parse(&["replay", "--input", "in", "--output", "out"])
            .expect("valid")
            .command
        else {
            panic!("expected replay")
        };
        assert_eq!(
            (a.input, a.output),
            (PathBuf::from("in"), PathBuf::from("out"))
        );
    }

    #[test]
    fn describe_format_is_text_or_mermaid_only() {
        let Command::Describe(a) = parse(&["describe", "--format", "mermaid"])
            .expect("valid")
            .command
        else {
            panic!("expected describe")
        };
        assert_eq!(a.format, DescribeFormat::Mermaid);
        assert!(parse(&["describe", "--format", "dot"]).is_err());
    }

    #[test]
    fn replay_of_a_missing_input_dir_fails_naming_the_file_and_exits_2() {
        let out = tempfile::tempdir().expect("tmp");
        let r = execute(
            parse(&["replay", "--input", "/nonexistent/in", "--output", &out.path().display().to_string()])
                .expect("valid"),
            &mut Vec::new(),
        );
        let e = r.as_ref().expect_err("no input");
        assert!(e.to_string().contains("ad-events.jsonl"), "{e}");
        assert_eq!(exit_status(&r), 2, "a missing input is bad usage");
    }

    #[test]
    fn validate_missing_file_exits_2() {
        let r = execute(
            parse(&["validate", "--topology", "/nonexistent/t.toml"]).expect("valid"),
            &mut Vec::new(),
        );
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        assert_eq!(exit_status(&r), 2);
    }

    #[test]
    fn validate_builtin_topology_prints_valid() {
        let mut out = Vec::new();
        let r = execute(parse(&["validate"]).expect("valid"), &mut out);
        assert_eq!(exit_status(&r), 0, "{r:?}");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("valid (6 topics, 7 operators in 9 stages, 2 sinks)"),
            "{text}"
        );
    }
}
