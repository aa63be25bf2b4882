//! MQTT triggers, delivered at least once, and publishing for Doees.
//!
//! Messages come through a [`Door`]: the embedded broker (the default, in
//! this process: [`crate::broker`]) or an external broker, of which the
//! CommServer is a client ([`external`]). Either way a message flows:
//!
//! 1. it is matched against the triggers (one job per Doee, [`jobs_for`])
//!    and the jobs are committed to the store (fsync'd, a batch per
//!    commit); only then is it acknowledged — to the device itself with
//!    the embedded broker, to the external broker otherwise;
//! 2. the dispatcher runs each job as an invocation through the kernel,
//!    taking projects in turn ([`queue`]);
//! 3. the output is published on the trigger's reply topic, and the job
//!    is forgotten only once the reply is acknowledged; a failed run is
//!    retried with backoff, then kept as a dead letter, which an operator
//!    may run again or purge.

pub mod external;
pub mod queue;

use crate::broker;
use crate::inbox::Inbox;
use crate::routes::Routes;
use crate::store::{Job, NewJob};
use bytes::Bytes;
use isms_ipc::commserver::MqttStats;
use isms_ipc::doer::{DoeeFailure, Trigger};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::MqttRoute;
use isms_ipc::topic;
use isms_ipc::{Connection, Failure, FailureKind, InvocationId, ProjectName};
use queue::{JobQueue, Next};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How triggers run.
#[derive(Clone, Debug)]
pub struct TriggerConfig {
    /// Runs of one message before it becomes a dead letter.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles it (up to a minute).
    pub retry_base: Duration,
    /// Invocations run at once.
    pub concurrency: usize,
    /// The largest payload taken or published.
    pub max_payload_bytes: usize,
    /// Time an invocation may wait in queues, on top of the Doee's timeout.
    pub queue_allowance: Duration,
}

/// Where messages come from and publishes go.
pub enum Door {
    /// The broker in this process.
    Embedded(broker::Handle),
    /// A client of an external broker.
    External(Arc<external::Client>),
}

impl Door {
    async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), String> {
        match self {
            Door::Embedded(broker) => {
                broker
                    .publish(broker::codec::Message {
                        topic: topic.to_string(),
                        payload,
                        qos: broker::codec::QoS::AtLeastOnce,
                        retain: false,
                    })
                    .await
            }
            Door::External(client) => client.publish(topic, payload).await,
        }
    }
}

/// The MQTT triggers.
pub struct Triggers {
    config: TriggerConfig,
    conn: Connection,
    routes: Arc<Routes>,
    inbox: Inbox,
    jobs: Arc<JobQueue>,
    door: Door,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    published: AtomicU64,
}

/// One job per Doee whose trigger matches `topic`.
pub fn jobs_for(routes: &Routes, topic: &str, payload: &Bytes) -> Vec<NewJob> {
    let mut jobs: Vec<NewJob> = Vec::new();
    for route in routes.mqtt_matching(topic) {
        if jobs
            .iter()
            .any(|j| j.project == route.target.project && j.doee == route.target.doee)
        {
            continue;
        }
        jobs.push(NewJob {
            project: route.target.project.clone(),
            doee: route.target.doee.clone(),
            topic: topic.to_string(),
            reply_topic: route.reply_topic.clone(),
            payload: payload.clone(),
        });
    }
    jobs
}

impl Triggers {
    /// The triggers, served through `door`.
    pub fn new(
        config: TriggerConfig,
        conn: Connection,
        routes: Arc<Routes>,
        inbox: Inbox,
        jobs: Arc<JobQueue>,
        door: Door,
    ) -> Triggers {
        Triggers {
            config,
            conn,
            routes,
            inbox,
            jobs,
            door,
            counters: Counters::default(),
        }
    }

    /// The door messages come through.
    pub fn door(&self) -> &Door {
        &self.door
    }

