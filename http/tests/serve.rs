//! The serve loop's guards, against real sockets on loopback.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use isms_http::{Handler, Limits, serve};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Hello;

impl Handler for Hello {
    type Body = Full<Bytes>;

    /// `/big` answers more than a socket buffers; anything else "hello".
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = if request.uri().path() == "/big" {
            Bytes::from(vec![b'x'; 64 << 20])
        } else {
            Bytes::from_static(b"hello")
        };
        Response::new(Full::new(body))
    }
}

async fn start(limits: Limits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, limits, Arc::new(Hello)));
    addr
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

/// Reads until the response's body has come, or `None` after `wait`.
async fn response(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(wait, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_that_sends_half_a_head_is_disconnected() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let addr = start(limits).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!String::from_utf8_lossy(&rest).contains("hello"));

    // A client that sends its head in time is answered.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    let answer = response(&mut client, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "current_thread")]
async fn at_the_cap_a_new_connection_waits_for_one_to_close() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let addr = start(limits).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(REQUEST).await.unwrap();
    assert!(response(&mut first, Duration::from_secs(5)).await.is_some());

    // Connected through the listen backlog, but not served while the
    // first connection stays open.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(REQUEST).await.unwrap();
    assert!(
        response(&mut second, Duration::from_millis(500))
            .await
            .is_none()
    );

    drop(first);
    let answer = response(&mut second, Duration::from_secs(5)).await;
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_that_stops_reading_is_closed_when_idle() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        max_connections: 1,
        ..Limits::default()
    };
    let addr = start(limits).await;
    // Asks for more than the socket buffers hold, and never reads it.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();

    // The only slot frees once the stalled connection is closed as idle.
    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(REQUEST).await.unwrap();
    let answer = response(&mut next, Duration::from_secs(5)).await;
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    drop(stalled);
}

/// Reads its body, then answers how long it was.
struct Reader;

impl Handler for Reader {
    type Body = Full<Bytes>;

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match isms_http::read_body(request, 1 << 20, Duration::from_millis(300)).await {
            Ok(body) => Response::new(Full::new(Bytes::from(format!("read {}", body.len())))),
            Err(err) => err.reply(),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_body_that_stops_arriving_is_answered_408_and_frees_its_slot() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, limits, Arc::new(Reader)));

    // Ten bytes of a hundred, then nothing: the only slot is taken.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the stalled connection is still open after 5 s"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the body stopped arriving"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // The slot is free again: a whole body is read.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("read 5"),
        "{answer}"
    );
}
