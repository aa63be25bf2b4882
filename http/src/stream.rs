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
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A body in memory, or the pieces of a streamed answer as hyper pulls
/// them.
pub enum MaybeStreamed {
    /// All in memory.
    Full(Full<Bytes>),
    /// Frames as they come; an error breaks the body off.
    Pieces(mpsc::Receiver<Result<Frame<Bytes>, BrokenOff>>),
}

/// Why a streamed body ended without its end: the invocation failed after
/// its first piece, for a client that takes no trailers.
#[derive(Debug)]
pub struct BrokenOff(String);

impl std::fmt::Display for BrokenOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the invocation failed after its first piece: {}", self.0)
    }
}

impl std::error::Error for BrokenOff {}

impl Body for MaybeStreamed {
    type Data = Bytes;
    type Error = BrokenOff;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BrokenOff>>> {
        match self.get_mut() {
            MaybeStreamed::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(|never| match never {}))),
            MaybeStreamed::Pieces(pieces) => pieces.poll_recv(cx),
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

/// How the client takes a streamed answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takes {
    /// Server-Sent Events (`Accept: text/event-stream`).
    pub events: bool,
    /// Trailers (`TE: trailers`): a failure after the first piece comes as
    /// `x-isms-error`, else the body breaks off.
    pub trailers: bool,
}

impl Takes {
    /// What `request` asks for.
    pub fn of<B>(request: &Request<B>) -> Takes {
        let asks = |name: header::HeaderName, what: &str| {
            request
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains(what))
        };
        Takes {
            events: asks(header::ACCEPT, "text/event-stream"),
            trailers: asks(header::TE, "trailers"),
        }
    }
}

/// The answer to a streamed invocation: as [`invocation_reply`] if it
/// ended before writing anything, else `200` with the pieces as they come,
/// then the output it returned. A failure after the first piece cannot
/// change the status: an event `error` says it (Server-Sent Events), or a
/// trailer `x-isms-error` for a client that takes trailers; for any other
/// the body breaks off, unfinished.
pub async fn invocation_stream(
    id: InvocationId,
    mut call: Streaming<Invoke>,
    takes: Takes,
) -> Response<MaybeStreamed> {
    let first = match call.next().await {
        Piece::Reply(result) => return invocation_reply(id, result).map(MaybeStreamed::Full),
        Piece::Chunk(first) => first,
    };
    let (pieces, body) = mpsc::channel(1);
    tokio::spawn(pump(id, call, first, pieces, takes));
    let mut response = Response::new(MaybeStreamed::Pieces(body));
    let headers = response.headers_mut();
    let kind = if takes.events {
        "text/event-stream"
    } else {
        "application/octet-stream"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if takes.trailers && !takes.events {
        headers.insert(header::TRAILER, HeaderValue::from_static("x-isms-error"));
    }
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        headers.insert(INVOCATION_HEADER, value);
    }
    response
}

/// Moves the pieces to the body until the reply; returns (dropping the
/// call, which cancels it) as soon as the client is gone, also while the
/// Doee is quiet.
async fn pump(
    id: InvocationId,
    mut call: Streaming<Invoke>,
    first: Bytes,
    pieces: mpsc::Sender<Result<Frame<Bytes>, BrokenOff>>,
    takes: Takes,
) {
    let mut events = takes.events.then(Events::default);
    let mut piece = |data: Bytes| {
        Ok(Frame::data(match &mut events {
            Some(events) => events.piece(&data),
            None => data,
        }))
    };
    if pieces.send(piece(first)).await.is_err() {
        return;
    }
    let end = loop {
        let next = tokio::select! {
            next = call.next() => next,
            () = pieces.closed() => return,
        };
        match next {
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
    let last = match (failure, takes) {
        (None, Takes { events: true, .. }) => Ok(Frame::data(event(
            "end",
            &serde_json::json!({ "invocation_id": id.to_string(), "status": "succeeded" })
                .to_string(),
        ))),
        (Some(message), Takes { events: true, .. }) => Ok(Frame::data(event(
            "error",
            &serde_json::json!({ "invocation_id": id.to_string(), "error": message }).to_string(),
        ))),
        (Some(message), Takes { trailers: true, .. }) => {
            // A header value is visible ASCII.
            let text: String = message
                .chars()
                .map(|c| {
                    if c.is_ascii() && !c.is_ascii_control() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect();
            let mut trailers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&text) {
                trailers.insert("x-isms-error", value);
            }
            Ok(Frame::trailers(trailers))
        }
        (Some(message), _) => Err(BrokenOff(message)),
        (None, _) => return,
    };
    let _ = pieces.send(last).await;
}

/// Pieces as Server-Sent Events, one event each: its lines (split at
/// `\n`, `\r\n` or `\r`, as a client splits them) each a `data:` line, so
/// a client joining them with `\n` gets the piece back. A character split
/// between two pieces waits for its end.
#[derive(Default)]
struct Events {
    carry: Vec<u8>,
}

impl Events {
    fn piece(&mut self, data: &[u8]) -> Bytes {
        self.carry.extend_from_slice(data);
        let whole = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            // An incomplete character at the end waits; anything else is
            // replaced.
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        let rest = self.carry.split_off(whole);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        event("", &text)
    }
}

/// One Server-Sent Event.
fn event(name: &str, text: &str) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + 16);
    if !name.is_empty() {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in text.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::{Events, event};

    #[test]
    fn events_carry_each_line_of_a_piece() {
        assert_eq!(&event("", "21.5")[..], b"data: 21.5\n\n");
        assert_eq!(&event("", "21.5\n")[..], b"data: 21.5\ndata: \n\n");
        assert_eq!(
            &event("end", "a\r\nb\rc")[..],
            b"event: end\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(&event("", "")[..], b"data: \n\n");
    }

    #[test]
    fn a_character_split_between_pieces_is_sent_whole() {
        let mut events = Events::default();
        let euro = "€".as_bytes();
        assert_eq!(&events.piece(&euro[..1])[..], b"data: \n\n");
        assert_eq!(&events.piece(&euro[1..])[..], "data: €\n\n".as_bytes());
        assert_eq!(&events.piece(b"\xff")[..], "data: \u{fffd}\n\n".as_bytes());
    }
}
