//! The one wire protocol of ISMS: what every service and the kernel say to
//! each other, and how it travels over ZeroMQ.
//!
//! This crate plays the part the system-call header plays for a microkernel.
//! Each service's requests are defined once below, each paired with the type
//! of its reply, so [`Connection::call`] is typed end to end:
//! `conn.call(resadmin::Login { .. })` answers `Result<resadmin::Token, Failure>`.
//!
//! - [`message`]: the envelope, the two-frame encoding, [`Failure`].
//! - [`kernel`], [`doer`], [`resadmin`], [`dbriver`], [`commserver`]: each
//!   service's requests and replies; [`topic`]: MQTT topics and namespaces.
//! - [`worker`]: between the Doer and the Doee Executor inside a Worker.
//! - [`connection`]: the client every service uses to talk to the kernel.
#![deny(missing_docs)]

pub mod commserver;
pub mod connection;
pub mod dbriver;
pub mod doer;
pub mod hex;
pub mod kernel;
pub mod link;
pub mod message;
pub mod names;
pub mod resadmin;
pub mod secret_file;
pub mod topic;
pub mod worker;
pub mod zmtp;

pub use connection::{
    Connection, Delivery, Endpoint, Inbound, Incoming, Piece, Responder, Scope, Streaming,
};
pub use message::{
    Body, Control, Envelope, Failure, FailureKind, Header, Kind, Load, Message, PROTOCOL_VERSION,
    ProtocolError, RawMessage, Registration, STREAM_WINDOW,
};
pub use names::{
    Deadline, DeviceName, DoeeName, InvocationId, MessageId, Priority, ProjectName, SecretName,
    SecretValue, ServiceKind, Username,
};

use serde::{Deserialize, Serialize};

/// A request paired with the type of its reply.
pub trait Call: Sized {
    /// What a successful call answers.
    type Reply;
    /// Wraps the request for the wire.
    fn into_request(self) -> Request;
    /// Unwraps the matching reply; `None` if the reply answers another request.
    fn from_reply(reply: Reply) -> Option<Self::Reply>;
}

/// A request for any service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// For the kernel itself.
    Kernel(kernel::Request),
    /// For the Doer.
    Doer(doer::Request),
    /// For Resadmin.
    Resadmin(resadmin::Request),
    /// For DBriver.
    DBriver(dbriver::Request),
    /// For the CommServer.
    CommServer(commserver::Request),
}

impl Request {
    /// The service that handles it.
    pub fn target(&self) -> ServiceKind {
        self.kind().target()
    }

    /// Which request this is.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Kernel(r) => RequestKind::Kernel(r.kind()),
            Request::Doer(r) => RequestKind::Doer(r.kind()),
            Request::Resadmin(r) => RequestKind::Resadmin(r.kind()),
            Request::DBriver(r) => RequestKind::DBriver(r.kind()),
            Request::CommServer(r) => RequestKind::CommServer(r.kind()),
        }
    }

    /// The request's name, for logs.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// Which request, for any service, without its fields: what a request's
/// header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    /// For the kernel itself.
    Kernel(kernel::RequestKind),
    /// For the Doer.
    Doer(doer::RequestKind),
    /// For Resadmin.
    Resadmin(resadmin::RequestKind),
    /// For DBriver.
    DBriver(dbriver::RequestKind),
    /// For the CommServer.
    CommServer(commserver::RequestKind),
}

impl RequestKind {
    /// Every request of every service.
    pub fn all() -> impl Iterator<Item = RequestKind> {
        let kernel = kernel::RequestKind::ALL
            .iter()
            .map(|&k| RequestKind::Kernel(k));
        let doer = doer::RequestKind::ALL.iter().map(|&k| RequestKind::Doer(k));
        let resadmin = resadmin::RequestKind::ALL
            .iter()
            .map(|&k| RequestKind::Resadmin(k));
        let dbriver = dbriver::RequestKind::ALL
            .iter()
            .map(|&k| RequestKind::DBriver(k));
        let commserver = commserver::RequestKind::ALL
            .iter()
            .map(|&k| RequestKind::CommServer(k));
        kernel
            .chain(doer)
            .chain(resadmin)
            .chain(dbriver)
            .chain(commserver)
    }

    /// The service that handles it.
    pub fn target(self) -> ServiceKind {
        match self {
            RequestKind::Kernel(_) => ServiceKind::Kernel,
            RequestKind::Doer(_) => ServiceKind::Doer,
            RequestKind::Resadmin(_) => ServiceKind::Resadmin,
            RequestKind::DBriver(_) => ServiceKind::DBriver,
            RequestKind::CommServer(_) => ServiceKind::CommServer,
        }
    }

