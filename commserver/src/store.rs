//! The CommServer's durable state, one SQLite file under the data
//! directory: the MQTT **inbox** (every message accepted for a trigger and
//! not yet run to the end, and the dead letters) and the embedded broker's
//! **sessions** (persistent clients' subscriptions and the messages queued
//! for them) and **retained** messages.
//!
//! Nothing is acknowledged before it is on disk: one task owns the writing
//! connection (`synchronous = FULL`, WAL) and commits whatever queued up
//! meanwhile in one transaction (group commit), so a burst costs one fsync;
//! a message's jobs, its copies for persistent sessions and its retained
//! change go in together. Deletions (a job done, a copy acknowledged) ride
//! in later commits: losing one to a crash only means the message runs or
//! is delivered again, which at-least-once allows.
//!
//! Why one file of this size: the inbox, sessions and retained messages
//! share one writer task and its group commit, which is the point of the
//! file; a tenth of it is tests.

use crate::broker::codec::{Message, QoS};
use bytes::Bytes;
use isms_ipc::commserver::DeadLetter;
use isms_ipc::names::now_ms;
use isms_ipc::{DoeeName, ProjectName};
use sqlx::{AssertSqlSafe, Connection as _, Row, SqliteConnection, SqlitePool};
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

/// A message for a trigger as it arrives, before it has a row.
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

impl From<Job> for NewJob {
    fn from(job: Job) -> NewJob {
        NewJob {
            project: job.project,
            doee: job.doee,
            topic: job.topic,
            reply_topic: job.reply_topic,
            payload: job.payload,
        }
    }
}

/// A persistent session as stored: who owns it and what it subscribed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// Its key: the identity and the client id.
    pub key: String,
    /// Its subscriptions: filter, QoS, no-local.
    pub subscriptions: Vec<(String, QoS, bool)>,
    /// Seconds it outlives a disconnection.
    pub expiry: u32,
}

/// What one commit writes for the broker and the triggers together.
#[derive(Default)]
pub struct Write {
    /// Jobs for triggers.
    pub jobs: Vec<NewJob>,
    /// Copies of a message for persistent sessions, by session key.
    pub copies: Vec<(String, Message)>,
    /// A retained message set (`Some`) or cleared (`None`) on a topic.
    pub retained: Option<(String, Option<Message>)>,
}

/// What a commit wrote: the jobs with their rows, the copies' rows.
pub struct Written {
    /// The jobs, in order.
    pub jobs: Vec<Job>,
    /// The copies' rows, in order.
    pub copies: Vec<u64>,
}

/// What the broker finds at start.
pub struct Saved {
    /// Persistent sessions.
    pub sessions: Vec<SessionRow>,
    /// Their queued copies, oldest first: session key, row, message.
    pub queued: Vec<(String, u64, Message)>,
    /// Retained messages.
    pub retained: Vec<Message>,
}

enum Op {
    Write(Write, oneshot::Sender<anyhow::Result<Written>>),
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
    Revive {
        project: ProjectName,
        ids: Option<Vec<u64>>,
        reply: oneshot::Sender<anyhow::Result<Vec<Job>>>,
    },
    Purge {
        project: ProjectName,
        ids: Option<Vec<u64>>,
        reply: oneshot::Sender<anyhow::Result<u64>>,
    },
    Delivered(Vec<u64>),
    SaveSession(SessionRow),
    DropSession(String),
}

