//! An external broker (`commserver.mqtt_url`, Mosquitto or EMQX say): the
//! CommServer is one client of it, with a persistent session
//! (`clean_session = false`) and QoS 1 subscriptions to every active
//! trigger's filter. A message arrives unacknowledged, its jobs are
//! committed to the store, and only then is it acknowledged to the broker:
//! killed before that, the broker delivers it again. What the broker itself
//! promises to the devices (Mosquitto acknowledges from memory) is its own.
//!
//! The subscriptions are shared (`$share/isms/<filter>`, MQTT 5 and
//! Mosquitto's 3.1.1 alike): with several CommServers on one broker (SPEC
//! §10), the broker hands each message to one of them, so each message runs
//! once per trigger, not once per CommServer.

use super::jobs_for;
use super::queue::JobQueue;
use crate::inbox::Inbox;
use crate::routes::Routes;
use bytes::Bytes;
use isms_ipc::commserver::MqttStats;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

/// Where the broker is and how to reach it.
#[derive(Clone, Debug)]
pub struct ExternalConfig {
    /// The broker's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Whether to speak TLS (an `mqtts://` URL).
    pub tls: bool,
    /// A PEM file of CA certificates for TLS (the Mozilla roots otherwise).
    pub ca_file: Option<PathBuf>,
    /// Username and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// The client id: the persistent session's name.
    pub client_id: String,
    /// The largest payload taken.
    pub max_payload_bytes: usize,
}

/// How long a publish waits for the broker's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The client of the external broker.
pub struct Client {
    config: ExternalConfig,
    client: AsyncClient,
    connected: AtomicBool,
    connacks: Notify,
    /// Publishes sent and not yet given a packet id, in order.
    unsent: Mutex<VecDeque<oneshot::Sender<()>>>,
    /// Publishes waiting for their PUBACK, by packet id.
    unacked: Mutex<HashMap<u16, oneshot::Sender<()>>>,
    /// One publish at a time joins the queue, so ids match in order.
    sending: tokio::sync::Mutex<()>,
    received: AtomicU64,
    acknowledged: AtomicU64,
    duplicates: AtomicU64,
}