    /// The inbox, for dead letters.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// The counters, with the store's depth.
    pub async fn stats(&self) -> MqttStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut stats = MqttStats {
            connected: true,
            retried: load(&self.counters.retried),
            dead_lettered: load(&self.counters.dead_lettered),
            published: load(&self.counters.published),
            inbox_depth: self.jobs.pending() as u64,
            dead_letters: self.inbox.dead_count().await.unwrap_or(0),
            ..MqttStats::default()
        };
        match &self.door {
            Door::Embedded(broker) => {
                let b = broker.stats();
                stats.received = load(&b.received);
                stats.acknowledged = load(&b.acknowledged);
                stats.clients = load(&b.clients);
                stats.sessions = load(&b.sessions);
                stats.retained = load(&b.retained);
                stats.delivered = load(&b.delivered);
                stats.dropped = load(&b.dropped);
                stats.refused = load(&b.refused);
            }
            Door::External(client) => client.fill(&mut stats),
        }
        stats
    }

    /// Publishes for a project: only on a topic of its namespaces. Returns
    /// once the broker has acknowledged it.
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
        self.door
            .publish(topic, payload)
            .await
            .map_err(|e| Failure::new(FailureKind::Unavailable, format!("cannot publish: {e}")))?;
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs dead letters again (those of `ids`, or all of the project's).
    pub async fn retry_dead(
        &self,
        project: &ProjectName,
        ids: Option<Vec<u64>>,
    ) -> anyhow::Result<u64> {
        let revived = self.inbox.revive(project, ids).await?;
        let count = revived.len() as u64;
        self.jobs.recorded(revived);
        Ok(count)
    }

    /// Runs due jobs, `concurrency` at once; never returns.
    pub async fn dispatch(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // Jobs recorded before a restart wait for the triggers, which tell
        // each its Doee's active version.
        self.routes.loaded().await;
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let job = loop {
                let queued = self.jobs.wait_queued();
                match self.jobs.next(now_ms()) {
                    Next::Run(job) => break job,
                    Next::Wait(ms) => {
                        let _ = tokio::time::timeout(Duration::from_millis(ms), queued).await;
                    }
                    Next::Idle => queued.await,
                }
            };
            let triggers = self.clone();
            tokio::spawn(async move {
                triggers.run_job(job).await;
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
            Ok(output) => match &job.reply_topic {
                // Forgotten only once the reply is acknowledged: a crash in
                // between runs it again rather than lose the reply.
                Some(reply) => match self.publish(&job.project, reply, output).await {
                    Ok(()) => None,
                    Err(failure) if failure.kind == FailureKind::Unavailable => Some(
                        Attempt::Later(format!("cannot publish the reply: {failure}")),
                    ),
                    Err(failure) => Some(Attempt::Failed(format!(
                        "cannot publish the reply: {failure}"
                    ))),
                },
                None => None,
            },
            Err(failure) => Some(failure),
        };
        let Some(failure) = failure else {
            self.inbox.done(job.id);
            self.jobs.settled();
            return;
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
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                let backoff = self.config.retry_base * 2u32.saturating_pow(job.attempts - 1);
                now_ms() + backoff.min(Duration::from_secs(60)).as_millis() as u64
            }
        };
        self.inbox.retry(job.id, job.attempts, due);
        job.due_ms = due;
        self.jobs.requeue(vec![job]);
    }

    async fn invoke(&self, route: &MqttRoute, job: &Job) -> Result<Bytes, Attempt> {
        let trigger = Trigger::Mqtt {
            topic: job.topic.clone(),
        };
        let ran = crate::pipeline::run(
            &self.conn,
            &route.target,
            &route.pipeline,
            InvocationId::generate(),
            trigger,
            job.payload.clone(),
            self.config.queue_allowance,
        )
        .await;
        match ran.outcome {
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
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.inbox.dead(job.id, job.attempts, why);
        self.jobs.settled();
    }
}

/// Why a run did not finish.
enum Attempt {
    /// The platform could not take it now (busy, restarting).
    Later(String),
    /// The Doee failed.
    Failed(String),
}
