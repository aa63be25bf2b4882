//! Doer Admin: the one task that owns the Doer's state.
//!
//! Tasks (invocations) live in three queues by state: *pending* (waiting for
//! a version to be prepared or for a Worker of their pool), *running* (on a
//! Worker, by Worker), and *done* (the most recent ones, for status).
//!
//! When every Worker of a pool is busy and the pool cannot grow, the next
//! task is sent ahead to a busy Worker (*prefetched*): it starts the moment
//! the current one ends, without the Worker sleeping in between. A
//! prefetched task has provably not started until its Worker's previous
//! `Done` arrives, so a Worker that dies or times out first hands it back to
//! the pending queue rather than failing it. The
//! Worker Handler part keeps one pool per Doee version: up to `concurrency`
//! Workers, reused while warm, started on demand, reaped when idle past
//! `idle_timeout` down to `min_warm`.
//!
//! When the Doer's `max_workers` are all taken, its slots are shared
//! between projects as [`crate::slots`] explains: a freed slot goes to the
//! waiting project that holds the fewest, and a project holding none may
//! preempt the richest.
//!
//! Everything arrives as an [`Input`] on one channel or from the kernel, so
//! the state needs no locks.
//!
//! Why one file of this size: it is one state machine (the queues, the
//! Workers and the slot policy change together on every event), and
//! splitting its methods across files would hide which of them touch which
//! state.

use crate::DoerConfig;
use crate::area::WorkerArea;
use crate::cgroup::{Cgroups, WORKER_OVERHEAD_MB, WorkerLimits};
use crate::isolation::Isolation;
use crate::slots::{self, Slot};
use crate::stream::{Stream, Write};
use crate::versions::{self, Prepared, VersionKey};
use crate::worker::{self, WorkerId};
use bytes::Bytes;
use isms_ipc::doer::{self, DoeeFailure, Outcome, Trigger};
use isms_ipc::resadmin::{InvocationRecord, InvocationStatus, Record};
use isms_ipc::worker::{Done, FromWorker, HostCall, Limits, Load, ToWorker};
use isms_ipc::{
    Connection, Deadline, Delivery, Event, Failure, FailureKind, Inbound, Incoming, InvocationId,
    MessageId, ProjectName, Reply, Request, Responder, Scope,
};
use isms_ipc::{SecretName, commserver, dbriver, resadmin};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A task expected to wait at least this long for a Worker is deferred (see
/// [`Gate`]); one that should start sooner counts as started, which spares
/// the messages of a claim on the busy path of short invocations.
const DEFER_AFTER: Duration = Duration::from_millis(10);
/// How long a claim waits for its answer before it is sent again.
const CLAIM_AGAIN: Duration = Duration::from_secs(1);
/// How long a failed version preparation is remembered before trying again.
const RETRY_PREPARE: Duration = Duration::from_secs(3);
/// Finished tasks the done queue holds at most while Resadmin cannot take
/// their records; past it the oldest are dropped (and counted in the log).
const DONE_KEPT: usize = 20_000;
/// How often the done queue is handed to Resadmin as records.
const RECORD_EVERY: Duration = Duration::from_millis(100);

/// Something for the Admin to handle, besides kernel deliveries.
pub enum Input {
    /// A version finished preparing.
    Prepared(VersionKey, Result<Prepared, String>),
    /// A Worker's `ctx.invoke` was answered.
    CalleeReturned(WorkerId, Result<Bytes, String>),
}

/// One invocation inside the Doer.
struct Task {
    id: InvocationId,
    key: VersionKey,
    trigger: Trigger,
    input: Bytes,
    responder: Responder,
    deadline: Deadline,
    /// When the Doer took it (ms since the epoch, and for durations).
    accepted_ms: u64,
    accepted: Instant,
    gate: Gate,
    /// Its output goes to the origin in pieces as the Doee writes them.
    stream: Option<Stream>,
}

/// Whether a waiting task may start without asking the kernel first.
///
/// A task that cannot start when it arrives, and can expect to wait for
/// [`DEFER_AFTER`] or more, is *deferred*: the kernel is told it waits here,
/// and if this Doer is lost (its host dies, its link is cut) the kernel
/// gives it to another Doer instead of failing it. So that
/// it never runs twice, a deferred task starts only once the kernel grants
/// this Doer's claim to it. In a version's pending queue the gates are in
/// this order: open tasks first, then those being claimed, then deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// The kernel counts it as started here: it may start.
    Open,
    /// The kernel was told it waits here; to be claimed before it starts.
    Deferred,
    /// Claimed; the kernel's answer is on its way.
    Claiming,
}

enum VersionState {
    Preparing(Vec<Task>),
    Ready(Arc<Prepared>),
    Failed { why: String, at: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Spawned, not yet `Ready`.
    Starting,
    /// Ready and free since then.
    Idle(Instant),
    /// Running a task; `fresh` means it is the Worker's first.
    /// Running a task since `started`, to be stopped at `deadline`; `fresh`
    /// means it is the Worker's first.
    Busy {
        started: Instant,
        deadline: Instant,
        fresh: bool,
    },
    /// Told to stop or killed; waiting for it to exit.
    Stopping,
}

struct Worker {
    key: VersionKey,
    handle: worker::Handle,
    state: WorkerState,
    fresh: bool,
    /// Waiting for a Doee it called (`ctx.invoke`): no task is sent ahead
    /// to it, which could be the very callee it waits for.
    calling: bool,
}

#[derive(Default)]
struct Pool {
    workers: Vec<WorkerId>,
    /// How long its invocations run, smoothed (µs; 0 until one has).
    run_us: u64,
}

/// The Doer's state.
pub struct Admin {
    conn: Connection,
    config: DoerConfig,
    area: WorkerArea,
    isolation: Box<dyn Isolation>,
    inputs: mpsc::UnboundedSender<Input>,
    worker_events: mpsc::UnboundedSender<(WorkerId, worker::Event)>,
    versions: HashMap<VersionKey, VersionState>,
    pools: HashMap<VersionKey, Pool>,
    workers: HashMap<WorkerId, Worker>,
    /// The pending queue: tasks waiting for a Worker, per version.
    pending: HashMap<VersionKey, VecDeque<Task>>,
    /// The tasks claimed from the kernel, by request id: their version,
    /// and when the claim was (last) sent.
    claims: HashMap<MessageId, (VersionKey, Instant)>,
    /// The running queue: tasks on a Worker.
    running: HashMap<WorkerId, Task>,
    /// Tasks sent ahead to a busy Worker, which starts them next.
    prefetched: HashMap<WorkerId, Task>,
    /// The done queue: finished tasks, as records for Resadmin.
    done: Vec<InvocationRecord>,
    /// Records dropped because Resadmin could not take them.
    records_dropped: u64,
    timeouts: BTreeSet<(Instant, WorkerId)>,
    /// The newest version seen of each Doee: only it keeps `min_warm` Workers.
    newest: HashMap<(ProjectName, isms_ipc::DoeeName), u32>,
    next_worker: WorkerId,
    /// Versions with tasks that found every slot of the Doer taken.
    waiting: HashSet<VersionKey>,
    /// The platform's cgroups, where the host gives Workers some.
    cgroups: Option<Cgroups>,
    /// The CPU weight last set for each project's cgroup.
    cpu_weights: HashMap<ProjectName, u32>,
}

/// Why a Worker is wanted: only a task may take a slot from another project.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Task,
    Warm,
}