/// The store's handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
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
CREATE TABLE IF NOT EXISTS sessions (
    key           TEXT PRIMARY KEY,
    subscriptions TEXT NOT NULL,
    expiry        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queued (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queued_by_session ON queued (session, id);
CREATE TABLE IF NOT EXISTS retained (
    topic   TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    qos     INTEGER NOT NULL
);
";

impl Store {
    /// Opens (or creates) the store at `path`; answers it with the jobs
    /// still waiting, oldest first.
    pub async fn open(path: &Path) -> anyhow::Result<(Store, Vec<Job>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Every commit reaches the disk before anything is acknowledged.
        let options = isms_sqlite::connect_options(
            path,
            isms_sqlite::Durability::EveryCommit,
            std::time::Duration::from_secs(5),
        );
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the MQTT store {}: {e}", path.display()))?;
        sqlx::raw_sql(SCHEMA).execute(&mut writer).await?;
        let reader = isms_sqlite::pool_options(1, None)
            .connect_with(options.read_only(true))
            .await?;
        let rows = sqlx::query(
            "SELECT id, project, doee, topic, reply_topic, payload, received_ms, attempts, due_ms \
             FROM inbox WHERE dead = 0 ORDER BY id",
        )
        .fetch_all(&mut writer)
        .await?;
        let waiting = rows.iter().filter_map(job).collect();
        let (ops, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, queue));
        Ok((Store { ops, reader }, waiting))
    }

    fn send(&self, op: Op) {
        let _ = self.ops.send(op);
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> Op,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .map_err(|_| anyhow::anyhow!("the MQTT store's writer stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the MQTT store's writer stopped"))?
    }

    /// Writes durably; answers once on disk.
    pub async fn write(&self, write: Write) -> anyhow::Result<Written> {
        self.ask(|reply| Op::Write(write, reply)).await
    }

    /// Writes durably; `reply` gets the answer once on disk. Answers come in
    /// the order of the calls.
    pub fn write_then(&self, write: Write, reply: oneshot::Sender<anyhow::Result<Written>>) {
        self.send(Op::Write(write, reply));
    }

    /// Records jobs durably; answers them once on disk.
    pub async fn record(&self, jobs: Vec<NewJob>) -> anyhow::Result<Vec<Job>> {
        self.write(Write {
            jobs,
            ..Write::default()
        })
        .await
        .map(|w| w.jobs)
    }

    /// The job ran to the end: forget it.
    pub fn done(&self, id: u64) {
        self.send(Op::Done(id));
    }

    /// The job runs again at `due_ms`.
    pub fn retry(&self, id: u64, attempts: u32, due_ms: u64) {
        self.send(Op::Retry {
            id,
            attempts,
            due_ms,
        });
    }

    /// The job is given up on: keep it as a dead letter.
    pub fn dead(&self, id: u64, attempts: u32, error: String) {
        self.send(Op::Dead {
            id,
            attempts,
            error,
        });
    }

    /// Makes a project's dead letters (those of `ids`, or all) jobs again,
    /// due now with no attempt spent; answers them.
    pub async fn revive(
        &self,
        project: &ProjectName,
        ids: Option<Vec<u64>>,
    ) -> anyhow::Result<Vec<Job>> {
        let project = project.clone();
        self.ask(|reply| Op::Revive {
            project,
            ids,
            reply,
        })
        .await
    }

    /// Deletes a project's dead letters (those of `ids`, or all); answers how many.
    pub async fn purge(&self, project: &ProjectName, ids: Option<Vec<u64>>) -> anyhow::Result<u64> {
        let project = project.clone();
        self.ask(|reply| Op::Purge {
            project,
            ids,
            reply,
        })
        .await
    }

    /// Copies delivered to their sessions: forget them.
    pub fn delivered(&self, rows: Vec<u64>) {
        if !rows.is_empty() {
            self.send(Op::Delivered(rows));
        }
    }

    /// Saves a persistent session (its queued copies stay).
    pub fn save_session(&self, row: SessionRow) {
        self.send(Op::SaveSession(row));
    }

    /// Forgets a session and what was queued for it.
    pub fn drop_session(&self, key: String) {
        self.send(Op::DropSession(key));
    }

    /// The broker's saved state.
    pub async fn saved(&self) -> anyhow::Result<Saved> {
        let sessions = sqlx::query("SELECT key, subscriptions, expiry FROM sessions")
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .filter_map(|row| {
                let subscriptions: Vec<(String, u8, bool)> =
                    serde_json::from_str(row.get::<&str, _>(1)).ok()?;
                Some(SessionRow {
                    key: row.get(0),
                    subscriptions: subscriptions
                        .into_iter()
                        .filter_map(|(f, q, n)| Some((f, QoS::from_u8(q)?, n)))
                        .collect(),
                    expiry: row.get::<i64, _>(2) as u32,
                })
            })
            .collect();
        let queued =
            sqlx::query("SELECT session, id, topic, payload, qos, retain FROM queued ORDER BY id")
                .fetch_all(&self.reader)
                .await?
                .into_iter()
                .map(|row| {
                    let message = Message {
                        topic: row.get(2),
                        payload: Bytes::from(row.get::<Vec<u8>, _>(3)),
                        qos: QoS::from_u8(row.get::<i64, _>(4) as u8).unwrap_or(QoS::AtLeastOnce),
                        retain: row.get::<i64, _>(5) != 0,
                    };
                    (row.get(0), row.get::<i64, _>(1) as u64, message)
                })
                .collect();
        let retained = sqlx::query("SELECT topic, payload, qos FROM retained")
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(|row| Message {
                topic: row.get(0),
                payload: Bytes::from(row.get::<Vec<u8>, _>(1)),
                qos: QoS::from_u8(row.get::<i64, _>(2) as u8).unwrap_or(QoS::AtMostOnce),
                retain: true,
            })
            .collect();
        Ok(Saved {
            sessions,
            queued,
            retained,
        })
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

fn job(row: &sqlx::sqlite::SqliteRow) -> Option<Job> {
    Some(Job {
        id: row.get::<i64, _>(0) as u64,
        project: ProjectName::new(row.get::<String, _>(1)).ok()?,
        doee: DoeeName::new(row.get::<String, _>(2)).ok()?,
        topic: row.get(3),
        reply_topic: row.get(4),
        payload: Bytes::from(row.get::<Vec<u8>, _>(5)),
        received_ms: row.get::<i64, _>(6) as u64,
        attempts: row.get::<i64, _>(7) as u32,
        due_ms: row.get::<i64, _>(8) as u64,
    })
}

/// An answer owed once the transaction commits.
enum Owed {
    Written(Written, oneshot::Sender<anyhow::Result<Written>>),
    Revived(Vec<Job>, oneshot::Sender<anyhow::Result<Vec<Job>>>),
    Purged(u64, oneshot::Sender<anyhow::Result<u64>>),
}

/// Commits whatever has queued up, in one transaction per round.
async fn write_loop(mut conn: SqliteConnection, mut queue: mpsc::UnboundedReceiver<Op>) {
    let mut ops = Vec::new();
    while queue.recv_many(&mut ops, 4096).await > 0 {
        let mut owed = Vec::new();
        let result = apply(&mut conn, &mut ops, &mut owed).await;
        let failed = |what: &str, err: &sqlx::Error| {
            anyhow::anyhow!("cannot {what} in the MQTT store: {err}")
        };
        for answer in owed {
            match (answer, &result) {
                (Owed::Written(w, reply), Ok(())) => drop(reply.send(Ok(w))),
                (Owed::Written(_, reply), Err(err)) => drop(reply.send(Err(failed("write", err)))),
                (Owed::Revived(j, reply), Ok(())) => drop(reply.send(Ok(j))),
                (Owed::Revived(_, reply), Err(err)) => drop(reply.send(Err(failed("revive", err)))),
                (Owed::Purged(n, reply), Ok(())) => drop(reply.send(Ok(n))),
                (Owed::Purged(_, reply), Err(err)) => drop(reply.send(Err(failed("purge", err)))),
            }
        }
        if let Err(err) = result {
            tracing::error!(cause = %err, "the MQTT store could not commit");
        }
        ops.clear();
    }
}

/// `ids` as a JSON array for `json_each`, or `None` for every row.
fn id_list(ids: &Option<Vec<u64>>) -> Option<String> {
    ids.as_ref()
        .map(|ids| serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
}

/// Rows per multi-row INSERT: well under SQLite's bound on parameters.
const ROWS_PER_INSERT: usize = 100;

/// Inserts jobs, a statement per [`ROWS_PER_INSERT`]; their rows in order.
async fn insert_jobs(
    tx: &mut SqliteConnection,
    jobs: &[&NewJob],
    now: u64,
) -> sqlx::Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO inbox (project, doee, topic, reply_topic, payload, received_ms, due_ms) \
             VALUES {values} RETURNING id"
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
                .bind(now as i64);
        }
        // Rows are numbered in the order they are inserted, which is the
        // order of VALUES; RETURNING's own order is unspecified.
        let mut chunk_ids = query.fetch_all(&mut *tx).await?;
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids.into_iter().map(|id| id as u64));
    }
    Ok(ids)
}

