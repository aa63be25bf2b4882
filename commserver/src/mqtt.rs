//! MQTT triggers, delivered at least once, and publishing for Doees.
//!
//! The CommServer is one MQTT client of the broker (the embedded one or an
//! external one), with a persistent session (`clean_session = false`) and
//! QoS 1 subscriptions to every active trigger's filter. A message flows:
//!
//! 1. the event loop hands it to the recorder, unacknowledged;
//! 2. the recorder matches it against the triggers (one job per Doee),
//!    commits the jobs to the [`Inbox`] (fsync'd, a batch per commit), and
//!    only then acknowledges it: a crash before that, and the broker
//!    delivers it again;
//! 3. the dispatcher runs each job as an invocation through the kernel,
//!    publishes the output on the trigger's reply topic, and forgets it;
//!    a failed run is retried with backoff, then kept as a dead letter.
//!
//! Backpressure: past `max_pending` recorded jobs, the recorder stops
//! acknowledging, so the broker holds what follows.

use crate::inbox::{Inbox, Job, NewJob};
use crate::routes::Routes;
use bytes::Bytes;
use isms_ipc::commserver::MqttStats;
use isms_ipc::connection::Scope;
use isms_ipc::doer::{DoeeFailure, Invoke, Trigger};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::MqttRoute;
use isms_ipc::topic;
use isms_ipc::{Connection, Deadline, Failure, FailureKind, InvocationId, ProjectName};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};

/// Where the broker is and how to reach it.
#[derive(Clone, Debug)]
pub struct MqttConfig {
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
    /// The inbox file.
    pub inbox: PathBuf,
    /// Runs of one message before it becomes a dead letter.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles it (up to a minute).
    pub retry_base: Duration,
    /// Invocations run at once.
    pub concurrency: usize,
    /// Recorded jobs past which no more messages are acknowledged.
    pub max_pending: usize,
    /// The largest payload taken or published.
    pub max_payload_bytes: usize,
    /// Time an invocation may wait in queues, on top of the Doee's timeout.
    pub queue_allowance: Duration,
}

/// The MQTT side of the CommServer.
pub struct Mqtt {
    config: MqttConfig,
    client: AsyncClient,
    conn: Connection,
    routes: Arc<Routes>,
    inbox: Inbox,
    queue: Mutex<BTreeMap<(u64, u64), Job>>,
    queued: Notify,
    pending: AtomicUsize,
    room: Notify,
    connected: AtomicBool,
    connacks: Notify,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    acknowledged: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    duplicates: AtomicU64,
    published: AtomicU64,
}

impl Mqtt {
    /// Opens the inbox and the client; nothing runs until [`Mqtt::run`].
    pub async fn start(
        config: MqttConfig,
        conn: Connection,
        routes: Arc<Routes>,
    ) -> anyhow::Result<(Arc<Mqtt>, EventLoop)> {
        let (inbox, waiting) = Inbox::open(&config.inbox).await?;
        if !waiting.is_empty() {
            tracing::info!(
                messages = waiting.len(),
                "MQTT messages recorded before a stop run now"
            );
        }
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
        let pending = waiting.len();
        let queue = waiting
            .into_iter()
            .map(|job| ((job.due_ms, job.id), job))
            .collect();
        let mqtt = Arc::new(Mqtt {
            config,
            client,
            conn,
            routes,
            inbox,
            queue: Mutex::new(queue),
            queued: Notify::new(),
            pending: AtomicUsize::new(pending),
            room: Notify::new(),
            connected: AtomicBool::new(false),
            connacks: Notify::new(),
            stats: Counters::default(),
        });
        Ok((mqtt, eventloop))
    }

    /// Runs the client, the recorder, the subscriptions and the dispatcher;
    /// returns only if one of them stops.
    pub async fn run(self: Arc<Self>, eventloop: EventLoop) {
        let (arrivals, incoming) = mpsc::channel(8192);
        tokio::select! {
            () = self.clone().poll(eventloop, arrivals) => {}
            () = self.clone().record(incoming) => {}
            () = self.clone().subscribe() => {}
            () = self.clone().dispatch() => {}
        }
    }