impl Admin {
    /// Serves until `shutdown` or until the kernel is gone.
    pub async fn run(
        conn: Connection,
        mut incoming: Incoming,
        config: DoerConfig,
        area: WorkerArea,
        isolation: Box<dyn Isolation>,
        cgroups: Option<Cgroups>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (inputs, mut inputs_rx) = mpsc::unbounded_channel();
        let (worker_events, mut worker_events_rx) = mpsc::unbounded_channel();
        let mut admin = Admin {
            conn,
            config,
            area,
            isolation,
            inputs,
            worker_events,
            versions: HashMap::new(),
            pools: HashMap::new(),
            workers: HashMap::new(),
            pending: HashMap::new(),
            claims: HashMap::new(),
            running: HashMap::new(),
            prefetched: HashMap::new(),
            done: Vec::new(),
            records_dropped: 0,
            timeouts: BTreeSet::new(),
            newest: HashMap::new(),
            next_worker: 0,
            waiting: HashSet::new(),
            cgroups,
            cpu_weights: HashMap::new(),
        };
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        let mut records = tokio::time::interval(RECORD_EVERY);
        records.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let result = loop {
            let next_timeout = admin.timeouts.first().map(|&(at, _)| at);
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                inbound = incoming.next() => match inbound {
                    Some(Inbound::Request(delivery)) => admin.on_delivery(delivery),
                    Some(Inbound::Event(Event::QuotasChanged { project, quotas })) => {
                        admin.set_cpu_weight(&project, quotas.cpu_weight);
                    }
                    Some(Inbound::Event(_)) => {}
                    Some(Inbound::Claimed { id, granted }) => admin.on_claimed(id, granted),
                    Some(Inbound::Pull(id)) => admin.on_pull(id),
                    Some(Inbound::Cancel(id)) => admin.on_cancel(id),
                    None => break Err(anyhow::anyhow!("lost the kernel")),
                },
                Some(input) = inputs_rx.recv() => admin.on_input(input),
                Some((id, event)) = worker_events_rx.recv() => admin.on_worker(id, event),
                _ = sleep_until(next_timeout) => admin.on_timeouts(Instant::now()),
                _ = housekeeping.tick() => admin.housekeeping(),
                _ = records.tick(), if !admin.done.is_empty() => admin.send_records(),
            }
        };
        admin.send_records();
        admin.let_go_deferred();
        admin.stop_all();
        if let Some(cgroups) = &admin.cgroups {
            cgroups.close();
        }
        result
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        let Delivery {
            envelope,
            request,
            responder,
        } = delivery;
        let Request::Doer(doer::Request::Invoke(invoke)) = request else {
            responder.reply(Err(Failure::invalid(format!(
                "the Doer does not handle {}",
                request.name()
            ))));
            return;
        };
        let Some(project) = envelope.project else {
            responder.reply(Err(Failure::invalid("an invocation needs a project")));
            return;
        };
        let key = VersionKey {
            project,
            doee: invoke.doee,
            version: invoke.version,
        };
        let task = Task {
            id: invoke.id,
            key: key.clone(),
            trigger: invoke.trigger,
            input: invoke.input,
            responder,
            deadline: envelope.deadline,
            accepted_ms: isms_ipc::names::now_ms(),
            accepted: Instant::now(),
            gate: Gate::Open,
            stream: invoke.stream.then(Stream::default),
        };
        match self.versions.get_mut(&key) {
            Some(VersionState::Ready(_)) => self.submit(task),
            Some(VersionState::Preparing(waiting)) => waiting.push(deferred(task)),
            Some(VersionState::Failed { why, at }) if at.elapsed() < RETRY_PREPARE => {
                let why = why.clone();
                self.fail(task, DoeeFailure::NotStarted(why), false, Duration::ZERO);
            }
            _ => {
                self.versions
                    .insert(key.clone(), VersionState::Preparing(vec![deferred(task)]));
                let (conn, cache, inputs) = (
                    self.conn.clone(),
                    self.area.cache_dir(),
                    self.inputs.clone(),
                );
                tokio::spawn(async move {
                    let result = versions::prepare(&conn, &cache, &key).await;
                    let _ = inputs.send(Input::Prepared(key, result));
                });
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Prepared(key, result) => {
                let waiting = match self.versions.remove(&key) {
                    Some(VersionState::Preparing(waiting)) => waiting,
                    _ => Vec::new(),
                };
                match result {
                    Ok(prepared) => {
                        tracing::info!(version = %key, "version ready");
                        self.set_cpu_weight(&key.project, prepared.cpu_weight);
                        let newest = self
                            .newest
                            .entry((key.project.clone(), key.doee.clone()))
                            .or_insert(key.version);
                        *newest = (*newest).max(key.version);
                        self.versions
                            .insert(key, VersionState::Ready(Arc::new(prepared)));
                        for task in waiting {
                            self.submit(task);
                        }
                    }
                    Err(why) => {
                        tracing::warn!(version = %key, %why, "cannot prepare version");
                        self.version_failed(key, why, waiting);
                    }
                }
            }
            Input::CalleeReturned(id, answer) => {
                if let Some(worker) = self.workers.get_mut(&id) {
                    worker.calling = false;
                    worker.handle.send(ToWorker::HostReply(answer));
                }
            }
        }
    }

