//! Messages, their envelope, and their framing over ZeroMQ.
//!
//! A message travels as two ZeroMQ frames:
//!
//! 1. the header: one byte of [`PROTOCOL_VERSION`], then the [`Header`]
//!    (the [`Envelope`] plus the [`Kind`]) encoded with postcard;
//! 2. the body: the [`Body`] encoded with postcard.
//!
//! The kernel routes on the header alone and forwards the body frame
//! untouched, so it never decodes, copies or re-encodes a payload.

use crate::names::{Deadline, MessageId, Priority, ProjectName, ServiceKind};
use crate::{Event, Payload, Reply, Request, RequestKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fmt;

/// The version of this protocol; a peer speaking another is refused.
///
/// 2: a request's header names the request, not only its service.
/// 3: registrations name their host and labels; links from other hosts.
/// 4: requests deferred inside a service, and claimed before they start.
/// 5: schedule triggers, chains and pipelines.
/// 6: streamed answers.
pub const PROTOCOL_VERSION: u8 = 6;

/// What is written on every message's envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's id for a request, echoed in its reply.
    pub id: MessageId,
    /// Who sent it. The kernel overwrites this with the registered kind of
    /// the connection it came from, so a service cannot pose as another.
    pub origin: ServiceKind,
    /// The project the message acts for, when it acts for one. Set by the
    /// platform, never by a Doee.
    pub project: Option<ProjectName>,
    /// The scheduling class.
    pub priority: Priority,
    /// When the answer stops being useful.
    pub deadline: Deadline,
    /// Labels the instance that handles a request must have (a Doee's
    /// `[placement]`); empty means any instance.
    pub placement: Vec<(String, String)>,
}

/// What a message is, readable without decoding its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A request, queued and scheduled by the kernel for its service. The
    /// header names the request so the kernel can check who may send it
    /// without decoding the body; the receiver refuses a body that
    /// disagrees.
    Request(RequestKind),
    /// The answer to the request with the envelope's id.
    Reply,
    /// A notification for every other connected service instance.
    Event,
    /// Between one service and the kernel: registration, heartbeats.
    Control,
}

/// The first frame: the envelope and the kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The envelope.
    pub envelope: Envelope,
    /// The kind, which always agrees with the body.
    pub kind: Kind,
}

/// The second frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// A request.
    Request(Request),
    /// A reply, or why there is none.
    Reply(Result<Reply, Failure>),
    /// An event.
    Event(Event),
    /// A control message.
    Control(Control),
}

impl Body {
    /// The kind a header must carry for this body.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Request(request) => Kind::Request(request.kind()),
            Body::Reply(_) => Kind::Reply,
            Body::Event(_) => Kind::Event,
            Body::Control(_) => Kind::Control,
        }
    }
}

/// A whole message. Its kind is derived from the body, so the two cannot disagree.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The envelope.
    pub envelope: Envelope,
    /// The body.
    pub body: Body,
}

impl Message {
    /// The two frames of this message.
    pub fn encode(&self) -> Result<[Bytes; 2], ProtocolError> {
        let header = Header {
            envelope: self.envelope.clone(),
            kind: self.body.kind(),
        };
        Ok([encode_header(&header)?, encode(&self.body, None)?])
    }

    /// Decodes both frames, refusing a header that disagrees with its body.
    pub fn decode(frames: &[Bytes]) -> Result<Message, ProtocolError> {
        let raw = RawMessage::decode(frames)?;
        let body: Body = decode(&raw.body, "body", None)?;
        if body.kind() != raw.header.kind {
            return Err(ProtocolError::Mismatch {
                header: raw.header.kind,
                body: body.kind(),
            });
        }
        Ok(Message {
            envelope: raw.header.envelope,
            body,
        })
    }
}

/// A message whose body is still encoded: what the kernel handles.
#[derive(Clone, Debug, PartialEq)]
pub struct RawMessage {
    /// The decoded header.
    pub header: Header,
    /// The body frame, as received.
    pub body: Bytes,
}

