//! A small HTTP/1.1 client for the CLI and the tests: one request per
//! connection, `http://` only (the Control Gate listens on loopback or
//! behind the operator's TLS proxy).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("the server answered something other than JSON: {e}"))
    }

    /// The `error` of a JSON error body, or the body itself.
    pub fn error_message(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| {
                let text = self.text();
                if text.trim().is_empty() {
                    format!("HTTP {}", self.status)
                } else {
                    text.trim().to_string()
                }
            })
    }
}

/// Splits `http://host:port/path` into the address and the path.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((address, path.to_string()))
}

/// Opens an HTTP/1.1 connection for one request.
async fn connect(
    address: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot reach {address}: {e} (is `isms up` running?)"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot talk to {address}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request.
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<Response, String> {
    let (address, path) = split_url(url)?;
    let exchange = async {
        let mut sender = connect(&address).await?;
        let mut builder = Request::builder()
            .method(method)
            .uri(&path)
            .header(header::HOST, &address);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).map_err(|e| e.to_string())?,
            );
        }
        let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the request to {address} failed: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "{url} did not answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
}

/// What to send for [`stream`]: GET for Server-Sent Events, or a POST
/// whose answer streams (an invocation's pieces).
pub struct StreamRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The body.
    pub body: Bytes,
    /// The `Accept` header.
    pub accept: &'static str,
    /// Other headers.
    pub extra: &'a [(&'a str, String)],
}

impl StreamRequest<'_> {
    /// A GET of Server-Sent Events.
    pub fn events() -> StreamRequest<'static> {
        StreamRequest {
            method: "GET",
            body: Bytes::new(),
            accept: "text/event-stream",
            extra: &[],
        }
    }
}

/// Sends a request whose answer streams, handing each chunk of the body to
/// `on_chunk` as it arrives, until the server ends it or `on_chunk` answers
/// `false`. A non-2xx answer is returned whole instead; a trailer
/// `x-isms-error` (a streamed invocation that failed) is an error.
pub async fn stream(
    url: &str,
    token: Option<&str>,
    what: StreamRequest<'_>,
    mut on_chunk: impl FnMut(&[u8]) -> bool,
) -> Result<Option<Response>, String> {
    let (address, path) = split_url(url)?;
    let mut sender = connect(&address).await?;
    let mut builder = Request::builder()
        .method(what.method)
        .uri(&path)
        .header(header::HOST, &address)
        .header(header::ACCEPT, what.accept)
        .header(header::TE, "trailers");
    let extra = what.extra;
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in extra {
        builder = builder.header(*name, value);
    }
    let request = builder
        .body(Full::new(what.body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request to {address} failed: {e}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    if !(200..300).contains(&status) {
        let body = body
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?
            .to_bytes();
        return Ok(Some(Response {
            status,
            headers,
            body,
        }));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
        if let Some(data) = frame.data_ref()
            && !on_chunk(data)
        {
            break;
        }
        if let Some(error) = frame
            .trailers_ref()
            .and_then(|trailers| trailers.get("x-isms-error"))
        {
            return Err(error.to_str().unwrap_or("failed").to_string());
        }
    }
    Ok(None)
}

/// The status of a GET, or `None` if nothing answered.
pub async fn get_status(url: &str) -> Option<u16> {
    let attempt = request("GET", url, None, None, Bytes::new());
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(response)) => Some(response.status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:7780/api").unwrap(),
            ("127.0.0.1:7780".into(), "/api".into())
        );
        assert_eq!(
            split_url("http://localhost").unwrap(),
            ("localhost:80".into(), "/".into())
        );
        assert!(split_url("https://x").is_err());
    }
}