    /// Queues a task for its version's pool and starts it if a Worker is
    /// free; if none is, the task is deferred (see [`Gate`]).
    fn submit(&mut self, task: Task) {
        let key = task.key.clone();
        let id = task.responder.id();
        let queue = self.pending.entry(key.clone()).or_default();
        // A chained call's caller holds a Worker and waits for it: it goes
        // first, and may take a Worker past the limits (see spawn_worker).
        if task.trigger.depth() > 0 {
            queue.push_front(task);
            return self.run_pending(&key);
        }
        if queue.len() >= self.config.queue_per_doee as usize {
            self.fail(task, DoeeFailure::Busy, false, Duration::ZERO);
            return;
        }
        queue.push_back(task);
        self.run_pending(&key);
        // Still last in line (or sent ahead, which counts as started). Behind
        // a deferred task it is deferred too, keeping the gates in order.
        let waits = self.pending.get(&key).and_then(|queue| {
            let last = queue.back()?;
            (last.responder.id() == id && last.gate == Gate::Open).then(|| {
                let behind_deferred = queue
                    .len()
                    .checked_sub(2)
                    .is_some_and(|before| queue[before].gate != Gate::Open);
                behind_deferred || self.expected_wait(&key) >= DEFER_AFTER
            })
        });
        if waits == Some(true)
            && let Some(task) = self.pending.get_mut(&key).and_then(VecDeque::back_mut)
        {
            task.defer();
        }
        self.claim_ahead(&key);
    }

    /// How long the last of `key`'s pending tasks can expect to wait: its
    /// place in line over the pool's Workers, times how long one runs.
    /// Unknown (a pool that has run nothing yet) is long.
    fn expected_wait(&self, key: &VersionKey) -> Duration {
        let run_us = self.pools.get(key).map_or(0, |pool| pool.run_us);
        if run_us == 0 {
            return Duration::MAX;
        }
        let waiting = self.pending.get(key).map_or(0, VecDeque::len) as u64;
        let workers = self.count(key, |s| s != WorkerState::Stopping).max(1) as u64;
        Duration::from_micros(run_us.saturating_mul(waiting) / workers)
    }

    /// Starts what can start of `key`'s pending tasks, and claims the
    /// deferred tasks next in line.
    fn schedule(&mut self, key: &VersionKey) {
        self.run_pending(key);
        self.claim_ahead(key);
    }

    /// Matches open pending tasks of `key` with idle Workers, starting
    /// Workers while the pool may grow.
    fn run_pending(&mut self, key: &VersionKey) {
        loop {
            if self.pending.get(key).is_none_or(VecDeque::is_empty) {
                return;
            }
            if let Some(worker) = self.idle_worker(key) {
                // The next task waits for the kernel's go-ahead.
                let Some(task) = self.pop_open(key) else {
                    return;
                };
                self.start(worker, task);
                continue;
            }
            let starting = self.count(key, |s| s == WorkerState::Starting);
            let waiting = self.pending.get(key).map_or(0, VecDeque::len);
            if starting >= waiting || !self.spawn_worker(key, Want::Task) {
                // Sent ahead, a task would bind a Worker that a project
                // waiting for a slot should get next.
                if starting == 0 && self.waiting.is_empty() {
                    self.prefetch(key);
                }
                return;
            }
        }
    }

    /// Sends the next pending tasks ahead to busy Workers that have none.
    fn prefetch(&mut self, key: &VersionKey) {
        let Some(pool) = self.pools.get(key) else {
            return;
        };
        let busy: Vec<WorkerId> =
            pool.workers
                .iter()
                .copied()
                .filter(|id| {
                    !self.prefetched.contains_key(id)
                        && self.workers.get(id).is_some_and(|w| {
                            matches!(w.state, WorkerState::Busy { .. }) && !w.calling
                        })
                })
                .collect();
        for id in busy {
            let Some(task) = self.pop_open(key) else {
                return;
            };
            let Some(worker) = self.workers.get(&id) else {
                self.requeue(task);
                continue;
            };
            worker.handle.send(execute(&task));
            self.prefetched.insert(id, task);
        }
    }

    /// The next pending task of `key`, if it may start.
    fn pop_open(&mut self, key: &VersionKey) -> Option<Task> {
        let queue = self.pending.get_mut(key)?;
        if queue.front()?.gate != Gate::Open {
            return None;
        }
        queue.pop_front()
    }

    /// Claims from the kernel the deferred tasks of `key` that could start
    /// soon: as many as the pool has Workers idle, starting, or busy with
    /// nothing sent ahead, counting those open or claimed already. Claiming
    /// only these, a lost Doer leaves the rest of its line to other Doers.
    fn claim_ahead(&mut self, key: &VersionKey) {
        let deferred_waits = self
            .pending
            .get(key)
            .and_then(VecDeque::back)
            .is_some_and(|task| task.gate == Gate::Deferred);
        if !deferred_waits {
            return;
        }
        let room = self.pools.get(key).map_or(0, |pool| {
            pool.workers
                .iter()
                .filter(|id| match self.workers.get(id) {
                    Some(w) => match w.state {
                        WorkerState::Idle(_) | WorkerState::Starting => true,
                        WorkerState::Busy { .. } => !w.calling && !self.prefetched.contains_key(id),
                        WorkerState::Stopping => false,
                    },
                    None => false,
                })
                .count()
        });
        let Some(queue) = self.pending.get_mut(key) else {
            return;
        };
        for task in queue.iter_mut().take(room) {
            if task.gate == Gate::Deferred {
                task.gate = Gate::Claiming;
                task.responder.claim();
                self.claims
                    .insert(task.responder.id(), (key.clone(), Instant::now()));
            }
        }
    }

    /// Claims again those whose answer is late: the kernel drops what it
    /// cannot send a slow peer at once, and a claim never answered would
    /// hold up its version's line. The kernel answers a claim again alike.
    fn reclaim_late(&mut self, now: Instant) {
        for (id, (key, sent)) in &mut self.claims {
            if now.duration_since(*sent) < CLAIM_AGAIN {
                continue;
            }
            let task = self
                .pending
                .get(key)
                .and_then(|queue| queue.iter().find(|t| t.responder.id() == *id));
            if let Some(task) = task {
                task.responder.claim();
                *sent = now;
            }
        }
    }