impl RawMessage {
    /// Decodes the header frame and keeps the body frame.
    pub fn decode(frames: &[Bytes]) -> Result<RawMessage, ProtocolError> {
        let [header, body] = frames else {
            return Err(ProtocolError::FrameCount(frames.len()));
        };
        Ok(RawMessage {
            header: Header::decode(header)?,
            body: body.clone(),
        })
    }

    /// The two frames, with the header re-encoded.
    pub fn encode(&self) -> Result<[Bytes; 2], ProtocolError> {
        Ok([encode_header(&self.header)?, self.body.clone()])
    }

    /// Decodes the body, checking it against the header.
    pub fn decode_body(&self) -> Result<Body, ProtocolError> {
        let body: Body = decode(&self.body, "body", None)?;
        if body.kind() != self.header.kind {
            return Err(ProtocolError::Mismatch {
                header: self.header.kind,
                body: body.kind(),
            });
        }
        Ok(body)
    }
}

fn encode_header(header: &Header) -> Result<Bytes, ProtocolError> {
    encode(header, Some(PROTOCOL_VERSION))
}

impl Header {
    /// The header frame, for forwarding a body frame as received.
    pub fn encode(&self) -> Result<Bytes, ProtocolError> {
        encode_header(self)
    }

    /// Reads a header frame.
    pub fn decode(frame: &[u8]) -> Result<Header, ProtocolError> {
        decode(frame, "header", Some(PROTOCOL_VERSION))
    }
}

/// Encodes a value as one frame, optionally after a version byte.
pub(crate) fn encode<T: Serialize>(value: &T, version: Option<u8>) -> Result<Bytes, ProtocolError> {
    let mut out = Vec::with_capacity(64);
    out.extend(version);
    let out = postcard::to_extend(value, out).map_err(ProtocolError::Encode)?;
    Ok(Bytes::from(out))
}

/// Decodes one frame, checking the version byte when one is expected and
/// refusing trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(
    frame: &[u8],
    part: &'static str,
    version: Option<u8>,
) -> Result<T, ProtocolError> {
    let rest = match version {
        None => frame,
        Some(expected) => match frame.split_first() {
            None => return Err(ProtocolError::Empty(part)),
            Some((&found, _)) if found != expected => {
                return Err(ProtocolError::Version { found, expected });
            }
            Some((_, rest)) => rest,
        },
    };
    let (value, trailing) = postcard::take_from_bytes(rest)
        .map_err(|source| ProtocolError::Malformed { part, source })?;
    if !trailing.is_empty() {
        return Err(ProtocolError::Trailing {
            part,
            bytes: trailing.len(),
        });
    }
    Ok(value)
}

/// Why bytes could not be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A message has exactly two frames.
    #[error("expected 2 frames, got {0}")]
    FrameCount(usize),
    /// A frame that must carry a version byte was empty.
    #[error("the {0} frame is empty")]
    Empty(&'static str),
    /// The peer speaks another protocol version.
    #[error("protocol version {found} is not the supported version {expected}")]
    Version {
        /// What the peer sent.
        found: u8,
        /// What this side speaks.
        expected: u8,
    },
    /// The bytes do not decode.
    #[error("malformed {part}: {source}")]
    Malformed {
        /// Which part.
        part: &'static str,
        /// The decoder's complaint.
        source: postcard::Error,
    },
    /// Bytes were left over after a complete value.
    #[error("{bytes} trailing bytes after the {part}")]
    Trailing {
        /// Which part.
        part: &'static str,
        /// How many bytes were left.
        bytes: usize,
    },
    /// The header's kind disagrees with the body.
    #[error("the header says {header:?} but the body is {body:?}")]
    Mismatch {
        /// The header's kind.
        header: Kind,
        /// The body's kind.
        body: Kind,
    },
    /// A value could not be encoded (an internal error).
    #[error("cannot encode: {0}")]
    Encode(postcard::Error),
}

/// Why a request got no reply from its target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The class of failure, which decides the HTTP status.
    pub kind: FailureKind,
    /// What went wrong, for a person.
    pub message: String,
}

