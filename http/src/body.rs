//! Reading a request body, up to a limit, at a pace.

use crate::HttpError;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header;
use hyper::{Request, StatusCode};
use std::time::Duration;

/// How long a request's body may go without a byte arriving. The serve loop
/// puts its idle timeout in each request's extensions: while a handler runs
/// the connection is not idle, so without this a client that stops halfway
/// through its body would hold its connection (and a slot of the cap) for
/// good.
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout(pub Duration);

/// Where no serve loop said otherwise.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The whole body of `request`, or 413 when it is (or says it is) larger
/// than `limit` bytes. A declared `Content-Length` over the limit is refused
/// before a byte is read; a body without one is cut off at the limit. A body
/// that stops arriving for the request's [`BodyTimeout`] gets 408.
pub async fn read_body<B>(request: Request<B>, limit: usize) -> Result<Bytes, HttpError>
where
    B: Body,
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
    let pace = request
        .extensions()
        .get::<BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
    let body = Limited::new(request.into_body(), limit);
    tokio::pin!(body);
    let mut collected = BytesMut::new();
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
            Ok(None) => return Ok(collected.freeze()),
            Ok(Some(frame)) => frame,
        };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    collected.put(data);
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::read_body;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, StatusCode};

    fn request(body: &'static [u8], declared: Option<usize>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder();
        if let Some(n) = declared {
            builder = builder.header("content-length", n);
        }
        builder.body(Full::new(Bytes::from_static(body))).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bodies_past_the_limit_are_refused() {
        let read = read_body(request(b"12345", None), 5).await;
        assert_eq!(read.unwrap(), Bytes::from_static(b"12345"));
        let read = read_body(request(b"123456", None), 5).await;
        assert_eq!(read.unwrap_err().0, StatusCode::PAYLOAD_TOO_LARGE);
        // The declared length alone is enough.
        let read = read_body(request(b"", Some(6)), 5).await;
        let err = read.unwrap_err();
        assert_eq!(err.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.1, "the body is larger than 5 bytes");
    }
}
