//! Requests the kernel answers itself.

use crate::names::ServiceKind;
use serde::{Deserialize, Serialize};

crate::protocol! {
    service Kernel;

    /// The Services Controller's view of every service instance.
    Services {} -> Vec<ServiceStatus>, from [ControlGate];
}

/// One service instance as the Services Controller sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Which service.
    pub service: ServiceKind,
    /// The instance's stable name (`doer-1`).
    pub instance: String,
    /// The OS process id of its current incarnation.
    pub pid: u32,
    /// Whether it is up.
    pub state: InstanceState,
    /// Requests it handles at once.
    pub capacity: u32,
    /// Requests dispatched to it and not yet answered.
    pub in_flight: u32,
    /// Requests for its service waiting in the kernel's queue.
    pub queued: u32,
    /// Work waiting inside the service, from its last heartbeat.
    pub inner_queue: u32,
    /// Workers or connections it holds, from its last heartbeat.
    pub workers: u32,
    /// How many times it registered again after the first time.
    pub restarts: u32,
    /// Requests it answered.
    pub handled: u64,
    /// When its current incarnation registered (ms since the epoch).
    pub up_since_ms: u64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// The host it runs on.
    pub host: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// The address of its link, for an instance on another host.
    pub remote: Option<String>,
}

/// Whether an instance is serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Registered and sending heartbeats.
    Up,
    /// Missed its heartbeats or disconnected; waiting to be restarted.
    Down,
}

impl InstanceState {
    /// `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Up => "up",
            InstanceState::Down => "down",
        }
    }
}
