//! Platform state in SQLite: users, tokens, projects, members, Doees and
//! their versions. Binaries live beside it as files named by their sha256.

use crate::manifest::Manifest;
use isms_ipc::doer::{LogLevel, LogLine};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{
    BuildState, DoeeInfo, InvocationRecord, InvocationStatus, LogEntry, LogSource, Member,
    ProjectDetail, ProjectInfo, ProjectTopics, Quotas, Role, TokenInfo, Triggers, UserInfo,
    VersionInfo,
};
use isms_ipc::topic::Namespace;
use isms_ipc::{DoeeName, InvocationId, ProjectName, Username};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;

/// Schema changes, in order; `PRAGMA user_version` counts those applied.
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
    r#"
ALTER TABLE tokens ADD COLUMN name TEXT NOT NULL DEFAULT 'login';
CREATE INDEX tokens_by_user ON tokens(user);
ALTER TABLE projects ADD COLUMN quotas TEXT;
ALTER TABLE versions ADD COLUMN deployed_by TEXT NOT NULL DEFAULT '';
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
"#,
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
];

/// A database error, already worded for a person.
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// The state database.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

/// What creating a project did.
pub enum NewProject {
    /// It exists now, with its creator as its admin.
    Created(ProjectInfo),
    /// A project of that name exists already.
    Exists,
    /// The creator has made the most projects they may (this many).
    OverQuota(u32),
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
    })
}

/// How many hex digits of a token's hash name it in lists.
const TOKEN_ID_LEN: usize = 12;

fn token_id(hash: &str) -> String {
    hash.chars().take(TOKEN_ID_LEN).collect()
}

/// What a token is worth.
pub enum TokenCheck {
    /// It belongs to this user, with this platform role.
    Valid(Username, Role),
    /// It expired then (ms since the epoch).
    Expired {
        /// When.
        expires_ms: u64,
    },
    /// No such token (never issued, or revoked).
    Unknown,
}

/// What deleting a user did.
pub enum DeleteUser {
    /// Gone.
    Deleted,
    /// There was no such user.
    NoSuchUser,
    /// Refused: the platform would have no admin left.
    LastAdmin,
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

