//! Platform state in SQLite: users, tokens, projects, members, Doees and
//! their versions. Binaries live beside it as files named by their sha256.

use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{BuildState, DoeeInfo, ProjectInfo, Role, VersionInfo};
use isms_ipc::{DoeeName, ProjectName, Username};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;

/// Schema changes, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[r#"
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
"#];

/// A database error, already worded for a person.
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// The state database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// A user as stored.
pub struct UserRow {
    /// The name.
    pub name: Username,
    /// The argon2 hash of their password.
    pub password_hash: String,
    /// Their platform role.
    pub role: Role,
}

/// What is needed to run a version.
pub struct VersionRow {
    /// The validated manifest, as JSON.
    pub manifest: String,
    /// Its build.
    pub build: BuildState,
    /// Its binary, once built.
    pub sha256: Option<String>,
}

/// An active version, for routing.
pub struct ActiveRow {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The active version.
    pub version: u32,
    /// Its manifest, as JSON.
    pub manifest: String,
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// Reads a role from the database.
pub fn parse_role(text: &str) -> Role {
    match text {
        "admin" => Role::Admin,
        "developer" => Role::Developer,
        _ => Role::Viewer,
    }
}

fn build_name(state: BuildState) -> &'static str {
    state.as_str()
}

fn parse_build(text: &str) -> BuildState {
    match text {
        "queued" => BuildState::Queued,
        "building" => BuildState::Building,
        "succeeded" => BuildState::Succeeded,
        _ => BuildState::Failed,
    }
}

