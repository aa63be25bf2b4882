//! A blocking HTTP/1.1 client for tests: one request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to an `http://host:port/path` URL.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Sends one request; `Err` if the connection fails.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    reader.read_to_end(&mut body)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// POSTs to a Doee that echoes its input, each from a thread of its own,
/// at once: what [`Echoes::unavailable`] settles.
pub struct Echoes(Vec<std::thread::JoinHandle<(String, Response)>>);

impl Echoes {
    /// Sends each of `inputs` to `url`.
    pub fn send(url: &str, inputs: impl IntoIterator<Item = String>) -> Echoes {
        Echoes(
            inputs
                .into_iter()
                .map(|input| {
                    let url = url.to_string();
                    std::thread::spawn(move || {
                        let r = request("POST", &url, &[], input.as_bytes());
                        (input, r)
                    })
                })
                .collect(),
        )
    }

    /// Waits for every answer: each is its input echoed (200) or 503 (its
    /// Doer was lost); anything else fails. How many were 503.
    pub fn unavailable(self) -> usize {
        let mut unavailable = 0;
        for call in self.0 {
            let (input, r) = call.join().unwrap();
            match r.status {
                200 => assert_eq!(r.text(), input),
                503 => unavailable += 1,
                other => panic!("{input}: {other} {}", r.text()),
            }
        }
        unavailable
    }
}