impl Client {
    /// The client; nothing runs until [`Client::run`].
    pub fn new(config: ExternalConfig) -> anyhow::Result<(Arc<Client>, EventLoop)> {
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(15))
            .set_inflight(1000)
            .set_max_packet_size(
                config.max_payload_bytes + 64 * 1024,
                config.max_payload_bytes + 64 * 1024,
            );
        if let Some((user, password)) = &config.credentials {
            options.set_credentials(user, password);
        }
        if config.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls_config(config.ca_file.as_ref())?)),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 4096);
        // Acks and replies are small: without this, Nagle's algorithm meets
        // delayed ACKs and each message waits ~40 ms (measured by isms-bench).
        eventloop.network_options.set_tcp_nodelay(true);
        Ok((
            Arc::new(Client {
                config,
                client,
                connected: AtomicBool::new(false),
                connacks: Notify::new(),
                unsent: Mutex::new(VecDeque::new()),
                unacked: Mutex::new(HashMap::new()),
                sending: tokio::sync::Mutex::new(()),
                received: AtomicU64::new(0),
                acknowledged: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
            }),
            eventloop,
        ))
    }

    /// Runs the connection, the recorder and the subscriptions; returns only
    /// if one of them stops.
    pub async fn run(
        self: Arc<Self>,
        eventloop: EventLoop,
        routes: Arc<Routes>,
        inbox: Inbox,
        jobs: Arc<JobQueue>,
    ) {
        let (arrivals, incoming) = mpsc::channel(8192);
        tokio::select! {
            () = self.clone().poll(eventloop, arrivals) => {}
            () = self.clone().record(incoming, routes.clone(), inbox, jobs) => {}
            () = self.clone().subscribe(routes) => {}
        }
    }

    /// Adds this client's counters.
    pub fn fill(&self, stats: &mut MqttStats) {
        stats.connected = self.connected.load(Ordering::Relaxed);
        stats.received = self.received.load(Ordering::Relaxed);
        stats.acknowledged = self.acknowledged.load(Ordering::Relaxed);
        stats.duplicates = self.duplicates.load(Ordering::Relaxed);
    }

    /// Publishes at QoS 1; returns once the broker acknowledged it.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        {
            let _turn = self.sending.lock().await;
            lock(&self.unsent).push_back(tx);
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string())?;
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the MQTT client stopped".into()),
            Err(_) => Err("the external broker did not acknowledge it in time".into()),
        }
    }

    /// Drives the connection; rumqttc reconnects on the next poll.
    async fn poll(self: Arc<Self>, mut eventloop: EventLoop, arrivals: mpsc::Sender<Publish>) {
        let mut retry = Duration::from_millis(100);
        let mut warned = false;
        let broker = format!("{}:{}", self.config.host, self.config.port);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    if publish.dup {
                        self.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    if arrivals.send(publish).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    // A resend after a reconnection keeps its waiter.
                    let mut unacked = lock(&self.unacked);
                    if !unacked.contains_key(&pkid)
                        && let Some(waiter) = lock(&self.unsent).pop_front()
                    {
                        unacked.insert(pkid, waiter);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(waiter) = lock(&self.unacked).remove(&ack.pkid) {
                        let _ = waiter.send(());
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(%broker, session_present = ack.session_present, "connected to the MQTT broker");
                    self.connected.store(true, Ordering::Relaxed);
                    self.connacks.notify_one();
                    retry = Duration::from_millis(100);
                    warned = false;
                }
                Ok(_) => {}
                Err(err) => {
                    self.connected.store(false, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!(cause = %err, %broker, "MQTT broker connection lost; reconnecting");
                        warned = true;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records what arrives, a batch per commit, and acknowledges it after.
    async fn record(
        self: Arc<Self>,
        mut incoming: mpsc::Receiver<Publish>,
        routes: Arc<Routes>,
        inbox: Inbox,
        jobs: Arc<JobQueue>,
    ) {
        let mut batch = Vec::new();
        // A persistent session delivers at once on connect: matching before
        // the triggers are known would drop those messages.
        routes.loaded().await;
        loop {
            // Backpressure: unacknowledged, the broker holds the rest.
            jobs.room().await;
            if incoming.recv_many(&mut batch, 1024).await == 0 {
                return;
            }
            let mut new = Vec::new();
            for publish in &batch {
                let Some(topic) = std::str::from_utf8(publish.topic.as_ref()).ok() else {
                    continue;
                };
                if publish.payload.len() > self.config.max_payload_bytes {
                    tracing::warn!(%topic, bytes = publish.payload.len(), "MQTT message past the payload limit dropped");
                    continue;
                }
                new.extend(jobs_for(&routes, topic, &publish.payload));
            }
            if !new.is_empty() {
                match inbox.record(new).await {
                    Ok(recorded) => jobs.recorded(recorded),
                    Err(err) => {
                        // Unacknowledged, so the broker delivers them again
                        // once the connection is renewed.
                        tracing::error!(cause = %err, messages = batch.len(), "cannot record MQTT messages; they stay unacknowledged");
                        batch.clear();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            for publish in batch.drain(..) {
                if self.client.ack(&publish).await.is_ok() {
                    self.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Keeps the broker subscribed to every active trigger's filter.
    async fn subscribe(self: Arc<Self>, routes: Arc<Routes>) {
        let mut changes = routes.changes();
        let mut subscribed: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                () = self.connacks.notified() => subscribed.clear(),
                changed = changes.changed() => if changed.is_err() { return },
            }
            let wanted = routes.mqtt_filters();
            let new: Vec<_> = wanted
                .difference(&subscribed)
                .map(|filter| rumqttc::SubscribeFilter::new(shared(filter), QoS::AtLeastOnce))
                .collect();
            if !new.is_empty() {
                tracing::info!(filters = new.len(), "subscribing to MQTT triggers");
                if let Err(err) = self.client.subscribe_many(new).await {
                    tracing::warn!(cause = %err, "cannot subscribe");
                }
            }
            for gone in subscribed.difference(&wanted) {
                let _ = self.client.unsubscribe(shared(gone)).await;
            }
            subscribed = wanted;
        }
    }
}

/// The shared subscription every CommServer of the platform joins for a
/// trigger's filter.
fn shared(filter: &str) -> String {
    format!("$share/isms/{filter}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// TLS to an external broker: rustls with ring, the CA file's roots or the
/// Mozilla ones.
fn tls_config(ca_file: Option<&PathBuf>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            {
                let cert = cert
                    .map_err(|e| anyhow::anyhow!("bad certificate in {}: {e}", path.display()))?;
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