    /// Stopping: the deferred tasks are left to the kernel, which gives
    /// them to another Doer, rather than answered as failed.
    fn let_go_deferred(&mut self) {
        for queue in self.pending.values_mut() {
            for task in std::mem::take(queue) {
                if task.gate == Gate::Open {
                    queue.push_back(task);
                } else {
                    task.responder.let_go();
                }
            }
        }
        for version in self.versions.values_mut() {
            if let VersionState::Preparing(waiting) = version {
                for task in waiting.drain(..) {
                    task.responder.let_go();
                }
            }
        }
    }

    /// The kernel's answer to a claim: the task may start, or the kernel
    /// took it back (it gave it to another Doer, or answered its origin).
    fn on_claimed(&mut self, id: MessageId, granted: bool) {
        let Some((key, _)) = self.claims.remove(&id) else {
            return;
        };
        let Some(queue) = self.pending.get_mut(&key) else {
            return;
        };
        let Some(at) = queue
            .iter()
            .position(|t| t.gate == Gate::Claiming && t.responder.id() == id)
        else {
            return;
        };
        if granted {
            queue[at].gate = Gate::Open;
        } else if let Some(task) = queue.remove(at) {
            tracing::debug!(invocation = %task.id, "the kernel took back a deferred invocation");
            task.responder.let_go();
        }
        self.schedule(&key);
    }

    /// Puts the task sent ahead to Worker `id`, which has ended, back in
    /// line: it never started, so it runs on another Worker.
    fn take_back_sent_ahead(&mut self, id: WorkerId) {
        if let Some(next) = self.prefetched.remove(&id) {
            tracing::info!(invocation = %next.id, worker = id, "a task sent ahead to a Worker that ended goes back in line");
            self.requeue(next);
        }
    }

    /// Puts a task that never started back at the head of its queue.
    fn requeue(&mut self, task: Task) {
        let key = task.key.clone();
        self.pending.entry(key).or_default().push_front(task);
    }

    fn idle_worker(&self, key: &VersionKey) -> Option<WorkerId> {
        let pool = self.pools.get(key)?;
        pool.workers
            .iter()
            .copied()
            .filter(|id| {
                matches!(
                    self.workers.get(id).map(|w| w.state),
                    Some(WorkerState::Idle(_))
                )
            })
            // The most recently used Worker is the warmest.
            .max_by_key(|id| match self.workers.get(id).map(|w| w.state) {
                Some(WorkerState::Idle(since)) => Some(since),
                _ => None,
            })
    }

    fn count(&self, key: &VersionKey, pred: impl Fn(WorkerState) -> bool) -> usize {
        self.pools.get(key).map_or(0, |pool| {
            pool.workers
                .iter()
                .filter(|id| self.workers.get(id).is_some_and(|w| pred(w.state)))
                .count()
        })
    }

    /// Starts a Worker for `key` if its pool and the Doer have room. When
    /// the Doer is full, room is made by stopping another pool's
    /// longest-idle Worker, or for a task of a project holding no Worker by
    /// preempting one; otherwise the version waits for a slot.
    fn spawn_worker(&mut self, key: &VersionKey, want: Want) -> bool {
        let Some(VersionState::Ready(prepared)) = self.versions.get(key) else {
            return false;
        };
        let prepared = prepared.clone();
        // A chained call gets a Worker whatever the limits: its caller (and
        // any caller of that one) holds a slot and waits for it, so limits
        // reached by waiting callers would hold it for ever. It costs one
        // Worker per link of a chain, at most doer.max_chain_depth.
        let chained = want == Want::Task
            && self
                .pending
                .get(key)
                .and_then(VecDeque::front)
                .is_some_and(|task| task.trigger.depth() > 0);
        let live = self.count(key, |s| s != WorkerState::Stopping);
        if chained {
            return self.start_worker(key, &prepared);
        }
        if live >= prepared.resources.concurrency as usize {
            return false;
        }
        if self.live_workers() >= self.config.max_workers as usize
            && !self.evict_one_idle(key)
            && !(want == Want::Task && self.preempt_for(&key.project))
        {
            if want == Want::Task {
                self.waiting.insert(key.clone());
            }
            return false;
        }
        self.start_worker(key, &prepared)
    }

    /// Starts a Worker for `key`, limits aside.
    fn start_worker(&mut self, key: &VersionKey, prepared: &Prepared) -> bool {
        self.next_worker += 1;
        let id = self.next_worker;
        let cgroup = match &self.cgroups {
            Some(cgroups) => {
                let limits = WorkerLimits {
                    memory_bytes: u64::from(prepared.resources.memory_mb + WORKER_OVERHEAD_MB)
                        << 20,
                    // The sandbox's own processes (bwrap and its init) too.
                    max_processes: self.config.worker_max_processes + 4,
                };
                match cgroups.worker(key.project.as_str(), id, limits) {
                    Ok(group) => Some(group),
                    Err(err) => {
                        self.cannot_start(key, format!("cannot make the Worker's cgroup: {err}"));
                        return false;
                    }
                }
            }
            None => None,
        };
        let load = Load {
            project: key.project.clone(),
            doee: key.doee.clone(),
            version: key.version,
            params: prepared.params.clone(),
            limits: Limits {
                memory_mb: prepared.resources.memory_mb,
                max_processes: self.config.worker_max_processes,
                max_open_files: self.config.worker_max_open_files,
                max_output_bytes: self.config.max_output_bytes,
                max_log_lines: 1000,
            },
            own_pid_namespace: self.isolation.own_pid_namespace(),
        };
        let spawned = worker::spawn(
            worker::Spawn {
                id,
                isolation: self.isolation.as_ref(),
                executable: &self.area.executable,
                doee: &prepared.shared_object,
                workers_dir: &self.area.workers_dir(),
                load,
                start_timeout: self.config.start_timeout,
                cgroup,
            },
            self.worker_events.clone(),
        );
        match spawned {
            Ok(handle) => {
                tracing::debug!(worker = id, version = %key, "starting a Worker");
                self.workers.insert(
                    id,
                    Worker {
                        key: key.clone(),
                        handle,
                        state: WorkerState::Starting,
                        fresh: true,
                        calling: false,
                    },
                );
                self.pools.entry(key.clone()).or_default().workers.push(id);
                true
            }
            Err(err) => {
                self.cannot_start(key, format!("cannot start a Worker: {err:#}"));
                false
            }
        }
    }

