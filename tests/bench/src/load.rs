//! The HTTP load generator used against the platform and the bare server
//! alike, so their figures compare: keep-alive HTTP/1.1 connections, each
//! sending its next request as soon as the last one is answered.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a run measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Requests answered with the expected status in the window.
    pub ok: u64,
    /// Other answers or failed requests in the window.
    pub errors: u64,
    /// The window's length.
    pub window: Duration,
    /// Latency of every successful request in the window, µs.
    pub latencies_us: Vec<u32>,
}

impl Measured {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// A latency percentile (0–100), µs.
    pub fn percentile(&mut self, p: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        self.latencies_us.sort_unstable();
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank.min(self.latencies_us.len() - 1)]
    }
}

/// POSTs `body` to `path` on `addr` over `connections` connections: `warmup`
/// unmeasured, then `window` measured.
pub async fn drive(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> Measured {
    let start = Instant::now() + warmup;
    let end = start + window;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (path, body) = (path.to_string(), body.clone());
            tokio::spawn(async move { connection(addr, path, body, start, end).await })
        })
        .collect();
    let mut total = Measured {
        window,
        ..Measured::default()
    };
    for task in tasks {
        if let Ok(part) = task.await {
            total.ok += part.ok;
            total.errors += part.errors;
            total.latencies_us.extend(part.latencies_us);
        }
    }
    total
}

async fn connection(
    addr: SocketAddr,
    path: String,
    body: Bytes,
    start: Instant,
    end: Instant,
) -> Measured {
    let mut measured = Measured::default();
    let mut sender = None;
    while Instant::now() < end {
        if sender.is_none() {
            sender = connect(addr).await;
            if sender.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some(client) = sender.as_mut() else {
            continue;
        };
        let request = Request::post(path.as_str())
            .header("host", addr.to_string())
            .body(Full::new(body.clone()));
        let Ok(request) = request else { break };
        let sent = Instant::now();
        let answered = match client.send_request(request).await {
            Ok(response) => {
                let ok = response.status() == 200;
                let read = response.into_body().collect().await.is_ok();
                ok && read
            }
            Err(_) => {
                sender = None;
                false
            }
        };
        let done = Instant::now();
        if sent >= start && done <= end {
            if answered {
                measured.ok += 1;
                measured
                    .latencies_us
                    .push((done - sent).as_micros().min(u128::from(u32::MAX)) as u32);
            } else {
                measured.errors += 1;
            }
        }
    }
    measured
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}
