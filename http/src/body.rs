//! Reading a request body, up to a limit, at a pace.

use crate::HttpError;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header;
use hyper::{Request, StatusCode};
use std::time::Duration;

/// The whole body of `request`, or 413 when it is (or says it is) larger
/// than `limit` bytes. A declared `Content-Length` over the limit is refused
/// before a byte is read; a body without one is cut off at the limit. A body
/// that stops arriving for `pace` gets 408: while a handler reads it the
/// connection is busy, not idle, so without this a client stalling halfway
/// through its body would hold its connection (and a slot of the cap) for
/// good. Pass the server's [`crate::Limits::idle_timeout`].
pub async fn read_body<B>(
    request: Request<B>,
    limit: usize,
    pace: Duration,
) -> Result<Bytes, HttpError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        HttpError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), limit);
    tokio::pin!(body);
    // Frames as they come, joined once at the end (none copied for a body
    // of one frame, the usual small request).
    let mut frames: Vec<Bytes> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(pace, body.frame()).await {
            Err(_) => {
                return Err(HttpError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body stopped arriving: nothing came for {} s",
                        pace.as_secs_f64()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push(data);
                }
            }
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(too_large());
            }
            Err(err) => {
                return Err(HttpError::bad_request(format!(
                    "cannot read the body: {err}"
                )));
            }
        }
    }
    Ok(match frames.len() {
        0 => Bytes::new(),
        1 => frames.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for frame in frames {
                joined.extend_from_slice(&frame);
            }
            joined.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::read_body;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, StatusCode};
    use std::time::Duration;

    const PACE: Duration = Duration::from_secs(5);

    fn request(body: &'static [u8], declared: Option<usize>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder();
        if let Some(n) = declared {
            builder = builder.header("content-length", n);
        }
        builder.body(Full::new(Bytes::from_static(body))).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bodies_past_the_limit_are_refused() {
        let read = read_body(request(b"12345", None), 5, PACE).await;
        assert_eq!(read.unwrap(), Bytes::from_static(b"12345"));
        let read = read_body(request(b"123456", None), 5, PACE).await;
        assert_eq!(read.unwrap_err().0, StatusCode::PAYLOAD_TOO_LARGE);
        // The declared length alone is enough.
        let read = read_body(request(b"", Some(6)), 5, PACE).await;
        let err = read.unwrap_err();
        assert_eq!(err.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.1, "the body is larger than 5 bytes");
    }
}
