//! The CommServer: turns HTTP requests into Doee invocations.
//!
//! `POST http://<http_addr>/<project>/<route>` becomes an `Invoke` through
//! the kernel; the Doee's output, status and headers become the response.
//! Routes come from Resadmin and are reloaded when a deploy, rollback or
//! delete changes them.

pub mod http;
pub mod routes;

use isms_ipc::{Connection, Event, Inbound, Incoming};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the CommServer runs.
#[derive(Clone, Debug)]
pub struct CommServerConfig {
    /// Where HTTP triggers are served.
    pub http_addr: SocketAddr,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Time an invocation may wait in queues, on top of the Doee's timeout.
    pub queue_allowance: Duration,
}

/// The capacity the CommServer registers with (it serves no requests yet).
pub const CAPACITY: u32 = 16;

/// The CommServer with its HTTP port bound, ready to join the kernel.
pub struct Prepared {
    config: CommServerConfig,
    listener: tokio::net::TcpListener,
}

/// Binds the HTTP port, so a port in use fails before the CommServer tells
/// the kernel it is up.
pub async fn prepare(config: CommServerConfig) -> anyhow::Result<Prepared> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for HTTP triggers on {}: {e}",
                config.http_addr
            )
        })?;
    tracing::info!(addr = %config.http_addr, "HTTP triggers listening");
    Ok(Prepared { config, listener })
}

impl Prepared {
    /// Serves HTTP triggers until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        mut incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Prepared { config, listener } = self;
        let routes = Arc::new(routes::Routes::default());
        let server = http::Server::new(config, conn.clone(), routes.clone());
        let reloads = routes.clone().keep_loaded(conn.clone());
        tokio::pin!(shutdown);
        tokio::pin!(reloads);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = &mut reloads => anyhow::bail!("the route loader stopped"),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => server.serve(stream),
                    Err(err) => {
                        tracing::warn!(cause = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                inbound = incoming.next() => match inbound {
                    Some(Inbound::Event(Event::DeploymentsChanged { project })) => {
                        tracing::debug!(%project, "routes changed");
                        routes.request_reload();
                    }
                    Some(Inbound::Request(delivery)) => {
                        delivery.responder.reply(Err(isms_ipc::Failure::invalid("the CommServer takes no requests yet")));
                    }
                                    None => anyhow::bail!("lost the kernel"),
                },
            }
        }
    }
}
