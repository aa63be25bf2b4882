//! Requests for the CommServer: MQTT publishing, dead letters and counters.
//!
//! `Publish` and `DeadLetters` act on the envelope's project, which the
//! platform sets (the Doer from the Worker a call came from, the Control
//! Gate from the authorized path); the CommServer checks the topic against
//! that project's namespaces.

use crate::Payload;
use crate::names::{DoeeName, ProjectName};
use serde::{Deserialize, Serialize};

crate::protocol! {
    service CommServer;

    /// Publishes a message (QoS 1) on a topic of the envelope's project.
    Publish {
        /// The topic, without wildcards.
        topic: String,
        /// The payload.
        payload: Payload,
    } -> (), from [Doer];

    /// The envelope's project's dead letters, newest first.
    DeadLetters {
        /// At most this many (capped at 1000).
        limit: u32,
    } -> Vec<DeadLetter>, from [ControlGate];

    /// Runs dead letters of the envelope's project again, as new messages
    /// (those of `ids`, or all); answers how many.
    RetryDeadLetters {
        /// Which; `None` for all.
        ids: Option<Vec<u64>>,
    } -> u64, from [ControlGate];

    /// Deletes dead letters of the envelope's project (those of `ids`, or
    /// all); answers how many.
    PurgeDeadLetters {
        /// Which; `None` for all.
        ids: Option<Vec<u64>>,
    } -> u64, from [ControlGate];

    /// The MQTT counters, since the CommServer started, and the inbox's depth.
    Stats {} -> MqttStats, from [ControlGate];
}

/// An MQTT message whose invocation failed every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its place in the inbox.
    pub id: u64,
    /// The project.
    pub project: ProjectName,
    /// The Doee it was for.
    pub doee: DoeeName,
    /// The topic it arrived on.
    pub topic: String,
    /// The payload.
    pub payload: Payload,
    /// When it arrived (ms since the epoch).
    pub received_ms: u64,
    /// How many times it ran.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: String,
}

/// MQTT counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttStats {
    /// Whether the CommServer is connected to the broker.
    pub connected: bool,
    /// Messages received from the broker.
    pub received: u64,
    /// Messages acknowledged to the broker, once recorded in the inbox.
    pub acknowledged: u64,
    /// Invocations run again after a failure.
    pub retried: u64,
    /// Messages given up on after their last attempt.
    pub dead_lettered: u64,
    /// Messages that arrived again after they were recorded (redeliveries).
    pub duplicates: u64,
    /// Messages Doees and replies published.
    pub published: u64,
    /// Messages recorded and not yet run to the end.
    pub inbox_depth: u64,
    /// Dead letters kept.
    pub dead_letters: u64,
    /// The embedded broker: clients connected.
    pub clients: u64,
    /// The embedded broker: sessions, connected or kept.
    pub sessions: u64,
    /// The embedded broker: retained messages.
    pub retained: u64,
    /// The embedded broker: deliveries sent to clients.
    pub delivered: u64,
    /// The embedded broker: deliveries dropped (a full session queue, a
    /// client's packet size).
    pub dropped: u64,
    /// The embedded broker: connections, subscriptions and publishes refused
    /// for their rights.
    pub refused: u64,
}
