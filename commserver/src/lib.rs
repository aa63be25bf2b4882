//! The CommServer: turns HTTP requests and MQTT messages into Doee
//! invocations, and publishes what Doees publish.
//!
//! `POST http://<http_addr>/<project>/<route>` becomes an `Invoke` through
//! the kernel; the Doee's output, status and headers become the response.
//! MQTT messages on a trigger's filter are recorded in an inbox, then run
//! (see [`mqtt`]). Schedules fire at their moments (see [`schedules`]).
//! Triggers come from Resadmin and are reloaded when a
//! deploy, rollback or delete changes them.

pub mod broker;
pub mod http;
pub mod inbox;
pub mod mqtt;
pub mod pipeline;
pub mod routes;
pub mod schedules;
pub mod store;

use inbox::Inbox;
use isms_ipc::commserver::Request;
use isms_ipc::{Connection, Delivery, Event, Failure, Inbound, Incoming};
use mqtt::queue::JobQueue;
use mqtt::{Door, Triggers};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the CommServer runs.
#[derive(Clone, Debug)]
pub struct CommServerConfig {
    /// Where HTTP triggers are served.
    pub http_addr: SocketAddr,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Timeouts and the connection cap of the trigger port.
    pub http: isms_http::Limits,
    /// Time an invocation may wait in queues, on top of the Doee's timeout.
    pub queue_allowance: Duration,
    /// MQTT: the front door, the triggers and their store.
    pub mqtt: MqttConfig,
}

/// MQTT's side of the CommServer.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// The store file (inbox, sessions, retained messages).
    pub store: PathBuf,
    /// Where messages come from.
    pub door: DoorConfig,
    /// The inbox shared with other CommServers, if any (an external
    /// broker only); in the store file otherwise.
    pub shared_inbox: Option<inbox::SharedConfig>,
    /// How triggers run.
    pub triggers: mqtt::TriggerConfig,
    /// Jobs recorded and not yet settled past which no more messages are
    /// acknowledged.
    pub max_pending: usize,
}

/// The embedded broker, or an external one.
#[derive(Clone, Debug)]
pub enum DoorConfig {
    /// The broker in this process.
    Embedded(broker::BrokerConfig),
    /// A client of an external broker.
    External(mqtt::external::ExternalConfig),
}

/// The capacity the CommServer registers with.
pub const CAPACITY: u32 = 16;

/// The CommServer with its ports bound and its store open, ready to join
/// the kernel.
pub struct Prepared {
    config: CommServerConfig,
    listener: tokio::net::TcpListener,
    routes: Arc<routes::Routes>,
    inbox: Inbox,
    jobs: Arc<JobQueue>,
    broker: Option<broker::Broker>,
}

/// Binds the HTTP port (and the broker's), and opens the store, so a port
/// in use fails before the CommServer tells the kernel it is up.
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
    let (store, mut waiting) = store::Store::open(&config.mqtt.store).await?;
    let inbox = match &config.mqtt.shared_inbox {
        None => Inbox::Local(store.clone()),
        Some(shared) => {
            let (shared, own) = inbox::Shared::open(shared).await?;
            tracing::info!("MQTT inbox shared in PostgreSQL");
            // What this CommServer kept in its own inbox before moves in.
            if !waiting.is_empty() {
                let local: Vec<u64> = waiting.iter().map(|job| job.id).collect();
                waiting = shared
                    .record(waiting.into_iter().map(store::NewJob::from).collect())
                    .await?;
                for id in local {
                    store.done(id);
                }
                tracing::info!(
                    messages = waiting.len(),
                    "moved MQTT messages from the local inbox to the shared one"
                );
            }
            waiting.extend(own);
            Inbox::Shared(shared)
        }
    };
    if !waiting.is_empty() {
        tracing::info!(
            messages = waiting.len(),
            "MQTT messages recorded before a stop run now"
        );
    }
    let jobs = Arc::new(JobQueue::new(config.mqtt.max_pending));
    jobs.recorded(waiting);
    let routes = Arc::new(routes::Routes::default());
    let broker = match &config.mqtt.door {
        DoorConfig::Embedded(broker_config) => Some(
            broker::Broker::bind(
                broker_config.clone(),
                store.clone(),
                routes.clone(),
                jobs.clone(),
            )
            .await?,
        ),
        DoorConfig::External(_) => None,
    };
    Ok(Prepared {
        config,
        listener,
        routes,
        inbox,
        jobs,
        broker,
    })
}

