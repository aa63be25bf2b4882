//! The HTTP server both of the platform's HTTP ports share: the CommServer's
//! trigger port and the Control Gate's API. It belongs to no service, so the
//! two ports cannot drift apart again: they read bodies, answer errors,
//! guard connections and turn an invocation into a response the same way.
//!
//! - [`serve`]: the accept loop, with a header-read timeout, an idle timeout
//!   and a connection cap ([`Limits`]);
//! - [`read_body`]: a request body, refused with 413 past a limit;
//! - [`HttpError`] and [`json`]: the one JSON error shape, `{"error": "…"}`;
//! - [`invocation_reply`]: an invocation's result as a response.

mod body;
mod invocation;
mod reply;
mod serve;
mod stream;

pub use body::read_body;
pub use invocation::{
    INVOCATION_HEADER, invocation_error, invocation_reply, set_invocation_header,
};
pub use reply::{HttpError, Reply, json, raw_json};
pub use serve::{Handler, Limits, serve};
pub use stream::{BrokenOff, MaybeStreamed, Takes, invocation_stream};
