//! Requests for the Doer: running Doees.

use crate::Payload;
use crate::names::{DoeeName, InvocationId};
use serde::{Deserialize, Serialize};

crate::protocol! {
    service Doer;

    /// Runs one invocation of a Doee version of the envelope's project.
    ///
    /// The project comes from the envelope, which the platform sets, so an
    /// invocation can never name another project's Doee.
    Invoke {
        /// The invocation's id, shown to users.
        id: InvocationId,
        /// The Doee.
        doee: DoeeName,
        /// Its version; versions are immutable, so the Doer caches them.
        version: u32,
        /// What triggered it.
        trigger: Trigger,
        /// The HTTP body or MQTT payload.
        input: Payload,
        /// Whether the origin takes the output in pieces as the Doee
        /// writes them (`ctx.write`, sent as `Control::Chunk`); if not,
        /// what the Doee writes is part of the output it answers with.
        stream: bool,
    } -> Outcome, from [CommServer, ControlGate, Doer];
}

/// What started an invocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// An HTTP request.
    Http {
        /// `GET`, `POST`, …
        method: String,
        /// The path after the project, with its leading `/`.
        path: String,
        /// The query string without `?`, possibly empty.
        query: String,
    },
    /// An MQTT message.
    Mqtt {
        /// The topic it arrived on.
        topic: String,
    },
    /// `isms invoke` or the API.
    Cli,
    /// Another invocation of the project: a Doee's `ctx.invoke`, or the
    /// stage of a pipeline before this one.
    Chain {
        /// The invocation whose call or output started this one (the
        /// Doee's `meta("parent")`).
        parent: InvocationId,
        /// How many invocations lead to this one (1 for a direct call).
        depth: u8,
    },
    /// A schedule's firing.
    Schedule {
        /// The moment it was due, ms since the epoch (the Doee's
        /// `meta("scheduled")`).
        slot_ms: u64,
    },
}

impl Trigger {
    /// How many invocations lead to this one: 0 unless it is a [`Trigger::Chain`].
    pub fn depth(&self) -> u8 {
        match self {
            Trigger::Chain { depth, .. } => *depth,
            _ => 0,
        }
    }

    /// `http`, `mqtt`, `cli`, `chain` or `schedule`: the Doee's
    /// `meta("trigger")`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Http { .. } => "http",
            Trigger::Mqtt { .. } => "mqtt",
            Trigger::Cli => "cli",
            Trigger::Chain { .. } => "chain",
            Trigger::Schedule { .. } => "schedule",
        }
    }
}

/// How an invocation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The response, or why there is none.
    pub result: Result<Response, DoeeFailure>,
    /// The Doee's log lines, in order.
    pub logs: Vec<LogLine>,
    /// Whether a Worker had to be started for it.
    pub cold_start: bool,
    /// Microseconds the Doee ran (or until it was stopped).
    pub run_us: u64,
}

/// What a Doee answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The HTTP status the Doee set, if it set one.
    pub status: Option<u16>,
    /// The headers the Doee set.
    pub headers: Vec<(String, String)>,
    /// The output.
    pub body: Payload,
}

/// Why an invocation produced no response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DoeeFailure {
    /// The Doee returned an error, or panicked.
    Error(String),
    /// The Worker died: a crash, a memory or process limit.
    Crashed(String),
    /// The Doee ran past its timeout and its Worker was killed.
    TimedOut {
        /// The timeout, in milliseconds.
        after_ms: u32,
    },
    /// The Doee could not be started (missing binary, refused ABI, failed
    /// `initialize`).
    NotStarted(String),
    /// The Doee's Workers and queue are full.
    Busy,
    /// Its Worker was stopped to give another project one: every Worker of
    /// the platform was taken and this project held more than its share.
    Preempted(String),
}

impl DoeeFailure {
    /// The HTTP status of this failure.
    pub fn http_status(&self) -> u16 {
        match self {
            DoeeFailure::TimedOut { .. } => 504,
            DoeeFailure::Busy => 429,
            DoeeFailure::Preempted(_) => 503,
            DoeeFailure::Error(_) | DoeeFailure::Crashed(_) | DoeeFailure::NotStarted(_) => 500,
        }
    }

    /// A message for the caller.
    pub fn message(&self) -> String {
        match self {
            DoeeFailure::Error(message) => message.clone(),
            DoeeFailure::Crashed(why) => format!("the Doee's Worker crashed: {why}"),
            DoeeFailure::TimedOut { after_ms } => {
                format!("the Doee ran past its timeout of {after_ms} ms and was stopped")
            }
            DoeeFailure::NotStarted(why) => format!("the Doee could not start: {why}"),
            DoeeFailure::Busy => "the Doee's Workers and queue are full; try again later".into(),
            DoeeFailure::Preempted(why) => format!("the Doee's Worker was {why}"),
        }
    }
}

/// One line a Doee logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// The level.
    pub level: LogLevel,
    /// The text.
    pub message: String,
}

/// Levels of [`LogLine`], as in the Doee ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
}

impl LogLevel {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}
