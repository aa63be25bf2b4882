//! The connection every service holds to the kernel.
//!
//! On the kernel's host a ZeroMQ DEALER socket on `ipc://`; from another
//! host a TLS link that proves the join key ([`crate::link`]). Either way
//! the transport only sends what the service writes and hands what arrives
//! to one receiver, which matches replies to pending calls and passes
//! requests and events to the service; a keeper sends heartbeats and
//! notices the transport's end. When the kernel goes away, every
//! pending call fails with [`FailureKind::Unavailable`] and [`Incoming`]
//! ends: the service should exit, and its supervisor (`isms up`, or
//! `isms join` on another host) starts it again against the kernel.

use crate::link::Joining;
use crate::message::{Body, Control, Envelope, Failure, FailureKind, Load, Message, Registration};
use crate::names::{Deadline, MessageId, Priority, ProjectName, ServiceKind};
use crate::{Call, Event, Reply, Request};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use zeromq::util::PeerIdentity;
use zeromq::{
    DealerSocket, Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, ZmqMessage,
};

/// How often a service says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How long past its deadline a call waits for the kernel's own timeout
/// answer before giving up locally.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Where the kernel listens: `ipc://<path>` or `tcp://<host>:<port>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket on this host.
    Ipc(PathBuf),
    /// TCP, for services on other hosts.
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("ipc://") {
            if path.is_empty() {
                return Err("an ipc:// endpoint needs a path".into());
            }
            Ok(Endpoint::Ipc(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            if !addr.contains(':') {
                return Err(format!("`{s}` needs a port: tcp://host:port"));
            }
            Ok(Endpoint::Tcp(addr.to_string()))
        } else {
            Err(format!(
                "`{s}` is not an endpoint: use ipc://<path> or tcp://<host>:<port>"
            ))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Ipc(path) => write!(f, "ipc://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Why connecting to the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket failed.
    #[error("cannot reach the kernel at {endpoint}: {source}")]
    Socket {
        /// Where.
        endpoint: String,
        /// The ZeroMQ error.
        source: zeromq::ZmqError,
    },
    /// The kernel did not confirm the registration in time.
    #[error(
        "the kernel at {0} did not answer the registration (is it running, and the same ISMS version as this host?)"
    )]
    NoAnswer(String),
    /// The kernel refused the registration.
    #[error("the kernel at {endpoint} refused this service: {reason}")]
    Refused {
        /// Where.
        endpoint: String,
        /// What the kernel said.
        reason: String,
    },
    /// The link to a kernel on another host could not be made.
    #[error(transparent)]
    Join(#[from] crate::link::JoinError),
    /// A `tcp://` kernel was given without its join key.
    #[error("the kernel at {0} is on another host: joining it needs its join key")]
    NoKey(String),
    /// A message could not be encoded.
    #[error(transparent)]
    Protocol(#[from] crate::ProtocolError),
}

/// Whom a call acts for, how urgent it is, and until when it matters.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The project, if the call acts for one.
    pub project: Option<ProjectName>,
    /// The scheduling class.
    pub priority: Priority,
    /// The deadline.
    pub deadline: Deadline,
    /// Labels the handling instance must have (see [`Envelope::placement`]).
    pub placement: Vec<(String, String)>,
}

impl Scope {
    /// A call the platform makes for itself.
    pub fn platform(timeout: Duration) -> Scope {
        Scope {
            project: None,
            priority: Priority::Normal,
            deadline: Deadline::after(timeout),
            placement: Vec::new(),
        }
    }

    /// A call acting for a project.
    pub fn project(project: ProjectName, timeout: Duration) -> Scope {
        Scope {
            project: Some(project),
            priority: Priority::Normal,
            deadline: Deadline::after(timeout),
            placement: Vec::new(),
        }
    }

    /// With another priority.
    pub fn priority(mut self, priority: Priority) -> Scope {
        self.priority = priority;
        self
    }
}

type PendingMap = HashMap<u64, oneshot::Sender<Result<Reply, Failure>>>;

struct Shared {
    service: ServiceKind,
    writer: mpsc::UnboundedSender<Vec<Bytes>>,
    pending: Mutex<PendingMap>,
    /// Where the pieces of streamed calls' answers go, by call id.
    streams: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    next_id: AtomicU64,
    load: Mutex<Load>,
    alive: AtomicBool,
    /// Told of the kernel's answer to the registration, once.
    registered: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

/// Takes what the kernel sends, on the transport's own task.
struct Receiver {
    conn: Connection,
    inbound: mpsc::UnboundedSender<Inbound>,
    registration: Registration,
}

impl Receiver {
    fn on_frames(&self, frames: Vec<Bytes>) {
        self.conn
            .dispatch(frames, &self.inbound, &self.registration);
    }
}

/// A handle on the connection; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

/// What the kernel hands a service.
#[derive(Debug)]
pub enum Inbound {
    /// A request to answer.
    Request(Delivery),
    /// An event.
    Event(Event),
    /// The kernel's answer to [`Responder::claim`].
    Claimed {
        /// The request's id ([`Responder::id`]).
        id: MessageId,
        /// Whether it may start; if not, [`Responder::let_go`] it.
        granted: bool,
    },
    /// The origin of a streamed request took a piece: one more may go.
    Pull(MessageId),
    /// The origin of a request gave it up (its client went away).
    Cancel(MessageId),
}

/// A request delivered to this service.
#[derive(Debug)]
pub struct Delivery {
    /// Its envelope; `project` is set by the platform.
    pub envelope: Envelope,
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub responder: Responder,
}

impl Delivery {
    /// The envelope's project, which a project-scoped request must have.
    pub fn project(&self) -> Result<ProjectName, Failure> {
        self.envelope
            .project
            .clone()
            .ok_or_else(|| Failure::invalid(format!("{} needs a project", self.request.name())))
    }
}

/// A call sent: its id, where its reply comes, and its pieces if streamed.
type Sent = (
    u64,
    oneshot::Receiver<Result<Reply, Failure>>,
    Option<mpsc::Receiver<Bytes>>,
);

/// A call whose answer may come in pieces before its reply (see
/// [`Connection::call_streaming`]). Each piece taken tells the service it
/// may send one more, so a reader that stops reading holds the writer at
/// [`crate::STREAM_WINDOW`] pieces. Dropped before its reply, it gives the
/// call up: the service is told to end it.
pub struct Streaming<C: Call> {
    conn: Connection,
    id: u64,
    deadline: Deadline,
    reply: oneshot::Receiver<Result<Reply, Failure>>,
    chunks: Option<mpsc::Receiver<Bytes>>,
    /// The reply, once it came, while pieces before it remain.
    stashed: Option<Result<Reply, Failure>>,
    answered: bool,
    _call: std::marker::PhantomData<C>,
}

/// What a streamed call yields.
#[derive(Debug)]
pub enum Piece<R> {
    /// A piece of the answer, in order.
    Chunk(Bytes),
    /// The reply; the last thing it yields.
    Reply(Result<R, Failure>),
}

impl<C: Call> Streaming<C> {
    /// The next piece, or the reply; after the reply, a failure.
    pub async fn next(&mut self) -> Piece<C::Reply> {
        if self.answered {
            return Piece::Reply(Err(Failure::internal("the call was answered already")));
        }
        let reply = match self.stashed.take() {
            Some(reply) => reply,
            None => {
                let late = tokio::time::sleep(self.deadline.remaining() + DEADLINE_GRACE);
                let chunks = self.chunks.as_mut();
                tokio::select! {
                    biased;
                    Some(chunk) = async { match chunks { Some(c) => c.recv().await, None => None } } => {
                        return self.took(chunk);
                    }
                    reply = &mut self.reply => reply.unwrap_or_else(|_| Err(Failure::new(
                        FailureKind::Unavailable,
                        "lost the connection to the kernel",
                    ))),
                    () = late => Err(Failure::new(FailureKind::Timeout, "no answer before the deadline")),
                }
            }
        };
        // Pieces sent before the reply come before it.
        if let Some(chunk) = self.chunks.as_mut().and_then(|c| c.try_recv().ok()) {
            self.stashed = Some(reply);
            return self.took(chunk);
        }
        self.finish();
        Piece::Reply(reply.and_then(|reply| {
            C::from_reply(reply)
                .ok_or_else(|| Failure::internal("the reply answers another request"))
        }))
    }

    fn took(&mut self, chunk: Bytes) -> Piece<C::Reply> {
        self.conn.send_control(Control::Pull(MessageId(self.id)));
        Piece::Chunk(chunk)
    }

    fn finish(&mut self) {
        self.answered = true;
        self.conn.pending().remove(&self.id);
        self.conn.streams().remove(&self.id);
    }
}

impl<C: Call> Drop for Streaming<C> {
    fn drop(&mut self) {
        if !self.answered {
            self.finish();
            self.conn.send_control(Control::Cancel(MessageId(self.id)));
        }
    }
}

/// Answers one delivered request. Dropping it unanswered answers an internal
/// error, so the origin never waits for nothing.
pub struct Responder {
    id: MessageId,
    conn: Option<Connection>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").field("id", &self.id).finish()
    }
}

impl Responder {
    /// Sends the answer.
    pub fn reply(mut self, result: Result<Reply, Failure>) {
        if let Some(conn) = self.conn.take() {
            conn.send_reply(self.id, result);
        }
    }

    /// The kernel's id for the request.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// Tells the kernel the request waits here, not started: if this
    /// instance is lost before it claims the request, the kernel gives it
    /// to another one. A deferred request must be claimed before it starts.
    pub fn defer(&self) {
        if let Some(conn) = &self.conn {
            conn.send_control(Control::Deferred(self.id));
        }
    }

    /// Asks the kernel whether a deferred request may start; the answer
    /// comes as [`Inbound::Claimed`].
    pub fn claim(&self) {
        if let Some(conn) = &self.conn {
            conn.send_control(Control::Claim(self.id));
        }
    }

    /// Sends a piece of the answer ahead of it, for an origin that streams
    /// (see [`Connection::call_streaming`]); at most [`crate::STREAM_WINDOW`]
    /// beyond those [`Inbound::Pull`] reported.
    pub fn chunk(&self, data: Bytes) {
        if let Some(conn) = &self.conn {
            conn.send_control(Control::Chunk { id: self.id, data });
        }
    }

    /// Drops a request the kernel refused a claim for, without answering:
    /// its origin has an answer, or another instance will give it one.
    pub fn let_go(mut self) {
        self.conn = None;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.send_reply(
                self.id,
                Err(Failure::internal(
                    "the service dropped the request without answering",
                )),
            );
        }
    }
}

/// The stream of requests and events for this service. It ends when the
/// kernel connection is lost.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Inbound>,
}