    /// Stores a token's hash under a label.
    pub async fn insert_token(
        &self,
        hash: &str,
        user: &Username,
        name: &str,
        expires_ms: u64,
    ) -> StoreResult<TokenInfo> {
        let created_ms = now_ms();
        sqlx::query(
            "INSERT INTO tokens (hash, user, name, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(user.as_str())
        .bind(name)
        .bind(created_ms as i64)
        .bind(expires_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(TokenInfo {
            id: token_id(hash),
            name: name.to_string(),
            created_ms,
            expires_ms,
        })
    }

    /// Who a token belongs to, or why it does not count.
    pub async fn token_user(&self, hash: &str) -> StoreResult<TokenCheck> {
        let row = sqlx::query(
            "SELECT users.name, users.role, tokens.expires_ms FROM tokens \
             JOIN users ON users.name = tokens.user WHERE tokens.hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(TokenCheck::Unknown);
        };
        let expires_ms = row.get::<i64, _>(2) as u64;
        if expires_ms <= now_ms() {
            return Ok(TokenCheck::Expired { expires_ms });
        }
        let name = Username::new(row.get::<String, _>(0)).map_err(|_| decode_err("user name"))?;
        Ok(TokenCheck::Valid(name, parse_role(row.get::<&str, _>(1))))
    }

    /// Revokes a token by its hash; `false` if it did not exist.
    pub async fn revoke_token_hash(&self, hash: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM tokens WHERE hash = ?")
            .bind(hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes one of `user`'s tokens by its id; `false` if they have none
    /// with that id.
    pub async fn revoke_token(&self, user: &Username, id: &str) -> StoreResult<bool> {
        if id.len() != TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let done = sqlx::query("DELETE FROM tokens WHERE user = ? AND substr(hash, 1, ?) = ?")
            .bind(user.as_str())
            .bind(TOKEN_ID_LEN as i64)
            .bind(id.to_ascii_lowercase())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `user`'s unexpired tokens, newest first.
    pub async fn tokens(&self, user: &Username) -> StoreResult<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT hash, name, created_ms, expires_ms FROM tokens \
             WHERE user = ? AND expires_ms > ? ORDER BY created_ms DESC",
        )
        .bind(user.as_str())
        .bind(now_ms() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| TokenInfo {
                id: token_id(row.get::<&str, _>(0)),
                name: row.get(1),
                created_ms: row.get::<i64, _>(2) as u64,
                expires_ms: row.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    /// Every user, by name.
    pub async fn users(&self) -> StoreResult<Vec<UserInfo>> {
        let rows = sqlx::query("SELECT name, role, created_ms FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(UserInfo {
                    name: Username::new(row.get::<String, _>(0))
                        .map_err(|_| decode_err("user name"))?,
                    role: parse_role(row.get::<&str, _>(1)),
                    created_ms: row.get::<i64, _>(2) as u64,
                })
            })
            .collect()
    }

    /// Deletes a user with their tokens and memberships, unless they are
    /// the last admin.
    pub async fn delete_user(&self, name: &Username) -> StoreResult<DeleteUser> {
        let mut tx = self.pool.begin().await?;
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(role) = role else {
            return Ok(DeleteUser::NoSuchUser);
        };
        if parse_role(&role) == Role::Admin {
            let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
                .fetch_one(&mut *tx)
                .await?;
            if admins <= 1 {
                return Ok(DeleteUser::LastAdmin);
            }
        }
        sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DeleteUser::Deleted)
    }

    /// Creates a project with `creator` as its first member; `None` if the
    /// name is taken.
    pub async fn create_project(
        &self,
        name: &ProjectName,
        creator: &Username,
        limit: Option<u32>,
    ) -> StoreResult<NewProject> {
        let created_ms = now_ms();
        let mut tx = self.pool.begin().await?;
        // One statement, so two creations at once cannot both pass the quota.
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO projects (name, created_ms, created_by) \
             SELECT ?1, ?2, ?3 WHERE (SELECT count(*) FROM projects WHERE created_by = ?3) < ?4",
        )
        .bind(name.as_str())
        .bind(created_ms as i64)
        .bind(creator.as_str())
        .bind(limit.map_or(i64::MAX, i64::from))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM projects WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Ok(match (exists, limit) {
                (false, Some(limit)) => NewProject::OverQuota(limit),
                _ => NewProject::Exists,
            });
        }
        sqlx::query("INSERT INTO members (project, user, role) VALUES (?, ?, ?)")
            .bind(name.as_str())
            .bind(creator.as_str())
            .bind(role_name(Role::Admin))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(NewProject::Created(ProjectInfo {
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

    /// A project with its members and quotas (`defaults` where none are set).
    pub async fn project(
        &self,
        name: &ProjectName,
        defaults: Quotas,
    ) -> StoreResult<Option<ProjectDetail>> {
        let row = sqlx::query(
            "SELECT p.created_ms, (SELECT count(*) FROM doees d WHERE d.project = p.name), p.quotas, p.topics \
             FROM projects p WHERE p.name = ?",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let quotas = match row.get::<Option<&str>, _>(2) {
            Some(json) => serde_json::from_str(json).map_err(|_| decode_err("quotas"))?,
            None => defaults,
        };
        let members = sqlx::query("SELECT user, role FROM members WHERE project = ? ORDER BY user")
            .bind(name.as_str())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| {
                Ok(Member {
                    user: Username::new(row.get::<String, _>(0))
                        .map_err(|_| decode_err("user name"))?,
                    role: parse_role(row.get::<&str, _>(1)),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(ProjectDetail {
            info: ProjectInfo {
                name: name.clone(),
                created_ms: row.get::<i64, _>(0) as u64,
                doees: row.get::<i64, _>(1) as u32,
            },
            members,
            quotas,
            topics: namespaces(name, row.get::<Option<&str>, _>(3))?,
        }))
    }

    /// Every project's topic namespaces, `<project>/#` first.
    pub async fn all_topics(&self) -> StoreResult<Vec<ProjectTopics>> {
        let rows = sqlx::query("SELECT name, topics FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let project = ProjectName::new(row.get::<String, _>(0))
                    .map_err(|_| decode_err("project name"))?;
                let namespaces = namespaces(&project, row.get::<Option<&str>, _>(1))?;
                Ok(ProjectTopics {
                    project,
                    namespaces,
                })
            })
            .collect()
    }

    /// Sets the namespaces granted to a project beyond `<project>/#`.
    pub async fn set_topics(&self, name: &ProjectName, granted: &[Namespace]) -> StoreResult<()> {
        let granted: Vec<&str> = granted.iter().map(Namespace::as_str).collect();
        let json = serde_json::to_string(&granted).map_err(|_| decode_err("topics"))?;
        sqlx::query("UPDATE projects SET topics = ? WHERE name = ?")
            .bind(json)
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a project's quotas.
    pub async fn set_quotas(&self, name: &ProjectName, quotas: &Quotas) -> StoreResult<()> {
        let json = serde_json::to_string(quotas).map_err(|_| decode_err("quotas"))?;
        sqlx::query("UPDATE projects SET quotas = ? WHERE name = ?")
            .bind(json)
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a project with everything in it; `false` if it did not exist.
    pub async fn delete_project(&self, name: &ProjectName) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        for table in ["invocations", "logs"] {
            let query = format!("DELETE FROM {table} WHERE project = ?");
            // The table name is one of two constants.
            sqlx::query(sqlx::AssertSqlSafe(query))
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query("DELETE FROM projects WHERE name = ?")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds, changes or (with `None`) removes a member; `false` if the user
    /// does not exist (or, removing, was not a member).
    pub async fn set_member(
        &self,
        project: &ProjectName,
        user: &Username,
        role: Option<Role>,
    ) -> StoreResult<bool> {
        let done = match role {
            Some(role) => sqlx::query(
                "INSERT INTO members (project, user, role) SELECT ?1, name, ?3 FROM users WHERE name = ?2 \
                 ON CONFLICT (project, user) DO UPDATE SET role = excluded.role",
            )
            .bind(project.as_str())
            .bind(user.as_str())
            .bind(role_name(role))
            .execute(&self.pool)
            .await?,
            None => sqlx::query("DELETE FROM members WHERE project = ? AND user = ?")
                .bind(project.as_str())
                .bind(user.as_str())
                .execute(&self.pool)
                .await?,
        };
        Ok(done.rows_affected() > 0)
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
        by: &Username,
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
            "INSERT INTO versions (project, doee, version, build, manifest, created_ms, deployed_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(version)
        .bind(build_name(BuildState::Queued))
        .bind(manifest)
        .bind(now)
        .bind(by.as_str())
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

    /// A project's Doees with their versions; build logs only with `logs`.
    pub async fn doees(
        &self,
        project: &ProjectName,
        only: Option<&DoeeName>,
        logs: bool,
    ) -> StoreResult<Vec<DoeeInfo>> {
        let heads = sqlx::query(
            "SELECT name, active_version FROM doees WHERE project = ?1 AND (?2 IS NULL OR name = ?2) \
             ORDER BY name",
        )
        .bind(project.as_str())
        .bind(only.map(DoeeName::as_str))
        .fetch_all(&self.pool)
        .await?;
        let mut doees = Vec::with_capacity(heads.len());
        for head in heads {
            let name =
                DoeeName::new(head.get::<String, _>(0)).map_err(|_| decode_err("Doee name"))?;
            let active = head.get::<Option<i64>, _>(1).map(|v| v as u32);
            let rows = sqlx::query(
                "SELECT version, build, CASE WHEN ?3 THEN build_log END, created_ms, deployed_by, sha256, manifest \
                 FROM versions WHERE project = ?1 AND doee = ?2 ORDER BY version",
            )
            .bind(project.as_str())
            .bind(name.as_str())
            .bind(logs)
            .fetch_all(&self.pool)
            .await?;
            let mut language = String::new();
            let mut triggers = Triggers::default();
            let mut versions = Vec::with_capacity(rows.len());
            for row in rows {
                let version = row.get::<i64, _>(0) as u32;
                // The active version's triggers, else the latest's.
                if active.is_none() || active == Some(version) {
                    let manifest: Manifest = serde_json::from_str(row.get::<&str, _>(6))
                        .map_err(|_| decode_err("manifest"))?;
                    language = manifest.language.as_str().to_string();
                    triggers = Triggers {
                        http: manifest.http,
                        mqtt: manifest.mqtt,
                    };
                }
                versions.push(VersionInfo {
                    version,
                    build: parse_build(row.get::<&str, _>(1)),
                    build_log: row.get(2),
                    created_ms: row.get::<i64, _>(3) as u64,
                    deployed_by: row.get(4),
                    sha256: row.get(5),
                });
            }
            doees.push(DoeeInfo {
                name,
                language,
                active_version: active,
                triggers,
                versions,
            });
        }
        Ok(doees)
    }

    /// How many Doees a project has, and the Workers its active versions
    /// may use, leaving out one Doee.
    pub async fn usage(&self, project: &ProjectName, except: &DoeeName) -> StoreResult<(u32, u32)> {
        let mut doees = 0;
        let mut workers = 0;
        let rows = sqlx::query(
            "SELECT d.name, v.manifest FROM doees d LEFT JOIN versions v ON v.project = d.project \
             AND v.doee = d.name AND v.version = d.active_version WHERE d.project = ?",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            if row.get::<&str, _>(0) == except.as_str() {
                continue;
            }
            doees += 1;
            if let Some(manifest) = row.get::<Option<&str>, _>(1) {
                let manifest: Manifest =
                    serde_json::from_str(manifest).map_err(|_| decode_err("manifest"))?;
                workers += manifest.resources.concurrency;
            }
        }
        Ok((doees, workers))
    }

    /// Removes a Doee and its versions; `false` if it did not exist.
    pub async fn delete_doee(&self, project: &ProjectName, doee: &DoeeName) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM doees WHERE project = ? AND name = ?")
            .bind(project.as_str())
            .bind(doee.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
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
                 duration_us, cold_start, http_status, error, output, output_truncated) ",
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
                    .push_bind(record.output_truncated);
            });
            insert.push(
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, duration_us = excluded.duration_us, \
                 cold_start = excluded.cold_start, http_status = excluded.http_status, error = excluded.error, \
                 output = excluded.output, output_truncated = excluded.output_truncated \
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
        let rows = sqlx::query(
            "SELECT id, project, doee, version, trigger, status, started_ms, duration_us, cold_start, \
             http_status, error, output, output_truncated FROM invocations WHERE project = ? \
             ORDER BY started_ms DESC, rowid DESC LIMIT ?",
        )
        .bind(project.as_str())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invocation_from_row).collect()
    }

    /// One invocation with its log lines.
    pub async fn invocation(&self, id: InvocationId) -> StoreResult<Option<InvocationRecord>> {
        let row = sqlx::query(
            "SELECT id, project, doee, version, trigger, status, started_ms, duration_us, cold_start, \
             http_status, error, output, output_truncated FROM invocations WHERE id = ?",
        )
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

    /// Forgets invocations and log lines older than `max_age_ms` or beyond
    /// the newest `max_count`, and expired tokens; returns how many rows went.
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
        removed += sqlx::query("DELETE FROM tokens WHERE expires_ms < ?")
            .bind(now_ms() as i64 - 30 * 24 * 3600 * 1000)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed)
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

/// A project's namespaces: its own, then the granted ones stored as JSON.
fn namespaces(project: &ProjectName, granted: Option<&str>) -> StoreResult<Vec<String>> {
    let mut all = vec![Namespace::of_project(project).as_str().to_string()];
    if let Some(json) = granted {
        let granted: Vec<String> = serde_json::from_str(json).map_err(|_| decode_err("topics"))?;
        all.extend(granted);
    }
    Ok(all)
}
