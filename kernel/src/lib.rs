//! The ISMS kernel: the only hub between services.
//!
//! - The IPC module ([`run`]) owns one ZeroMQ ROUTER socket and moves frames
//!   between it and the [`Kernel`] state machine.
//! - The Process Controller ([`processes`]) records every request until its
//!   origin has an answer, and answers it on timeout or when its target dies.
//! - The Scheduler ([`scheduler`]) keeps one red-black-tree ready queue per
//!   target service and dispatches only while an instance has free capacity.
//! - The Services Controller ([`services`]) knows every instance, its health,
//!   capacity and restarts, and picks the instance for each dispatch.
//!
//! [`Kernel`] is synchronous, writes what it sends into an outbox and is
//! told the time ([`Now`]) rather than reading a clock, so the routing rules
//! and the timeouts are tested without sockets or sleeps.
//!
//! Why one file of this size: the Kernel state machine's event handlers
//! (message, reply, tick) share its tables and are read together; the tables
//! themselves live in the modules above, and the run loop at the bottom is
//! the only async code.

pub mod processes;
pub mod remote;
pub mod scheduler;
pub mod services;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt;
use isms_ipc::kernel::{self as kernel_protocol};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin as kernel_resadmin;
use isms_ipc::{
    Body, Control, Endpoint, Envelope, Failure, FailureKind, Kind, Message, MessageId, Priority,
    RawMessage, Reply, Request, RequestKind, ServiceKind,
};
use processes::{Claim, ORPHAN_GRACE_MS, ProcessId, ProcessTable, State};
use scheduler::{QueueLimits, ReadyQueue, Refused};
use services::{Registered, ServicesController};
use std::collections::HashMap;
use std::future::Future;
use std::ops::Add;
use std::time::{Duration, Instant};
use zeromq::{RouterSocket, Socket, SocketEvent, SocketRecv, SocketSend, ZmqMessage};

/// How the kernel runs.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Where it listens for the services of its own host (`ipc://`).
    pub listen: Endpoint,
    /// Where it listens for services on other hosts, if anywhere.
    pub remote: Option<remote::RemoteConfig>,
    /// Bounds of each ready queue.
    pub queue: QueueLimits,
    /// Silence after which an instance is considered down.
    pub heartbeat_timeout: Duration,
}

/// How often silent instances are looked for when nothing else is due.
const HEARTBEAT_CHECK: Duration = Duration::from_millis(250);

/// A send that takes longer than this means the peer stopped reading; the
/// message is dropped rather than stalling every other peer.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// A moment on both clocks the kernel needs: the monotonic one for
/// heartbeats, service times and its own checks, and the wall clock that
/// envelope deadlines are written in. Other processes write those deadlines
/// with their wall clock, so the kernel compares them with the wall clock
/// read at the same moment rather than derive it from an instant, which
/// would drift when the system clock is set. Only [`run`] reads the clocks;
/// tests advance a `Now` by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// The monotonic clock.
    pub instant: Instant,
    /// The wall clock, in ms since the epoch.
    pub epoch_ms: u64,
}

impl Now {
    /// Reads both clocks.
    pub fn read() -> Now {
        Now {
            instant: Instant::now(),
            epoch_ms: now_ms(),
        }
    }
}

impl Add<Duration> for Now {
    type Output = Now;
    /// Both clocks, `by` later.
    fn add(self, by: Duration) -> Now {
        Now {
            instant: self.instant + by,
            epoch_ms: self.epoch_ms + by.as_millis() as u64,
        }
    }
}

/// One outgoing message: destination and frames.
pub type Outgoing = (Bytes, [Bytes; 2]);

/// The kernel's state: services, processes and ready queues.
pub struct Kernel {
    services: ServicesController,
    processes: ProcessTable,
    queues: HashMap<ServiceKind, ReadyQueue<ProcessId>>,
    queue_limits: QueueLimits,
    outbox: Vec<Outgoing>,
    started_ms: u64,
    routed: u64,
    /// When silent instances are next looked for. Absolute, so a steady
    /// stream of messages cannot keep postponing it.
    next_check: Instant,
    /// Links from other hosts, by peer, with their addresses.
    links: HashMap<Bytes, String>,
    /// Links to close: their registration was refused.
    closing: Vec<Bytes>,
}

