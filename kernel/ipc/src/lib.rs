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
pub mod kernel;
pub mod message;
pub mod names;
pub mod resadmin;
pub mod secret_file;
pub mod topic;
pub mod worker;
pub mod zmtp;

pub use connection::{Connection, Delivery, Endpoint, Inbound, Incoming, Responder, Scope};
pub use message::{
    Body, Control, Envelope, Failure, FailureKind, Header, Kind, Load, Message, PROTOCOL_VERSION,
    ProtocolError, RawMessage, Registration,
};
pub use names::{
    Deadline, DeviceName, DoeeName, InvocationId, MessageId, Priority, ProjectName, ServiceKind,
    Username,
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
        match self {
            Request::Kernel(_) => ServiceKind::Kernel,
            Request::Doer(_) => ServiceKind::Doer,
            Request::Resadmin(_) => ServiceKind::Resadmin,
            Request::DBriver(_) => ServiceKind::DBriver,
            Request::CommServer(_) => ServiceKind::CommServer,
        }
    }

    /// The request's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Kernel(r) => r.name(),
            Request::Doer(r) => r.name(),
            Request::Resadmin(r) => r.name(),
            Request::DBriver(r) => r.name(),
            Request::CommServer(r) => r.name(),
        }
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

/// Defines one service's requests, each a struct paired with its reply type,
/// plus the service's `Request` and `Reply` enums and their [`Call`] impls.
macro_rules! protocol {
    (
        service $service:ident;
        $(
            $(#[$doc:meta])*
            $name:ident { $( $(#[$field_doc:meta])* $field:ident : $field_type:ty ),* $(,)? } -> $reply:ty;
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

        /// A reply of this service, named after the request it answers.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Reply {
            $( #[doc = concat!("Answers [`", stringify!($name), "`].")] $name($reply), )*
        }

        impl Request {
            /// The request's name, for logs.
            pub fn name(&self) -> &'static str {
                match self { $( Request::$name(_) => stringify!($name), )* }
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
