//! An invocation's result as an HTTP response: the same for a trigger and
//! for the API's `invoke`, so a Doee answers alike through either port.

use crate::{HttpError, Reply};
use http_body_util::Full;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use isms_ipc::doer::Outcome;
use isms_ipc::{Failure, FailureKind, InvocationId};

/// The header carrying an invocation's id on every answer about it.
pub const INVOCATION_HEADER: &str = "x-isms-invocation-id";

/// The response to invocation `id`:
///
/// - the Doee answered: its status (200 if it set none), its headers but
///   for the framing ones, which are ours, and its output;
/// - the Doee failed: the failure's status (504 timed out, 429 busy, 503
///   preempted, 500 otherwise);
/// - the platform could not run it: the failure kind's status (429 busy,
///   503 unavailable, 504 timeout, …).
///
/// Failures answer `{"error": "…", "invocation_id": "…"}`; every answer
/// carries [`INVOCATION_HEADER`].
pub fn invocation_reply(id: InvocationId, result: Result<Outcome, Failure>) -> Reply {
    let response = match result {
        Ok(Outcome {
            result: Ok(response),
            ..
        }) => response,
        Ok(Outcome {
            result: Err(failure),
            ..
        }) => {
            let status = StatusCode::from_u16(failure.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return invocation_error(id, status, failure.message());
        }
        Err(failure) => {
            let message = match failure.kind {
                FailureKind::Unavailable => format!("the platform is not ready: {failure}"),
                FailureKind::Busy => format!("too many invocations: {failure}"),
                _ => failure.message.clone(),
            };
            return invocation_error(id, HttpError::from(failure).0, message);
        }
    };
    let mut reply = Response::new(Full::new(response.body));
    *reply.status_mut() = response
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let headers = reply.headers_mut();
    for (name, value) in &response.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        if !is_framing(&name) {
            headers.append(name, value);
        }
    }
    set_invocation_header(&mut reply, id);
    reply
}

/// The framing of a response is the server's, never the Doee's.
fn is_framing(name: &HeaderName) -> bool {
    matches!(
        *name,
        header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION | header::UPGRADE
    )
}

/// An error about invocation `id`: `{"error": "…", "invocation_id": "…"}`
/// and [`INVOCATION_HEADER`], so the caller can look it up.
pub fn invocation_error(id: InvocationId, status: StatusCode, message: String) -> Reply {
    let body = serde_json::json!({ "error": message, "invocation_id": id.to_string() });
    let mut reply = crate::json(status, &body);
    set_invocation_header(&mut reply, id);
    reply
}

/// Marks an answer with the invocation it is about ([`INVOCATION_HEADER`]).
pub fn set_invocation_header(reply: &mut Reply, id: InvocationId) {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        reply.headers_mut().insert(INVOCATION_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{INVOCATION_HEADER, invocation_reply};
    use bytes::Bytes;
    use isms_ipc::doer::{DoeeFailure, Outcome, Response};
    use isms_ipc::{Failure, FailureKind, InvocationId};

    fn outcome(result: Result<Response, DoeeFailure>) -> Outcome {
        Outcome {
            result,
            logs: Vec::new(),
            cold_start: false,
            run_us: 0,
        }
    }

    #[test]
    fn the_doees_status_and_headers_pass_but_framing_does_not() {
        let id = InvocationId::generate();
        let response = Response {
            status: Some(201),
            headers: vec![
                ("x-answer".into(), "42".into()),
                ("content-length".into(), "999".into()),
            ],
            body: Bytes::from_static(b"hi"),
        };
        let reply = invocation_reply(id, Ok(outcome(Ok(response))));
        assert_eq!(reply.status(), 201);
        assert_eq!(reply.headers()["x-answer"], "42");
        assert!(reply.headers().get("content-length").is_none());
        assert_eq!(reply.headers()[INVOCATION_HEADER], id.to_string().as_str());
    }

    #[test]
    fn failures_keep_their_status() {
        let id = InvocationId::generate();
        let timed_out = outcome(Err(DoeeFailure::TimedOut { after_ms: 5 }));
        assert_eq!(invocation_reply(id, Ok(timed_out)).status(), 504);
        for (kind, status) in [
            (FailureKind::Busy, 429),
            (FailureKind::Unavailable, 503),
            (FailureKind::Timeout, 504),
        ] {
            let reply = invocation_reply(id, Err(Failure::new(kind, "no")));
            assert_eq!(reply.status(), status);
            assert_eq!(reply.headers()[INVOCATION_HEADER], id.to_string().as_str());
        }
    }
}