impl Incoming {
    /// The next request or event; `None` once the kernel is gone.
    pub async fn next(&mut self) -> Option<Inbound> {
        self.rx.recv().await
    }
}

impl Connection {
    /// Connects, registers, and starts the connection's tasks. Waits up to
    /// `wait` for the kernel to appear. A `tcp://` kernel needs `joining`.
    pub async fn connect(
        endpoint: &Endpoint,
        joining: Option<&Joining>,
        registration: Registration,
        wait: Duration,
    ) -> Result<(Connection, Incoming), ConnectError> {
        let (writer, writer_rx) = mpsc::unbounded_channel::<Vec<Bytes>>();
        let (registered, registered_rx) = oneshot::channel();
        let conn = Connection {
            shared: Arc::new(Shared {
                service: registration.service,
                writer,
                pending: Mutex::new(HashMap::new()),
                streams: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                load: Mutex::new(Load::default()),
                alive: AtomicBool::new(true),
                registered: Mutex::new(Some(registered)),
            }),
        };
        let (inbound, rx) = mpsc::unbounded_channel();
        // The transport hands each message to it as it arrives, with no
        // channel in between on the local path (measured by isms-bench).
        let receiver = Receiver {
            conn: conn.clone(),
            inbound,
            registration: registration.clone(),
        };
        let (lost, lost_rx) = oneshot::channel::<String>();
        match endpoint {
            Endpoint::Ipc(_) => {
                let identity = format!("{}-{}", registration.instance, nonce());
                zmq_transport(endpoint, identity, wait, writer_rx, receiver, lost).await?;
            }
            Endpoint::Tcp(address) => {
                let joining = joining.ok_or_else(|| ConnectError::NoKey(endpoint.to_string()))?;
                let link = crate::link::connect(address, &joining.key, joining.limits).await?;
                let (outbound, outbound_rx) = mpsc::channel(1024);
                let (from_kernel, mut from_kernel_rx) = mpsc::channel::<Vec<Bytes>>(1024);
                tokio::spawn(forward(writer_rx, outbound));
                tokio::spawn(async move {
                    while let Some(frames) = from_kernel_rx.recv().await {
                        receiver.on_frames(frames);
                    }
                });
                tokio::spawn(async move {
                    let why = link.pump(from_kernel, outbound_rx).await;
                    let _ = lost.send(why);
                });
            }
        }

        conn.send_control(Control::Register(registration));
        match tokio::time::timeout(wait.max(Duration::from_secs(5)), registered_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => {
                return Err(ConnectError::Refused {
                    endpoint: endpoint.to_string(),
                    reason,
                });
            }
            Ok(Err(_)) | Err(_) => return Err(ConnectError::NoAnswer(endpoint.to_string())),
        }

        let keeper_conn = conn.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
            tokio::pin!(lost_rx);
            loop {
                tokio::select! {
                    _ = beat.tick() => {
                        let load = keeper_conn.shared.load.lock().map(|l| l.clone()).unwrap_or_default();
                        keeper_conn.send_control(Control::Heartbeat(load));
                    }
                    why = &mut lost_rx => {
                        let why = why.unwrap_or_else(|_| "the transport stopped".into());
                        tracing::error!(cause = %why, "the kernel went away");
                        break;
                    }
                }
            }
            keeper_conn.shut_down();
        });

        Ok((conn, Incoming { rx }))
    }

    /// Handles one message from the kernel.
    fn dispatch(
        &self,
        frames: Vec<Bytes>,
        inbound: &mpsc::UnboundedSender<Inbound>,
        registration: &Registration,
    ) {
        let message = match Message::decode(&frames) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(cause = %err, "dropped a malformed message from the kernel");
                return;
            }
        };
        match message.body {
            Body::Reply(result) => {
                let waiter = self.pending().remove(&message.envelope.id.0);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
            Body::Request(request) => {
                let responder = Responder {
                    id: message.envelope.id,
                    conn: Some(self.clone()),
                };
                let delivery = Delivery {
                    envelope: message.envelope,
                    request,
                    responder,
                };
                let _ = inbound.send(Inbound::Request(delivery));
            }
            Body::Event(event) => {
                let _ = inbound.send(Inbound::Event(event));
            }
            Body::Control(Control::Reregister) => {
                tracing::warn!("the kernel forgot this service; registering again");
                self.send_control(Control::Register(registration.clone()));
            }
            Body::Control(Control::Claimed { id, granted }) => {
                let _ = inbound.send(Inbound::Claimed { id, granted });
            }
            // A piece beyond the window, or for a call given up, ends the
            // call: the service does not keep to the window, or nobody reads.
            Body::Control(Control::Chunk { id, data }) => {
                let taken = self
                    .streams()
                    .get(&id.0)
                    .is_some_and(|sink| sink.try_send(data).is_ok());
                if !taken {
                    self.streams().remove(&id.0);
                    self.send_control(Control::Cancel(id));
                }
            }
            Body::Control(Control::Pull(id)) => {
                let _ = inbound.send(Inbound::Pull(id));
            }
            Body::Control(Control::Cancel(id)) => {
                let _ = inbound.send(Inbound::Cancel(id));
            }
            Body::Control(Control::Registered) => self.registered(Ok(())),
            Body::Control(Control::Refused(reason)) => self.registered(Err(reason)),
            Body::Control(_) => {}
        }
    }

    /// Tells `connect` how the registration went (the first answer only).
    fn registered(&self, answer: Result<(), String>) {
        let waiter = self
            .shared
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(waiter) = waiter {
            let _ = waiter.send(answer);
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        self.shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn shut_down(&self) {
        self.shared.alive.store(false, Ordering::SeqCst);
        self.streams().clear();
        let waiters: Vec<_> = self.pending().drain().map(|(_, w)| w).collect();
        for waiter in waiters {
            let _ = waiter.send(Err(Failure::new(
                FailureKind::Unavailable,
                "lost the connection to the kernel",
            )));
        }
    }

    /// Whether the kernel connection is up.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// This service's kind.
    pub fn service(&self) -> ServiceKind {
        self.shared.service
    }

    /// Sends a request through the kernel and waits for its reply.
    pub async fn call<C: Call>(&self, scope: &Scope, request: C) -> Result<C::Reply, Failure> {
        let request = request.into_request();
        let name = request.name();
        let reply = self.call_raw(scope, request).await?;
        C::from_reply(reply).ok_or_else(|| {
            Failure::internal(format!("the reply to {name} answers another request"))
        })
    }

    async fn call_raw(&self, scope: &Scope, request: Request) -> Result<Reply, Failure> {
        let (id, rx, _) = self.send_call(scope, request, false)?;
        self.await_reply(id, scope.deadline, rx).await
    }

    /// Sends a request whose answer may come in pieces first (a Doee's
    /// `ctx.write`): read them, then the reply, from the [`Streaming`].
    /// Dropping it before the reply gives the request up.
    pub fn call_streaming<C: Call>(
        &self,
        scope: &Scope,
        request: C,
    ) -> Result<Streaming<C>, Failure> {
        let (id, reply, chunks) = self.send_call(scope, request.into_request(), true)?;
        Ok(Streaming {
            conn: self.clone(),
            id,
            deadline: scope.deadline,
            reply,
            chunks,
            stashed: None,
            answered: false,
            _call: std::marker::PhantomData,
        })
    }

    /// Sends a request; its reply will come on the receiver (and, for a
    /// streamed one, its pieces on a sink registered under the same id).
    fn send_call(&self, scope: &Scope, request: Request, streamed: bool) -> Result<Sent, Failure> {
        if !self.is_alive() {
            return Err(Failure::new(
                FailureKind::Unavailable,
                "not connected to the kernel",
            ));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, tx);
        // Registered before the request leaves: its first piece may come
        // before this function returns.
        let chunks = streamed.then(|| {
            let (sink, chunks) = mpsc::channel(crate::STREAM_WINDOW as usize);
            self.streams().insert(id, sink);
            chunks
        });
        let message = Message {
            envelope: Envelope {
                id: MessageId(id),
                origin: self.shared.service,
                project: scope.project.clone(),
                priority: scope.priority,
                deadline: scope.deadline,
                placement: scope.placement.clone(),
            },
            body: Body::Request(request),
        };
        if let Err(failure) = self.send_message(&message) {
            self.pending().remove(&id);
            self.streams().remove(&id);
            return Err(failure);
        }
        Ok((id, rx, chunks))
    }

    async fn await_reply(
        &self,
        id: u64,
        deadline: Deadline,
        rx: oneshot::Receiver<Result<Reply, Failure>>,
    ) -> Result<Reply, Failure> {
        match tokio::time::timeout(deadline.remaining() + DEADLINE_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Failure::new(
                FailureKind::Unavailable,
                "lost the connection to the kernel",
            )),
            Err(_) => {
                self.pending().remove(&id);
                Err(Failure::new(
                    FailureKind::Timeout,
                    "no answer before the deadline",
                ))
            }
        }
    }

    /// Broadcasts an event to every other service.
    pub fn emit(&self, event: Event) {
        let message = Message {
            envelope: Envelope {
                id: MessageId(0),
                origin: self.shared.service,
                project: None,
                priority: Priority::Normal,
                deadline: Deadline::after(Duration::from_secs(10)),
                placement: Vec::new(),
            },
            body: Body::Event(event),
        };
        if let Err(err) = self.send_message(&message) {
            tracing::warn!(cause = %err, "cannot emit an event");
        }
    }

    /// Sets what the next heartbeats report.
    pub fn set_load(&self, load: Load) {
        if let Ok(mut current) = self.shared.load.lock() {
            *current = load;
        }
    }

    fn send_reply(&self, id: MessageId, result: Result<Reply, Failure>) {
        let message = Message {
            envelope: Envelope {
                id,
                origin: self.shared.service,
                project: None,
                priority: Priority::Normal,
                deadline: Deadline(0),
                placement: Vec::new(),
            },
            body: Body::Reply(result),
        };
        if let Err(err) = self.send_message(&message) {
            tracing::warn!(cause = %err, "cannot send a reply");
        }
    }

    fn send_control(&self, control: Control) {
        let message = Message {
            envelope: Envelope {
                id: MessageId(0),
                origin: self.shared.service,
                project: None,
                priority: Priority::High,
                deadline: Deadline(0),
                placement: Vec::new(),
            },
            body: Body::Control(control),
        };
        if let Err(err) = self.send_message(&message) {
            tracing::warn!(cause = %err, "cannot send a control message");
        }
    }

    fn send_message(&self, message: &Message) -> Result<(), Failure> {
        let frames = message.encode().map_err(Failure::internal)?;
        self.shared
            .writer
            .send(frames.to_vec())
            .map_err(|_| Failure::new(FailureKind::Unavailable, "not connected to the kernel"))
    }
}

