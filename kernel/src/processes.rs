//! The Process Controller: a record for every request that enters the
//! system, from arrival until its origin has an answer.

use crate::scheduler::{Charge, Key};
use bytes::Bytes;
use isms_ipc::{Envelope, MessageId, ProjectName, RequestKind, ServiceKind};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// How long the kernel keeps accounting for a request whose origin was
/// already answered (timeout) while its target still works on it. Past
/// this, the target is assumed to have lost it and its capacity is freed.
pub const ORPHAN_GRACE_MS: u64 = 30_000;

/// The kernel's id for a request, used as the message id towards its target.
pub type ProcessId = u64;

/// Where a request stands.
#[derive(Debug)]
pub enum State {
    /// Waiting in its target's ready queue. The envelope and the body are
    /// kept until dispatch, when they move into the message to the target.
    Queued {
        key: Key,
        envelope: Envelope,
        body: Bytes,
    },
    /// Dispatched to an instance that has not answered yet. What was sent
    /// is kept while the instance may defer it, so that if the instance is
    /// lost before it claims the request, another one gets it.
    Running {
        peer: Bytes,
        since: Instant,
        charge: Charge,
        /// The header and body sent.
        sent: [Bytes; 2],
        /// The instance said it waits inside, not started, and has not
        /// claimed it since.
        deferred: bool,
    },
    /// Dispatched, and its origin was already answered with a timeout; kept
    /// so the instance's capacity is accounted for until it answers.
    Orphaned {
        peer: Bytes,
        since: Instant,
        charge: Charge,
    },
}

/// The answer to an instance's claim to start a request it deferred.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// It is the instance's to start.
    Granted,
    /// Its origin was answered (a timeout) while it waited: not worth
    /// starting.
    Orphaned,
    /// The instance does not hold it (any more).
    Unknown,
}

/// One request in the system.
#[derive(Debug)]
pub struct Process {
    /// The connection that sent it.
    pub origin: Bytes,
    /// The origin's own id for it, echoed in the answer.
    pub origin_id: MessageId,
    /// Which request it is, and so the service it is for.
    pub request: RequestKind,
    /// Where it stands.
    pub state: State,
    /// The deadline currently indexed for it (ms since the epoch).
    due_ms: u64,
}

impl Process {
    /// The service it is for.
    pub fn target(&self) -> ServiceKind {
        self.request.target()
    }
}

/// Every request in the system, indexed by id and by deadline.
#[derive(Default)]
pub struct ProcessTable {
    records: HashMap<ProcessId, Process>,
    deadlines: BTreeSet<(u64, ProcessId)>,
    next_id: ProcessId,
    /// Requests held per (peer, project), for the peers dispatched to with
    /// `counted` (links from other hosts): what [`ProcessTable::holds_for`]
    /// answers without a scan.
    held: HashMap<(Bytes, ProjectName), u32>,
    /// Ids of requests for the Doer by the origin's own id, for what an
    /// origin says of its request (a streamed answer's pulls, a cancel).
    by_origin: HashMap<(Bytes, MessageId), ProcessId>,
}

impl ProcessTable {
    /// Records a request queued under `key` and returns its id.
    pub fn admit(
        &mut self,
        origin: Bytes,
        envelope: Envelope,
        request: RequestKind,
        body: Bytes,
        key: Key,
    ) -> ProcessId {
        self.next_id += 1;
        let id = self.next_id;
        let due_ms = envelope.deadline.0;
        self.deadlines.insert((due_ms, id));
        // Only invocations stream, and only they are cancelled.
        if request.target() == ServiceKind::Doer {
            self.by_origin.insert((origin.clone(), envelope.id), id);
        }
        let process = Process {
            origin,
            origin_id: envelope.id,
            request,
            state: State::Queued {
                key,
                envelope,
                body,
            },
            due_ms,
        };
        self.records.insert(id, process);
        id
    }

    /// The id the next `admit` will return.
    pub fn next_id(&self) -> ProcessId {
        self.next_id + 1
    }

    /// Dispatches a queued request to `peer`: it is running there from
    /// `since`, charged `charge`. Returns which request it is and what was
    /// queued (its envelope and body), or `None` if it is not queued. `counted` keeps the
    /// count [`ProcessTable::holds_for`] reads.
    pub fn run(
        &mut self,
        id: ProcessId,
        peer: &Bytes,
        since: Instant,
        charge: Charge,
        counted: bool,
    ) -> Option<(RequestKind, Envelope, Bytes)> {
        let process = self.records.get_mut(&id)?;
        if !matches!(process.state, State::Queued { .. }) {
            return None;
        }
        if counted && let Some(project) = charge.project() {
            *self
                .held
                .entry((peer.clone(), project.clone()))
                .or_default() += 1;
        }
        let running = State::Running {
            peer: peer.clone(),
            since,
            charge,
            sent: [Bytes::new(), Bytes::new()],
            deferred: false,
        };
        match std::mem::replace(&mut process.state, running) {
            State::Queued { envelope, body, .. } => Some((process.request, envelope, body)),
            _ => None,
        }
    }

    /// Keeps the frames sent for a running request, to send them to another
    /// instance if it is deferred and its instance is lost.
    pub fn keep_sent(&mut self, id: ProcessId, frames: [Bytes; 2]) {
        if let Some(Process {
            state: State::Running { sent, .. },
            ..
        }) = self.records.get_mut(&id)
        {
            *sent = frames;
        }
    }