impl Kernel {
    /// A kernel with no services, started `now`.
    pub fn new(queue_limits: QueueLimits, heartbeat_timeout: Duration, now: Now) -> Kernel {
        Kernel {
            services: ServicesController::new(heartbeat_timeout),
            processes: ProcessTable::default(),
            queues: HashMap::new(),
            queue_limits,
            outbox: Vec::new(),
            started_ms: now.epoch_ms,
            routed: 0,
            next_check: now.instant + HEARTBEAT_CHECK,
            links: HashMap::new(),
            closing: Vec::new(),
        }
    }

    /// A link from another host was admitted (it proved the join key).
    pub fn on_link(&mut self, peer: Bytes, address: String) {
        self.links.insert(peer, address);
    }

    /// Takes the links to close.
    pub fn drain_closing(&mut self) -> std::vec::Drain<'_, Bytes> {
        self.closing.drain(..)
    }

    /// Takes what is to be sent.
    pub fn drain_outbox(&mut self) -> std::vec::Drain<'_, Outgoing> {
        self.outbox.drain(..)
    }

    /// Handles one message from `peer`.
    pub fn on_message(&mut self, peer: Bytes, frames: &[Bytes], now: Now) {
        let raw = match RawMessage::decode(frames) {
            Ok(raw) => raw,
            Err(err) => {
                let who = self.describe(&peer);
                tracing::warn!(from = %who, cause = %err, "dropped a malformed message");
                return;
            }
        };
        self.routed += 1;
        if raw.header.kind == Kind::Control {
            return self.on_control(peer, &raw, now);
        }
        let Some(origin) = self
            .services
            .instance(&peer)
            .map(|i| i.registration.service)
        else {
            self.send_control(&peer, Control::Reregister);
            return;
        };
        match raw.header.kind {
            Kind::Request(request) => self.on_request(peer, origin, raw, request, now),
            Kind::Reply => self.on_reply(peer, raw, now.instant),
            // Events come from Resadmin alone: a forged `QuotasChanged` or
            // `DeviceRevoked` would act on another project.
            Kind::Event if origin != ServiceKind::Resadmin => {
                tracing::warn!(from = %self.describe(&peer), "dropped an event from a service that does not send them");
            }
            Kind::Event => {
                let mut header = raw.header;
                header.envelope.origin = origin;
                let targets: Vec<Bytes> = self
                    .services
                    .up_peers()
                    .filter(|p| **p != peer)
                    .cloned()
                    .collect();
                for target in targets {
                    self.push_raw(target, &header, raw.body.clone());
                }
            }
            Kind::Control => {}
        }
    }

    fn on_control(&mut self, peer: Bytes, raw: &RawMessage, now: Now) {
        let body = match raw.decode_body() {
            Ok(Body::Control(control)) => control,
            Ok(_) | Err(_) => {
                tracing::warn!(from = %self.describe(&peer), "dropped a malformed control message");
                return;
            }
        };
        match body {
            Control::Register(registration) => {
                let service = registration.service;
                let instance = registration.instance.clone();
                let remote = self.links.get(&peer).cloned();
                let refusal = match &remote {
                    Some(_) => remote::admissible(&registration).err(),
                    // A link's frames that arrive after it closed.
                    None if remote::is_link(&peer) => Some("this link is closed".to_string()),
                    None => None,
                };
                if let Some(why) = refusal {
                    let address = remote.as_deref().unwrap_or("a closed link");
                    tracing::warn!(%address, %service, %instance, "refused a registration from another host: {why}");
                    self.send_control(&peer, Control::Refused(why));
                    self.closing.push(peer);
                    return;
                }
                match self
                    .services
                    .register(peer.clone(), registration, remote.clone(), now)
                {
                    Registered::New => tracing::info!(%service, %instance, "service registered"),
                    Registered::Again => {
                        tracing::info!(%service, %instance, "service registered again")
                    }
                    Registered::Restarted { previous } => {
                        tracing::warn!(%service, %instance, "service restarted");
                        if let Some(previous) = previous {
                            // Two hosts under one name (cloned images) would
                            // take it from each other forever: the newer
                            // link wins and the older is closed.
                            if let Some(address) = self.links.get(&previous) {
                                tracing::warn!(%instance, older = %address, newer = remote.as_deref().unwrap_or("this host"), "two connections claim one instance name; closing the older");
                                self.closing.push(previous.clone());
                            }
                            self.fail_dispatched(
                                &previous,
                                &format!("the {service} restarted while handling the request"),
                                now,
                            );
                        }
                    }
                }
                self.send_control(&peer, Control::Registered);
                self.dispatch(service, now.instant);
            }
            Control::Heartbeat(load) => {
                if !self.services.heartbeat(&peer, load, now.instant) {
                    self.send_control(&peer, Control::Reregister);
                }
            }
            Control::Deferred(id) => self.processes.defer(id.0, &peer),
            Control::Claim(id) => {
                let claim = self.processes.claim(id.0, &peer);
                let granted = claim == Claim::Granted;
                self.send_control(&peer, Control::Claimed { id, granted });
                // Its origin has its answer (a timeout): free the instance's
                // capacity now rather than after the grace.
                if claim == Claim::Orphaned {
                    self.settle_orphan(id.0, &peer, now.instant);
                }
            }
            // A piece of a streamed answer goes to the request's origin.
            Control::Chunk { id, data } => {
                let origin = match self.processes.get_mut(id.0) {
                    Some(process) => match &process.state {
                        State::Running { peer: on, .. } if *on == peer => {
                            Some((process.origin.clone(), process.origin_id))
                        }
                        _ => None,
                    },
                    None => None,
                };
                if let Some((origin, origin_id)) = origin {
                    let chunk = Control::Chunk {
                        id: origin_id,
                        data,
                    };
                    self.send_control(&origin, chunk);
                }
            }
            // What an origin says of its request goes to the instance
            // running it; a request given up before it ran is dropped.
            Control::Pull(origin_id) | Control::Cancel(origin_id) => {
                let Some(id) = self.processes.id_for(&peer, origin_id) else {
                    return;
                };
                let cancel = matches!(body, Control::Cancel(_));
                match self.processes.get_mut(id).map(|p| &p.state) {
                    Some(State::Running { peer: running, .. }) => {
                        let running = running.clone();
                        let relayed = if cancel {
                            Control::Cancel(MessageId(id))
                        } else {
                            Control::Pull(MessageId(id))
                        };
                        self.send_control(&running, relayed);
                    }
                    Some(State::Queued { key, .. }) if cancel => {
                        let key = *key;
                        if let Some(process) = self.processes.finish(id)
                            && let Some(queue) = self.queues.get_mut(&process.target())
                        {
                            queue.remove(key);
                        }
                    }
                    _ => {}
                }
            }
            Control::Registered
            | Control::Reregister
            | Control::Refused(_)
            | Control::Claimed { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        peer: Bytes,
        origin: ServiceKind,
        raw: RawMessage,
        request: RequestKind,
        now: Now,
    ) {
        let target = request.target();
        // Who may ask what is declared with each request in the protocol;
        // this is the one place it is enforced, with the origin the kernel
        // vouches for, so a refused request never reaches its service.
        if !request.may_be_sent_by(origin) {
            let name = request.name();
            tracing::warn!(%origin, %target, request = name, "refused a request its origin may not send");
            let refused = Failure::new(
                FailureKind::Forbidden,
                format!("the {origin} may not ask {target} for {name}"),
            );
            return self.answer(&peer, raw.header.envelope.id, target, Err(refused));
        }
        if target == ServiceKind::Kernel {
            return self.answer_kernel_request(&peer, &raw, now);
        }
        // A Doer on another host acts for a project only while it runs one
        // of its invocations (its records aside, which name no project): a
        // stolen join key reaches the projects whose work the kernel hands
        // it, not every project's data.
        if origin == ServiceKind::Doer && remote::is_link(&peer) {
            let refusal = match &raw.header.envelope.project {
                Some(project) if !self.processes.holds_for(&peer, project) => Some(format!(
                    "a Doer on another host may ask for {} only while it runs an invocation of project `{project}`",
                    request.name()
                )),
                None if request != RequestKind::Resadmin(kernel_resadmin::RequestKind::Record) => {
                    Some(format!(
                        "a Doer on another host must ask for {} for a project",
                        request.name()
                    ))
                }
                _ => None,
            };
            if let Some(why) = refusal {
                tracing::warn!(
                    request = request.name(),
                    "refused a remote Doer's request: {why}"
                );
                let refused = Failure::new(FailureKind::Forbidden, why);
                return self.answer(&peer, raw.header.envelope.id, target, Err(refused));
            }
        }
        let RawMessage { header, body } = raw;
        let mut envelope = header.envelope;
        envelope.origin = origin;
        // A chained call from another host's Doer lives no longer than the
        // invocations the kernel handed it for the project, so it cannot
        // keep a hold on the project's data by calling itself.
        if origin == ServiceKind::Doer && target == ServiceKind::Doer && remote::is_link(&peer) {
            let latest = envelope
                .project
                .as_ref()
                .and_then(|project| self.processes.latest_due_running(&peer, project));
            let Some(latest) = latest else {
                let refused = Failure::new(
                    FailureKind::Forbidden,
                    "a Doer on another host may call a Doee only while it runs an invocation of its project",
                );
                return self.answer(&peer, envelope.id, target, Err(refused));
            };
            envelope.deadline = envelope.deadline.min(isms_ipc::Deadline(latest));
        }
        if target.serves_projects_only() && envelope.project.is_none() {
            let refused =
                Failure::invalid(format!("a request for the {target} must act for a project"));
            return self.answer(&peer, envelope.id, target, Err(refused));
        }
        if !envelope.placement.is_empty()
            && !self.services.has_up_matching(target, &envelope.placement)
        {
            let refused = unplaceable(target, &envelope.placement);
            return self.answer(&peer, envelope.id, target, Err(refused));
        }
        let queue = queue_for(&mut self.queues, self.queue_limits, target);
        let id = self.processes.next_id();
        match queue.push(envelope.project.clone(), envelope.priority, id) {
            Ok(key) => {
                self.processes
                    .admit(peer.clone(), envelope, request, body, key);
                if target == ServiceKind::Doer && origin == ServiceKind::Doer {
                    return self.dispatch_chained(peer, key, now.instant);
                }
                self.dispatch(target, now.instant);
            }
            Err(refused) => {
                let message = match refused {
                    Refused::Full(_) => format!("the {target} is busy: {refused}"),
                    Refused::ProjectFull(_) => format!("too many requests waiting: {refused}"),
                };
                self.answer(
                    &peer,
                    envelope.id,
                    target,
                    Err(Failure::new(FailureKind::Busy, message)),
                );
            }
        }
    }

    fn answer_kernel_request(&mut self, peer: &Bytes, raw: &RawMessage, now: Now) {
        let result = match raw.decode_body() {
            Ok(Body::Request(Request::Kernel(kernel_protocol::Request::Services(_)))) => Ok(
                Reply::Kernel(kernel_protocol::Reply::Services(self.statuses(now))),
            ),
            Ok(_) => Err(Failure::invalid("not a kernel request")),
            Err(err) => Err(Failure::invalid(format!("malformed request: {err}"))),
        };
        self.answer(peer, raw.header.envelope.id, ServiceKind::Kernel, result);
    }

    /// The Services Controller's view, the kernel itself first.
    pub fn statuses(&self, now: Now) -> Vec<kernel_protocol::ServiceStatus> {
        let mut statuses = vec![kernel_protocol::ServiceStatus {
            service: ServiceKind::Kernel,
            instance: "kernel".into(),
            pid: std::process::id(),
            state: kernel_protocol::InstanceState::Up,
            capacity: 0,
            in_flight: self.processes.len() as u32,
            queued: self.queues.values().map(|q| q.len() as u32).sum(),
            inner_queue: 0,
            workers: 0,
            restarts: 0,
            handled: self.routed,
            up_since_ms: self.started_ms,
            heartbeat_age_ms: 0,
            host: remote::host_name(),
            labels: Vec::new(),
            remote: None,
        }];
        statuses.extend(self.services.statuses(
            |service| self.queues.get(&service).map_or(0, |q| q.len()),
            now.instant,
        ));
        statuses
    }

    fn on_reply(&mut self, peer: Bytes, raw: RawMessage, now: Instant) {
        let id = raw.header.envelope.id.0;
        let matches_peer = match self.processes.get_mut(id).map(|p| &p.state) {
            Some(State::Running { peer: on, .. } | State::Orphaned { peer: on, .. }) => *on == peer,
            _ => false,
        };
        if !matches_peer {
            tracing::debug!(id, "dropped a reply for an unknown or expired request");
            return;
        }
        let Some(process) = self.processes.finish(id) else {
            return;
        };
        let target = process.target();
        if let Some(instance) = self.services.instance_mut(&peer) {
            instance.in_flight = instance.in_flight.saturating_sub(1);
            instance.handled += 1;
        }
        let (since, charge, answer_origin) = match process.state {
            State::Running { since, charge, .. } => (since, charge, true),
            State::Orphaned { since, charge, .. } => (since, charge, false),
            State::Queued { .. } => return,
        };
        if let Some(queue) = self.queues.get_mut(&target) {
            let took = now.saturating_duration_since(since);
            queue.complete(charge, took.as_micros() as u64);
        }
        if answer_origin {
            let mut header = raw.header;
            header.envelope.id = process.origin_id;
            header.envelope.origin = target;
            self.push_raw(process.origin, &header, raw.body);
        }
        self.dispatch(target, now);
    }

    /// Sends queued requests for `target` while an instance has room, and
    /// beyond that the first request of each project that has none in
    /// flight there (see the Scheduler).
    fn dispatch(&mut self, target: ServiceKind, now: Instant) {
        while let Some(queue) = self.queues.get_mut(&target)
            && !queue.is_empty()
        {
            let (peer, next) = match self.services.pick(target) {
                Some(peer) => (peer, queue.pop()),
                None => match self.services.least_loaded(target) {
                    Some(peer) => (peer, queue.pop_newcomer()),
                    None => return,
                },
            };
            let Some(next) = next else {
                return;
            };
            let Some(process) = self.processes.get_mut(next.item) else {
                continue;
            };
            // Work placed by labels goes to a matching instance, the least
            // loaded one even if it is full (it queues inside), so that it
            // never holds up the rest of the queue.
            let peer = match &process.state {
                State::Queued { envelope, .. }
                    if !envelope.placement.is_empty()
                        && !self.services.matches(&peer, &envelope.placement) =>
                {
                    match self
                        .services
                        .least_loaded_matching(target, &envelope.placement)
                    {
                        Some(placed) => placed,
                        None => {
                            let failure = unplaceable(target, &envelope.placement);
                            self.fail_queued(next.item, next.charge, failure);
                            continue;
                        }
                    }
                }
                _ => peer,
            };
            self.send_request(target, peer, next, now);
        }
    }

    /// A Doee's call of another (`ctx.invoke`): its caller holds a Worker
    /// and waits for it, so it goes at once to the caller's own Doer, which
    /// lends it the waiting Worker's slot, whatever the queues hold —
    /// behind them it could wait for Workers that all wait for it. (To
    /// another Doer only if the callee's `[placement]` rules the caller's
    /// out.)
    fn dispatch_chained(&mut self, caller: Bytes, key: scheduler::Key, now: Instant) {
        let Some(next) = self
            .queues
            .get_mut(&ServiceKind::Doer)
            .and_then(|queue| queue.take(key))
        else {
            return;
        };
        let placement = match self.processes.get_mut(next.item).map(|p| &p.state) {
            Some(State::Queued { envelope, .. }) => envelope.placement.clone(),
            _ => return,
        };
        let peer = if placement.is_empty() || self.services.matches(&caller, &placement) {
            caller
        } else if remote::is_link(&caller) {
            // Another host's Doer sends work nowhere but to itself.
            let failure = unplaceable(ServiceKind::Doer, &placement);
            return self.fail_queued(next.item, next.charge, failure);
        } else {
            match self
                .services
                .least_loaded_matching(ServiceKind::Doer, &placement)
            {
                Some(placed) => placed,
                None => {
                    let failure = unplaceable(ServiceKind::Doer, &placement);
                    return self.fail_queued(next.item, next.charge, failure);
                }
            }
        };
        self.send_request(ServiceKind::Doer, peer, next, now);
    }

    /// Sends a request taken from `target`'s queue to `peer`.
    fn send_request(
        &mut self,
        target: ServiceKind,
        peer: Bytes,
        next: scheduler::Dispatched<ProcessId>,
        now: Instant,
    ) {
        let counted = remote::is_link(&peer);
        let Some((request, mut envelope, body)) =
            self.processes
                .run(next.item, &peer, now, next.charge, counted)
        else {
            return;
        };
        envelope.id = MessageId(next.item);
        let header = isms_ipc::Header {
            envelope,
            kind: Kind::Request(request),
        };
        if let Some(instance) = self.services.instance_mut(&peer) {
            instance.in_flight += 1;
        }
        match header.encode() {
            Ok(header) => {
                // Only the Doer defers what it holds (see take_back).
                if target == ServiceKind::Doer {
                    self.processes
                        .keep_sent(next.item, [header.clone(), body.clone()]);
                }
                self.outbox.push((peer, [header, body]));
            }
            Err(err) => tracing::error!(cause = %err, "cannot encode a header"),
        }
    }

    /// Answers a popped request that cannot be dispatched, and settles its
    /// charge.
    fn fail_queued(&mut self, id: ProcessId, charge: scheduler::Charge, failure: Failure) {
        let Some(process) = self.processes.finish(id) else {
            return;
        };
        let target = process.target();
        if let Some(queue) = self.queues.get_mut(&target) {
            queue.abandon(charge);
        }
        self.answer(&process.origin, process.origin_id, target, Err(failure));
    }

    /// When [`Kernel::on_tick`] must next run: the earliest deadline, or the
    /// next heartbeat check, whichever comes first.
    pub fn next_tick(&self, now: Now) -> Instant {
        match self.processes.next_due() {
            Some(due) => {
                let wait = Duration::from_millis(due.saturating_sub(now.epoch_ms));
                (now.instant + wait).min(self.next_check)
            }
            None => self.next_check,
        }
    }

    /// Handles the passage of time: deadlines and silent instances.
    pub fn on_tick(&mut self, now: Now) {
        for id in self.processes.due(now.epoch_ms) {
            self.expire(id, now);
        }
        if now.instant < self.next_check {
            return;
        }
        self.next_check = now.instant + HEARTBEAT_CHECK;
        for (peer, name) in self.services.expire(now.instant) {
            tracing::warn!(instance = %name, "service instance stopped sending heartbeats");
            self.fail_dispatched(&peer, &format!("{name} stopped responding"), now);
        }
    }

    fn expire(&mut self, id: ProcessId, now: Now) {
        let Some(process) = self.processes.get_mut(id) else {
            return;
        };
        match &process.state {
            State::Queued { key, .. } => {
                let key = *key;
                let Some(process) = self.processes.finish(id) else {
                    return;
                };
                if let Some(queue) = self.queues.get_mut(&process.target()) {
                    queue.remove(key);
                }
                let failure = if self.services.has_up(process.target()) {
                    Failure::new(
                        FailureKind::Timeout,
                        format!("the {} did not get to it in time", process.target()),
                    )
                } else {
                    Failure::new(
                        FailureKind::Unavailable,
                        format!("no {} is running", process.target()),
                    )
                };
                self.answer(
                    &process.origin,
                    process.origin_id,
                    process.target(),
                    Err(failure),
                );
            }
            State::Running {
                peer,
                since,
                charge,
                ..
            } => {
                let (peer, since, charge) = (peer.clone(), *since, charge.clone());
                process.state = State::Orphaned {
                    peer,
                    since,
                    charge,
                };
                let (origin, origin_id, target) =
                    (process.origin.clone(), process.origin_id, process.target());
                self.processes
                    .reschedule(id, now.epoch_ms + ORPHAN_GRACE_MS);
                self.answer(
                    &origin,
                    origin_id,
                    target,
                    Err(Failure::new(
                        FailureKind::Timeout,
                        format!("the {target} did not answer in time"),
                    )),
                );
            }
            State::Orphaned { peer, .. } => {
                let peer = peer.clone();
                tracing::warn!(
                    id,
                    "a service never answered a request; freeing its capacity"
                );
                self.settle_orphan(id, &peer, now.instant);
            }
        }
    }

    /// Forgets a request whose origin was answered and that `peer` will not
    /// answer, freeing its capacity there.
    fn settle_orphan(&mut self, id: ProcessId, peer: &Bytes, now: Instant) {
        let Some(process) = self.processes.finish(id) else {
            return;
        };
        let target = process.target();
        if let State::Orphaned { charge, .. } = process.state
            && let Some(queue) = self.queues.get_mut(&target)
        {
            queue.abandon(charge);
        }
        if let Some(instance) = self.services.instance_mut(peer) {
            instance.in_flight = instance.in_flight.saturating_sub(1);
        }
        self.dispatch(target, now);
    }

    /// A connection closed.
    pub fn on_disconnect(&mut self, peer: &Bytes, now: Now) {
        self.links.remove(peer);
        let name = self.describe(peer);
        if self.services.mark_down(peer) {
            tracing::warn!(instance = %name, "service instance disconnected");
            self.fail_dispatched(
                peer,
                &format!("{name} stopped while handling the request"),
                now,
            );
        }
    }

    /// Settles every request dispatched to `peer`, which is lost: those it
    /// deferred and never claimed go back to their queue for another
    /// instance; the origins of the others are answered.
    fn fail_dispatched(&mut self, peer: &Bytes, why: &str, now: Now) {
        let mut taken_back: HashMap<ServiceKind, usize> = HashMap::new();
        for id in self.processes.dispatched_to(peer) {
            if let Some(target) = self.take_back(id) {
                *taken_back.entry(target).or_default() += 1;
                continue;
            }
            let Some(process) = self.processes.finish(id) else {
                continue;
            };
            let target = process.target();
            // An orphan's origin was answered already.
            let (charge, answer) = match process.state {
                State::Running { charge, .. } => (charge, true),
                State::Orphaned { charge, .. } => (charge, false),
                State::Queued { .. } => continue,
            };
            if let Some(queue) = self.queues.get_mut(&target) {
                queue.abandon(charge);
            }
            if answer {
                self.answer(
                    &process.origin,
                    process.origin_id,
                    target,
                    Err(Failure::new(FailureKind::Unavailable, why)),
                );
            }
        }
        for (target, count) in taken_back {
            tracing::info!(%target, count, lost = why, "requests a lost instance had not started go to another");
            self.dispatch(target, now.instant);
        }
    }

    /// Queues again a request its instance deferred and never claimed;
    /// returns its target if it was one.
    fn take_back(&mut self, id: ProcessId) -> Option<ServiceKind> {
        let target = self.processes.get_mut(id)?.target();
        let queue = queue_for(&mut self.queues, self.queue_limits, target);
        let (_, charge) = self.processes.take_back(id, |envelope, new_id| {
            queue
                .push(envelope.project.clone(), envelope.priority, new_id)
                .ok()
        })?;
        queue.abandon(charge);
        Some(target)
    }

    fn answer(
        &mut self,
        peer: &Bytes,
        id: MessageId,
        from: ServiceKind,
        result: Result<Reply, Failure>,
    ) {
        let message = Message {
            envelope: Envelope {
                id,
                origin: from,
                project: None,
                priority: Priority::Normal,
                deadline: isms_ipc::Deadline(0),
                placement: Vec::new(),
            },
            body: Body::Reply(result),
        };
        self.push(peer.clone(), &message);
    }

    fn send_control(&mut self, peer: &Bytes, control: Control) {
        let message = Message {
            envelope: Envelope {
                id: MessageId(0),
                origin: ServiceKind::Kernel,
                project: None,
                priority: Priority::High,
                deadline: isms_ipc::Deadline(0),
                placement: Vec::new(),
            },
            body: Body::Control(control),
        };
        self.push(peer.clone(), &message);
    }

    fn push(&mut self, peer: Bytes, message: &Message) {
        match message.encode() {
            Ok(frames) => self.outbox.push((peer, frames)),
            Err(err) => tracing::error!(cause = %err, "cannot encode a kernel message"),
        }
    }

    fn push_raw(&mut self, peer: Bytes, header: &isms_ipc::Header, body: Bytes) {
        match header.encode() {
            Ok(header) => self.outbox.push((peer, [header, body])),
            Err(err) => tracing::error!(cause = %err, "cannot encode a header"),
        }
    }

    fn describe(&self, peer: &Bytes) -> String {
        self.services
            .instance(peer)
            .map(|i| i.registration.instance.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(peer).into_owned())
    }
}

/// The ready queue of `target`, made on first use.
fn queue_for(
    queues: &mut HashMap<ServiceKind, ReadyQueue<ProcessId>>,
    limits: QueueLimits,
    target: ServiceKind,
) -> &mut ReadyQueue<ProcessId> {
    queues
        .entry(target)
        .or_insert_with(|| ReadyQueue::new(limits))
}

/// The answer to work placed where no instance is up.
fn unplaceable(target: ServiceKind, placement: &[(String, String)]) -> Failure {
    let labels: Vec<String> = placement.iter().map(|(n, v)| format!("{n}={v}")).collect();
    Failure::new(
        FailureKind::Unavailable,
        format!(
            "no {target} with the labels {} is up (the Doee's [placement])",
            labels.join(", ")
        ),
    )
}

/// Binds the kernel's socket (and its listener for other hosts, if
/// configured) and serves until `shutdown` completes.
pub async fn run(config: KernelConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if let Endpoint::Ipc(path) = &config.listen {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // A socket file left by a kernel that died would refuse the bind.
        let _ = std::fs::remove_file(path);
    }
    let mut socket = RouterSocket::new();
    let mut monitor = socket.monitor();
    socket
        .bind(&config.listen.to_string())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if let Endpoint::Ipc(path) = &config.listen {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    tracing::info!(endpoint = %config.listen, "kernel listening");
    let mut links = match &config.remote {
        Some(remote) => Some(remote::Links::listen(remote).await?),
        None => None,
    };
    let (mut send_half, mut recv_half) = socket.split();
    let mut kernel = Kernel::new(config.queue, config.heartbeat_timeout, Now::read());
    // Sleep until something is due rather than ticking: an idle kernel
    // wakes four times a second, not a hundred.
    let mut next_tick = Instant::now() + HEARTBEAT_CHECK;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            received = recv_half.recv() => match received {
                Ok(message) => {
                    let mut frames = message.into_vec();
                    if frames.is_empty() {
                        continue;
                    }
                    let peer = frames.remove(0);
                    // The zero byte marks links (`remote::is_link`); the
                    // `zeromq` crate would let a local peer choose it.
                    if remote::is_link(&peer) {
                        continue;
                    }
                    kernel.on_message(peer, &frames, Now::read());
                }
                Err(err) => tracing::warn!(cause = %err, "receive failed"),
            },
            event = monitor.next() => {
                if let Some(SocketEvent::Disconnected(peer)) = event {
                    kernel.on_disconnect(&Bytes::from(Vec::from(peer)), Now::read());
                }
            }
            event = remote::next(&mut links) => match event {
                remote::Event::Joined { peer, address } => kernel.on_link(peer, address),
                remote::Event::Message { peer, frames } => {
                    kernel.on_message(peer, &frames, Now::read());
                }
                remote::Event::Left { peer } => kernel.on_disconnect(&peer, Now::read()),
            },
            _ = tokio::time::sleep_until(next_tick.into()) => {
                kernel.on_tick(Now::read());
            }
        }
        next_tick = kernel.next_tick(Now::read());
        let outgoing: Vec<Outgoing> = kernel.drain_outbox().collect();
        for (peer, [header, body]) in outgoing {
            if let Some(links) = &mut links
                && links.has(&peer)
            {
                if !links.send(&peer, vec![header, body]) {
                    kernel.on_disconnect(&peer, Now::read());
                }
                continue;
            }
            let message = match ZmqMessage::try_from(vec![peer.clone(), header, body]) {
                Ok(message) => message,
                Err(_) => continue,
            };
            match tokio::time::timeout(SEND_TIMEOUT, send_half.send(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(cause = %err, "a peer is gone");
                    kernel.on_disconnect(&peer, Now::read());
                }
                Err(_) => tracing::warn!("a peer stopped reading; dropped a message for it"),
            }
        }
        let closing: Vec<Bytes> = kernel.drain_closing().collect();
        if let Some(links) = &mut links {
            for peer in closing {
                links.close(&peer);
            }
        }
    }
    if let Endpoint::Ipc(path) = &config.listen {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("kernel stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
