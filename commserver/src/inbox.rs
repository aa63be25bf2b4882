//! The MQTT inbox: every message the CommServer accepted and has not yet
//! run to the end, in a SQLite file under the data directory.
//!
//! A message is acknowledged to the broker only once its row is committed
//! with `synchronous = FULL` (the WAL is fsync'd), so a crash of any process
//! after the acknowledgement loses nothing: the rows still there at start
//! run again. One task owns the writing connection and commits whatever
//! has queued up meanwhile in one transaction (group commit): a burst of
//! messages costs one fsync, not one each. Completions ride along in the
//! same commits; losing one to a crash only means the message runs again,
//! which at-least-once allows.

use bytes::Bytes;
use isms_ipc::commserver::DeadLetter;
use isms_ipc::names::now_ms;
use isms_ipc::{DoeeName, ProjectName};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Row, SqliteConnection, SqlitePool};
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// A message waiting to run (or to run again) for one Doee.
#[derive(Clone, Debug)]
pub struct Job {
    /// Its row.
    pub id: u64,
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The topic it arrived on.
    pub topic: String,
    /// Where its output goes, if anywhere.
    pub reply_topic: Option<String>,
    /// The payload.
    pub payload: Bytes,
    /// When it arrived (ms since the epoch).
    pub received_ms: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before (ms since the epoch).
    pub due_ms: u64,
}

/// A message as it arrives, before it has a row.
pub struct NewJob {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The topic.
    pub topic: String,
    /// Where its output goes.
    pub reply_topic: Option<String>,
    /// The payload.
    pub payload: Bytes,
}

enum Op {
    Record(Vec<NewJob>, oneshot::Sender<anyhow::Result<Vec<Job>>>),
    Done(u64),
    Retry { id: u64, attempts: u32, due_ms: u64 },
    Dead { id: u64, attempts: u32, error: String },
}

/// The inbox's handle; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    ops: mpsc::UnboundedSender<Op>,
    reader: SqlitePool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL,
    doee        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    reply_topic TEXT,
    payload     BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_ms      INTEGER NOT NULL,
    dead        INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS inbox_dead ON inbox (dead, project, id);
";

impl Inbox {
    /// Opens (or creates) the inbox at `path`; answers it with the messages
    /// still waiting, oldest first.
    pub async fn open(path: &Path) -> anyhow::Result<(Inbox, Vec<Job>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk before a message is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the MQTT inbox {}: {e}", path.display()))?;
        sqlx::raw_sql(SCHEMA).execute(&mut writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.read_only(true))
            .await?;
        let rows = sqlx::query(
            "SELECT id, project, doee, topic, reply_topic, payload, received_ms, attempts, due_ms \
             FROM inbox WHERE dead = 0 ORDER BY id",
        )
        .fetch_all(&mut writer)
        .await?;
        let mut waiting = Vec::with_capacity(rows.len());
        for row in rows {
            let (Ok(project), Ok(doee)) = (
                ProjectName::new(row.get::<String, _>(1)),
                DoeeName::new(row.get::<String, _>(2)),
            ) else {
                continue;
            };
            waiting.push(Job {
                id: row.get::<i64, _>(0) as u64,
                project,
                doee,
                topic: row.get(3),
                reply_topic: row.get(4),
                payload: Bytes::from(row.get::<Vec<u8>, _>(5)),
                received_ms: row.get::<i64, _>(6) as u64,
                attempts: row.get::<i64, _>(7) as u32,
                due_ms: row.get::<i64, _>(8) as u64,
            });
        }
        let (ops, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, queue));
        Ok((Inbox { ops, reader }, waiting))
    }

    /// Records messages durably; answers them as jobs once on disk.
    pub async fn record(&self, jobs: Vec<NewJob>) -> anyhow::Result<Vec<Job>> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Record(jobs, tx))
            .map_err(|_| anyhow::anyhow!("the inbox writer stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the inbox writer stopped"))?
    }

    /// The message ran to the end: forget it.
    pub fn done(&self, id: u64) {
        let _ = self.ops.send(Op::Done(id));
    }

    /// The message runs again at `due_ms`.
    pub fn retry(&self, id: u64, attempts: u32, due_ms: u64) {
        let _ = self.ops.send(Op::Retry {
            id,
            attempts,
            due_ms,
        });
    }

    /// The message is given up on: keep it as a dead letter.
    pub fn dead(&self, id: u64, attempts: u32, error: String) {
        let _ = self.ops.send(Op::Dead {
            id,
            attempts,
            error,
        });
    }

    /// A project's dead letters, newest first.
    pub async fn dead_letters(
        &self,
        project: &ProjectName,
        limit: u32,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, doee, topic, payload, received_ms, attempts, error FROM inbox \
             WHERE dead = 1 AND project = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(project.as_str())
        .bind(i64::from(limit.min(1000)))
        .fetch_all(&self.reader)
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
                    attempts: row.get::<i64, _>(5) as u32,
                    error: row.get::<Option<String>, _>(6).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// How many dead letters are kept, over every project.
    pub async fn dead_count(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE dead = 1")
            .fetch_one(&self.reader)
            .await?;
        Ok(n as u64)
    }
}