    /// The request's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Kernel(k) => k.name(),
            RequestKind::Doer(k) => k.name(),
            RequestKind::Resadmin(k) => k.name(),
            RequestKind::DBriver(k) => k.name(),
            RequestKind::CommServer(k) => k.name(),
        }
    }

    /// The services that may send it, as its service's protocol declares.
    pub fn senders(self) -> &'static [ServiceKind] {
        match self {
            RequestKind::Kernel(k) => k.senders(),
            RequestKind::Doer(k) => k.senders(),
            RequestKind::Resadmin(k) => k.senders(),
            RequestKind::DBriver(k) => k.senders(),
            RequestKind::CommServer(k) => k.senders(),
        }
    }

    /// Whether `origin` may send it. The kernel asks this before delivery,
    /// with the origin it vouches for, so no service checks it again.
    pub fn may_be_sent_by(self, origin: ServiceKind) -> bool {
        self.senders().contains(&origin)
    }
}

/// A reply from any service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// From the kernel.
    Kernel(kernel::Reply),
    /// From the Doer.
    Doer(doer::Reply),
    /// From Resadmin.
    Resadmin(resadmin::Reply),
    /// From DBriver.
    DBriver(dbriver::Reply),
    /// From the CommServer.
    CommServer(commserver::Reply),
}

/// A notification broadcast to every other connected service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A project's active Doee versions or triggers changed (deploy, rollback,
    /// delete): routes must be reloaded.
    DeploymentsChanged {
        /// The project.
        project: ProjectName,
    },
    /// A device's MQTT credentials were revoked, or every device's of a
    /// deleted project (`device: None`): its connections end at once.
    DeviceRevoked {
        /// The project.
        project: ProjectName,
        /// The device.
        device: Option<DeviceName>,
    },
    /// An admin changed a project's quotas.
    QuotasChanged {
        /// The project.
        project: ProjectName,
        /// Its quotas now.
        quotas: resadmin::Quotas,
    },
}

/// Defines one service's requests, each a struct paired with its reply type
/// and the services that may send it, plus the service's `Request`,
/// `RequestKind` and `Reply` enums and their [`Call`] impls.
///
/// Who may ask what is declared here, once, next to the request, and
/// nowhere else: the kernel refuses a request from any other origin before
/// it reaches the service. Every request names its senders; there is no
/// default, so a new request cannot be open to everyone by omission.
macro_rules! protocol {
    (
        service $service:ident;
        $(
            $(#[$doc:meta])*
            $name:ident { $( $(#[$field_doc:meta])* $field:ident : $field_type:ty ),* $(,)? }
                -> $reply:ty, from [ $( $sender:ident ),+ $(,)? ];
        )*
    ) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
            pub struct $name { $( $(#[$field_doc])* pub $field: $field_type, )* }
        )*

        /// A request to this service.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Request {
            $( #[doc = concat!("See [`", stringify!($name), "`].")] $name($name), )*
        }

        /// Which request, without its fields: what a message's header
        /// carries, so the kernel can check the sender without decoding the
        /// body.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum RequestKind {
            $( #[doc = concat!("[`", stringify!($name), "`].")] $name, )*
        }

        /// A reply of this service, named after the request it answers.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Reply {
            $( #[doc = concat!("Answers [`", stringify!($name), "`].")] $name($reply), )*
        }

        impl Request {
            /// Which request this is.
            pub fn kind(&self) -> RequestKind {
                match self { $( Request::$name(_) => RequestKind::$name, )* }
            }

            /// The request's name, for logs.
            pub fn name(&self) -> &'static str {
                self.kind().name()
            }
        }

        impl RequestKind {
            /// Every request of this service, in declaration order.
            pub const ALL: &'static [RequestKind] = &[ $( RequestKind::$name, )* ];

            /// The request's name, for logs.
            pub fn name(self) -> &'static str {
                match self { $( RequestKind::$name => stringify!($name), )* }
            }

            /// The services that may send this request.
            pub fn senders(self) -> &'static [$crate::ServiceKind] {
                match self {
                    $( RequestKind::$name => &[ $( $crate::ServiceKind::$sender, )+ ], )*
                }
            }
        }

        $(
            impl $crate::Call for $name {
                type Reply = $reply;
                fn into_request(self) -> $crate::Request {
                    $crate::Request::$service(Request::$name(self))
                }
                #[allow(unreachable_patterns)]
                fn from_reply(reply: $crate::Reply) -> Option<$reply> {
                    match reply {
                        $crate::Reply::$service(Reply::$name(reply)) => Some(reply),
                        _ => None,
                    }
                }
            }
        )*
    };
}
pub(crate) use protocol;

/// A byte payload that encodes as one length-prefixed block rather than a
/// sequence of numbers.
pub type Payload = bytes::Bytes;

#[cfg(test)]
mod tests;