    /// Fails the tasks waiting for `key`, whose Worker could not be started.
    fn cannot_start(&mut self, key: &VersionKey, why: String) {
        tracing::error!(version = %key, %why);
        let tasks: Vec<Task> = self.pending.remove(key).unwrap_or_default().into();
        for task in tasks {
            self.fail(
                task,
                DoeeFailure::NotStarted(why.clone()),
                false,
                Duration::ZERO,
            );
        }
    }

    fn live_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Stopping)
            .count()
    }

    /// The live Workers, as the slot policy sees them.
    fn slots(&self) -> Vec<Slot<'_>> {
        self.workers
            .iter()
            .filter(|(_, w)| w.state != WorkerState::Stopping)
            .map(|(&worker, w)| Slot {
                project: &w.key.project,
                worker,
                busy_since: match w.state {
                    WorkerState::Busy { started, .. } => Some(started),
                    _ => None,
                },
            })
            .collect()
    }

    /// Workers `project` holds.
    fn held_by(&self, project: &ProjectName) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Stopping && &w.key.project == project)
            .count()
    }

    /// Projects that hold Workers or wait for one.
    fn contending(&self) -> usize {
        let mut projects: HashSet<&ProjectName> = self
            .workers
            .values()
            .filter(|w| w.state != WorkerState::Stopping)
            .map(|w| &w.key.project)
            .collect();
        projects.extend(
            self.pending
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(key, _)| &key.project),
        );
        projects.len()
    }

    /// Stops another project's Worker so that `project`, which holds none,
    /// gets one at once (see [`crate::slots`]).
    fn preempt_for(&mut self, project: &ProjectName) -> bool {
        if self.held_by(project) > 0 {
            return false;
        }
        let victim = slots::preemption_victim(
            &self.slots(),
            self.config.max_workers as usize,
            self.contending(),
        );
        let Some(id) = victim else {
            return false;
        };
        let Some(owner) = self.workers.get(&id).map(|w| w.key.project.clone()) else {
            return false;
        };
        let why = format!(
            "stopped to give project `{project}` a Worker: the platform's {} Workers were all \
             taken and project `{owner}` held {}, more than its share; try again",
            self.config.max_workers,
            self.held_by(&owner)
        );
        tracing::info!(worker = id, %owner, %project, "preempting a Worker");
        self.kill_worker(id, DoeeFailure::Preempted(why));
        true
    }

    /// Gives freed slots to the versions waiting for one, the project
    /// holding the fewest Workers first.
    fn serve_waiting(&mut self) {
        let mut keys: Vec<VersionKey> = self.waiting.drain().collect();
        keys.retain(|key| self.pending.get(key).is_some_and(|q| !q.is_empty()));
        keys.sort_by_cached_key(|key| self.held_by(&key.project));
        for key in keys {
            self.schedule(&key);
        }
    }

    /// The waiting version a Worker of `owner` that just finished should be
    /// handed over to, if any.
    fn hand_over_to(&self, owner: &ProjectName) -> Option<VersionKey> {
        let owner_holds = self.held_by(owner);
        self.waiting
            .iter()
            .filter(|key| &key.project != owner)
            .filter(|key| self.pending.get(*key).is_some_and(|q| !q.is_empty()))
            .map(|key| (self.held_by(&key.project), key))
            .min_by_key(|&(holds, key)| (holds, key.clone()))
            .filter(|&(holds, _)| slots::hand_over(owner_holds, holds))
            .map(|(_, key)| key.clone())
    }

    /// Sets a project's CPU weight in its cgroup, when it changed.
    fn set_cpu_weight(&mut self, project: &ProjectName, weight: u32) {
        let Some(cgroups) = &self.cgroups else {
            return;
        };
        if self.cpu_weights.get(project) == Some(&weight) {
            return;
        }
        match cgroups.set_cpu_weight(project.as_str(), weight) {
            Ok(()) => {
                self.cpu_weights.insert(project.clone(), weight);
            }
            Err(err) => {
                tracing::warn!(%project, weight, cause = %err, "cannot set a project's CPU weight")
            }
        }
    }

    fn evict_one_idle(&mut self, except: &VersionKey) -> bool {
        let victim = self
            .workers
            .iter()
            .filter(|(_, w)| &w.key != except)
            .filter_map(|(&id, w)| match w.state {
                WorkerState::Idle(since) => Some((since, id)),
                _ => None,
            })
            .min();
        match victim {
            Some((_, id)) => {
                self.stop_worker(id);
                true
            }
            None => false,
        }
    }

    fn start(&mut self, id: WorkerId, task: Task) {
        if task.deadline.is_past() {
            let failure = Failure::new(
                FailureKind::Timeout,
                "the invocation waited too long for a Worker",
            );
            task.responder.reply(Err(failure));
            return;
        }
        self.occupy(id, task, Handover::SendNow);
    }

    /// Records that Worker `id` now runs `task`, arms its timeout, and sends
    /// the task unless it was sent ahead. A task that cannot be recorded goes
    /// back in line, unsent.
    fn occupy(&mut self, id: WorkerId, task: Task, handover: Handover) {
        let (Some(worker), Some(VersionState::Ready(prepared))) =
            (self.workers.get_mut(&id), self.versions.get(&task.key))
        else {
            return self.requeue(task);
        };
        let started = Instant::now();
        let mut deadline =
            started + Duration::from_millis(u64::from(prepared.resources.timeout_ms));
        if task.trigger.depth() > 0 {
            // Past its caller's deadline nobody waits for a callee.
            deadline = deadline.min(started + task.deadline.remaining());
        }
        worker.state = WorkerState::Busy {
            started,
            deadline,
            fresh: worker.fresh,
        };
        worker.fresh = false;
        if handover == Handover::SendNow {
            worker.handle.send(execute(&task));
        }
        self.timeouts.insert((deadline, id));
        self.running.insert(id, task);
    }

    fn on_worker(&mut self, id: WorkerId, event: worker::Event) {
        match event {
            worker::Event::Message(FromWorker::Ready) => {
                let Some(worker) = self.workers.get_mut(&id) else {
                    return;
                };
                if worker.state == WorkerState::Starting {
                    worker.state = WorkerState::Idle(Instant::now());
                }
                let key = worker.key.clone();
                self.schedule(&key);
            }
            worker::Event::Message(FromWorker::Done(done)) => self.on_done(id, done),
            worker::Event::Message(FromWorker::LoadFailed(why)) => {
                let Some(key) = self.workers.get(&id).map(|w| w.key.clone()) else {
                    return;
                };
                tracing::warn!(version = %key, %why, "a Worker could not load its Doee");
                self.stop_worker(id);
                // Every Worker of this version would fail the same way.
                let waiting = self.pending.remove(&key).unwrap_or_default();
                self.version_failed(key, why, waiting);
            }
            worker::Event::Message(FromWorker::HostCall(call)) => self.on_host_call(id, call),
            worker::Event::Exited(reason) => self.on_exited(id, reason),
        }
    }

    /// Carries a Doee's call to the platform through the kernel, for the
    /// project of the Worker it came from: the Doee cannot name another.
    /// The Worker waits for the answer; its invocation's timeout bounds it.
    fn on_host_call(&mut self, id: WorkerId, call: HostCall) {
        match call {
            HostCall::Invoke { doee, input } => return self.on_invoke(id, doee, input),
            HostCall::Write(chunk) => return self.on_write(id, chunk),
            _ => {}
        }
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        let handle = worker.handle.clone();
        let timeout = match worker.state {
            WorkerState::Busy { deadline, .. } => {
                deadline.saturating_duration_since(Instant::now())
            }
            _ => Duration::from_secs(5),
        };
        let scope = Scope::project(worker.key.project.clone(), timeout);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let answer = match call {
                HostCall::Sql { query, params } => conn
                    .call(&scope, dbriver::Sql { query, params })
                    .await
                    .map(|rows| rows.rows),
                HostCall::Doc {
                    op,
                    collection,
                    json,
                } => {
                    conn.call(
                        &scope,
                        dbriver::Doc {
                            op,
                            collection,
                            json,
                        },
                    )
                    .await
                }
                HostCall::Publish { topic, payload } => conn
                    .call(&scope, commserver::Publish { topic, payload })
                    .await
                    .map(|()| String::new()),
                // Read at each call: a secret set since takes effect at once.
                HostCall::Secret { name } => match SecretName::new(name) {
                    Ok(name) => conn
                        .call(&scope, resadmin::ReadSecret { name })
                        .await
                        .map(|value| value.0),
                    Err(err) => Err(Failure::invalid(err)),
                },
                HostCall::Invoke { .. } | HostCall::Write(_) => {
                    unreachable!("handled by on_invoke and on_write")
                }
            };
            handle.send(ToWorker::HostReply(
                answer.map(Bytes::from).map_err(|f| f.message),
            ));
        });
    }

    /// A streamed invocation's Doee wrote a piece (`ctx.write`): it goes to
    /// the origin now if the origin has room, else when it pulls; the
    /// Worker waits until then, so a reader that stops holds the writer.
    fn on_write(&mut self, id: WorkerId, chunk: Bytes) {
        let (max_output, keep) = (
            self.config.max_output_bytes as usize,
            self.config.record_output_bytes,
        );
        let (Some(worker), Some(task)) = (self.workers.get(&id), self.running.get_mut(&id)) else {
            return;
        };
        let Some(stream) = task.stream.as_mut() else {
            let why = "this invocation's output is not streamed";
            return worker.handle.send(ToWorker::HostReply(Err(why.into())));
        };
        match stream.write(chunk, max_output, keep) {
            Write::Send(chunk) => {
                task.responder.chunk(chunk);
                worker.handle.send(ToWorker::HostReply(Ok(Bytes::new())));
            }
            Write::Wait => {}
            Write::Refuse(why) => worker.handle.send(ToWorker::HostReply(Err(why))),
        }
    }

    /// The origin of a streamed invocation took a piece: a waiting one goes.
    fn on_pull(&mut self, request: MessageId) {
        let Some((&worker_id, task)) = self
            .running
            .iter_mut()
            .find(|(_, task)| task.responder.id() == request)
        else {
            return;
        };
        if let Some(chunk) = task.stream.as_mut().and_then(Stream::pulled) {
            task.responder.chunk(chunk);
            if let Some(worker) = self.workers.get(&worker_id) {
                worker.handle.send(ToWorker::HostReply(Ok(Bytes::new())));
            }
        }
    }

    /// The origin gave its request up (its client went away): a running
    /// invocation is stopped, a waiting one dropped.
    fn on_cancel(&mut self, request: MessageId) {
        let running = self
            .running
            .iter()
            .find(|(_, task)| task.responder.id() == request)
            .map(|(&id, _)| id);
        if let Some(id) = running {
            tracing::debug!(worker = id, "stopping an invocation whose client went away");
            let why = "the client went away; the invocation was stopped".to_string();
            return self.kill_worker(id, DoeeFailure::Error(why));
        }
        let waiting = self.pending.values_mut().flatten();
        let preparing = self.versions.values_mut().flat_map(|v| match v {
            VersionState::Preparing(tasks) => tasks.iter_mut(),
            _ => [].iter_mut(),
        });
        let sent_ahead = self.prefetched.values_mut();
        // Not started: it starts, and its first write fails.
        if let Some(stream) = waiting
            .chain(preparing)
            .chain(sent_ahead)
            .find(|task| task.responder.id() == request)
            .and_then(|task| task.stream.as_mut())
        {
            stream.cancel();
        }
    }

    /// A Doee calls another of its project (`ctx.invoke`): the callee is
    /// resolved to its active version and invoked through the kernel as
    /// the caller's child, one level deeper, within the caller's deadline.
    /// The caller's slot is lent to the callee until the answer comes.
    fn on_invoke(&mut self, id: WorkerId, doee: String, input: Bytes) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let handle = worker.handle.clone();
        let (Some(task), WorkerState::Busy { deadline, .. }) =
            (self.running.get(&id), worker.state)
        else {
            let why = "ctx.invoke works only while an invocation runs, not in initialize";
            return handle.send(ToWorker::HostReply(Err(why.into())));
        };
        let depth = task.trigger.depth().saturating_add(1);
        if depth > self.config.max_chain_depth {
            let why = format!(
                "calling `{doee}` would make a chain {depth} deep, past doer.max_chain_depth ({}): \
                 do these Doees call each other in a cycle?",
                self.config.max_chain_depth
            );
            return handle.send(ToWorker::HostReply(Err(why)));
        }
        let doee = match isms_ipc::DoeeName::new(doee) {
            Ok(doee) => doee,
            Err(err) => return handle.send(ToWorker::HostReply(Err(err.to_string()))),
        };
        worker.calling = true;
        let project = worker.key.project.clone();
        // When the caller's Worker is stopped, nobody waits for the callee.
        let left = deadline.saturating_duration_since(Instant::now());
        let deadline = task.deadline.min(Deadline::after(left));
        let parent = task.id;
        let allowance = self.config.start_timeout;
        let conn = self.conn.clone();
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let answer = call_doee(
                &conn, project, doee, parent, depth, deadline, input, allowance,
            )
            .await;
            let _ = inputs.send(Input::CalleeReturned(id, answer));
        });
    }

    fn on_done(&mut self, id: WorkerId, done: Done) {
        let Some(task) = self.running.remove(&id) else {
            return;
        };
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let WorkerState::Busy {
            started,
            deadline,
            fresh,
        } = worker.state
        else {
            return;
        };
        self.timeouts.remove(&(deadline, id));
        let run = started.elapsed();
        let key = worker.key.clone();
        if let Some(pool) = self.pools.get_mut(&key) {
            let run_us = run.as_micros() as u64;
            pool.run_us = match pool.run_us {
                0 => run_us.max(1),
                smoothed => (smoothed * 7 + run_us) / 8,
            };
        }
        if done.panicked {
            // The Executor exits by itself after a panic.
            worker.state = WorkerState::Stopping;
        } else {
            worker.state = WorkerState::Idle(Instant::now());
        }
        let outcome = Outcome {
            result: done.result.map_err(DoeeFailure::Error),
            logs: done.logs,
            cold_start: fresh,
            run_us: run.as_micros() as u64,
        };
        self.finish(task, outcome);
        if done.panicked {
            self.take_back_sent_ahead(id);
        } else if let Some(next) = self.prefetched.remove(&id) {
            self.occupy(id, next, Handover::AlreadySent);
        } else if let Some(starved) = self.hand_over_to(&key.project) {
            self.stop_worker(id);
            self.schedule(&starved);
        }
        self.schedule(&key);
        if !self.waiting.is_empty() {
            self.serve_waiting();
        }
    }

    fn on_exited(&mut self, id: WorkerId, reason: String) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        tracing::debug!(worker = id, version = %worker.key, %reason, "Worker exited");
        if let Some(pool) = self.pools.get_mut(&worker.key) {
            pool.workers.retain(|&w| w != id);
        }
        if let WorkerState::Busy { deadline, .. } = worker.state {
            self.timeouts.remove(&(deadline, id));
        }
        self.take_back_sent_ahead(id);
        if let Some(task) = self.running.remove(&id) {
            let (fresh, run) = match worker.state {
                WorkerState::Busy { started, fresh, .. } => (fresh, started.elapsed()),
                _ => (false, Duration::ZERO),
            };
            self.fail(task, DoeeFailure::Crashed(reason.clone()), fresh, run);
        }
        self.serve_waiting();
        if worker.state == WorkerState::Starting {
            let others = self.count(&worker.key, |s| s != WorkerState::Stopping);
            if others == 0 {
                let tasks: Vec<Task> = self.pending.remove(&worker.key).unwrap_or_default().into();
                for task in tasks {
                    self.fail(
                        task,
                        DoeeFailure::NotStarted(reason.clone()),
                        true,
                        Duration::ZERO,
                    );
                }
            }
        }
        self.schedule(&worker.key);
    }

    fn on_timeouts(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timeouts.first() {
            if at > now {
                break;
            }
            self.timeouts.pop_first();
            if !self.running.contains_key(&id) {
                continue;
            }
            let Some(key) = self.workers.get(&id).map(|w| w.key.clone()) else {
                continue;
            };
            let after_ms = match self.versions.get(&key) {
                Some(VersionState::Ready(p)) => p.resources.timeout_ms,
                _ => 0,
            };
            self.kill_worker(id, DoeeFailure::TimedOut { after_ms });
            self.schedule(&key);
        }
    }

    /// Kills a busy Worker, failing its task with `failure`; a task sent
    /// ahead to it goes back in line.
    fn kill_worker(&mut self, id: WorkerId, failure: DoeeFailure) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let (fresh, run, deadline) = match worker.state {
            WorkerState::Busy {
                started,
                fresh,
                deadline,
            } => (fresh, started.elapsed(), Some(deadline)),
            _ => (false, Duration::ZERO, None),
        };
        worker.state = WorkerState::Stopping;
        worker.handle.kill();
        if let Some(deadline) = deadline {
            self.timeouts.remove(&(deadline, id));
        }
        self.take_back_sent_ahead(id);
        if let Some(task) = self.running.remove(&id) {
            self.fail(task, failure, fresh, run);
        }
    }

    /// Reaps idle Workers, keeps `min_warm` ones, claims again what is
    /// late, and reports load.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.reclaim_late(now);
        let keys: Vec<VersionKey> = self.pools.keys().cloned().collect();
        for key in keys {
            let min_warm = self.min_warm(&key);
            let mut live = self.count(&key, |s| s != WorkerState::Stopping);
            let mut idle: Vec<(Instant, WorkerId)> = self.pools[&key]
                .workers
                .iter()
                .filter_map(|&id| match self.workers.get(&id)?.state {
                    WorkerState::Idle(since) if now - since > self.config.idle_timeout => {
                        Some((since, id))
                    }
                    _ => None,
                })
                .collect();
            idle.sort();
            for (_, id) in idle {
                if live <= min_warm {
                    break;
                }
                tracing::debug!(worker = id, version = %key, "reaping an idle Worker");
                self.stop_worker(id);
                live -= 1;
            }
            while live < min_warm && self.spawn_worker(&key, Want::Warm) {
                live += 1;
            }
            if self.pools.get(&key).is_some_and(|p| p.workers.is_empty())
                && self.pending.get(&key).is_none_or(VecDeque::is_empty)
            {
                self.pools.remove(&key);
            }
        }
        self.conn.set_load(isms_ipc::Load {
            queue_depth: self.pending.values().map(|q| q.len() as u32).sum(),
            workers: self.workers.len() as u32,
        });
    }

    fn min_warm(&self, key: &VersionKey) -> usize {
        let newest = self.newest.get(&(key.project.clone(), key.doee.clone()));
        match self.versions.get(key) {
            Some(VersionState::Ready(p)) if newest == Some(&key.version) => {
                p.resources.min_warm as usize
            }
            _ => 0,
        }
    }

    fn stop_worker(&mut self, id: WorkerId) {
        if let Some(worker) = self.workers.get_mut(&id)
            && worker.state != WorkerState::Stopping
        {
            worker.state = WorkerState::Stopping;
            worker.handle.send(ToWorker::Stop);
        }
    }

    fn stop_all(&mut self) {
        for worker in self.workers.values() {
            worker.handle.kill();
        }
    }

    /// Fails the tasks waiting for a version that cannot run, and remembers
    /// that for a while so new ones fail fast.
    fn version_failed(
        &mut self,
        key: VersionKey,
        why: String,
        waiting: impl IntoIterator<Item = Task>,
    ) {
        for task in waiting {
            self.fail(
                task,
                DoeeFailure::NotStarted(why.clone()),
                false,
                Duration::ZERO,
            );
        }
        self.versions.insert(
            key,
            VersionState::Failed {
                why,
                at: Instant::now(),
            },
        );
    }

    fn fail(&mut self, task: Task, failure: DoeeFailure, cold_start: bool, run: Duration) {
        let outcome = Outcome {
            result: Err(failure),
            logs: Vec::new(),
            cold_start,
            run_us: run.as_micros() as u64,
        };
        self.finish(task, outcome);
    }

    fn finish(&mut self, task: Task, mut outcome: Outcome) {
        if self.done.len() >= DONE_KEPT {
            self.done.remove(0);
            self.records_dropped += 1;
        }
        let (status, http_status, error, output) = match &outcome.result {
            Ok(response) => (
                InvocationStatus::Succeeded,
                response.status.unwrap_or(200),
                None,
                response.body.clone(),
            ),
            Err(failure) => (
                match failure {
                    DoeeFailure::Error(_) => InvocationStatus::Error,
                    DoeeFailure::Crashed(_) => InvocationStatus::Crashed,
                    DoeeFailure::TimedOut { .. } => InvocationStatus::Timeout,
                    DoeeFailure::NotStarted(_) => InvocationStatus::NotStarted,
                    DoeeFailure::Busy => InvocationStatus::Busy,
                    DoeeFailure::Preempted(_) => InvocationStatus::Preempted,
                },
                failure.http_status(),
                Some(failure.message()),
                Bytes::new(),
            ),
        };
        let keep = self.config.record_output_bytes;
        // A streamed output is what was sent, then the answer's own part.
        let (output, output_truncated) = task.stream.unwrap_or_default().record(&output, keep);
        self.done.push(InvocationRecord {
            id: task.id,
            project: task.key.project,
            doee: task.key.doee,
            version: task.key.version,
            trigger: task.trigger,
            status,
            started_ms: task.accepted_ms,
            duration_us: task.accepted.elapsed().as_micros() as u64,
            cold_start: outcome.cold_start,
            http_status,
            error,
            output_truncated,
            output,
            // The caller does not read the logs; the record keeps them.
            logs: std::mem::take(&mut outcome.logs),
            instance: self.config.instance.clone(),
            host: self.config.host.clone(),
        });
        task.responder
            .reply(Ok(Reply::Doer(doer::Reply::Invoke(outcome))));
    }

    /// Hands the done queue to Resadmin, which records it.
    fn send_records(&mut self) {
        if self.done.is_empty() {
            return;
        }
        if self.records_dropped > 0 {
            tracing::warn!(
                dropped = self.records_dropped,
                "Resadmin could not take invocation records in time; the oldest were dropped"
            );
            self.records_dropped = 0;
        }
        let invocations = std::mem::take(&mut self.done);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let count = invocations.len();
            let scope = Scope::platform(Duration::from_secs(10));
            if let Err(failure) = conn.call(&scope, Record { invocations }).await {
                tracing::warn!(count, %failure, "cannot record invocations");
            }
        });
    }
}

