//! Streamed output: what a Doee writes with `ctx.write` reaches an HTTP
//! client while the Doee still runs (chunked, or Server-Sent Events), and
//! `isms invoke --follow`; the record keeps it all; a client that goes
//! away ends the invocation; where nobody streams, the pieces join the
//! output.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::Options;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// An HTTP/1.1 response read piece by piece, as a streaming client would.
struct Chunked {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
    /// Trailers, once the body ended.
    trailers: Vec<(String, String)>,
}

impl Chunked {
    fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Chunked {
        Chunked::send(url, headers, body, "TE: trailers\r\n")
    }

    /// A client that takes no trailers.
    fn post_without_te(url: &str) -> Chunked {
        Chunked::send(url, &[], b"", "")
    }

    fn send(url: &str, headers: &[(&str, &str)], body: &[u8], te: &str) -> Chunked {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n{te}",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut reader = BufReader::new(stream);
        let status = read_line(&mut reader)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = read_fields(&mut reader);
        Chunked {
            reader,
            status,
            headers,
            trailers: Vec::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of the body; `None` at its end. Panics if the body
    /// broke off (see [`Chunked::broke_off`]).
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let size = read_line(&mut self.reader);
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
            .unwrap_or_else(|_| panic!("the body broke off: {size:?}"));
        if size == 0 {
            self.trailers = read_fields(&mut self.reader);
            return None;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        data.truncate(size);
        Some(data)
    }

    /// Reads chunks until the text read so far contains `wanted`.
    fn until(&mut self, read: &mut String, wanted: &str) {
        while !read.contains(wanted) {
            let chunk = self
                .next_chunk()
                .unwrap_or_else(|| panic!("the body ended before {wanted:?}: {read:?}"));
            read.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The rest of the body.
    fn rest(&mut self, read: &mut String) {
        while let Some(chunk) = self.next_chunk() {
            read.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads chunks until the connection closes without the body's end;
    /// what came before.
    fn broke_off(&mut self) -> String {
        let mut read = String::new();
        loop {
            let size = read_line(&mut self.reader);
            match usize::from_str_radix(size.trim(), 16) {
                Ok(0) => panic!("the body ended normally after {read:?}"),
                Ok(size) => {
                    let mut data = vec![0; size + 2];
                    self.reader.read_exact(&mut data).unwrap();
                    read.push_str(&String::from_utf8_lossy(&data[..size]));
                }
                Err(_) => return read,
            }
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

fn read_fields(reader: &mut BufReader<TcpStream>) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    loop {
        let line = read_line(reader);
        let line = line.trim_end();
        if line.is_empty() {
            return fields;
        }
        let (name, value) = line.split_once(':').unwrap();
        fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

#[test]
fn pieces_reach_the_client_while_the_doee_runs() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "live"]);
    p.deploy_misbehave(
        "live",
        "stream",
        "stream",
        "[resources]\ntimeout_ms = 30000\n",
    );
    let url = format!("{}/live/stream", p.triggers);

    // Chunked: `first` is read while the Doee waits for the signal that
    // only comes after it was read, so it cannot have been buffered.
    let mut response = Chunked::post(&url, &[], b"GO_CHUNKED");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("content-length"), None);
    let id = response.header("x-isms-invocation-id").unwrap().to_string();
    let mut read = String::new();
    response.until(&mut read, "first\n");
    assert_eq!(read, "first\n");
    p.set_secret("live", "GO_CHUNKED", "go");
    response.rest(&mut read);
    assert_eq!(read, "first\nsecond\ndone\n");
    // The record keeps the whole output.
    let r = p.invocation(&id);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "first\nsecond\ndone\n");

    // Server-Sent Events when the client asks for them.
    let mut events = Chunked::post(&url, &[("Accept", "text/event-stream")], b"GO_EVENTS");
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let mut read = String::new();
    events.until(&mut read, "data: first\ndata: \n\n");
    p.set_secret("live", "GO_EVENTS", "go");
    events.rest(&mut read);
    assert!(
        read.starts_with(
            "data: first\ndata: \n\ndata: second\ndata: \n\ndata: done\ndata: \n\nevent: end\ndata: {"
        ),
        "{read}"
    );
    assert!(read.contains("\"status\":\"succeeded\""), "{read}");

    // `isms invoke --follow` prints `first` before the end, too.
    let mut follow = p
        .cli()
        .args(["invoke", "live/stream", "-d", "GO_FOLLOW", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    p.set_secret("live", "GO_FOLLOW", "go");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "second\ndone\n");
    assert!(follow.wait().unwrap().success());
}

#[test]
fn a_client_that_goes_away_ends_the_invocation() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "drip"]);
    p.deploy_misbehave("drip", "drip", "drip", "[resources]\ntimeout_ms = 60000\n");
    let url = format!("{}/drip/drip", p.triggers);
    let mut response = Chunked::post(&url, &[], b"");
    let id = response.header("x-isms-invocation-id").unwrap().to_string();
    let mut read = String::new();
    response.until(&mut read, "tick 1\n");
    let left = Instant::now();
    drop(response);
    let r = p.invocation(&id);
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("the client went away"),
        "{r}"
    );
    let took = left.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "stopped {took:?} after the client left, not at its 60 s timeout"
    );

    p.deploy_misbehave_with(
        "drip",
        "short",
        "drip",
        "count = \"2\"\nevery_ms = \"10\"\n",
        "",
    );
    // A failure after the first piece: the status went with it, so the
    // end says so: an error event, a trailer, or a body that breaks off.
    p.deploy_misbehave_with(
        "drip",
        "dry",
        "drip",
        "count = \"2\"\nevery_ms = \"10\"\nfail = \"yes\"\n",
        "",
    );
    let dry = format!("{}/drip/dry", p.triggers);
    let mut events = Chunked::post(&dry, &[("Accept", "text/event-stream")], b"");
    let mut read = String::new();
    events.rest(&mut read);
    assert!(
        read.contains("event: error\ndata: {") && read.contains("dripped dry"),
        "{read}"
    );
    let mut trailed = Chunked::post(&dry, &[], b"");
    assert_eq!(trailed.header("trailer"), Some("x-isms-error"));
    let mut read = String::new();
    trailed.rest(&mut read);
    assert_eq!(read, "tick 0\ntick 1\n");
    assert!(
        trailed
            .trailers
            .iter()
            .any(|(name, value)| name == "x-isms-error" && value.contains("dripped dry")),
        "{:?}",
        trailed.trailers
    );
    let mut bare = Chunked::post_without_te(&dry);
    assert_eq!(bare.broke_off(), "tick 0\ntick 1\n");
    // The CLI's --follow says so too.
    let follow = p.try_run(&["invoke", "drip/dry", "--follow"]);
    assert!(!follow.status.success());
    assert!(
        String::from_utf8_lossy(&follow.stderr).contains("dripped dry"),
        "{}",
        String::from_utf8_lossy(&follow.stderr)
    );

    // Where nobody streams (a chain), the pieces join the output.
    p.deploy_misbehave_with("drip", "caller", "chain", "call = \"short\"\n", "");
    let r = p.trigger("/drip/caller", b"x");
    assert_eq!(
        (r.status, r.text()),
        (200, "caller(tick 0\ntick 1\nend)".to_string())
    );
    // And an HTTP client of `short` gets them as pieces, then the end.
    let mut response = Chunked::post(&format!("{}/drip/short", p.triggers), &[], b"");
    let mut read = String::new();
    response.rest(&mut read);
    assert_eq!(read, "tick 0\ntick 1\nend");
}
