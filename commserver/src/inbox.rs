//! Where accepted MQTT jobs wait to run: in this CommServer's own store
//! (the default, beside the embedded broker's state), or in a PostgreSQL
//! table that every CommServer of the platform shares
//! (`commserver.inbox_url`, with an external broker), so that a CommServer
//! host that dies for good takes no acknowledged message with it.
//!
//! Shared, each job names its *owner* (the CommServer instance that runs
//! it) and a *lease*: the owner renews its leases every quarter of the
//! lease time, and any CommServer takes over the jobs whose lease ran out —
//! their owner stopped — and runs them. A CommServer that restarts under
//! its name finds its own jobs at once. Delivery stays at least once: a
//! CommServer cut off from PostgreSQL for longer than the lease may still
//! run a job another has taken over.
//!
//! A job is in PostgreSQL (committed, with PostgreSQL's own durability)
//! before its message is acknowledged to the broker; done, retried and
//! dead-lettered jobs are written after, in order, by one task.

use crate::mqtt::queue::JobQueue;
use crate::store::{Job, NewJob, Store};
use bytes::Bytes;
use isms_ipc::commserver::DeadLetter;
use isms_ipc::names::now_ms;
use isms_ipc::{DoeeName, ProjectName};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A shared inbox: where, and under which name this CommServer owns jobs.
#[derive(Clone, Debug)]
pub struct SharedConfig {
    /// `postgres://…`.
    pub url: String,
    /// This CommServer's instance name.
    pub owner: String,
    /// How long a job stays its owner's without a renewal.
    pub lease: Duration,
}

/// Where jobs wait; cheap to clone.
#[derive(Clone)]
pub enum Inbox {
    /// In this CommServer's store.
    Local(Store),
    /// In a table every CommServer shares.
    Shared(Arc<Shared>),
}

impl Inbox {
    /// Records jobs durably; answers them once committed.
    pub async fn record(&self, jobs: Vec<NewJob>) -> anyhow::Result<Vec<Job>> {
        match self {
            Inbox::Local(store) => store.record(jobs).await,
            Inbox::Shared(shared) => shared.record(jobs).await,
        }
    }

    /// The job ran to the end: forget it.
    pub fn done(&self, id: u64) {
        match self {
            Inbox::Local(store) => store.done(id),
            Inbox::Shared(shared) => shared.send(Op::Done(id)),
        }
    }

    /// The job runs again at `due_ms`.
    pub fn retry(&self, id: u64, attempts: u32, due_ms: u64) {
        match self {
            Inbox::Local(store) => store.retry(id, attempts, due_ms),
            Inbox::Shared(shared) => shared.send(Op::Retry {
                id,
                attempts,
                due_ms,
            }),
        }
    }

    /// The job is given up on: keep it as a dead letter.
    pub fn dead(&self, id: u64, attempts: u32, error: String) {
        match self {
            Inbox::Local(store) => store.dead(id, attempts, error),
            Inbox::Shared(shared) => shared.send(Op::Dead {
                id,
                attempts,
                error,
            }),
        }
    }

    /// Makes a project's dead letters (those of `ids`, or all) jobs again,
    /// this CommServer's, due now with no attempt spent; answers them.
    pub async fn revive(
        &self,
        project: &ProjectName,
        ids: Option<Vec<u64>>,
    ) -> anyhow::Result<Vec<Job>> {
        match self {
            Inbox::Local(store) => store.revive(project, ids).await,
            Inbox::Shared(shared) => shared.revive(project, ids).await,
        }
    }

    /// Deletes a project's dead letters (those of `ids`, or all); answers how many.
    pub async fn purge(&self, project: &ProjectName, ids: Option<Vec<u64>>) -> anyhow::Result<u64> {
        match self {
            Inbox::Local(store) => store.purge(project, ids).await,
            Inbox::Shared(shared) => shared.purge(project, ids).await,
        }
    }