fn decode_err(what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("corrupt {what} in the state database"))
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub async fn open(path: &Path) -> StoreResult<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let applied: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let mut tx = self.pool.begin().await?;
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

    /// How many users exist.
    pub async fn user_count(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await
    }

    /// Creates a user; `false` if the name is taken.
    pub async fn create_user(
        &self,
        name: &Username,
        password_hash: &str,
        role: Role,
    ) -> StoreResult<bool> {
        let result = sqlx::query("INSERT OR IGNORE INTO users (name, password_hash, role, created_ms) VALUES (?, ?, ?, ?)")
            .bind(name.as_str())
            .bind(password_hash)
            .bind(role_name(role))
            .bind(now_ms() as i64)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// A user by name.
    pub async fn user(&self, name: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query("SELECT name, password_hash, role FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(UserRow {
                name: Username::new(row.get::<String, _>(0))
                    .map_err(|_| decode_err("user name"))?,
                password_hash: row.get(1),
                role: parse_role(row.get::<&str, _>(2)),
            })
        })
        .transpose()
    }

    /// Stores a token's hash.
    pub async fn insert_token(
        &self,
        hash: &str,
        user: &Username,
        expires_ms: u64,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO tokens (hash, user, created_ms, expires_ms) VALUES (?, ?, ?, ?)")
            .bind(hash)
            .bind(user.as_str())
            .bind(now_ms() as i64)
            .bind(expires_ms as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user and role behind an unexpired token.
    pub async fn token_user(&self, hash: &str) -> StoreResult<Option<(Username, Role)>> {
        let row = sqlx::query(
            "SELECT users.name, users.role FROM tokens JOIN users ON users.name = tokens.user \
             WHERE tokens.hash = ? AND tokens.expires_ms > ?",
        )
        .bind(hash)
        .bind(now_ms() as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let name =
                Username::new(row.get::<String, _>(0)).map_err(|_| decode_err("user name"))?;
            Ok((name, parse_role(row.get::<&str, _>(1))))
        })
        .transpose()
    }

    /// Creates a project with `creator` as its first member; `None` if the
    /// name is taken.
    pub async fn create_project(
        &self,
        name: &ProjectName,
        creator: &Username,
        role: Role,
    ) -> StoreResult<Option<ProjectInfo>> {
        let created_ms = now_ms();
        let mut tx = self.pool.begin().await?;
        let inserted =
            sqlx::query("INSERT OR IGNORE INTO projects (name, created_ms) VALUES (?, ?)")
                .bind(name.as_str())
                .bind(created_ms as i64)
                .execute(&mut *tx)
                .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query("INSERT INTO members (project, user, role) VALUES (?, ?, ?)")
            .bind(name.as_str())
            .bind(creator.as_str())
            .bind(role_name(role))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(ProjectInfo {
            name: name.clone(),
            created_ms,
            doees: 0,
        }))
    }

    /// Projects: all of them, or those `user` is a member of.
    pub async fn projects(&self, member: Option<&Username>) -> StoreResult<Vec<ProjectInfo>> {
        let rows = sqlx::query(
            "SELECT p.name, p.created_ms, (SELECT count(*) FROM doees d WHERE d.project = p.name) \
             FROM projects p WHERE ?1 IS NULL OR EXISTS \
             (SELECT 1 FROM members m WHERE m.project = p.name AND m.user = ?1) ORDER BY p.name",
        )
        .bind(member.map(Username::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ProjectInfo {
                    name: ProjectName::new(row.get::<String, _>(0))
                        .map_err(|_| decode_err("project name"))?,
                    created_ms: row.get::<i64, _>(1) as u64,
                    doees: row.get::<i64, _>(2) as u32,
                })
            })
            .collect()
    }

    /// Whether a project exists.
    pub async fn project_exists(&self, name: &ProjectName) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// A user's role in a project, if they are a member.
    pub async fn member_role(
        &self,
        project: &ProjectName,
        user: &Username,
    ) -> StoreResult<Option<Role>> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM members WHERE project = ? AND user = ?")
                .bind(project.as_str())
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(role.as_deref().map(parse_role))
    }

    /// Records a new version of a Doee (creating the Doee on its first
    /// deploy) and returns its number.
    pub async fn new_version(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        manifest: &str,
    ) -> StoreResult<u32> {
        let now = now_ms() as i64;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT OR IGNORE INTO doees (project, name, created_ms) VALUES (?, ?, ?)")
            .bind(project.as_str())
            .bind(doee.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM versions WHERE project = ? AND doee = ?")
                .bind(project.as_str())
                .bind(doee.as_str())
                .fetch_one(&mut *tx)
                .await?;
        let version = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO versions (project, doee, version, build, manifest, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(version)
        .bind(build_name(BuildState::Queued))
        .bind(manifest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version as u32)
    }

    /// Updates a version's build state and log (and binary, once built).
    pub async fn set_build(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
        state: BuildState,
        log: &str,
        sha256: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE versions SET build = ?, build_log = ?, sha256 = coalesce(?, sha256) \
             WHERE project = ? AND doee = ? AND version = ?",
        )
        .bind(build_name(state))
        .bind(log)
        .bind(sha256)
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(version as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes a version the active one.
    pub async fn activate(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE doees SET active_version = ? WHERE project = ? AND name = ?")
            .bind(version as i64)
            .bind(project.as_str())
            .bind(doee.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks builds that were interrupted (the service stopped mid-build) as failed.
    pub async fn fail_interrupted_builds(&self) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE versions SET build = 'failed', build_log = build_log || '\ninterrupted: Resadmin stopped during the build; deploy again' \
             WHERE build IN ('queued', 'building')",
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// A Doee and its versions.
    pub async fn doee(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
    ) -> StoreResult<Option<DoeeInfo>> {
        let active: Option<Option<i64>> =
            sqlx::query_scalar("SELECT active_version FROM doees WHERE project = ? AND name = ?")
                .bind(project.as_str())
                .bind(doee.as_str())
                .fetch_optional(&self.pool)
                .await?;
        let Some(active) = active else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT version, build, build_log, created_ms, sha256 FROM versions \
             WHERE project = ? AND doee = ? ORDER BY version",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .fetch_all(&self.pool)
        .await?;
        let versions = rows
            .into_iter()
            .map(|row| VersionInfo {
                version: row.get::<i64, _>(0) as u32,
                build: parse_build(row.get::<&str, _>(1)),
                build_log: row.get(2),
                created_ms: row.get::<i64, _>(3) as u64,
                sha256: row.get(4),
            })
            .collect();
        Ok(Some(DoeeInfo {
            name: doee.clone(),
            active_version: active.map(|v| v as u32),
            versions,
        }))
    }

    /// One version's manifest, build and binary.
    pub async fn version(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
    ) -> StoreResult<Option<VersionRow>> {
        let row = sqlx::query("SELECT manifest, build, sha256 FROM versions WHERE project = ? AND doee = ? AND version = ?")
            .bind(project.as_str())
            .bind(doee.as_str())
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| VersionRow {
            manifest: row.get(0),
            build: parse_build(row.get::<&str, _>(1)),
            sha256: row.get(2),
        }))
    }

    /// Every Doee's active version, optionally within one project.
    pub async fn active(&self, project: Option<&ProjectName>) -> StoreResult<Vec<ActiveRow>> {
        let rows = sqlx::query(
            "SELECT d.project, d.name, d.active_version, v.manifest FROM doees d \
             JOIN versions v ON v.project = d.project AND v.doee = d.name AND v.version = d.active_version \
             WHERE ?1 IS NULL OR d.project = ?1 ORDER BY d.project, d.name",
        )
        .bind(project.map(ProjectName::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ActiveRow {
                    project: ProjectName::from_str(row.get::<&str, _>(0))
                        .map_err(|_| decode_err("project name"))?,
                    doee: DoeeName::from_str(row.get::<&str, _>(1))
                        .map_err(|_| decode_err("Doee name"))?,
                    version: row.get::<i64, _>(2) as u32,
                    manifest: row.get(3),
                })
            })
            .collect()
    }
}