    /// Notes that `peer` holds request `id` without having started it.
    pub fn defer(&mut self, id: ProcessId, peer: &Bytes) {
        if let Some(Process {
            state: State::Running {
                peer: on, deferred, ..
            },
            ..
        }) = self.records.get_mut(&id)
            && on == peer
        {
            *deferred = true;
        }
    }

    /// Settles `peer`'s claim to start request `id`.
    pub fn claim(&mut self, id: ProcessId, peer: &Bytes) -> Claim {
        match self.records.get_mut(&id).map(|p| &mut p.state) {
            Some(State::Running {
                peer: on, deferred, ..
            }) if on == peer => {
                *deferred = false;
                Claim::Granted
            }
            Some(State::Orphaned { peer: on, .. }) if on == peer => Claim::Orphaned,
            _ => Claim::Unknown,
        }
    }

    /// Takes back a request its instance deferred and never claimed, to be
    /// queued again under the key `queue` gives it for its new id: the new
    /// id and the charge of its dispatch to settle. `None` if it is not
    /// such a request, or `queue` refuses it. A new id, because the lost
    /// instance may come back still holding the request: a claim or a reply
    /// of the earlier dispatch must never match the next one.
    pub fn take_back(
        &mut self,
        id: ProcessId,
        queue: impl FnOnce(&Envelope, ProcessId) -> Option<Key>,
    ) -> Option<(ProcessId, Charge)> {
        let State::Running {
            deferred: true,
            sent: [header, body],
            ..
        } = &self.records.get(&id)?.state
        else {
            return None;
        };
        let header = isms_ipc::Header::decode(header).ok()?;
        let body = body.clone();
        let new_id = self.next_id + 1;
        let key = queue(&header.envelope, new_id)?;
        self.next_id = new_id;
        let mut process = self.records.remove(&id)?;
        self.deadlines.remove(&(process.due_ms, id));
        let queued = State::Queued {
            key,
            envelope: header.envelope,
            body,
        };
        let State::Running { peer, charge, .. } = std::mem::replace(&mut process.state, queued)
        else {
            return None;
        };
        self.deadlines.insert((process.due_ms, new_id));
        self.by_origin
            .insert((process.origin.clone(), process.origin_id), new_id);
        self.records.insert(new_id, process);
        self.release(&peer, &charge);
        Some((new_id, charge))
    }

    /// The kernel's id for the request `origin` knows as `origin_id`.
    pub fn id_for(&self, origin: &Bytes, origin_id: MessageId) -> Option<ProcessId> {
        self.by_origin.get(&(origin.clone(), origin_id)).copied()
    }

    /// A record.
    pub fn get_mut(&mut self, id: ProcessId) -> Option<&mut Process> {
        self.records.get_mut(&id)
    }

    /// Moves a record's deadline.
    pub fn reschedule(&mut self, id: ProcessId, due_ms: u64) {
        if let Some(process) = self.records.get_mut(&id) {
            self.deadlines.remove(&(process.due_ms, id));
            process.due_ms = due_ms;
            self.deadlines.insert((due_ms, id));
        }
    }

    /// Removes a record.
    pub fn finish(&mut self, id: ProcessId) -> Option<Process> {
        let process = self.records.remove(&id)?;
        self.deadlines.remove(&(process.due_ms, id));
        self.by_origin
            .remove(&(process.origin.clone(), process.origin_id));
        if let State::Running { peer, charge, .. } | State::Orphaned { peer, charge, .. } =
            &process.state
        {
            self.release(peer, charge);
        }
        Some(process)
    }

    /// Counts a request `peer` held for a project as no longer held.
    fn release(&mut self, peer: &Bytes, charge: &Charge) {
        let Some(project) = charge.project() else {
            return;
        };
        let key = (peer.clone(), project.clone());
        if let Some(count) = self.held.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(&key);
            }
        }
    }

    /// The ids whose deadline is at or before `now_ms`, earliest first.
    pub fn due(&self, now_ms: u64) -> Vec<ProcessId> {
        self.deadlines
            .range(..=(now_ms, ProcessId::MAX))
            .map(|&(_, id)| id)
            .collect()
    }

    /// The earliest deadline indexed (ms since the epoch).
    pub fn next_due(&self) -> Option<u64> {
        self.deadlines.first().map(|&(due, _)| due)
    }

    /// The ids dispatched to `peer` (running or orphaned).
    pub fn dispatched_to(&self, peer: &Bytes) -> Vec<ProcessId> {
        self.records
            .iter()
            .filter(|(_, p)| match &p.state {
                State::Running { peer: on, .. } | State::Orphaned { peer: on, .. } => on == peer,
                State::Queued { .. } => false,
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// Whether `peer` holds a request acting for `project` (dispatched to
    /// it with `counted` and not answered).
    pub fn holds_for(&self, peer: &Bytes, project: &ProjectName) -> bool {
        self.held.contains_key(&(peer.clone(), project.clone()))
    }

    /// The latest deadline of the requests `peer` runs for `project`.
    pub fn latest_due_running(&self, peer: &Bytes, project: &ProjectName) -> Option<u64> {
        self.records
            .values()
            .filter_map(|p| match &p.state {
                State::Running {
                    peer: on, charge, ..
                } if on == peer && charge.project() == Some(project) => Some(p.due_ms),
                _ => None,
            })
            .max()
    }

    /// How many requests are in the system.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
