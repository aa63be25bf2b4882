//! SQL: one SQLite file or one PostgreSQL schema per project.
//!
//! A call is one statement, its placeholders bound to the JSON parameters
//! (never spliced into the text), run on a connection that belongs to the
//! project alone, under a time limit, with at most `max_rows` rows back as
//! JSON. Each call is its own transaction: one left open is rolled back
//! when the connection is handed back.

mod postgres;
mod sqlite;

use isms_ipc::dbriver::SqlRows;
use isms_ipc::{Failure, FailureKind, ProjectName};
use serde_json::Value;
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

/// Longest statement text.
const MAX_QUERY_BYTES: usize = 1 << 20;
/// Largest JSON a statement may answer.
const MAX_RESULT_BYTES: usize = 16 << 20;
/// Most parameters one statement binds.
const MAX_PARAMS: usize = 1000;

/// The SQL databases.
pub enum Sql {
    /// SQLite files.
    Sqlite(sqlite::Databases),
    /// PostgreSQL schemas.
    Postgres(Box<postgres::Databases>),
}

impl Sql {
    /// Opens the backend; for PostgreSQL, checks that the server answers and
    /// that the configured role may create roles.
    pub async fn open(backend: &SqlBackend, limits: SqlLimits, dir: &Path) -> anyhow::Result<Sql> {
        Ok(match backend {
            SqlBackend::Sqlite { dir } => Sql::Sqlite(sqlite::Databases::open(dir, limits)?),
            SqlBackend::Postgres { url } => {
                Sql::Postgres(Box::new(postgres::Databases::open(url, limits, dir).await?))
            }
        })
    }

    /// Where the databases are, for logs (never with a password).
    pub fn describe(&self) -> String {
        match self {
            Sql::Sqlite(databases) => databases.describe(),
            Sql::Postgres(databases) => databases.describe(),
        }
    }

    /// Runs one statement of `project`.
    pub async fn run(
        &self,
        project: &ProjectName,
        query: &str,
        params: &str,
    ) -> Result<SqlRows, Failure> {
        if query.trim().is_empty() {
            return Err(Failure::invalid("the SQL statement is empty"));
        }
        if query.len() > MAX_QUERY_BYTES {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the SQL statement is {} bytes; the limit is {MAX_QUERY_BYTES}",
                    query.len()
                ),
            ));
        }
        let params = Param::parse_all(params)?;
        match self {
            Sql::Sqlite(databases) => databases.run(project, query, params).await,
            Sql::Postgres(databases) => databases.run(project, query, params).await,
        }
    }

    /// Removes the project's database.
    pub async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        match self {
            Sql::Sqlite(databases) => databases.drop_project(project).await,
            Sql::Postgres(databases) => databases.drop_project(project).await,
        }
    }
}

/// One positional parameter, from JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string, or an array or object as its JSON text.
    Text(String),
}

impl Param {
    /// Reads a JSON array of parameters; an empty text means none.
    pub fn parse_all(params: &str) -> Result<Vec<Param>, Failure> {
        if params.trim().is_empty() {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(params)
            .map_err(|e| Failure::invalid(format!("the parameters are not valid JSON: {e}")))?;
        let Value::Array(values) = value else {
            return Err(Failure::invalid(
                "the parameters must be a JSON array, like [1, \"two\"]",
            ));
        };
        if values.len() > MAX_PARAMS {
            return Err(Failure::invalid(format!(
                "{} parameters; at most {MAX_PARAMS} may be bound",
                values.len()
            )));
        }
        Ok(values.into_iter().map(Param::from_json).collect())
    }

    fn from_json(value: Value) -> Param {
        match value {
            Value::Null => Param::Null,
            Value::Bool(b) => Param::Bool(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Param::Int(i),
                None => Param::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Param::Text(s),
            other => Param::Text(other.to_string()),
        }
    }
}

/// Why a statement failed: the database said so, or a limit stopped it.
pub(crate) enum Error {
    Sqlx(sqlx::Error),
    Refused(Failure),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Error {
        Error::Sqlx(err)
    }
}

/// Runs a bound statement on `conn` and reads its answer as JSON rows, each
/// cell converted by `cell`; stops past `max_rows`.
async fn read_rows<'q, DB, C>(
    conn: &mut C,
    statement: impl sqlx::Execute<'q, DB> + 'q,
    query: &str,
    max_rows: usize,
    cell: impl Fn(&DB::Row, usize) -> Result<Value, Error>,
    rows_affected: impl Fn(&DB::QueryResult) -> u64,
) -> Result<SqlRows, Error>
where
    DB: sqlx::Database,
    for<'e> &'e mut C: sqlx::Executor<'e, Database = DB>,
{
    use futures_util::TryStreamExt;
    use sqlx::{Column, Executor, Row, SqlSafeStr, Statement};
    let mut rows = RowsJson::new(max_rows);
    let mut affected = 0;
    let mut stream = conn.fetch_many(statement);
    while let Some(item) = stream.try_next().await? {
        match item {
            sqlx::Either::Left(done) => affected += rows_affected(&done),
            sqlx::Either::Right(row) => {
                if rows.columns.is_empty() {
                    rows.columns = row.columns().iter().map(|c| c.name().into()).collect();
                }
                let values: Vec<Value> = (0..row.len())
                    .map(|i| cell(&row, i))
                    .collect::<Result<_, _>>()?;
                rows.push(values).map_err(Error::Refused)?;
            }
        }
    }
    drop(stream);
    if rows.columns.is_empty() && reads(query) {
        // No rows: the statement still says what its columns are.
        let prepared = conn.prepare(sqlx::AssertSqlSafe(query.to_string()).into_sql_str());
        if let Ok(prepared) = prepared.await {
            rows.columns = prepared.columns().iter().map(|c| c.name().into()).collect();
        }
    }
    Ok(rows.finish(affected))
}

/// Removes a SQLite database file and its WAL companions.
pub(crate) fn remove_sqlite_files(file: &Path) -> Result<(), Failure> {
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", file.display()));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(internal("cannot remove a project's database file", err)),
        }
    }
    Ok(())
}

