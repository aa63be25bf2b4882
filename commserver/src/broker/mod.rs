//! The embedded MQTT broker: devices' front door when no external broker
//! is configured, in the CommServer's own process, so a trigger's message
//! is recorded before its device hears PUBACK.
//!
//! - [`codec`]: MQTT 3.1.1 and 5.0 packets through rumqttc's codecs.
//! - [`connection`]: one client's socket (TCP or TLS), its CONNECT, its
//!   credentials, keep-alive and bounded reading and writing.
//! - [`router`]: the state, one task: sessions, subscriptions, retained
//!   messages, wills, deliveries, and the commits they wait for.
//!
//! Devices sign in with credentials the platform manages per project
//! (Resadmin checks them) and may publish and subscribe only inside their
//! project's topic namespaces; anonymous clients only if
//! `commserver.mqtt_anonymous` allows them, and only from loopback.

pub mod codec;
mod connection;
pub mod router;

use crate::mqtt::queue::JobQueue;
use crate::routes::Routes;
use crate::store::Store;
use anyhow::Context as _;
use codec::{Connect, Message, Out};
use isms_ipc::{DeviceName, ProjectName, topic};
use router::{ConnId, Input, Limits, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How the embedded broker runs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where devices connect, plain MQTT.
    pub addr: SocketAddr,
    /// MQTT over TLS, if configured.
    pub tls: Option<TlsListener>,
    /// Whether clients without credentials are let in (from loopback only).
    pub anonymous: bool,
    /// Bounds.
    pub limits: Limits,
}

/// `mqtts://`: a port and the certificate it shows.
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// Where.
    pub addr: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Who a client is, as its credentials say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No credentials, from loopback, where the configuration allows it:
    /// every topic but the broker's own.
    Anonymous,
    /// A device of a project: its namespaces only.
    Device {
        /// The project.
        project: ProjectName,
        /// The device.
        device: DeviceName,
    },
}

impl Identity {
    /// The key of its session named `client_id`: sessions of different
    /// devices never meet, whatever ids they choose.
    pub fn session_key(&self, client_id: &str) -> String {
        match self {
            Identity::Anonymous => format!("anonymous|{client_id}"),
            Identity::Device { project, device } => {
                format!("device|{project}/{device}|{client_id}")
            }
        }
    }

    /// The identity a session key names.
    pub fn from_key(key: &str) -> Option<Identity> {
        let mut parts = key.splitn(3, '|');
        match (parts.next()?, parts.next()?) {
            ("anonymous", _) => Some(Identity::Anonymous),
            ("device", owner) => {
                let (project, device) = owner.split_once('/')?;
                Some(Identity::Device {
                    project: ProjectName::new(project).ok()?,
                    device: DeviceName::new(device).ok()?,
                })
            }
            _ => None,
        }
    }

    /// Whether it may publish on `topic`.
    pub fn may_publish(&self, routes: &Routes, topic: &str) -> bool {
        self.inside(routes, topic)
    }

    /// Whether it may subscribe to `filter`.
    pub fn may_subscribe(&self, routes: &Routes, filter: &str) -> bool {
        self.inside(routes, filter)
    }

    fn inside(&self, routes: &Routes, filter: &str) -> bool {
        match self {
            Identity::Anonymous => true,
            Identity::Device { project, .. } => routes
                .namespaces(project)
                .is_some_and(|namespaces| topic::allowed(&namespaces, filter)),
        }
    }
}

/// A connection that passed its CONNECT and credentials.
pub struct Connected {
    /// Its number.
    pub id: ConnId,
    /// What it asked for.
    pub connect: Connect,
    /// Who it is.
    pub identity: Identity,
    /// What to send it.
    pub outbox: mpsc::Sender<Out>,
}

/// The broker's counters.
#[derive(Default)]
pub struct Stats {
    /// Connected clients.
    pub clients: AtomicU64,
    /// Sessions, connected or kept.
    pub sessions: AtomicU64,
    /// Retained messages.
    pub retained: AtomicU64,
    /// PUBLISHes received from clients.
    pub received: AtomicU64,
    /// QoS 1 and 2 PUBLISHes acknowledged, once durable where they must be.
    pub acknowledged: AtomicU64,
    /// Deliveries sent.
    pub delivered: AtomicU64,
    /// Deliveries dropped.
    pub dropped: AtomicU64,
    /// Connections, subscriptions and publishes refused for their rights.
    pub refused: AtomicU64,
    /// Clients disconnected for not reading.
    pub slow: AtomicU64,
}

/// The running broker's handle.
#[derive(Clone)]
pub struct Handle {
    input: mpsc::Sender<Input>,
    stats: Arc<Stats>,
}