    /// A project's dead letters, newest first.
    pub async fn dead_letters(
        &self,
        project: &ProjectName,
        limit: u32,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        match self {
            Inbox::Local(store) => store.dead_letters(project, limit).await,
            Inbox::Shared(shared) => shared.dead_letters(project, limit).await,
        }
    }

    /// How many dead letters are kept, over every project.
    pub async fn dead_count(&self) -> anyhow::Result<u64> {
        match self {
            Inbox::Local(store) => store.dead_count().await,
            Inbox::Shared(shared) => shared.dead_count().await,
        }
    }
}

/// The inbox in PostgreSQL.
pub struct Shared {
    pool: PgPool,
    owner: String,
    lease: Duration,
    ops: mpsc::UnboundedSender<Op>,
}

/// What is written after the fact, in order.
enum Op {
    Done(u64),
    Retry {
        id: u64,
        attempts: u32,
        due_ms: u64,
    },
    Dead {
        id: u64,
        attempts: u32,
        error: String,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS isms_mqtt_inbox (
    id          BIGSERIAL PRIMARY KEY,
    project     TEXT NOT NULL,
    doee        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    reply_topic TEXT,
    payload     BYTEA NOT NULL,
    received_ms BIGINT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_ms      BIGINT NOT NULL,
    dead        BOOLEAN NOT NULL DEFAULT FALSE,
    error       TEXT,
    owner       TEXT NOT NULL,
    lease_ms    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS isms_mqtt_inbox_lease ON isms_mqtt_inbox (dead, lease_ms);
CREATE INDEX IF NOT EXISTS isms_mqtt_inbox_owner ON isms_mqtt_inbox (owner, dead);
CREATE INDEX IF NOT EXISTS isms_mqtt_inbox_dead ON isms_mqtt_inbox (dead, project, id);
";

/// The columns a [`Job`] is read from, in [`job`]'s order.
const JOB_COLUMNS: &str =
    "id, project, doee, topic, reply_topic, payload, received_ms, attempts, due_ms";

/// Serialises the schema's creation between CommServers starting at once
/// (`CREATE … IF NOT EXISTS` races otherwise).
const SCHEMA_LOCK: i64 = 0x6973_6d73_6d71_7474; // "ismsmqtt"

/// Now, by PostgreSQL's clock (ms since the epoch): leases are set and
/// compared by one clock, whatever the CommServers' hosts' clocks say.
const PG_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Rows per multi-row INSERT: well under PostgreSQL's bound on parameters.
const ROWS_PER_INSERT: usize = 500;

impl Shared {
    /// Connects, makes the table if it is missing, and answers the jobs
    /// this CommServer owned before a restart.
    pub async fn open(config: &SharedConfig) -> anyhow::Result<(Arc<Shared>, Vec<Job>)> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&config.url)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot reach the shared MQTT inbox (commserver.inbox_url): {e}")
            })?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        let (ops, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool,
            owner: config.owner.clone(),
            lease: config.lease,
            ops,
        });
        tokio::spawn(write_loop(shared.pool.clone(), queue));
        let mut waiting: Vec<Job> = sqlx::query(AssertSqlSafe(format!(
            "UPDATE isms_mqtt_inbox SET lease_ms = {PG_NOW_MS} + $1 WHERE owner = $2 AND NOT dead \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(shared.lease_ms())
        .bind(&shared.owner)
        .fetch_all(&shared.pool)
        .await?
        .iter()
        .filter_map(job)
        .collect();
        waiting.sort_by_key(|j| j.id);
        Ok((shared, waiting))
    }

    fn send(&self, op: Op) {
        let _ = self.ops.send(op);
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Records jobs, this CommServer's; answers them once committed.
    pub async fn record(&self, jobs: Vec<NewJob>) -> anyhow::Result<Vec<Job>> {
        let now = now_ms();
        let lease = self.lease_ms();
        let mut tx = self.pool.begin().await?;
        let mut recorded = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ROWS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = i * 9;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, {PG_NOW_MS} + ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7,
                        p + 8,
                        p + 9
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO isms_mqtt_inbox \
                 (project, doee, topic, reply_topic, payload, received_ms, due_ms, owner, lease_ms) \
                 VALUES {} RETURNING id",
                values.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
            for job in chunk {
                query = query
                    .bind(job.project.as_str())
                    .bind(job.doee.as_str())
                    .bind(&job.topic)
                    .bind(&job.reply_topic)
                    .bind(job.payload.as_ref())
                    .bind(now as i64)
                    .bind(now as i64)
                    .bind(&self.owner)
                    .bind(lease);
            }
            // Rows are numbered in the order of VALUES; RETURNING's own
            // order is unspecified.
            let mut ids = query.fetch_all(&mut *tx).await?;
            ids.sort_unstable();
            recorded.extend(chunk.iter().zip(ids).map(|(new, id)| Job {
                id: id as u64,
                project: new.project.clone(),
                doee: new.doee.clone(),
                topic: new.topic.clone(),
                reply_topic: new.reply_topic.clone(),
                payload: new.payload.clone(),
                received_ms: now,
                attempts: 0,
                due_ms: now,
            }));
        }
        tx.commit()
            .await
            .map_err(|e| anyhow::anyhow!("cannot commit to the shared MQTT inbox: {e}"))?;
        Ok(recorded)
    }

    async fn revive(
        &self,
        project: &ProjectName,
        ids: Option<Vec<u64>>,
    ) -> anyhow::Result<Vec<Job>> {
        let now = now_ms() as i64;
        let mut revived: Vec<Job> = sqlx::query(AssertSqlSafe(format!(
            "UPDATE isms_mqtt_inbox SET dead = FALSE, error = NULL, attempts = 0, due_ms = $1, \
             owner = $2, lease_ms = {PG_NOW_MS} + $3 \
             WHERE dead AND project = $4 AND ($5::BIGINT[] IS NULL OR id = ANY($5)) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(now)
        .bind(&self.owner)
        .bind(self.lease_ms())
        .bind(project.as_str())
        .bind(id_list(ids))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .filter_map(job)
        .collect();
        revived.sort_by_key(|j| j.id);
        Ok(revived)
    }

    async fn purge(&self, project: &ProjectName, ids: Option<Vec<u64>>) -> anyhow::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM isms_mqtt_inbox \
             WHERE dead AND project = $1 AND ($2::BIGINT[] IS NULL OR id = ANY($2))",
        )
        .bind(project.as_str())
        .bind(id_list(ids))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn dead_letters(
        &self,
        project: &ProjectName,
        limit: u32,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, doee, topic, payload, received_ms, attempts, error FROM isms_mqtt_inbox \
             WHERE dead AND project = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(project.as_str())
        .bind(i64::from(limit.min(1000)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(DeadLetter {
                    id: row.get::<i64, _>(0) as u64,
                    project: project.clone(),
                    doee: DoeeName::new(row.get::<String, _>(1)).ok()?,
                    topic: row.get(2),
                    payload: Bytes::from(row.get::<Vec<u8>, _>(3)),
                    received_ms: row.get::<i64, _>(4) as u64,
                    attempts: row.get::<i32, _>(5) as u32,
                    error: row.get::<Option<String>, _>(6).unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn dead_count(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM isms_mqtt_inbox WHERE dead")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Keeps this CommServer's leases and takes over the jobs of
    /// CommServers whose leases ran out, handing them to `jobs`, as much as
    /// it has room for. Runs until the process ends.
    pub async fn keep_leases(self: Arc<Self>, jobs: Arc<JobQueue>) {
        let mut tick = tokio::time::interval(self.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.renew_and_take_over(jobs.room_left()).await {
                Ok(taken) => {
                    if failing {
                        tracing::info!("the shared MQTT inbox answers again");
                        failing = false;
                    }
                    if !taken.is_empty() {
                        tracing::warn!(
                            messages = taken.len(),
                            "took over MQTT messages of a CommServer that stopped renewing its lease"
                        );
                        jobs.recorded(taken);
                    }
                }
                Err(err) if !failing => {
                    tracing::error!(cause = %err, "cannot renew this CommServer's leases in the shared MQTT inbox; another CommServer may take its messages over");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    async fn renew_and_take_over(&self, room: usize) -> anyhow::Result<Vec<Job>> {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE isms_mqtt_inbox SET lease_ms = {PG_NOW_MS} + $1 WHERE owner = $2 AND NOT dead"
        )))
        .bind(self.lease_ms())
        .bind(&self.owner)
        .execute(&self.pool)
        .await?;
        if room == 0 {
            return Ok(Vec::new());
        }
        // Not its own: those it holds already, whatever their lease.
        let mut taken: Vec<Job> = sqlx::query(AssertSqlSafe(format!(
            "UPDATE isms_mqtt_inbox SET owner = $1, lease_ms = {PG_NOW_MS} + $2 WHERE id IN (\
                 SELECT id FROM isms_mqtt_inbox \
                 WHERE NOT dead AND lease_ms < {PG_NOW_MS} AND owner <> $1 \
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(&self.owner)
        .bind(self.lease_ms())
        .bind(room as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .filter_map(job)
        .collect();
        taken.sort_by_key(|j| j.id);
        Ok(taken)
    }
}

fn id_list(ids: Option<Vec<u64>>) -> Option<Vec<i64>> {
    ids.map(|ids| ids.into_iter().map(|id| id as i64).collect())
}

fn job(row: &PgRow) -> Option<Job> {
    Some(Job {
        id: row.get::<i64, _>(0) as u64,
        project: ProjectName::new(row.get::<String, _>(1)).ok()?,
        doee: DoeeName::new(row.get::<String, _>(2)).ok()?,
        topic: row.get(3),
        reply_topic: row.get(4),
        payload: Bytes::from(row.get::<Vec<u8>, _>(5)),
        received_ms: row.get::<i64, _>(6) as u64,
        attempts: row.get::<i32, _>(7) as u32,
        due_ms: row.get::<i64, _>(8) as u64,
    })
}

/// Writes what [`Op`]s queue up, a transaction per round.
async fn write_loop(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::new();
    while queue.recv_many(&mut ops, 1024).await > 0 {
        // Kept until written: a job whose `Done` were dropped would stay
        // this CommServer's, leased and never run, until it restarts.
        let mut wait = Duration::from_millis(100);
        while let Err(err) = apply(&pool, &ops).await {
            tracing::error!(cause = %err, retry_in_ms = wait.as_millis() as u64, "cannot write to the shared MQTT inbox");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        ops.clear();
    }
}

async fn apply(pool: &PgPool, ops: &[Op]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for op in ops {
        match op {
            Op::Done(id) => {
                sqlx::query("DELETE FROM isms_mqtt_inbox WHERE id = $1")
                    .bind(*id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Retry {
                id,
                attempts,
                due_ms,
            } => {
                sqlx::query("UPDATE isms_mqtt_inbox SET attempts = $1, due_ms = $2 WHERE id = $3")
                    .bind(*attempts as i32)
                    .bind(*due_ms as i64)
                    .bind(*id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Dead {
                id,
                attempts,
                error,
            } => {
                sqlx::query(
                    "UPDATE isms_mqtt_inbox SET dead = TRUE, attempts = $1, error = $2 WHERE id = $3",
                )
                .bind(*attempts as i32)
                .bind(error)
                .bind(*id as i64)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use isms_test_support::PostgresDatabase;

    fn new_job(project: &str, payload: &str) -> NewJob {
        NewJob {
            project: ProjectName::new(project).unwrap(),
            doee: DoeeName::new("d").unwrap(),
            topic: format!("{project}/in"),
            reply_topic: Some(format!("{project}/out")),
            payload: Bytes::from(payload.to_string()),
        }
    }

    async fn open(db: &PostgresDatabase, owner: &str, lease_ms: u64) -> (Arc<Shared>, Vec<Job>) {
        Shared::open(&SharedConfig {
            url: db.url.clone(),
            owner: owner.into(),
            lease: Duration::from_millis(lease_ms),
        })
        .await
        .unwrap()
    }

    fn payloads(jobs: &[Job]) -> Vec<String> {
        jobs.iter()
            .map(|j| String::from_utf8_lossy(&j.payload).into_owned())
            .collect()
    }

    /// What a CommServer recorded is its own after a restart; once its
    /// lease runs out another takes it over, exactly once, and the first
    /// does not get it back.
    #[tokio::test]
    async fn jobs_of_a_commserver_that_stopped_are_taken_over() {
        let db = PostgresDatabase::create();
        // Two start at once: the schema is made once, without a race.
        let ((a, none_a), (b, none_b)) = tokio::join!(
            open(&db, "commserver@a", 1_000),
            open(&db, "commserver@b", 60_000)
        );
        assert!(none_a.is_empty() && none_b.is_empty());
        let recorded = a
            .record((0..3).map(|i| new_job("plant", &format!("m{i}"))).collect())
            .await
            .unwrap();
        assert_eq!(payloads(&recorded), ["m0", "m1", "m2"]);
        assert!(recorded.windows(2).all(|w| w[0].id < w[1].id));

        // `a` restarts within its lease: its jobs come back to it.
        let (a, own) = open(&db, "commserver@a", 1_000).await;
        assert_eq!(payloads(&own), ["m0", "m1", "m2"]);
        assert!(
            b.renew_and_take_over(100).await.unwrap().is_empty(),
            "still leased"
        );

        // `a` stops for good; past its lease `b` takes them, room allowing.
        Inbox::Shared(a.clone()).done(recorded[0].id);
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let taken = b.renew_and_take_over(1).await.unwrap();
        assert_eq!(payloads(&taken), ["m1"], "no more than its room");
        let taken = b.renew_and_take_over(100).await.unwrap();
        assert_eq!(payloads(&taken), ["m2"], "m0 was done");
        assert!(b.renew_and_take_over(100).await.unwrap().is_empty());
        let (_, own) = open(&db, "commserver@a", 1_000).await;
        assert!(own.is_empty(), "taken over: not a's any more");
        let (_, own) = open(&db, "commserver@b", 60_000).await;
        assert_eq!(payloads(&own), ["m1", "m2"]);
    }

    /// Retries, dead letters, their revival and purge, per project.
    #[tokio::test]
    async fn dead_letters_are_kept_per_project_and_revived_by_whoever_asks() {
        let db = PostgresDatabase::create();
        let (a, _) = open(&db, "commserver@a", 60_000).await;
        let (b, _) = open(&db, "commserver@b", 60_000).await;
        let jobs = a
            .record(vec![
                new_job("plant", "p1"),
                new_job("plant", "p2"),
                new_job("farm", "f1"),
            ])
            .await
            .unwrap();
        let inbox = Inbox::Shared(a.clone());
        inbox.retry(jobs[0].id, 1, 0);
        for job in &jobs {
            inbox.dead(job.id, 2, format!("failed {}", job.id));
        }
        // Written after the fact, in order: the last one tells.
        for _ in 0..100 {
            if inbox.dead_count().await.unwrap() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let plant = ProjectName::new("plant").unwrap();
        let letters = inbox.dead_letters(&plant, 10).await.unwrap();
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].id, jobs[1].id, "newest first");
        assert_eq!(letters[0].attempts, 2);
        assert_eq!(inbox.dead_count().await.unwrap(), 3);

        let revived = Inbox::Shared(b.clone())
            .revive(&plant, Some(vec![jobs[0].id]))
            .await
            .unwrap();
        assert_eq!(payloads(&revived), ["p1"]);
        assert_eq!(revived[0].attempts, 0);
        let (_, own) = open(&db, "commserver@b", 60_000).await;
        assert_eq!(payloads(&own), ["p1"], "the reviver runs it");
        assert_eq!(Inbox::Shared(b).purge(&plant, None).await.unwrap(), 1);
        assert_eq!(inbox.dead_count().await.unwrap(), 1, "farm's is left");
    }
}
