//! The Control Gate's responses. Their body is boxed, so a reply may be
//! in memory or a stream of Server-Sent Events.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use isms_http::HttpError;
use serde::Serialize;
use std::convert::Infallible;

/// Why a body ended unfinished: a streamed invocation broke off.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response of the Control Gate.
pub type Reply = Response<BoxBody<Bytes, BodyError>>;

/// A body all in memory.
pub fn full(bytes: Bytes) -> BoxBody<Bytes, BodyError> {
    never_fails(Full::new(bytes))
}

/// A body that cannot fail, as this server's bodies.
pub fn never_fails<B>(body: B) -> BoxBody<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    body.map_err(|never| match never {}).boxed()
}

/// A reply of [`isms_http`], with the body type of this server's replies.
pub fn boxed(reply: isms_http::Reply) -> Reply {
    reply.map(never_fails)
}

/// `value` as JSON.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    boxed(isms_http::json(status, value))
}

/// A response whose JSON is already text.
pub fn raw_json(status: StatusCode, body: String) -> Reply {
    boxed(isms_http::raw_json(status, body))
}

/// 200 with each of `items` as its API view, in a JSON array.
pub fn list<T, V: Serialize>(items: Vec<T>, view: impl Fn(T) -> V) -> Reply {
    let views: Vec<V> = items.into_iter().map(view).collect();
    json(StatusCode::OK, &views)
}

/// The API's error body, `{"error": "…"}`.
pub fn error_reply(err: HttpError) -> Reply {
    boxed(err.reply())
}

/// 204.
pub fn no_content() -> Reply {
    let mut reply = Response::new(full(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}
