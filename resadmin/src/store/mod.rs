//! Platform state in SQLite, in two files of Resadmin's data directory.
//! `state.db` holds who and what: [`accounts`] (users, tokens), [`projects`]
//! (members, quotas, topics), [`doees`] (versions, builds, what is active)
//! and devices (`crate::devices`). `records.db` holds what happened:
//! [`records`] (invocations and log lines), written in large batches under
//! its own write lock. Binaries live beside them as files named by their
//! sha256.

pub mod accounts;
pub mod doees;
pub mod projects;
pub mod records;

pub use accounts::{DeleteUser, TokenCheck, UserRow};
pub use doees::{ActiveRow, VersionRow};
pub use projects::NewProject;
pub use records::Records;
use records::records_tables;

use isms_ipc::names::now_ms;
use isms_ipc::resadmin::Role;
use sqlx::Connection as _;
use sqlx::sqlite::SqlitePool;
use std::path::Path;
use std::time::Duration;

/// Schema changes of `state.db`, in order; `PRAGMA user_version` counts
/// those applied. Kept as they ran: the invocations and logs the second one
/// creates have moved to `records.db` since, and leave at every open (see
/// [`Records::move_from`]).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
);
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE projects (
    name       TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE members (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    user    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role    TEXT NOT NULL,
    PRIMARY KEY (project, user)
);
CREATE TABLE doees (
    project        TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    active_version INTEGER,
    created_ms     INTEGER NOT NULL,
    PRIMARY KEY (project, name)
);
CREATE TABLE versions (
    project    TEXT NOT NULL,
    doee       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    build      TEXT NOT NULL,
    build_log  TEXT NOT NULL DEFAULT '',
    manifest   TEXT NOT NULL,
    sha256     TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (project, doee, version),
    FOREIGN KEY (project, doee) REFERENCES doees(project, name) ON DELETE CASCADE
);
"#,
    concat!(
        r#"
ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT 'login';
CREATE INDEX tokens_by_user ON tokens(user);
ALTER TABLE projects ADD COLUMN quotas TEXT;
ALTER TABLE versions ADD COLUMN deployed_by TEXT NOT NULL DEFAULT '';
"#,
        records_tables!()
    ),
    // Topic namespaces an admin granted beyond `<project>/#`, a JSON array.
    "ALTER TABLE projects ADD COLUMN topics TEXT;",
    // Who created a project, for the quota of projects per user.
    "ALTER TABLE projects ADD COLUMN created_by TEXT;
     CREATE INDEX projects_by_creator ON projects(created_by);",
    // MQTT devices: their secrets only as a sha256.
    "CREATE TABLE devices (
        project     TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        PRIMARY KEY (project, name)
    );",
    // Project secrets, sealed (see crate::secrets): nonce, ciphertext, tag.
    "CREATE TABLE secrets (
        project    TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        sealed     BLOB NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (project, name)
    );",
    // Schedules' firings (see crate::schedules), named by their timing.
    "CREATE TABLE schedules (
        project          TEXT NOT NULL,
        doee             TEXT NOT NULL,
        timing           TEXT NOT NULL,
        last_ms          INTEGER NOT NULL,
        claimant         INTEGER NOT NULL DEFAULT 0,
        fired_ms         INTEGER,
        running_ms       INTEGER NOT NULL DEFAULT 0,
        running_until_ms INTEGER NOT NULL DEFAULT 0,
        skipped          INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (project, doee, timing),
        FOREIGN KEY (project, doee) REFERENCES doees(project, name) ON DELETE CASCADE
    );",
];

/// A database error, already worded for a person.
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// The state database, with the records database beside it.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    /// The same file, on a connection whose every commit is on disk
    /// before it returns: for schedules' claims (see crate::schedules).
    pub(crate) durable: SqlitePool,
    /// Invocation records and log lines, in their own file.
    pub records: Records,
}

fn decode_err(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("corrupt {what} in the state database"))
}

/// Reads a role from the database: an unknown one is corruption, never a
/// viewer.
fn parse_role(text: &str) -> StoreResult<Role> {
    text.parse().map_err(|_| decode_err("role"))
}

