//! The Control Gate: the REST API, `/metrics` and the web dashboard.
//!
//! Every endpoint is in one table ([`routes::ROUTES`]) with what its caller
//! needs; before acting, the Gate asks Resadmin to `Authorize` the bearer
//! token for that need, so a refused call changes nothing. The router does
//! that and hands the request to its handler (one file per resource under
//! `handlers/`); serving HTTP is [`isms_http`]'s, shared with the trigger
//! port.

pub mod api;
pub mod dashboard;
mod handlers;
mod metrics;
mod reply;
mod request;
mod router;
pub mod routes;
mod sse;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::Request;
use hyper::body::Incoming as Body;
use isms_ipc::{Connection, Failure, Inbound, Incoming};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// How the Control Gate runs.
#[derive(Clone, Debug)]
pub struct ControlGateConfig {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The largest upload (a Doee archive) accepted.
    pub max_upload_bytes: usize,
    /// Timeouts and the connection cap of the API's port.
    pub http: isms_http::Limits,
    /// The web dashboard's files and what it shows of the platform.
    pub dashboard: dashboard::Dashboard,
    /// A bearer token that shows `/metrics` whole, for Prometheus.
    pub metrics_token: Option<String>,
}

/// The capacity the Control Gate registers with (it serves no requests).
pub const CAPACITY: u32 = 16;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The Control Gate with its port bound, ready to join the kernel.
pub struct Prepared {
    config: ControlGateConfig,
    listener: tokio::net::TcpListener,
}

/// Binds the API's port, so a port in use fails before the Control Gate
/// tells the kernel it is up.
pub async fn prepare(config: ControlGateConfig) -> anyhow::Result<Prepared> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the API on {}: {e}", config.addr))?;
    tracing::info!(addr = %config.addr, "Control Gate listening");
    if let Some(dir) = &config.dashboard.dir {
        tracing::warn!(dir = %dir.display(), "serving the dashboard's files from a directory, not the built-in copies");
    }
    Ok(Prepared { config, listener })
}

impl Prepared {
    /// Serves the API until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        mut incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Prepared { config, listener } = self;
        let limits = config.http;
        let http = isms_http::serve(listener, limits, Arc::new(Gate { config, conn }));
        tokio::pin!(shutdown);
        tokio::pin!(http);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = &mut http => anyhow::bail!("the API's server stopped"),
                inbound = incoming.next() => match inbound {
                    Some(Inbound::Request(delivery)) => {
                        delivery.responder.reply(Err(Failure::invalid("the Control Gate takes no requests")));
                    }
                    Some(
                        Inbound::Event(_)
                        | Inbound::Claimed { .. }
                        | Inbound::Pull(_)
                        | Inbound::Cancel(_),
                    ) => {}
                    None => anyhow::bail!("lost the kernel"),
                },
            }
        }
    }
}

/// What every handler shares: the configuration and the kernel.
struct Gate {
    config: ControlGateConfig,
    conn: Connection,
}

impl isms_http::Handler for Gate {
    type Body = BoxBody<Bytes, reply::BodyError>;

    async fn handle(&self, request: Request<Body>) -> reply::Reply {
        match self.route(request).await {
            Ok(reply) => reply,
            Err(err) => reply::error_reply(err),
        }
    }
}
