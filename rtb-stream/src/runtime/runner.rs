//! [`Runtime`]: spawns partition tasks, collects their results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::align::{Alignment, Heads};
use super::commit::{CommitBarrier, Committer};
use super::ends::Producers;
use super::metrics::{GroupMetrics, RuntimeMetrics, RuntimeReport};
use super::member::{Assignment, StartGate, StartTask, TaskStops};
use super::task::{Task, TaskEnd, TaskSetup};
use super::{AbortHandle, Decoder, JobConfig, Output, ShutdownToken, TaskInfo};
use crate::error::{Error, Result};
use crate::io::{LogIo, Producer};
use crate::operator::Operator;
use crate::state::{StateScope, StoreBackend};

/// Builds the task of one partition (`Some`: of a group-member job, with how it is stopped).
type TaskBuilder<O, D> = Arc<dyn Fn(u32, Option<TaskStops>) -> Result<Task<O, D>> + Send + Sync>;

/// Starts task threads whose failure stops the runtime.
struct Threads {
    first_failure: Arc<Mutex<Option<usize>>>,
    shutdown: ShutdownToken,
    alignment: Arc<Alignment>,
}

impl Threads {
    /// Starts `run` on a thread named `name`; a failure stops the runtime (task `index` failed first).
    fn start(
        &self,
        name: String,
        index: usize,
        run: impl FnOnce() -> Result<TaskEnd> + Send + 'static,
    ) -> Result<JoinHandle<Result<TaskEnd>>> {
        let first_failure = Arc::clone(&self.first_failure);
        let shutdown = self.shutdown.clone();
        let alignment = Arc::clone(&self.alignment);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let result = run();
                if let Err(e) = &result {
                    tracing::error!(error = %e, "task failed; stopping the runtime");
                    first_failure.lock().get_or_insert(index);
                    alignment.close();
                    shutdown.trigger();
                }
                result
            })
            .map_err(|e| {
                self.shutdown.trigger();
                Error::from(e)
            })
    }
}

/// Source of processing time in ms since the epoch (wall clock by default; virtual in tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The state scope of task (`group`, `partition`): keys prefixed with `group/partition`. Open it to
/// inspect a job's committed state (group names cannot contain `/`, so prefixes never collide).
pub fn task_scope(state: &Arc<dyn StoreBackend>, group: &str, partition: u32) -> StateScope {
    StateScope::new(Arc::clone(state), format!("{group}/{partition}").into_bytes())
}

/// The watermark task (`group`, `partition`) committed last (with its offsets), if it committed one.
pub fn committed_watermark(state: &Arc<dyn StoreBackend>, group: &str, partition: u32) -> Result<Option<crate::time::Timestamp>> {
    Ok(task_scope(state, group, partition).read_meta::<Option<crate::time::Timestamp>>(super::task::META_WATERMARK)?.flatten())
}

struct Spawned {
    group: String,
    topic: String,
    partition: u32,
    handle: JoinHandle<Result<TaskEnd>>,
}

