//! PostgreSQL: one schema per project, owned by a login role of its own.
//!
//! A project's statements run on connections that log in as the project's
//! role, which owns the project's schema and holds no other right: another
//! project's schema is not readable whatever `search_path` or qualified name
//! a statement uses, and `COPY … PROGRAM`, server files, extensions and
//! other roles need rights it does not have. Its password is derived from a
//! secret in the data directory, so nothing per project is stored. The
//! role's connection limit caps its connections; settings a statement
//! changes are put back when the connection returns to the pool.
//!
//! Why one file of this size: the backend, its roles and the conversion of
//! rows to JSON belong to one connection's life; the tail is tests.

use super::{Error, Param, SqlLimits, busy, full, internal, read_rows, timed_out};
use anyhow::Context as _;
use isms_ipc::dbriver::SqlRows;
use isms_ipc::{Failure, FailureKind, ProjectName};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, PgTypeInfo, PgValueFormat,
    Postgres,
};
use sqlx::{AssertSqlSafe, Column, Executor, Row, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections are closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// How long a measured schema size is trusted.
const SIZE_FRESH: Duration = Duration::from_secs(5);

/// The projects' schemas on one server.
pub struct Databases {
    admin: PgPool,
    options: PgConnectOptions,
    secret: Vec<u8>,
    /// Roles are shared by every database of a server: a project's role is
    /// named after the database too (`isms<hash>_<project>`), so two ISMS
    /// installations on one server never share one.
    role_prefix: String,
    limits: SqlLimits,
    projects: Mutex<HashMap<ProjectName, Project>>,
}

#[derive(Clone)]
struct Project {
    pool: PgPool,
    /// The schema's size in bytes, and when it was measured.
    size: Option<(u64, Instant)>,
}

/// `<prefix>_<project>`, with a hash in place of the tail of a name too
/// long for PostgreSQL's 63 bytes.
fn identifier(prefix: &str, project: &ProjectName) -> String {
    let name = format!("{prefix}_{project}");
    if name.len() <= 63 {
        return name;
    }
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", &name[..46])
}

/// A project's schema: `isms_<project>`, within this database.
fn schema(project: &ProjectName) -> String {
    identifier("isms", project)
}

/// `"name"` for SQL text; names here are `[a-z0-9_-]`, so no quote inside.
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

impl Databases {
    /// Connects as the administering role and checks it may create roles.
    pub async fn open(url: &str, limits: SqlLimits, dir: &Path) -> anyhow::Result<Databases> {
        let options = PgConnectOptions::from_str(url)
            .context("dbriver.sql_url is not a valid PostgreSQL URL")?;
        let admin = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", host(&options)))?;
        let (can_create_roles,): (bool,) = sqlx::query_as(
            "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&admin)
        .await
        .context("cannot read the PostgreSQL role's rights")?;
        if !can_create_roles {
            anyhow::bail!(
                "the PostgreSQL role of dbriver.sql_url must have CREATEROLE (ISMS gives each project a role of its own)"
            );
        }
        let database: (String,) = sqlx::query_as("SELECT current_database()")
            .fetch_one(&admin)
            .await
            .context("cannot read the PostgreSQL database's name")?;
        let hash = Sha256::digest(database.0.as_bytes());
        let role_prefix = format!("isms{:02x}{:02x}{:02x}", hash[0], hash[1], hash[2]);
        Ok(Databases {
            admin,
            options,
            role_prefix,
            secret: secret(dir)?,
            limits,
            projects: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "PostgreSQL at {}, database {}",
            host(&self.options),
            self.options.get_database().unwrap_or("(default)")
        )
    }

    fn role(&self, project: &ProjectName) -> String {
        identifier(&self.role_prefix, project)
    }

    fn password(&self, role: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(&self.secret);
        hasher.update(role.as_bytes());
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The project's pool, creating its role and schema on first use.
    async fn project(&self, project: &ProjectName) -> Result<Project, Failure> {
        if let Some(known) = self.lock()?.get(project) {
            return Ok(known.clone());
        }
        let role = self.role(project);
        let password = self.password(&role);
        self.provision(&role, &schema(project), &password)
            .await
            .map_err(|e| internal("cannot create the project's PostgreSQL role and schema", e))?;
        let settings = session_settings(&schema(project), &self.limits);
        let reset = format!("ROLLBACK; {settings}");
        let pool = PgPoolOptions::new()
            .max_connections(self.limits.max_connections)
            .min_connections(0)
            .idle_timeout(IDLE)
            .acquire_timeout(self.limits.statement_timeout)
            .after_connect(move |conn, _| {
                let settings = settings.clone();
                Box::pin(async move {
                    conn.execute(sqlx::raw_sql(AssertSqlSafe(settings))).await?;
                    Ok(())
                })
            })
            // A statement may have left a transaction open or changed its
            // session's settings: both are undone before the next call.
            .after_release(move |conn, _| {
                let reset = reset.clone();
                Box::pin(async move {
                    conn.execute(sqlx::raw_sql(AssertSqlSafe(reset))).await?;
                    Ok(true)
                })
            })
            .connect_lazy_with(
                self.options
                    .clone()
                    .username(&role)
                    .password(&password)
                    .application_name("isms-dbriver"),
            );
        let entry = Project { pool, size: None };
        self.lock()?.insert(project.clone(), entry.clone());
        Ok(entry)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<ProjectName, Project>>, Failure> {
        self.projects
            .lock()
            .map_err(|_| Failure::internal("DBriver's project table is poisoned"))
    }

    /// Creates (or brings up to date) the project's role and schema.
    async fn provision(&self, role: &str, schema: &str, password: &str) -> Result<(), sqlx::Error> {
        let mut admin = self.admin.acquire().await?;
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *admin)
            .await?;
        let quoted_role = quoted(role);
        // Identifiers and the password are ours (hex and `[a-z0-9_-]`), and
        // DDL takes no parameters.
        let password_literal = format!("'{password}'");
        if exists.is_none() {
            admin
                .execute(AssertSqlSafe(format!(
                    "CREATE ROLE {quoted_role} LOGIN NOINHERIT PASSWORD {password_literal}"
                )))
                .await?;
        }
        admin
            .execute(AssertSqlSafe(format!(
                "ALTER ROLE {quoted_role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
                 CONNECTION LIMIT {} PASSWORD {password_literal}",
                self.limits.max_connections
            )))
            .await?;
        // Creating a schema owned by another role needs membership in it
        // on PostgreSQL 16 and later; a superuser has it anyway.
        let _ = admin
            .execute(AssertSqlSafe(format!(
                "GRANT {quoted_role} TO current_user"
            )))
            .await;
        admin
            .execute(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {quoted_role}",
                quoted(schema)
            )))
            .await?;
        admin
            .execute(AssertSqlSafe(format!(
                "REVOKE CREATE ON SCHEMA public FROM {quoted_role}"
            )))
            .await?;
        Ok(())
    }

    pub(super) async fn run(
        &self,
        project: &ProjectName,
        query: &str,
        params: Vec<Param>,
    ) -> Result<SqlRows, Failure> {
        let entry = self.project(project).await?;
        let over_quota = self.size(project, &entry).await? >= self.limits.max_db_bytes;
        if over_quota && !frees_space(query) {
            return Err(full(project, &self.limits));
        }
        let mut conn = entry.pool.acquire().await.map_err(|err| match err {
            sqlx::Error::PoolTimedOut => busy(project, &self.limits),
            other => unreachable_server(other),
        })?;
        let run = self.execute(&mut conn, query, params);
        match tokio::time::timeout(self.limits.statement_timeout, run).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(Error::Refused(failure))) => Err(failure),
            Ok(Err(Error::Sqlx(err))) => Err(self.failure(project, err)),
            Err(_) => {
                // The server's own statement_timeout normally stops it
                // first; this connection is in an unknown state: drop it.
                conn.detach();
                Err(timed_out(&self.limits))
            }
        }
    }

    /// The schema's size, measured at most every few seconds.
    async fn size(&self, project: &ProjectName, entry: &Project) -> Result<u64, Failure> {
        if let Some((size, at)) = entry.size
            && at.elapsed() < SIZE_FRESH
        {
            return Ok(size);
        }
        let (size,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'm', 't')",
        )
        .bind(schema(project))
        .fetch_one(&self.admin)
        .await
        .map_err(unreachable_server)?;
        let size = size.max(0) as u64;
        if let Some(known) = self.lock()?.get_mut(project) {
            known.size = Some((size, Instant::now()));
        }
        Ok(size)
    }

    async fn execute(
        &self,
        conn: &mut PgConnection,
        query: &str,
        params: Vec<Param>,
    ) -> Result<SqlRows, Error> {
        let mut statement = sqlx::query(AssertSqlSafe(query.to_string()));
        for param in params {
            statement = match param {
                Param::Null => statement.bind(Null),
                Param::Bool(b) => statement.bind(b),
                Param::Int(i) => statement.bind(i),
                Param::Float(f) => statement.bind(f),
                Param::Text(s) => statement.bind(s),
            };
        }
        read_rows(conn, statement, query, self.limits.max_rows, cell, |done| {
            done.rows_affected()
        })
        .await
    }

    fn failure(&self, project: &ProjectName, err: sqlx::Error) -> Failure {
        let Some(db) = err.as_database_error() else {
            return unreachable_server(err);
        };
        let code = db.code().unwrap_or_default().to_string();
        let message = db.message();
        match code.as_str() {
            // insufficient_privilege
            "42501" => Failure::new(
                FailureKind::Forbidden,
                format!(
                    "refused: {message} (a project reaches only its own schema; server files, programs, extensions and other roles are not allowed)"
                ),
            ),
            // query_canceled (statement_timeout)
            "57014" => timed_out(&self.limits),
            // disk_full, program_limit_exceeded
            "53100" => full(project, &self.limits),
            // too_many_connections
            "53300" => busy(project, &self.limits),
            _ => Failure::invalid(format!("SQL error: {message}")),
        }
    }

    pub(super) async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        let known = self.lock()?.remove(project);
        if let Some(known) = known {
            known.pool.close().await;
        }
        let (role, schema) = (quoted(&self.role(project)), quoted(&schema(project)));
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(self.role(project))
            .fetch_optional(&self.admin)
            .await
            .map_err(unreachable_server)?;
        if exists.is_none() {
            return Ok(());
        }
        let mut tx = self.admin.begin().await.map_err(unreachable_server)?;
        for statement in [
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("DROP OWNED BY {role} CASCADE"),
            format!("DROP ROLE {role}"),
        ] {
            tx.execute(AssertSqlSafe(statement))
                .await
                .map_err(|e| internal("cannot drop the project's PostgreSQL schema", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| internal("cannot drop the project's PostgreSQL schema", e))
    }
}