/// Rows as they are read, written straight to JSON text.
struct RowsJson {
    out: String,
    columns: Vec<String>,
    count: usize,
    max_rows: usize,
}

impl RowsJson {
    fn new(max_rows: usize) -> RowsJson {
        RowsJson {
            out: String::from("["),
            columns: Vec::new(),
            count: 0,
            max_rows,
        }
    }

    /// Adds a row of values, one per column.
    fn push(&mut self, values: impl IntoIterator<Item = Value>) -> Result<(), Failure> {
        self.count += 1;
        if self.count > self.max_rows {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the statement returned more than {} rows; add a LIMIT or a WHERE (dbriver.max_rows)",
                    self.max_rows
                ),
            ));
        }
        if self.count > 1 {
            self.out.push(',');
        }
        self.out.push('{');
        for (i, (column, value)) in self.columns.iter().zip(values).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(&Value::from(column.as_str()).to_string());
            self.out.push(':');
            self.out.push_str(&value.to_string());
        }
        self.out.push('}');
        if self.out.len() > MAX_RESULT_BYTES {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the result is larger than {} MiB; select fewer rows or columns",
                    MAX_RESULT_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn finish(mut self, rows_affected: u64) -> SqlRows {
        self.out.push(']');
        SqlRows {
            columns: self.columns,
            rows: self.out,
            rows_affected,
        }
    }
}

/// Whether a statement is a query, whose columns an empty answer still names.
fn reads(query: &str) -> bool {
    let first = query.split_whitespace().next().unwrap_or_default();
    [
        "select", "with", "values", "pragma", "table", "explain", "show",
    ]
    .iter()
    .any(|k| first.eq_ignore_ascii_case(k))
}

/// A float as JSON: NaN and infinities have no JSON form, so they become strings.
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// Bytes as base64 text: JSON has no bytes.
fn base64(bytes: &[u8]) -> Value {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    Value::String(out)
}

/// What a statement that timed out answers.
fn timed_out(limits: &SqlLimits) -> Failure {
    Failure::new(
        FailureKind::Timeout,
        format!(
            "the statement ran past the limit of {} ms and was stopped (dbriver.statement_timeout_ms)",
            limits.statement_timeout.as_millis()
        ),
    )
}

/// What a full database answers.
fn full(project: &ProjectName, limits: &SqlLimits) -> Failure {
    Failure::new(
        FailureKind::TooLarge,
        format!(
            "project `{project}`'s SQL database is at its size limit of {} MiB (dbriver.max_db_mb); delete rows to make room",
            limits.max_db_bytes >> 20
        ),
    )
}

/// What every connection being in use answers.
fn busy(project: &ProjectName, limits: &SqlLimits) -> Failure {
    Failure::new(
        FailureKind::Busy,
        format!(
            "all {} SQL connections of project `{project}` are busy (dbriver.max_connections); try again",
            limits.max_connections
        ),
    )
}

/// A failure of the platform, logged here and reported without detail.
pub(crate) fn internal(what: &str, err: impl std::fmt::Display) -> Failure {
    tracing::error!(cause = %err, "{what}");
    Failure::internal(format!("{what}; see DBriver's log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_a_json_array() {
        assert_eq!(Param::parse_all("").unwrap(), vec![]);
        assert_eq!(
            Param::parse_all(r#"[null, true, 3, 2.5, "x", [1], {"a": 1}]"#).unwrap(),
            vec![
                Param::Null,
                Param::Bool(true),
                Param::Int(3),
                Param::Float(2.5),
                Param::Text("x".into()),
                Param::Text("[1]".into()),
                Param::Text(r#"{"a":1}"#.into()),
            ]
        );
        let err = Param::parse_all(r#"{"a": 1}"#).unwrap_err();
        assert!(err.message.contains("JSON array"), "{err}");
        let err = Param::parse_all("[1,").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn rows_keep_column_order_and_stop_at_the_cap() {
        let mut rows = RowsJson::new(2);
        rows.columns = vec!["b".into(), "a".into()];
        rows.push([Value::from(1), Value::from("x")]).unwrap();
        rows.push([Value::Null, float(f64::NAN)]).unwrap();
        let err = rows.push([Value::Null, Value::Null]).unwrap_err();
        assert_eq!(err.kind, FailureKind::TooLarge);
        assert!(err.message.contains("more than 2 rows"), "{err}");
        let mut rows = RowsJson::new(5);
        rows.columns = vec!["b".into(), "a".into()];
        rows.push([Value::from(1), Value::from("x")]).unwrap();
        assert_eq!(rows.finish(0).rows, r#"[{"b":1,"a":"x"}]"#);
    }

    #[test]
    fn bytes_are_base64() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(bytes), Value::from(text));
        }
    }
}