    /// The counters, with the inbox's depth.
    pub async fn stats(&self) -> MqttStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MqttStats {
            connected: self.connected.load(Ordering::Relaxed),
            received: load(&self.stats.received),
            acknowledged: load(&self.stats.acknowledged),
            retried: load(&self.stats.retried),
            dead_lettered: load(&self.stats.dead_lettered),
            duplicates: load(&self.stats.duplicates),
            published: load(&self.stats.published),
            inbox_depth: self.pending.load(Ordering::Relaxed) as u64,
            dead_letters: self.inbox.dead_count().await.unwrap_or(0),
        }
    }

    /// The inbox, for the dead-letter requests.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Publishes for a project: only on a topic of its namespaces.
    pub async fn publish(
        &self,
        project: &ProjectName,
        topic: &str,
        payload: Bytes,
    ) -> Result<(), Failure> {
        topic::check(topic, false).map_err(|why| Failure::invalid(format!("the topic {why}")))?;
        if payload.len() > self.config.max_payload_bytes {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the payload is {} bytes, past the limit of {}",
                    payload.len(),
                    self.config.max_payload_bytes
                ),
            ));
        }
        let namespaces = self.routes.namespaces(project).ok_or_else(|| {
            Failure::new(
                FailureKind::Unavailable,
                "the topic namespaces are not loaded yet",
            )
        })?;
        if !topic::allowed(&namespaces, topic) {
            let list: Vec<&str> = namespaces.iter().map(|ns| ns.as_str()).collect();
            return Err(Failure::new(
                FailureKind::Forbidden,
                format!(
                    "project `{project}` may not publish on `{topic}`: its topic namespaces are {}",
                    list.join(", ")
                ),
            ));
        }
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| Failure::new(FailureKind::Unavailable, format!("cannot publish: {e}")))?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drives the connection; rumqttc reconnects on the next poll.
    async fn poll(self: Arc<Self>, mut eventloop: EventLoop, arrivals: mpsc::Sender<Publish>) {
        let mut retry = Duration::from_millis(100);
        let mut warned = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    if publish.dup {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    if arrivals.send(publish).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(
                        broker = %format!("{}:{}", self.config.host, self.config.port),
                        session_present = ack.session_present,
                        "connected to the MQTT broker"
                    );
                    self.connected.store(true, Ordering::Relaxed);
                    self.connacks.notify_one();
                    retry = Duration::from_millis(100);
                    warned = false;
                }
                Ok(_) => {}
                Err(err) => {
                    self.connected.store(false, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!(cause = %err, broker = %format!("{}:{}", self.config.host, self.config.port), "MQTT broker connection lost; reconnecting");
                        warned = true;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records what arrives, a batch per commit, and acknowledges it after.
    async fn record(self: Arc<Self>, mut incoming: mpsc::Receiver<Publish>) {
        let mut batch = Vec::new();
        // A persistent session delivers at once on connect: matching before
        // the triggers are known would drop those messages.
        self.routes.loaded().await;
        loop {
            while self.pending.load(Ordering::Relaxed) >= self.config.max_pending {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), self.room.notified()).await;
            }
            if incoming.recv_many(&mut batch, 1024).await == 0 {
                return;
            }
            let mut jobs = Vec::new();
            for publish in &batch {
                jobs.extend(self.jobs_for(publish));
            }
            let count = jobs.len();
            if count > 0 {
                match self.inbox.record(jobs).await {
                    Ok(recorded) => {
                        self.pending.fetch_add(count, Ordering::Relaxed);
                        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                        for job in recorded {
                            queue.insert((job.due_ms, job.id), job);
                        }
                        drop(queue);
                        self.queued.notify_one();
                    }
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
                    self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// One job per Doee whose trigger matches the message's topic.
    fn jobs_for(&self, publish: &Publish) -> Vec<NewJob> {
        let Some(topic) = std::str::from_utf8(publish.topic.as_ref()).ok() else {
            return Vec::new();
        };
        if publish.payload.len() > self.config.max_payload_bytes {
            tracing::warn!(%topic, bytes = publish.payload.len(), "MQTT message past the payload limit dropped");
            return Vec::new();
        }
        let mut jobs: Vec<NewJob> = Vec::new();
        for route in self.routes.mqtt_matching(topic) {
            if jobs
                .iter()
                .any(|j| j.project == route.project && j.doee == route.doee)
            {
                continue;
            }
            jobs.push(NewJob {
                project: route.project.clone(),
                doee: route.doee.clone(),
                topic: topic.to_string(),
                reply_topic: route.reply_topic.clone(),
                payload: publish.payload.clone(),
            });
        }
        jobs
    }

    /// Keeps the broker subscribed to every active trigger's filter.
    async fn subscribe(self: Arc<Self>) {
        let mut changes = self.routes.changes();
        let mut subscribed: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                () = self.connacks.notified() => subscribed.clear(),
                changed = changes.changed() => if changed.is_err() { return },
            }
            let wanted = self.routes.mqtt_filters();
            let new: Vec<_> = wanted
                .difference(&subscribed)
                .map(|filter| rumqttc::SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce))
                .collect();
            if !new.is_empty() {
                tracing::info!(filters = new.len(), "subscribing to MQTT triggers");
                if let Err(err) = self.client.subscribe_many(new).await {
                    tracing::warn!(cause = %err, "cannot subscribe");
                }
            }
            for gone in subscribed.difference(&wanted) {
                let _ = self.client.unsubscribe(gone.clone()).await;
            }
            subscribed = wanted;
        }
    }

    /// Runs due jobs, `concurrency` at once.
    async fn dispatch(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // Jobs recorded before a restart wait for the triggers, which tell
        // each its Doee's active version.
        self.routes.loaded().await;
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let job = loop {
                let next = {
                    let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    match queue.first_key_value() {
                        Some((&(due, _), _)) if due <= now_ms() => {
                            queue.pop_first().map(|(_, job)| Ok(job))
                        }
                        Some((&(due, _), _)) => Some(Err(due - now_ms())),
                        None => None,
                    }
                };
                match next {
                    Some(Ok(job)) => break job,
                    Some(Err(wait_ms)) => {
                        let _ = tokio::time::timeout(
                            Duration::from_millis(wait_ms),
                            self.queued.notified(),
                        )
                        .await;
                    }
                    None => self.queued.notified().await,
                }
            };
            let mqtt = self.clone();
            tokio::spawn(async move {
                mqtt.run_job(job).await;
                drop(slot);
            });
        }
    }

    /// Runs one job and settles it: done, again later, or dead.
    async fn run_job(&self, mut job: Job) {
        let Some(route) = self.routes.mqtt_route(&job.project, &job.doee) else {
            let why = format!(
                "Doee `{}` has no MQTT trigger any more (deleted, or redeployed without one)",
                job.doee
            );
            self.give_up(job, why);
            return;
        };
        let failure = match self.invoke(&route, &job).await {
            Ok(output) => {
                if let Some(reply) = &job.reply_topic
                    && let Err(failure) = self.publish(&job.project, reply, output).await
                {
                    tracing::warn!(project = %job.project, doee = %job.doee, %failure, "cannot publish a reply");
                }
                self.inbox.done(job.id);
                self.settled();
                return;
            }
            Err(failure) => failure,
        };
        let due = match failure {
            // The platform, not the message, could not take it: no attempt spent.
            Attempt::Later(why) => {
                tracing::debug!(id = job.id, %why, "MQTT job postponed");
                now_ms() + self.config.retry_base.as_millis() as u64
            }
            Attempt::Failed(why) => {
                job.attempts += 1;
                if job.attempts >= self.config.max_attempts {
                    self.give_up(job, why);
                    return;
                }
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                let backoff = self.config.retry_base * 2u32.saturating_pow(job.attempts - 1);
                now_ms() + backoff.min(Duration::from_secs(60)).as_millis() as u64
            }
        };
        self.inbox.retry(job.id, job.attempts, due);
        job.due_ms = due;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.insert((job.due_ms, job.id), job);
        drop(queue);
        self.queued.notify_one();
    }

    async fn invoke(&self, route: &MqttRoute, job: &Job) -> Result<Bytes, Attempt> {
        let timeout =
            Duration::from_millis(u64::from(route.timeout_ms)) + self.config.queue_allowance;
        let scope = Scope {
            project: Some(job.project.clone()),
            priority: route.priority,
            deadline: Deadline::after(timeout),
        };
        let invoke = Invoke {
            id: InvocationId::generate(),
            doee: route.doee.clone(),
            version: route.version,
            trigger: Trigger::Mqtt {
                topic: job.topic.clone(),
            },
            input: job.payload.clone(),
        };
        match self.conn.call(&scope, invoke).await {
            Ok(outcome) => match outcome.result {
                Ok(response) => Ok(response.body),
                Err(failure @ (DoeeFailure::Busy | DoeeFailure::Preempted(_))) => {
                    Err(Attempt::Later(failure.message()))
                }
                Err(failure) => Err(Attempt::Failed(failure.message())),
            },
            Err(failure) => match failure.kind {
                FailureKind::Busy | FailureKind::Unavailable => {
                    Err(Attempt::Later(failure.message))
                }
                _ => Err(Attempt::Failed(failure.message)),
            },
        }
    }

    fn give_up(&self, job: Job, why: String) {
        tracing::warn!(id = job.id, project = %job.project, doee = %job.doee, attempts = job.attempts, %why, "MQTT message dead-lettered");
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.inbox.dead(job.id, job.attempts, why);
        self.settled();
    }

    fn settled(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.room.notify_one();
    }
}

/// Why a run did not finish.
enum Attempt {
    /// The platform could not take it now (busy, restarting).
    Later(String),
    /// The Doee failed.
    Failed(String),
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