/// What a session of the project's role starts with, and is put back to.
fn session_settings(schema: &str, limits: &SqlLimits) -> String {
    let ms = limits.statement_timeout.as_millis();
    format!(
        "SET search_path = {}; SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
         SET idle_in_transaction_session_timeout = {};",
        quoted(schema),
        ms * 2
    )
}

/// Whether a statement may run although the database is full.
fn frees_space(query: &str) -> bool {
    let first = query.split_whitespace().next().unwrap_or_default();
    ["delete", "drop", "truncate", "select"]
        .iter()
        .any(|k| first.eq_ignore_ascii_case(k))
}

fn unreachable_server(err: sqlx::Error) -> Failure {
    tracing::warn!(cause = %err, "PostgreSQL failed");
    Failure::new(
        FailureKind::Unavailable,
        "the PostgreSQL server cannot be reached; see DBriver's log",
    )
}

fn host(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// The secret project passwords derive from, created on first use (mode 0600).
fn secret(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("postgres-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => anyhow::bail!(
            "{} is too short; remove it to make a new one",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut secret = [0u8; 32];
    getrandom(&mut secret)?;
    isms_ipc::secret_file::write(&path, &secret)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret.to_vec())
}

fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("cannot read /dev/urandom")
}

/// A NULL parameter of type `unknown`, so the server infers its type from
/// where it is used (a typed NULL would not fit every column).
struct Null;