/// The classes of [`Failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The target's queue is full: try later.
    Busy,
    /// The deadline passed.
    Timeout,
    /// No instance of the target is up, or it died with the request.
    Unavailable,
    /// The thing asked for does not exist.
    NotFound,
    /// The request is malformed or breaks a rule.
    Invalid,
    /// The request conflicts with the current state.
    Conflict,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials without the right.
    Forbidden,
    /// The request is too large.
    TooLarge,
    /// A fault of the platform.
    Internal,
}

impl FailureKind {
    /// The HTTP status this failure maps to.
    pub fn http_status(self) -> u16 {
        match self {
            FailureKind::Invalid => 400,
            FailureKind::Unauthenticated => 401,
            FailureKind::Forbidden => 403,
            FailureKind::NotFound => 404,
            FailureKind::Conflict => 409,
            FailureKind::TooLarge => 413,
            FailureKind::Busy => 429,
            FailureKind::Internal => 500,
            FailureKind::Unavailable => 503,
            FailureKind::Timeout => 504,
        }
    }
}

impl Failure {
    /// A failure of this kind.
    pub fn new(kind: FailureKind, message: impl fmt::Display) -> Failure {
        Failure {
            kind,
            message: message.to_string(),
        }
    }

    /// [`FailureKind::Invalid`].
    pub fn invalid(message: impl fmt::Display) -> Failure {
        Failure::new(FailureKind::Invalid, message)
    }

    /// [`FailureKind::NotFound`].
    pub fn not_found(message: impl fmt::Display) -> Failure {
        Failure::new(FailureKind::NotFound, message)
    }

    /// [`FailureKind::Internal`].
    pub fn internal(message: impl fmt::Display) -> Failure {
        Failure::new(FailureKind::Internal, message)
    }
}

/// Between a service and the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// A service introduces itself.
    Register(Registration),
    /// The kernel accepted the registration.
    Registered,
    /// A service is alive; sent periodically.
    Heartbeat(Load),
    /// The kernel does not know this connection: register again.
    Reregister,
    /// The kernel will not have this registration, and says why.
    Refused(String),
    /// A service holds the request with this id without having started it
    /// (it waits inside, for a Worker, say): until the service claims it,
    /// the kernel may give it to another instance if this one is lost.
    Deferred(MessageId),
    /// A service asks to start a request it deferred.
    Claim(MessageId),
    /// The kernel's answer to a [`Control::Claim`]: start it, or not (the
    /// kernel took it back, or its origin was answered already), in which
    /// case the service drops it without answering.
    Claimed {
        /// The request.
        id: MessageId,
        /// Whether it may start.
        granted: bool,
    },
    /// A piece of the answer to the request with this id, ahead of the
    /// reply (a Doee's `ctx.write`): from the service that runs it to the
    /// kernel, and from the kernel to the request's origin under the
    /// origin's id. At most [`STREAM_WINDOW`] pieces are sent beyond those
    /// the origin has pulled.
    Chunk {
        /// The request.
        id: MessageId,
        /// The piece.
        data: Payload,
    },
    /// The origin took a piece of its request's answer: one more may come.
    /// From the origin (its id) through the kernel to the service (the
    /// kernel's id).
    Pull(MessageId),
    /// The origin gave up its request (its client went away): the service
    /// ends it. Routed as [`Control::Pull`].
    Cancel(MessageId),
}

/// Pieces of a streamed answer in flight beyond those the origin took.
pub const STREAM_WINDOW: u32 = 16;

/// What a service tells the kernel when it connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Which service it is.
    pub service: ServiceKind,
    /// A stable name for this instance (`doer-1`); a new registration under
    /// the same name is counted as a restart.
    pub instance: String,
    /// The OS process id.
    pub pid: u32,
    /// How many requests it handles at once.
    pub capacity: u32,
    /// The host it runs on.
    pub host: String,
    /// What the operator says about it (`site = "shed"`), for placement.
    pub labels: Vec<(String, String)>,
}

/// What a heartbeat reports beyond being alive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Work waiting inside the service.
    pub queue_depth: u32,
    /// Workers or connections the service holds.
    pub workers: u32,
}
