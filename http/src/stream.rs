//! Answers whose body comes in pieces as the Doee writes them
//! (`ctx.write`): chunked transfer encoding, or Server-Sent Events when
//! the client asks (`Accept: text/event-stream`). Shared by the trigger
//! port and the Control Gate's `invoke`.
//!
//! Back-pressure runs all the way: a piece is taken from the call only
//! when the previous one went to hyper, hyper takes one only when the
//! socket has room, and the Doer lets a Doee write only
//! [`isms_ipc::STREAM_WINDOW`] pieces ahead of those taken. A client that
//! goes away drops the body, which drops the call: the Doer is told to
//! stop the invocation.

use crate::invocation::{INVOCATION_HEADER, invocation_reply};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use isms_ipc::doer::{Invoke, Outcome};
use isms_ipc::{Failure, InvocationId, Piece, Streaming};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A body in memory, or the pieces of a streamed answer as hyper pulls
/// them.
pub enum MaybeStreamed {
    /// All in memory.
    Full(Full<Bytes>),
    /// Frames as they come.
    Pieces(mpsc::Receiver<Frame<Bytes>>),
}

impl From<Full<Bytes>> for MaybeStreamed {
    fn from(body: Full<Bytes>) -> Self {
        MaybeStreamed::Full(body)
    }
}

impl Body for MaybeStreamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MaybeStreamed::Full(full) => Pin::new(full).poll_frame(cx),
            MaybeStreamed::Pieces(pieces) => pieces.poll_recv(cx).map(|frame| frame.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MaybeStreamed::Full(full) => full.is_end_stream(),
            MaybeStreamed::Pieces(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MaybeStreamed::Full(full) => full.size_hint(),
            MaybeStreamed::Pieces(_) => SizeHint::default(),
        }
    }
}

/// Whether the client asks for Server-Sent Events.
pub fn wants_events<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The answer to a streamed invocation: as [`invocation_reply`] if it
/// ended before writing anything, else `200` with the pieces as they come,
/// then the output it returned. A failure after the first piece cannot
/// change the status: an event `error` says it (Server-Sent Events), or a
/// trailer `x-isms-error` for a client that takes trailers.
pub async fn invocation_stream(
    id: InvocationId,
    mut call: Streaming<Invoke>,
    events: bool,
) -> Response<MaybeStreamed> {
    let first = match call.next().await {
        Piece::Reply(result) => return invocation_reply(id, result).map(MaybeStreamed::Full),
        Piece::Chunk(first) => first,
    };
    let (pieces, body) = mpsc::channel(1);
    tokio::spawn(pump(id, call, first, pieces, events));
    let mut response = Response::new(MaybeStreamed::Pieces(body));
    let headers = response.headers_mut();
    let kind = if events {
        "text/event-stream"
    } else {
        "application/octet-stream"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(INVOCATION_HEADER, value);
    }
    response
}

/// Moves the pieces to the body until the reply; returns (dropping the
/// call, which cancels it) as soon as the client is gone.
async fn pump(
    id: InvocationId,
    mut call: Streaming<Invoke>,
    first: Bytes,
    pieces: mpsc::Sender<Frame<Bytes>>,
    events: bool,
) {
    let piece = |data: Bytes| Frame::data(if events { event("", &data) } else { data });
    if pieces.send(piece(first)).await.is_err() {
        return;
    }
    let end = loop {
        match call.next().await {
            Piece::Chunk(data) => {
                if pieces.send(piece(data)).await.is_err() {
                    return;
                }
            }
            Piece::Reply(result) => break result,
        }
    };
    let failure = match end {
        Ok(Outcome {
            result: Ok(response),
            ..
        }) => {
            if !response.body.is_empty() && pieces.send(piece(response.body)).await.is_err() {
                return;
            }
            None
        }
        Ok(Outcome {
            result: Err(failure),
            ..
        }) => Some(failure.message()),
        Err(Failure { message, .. }) => Some(message),
    };
    let last = match (&failure, events) {
        (None, true) => Frame::data(event(
            "end",
            serde_json::json!({ "invocation_id": id.to_string(), "status": "succeeded" })
                .to_string()
                .as_bytes(),
        )),
        (Some(message), true) => Frame::data(event(
            "error",
            serde_json::json!({ "invocation_id": id.to_string(), "error": message })
                .to_string()
                .as_bytes(),
        )),
        (Some(message), false) => {
            let mut trailers = HeaderMap::new();
            let text: String = message.chars().filter(|c| !c.is_control()).collect();
            if let Ok(value) = HeaderValue::from_str(&text) {
                trailers.insert("x-isms-error", value);
            }
            Frame::trailers(trailers)
        }
        (None, false) => return,
    };
    let _ = pieces.send(last).await;
}

/// One Server-Sent Event: each line of `data` a `data:` line, so that a
/// client joining them with newlines (as the standard says) gets the
/// piece back exactly: `a\n` is `data: a` then an empty `data:` line.
fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 16);
    if !name.is_empty() {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    for line in String::from_utf8_lossy(data).split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::event;

    #[test]
    fn events_carry_each_line_of_a_piece() {
        assert_eq!(&event("", b"21.5")[..], b"data: 21.5\n\n");
        assert_eq!(&event("", b"21.5\n")[..], b"data: 21.5\ndata: \n\n");
        assert_eq!(
            &event("end", b"a\nb")[..],
            b"event: end\ndata: a\ndata: b\n\n"
        );
        assert_eq!(&event("", b"")[..], b"data: \n\n");
    }
}