impl Handle {
    /// Publishes for the platform (a Doee's message, a reply); returns once
    /// it is durable wherever it must be (queued for persistent sessions,
    /// recorded for triggers).
    pub async fn publish(&self, message: Message) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.input
            .send(Input::Publish(message, tx))
            .await
            .map_err(|_| "the broker stopped".to_string())?;
        rx.await.map_err(|_| "the broker stopped".to_string())?
    }

    /// A device's credentials were revoked (`None`: a whole project's).
    pub async fn revoke(&self, project: ProjectName, device: Option<DeviceName>) {
        let _ = self
            .input
            .send(Input::Revoke(project, device.map(String::from)))
            .await;
    }

    /// The triggers or namespaces changed.
    pub async fn routes_changed(&self) {
        let _ = self.input.send(Input::RoutesChanged).await;
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The broker, its ports bound.
pub struct Broker {
    config: BrokerConfig,
    plain: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    router: Router,
    input: mpsc::Receiver<Input>,
    handle: Handle,
    jobs: Arc<JobQueue>,
    routes: Arc<Routes>,
}

/// Router inputs waiting at most; past it, connections wait to be read.
const INPUT_BACKLOG: usize = 8192;

impl Broker {
    /// Binds the ports (a port in use fails here) and loads the saved state.
    pub async fn bind(
        config: BrokerConfig,
        store: Store,
        routes: Arc<Routes>,
        jobs: Arc<JobQueue>,
    ) -> anyhow::Result<Broker> {
        let plain = TcpListener::bind(config.addr).await.with_context(|| {
            format!(
                "cannot run the MQTT broker on {} (commserver.mqtt_addr)",
                config.addr
            )
        })?;
        let tls = match &config.tls {
            Some(tls) => Some((
                TcpListener::bind(tls.addr).await.with_context(|| {
                    format!(
                        "cannot run MQTT over TLS on {} (commserver.mqtts_addr)",
                        tls.addr
                    )
                })?,
                acceptor(tls)?,
            )),
            None => None,
        };
        let saved = store
            .saved()
            .await
            .context("cannot read the broker's saved sessions")?;
        tracing::info!(
            sessions = saved.sessions.len(),
            queued = saved.queued.len(),
            retained = saved.retained.len(),
            addr = %config.addr,
            "MQTT broker listening"
        );
        let stats = Arc::new(Stats::default());
        let (input_tx, input) = mpsc::channel(INPUT_BACKLOG);
        // The router feeds itself commits and ticks through a channel of its
        // own that never blocks it.
        let (own_tx, mut own_rx) = mpsc::unbounded_channel();
        let router = Router::new(
            config.limits.clone(),
            store,
            routes.clone(),
            jobs.clone(),
            stats.clone(),
            saved,
            own_tx,
        );
        let forward = input_tx.clone();
        tokio::spawn(async move {
            while let Some(input) = own_rx.recv().await {
                if forward.send(input).await.is_err() {
                    return;
                }
            }
        });
        Ok(Broker {
            config,
            plain,
            tls,
            router,
            input,
            handle: Handle {
                input: input_tx,
                stats,
            },
            jobs,
            routes,
        })
    }

    /// Its handle.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Serves until the process stops; `conn` checks devices' credentials.
    pub async fn run(self, conn: isms_ipc::Connection) {
        let Broker {
            config,
            plain,
            tls,
            mut router,
            mut input,
            handle,
            jobs,
            routes,
        } = self;
        let shared = Arc::new(connection::Shared {
            input: handle.input.clone(),
            conn,
            anonymous: config.anonymous,
            max_packet: config.limits.max_packet,
            next_id: AtomicU64::new(1),
        });
        // Clients wait in the listen backlog until the triggers and the
        // namespaces are known: a message matched against an empty table
        // would be acknowledged and run by nobody, and a device's rights
        // could not be checked.
        let accepting = {
            let (routes, shared) = (routes.clone(), shared.clone());
            async move {
                routes.loaded().await;
                tokio::spawn(accept_plain(plain, shared.clone()));
                if let Some((listener, acceptor)) = tls {
                    tokio::spawn(accept_tls(listener, acceptor, shared));
                }
            }
        };
        tokio::spawn(accepting);
        let ticks = handle.input.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                if ticks.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        });
        let rooms = handle.input.clone();
        tokio::spawn(async move {
            loop {
                jobs.room().await;
                if rooms.send(Input::Room).await.is_err() {
                    return;
                }
                // Wait for the queue to fill and drain again.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        while let Some(next) = input.recv().await {
            router.handle(next);
        }
    }
}

async fn accept_plain(listener: TcpListener, shared: Arc<connection::Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Acks are small: without this, Nagle's algorithm meets
                // delayed ACKs and each waits ~40 ms.
                let _ = stream.set_nodelay(true);
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection::serve(stream, peer, id, shared.clone()));
            }
            Err(err) => {
                tracing::warn!(cause = %err, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<connection::Shared>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                            connection::serve(stream, peer, id, shared).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, cause = %err, "MQTT TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "MQTT TLS handshake timed out"),
                    }
                });
            }
            Err(err) => {
                tracing::warn!(cause = %err, "MQTT TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn acceptor(tls: &TlsListener) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .with_context(|| format!("cannot read the certificate {}", tls.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot parse the certificate {}", tls.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no certificate",
        tls.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("cannot read the private key {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS version in common")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and the key do not go together")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