impl sqlx::Type<Postgres> for Null {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(705))
    }
}

impl sqlx::Encode<'_, Postgres> for Null {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// One cell as JSON, by its column's type.
fn cell(row: &PgRow, i: usize) -> Result<Value, Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    let binary = raw.format() == PgValueFormat::Binary;
    let bytes = raw
        .as_bytes()
        .map_err(|e| Error::Sqlx(sqlx::Error::Decode(e)))?
        .to_vec();
    let unsupported = || {
        Error::Refused(Failure::invalid(format!(
            "column `{}` has type {type_name}, which ISMS does not return as JSON yet: cast it, e.g. `{}::text`",
            row.columns()[i].name(),
            row.columns()[i].name()
        )))
    };
    if !binary {
        return Ok(Value::from(String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(match type_name.as_str() {
        "BOOL" => Value::from(row.try_get::<bool, _>(i)?),
        "INT2" => Value::from(row.try_get::<i16, _>(i)?),
        "INT4" => Value::from(row.try_get::<i32, _>(i)?),
        "INT8" => Value::from(row.try_get::<i64, _>(i)?),
        "OID" => Value::from(u32::from_be_bytes(
            bytes.try_into().map_err(|_| unsupported())?,
        )),
        "FLOAT4" => super::float(f64::from(row.try_get::<f32, _>(i)?)),
        "FLOAT8" => super::float(row.try_get::<f64, _>(i)?),
        "NUMERIC" => numeric(&bytes).ok_or_else(unsupported)?,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "CITEXT" | "XML" => {
            Value::from(String::from_utf8_lossy(&bytes).into_owned())
        }
        "JSON" => serde_json::from_slice(&bytes).map_err(|_| unsupported())?,
        "JSONB" => {
            serde_json::from_slice(bytes.get(1..).unwrap_or_default()).map_err(|_| unsupported())?
        }
        "BYTEA" => super::base64(&bytes),
        "UUID" => uuid(&bytes).ok_or_else(unsupported)?,
        "DATE" => {
            let days = i32::from_be_bytes(bytes.try_into().map_err(|_| unsupported())?);
            Value::from(date(i64::from(days)))
        }
        "TIMESTAMP" | "TIMESTAMPTZ" => {
            let micros = i64::from_be_bytes(bytes.try_into().map_err(|_| unsupported())?);
            let suffix = if type_name == "TIMESTAMPTZ" { "Z" } else { "" };
            Value::from(format!("{}{suffix}", timestamp(micros)))
        }
        "TIME" => {
            let micros = i64::from_be_bytes(bytes.try_into().map_err(|_| unsupported())?);
            Value::from(time_of_day(micros))
        }
        "VOID" => Value::Null,
        _ => return Err(unsupported()),
    })
}

/// NUMERIC's binary form (base-10000 digits) as a JSON number when it
/// survives as one exactly, else as its decimal text.
fn numeric(bytes: &[u8]) -> Option<Value> {
    let word = |i: usize| -> Option<i16> {
        Some(i16::from_be_bytes([
            *bytes.get(2 * i)?,
            *bytes.get(2 * i + 1)?,
        ]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    match sign {
        0xC000 => return Some(Value::from("NaN")),
        0xD000 => return Some(Value::from("Infinity")),
        0xF000 => return Some(Value::from("-Infinity")),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits as usize)
        .map(|d| word(4 + d))
        .collect::<Option<_>>()?;
    let mut int_part = String::new();
    for w in 0..=weight.max(-1) {
        let digit = digits.get(w as usize).copied().unwrap_or(0);
        if int_part.is_empty() {
            if digit != 0 {
                int_part = digit.to_string();
            }
        } else {
            int_part.push_str(&format!("{digit:04}"));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let first_frac = (weight + 1).max(0) as usize;
    let leading_zero_groups = (-(weight + 1)).max(0) as usize;
    for _ in 0..leading_zero_groups {
        frac.push_str("0000");
    }
    for digit in digits.iter().skip(first_frac) {
        frac.push_str(&format!("{digit:04}"));
    }
    let scale = dscale.max(0) as usize;
    while frac.len() < scale {
        frac.push('0');
    }
    frac.truncate(scale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    let text = if frac.is_empty() {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac}")
    };
    // A JSON number when converting back and forth loses nothing.
    match serde_json::from_str::<serde_json::Number>(&text) {
        Ok(number) if number.as_i64().is_some() || text.len() <= 15 => Some(Value::Number(number)),
        _ => Some(Value::from(text)),
    }
}

fn uuid(bytes: &[u8]) -> Option<Value> {
    if bytes.len() != 16 {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Some(Value::from(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )))
}

/// Days since 2000-01-01 as `YYYY-MM-DD` (proleptic Gregorian).
fn date(days_since_2000: i64) -> String {
    // Howard Hinnant's civil_from_days, from 1970-01-01.
    let z = days_since_2000 + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn time_of_day(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let base = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

/// Microseconds since 2000-01-01 as `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
fn timestamp(micros: i64) -> String {
    let day = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    format!("{}T{}", date(day), time_of_day(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_project_names_stay_within_postgres_identifiers() {
        let short = ProjectName::new("demo").unwrap();
        assert_eq!(schema(&short), "isms_demo");
        let a = ProjectName::new("a".repeat(63)).unwrap();
        let b = ProjectName::new(format!("{}b", "a".repeat(62))).unwrap();
        for prefix in ["isms", "isms0a1b2c"] {
            assert!(identifier(prefix, &a).len() <= 63);
            assert_ne!(identifier(prefix, &a), identifier(prefix, &b));
        }
    }

    #[test]
    fn dates_and_times_read_as_iso_8601() {
        assert_eq!(date(0), "2000-01-01");
        assert_eq!(date(-1), "1999-12-31");
        assert_eq!(date(9_556), "2026-03-01");
        assert_eq!(timestamp(1_500_000), "2000-01-01T00:00:01.500000");
        assert_eq!(timestamp(-1_000_000), "1999-12-31T23:59:59");
    }

    fn numeric_bytes(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale].iter().chain(digits) {
            out.extend(w.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_read_as_decimals() {
        // 12345.678 = [1, 2345, 6780], weight 1, scale 3
        let n = numeric_bytes(3, 1, 0, 3, &[1, 2345, 6780]);
        assert_eq!(numeric(&n), Some(serde_json::json!(12345.678)));
        // -0.0042 = [42], weight -1, scale 4
        let n = numeric_bytes(1, -1, 0x4000, 4, &[42]);
        assert_eq!(numeric(&n), Some(serde_json::json!(-0.0042)));
        // 10000 = [1], weight 1, scale 0
        let n = numeric_bytes(1, 1, 0, 0, &[1]);
        assert_eq!(numeric(&n), Some(serde_json::json!(10000)));
        // 0
        let n = numeric_bytes(0, 0, 0, 0, &[]);
        assert_eq!(numeric(&n), Some(serde_json::json!(0)));
        // Too precise for a double: kept as text.
        let n = numeric_bytes(5, 0, 0, 16, &[1, 1234, 5678, 9012, 3456]);
        assert_eq!(numeric(&n), Some(serde_json::json!("1.1234567890123456")));
    }
}
