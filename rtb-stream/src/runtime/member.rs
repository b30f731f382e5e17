//! Jobs whose partitions a consumer group assigns ([`Runtime::with_group_membership`](super::Runtime)):
//! one coordinator thread per job keeps the process's membership ([`GroupMember`]) and starts and stops
//! the job's tasks as partitions are assigned and revoked.
//!
//! - **Assigned:** the state of the new partitions is brought up to date with what their previous owner
//!   committed ([`StoreBackend::refresh_tasks`]), then a task is built (the factory restores the
//!   operator from that state) and started for each.
//! - **Revoked:** each task finishes its poll, commits and stops; the handler returns (and the group may
//!   give the partitions to another member) only once every one of them has committed.
//! - **Lost:** each task stops without committing (another member may own the partition already; what
//!   was not committed is redone there).
//! - **Start:** the tasks of a process start only once the runtime is sealed and every member job of it
//!   has been given its first partitions (or [`START_WAIT`] has passed since the first was spawned, for a
//!   process some group gives nothing, or a runtime never sealed), as a runtime
//!   without groups starts every task at once: a downstream task started long before the upstream job it
//!   reads through a repartition topic would call that job's quiet partitions idle and move its watermark
//!   on without them.
//! - **Shutdown:** every task commits and stops, then the process leaves the group, handing its partitions
//!   to the other members at once. An abort (a simulated crash) stops the tasks without committing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::metrics::GroupMetrics;
use super::task::TaskEnd;
use super::{AbortHandle, ShutdownToken};
use crate::error::{Error, Result};
use crate::io::{GroupMember, Rebalance};
use crate::state::StoreBackend;

/// How long a process's member jobs wait for each other's first assignment before starting anyway.
pub(crate) const START_WAIT: Duration = Duration::from_secs(30);

/// Holds the tasks of a runtime's member jobs until every member job has been given partitions (see the
/// module docs).
#[derive(Default)]
pub(crate) struct StartGate {
    /// Member jobs spawned, and those given partitions at least once.
    jobs: Mutex<(usize, std::collections::BTreeSet<String>)>,
    /// When the first member job was spawned.
    since: Mutex<Option<std::time::Instant>>,
    /// The runtime is sealed (no more jobs).
    sealed: std::sync::atomic::AtomicBool,
    open: std::sync::atomic::AtomicBool,
}

impl StartGate {
    pub(crate) fn add_job(&self) {
        self.since.lock().get_or_insert_with(std::time::Instant::now);
        self.jobs.lock().0 += 1;
    }

    pub(crate) fn seal(&self) {
        self.sealed.store(true, std::sync::atomic::Ordering::Release);
    }

    fn assigned(&self, group: &str) {
        self.jobs.lock().1.insert(group.to_string());
    }

    fn is_open(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.open.load(Ordering::Acquire) {
            return true;
        }
        let waited = self.since.lock().is_some_and(|t| t.elapsed() >= START_WAIT);
        let (jobs, assigned) = &*self.jobs.lock();
        let open = waited || (self.sealed.load(Ordering::Acquire) && assigned.len() >= *jobs);
        if open {
            self.open.store(true, Ordering::Release);
        }
        open
    }
}

/// How a task of a member job is told to stop.
#[derive(Clone, Default)]
pub(crate) struct TaskStops {
    /// Revoked: commit and stop.
    pub revoked: ShutdownToken,
    /// Lost: stop without committing.
    pub lost: ShutdownToken,
}

/// Starts the task of one partition (on its own thread) and returns its handle.
pub(crate) type StartTask = Box<dyn Fn(u32, TaskStops) -> Result<JoinHandle<Result<TaskEnd>>> + Send + Sync>;

struct Running {
    stops: TaskStops,
    handle: JoinHandle<Result<TaskEnd>>,
}

/// The partitions of one job that run in this process.
pub(crate) struct Assignment {
    group: String,
    partitions: u32,
    state: Arc<dyn StoreBackend>,
    start: StartTask,
    metrics: Arc<GroupMetrics>,
    gate: Arc<StartGate>,
    running: BTreeMap<u32, Running>,
    /// Assigned (state restored) but waiting for the gate.
    waiting: Vec<u32>,
}

impl Assignment {
    pub(crate) fn new(
        group: String,
        partitions: u32,
        state: Arc<dyn StoreBackend>,
        start: StartTask,
        metrics: Arc<GroupMetrics>,
        gate: Arc<StartGate>,
    ) -> Self {
        Self { group, partitions, state, start, metrics, gate, running: BTreeMap::new(), waiting: Vec::new() }
    }

    /// The job's group.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// The partitions of the job not assigned to this process now.
    pub(crate) fn elsewhere(&self) -> Vec<u32> {
        (0..self.partitions).filter(|p| !self.running.contains_key(p) && !self.waiting.contains(p)).collect()
    }

