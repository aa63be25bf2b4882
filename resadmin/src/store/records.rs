//! Invocation records and log lines (the Doees' and the builds'), in a
//! SQLite file of their own, `records.db` beside `state.db`.
//!
//! The Doer and the CommServer send records by the thousand a second, and
//! SQLite lets one writer at a time into a file: in a file of their own,
//! their batch writes never make a login, a token check's bookkeeping or a
//! deploy wait. Nothing joins records with the state: a record names its
//! project, and a project's deletion deletes its records here first.

use super::{StoreResult, decode_err, migrate};
use isms_ipc::doer::{LogLevel, LogLine};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{InvocationRecord, InvocationStatus, LogEntry, LogSource};
use isms_ipc::{DoeeName, InvocationId, ProjectName};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection as _, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The records' tables, as the state database's second migration made
/// them and `records.db`'s first makes them: one text for both, so old rows
/// move over column for column. Never edit it: both migrations have run on
/// existing databases; a change to the records' schema is a new entry in
/// [`MIGRATIONS`].
macro_rules! records_tables {
    () => {
        r#"
CREATE TABLE invocations (
    id               TEXT PRIMARY KEY,
    project          TEXT NOT NULL,
    doee             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    trigger          TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_ms       INTEGER NOT NULL,
    duration_us      INTEGER NOT NULL,
    cold_start       INTEGER NOT NULL,
    http_status      INTEGER NOT NULL,
    error            TEXT,
    output           BLOB NOT NULL,
    output_truncated INTEGER NOT NULL
);
CREATE INDEX invocations_by_project ON invocations(project, started_ms);
CREATE TABLE logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project    TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    level      TEXT NOT NULL,
    doee       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    invocation TEXT,
    message    TEXT NOT NULL
);
CREATE INDEX logs_by_project ON logs(project, id);
"#
    };
}
pub(super) use records_tables;

/// Schema changes of `records.db`, in order; `PRAGMA user_version` counts
/// those applied. The tables are those the state database had (its second
/// migration), so that old rows move over as they are.
const MIGRATIONS: &[&str] = &[
    records_tables!(),
    // Which Doer ran each invocation, and on which host (SPEC §10).
    "ALTER TABLE invocations ADD COLUMN instance TEXT NOT NULL DEFAULT '';
     ALTER TABLE invocations ADD COLUMN host TEXT NOT NULL DEFAULT '';",
];

/// The columns of an invocation the state database had, which move over.
const INVOCATION_COLUMNS: &str = "id, project, doee, version, trigger, status, started_ms, \
    duration_us, cold_start, http_status, error, output, output_truncated";

/// The columns of an invocation, in the order [`invocation_from_row`] reads.
const INVOCATION_SELECT: &str = "SELECT id, project, doee, version, trigger, status, started_ms, \
    duration_us, cold_start, http_status, error, output, output_truncated, instance, host \
    FROM invocations";

/// The columns of a log line, its id (the cursor of `logs?after=`) first.
const LOG_COLUMNS: &str = "id, project, at_ms, level, doee, version, invocation, message";

/// The records database.
#[derive(Clone)]
pub struct Records {
    pub(super) pool: SqlitePool,
}

fn parse_level(text: &str) -> LogLevel {
    match text {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "debug" => LogLevel::Debug,
        _ => LogLevel::Info,
    }
}

fn invocation_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<InvocationRecord> {
    Ok(InvocationRecord {
        id: InvocationId::from_str(row.get::<&str, _>(0))
            .map_err(|_| decode_err("invocation id"))?,
        project: ProjectName::from_str(row.get::<&str, _>(1))
            .map_err(|_| decode_err("project name"))?,
        doee: DoeeName::from_str(row.get::<&str, _>(2)).map_err(|_| decode_err("Doee name"))?,
        version: row.get::<i64, _>(3) as u32,
        trigger: serde_json::from_str(row.get::<&str, _>(4)).map_err(|_| decode_err("trigger"))?,
        status: InvocationStatus::parse(row.get::<&str, _>(5))
            .ok_or_else(|| decode_err("status"))?,
        started_ms: row.get::<i64, _>(6) as u64,
        duration_us: row.get::<i64, _>(7) as u64,
        cold_start: row.get(8),
        http_status: row.get::<i64, _>(9) as u16,
        error: row.get(10),
        output: bytes::Bytes::from(row.get::<Vec<u8>, _>(11)),
        output_truncated: row.get(12),
        logs: Vec::new(),
        instance: row.get(13),
        host: row.get(14),
    })
}