/// Commits whatever has queued up, in one transaction per round.
async fn write_loop(mut conn: SqliteConnection, mut queue: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::new();
    while queue.recv_many(&mut ops, 4096).await > 0 {
        let mut waiting = Vec::new();
        let result = apply(&mut conn, &mut ops, &mut waiting).await;
        for (jobs, reply) in waiting {
            let _ = reply.send(match &result {
                Ok(()) => Ok(jobs),
                Err(err) => Err(anyhow::anyhow!("cannot record in the MQTT inbox: {err}")),
            });
        }
        if let Err(err) = result {
            tracing::error!(cause = %err, "the MQTT inbox could not commit");
        }
        ops.clear();
    }
}

type Recorded = (Vec<Job>, oneshot::Sender<anyhow::Result<Vec<Job>>>);

async fn apply(
    conn: &mut SqliteConnection,
    ops: &mut Vec<Op>,
    recorded: &mut Vec<Recorded>,
) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    let now = now_ms();
    for op in ops.drain(..) {
        match op {
            Op::Record(new, reply) => {
                let mut jobs = Vec::with_capacity(new.len());
                for job in new {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO inbox (project, doee, topic, reply_topic, payload, received_ms, due_ms) \
                         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    )
                    .bind(job.project.as_str())
                    .bind(job.doee.as_str())
                    .bind(&job.topic)
                    .bind(&job.reply_topic)
                    .bind(job.payload.as_ref())
                    .bind(now as i64)
                    .bind(now as i64)
                    .fetch_one(&mut *tx)
                    .await?;
                    jobs.push(Job {
                        id: id as u64,
                        project: job.project,
                        doee: job.doee,
                        topic: job.topic,
                        reply_topic: job.reply_topic,
                        payload: job.payload,
                        received_ms: now,
                        attempts: 0,
                        due_ms: now,
                    });
                }
                recorded.push((jobs, reply));
            }
            Op::Done(id) => {
                sqlx::query("DELETE FROM inbox WHERE id = ?")
                    .bind(id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Retry {
                id,
                attempts,
                due_ms,
            } => {
                sqlx::query("UPDATE inbox SET attempts = ?, due_ms = ? WHERE id = ?")
                    .bind(i64::from(attempts))
                    .bind(due_ms as i64)
                    .bind(id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Op::Dead {
                id,
                attempts,
                error,
            } => {
                sqlx::query("UPDATE inbox SET dead = 1, attempts = ?, error = ? WHERE id = ?")
                    .bind(i64::from(attempts))
                    .bind(error)
                    .bind(id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await
}