fn nonce() -> u32 {
    let mut nonce = [0u8; 4];
    let _ = getrandom::fill(&mut nonce);
    u32::from_be_bytes(nonce)
}

/// Moves frames from the service's unbounded writer to a bounded link.
async fn forward(mut from: mpsc::UnboundedReceiver<Vec<Bytes>>, to: mpsc::Sender<Vec<Bytes>>) {
    while let Some(frames) = from.recv().await {
        if to.send(frames).await.is_err() {
            return;
        }
    }
}

/// The local transport: a DEALER socket fed from `outbound`, whose messages
/// go to `receiver`; `lost` fires when the kernel disconnects.
async fn zmq_transport(
    endpoint: &Endpoint,
    identity: String,
    wait: Duration,
    mut outbound: mpsc::UnboundedReceiver<Vec<Bytes>>,
    receiver: Receiver,
    lost: oneshot::Sender<String>,
) -> Result<(), ConnectError> {
    let socket_error = |source| ConnectError::Socket {
        endpoint: endpoint.to_string(),
        source,
    };
    let mut options = SocketOptions::default();
    options.peer_identity(PeerIdentity::try_from(identity.into_bytes()).map_err(socket_error)?);
    options.connect_timeout(wait);
    let mut socket = DealerSocket::with_options(options);
    let mut monitor = socket.monitor();
    socket
        .connect(&endpoint.to_string())
        .await
        .map_err(socket_error)?;
    let (mut send_half, mut recv_half) = socket.split();
    tokio::spawn(async move {
        while let Some(frames) = outbound.recv().await {
            let Ok(message) = ZmqMessage::try_from(frames) else {
                continue;
            };
            if let Err(err) = send_half.send(message).await {
                tracing::warn!(cause = %err, "cannot send to the kernel");
            }
        }
    });
    let reader = tokio::spawn(async move {
        loop {
            match recv_half.recv().await {
                Ok(message) => receiver.on_frames(message.into_vec()),
                Err(err) => {
                    tracing::error!(cause = %err, "lost the kernel connection");
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match monitor.next().await {
                Some(SocketEvent::Disconnected(_)) | None => break,
                Some(_) => {}
            }
        }
        reader.abort();
        let _ = lost.send("the kernel's socket disconnected".into());
    });
    Ok(())
}
