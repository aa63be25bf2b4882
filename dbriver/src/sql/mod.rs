//! SQL: one SQLite file or one PostgreSQL schema per project.

use isms_ipc::dbriver::SqlRows;
use isms_ipc::{Failure, FailureKind, ProjectName};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where SQL databases live.
#[derive(Clone, Debug)]
pub enum SqlBackend {
    /// One SQLite file per project under `dir`.
    Sqlite {
        /// The directory.
        dir: PathBuf,
    },
    /// One schema (and role) per project on a PostgreSQL server.
    Postgres {
        /// `postgres://…` of a role allowed to create roles and schemas.
        url: String,
    },
}

/// Limits on each project's SQL.
#[derive(Clone, Debug)]
pub struct SqlLimits {
    /// Largest database, bytes.
    pub max_db_bytes: u64,
    /// Connections per project.
    pub max_connections: u32,
    /// Longest statement.
    pub statement_timeout: Duration,
    /// Most rows one statement returns.
    pub max_rows: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            max_db_bytes: 1 << 30,
            max_connections: 4,
            statement_timeout: Duration::from_secs(5),
            max_rows: 10_000,
        }
    }
}

/// The SQL databases.
pub struct Sql {
    backend: SqlBackend,
}

impl Sql {
    /// Opens the backend.
    pub async fn open(
        backend: &SqlBackend,
        _limits: SqlLimits,
        _dir: &Path,
    ) -> anyhow::Result<Sql> {
        Ok(Sql {
            backend: backend.clone(),
        })
    }

    /// For logs.
    pub fn describe(&self) -> String {
        format!("{:?}", self.backend)
    }

    /// Runs one statement.
    pub async fn run(
        &self,
        _project: &ProjectName,
        _query: &str,
        _params: &str,
    ) -> Result<SqlRows, Failure> {
        Err(Failure::new(
            FailureKind::Unavailable,
            "SQL is not available yet",
        ))
    }

    /// Removes the project's database.
    pub async fn drop_project(&self, _project: &ProjectName) -> Result<(), Failure> {
        Ok(())
    }
}
