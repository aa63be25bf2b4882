//! Responses whose body is in memory, and the one shape of an error.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use isms_ipc::Failure;
use serde::Serialize;

/// A response whose body is all in memory.
pub type Reply = Response<Full<Bytes>>;

/// A refused request: its status and the message of its JSON body,
/// `{"error": "<message>"}` (the API's documented `Error` schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError(pub StatusCode, pub String);

impl HttpError {
    /// 400, for what the caller sent.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError(StatusCode::BAD_REQUEST, message.into())
    }

    /// The error as a response.
    pub fn reply(&self) -> Reply {
        json(self.0, &serde_json::json!({ "error": self.1 }))
    }
}

impl From<Failure> for HttpError {
    /// A platform failure answers with its kind's status.
    fn from(failure: Failure) -> Self {
        let status = StatusCode::from_u16(failure.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError(status, failure.message)
    }
}

/// `value` as a JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    raw_json(status, body)
}

/// A JSON response whose text is already made.
pub fn raw_json(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