/// `task`, with the kernel told that it waits here.
fn deferred(mut task: Task) -> Task {
    task.defer();
    task
}

impl Task {
    /// Tells the kernel this task waits here (see [`Gate`]).
    fn defer(&mut self) {
        self.gate = Gate::Deferred;
        self.responder.defer();
    }
}

/// Whether [`Admin::occupy`] sends the task to the Worker.
#[derive(PartialEq, Eq)]
enum Handover {
    SendNow,
    /// It was prefetched: the Worker has it already.
    AlreadySent,
}

/// Runs `doee`'s active version for a caller's `ctx.invoke`: its output,
/// or why not, naming the callee's invocation.
#[allow(clippy::too_many_arguments)]
async fn call_doee(
    conn: &Connection,
    project: ProjectName,
    doee: isms_ipc::DoeeName,
    parent: InvocationId,
    depth: u8,
    deadline: Deadline,
    input: Bytes,
    allowance: Duration,
) -> Result<Bytes, String> {
    let resolve = Scope::project(project, deadline.remaining());
    let target = conn
        .call(&resolve, resadmin::Resolve { doee: doee.clone() })
        .await
        .map_err(|f| format!("cannot call `{doee}`: {}", f.message))?;
    let id = InvocationId::generate();
    let (mut scope, invoke) = target.invoke(id, Trigger::Chain { parent, depth }, input, allowance);
    // The caller's remaining time bounds the callee.
    scope.deadline = scope.deadline.min(deadline);
    match conn.call(&scope, invoke).await {
        Ok(outcome) => match outcome.result {
            Ok(response) => Ok(response.body),
            Err(failure) => Err(format!(
                "`{doee}` failed (invocation {id}): {}",
                failure.message()
            )),
        },
        Err(failure) => Err(format!(
            "`{doee}` did not run (invocation {id}): {}",
            failure.message
        )),
    }
}

fn execute(task: &Task) -> ToWorker {
    ToWorker::Execute(isms_ipc::worker::Execute {
        id: task.id,
        trigger: task.trigger.clone(),
        input: task.input.clone(),
        stream: task.stream.is_some(),
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