impl Prepared {
    /// Serves HTTP and MQTT until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        mut incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Prepared {
            config,
            listener,
            routes,
            inbox,
            jobs,
            broker,
        } = self;
        if let Inbox::Shared(shared) = &inbox {
            tokio::spawn(shared.clone().keep_leases(jobs.clone()));
        }
        let (door, door_runs): (Door, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) =
            match (broker, &config.mqtt.door) {
                (Some(broker), _) => {
                    let handle = broker.handle();
                    let rights = watch_rights(routes.clone(), handle.clone());
                    let runs = broker.run(conn.clone());
                    (
                        Door::Embedded(handle),
                        Box::pin(async move {
                            tokio::join!(runs, rights);
                        }),
                    )
                }
                (None, DoorConfig::External(external)) => {
                    let (client, eventloop) = mqtt::external::Client::new(external.clone())?;
                    let runs =
                        client
                            .clone()
                            .run(eventloop, routes.clone(), inbox.clone(), jobs.clone());
                    (Door::External(client), Box::pin(runs))
                }
                (None, DoorConfig::Embedded(_)) => anyhow::bail!("the broker was not bound"),
            };
        let triggers = Arc::new(Triggers::new(
            config.mqtt.triggers.clone(),
            conn.clone(),
            routes.clone(),
            inbox,
            jobs,
            door,
        ));
        let limits = config.http;
        let queue_allowance = config.queue_allowance;
        let server = http::Server::new(config, conn.clone(), routes.clone());
        let http = isms_http::serve(listener, limits, Arc::new(server));
        let reloads = routes.clone().keep_loaded(conn.clone());
        let dispatch = triggers.clone().dispatch();
        let schedules = schedules::keep_firing(routes.clone(), conn.clone(), queue_allowance);
        tokio::pin!(shutdown);
        tokio::pin!(schedules);
        tokio::pin!(reloads);
        tokio::pin!(dispatch);
        tokio::pin!(http);
        let mut door_runs = door_runs;
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = &mut reloads => anyhow::bail!("the route loader stopped"),
                () = &mut door_runs => anyhow::bail!("MQTT stopped"),
                () = &mut dispatch => anyhow::bail!("the MQTT dispatcher stopped"),
                () = &mut schedules => anyhow::bail!("the schedules stopped"),
                () = &mut http => anyhow::bail!("the HTTP server stopped"),
                inbound = incoming.next() => match inbound {
                    Some(Inbound::Event(Event::DeploymentsChanged { project })) => {
                        tracing::debug!(%project, "routes changed");
                        routes.request_reload();
                    }
                    Some(Inbound::Event(Event::DeviceRevoked { project, device })) => {
                        if let Door::Embedded(broker) = triggers.door() {
                            broker.revoke(project, device).await;
                        }
                    }
                    Some(
                        Inbound::Event(_)
                        | Inbound::Claimed { .. }
                        | Inbound::Pull(_)
                        | Inbound::Cancel(_),
                    ) => {}
                    Some(Inbound::Request(delivery)) => {
                        let triggers = triggers.clone();
                        tokio::spawn(async move { answer(&triggers, delivery).await });
                    }
                    None => anyhow::bail!("lost the kernel"),
                },
            }
        }
    }
}

/// Each new trigger table (grants may have changed) makes the broker
/// check its devices' subscriptions again.
async fn watch_rights(routes: Arc<routes::Routes>, broker: broker::Handle) {
    let mut changes = routes.changes();
    while changes.changed().await.is_ok() {
        broker.routes_changed().await;
    }
}

/// Answers a request: publishing from Doees (through the Doer), dead
/// letters and counters (for the Control Gate).
async fn answer(triggers: &Triggers, delivery: Delivery) {
    let Delivery {
        envelope,
        request,
        responder,
    } = delivery;
    let isms_ipc::Request::CommServer(request) = request else {
        responder.reply(Err(Failure::invalid("not a CommServer request")));
        return;
    };
    use isms_ipc::commserver::Reply as R;
    let project = envelope
        .project
        .clone()
        .ok_or_else(|| Failure::invalid("this request needs a project"));
    let result = match (request, project) {
        (Request::Stats(_), _) => Ok(R::Stats(triggers.stats().await)),
        (_, Err(failure)) => Err(failure),
        (Request::Publish(r), Ok(project)) => triggers
            .publish(&project, &r.topic, r.payload)
            .await
            .map(R::Publish),
        (Request::DeadLetters(r), Ok(project)) => triggers
            .inbox()
            .dead_letters(&project, r.limit)
            .await
            .map(R::DeadLetters)
            .map_err(Failure::internal),
        (Request::RetryDeadLetters(r), Ok(project)) => triggers
            .retry_dead(&project, r.ids)
            .await
            .map(R::RetryDeadLetters)
            .map_err(Failure::internal),
        (Request::PurgeDeadLetters(r), Ok(project)) => triggers
            .inbox()
            .purge(&project, r.ids)
            .await
            .map(R::PurgeDeadLetters)
            .map_err(Failure::internal),
    };
    responder.reply(result.map(isms_ipc::Reply::CommServer));
}