/// Inserts copies for sessions, as [`insert_jobs`].
async fn insert_copies(
    tx: &mut SqliteConnection,
    copies: &[&(String, Message)],
) -> sqlx::Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(copies.len());
    for chunk in copies.chunks(ROWS_PER_INSERT) {
        let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO queued (session, topic, payload, qos, retain) VALUES {values} RETURNING id"
        );
        let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
        for (session, message) in chunk {
            query = query
                .bind(session)
                .bind(&message.topic)
                .bind(message.payload.as_ref())
                .bind(message.qos as i64)
                .bind(i64::from(message.retain));
        }
        let mut chunk_ids = query.fetch_all(&mut *tx).await?;
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids.into_iter().map(|id| id as u64));
    }
    Ok(ids)
}

/// Which table rows are deleted from.
#[derive(Clone, Copy)]
enum Table {
    Inbox,
    Queued,
}

/// Deletes rows by id, one statement for them all.
async fn delete_rows(tx: &mut SqliteConnection, table: Table, ids: &[u64]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = match table {
        Table::Inbox => "DELETE FROM inbox WHERE id IN (SELECT value FROM json_each(?))",
        Table::Queued => "DELETE FROM queued WHERE id IN (SELECT value FROM json_each(?))",
    };
    sqlx::query(sql)
        .bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Sets or clears a retained message.
async fn retain(
    tx: &mut SqliteConnection,
    change: Option<(String, Option<Message>)>,
) -> sqlx::Result<()> {
    match change {
        Some((topic, Some(message))) => {
            sqlx::query("INSERT OR REPLACE INTO retained (topic, payload, qos) VALUES (?, ?, ?)")
                .bind(topic)
                .bind(message.payload.as_ref())
                .bind(message.qos as i64)
                .execute(&mut *tx)
                .await?;
        }
        Some((topic, None)) => {
            sqlx::query("DELETE FROM retained WHERE topic = ?")
                .bind(topic)
                .execute(&mut *tx)
                .await?;
        }
        None => {}
    }
    Ok(())
}

/// Applies the ops in order, in one transaction; runs of writes and of
/// deletions are merged into a few statements each (every statement is a
/// round trip to sqlx's SQLite thread, which costs more than the disk).
async fn apply(
    conn: &mut SqliteConnection,
    ops: &mut Vec<Op>,
    owed: &mut Vec<Owed>,
) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    let now = now_ms();
    let mut ops = ops.drain(..).peekable();
    while let Some(op) = ops.next() {
        match op {
            Op::Write(first, reply) => {
                let mut writes = vec![(first, reply)];
                while let Some(Op::Write(..)) = ops.peek() {
                    if let Some(Op::Write(write, reply)) = ops.next() {
                        writes.push((write, reply));
                    }
                }
                let jobs: Vec<&NewJob> = writes.iter().flat_map(|(w, _)| &w.jobs).collect();
                let mut job_ids = insert_jobs(&mut tx, &jobs, now).await?.into_iter();
                let copies: Vec<&(String, Message)> =
                    writes.iter().flat_map(|(w, _)| &w.copies).collect();
                let mut copy_ids = insert_copies(&mut tx, &copies).await?.into_iter();
                for (write, reply) in writes {
                    retain(&mut tx, write.retained).await?;
                    let copies = copy_ids.by_ref().take(write.copies.len()).collect();
                    let jobs = write
                        .jobs
                        .into_iter()
                        .zip(job_ids.by_ref())
                        .map(|(job, id)| Job {
                            id,
                            project: job.project,
                            doee: job.doee,
                            topic: job.topic,
                            reply_topic: job.reply_topic,
                            payload: job.payload,
                            received_ms: now,
                            attempts: 0,
                            due_ms: now,
                        })
                        .collect();
                    owed.push(Owed::Written(Written { jobs, copies }, reply));
                }
            }
            Op::Done(first) => {
                let mut ids = vec![first];
                while let Some(Op::Done(id)) = ops.peek() {
                    ids.push(*id);
                    ops.next();
                }
                delete_rows(&mut tx, Table::Inbox, &ids).await?;
            }
            Op::Delivered(first) => {
                let mut rows = first;
                while let Some(Op::Delivered(more)) = ops.peek() {
                    rows.extend(more.iter().copied());
                    ops.next();
                }
                delete_rows(&mut tx, Table::Queued, &rows).await?;
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
            Op::Revive {
                project,
                ids,
                reply,
            } => {
                let rows = sqlx::query(
                    "UPDATE inbox SET dead = 0, attempts = 0, error = NULL, due_ms = ?1 \
                     WHERE dead = 1 AND project = ?2 \
                     AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) \
                     RETURNING id, project, doee, topic, reply_topic, payload, received_ms, attempts, due_ms",
                )
                .bind(now as i64)
                .bind(project.as_str())
                .bind(id_list(&ids))
                .fetch_all(&mut *tx)
                .await?;
                owed.push(Owed::Revived(rows.iter().filter_map(job).collect(), reply));
            }
            Op::Purge {
                project,
                ids,
                reply,
            } => {
                let done = sqlx::query(
                    "DELETE FROM inbox WHERE dead = 1 AND project = ?1 \
                     AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))",
                )
                .bind(project.as_str())
                .bind(id_list(&ids))
                .execute(&mut *tx)
                .await?;
                owed.push(Owed::Purged(done.rows_affected(), reply));
            }
            Op::SaveSession(row) => {
                let subscriptions: Vec<(&str, u8, bool)> = row
                    .subscriptions
                    .iter()
                    .map(|(f, q, n)| (f.as_str(), *q as u8, *n))
                    .collect();
                sqlx::query(
                    "INSERT OR REPLACE INTO sessions (key, subscriptions, expiry) VALUES (?, ?, ?)",
                )
                .bind(&row.key)
                .bind(serde_json::to_string(&subscriptions).unwrap_or_else(|_| "[]".into()))
                .bind(i64::from(row.expiry))
                .execute(&mut *tx)
                .await?;
            }
            Op::DropSession(key) => {
                sqlx::query("DELETE FROM sessions WHERE key = ?")
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM queued WHERE session = ?")
                    .bind(&key)
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

    fn job(topic: &str) -> NewJob {
        NewJob {
            project: ProjectName::new("p").unwrap(),
            doee: DoeeName::new("d").unwrap(),
            topic: topic.into(),
            reply_topic: None,
            payload: Bytes::from(topic.to_string()),
        }
    }

    fn copy(session: &str, topic: &str) -> (String, Message) {
        (
            session.into(),
            Message {
                topic: topic.into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtLeastOnce,
                retain: false,
            },
        )
    }

    /// Writes merged into one commit each get back their own rows, in
    /// order; what was done is gone after a restart, the rest is there.
    #[tokio::test(flavor = "current_thread")]
    async fn merged_writes_answer_each_its_rows_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("isms-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("mqtt.db");
        let (store, waiting) = Store::open(&path).await.unwrap();
        assert!(waiting.is_empty());
        let mut answers = Vec::new();
        for i in 0..250 {
            let (tx, rx) = oneshot::channel();
            store.write_then(
                Write {
                    jobs: vec![job(&format!("t/{i}/a")), job(&format!("t/{i}/b"))],
                    copies: vec![copy("s", &format!("t/{i}"))],
                    retained: None,
                },
                tx,
            );
            answers.push(rx);
        }
        let mut jobs = Vec::new();
        let mut copies = Vec::new();
        for (i, rx) in answers.into_iter().enumerate() {
            let written = rx.await.unwrap().unwrap();
            assert_eq!(written.jobs.len(), 2);
            assert_eq!(written.jobs[0].topic, format!("t/{i}/a"));
            copies.extend(written.copies);
            jobs.extend(written.jobs);
        }
        assert!(jobs.windows(2).all(|w| w[0].id < w[1].id), "rows in order");
        for job in &jobs[..100] {
            store.done(job.id);
        }
        store.delivered(copies[..10].to_vec());
        store.save_session(SessionRow {
            key: "s".into(),
            subscriptions: vec![("t/#".into(), QoS::AtLeastOnce, false)],
            expiry: 60,
        });
        // A write after them all: answered once they are on disk too.
        store.record(Vec::new()).await.unwrap();
        drop(store);
        let (store, waiting) = Store::open(&path).await.unwrap();
        assert_eq!(waiting.len(), 400);
        assert_eq!(waiting[0].id, jobs[100].id);
        assert_eq!(waiting[0].payload, Bytes::from(jobs[100].topic.clone()));
        let saved = store.saved().await.unwrap();
        assert_eq!(saved.sessions.len(), 1);
        assert_eq!(saved.queued.len(), 240);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
