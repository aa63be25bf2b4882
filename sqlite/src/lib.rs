//! How ISMS opens a SQLite file, written once.
//!
//! Four stores (Resadmin's state, the CommServer's MQTT store, DBriver's
//! SQL and document files) open SQLite the same way: write-ahead log,
//! created if missing, foreign keys on, a busy timeout. What really differs
//! between them is a parameter here, so the difference stays visible where
//! each store opens: how durable a commit is, how long a writer waits, how
//! many connections a pool holds and whether idle ones close.
//!
//! A crate of its own, owned by no service and depending on `sqlx` alone,
//! so that every service may use it and still depend on no other service.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

/// How much a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk before it returns (`synchronous = FULL`):
    /// for what is acknowledged to someone outside as soon as it is written.
    EveryCommit,
    /// A commit survives the process dying but may be lost if the machine
    /// loses power (`synchronous = NORMAL`, safe from corruption in WAL
    /// mode): for state whose last moments can be lost.
    Process,
}

/// The options to open (creating if missing) the SQLite file at `path` in
/// WAL mode with foreign keys on; a connection that finds the file locked
/// waits up to `busy_timeout`.
pub fn connect_options(
    path: &Path,
    durability: Durability,
    busy_timeout: Duration,
) -> SqliteConnectOptions {
    let synchronous = match durability {
        Durability::EveryCommit => SqliteSynchronous::Full,
        Durability::Process => SqliteSynchronous::Normal,
    };
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(true)
        .busy_timeout(busy_timeout)
}

/// A pool of at most `max_connections`; with `idle` set, it opens them only
/// when needed and closes those idle that long, so a store nobody uses holds
/// no open file.
pub fn pool_options(max_connections: u32, idle: Option<Duration>) -> SqlitePoolOptions {
    let pool = SqlitePoolOptions::new().max_connections(max_connections);
    match idle {
        Some(idle) => pool.min_connections(0).idle_timeout(idle),
        None => pool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_in_wal_mode_with_the_durability_asked() {
        let dir = std::env::temp_dir().join(format!("isms-sqlite-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (durability, expected) in [(Durability::EveryCommit, 2), (Durability::Process, 1)] {
            let path = dir.join(format!("{durability:?}.db"));
            let pool = pool_options(1, None)
                .connect_with(connect_options(&path, durability, Duration::from_secs(1)))
                .await
                .unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&pool)
                .await
                .unwrap();
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .unwrap();
            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(
                (mode.as_str(), synchronous, foreign_keys),
                ("wal", expected, 1)
            );
            pool.close().await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