impl Records {
    /// Opens (creating if needed) and migrates `records.db` at `path`.
    pub(super) async fn open(path: &Path) -> StoreResult<Records> {
        let options = isms_sqlite::connect_options(
            path,
            isms_sqlite::Durability::Process,
            Duration::from_secs(5),
        );
        // Two connections: the records' one batch writer and a reader for
        // the API; each connection holds its own page cache.
        let pool = isms_sqlite::pool_options(2, None)
            .connect_with(options)
            .await?;
        migrate(&pool, MIGRATIONS).await?;
        Ok(Records { pool })
    }

    /// Moves the records an older Resadmin kept in the state database
    /// (`state`, open on its own connection, which attaches this file) into
    /// this file, then drops them there. Two transactions, each within one
    /// file (WAL keeps a transaction atomic per file, not across files):
    /// the copy commits here first, ignoring rows already here, so a crash
    /// before the drop only means the next start copies nothing new and
    /// drops. Log lines keep their ids, the cursors clients follow.
    pub(super) async fn move_from(
        &self,
        state: &mut SqliteConnection,
        path: &Path,
    ) -> StoreResult<u64> {
        let old: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'invocations'",
        )
        .fetch_optional(&mut *state)
        .await?;
        if old.is_none() {
            return Ok(0);
        }
        let path = path.to_str().ok_or_else(|| {
            sqlx::Error::Configuration(
                format!(
                    "the records database's path {} is not UTF-8",
                    path.display()
                )
                .into(),
            )
        })?;
        sqlx::query("ATTACH DATABASE ? AS records")
            .bind(path)
            .execute(&mut *state)
            .await?;
        let tables = [("invocations", INVOCATION_COLUMNS), ("logs", LOG_COLUMNS)];
        let mut moved = 0;
        let mut copy = state.begin().await?;
        for (table, columns) in tables {
            // Table and column names are constants.
            let query = format!(
                "INSERT OR IGNORE INTO records.{table} ({columns}) SELECT {columns} FROM main.{table}"
            );
            moved += sqlx::query(sqlx::AssertSqlSafe(query))
                .execute(&mut *copy)
                .await?
                .rows_affected();
        }
        copy.commit().await?;
        // records.db syncs at checkpoints only (`synchronous = NORMAL`):
        // the copy is on disk before the originals go.
        sqlx::query("PRAGMA records.wal_checkpoint(FULL)")
            .execute(&mut *state)
            .await?;
        let mut drop = state.begin().await?;
        for (table, _) in tables {
            let query = format!("DROP TABLE main.{table}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(query))
                .execute(&mut *drop)
                .await?;
        }
        drop.commit().await?;
        sqlx::query("DETACH DATABASE records")
            .execute(&mut *state)
            .await?;
        Ok(moved)
    }