impl Store {
    /// Opens (creating if needed) and migrates `state.db` and `records.db`
    /// in `dir`, moving records an older Resadmin kept in `state.db`.
    pub async fn open(dir: &Path) -> StoreResult<Store> {
        let state = dir.join("state.db");
        let options = isms_sqlite::connect_options(
            &state,
            isms_sqlite::Durability::Process,
            Duration::from_secs(5),
        );
        let pool = isms_sqlite::pool_options(4, None)
            .connect_with(options.clone())
            .await?;
        migrate(&pool, MIGRATIONS).await?;
        let durable = isms_sqlite::pool_options(1, Some(Duration::from_secs(60)))
            .connect_with(isms_sqlite::connect_options(
                &state,
                isms_sqlite::Durability::EveryCommit,
                Duration::from_secs(5),
            ))
            .await?;
        let records_path = dir.join("records.db");
        let records = Records::open(&records_path).await?;
        // On a connection of its own: the move attaches the records file.
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        let moved = records.move_from(&mut conn, &records_path).await?;
        conn.close().await?;
        if moved > 0 {
            tracing::info!(
                moved,
                "moved invocation records and log lines to records.db"
            );
        }
        Ok(Store {
            pool,
            durable,
            records,
        })
    }

    /// Forgets invocations and log lines older than `max_age_ms` or beyond
    /// the newest `max_count`, and tokens expired a month ago; returns how
    /// many rows went.
    pub async fn prune(&self, max_age_ms: u64, max_count: u64) -> StoreResult<u64> {
        let mut removed = self.records.prune(max_age_ms, max_count).await?;
        removed += sqlx::query("DELETE FROM tokens WHERE expires_ms < ?")
            .bind(now_ms() as i64 - 30 * 24 * 3600 * 1000)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed)
    }
}

/// Applies the `migrations` a database has not had yet, each in its own
/// transaction with the count it brings the database to.
async fn migrate(pool: &SqlitePool, migrations: &[&str]) -> StoreResult<()> {
    let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    for (i, migration) in migrations.iter().enumerate().skip(applied as usize) {
        let mut tx = pool.begin().await?;
        // Constant schema text and an integer: nothing from outside.
        sqlx::raw_sql(sqlx::AssertSqlSafe(*migration))
            .execute(&mut *tx)
            .await?;
        let pragma = format!("PRAGMA user_version = {}", i + 1);
        sqlx::raw_sql(sqlx::AssertSqlSafe(pragma))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use isms_ipc::ProjectName;

    /// A data directory as an older Resadmin left it: records in `state.db`.
    #[tokio::test]
    async fn records_an_older_state_database_kept_move_to_their_own_file() {
        let dir = std::env::temp_dir().join(format!("isms-store-move-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = isms_sqlite::connect_options(
            &dir.join("state.db"),
            isms_sqlite::Durability::Process,
            Duration::from_secs(5),
        );
        let old = isms_sqlite::pool_options(1, None)
            .connect_with(options)
            .await
            .unwrap();
        migrate(&old, MIGRATIONS).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO invocations VALUES ('00000000000000000000000000000001', 'p', 'd', 1, \
             '\"Http\"', 'ok', 5, 7, 0, 200, NULL, x'', 0); \
             INSERT INTO logs (id, project, at_ms, level, doee, version, invocation, message) \
             VALUES (41, 'p', 5, 'info', 'd', 1, NULL, 'built');",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = Store::open(&dir).await.unwrap();
        let left: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE name = 'invocations'")
                .fetch_optional(&store.pool)
                .await
                .unwrap();
        assert_eq!(left, None, "the old tables are dropped");
        let project = ProjectName::new("p").unwrap();
        let logs = store.records.logs(&project, None, 10).await.unwrap();
        assert_eq!(
            logs.iter()
                .map(|l| (l.id, l.message.as_str()))
                .collect::<Vec<_>>(),
            [(41, "built")],
            "log lines keep their ids, the cursors clients hold"
        );
        let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM invocations")
            .fetch_one(&store.records.pool)
            .await
            .unwrap();
        assert_eq!(moved, 1);

        // Opening again finds nothing left to move.
        drop(store);
        let store = Store::open(&dir).await.unwrap();
        assert_eq!(
            store.records.logs(&project, None, 10).await.unwrap().len(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