    /// The partitions assigned here (running, or waiting to start).
    pub(crate) fn here(&self) -> Vec<u32> {
        let mut ps: Vec<u32> = self.running.keys().chain(&self.waiting).copied().collect();
        ps.sort_unstable();
        ps
    }

    /// Starts the tasks waiting for the start gate, once it is open.
    pub(crate) fn start_waiting(&mut self) -> Result<()> {
        if self.waiting.is_empty() || !self.gate.is_open() {
            return Ok(());
        }
        for p in std::mem::take(&mut self.waiting) {
            let stops = TaskStops::default();
            let handle = (self.start)(p, stops.clone())?;
            GroupMetrics::add(&self.metrics.tasks, 1);
            self.running.insert(p, Running { stops, handle });
        }
        Ok(())
    }

    fn handle(&mut self, change: &Rebalance) -> Result<()> {
        match change {
            Rebalance::Assigned(ps) => self.assign(ps),
            Rebalance::Revoked(ps) => self.stop(ps, false),
            Rebalance::Lost(ps) => self.stop(ps, true),
        }
    }

    fn assign(&mut self, ps: &[u32]) -> Result<()> {
        let new: Vec<u32> = ps
            .iter()
            .copied()
            .filter(|p| !self.running.contains_key(p) && !self.waiting.contains(p) && *p < self.partitions)
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let tasks: Vec<(String, u32)> = new.iter().map(|p| (self.group.clone(), *p)).collect();
        self.state.refresh_tasks(&tasks)?;
        tracing::info!(group = %self.group, partitions = ?new, restore_ms = started.elapsed().as_millis() as u64,
            "partitions assigned to this process: state restored, tasks starting");
        self.gate.assigned(&self.group);
        self.waiting.extend(new);
        self.start_waiting()
    }

    /// Stops the tasks of `ps` (`lost`: without committing) and waits for them; the first error.
    fn stop(&mut self, ps: &[u32], lost: bool) -> Result<()> {
        self.waiting.retain(|p| !ps.contains(p));
        let mut stopping = Vec::new();
        for p in ps {
            if let Some(r) = self.running.remove(p) {
                if lost {
                    r.stops.lost.trigger();
                } else {
                    r.stops.revoked.trigger();
                }
                stopping.push((*p, r));
            }
        }
        let mut first = Ok(());
        for (p, r) in stopping {
            let result = join_task(&self.group, p, r.handle);
            self.metrics.tasks.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = result {
                if first.is_ok() {
                    first = Err(e);
                } else {
                    tracing::error!(error = %e, "another task failed too");
                }
            }
        }
        if !ps.is_empty() {
            tracing::info!(group = %self.group, partitions = ?ps, lost, "partitions revoked from this process: tasks stopped");
        }
        first
    }

    fn stop_all(&mut self, lost: bool) -> Result<()> {
        self.waiting.clear();
        let ps: Vec<u32> = self.running.keys().copied().collect();
        self.stop(&ps, lost)
    }
}

fn join_task(group: &str, partition: u32, handle: JoinHandle<Result<TaskEnd>>) -> Result<TaskEnd> {
    handle.join().unwrap_or_else(|panic| {
        Err(Error::Task {
            group: group.to_string(),
            topic: String::new(),
            partition,
            source: Box::new(Error::Config(format!("task thread panicked: {}", super::task::panic_message(&panic)))),
        })
    })
}

/// The handler given to [`crate::io::LogIo::join_group`]: applies each change to `assignment`.
pub(crate) fn handler(assignment: &Arc<Mutex<Assignment>>) -> crate::io::RebalanceHandler {
    let assignment = Arc::clone(assignment);
    Box::new(move |change| assignment.lock().handle(change))
}

/// The coordinator thread's body: polls the membership until shutdown (or an abort, or an error), then
/// stops every task and leaves the group.
pub(crate) fn coordinate(
    member: Box<dyn GroupMember>,
    assignment: &Arc<Mutex<Assignment>>,
    shutdown: &ShutdownToken,
    abort: &AbortHandle,
) -> Result<TaskEnd> {
    let mut member = member;
    let mut result = Ok(());
    while !shutdown.is_triggered() && !abort.is_aborted() {
        if let Err(e) = member.poll(Duration::from_millis(100)).and_then(|()| assignment.lock().start_waiting()) {
            result = Err(e);
            break;
        }
    }
    let aborted = abort.is_aborted();
    let stopped = assignment.lock().stop_all(aborted);
    let left = if aborted {
        // A crash leaves nothing in order; the consumer is closed with the process's other resources.
        drop(member);
        Ok(())
    } else {
        member.leave()
    };
    result?;
    stopped?;
    left?;
    Ok(if aborted { TaskEnd::Aborted } else { TaskEnd::Finished })
}