/// Runs jobs: one OS thread per (consumer group, partition) task. See the module docs for what a task does.
///
/// ```
/// use std::sync::Arc;
/// use rtb_stream::log::{EmbeddedLog, ProduceRecord, TopicConfig};
/// use rtb_stream::runtime::{JobConfig, Output, Runtime};
/// use rtb_stream::state::MemoryBackend;
/// use rtb_stream::{Context, Operator, Record};
///
/// struct Upper;
/// impl Operator for Upper {
///     type Key = ();
///     type In = String;
///     type Out = Output;
///     fn process(&mut self, r: Record<(), String>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
///         ctx.emit(Output { topic: "out".into(), record: ProduceRecord {
///             key: None, payload: r.value.to_uppercase().into_bytes(), timestamp: r.timestamp,
///             partition: Some(r.source.partition), origin: Some(r.source) } });
///         Ok(())
///     }
/// }
///
/// let log = EmbeddedLog::in_memory();
/// log.create_topic("in", TopicConfig { partitions: 2, retention: None })?;
/// log.create_topic("out", TopicConfig { partitions: 2, retention: None })?;
/// log.append("in", ProduceRecord { key: None, payload: b"hi".to_vec(), timestamp: 1, partition: Some(1), origin: None })?;
///
/// let mut rt = Runtime::new(log.clone(), Arc::new(MemoryBackend::new()));
/// let cfg = JobConfig { stop_at_end: true, ..JobConfig::new("upper", ["in"]) };
/// let decode = |r: &rtb_stream::log::LogRecord| {
///     let s = String::from_utf8(r.payload.to_vec()).map_err(|e| e.to_string())?;
///     Ok(Record::new((), s, r.timestamp, r.coord()))
/// };
/// rt.spawn(cfg, decode, |_task, _scope| Ok(Upper))?;
/// let report = rt.join()?;
/// assert_eq!(report.groups["upper"].records_out, 1);
/// assert_eq!(log.read("out", 1, 0, 10)?[0].payload.as_ref(), b"HI");
/// # Ok::<(), rtb_stream::Error>(())
/// ```
pub struct Runtime {
    io: Arc<dyn LogIo>,
    producer: Arc<dyn Producer>,
    state: Arc<dyn StoreBackend>,
    committer: Arc<Committer>,
    producers: Arc<Producers>,
    alignment: Arc<Alignment>,
    shutdown: ShutdownToken,
    drain: ShutdownToken,
    abort: AbortHandle,
    metrics: Arc<RuntimeMetrics>,
    clock: Clock,
    groups: BTreeSet<String>,
    tasks: Vec<Spawned>,
    /// Whether jobs not in batch mode take their partitions from the log's consumer groups.
    membership: bool,
    /// The assignments of group-member jobs.
    members: Vec<Arc<Mutex<Assignment>>>,
    /// Holds member tasks until every member job has partitions.
    gate: Arc<StartGate>,
    /// Index into `tasks` of the first task that failed.
    first_failure: Arc<Mutex<Option<usize>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("groups", &self.groups)
            .field("tasks", &self.tasks.len())
            .field("sync_commits", &self.committer.sync())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime over `log` (the embedded log, or any [`LogIo`]) keeping job state in `state`.
    pub fn new(log: impl LogIo, state: Arc<dyn StoreBackend>) -> Self {
        let io: Arc<dyn LogIo> = Arc::new(log);
        Self {
            committer: Arc::new(Committer::new(Arc::clone(&state), io.producer())),
            producer: io.producer(),
            io,
            state,
            producers: Arc::new(Producers::default()),
            alignment: Arc::new(Alignment::default()),
            shutdown: ShutdownToken::new(),
            drain: ShutdownToken::new(),
            abort: AbortHandle::default(),
            metrics: Arc::new(RuntimeMetrics::default()),
            clock: Arc::new(crate::time::wall_clock_ms),
            groups: BTreeSet::new(),
            tasks: Vec::new(),
            membership: false,
            members: Vec::new(),
            gate: Arc::new(StartGate::default()),
            first_failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Uses `clock` for processing time (idle detection, `on_processing_time`, dead-letter timestamps).
    /// Affects tasks spawned afterwards.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// With `true`, every job not in batch mode ([`JobConfig::stop_at_end`], [`JobConfig::align`]) runs
    /// as a member of its consumer group ([`crate::io::LogIo::join_group`]): this process runs only the
    /// partitions the group assigns it, starting a task (its state brought up to date from the backend,
    /// see [`StoreBackend::refresh_tasks`]) on each partition assigned and stopping it (commit) on each
    /// partition revoked, so that several processes running the same jobs share the partitions and take
    /// over from each other. A drain ([`Runtime::drain_token`]) then makes caught-up inputs idle but
    /// stops nothing: the process stops on [`Runtime::shutdown_token`], leaving its groups. Needs a log with
    /// consumer groups (Kafka): spawning on the embedded log is refused. Default `false`: every partition
    /// runs here.
    pub fn with_group_membership(mut self, on: bool) -> Self {
        self.membership = on;
        self
    }

    /// With `true`, every commit round first flushes the producer (outputs durable) and then flushes the
    /// state backend after applying the batches, so a commit survives a machine crash. Without it (the
    /// default), commits survive a crash of the process: appends are written through to the OS and the
    /// backend applies atomically.
    pub fn with_sync_commits(self, sync: bool) -> Self {
        self.committer.set_sync(sync);
        self
    }

    /// Runs `barrier` once per commit round, before the tasks' state and offsets are applied (an error
    /// fails the round and stops the runtime). Use it to make the effects of processed records durable in
    /// external sinks before the offsets that say they were processed: one sink flush per round for the
    /// whole process, not one per task. `id` names it (one barrier per id).
    pub fn with_commit_barrier(mut self, id: impl Into<String>, barrier: CommitBarrier) -> Self {
        self.add_commit_barrier(&id.into(), barrier);
        self
    }

    /// [`Runtime::with_commit_barrier`] on a runtime already in use (e.g. by the factory of each job that
    /// writes to a sink): a barrier whose `id` is already registered is not added again, so a sink that
    /// several jobs write is flushed once per round. It applies from the next commit round on: add it
    /// before spawning the job whose effects it makes durable.
    pub fn add_commit_barrier(&mut self, id: &str, barrier: CommitBarrier) {
        self.committer.add_barrier(id, barrier);
    }

    /// The token that shuts every task down cleanly (drain, commit, return).
    pub fn shutdown_token(&self) -> ShutdownToken {
        self.shutdown.clone()
    }

    /// The token that drains the runtime: when triggered, each task reads its inputs up to the end they
    /// have at that moment (an input that jobs of this runtime produce to: once those jobs have drained,
    /// to its end), then counts every input partition as idle — the watermark advances to the latest event
    /// time seen minus the allowed out-of-orderness, as the idle timeout would make it once every partition
    /// had been quiet — fires what that closes, commits and stops. Unlike batch mode
    /// ([`JobConfig::stop_at_end`]) the watermark does not jump to the end of time: a later run of the
    /// same groups goes on where this one stopped. For a program that knows its input has stopped (the
    /// traffic generator of `rtb run` has finished) and wants the results now rather than after the idle
    /// timeout.
    pub fn drain_token(&self) -> ShutdownToken {
        self.drain.clone()
    }

    /// The handle that stops every task as a crash would (no commit) — for recovery tests.
    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Live counters per group.
    pub fn metrics(&self) -> Arc<RuntimeMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The log the runtime reads and writes.
    pub fn io(&self) -> &Arc<dyn LogIo> {
        &self.io
    }

    /// Starts a job: checks its configuration (group, topics, co-partitioning), builds one operator per
    /// partition with `factory` (which restores its state from the task's scope), and starts the tasks.
    /// Nothing is started if any check or factory call fails.
    pub fn spawn<O, K, V, D, F>(&mut self, cfg: JobConfig, decoder: D, factory: F) -> Result<()>
    where
        O: Operator<Key = K, In = V, Out = Output> + 'static,
        D: Decoder<K, V>,
        F: Fn(&TaskInfo, &StateScope) -> Result<O> + Send + Sync + 'static,
    {
        if self.producers.sealed() {
            return Err(Error::Config(format!("group `{}`: the runtime is sealed; no job can be added", cfg.group)));
        }
        let partitions = self.validate(&cfg)?;
        let metrics = Arc::new(GroupMetrics::default());
        let inputs: Vec<Arc<str>> = cfg.inputs.iter().map(|t| Arc::from(t.as_str())).collect();
        let build = self.task_builder(&cfg, &inputs, &metrics, Arc::new(decoder), Arc::new(factory));
        if self.membership && !cfg.stop_at_end && cfg.align.is_none() {
            return self.spawn_member(cfg, partitions, metrics, build);
        }
        let mut tasks = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            tasks.push(build(partition, None)?);
        }
        self.groups.insert(cfg.group.clone());
        self.producers.add(&cfg.outputs, partitions as usize);
        self.metrics.insert(&cfg.group, Arc::clone(&metrics));
        for (partition, task) in (0..partitions).zip(tasks) {
            let index = self.tasks.len();
            let handle = self.threads().start(format!("rtb-{}-{partition}", cfg.group), index, move || task.run())?;
            GroupMetrics::add(&metrics.tasks, 1);
            self.tasks.push(Spawned {
                group: cfg.group.clone(),
                topic: cfg.inputs[0].clone(),
                partition,
                handle,
            });
        }
        Ok(())
    }

    /// What builds the task of one partition of job `cfg` (its operator built by `factory` from the task's
    /// restored scope); `member`: the task runs a partition a consumer group assigned.
    fn task_builder<O, K, V, D, F>(
        &self,
        cfg: &JobConfig,
        inputs: &[Arc<str>],
        metrics: &Arc<GroupMetrics>,
        decoder: Arc<D>,
        factory: Arc<F>,
    ) -> TaskBuilder<O, D>
    where
        O: Operator<Key = K, In = V, Out = Output> + 'static,
        D: Decoder<K, V>,
        F: Fn(&TaskInfo, &StateScope) -> Result<O> + Send + Sync + 'static,
    {
        let cfg = cfg.clone();
        let inputs = inputs.to_vec();
        let metrics = Arc::clone(metrics);
        let (io, state, producer, committer) =
            (Arc::clone(&self.io), Arc::clone(&self.state), Arc::clone(&self.producer), Arc::clone(&self.committer));
        let (producers, alignment, clock) = (Arc::clone(&self.producers), Arc::clone(&self.alignment), Arc::clone(&self.clock));
        let (shutdown, drain, abort) = (self.shutdown.clone(), self.drain.clone(), self.abort.clone());
        Arc::new(move |partition, member| {
            let info = TaskInfo { group: cfg.group.clone(), partition };
            let scope = task_scope(&state, &cfg.group, partition);
            let task_err = |e: Error| Error::Task {
                group: cfg.group.clone(),
                topic: cfg.inputs[0].clone(),
                partition,
                source: Box::new(e),
            };
            let op = factory(&info, &scope).map_err(task_err)?;
            let setup = TaskSetup {
                group: cfg.group.clone(),
                partition,
                inputs: inputs.clone(),
                cfg: cfg.clone(),
                reader: io.reader(&cfg.group, &inputs, partition)?,
                producer: Arc::clone(&producer),
                committer: Arc::clone(&committer),
                producers: Arc::clone(&producers),
                scope,
                shutdown: shutdown.clone(),
                drain: drain.clone(),
                abort: abort.clone(),
                metrics: Arc::clone(&metrics),
                clock: Arc::clone(&clock),
                heads: cfg.align.map(|drift| Heads::new(&alignment, &inputs, drift)),
                member,
            };
            Task::new(setup, Arc::clone(&decoder), op)
        })
    }

    /// Starts task threads whose failure stops this runtime.
    fn threads(&self) -> Threads {
        Threads {
            first_failure: Arc::clone(&self.first_failure),
            shutdown: self.shutdown.clone(),
            alignment: Arc::clone(&self.alignment),
        }
    }

    /// Starts a job whose partitions the log's consumer group assigns (see `member`): joins the group and
    /// starts the coordinator thread; tasks start as partitions are assigned.
    fn spawn_member<O, K, V, D>(
        &mut self,
        cfg: JobConfig,
        partitions: u32,
        metrics: Arc<GroupMetrics>,
        build: TaskBuilder<O, D>,
    ) -> Result<()>
    where
        O: Operator<Key = K, In = V, Out = Output> + 'static,
        D: Decoder<K, V>,
    {
        let index = self.tasks.len();
        let group = cfg.group.clone();
        let threads = self.threads();
        let name = group.clone();
        let start: StartTask = Box::new(move |partition, stops| {
            let task = build(partition, Some(stops))?;
            threads.start(format!("rtb-{name}-{partition}"), index, move || task.run())
        });
        let assignment = Arc::new(Mutex::new(Assignment::new(
            group.clone(),
            partitions,
            Arc::clone(&self.state),
            start,
            Arc::clone(&metrics),
            Arc::clone(&self.gate),
        )));
        let Some(member) = self.io.join_group(&group, &cfg.inputs[0], super::member::handler(&assignment))? else {
            return Err(Error::Config(format!(
                "group `{group}`: the log has no consumer groups to assign partitions (group membership needs a log \
                 such as Kafka; the embedded log belongs to one process)"
            )));
        };
        self.groups.insert(group.clone());
        self.gate.add_job();
        self.producers.add_member(&cfg.outputs);
        self.metrics.insert(&group, metrics);
        self.members.push(Arc::clone(&assignment));
        let (shutdown, abort) = (self.shutdown.clone(), self.abort.clone());
        let handle = self.threads().start(format!("rtb-{group}-member"), index, move || {
            super::member::coordinate(member, &assignment, &shutdown, &abort)
        })?;
        self.tasks.push(Spawned { group, topic: cfg.inputs[0].clone(), partition: 0, handle });
        Ok(())
    }

    /// Re-reads, from the state backend's durable form, the committed state of every task that another
    /// process runs (the partitions of group-member jobs not assigned here; see
    /// [`StoreBackend::refresh_tasks`]), so that [`task_scope`] shows their progress too (e.g. to tell when
    /// the whole job, on every process, has processed everything). Nothing to do without membership.
    pub fn refresh_remote_tasks(&self) -> Result<()> {
        for a in &self.members {
            let a = a.lock();
            let tasks: Vec<(String, u32)> = a.elsewhere().into_iter().map(|p| (a.group().to_string(), p)).collect();
            self.state.refresh_tasks(&tasks)?;
        }
        Ok(())
    }

    /// Declares, during a drain of group-member jobs ([`Runtime::with_group_membership`],
    /// [`Runtime::drain_token`]), that every job producing to `topic` has processed all its input, in
    /// every process: the member tasks reading `topic` may then count it idle once read to its end. Until
    /// then a drain makes only clients' inputs idle, since a repartition or output topic whose producing
    /// task is between two owners (or behind in another process) is quiet, not finished. The caller tells
    /// from the committed progress of every process ([`Runtime::refresh_remote_tasks`]).
    pub fn upstream_complete(&self, topic: &str) {
        self.producers.mark_complete(topic);
    }

    /// Whether any job of this runtime is a group member ([`Runtime::with_group_membership`]).
    pub fn has_group_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// The partitions of each group-member job that run in this process now (empty without membership).
    pub fn assigned_partitions(&self) -> BTreeMap<String, Vec<u32>> {
        self.members
            .iter()
            .map(|a| {
                let a = a.lock();
                (a.group().to_string(), a.here())
            })
            .collect()
    }

    /// Checks a job's configuration; returns its partition count.
    fn validate(&self, cfg: &JobConfig) -> Result<u32> {
        let group = &cfg.group;
        if group.is_empty() || group.contains('/') {
            return Err(Error::Config(format!("invalid group name `{group}`: non-empty, without `/`")));
        }
        if self.groups.contains(group) {
            return Err(Error::Config(format!("group `{group}` is already running in this runtime")));
        }
        if cfg.inputs.is_empty() {
            return Err(Error::Config(format!("group `{group}` has no input topic")));
        }
        if cfg.max_poll_records == 0 {
            return Err(Error::Config(format!("group `{group}`: max_poll_records must be at least 1")));
        }
        let mut seen = BTreeSet::new();
        let mut counts = Vec::with_capacity(cfg.inputs.len());
        for topic in &cfg.inputs {
            if !seen.insert(topic) {
                return Err(Error::Config(format!("group `{group}` names input `{topic}` twice")));
            }
            counts.push((topic, self.io.partitions(topic)?));
        }
        for topic in cfg.dead_letter_topic.iter().chain(&cfg.late_topic) {
            self.io.partitions(topic)?;
        }
        let partitions = counts[0].1;
        if counts.iter().any(|(_, n)| *n != partitions) {
            let list: Vec<String> = counts.iter().map(|(t, n)| format!("`{t}` has {n}")).collect();
            return Err(Error::NotCoPartitioned(format!(
                "group `{group}` reads {} partitions; a keyed job needs equal partition counts (repartition one input first)",
                list.join(", ")
            )));
        }
        Ok(partitions)
    }

    /// Declares a feed of `topics`: a producer of clients' records that is not a job of this runtime (a
    /// replay appending its input files while the jobs run). In batch mode ([`JobConfig::stop_at_end`])
    /// the jobs reading these topics read until the feed has finished (dropped), not to the end the topics
    /// had when they started; their records are still judged as clients' (`max_ahead`, `max_behind`).
    /// Aligned jobs ([`JobConfig::align`]) wait for the feed's progress ([`Feed::progress`]). Declare a
    /// feed before spawning the jobs that read its topics.
    pub fn feed(&mut self, topics: &[&str]) -> Result<Feed> {
        if self.producers.sealed() {
            return Err(Error::Config("the runtime is sealed; no feed can be added".into()));
        }
        for t in topics {
            self.io.partitions(t)?;
        }
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        self.producers.add_feed(&topics);
        let slot = self.alignment.register_feed(&topics);
        Ok(Feed { producers: Arc::clone(&self.producers), topics, slot })
    }

    /// Declares that every job of this runtime has been spawned (also done by [`Runtime::join`]): from now on
    /// batch-mode inputs that jobs of this runtime produce to can end. Spawning after sealing is refused.
    /// Group-member jobs ([`Runtime::with_group_membership`]) start processing only once the runtime is
    /// sealed and each of them has been given partitions (or 30 s have passed since the first was
    /// spawned), so seal right after spawning them.
    pub fn seal(&self) {
        self.producers.seal();
        self.alignment.seal();
        self.gate.seal();
    }

    /// Waits for every task. Returns the first task error (the others were stopped because of it and are
    /// logged), or the counters.
    pub fn join(mut self) -> Result<RuntimeReport> {
        self.seal();
        let first = self.wait_all();
        first?;
        Ok(RuntimeReport { groups: self.metrics.snapshot(), aborted: self.abort.is_aborted() })
    }

    fn wait_all(&mut self) -> Result<()> {
        let mut errors: Vec<(usize, Error)> = Vec::new();
        for (i, t) in self.tasks.drain(..).enumerate() {
            let result = t.handle.join().unwrap_or_else(|panic| {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                Err(Error::Task {
                    group: t.group.clone(),
                    topic: t.topic.clone(),
                    partition: t.partition,
                    source: Box::new(Error::Config(format!("task thread panicked: {reason}"))),
                })
            });
            if let Err(e) = result {
                errors.push((i, e));
            }
        }
        let first = *self.first_failure.lock();
        let pick = errors.iter().position(|(i, _)| Some(*i) == first).unwrap_or(0);
        if errors.is_empty() {
            return Ok(());
        }
        let (_, chosen) = errors.swap_remove(pick);
        for (_, other) in errors {
            tracing::error!(error = %other, "another task failed too");
        }
        Err(chosen)
    }
}

impl Drop for Runtime {
    /// A runtime dropped without [`Runtime::join`] shuts its tasks down cleanly and waits for them.
    fn drop(&mut self) {
        if self.tasks.is_empty() {
            return;
        }
        self.shutdown.trigger();
        self.alignment.close();
        self.producers.seal();
        if let Err(e) = self.wait_all() {
            tracing::error!(error = %e, "task failed while the runtime was dropped");
        }
    }
}

/// A feed of clients' records into a runtime's topics ([`Runtime::feed`]); dropping it says it has
/// finished.
#[derive(Debug)]
pub struct Feed {
    producers: Arc<Producers>,
    topics: Vec<String>,
    slot: Arc<super::align::FeedSlot>,
}

impl Feed {
    /// Records up to event time `ts` have been appended, and those it appends from now on are from about
    /// `ts` on: aligned jobs may process records up to it (and their drift).
    pub fn progress(&self, ts: crate::time::Timestamp) {
        self.slot.head.fetch_max(ts, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.producers.feed_finished(&self.topics);
        self.slot.finish();
    }
}