    /// Records invocations and their log lines in one transaction. A
    /// pending record never replaces a finished one.
    pub async fn record(&self, records: &[InvocationRecord]) -> StoreResult<()> {
        // Many rows per statement: the Doer sends thousands a second under
        // load, and each statement costs a round trip to SQLite's thread.
        const ROWS_PER_STATEMENT: usize = 256;
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO invocations (id, project, doee, version, trigger, status, started_ms, \
                 duration_us, cold_start, http_status, error, output, output_truncated, instance, host) ",
            );
            insert.push_values(chunk, |mut row, record| {
                row.push_bind(record.id.to_string())
                    .push_bind(record.project.as_str())
                    .push_bind(record.doee.as_str())
                    .push_bind(record.version as i64)
                    .push_bind(serde_json::to_string(&record.trigger).unwrap_or_default())
                    .push_bind(record.status.as_str())
                    .push_bind(record.started_ms as i64)
                    .push_bind(record.duration_us as i64)
                    .push_bind(record.cold_start)
                    .push_bind(record.http_status as i64)
                    .push_bind(record.error.as_deref())
                    .push_bind(record.output.as_ref())
                    .push_bind(record.output_truncated)
                    .push_bind(record.instance.as_str())
                    .push_bind(record.host.as_str());
            });
            insert.push(
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, duration_us = excluded.duration_us, \
                 cold_start = excluded.cold_start, http_status = excluded.http_status, error = excluded.error, \
                 output = excluded.output, output_truncated = excluded.output_truncated, \
                 instance = excluded.instance, host = excluded.host \
                 WHERE excluded.status != 'pending'",
            );
            // Not cached: a batch's row count varies, and a connection keeping
            // a hundred statements of a few thousand parameters each holds
            // megabytes for statements that rarely recur.
            insert.build().persistent(false).execute(&mut *tx).await?;
        }
        let lines: Vec<(&InvocationRecord, &LogLine)> = records
            .iter()
            .flat_map(|record| record.logs.iter().map(move |line| (record, line)))
            .collect();
        for chunk in lines.chunks(ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO logs (project, at_ms, level, doee, version, invocation, message) ",
            );
            insert.push_values(chunk, |mut row, (record, line)| {
                row.push_bind(record.project.as_str())
                    .push_bind(line.at_ms as i64)
                    .push_bind(line.level.as_str())
                    .push_bind(record.doee.as_str())
                    .push_bind(record.version as i64)
                    .push_bind(record.id.to_string())
                    .push_bind(line.message.as_str());
            });
            insert.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// A project's latest invocations, newest first (without their logs).
    pub async fn invocations(
        &self,
        project: &ProjectName,
        limit: u32,
    ) -> StoreResult<Vec<InvocationRecord>> {
        let query = format!(
            "{INVOCATION_SELECT} WHERE project = ? ORDER BY started_ms DESC, rowid DESC LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(project.as_str())
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(invocation_from_row).collect()
    }

    /// One invocation with its log lines.
    pub async fn invocation(&self, id: InvocationId) -> StoreResult<Option<InvocationRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{INVOCATION_SELECT} WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut record = invocation_from_row(&row)?;
        let lines = sqlx::query(
            "SELECT at_ms, level, message FROM logs WHERE project = ? AND invocation = ? ORDER BY id",
        )
        .bind(record.project.as_str())
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        record.logs = lines
            .into_iter()
            .map(|row| LogLine {
                at_ms: row.get::<i64, _>(0) as u64,
                level: parse_level(row.get::<&str, _>(1)),
                message: row.get(2),
            })
            .collect();
        Ok(Some(record))
    }

    /// Appends build output to a project's log.
    pub async fn build_log(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
        level: LogLevel,
        lines: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let at_ms = now_ms() as i64;
        for line in lines {
            sqlx::query(
                "INSERT INTO logs (project, at_ms, level, doee, version, invocation, message) \
                 VALUES (?, ?, ?, ?, ?, NULL, ?)",
            )
            .bind(project.as_str())
            .bind(at_ms)
            .bind(level.as_str())
            .bind(doee.as_str())
            .bind(version as i64)
            .bind(line)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// A project's log lines after `after` (or its latest), oldest first.
    pub async fn logs(
        &self,
        project: &ProjectName,
        after: Option<u64>,
        limit: u32,
    ) -> StoreResult<Vec<LogEntry>> {
        let query = match after {
            Some(_) => {
                "SELECT id, at_ms, level, doee, version, invocation, message FROM logs \
                 WHERE project = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            }
            None => {
                "SELECT * FROM (SELECT id, at_ms, level, doee, version, invocation, message FROM logs \
                 WHERE project = ?1 ORDER BY id DESC LIMIT ?3) ORDER BY id"
            }
        };
        let rows = sqlx::query(query)
            .bind(project.as_str())
            .bind(after.unwrap_or(0) as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let source = match row.get::<Option<&str>, _>(5) {
                    Some(id) => LogSource::Invocation(
                        InvocationId::from_str(id).map_err(|_| decode_err("invocation id"))?,
                    ),
                    None => LogSource::Build,
                };
                Ok(LogEntry {
                    id: row.get::<i64, _>(0) as u64,
                    at_ms: row.get::<i64, _>(1) as u64,
                    level: parse_level(row.get::<&str, _>(2)),
                    doee: DoeeName::from_str(row.get::<&str, _>(3))
                        .map_err(|_| decode_err("Doee name"))?,
                    version: row.get::<i64, _>(4) as u32,
                    source,
                    message: row.get(6),
                })
            })
            .collect()
    }

    /// Forgets a deleted project's records and log lines.
    pub(super) async fn delete_project(&self, project: &ProjectName) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["invocations", "logs"] {
            let query = format!("DELETE FROM {table} WHERE project = ?");
            // The table name is one of two constants.
            sqlx::query(sqlx::AssertSqlSafe(query))
                .bind(project.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Forgets invocations and log lines older than `max_age_ms` or beyond
    /// the newest `max_count`; returns how many rows went.
    pub async fn prune(&self, max_age_ms: u64, max_count: u64) -> StoreResult<u64> {
        let before = now_ms().saturating_sub(max_age_ms) as i64;
        let mut removed = 0;
        for (table, time) in [("invocations", "started_ms"), ("logs", "at_ms")] {
            // Table and column names are constants.
            let query = format!(
                "DELETE FROM {table} WHERE {time} < ?1 OR rowid <= (SELECT max(rowid) FROM {table}) - ?2"
            );
            removed += sqlx::query(sqlx::AssertSqlSafe(query))
                .bind(before)
                .bind(max_count as i64)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}
