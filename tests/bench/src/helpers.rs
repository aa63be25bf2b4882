//! The processes the benchmark runs beside the platform: a bare hyper
//! server (the baseline of `http-warm`) and a service that answers every
//! invocation at once (the far end of `kernel`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use isms_ipc::doer::{Outcome, Response as DoeeResponse};
use isms_ipc::{Connection, Endpoint, Inbound, Registration, Reply, ServiceKind};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Serves `body` to every request on 127.0.0.1:`port`, the way the
/// CommServer's HTTP side is built (one current-thread runtime).
pub fn bare_server(port: u16, body: String) -> anyhow::Result<()> {
    runtime().block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let body = Bytes::from(body);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Echoes 64-byte blocks on a Unix socket until it closes.
pub fn handoff_echo(socket: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    let mut buf = [0u8; 64];
    while stream.read_exact(&mut buf).is_ok() {
        stream.write_all(&buf)?;
    }
    Ok(())
}

/// Registers as a Doer and answers every invocation with its input.
pub fn kernel_echo(endpoint: &str) -> anyhow::Result<()> {
    let endpoint: Endpoint = endpoint.parse().map_err(anyhow::Error::msg)?;
    runtime().block_on(async move {
        let registration = Registration {
            service: ServiceKind::Doer,
            instance: "bench-echo".into(),
            pid: std::process::id(),
            capacity: 1024,
            host: "bench".into(),
            labels: Vec::new(),
        };
        let (_conn, mut incoming) =
            Connection::connect(&endpoint, None, registration, Duration::from_secs(10)).await?;
        while let Some(inbound) = incoming.next().await {
            if let Inbound::Request(delivery) = inbound {
                let input = match delivery.request {
                    isms_ipc::Request::Doer(isms_ipc::doer::Request::Invoke(invoke)) => {
                        invoke.input
                    }
                    _ => Bytes::new(),
                };
                let outcome = Outcome {
                    result: Ok(DoeeResponse {
                        status: None,
                        headers: Vec::new(),
                        body: input,
                    }),
                    logs: Vec::new(),
                    cold_start: false,
                    run_us: 0,
                };
                delivery
                    .responder
                    .reply(Ok(Reply::Doer(isms_ipc::doer::Reply::Invoke(outcome))));
            }
        }
        Ok(())
    })
}
