//! Between the Doer and the Doee Executor inside one Worker.
//!
//! Each Worker has its own ZeroMQ socket, bind-mounted into its sandbox, so
//! the Doer knows which Worker (and so which project) every message comes
//! from. A message is one frame: a [`PROTOCOL_VERSION`] byte, then postcard.

use crate::Payload;
use crate::dbriver::DocOp;
use crate::doer::{LogLine, Response, Trigger};
use crate::message::{PROTOCOL_VERSION, ProtocolError, decode, encode};
use crate::names::{DoeeName, InvocationId, ProjectName};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// From the Doer to a Worker.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Load the Doee and call its `initialize`; sent once, first.
    Load(Load),
    /// Run one invocation.
    Execute(Execute),
    /// The answer to the Worker's last [`HostCall`]: text for most, the
    /// callee's output for [`HostCall::Invoke`].
    HostReply(Result<Payload, String>),
    /// Call `terminate` and exit.
    Stop,
}

/// What the Executor needs to load a Doee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// The project (for `meta("project")`).
    pub project: ProjectName,
    /// The Doee (for `meta("doee")`).
    pub doee: DoeeName,
    /// The version.
    pub version: u32,
    /// The manifest's `[params]`.
    pub params: Vec<(String, String)>,
    /// Limits the Executor sets on itself before it loads any Doee code.
    pub limits: Limits,
    /// Whether the Worker has a pid namespace of its own: then nothing but
    /// the Executor (and the sandbox's init) may run between invocations,
    /// and the Executor kills the rest when each one ends.
    pub own_pid_namespace: bool,
}

/// Resource limits the Executor applies to itself with `setrlimit` (the
/// Worker's cgroup, where there is one, bounds all its processes together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Writable memory (`RLIMIT_DATA`), in MiB.
    pub memory_mb: u32,
    /// Processes and threads (`RLIMIT_NPROC`).
    pub max_processes: u32,
    /// Open files (`RLIMIT_NOFILE`).
    pub max_open_files: u32,
    /// Bytes of output one invocation may produce.
    pub max_output_bytes: u32,
    /// Log lines one invocation may write; later lines are dropped.
    pub max_log_lines: u32,
}

/// One invocation for a Worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execute {
    /// The invocation's id.
    pub id: InvocationId,
    /// What triggered it.
    pub trigger: Trigger,
    /// The input bytes.
    pub input: Payload,
    /// Whether `ctx.write` sends its pieces now ([`HostCall::Write`]) or
    /// adds them to the output.
    pub stream: bool,
}

/// From a Worker to the Doer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The Doee is loaded and initialized.
    Ready,
    /// The Doee could not be loaded; the Worker exits.
    LoadFailed(String),
    /// An invocation ended.
    Done(Done),
    /// The Doee asks the platform for something; answered by
    /// [`ToWorker::HostReply`].
    HostCall(HostCall),
}

/// How an invocation ended inside the Worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// The response, or the Doee's error message.
    pub result: Result<Response, String>,
    /// Whether the Doee panicked: the Worker exits after this message.
    pub panicked: bool,
    /// The lines the Doee logged.
    pub logs: Vec<LogLine>,
}

/// A Doee's request to the platform, made through its context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HostCall {
    /// `ctx.sql(query, params_json)`.
    Sql {
        /// The statement.
        query: String,
        /// A JSON array of positional parameters.
        params: String,
    },
    /// `ctx.docs().<op>(collection, json)`.
    Doc {
        /// What to do.
        op: DocOp,
        /// The collection.
        collection: String,
        /// The operation's JSON argument.
        json: String,
    },
    /// `ctx.publish(topic, payload)`.
    Publish {
        /// The topic.
        topic: String,
        /// The payload.
        payload: Payload,
    },
    /// `ctx.secret(name)`.
    Secret {
        /// The secret's name.
        name: String,
    },
    /// `ctx.write(chunk)` of a streamed invocation: answered once the
    /// piece is on its way and the origin has room for more.
    Write(Payload),
    /// `ctx.invoke(doee, input)`: runs another Doee of the project and
    /// waits for its output.
    Invoke {
        /// The Doee to run.
        doee: String,
        /// Its input.
        input: Payload,
    },
}

// By hand: a host reply may carry a secret's value, never to be printed.
impl std::fmt::Debug for ToWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToWorker::Load(load) => f.debug_tuple("Load").field(load).finish(),
            ToWorker::Execute(execute) => f.debug_tuple("Execute").field(execute).finish(),
            ToWorker::HostReply(Ok(_)) => f.write_str("HostReply(Ok(…))"),
            ToWorker::HostReply(Err(why)) => f.debug_tuple("HostReply").field(why).finish(),
            ToWorker::Stop => f.write_str("Stop"),
        }
    }
}

impl ToWorker {
    /// The frame of this message.
    pub fn encode(&self) -> Result<Bytes, ProtocolError> {
        encode(self, Some(PROTOCOL_VERSION))
    }

    /// Reads a frame.
    pub fn decode(frame: &[u8]) -> Result<ToWorker, ProtocolError> {
        decode(frame, "message to a Worker", Some(PROTOCOL_VERSION))
    }
}

impl FromWorker {
    /// The frame of this message.
    pub fn encode(&self) -> Result<Bytes, ProtocolError> {
        encode(self, Some(PROTOCOL_VERSION))
    }

    /// Reads a frame.
    pub fn decode(frame: &[u8]) -> Result<FromWorker, ProtocolError> {
        decode(frame, "message from a Worker", Some(PROTOCOL_VERSION))
    }
}
