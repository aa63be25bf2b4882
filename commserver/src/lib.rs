//! The CommServer: turns HTTP requests and MQTT messages into Doee
//! invocations, and publishes what Doees publish.
//!
//! `POST http://<http_addr>/<project>/<route>` becomes an `Invoke` through
//! the kernel; the Doee's output, status and headers become the response.
//! MQTT messages on a trigger's filter are recorded in an inbox, then run
//! (see [`mqtt`]). Triggers come from Resadmin and are reloaded when a
//! deploy, rollback or delete changes them.

pub mod http;
pub mod inbox;
pub mod mqtt;
pub mod routes;

use isms_ipc::commserver::Request;
use isms_ipc::{Connection, Delivery, Event, Failure, Inbound, Incoming};
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
    /// The broker and the inbox.
    pub mqtt: mqtt::MqttConfig,
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
        let (mqtt, eventloop) =
            mqtt::Mqtt::start(config.mqtt.clone(), conn.clone(), routes.clone()).await?;
        let server = http::Server::new(config, conn.clone(), routes.clone());
        let reloads = routes.clone().keep_loaded(conn.clone());
        let messages = mqtt.clone().run(eventloop);
        tokio::pin!(shutdown);
        tokio::pin!(reloads);
        tokio::pin!(messages);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = &mut reloads => anyhow::bail!("the route loader stopped"),
                () = &mut messages => anyhow::bail!("the MQTT client stopped"),
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
                    Some(Inbound::Event(_)) => {}
                    Some(Inbound::Request(delivery)) => {
                        let mqtt = mqtt.clone();
                        tokio::spawn(async move { answer(&mqtt, delivery).await });
                    }
                    None => anyhow::bail!("lost the kernel"),
                },
            }
        }
    }
}

/// Answers a request: publishing from Doees (through the Doer), dead
/// letters and counters (for the Control Gate).
async fn answer(mqtt: &mqtt::Mqtt, delivery: Delivery) {
    let Delivery {
        envelope,
        request,
        responder,
    } = delivery;
    let isms_ipc::Request::CommServer(request) = request else {
        responder.reply(Err(Failure::invalid("not a CommServer request")));
        return;
    };
    use isms_ipc::ServiceKind as S;
    use isms_ipc::commserver::Reply as R;
    let allowed: &[S] = match &request {
        Request::Publish(_) => &[S::Doer],
        Request::DeadLetters(_) | Request::Stats(_) => &[S::ControlGate],
    };
    if !allowed.contains(&envelope.origin) {
        responder.reply(Err(Failure::new(
            isms_ipc::FailureKind::Forbidden,
            format!("the {} may not ask {}", envelope.origin, request.name()),
        )));
        return;
    }
    let project = || {
        envelope
            .project
            .clone()
            .ok_or_else(|| Failure::invalid("this request needs a project"))
    };
    let result = match request {
        Request::Publish(r) => match project() {
            Ok(project) => mqtt
                .publish(&project, &r.topic, r.payload)
                .await
                .map(R::Publish),
            Err(failure) => Err(failure),
        },
        Request::DeadLetters(r) => match project() {
            Ok(project) => mqtt
                .inbox()
                .dead_letters(&project, r.limit)
                .await
                .map(R::DeadLetters)
                .map_err(Failure::internal),
            Err(failure) => Err(failure),
        },
        Request::Stats(_) => Ok(R::Stats(mqtt.stats().await)),
    };
    responder.reply(result.map(isms_ipc::Reply::CommServer));
}
