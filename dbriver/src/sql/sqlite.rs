//! SQLite: one file per project, `<dir>/<project>.db`, in WAL mode.
//!
//! Each connection is hardened before a project's statement reaches it: no
//! attached databases (so no `ATTACH` of another project's file, and no
//! `VACUUM INTO` a file elsewhere), an authorizer that refuses `ATTACH`,
//! `DETACH`, every `PRAGMA` but read-only introspection, and
//! `load_extension`; defensive mode; and a page limit that caps the file's
//! size. A progress handler stops a statement at its time limit.

use super::{Error, Param, SqlLimits, busy, full, internal, read_rows, timed_out};
use isms_ipc::dbriver::SqlRows;
use isms_ipc::{Failure, FailureKind, ProjectName};
use libsqlite3_sys as ffi;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{AssertSqlSafe, Executor, Row, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// SQLite pages are 4 KiB by default; the size limit is counted in pages.
const PAGE_SIZE: u64 = 4096;
/// Idle connections are closed after this, so an idle project holds no file.
const IDLE: Duration = Duration::from_secs(60);

/// The projects' SQLite files.
pub struct Databases {
    dir: PathBuf,
    limits: SqlLimits,
    pools: Mutex<HashMap<ProjectName, SqlitePool>>,
}

impl Databases {
    /// Uses (and creates) `dir`.
    pub fn open(dir: &Path, limits: SqlLimits) -> anyhow::Result<Databases> {
        std::fs::create_dir_all(dir)?;
        Ok(Databases {
            dir: dir.to_path_buf(),
            limits,
            pools: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn describe(&self) -> String {
        format!("SQLite files in {}", self.dir.display())
    }

    fn file(&self, project: &ProjectName) -> PathBuf {
        self.dir.join(format!("{project}.db"))
    }

    fn pool(&self, project: &ProjectName) -> Result<SqlitePool, Failure> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| Failure::internal("DBriver's pool table is poisoned"))?;
        if let Some(pool) = pools.get(project) {
            return Ok(pool.clone());
        }
        let options = isms_sqlite::connect_options(
            &self.file(project),
            isms_sqlite::Durability::Process,
            self.limits.statement_timeout,
        );
        let max_pages = (self.limits.max_db_bytes / PAGE_SIZE).max(1);
        let timeout = self.limits.statement_timeout;
        let pool = isms_sqlite::pool_options(self.limits.max_connections, Some(IDLE))
            .acquire_timeout(self.limits.statement_timeout)
            .after_connect(move |conn, _| Box::pin(harden(conn, max_pages, timeout)))
            .after_release(|conn, _| Box::pin(end_transaction(conn)))
            .connect_lazy_with(options);
        pools.insert(project.clone(), pool.clone());
        Ok(pool)
    }

    pub(super) async fn run(
        &self,
        project: &ProjectName,
        query: &str,
        params: Vec<Param>,
    ) -> Result<SqlRows, Failure> {
        let pool = self.pool(project)?;
        let mut conn = pool.acquire().await.map_err(|err| match err {
            sqlx::Error::PoolTimedOut => busy(project, &self.limits),
            other => internal("cannot open the project's SQLite database", other),
        })?;
        let started = Instant::now();
        let result = self.execute(&mut conn, query, params).await;
        result.map_err(|err| self.failure(project, err, started))
    }

    async fn execute(
        &self,
        conn: &mut SqliteConnection,
        query: &str,
        params: Vec<Param>,
    ) -> Result<SqlRows, Error> {
        let mut statement = sqlx::query(AssertSqlSafe(query.to_string()));
        for param in params {
            statement = match param {
                Param::Null => statement.bind(None::<i64>),
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

    /// Explains a failed statement.
    fn failure(&self, project: &ProjectName, err: Error, started: Instant) -> Failure {
        let err = match err {
            Error::Refused(failure) => return failure,
            Error::Sqlx(err) => err,
        };
        let Some(db) = err.as_database_error() else {
            return internal("the project's SQLite database failed", err);
        };
        let message = db.message();
        let code = db.code().and_then(|c| c.parse::<c_int>().ok()).unwrap_or(0);
        match code & 0xff {
            ffi::SQLITE_AUTH => refused_statement(),
            ffi::SQLITE_FULL => full(project, &self.limits),
            ffi::SQLITE_INTERRUPT if started.elapsed() >= self.limits.statement_timeout => {
                timed_out(&self.limits)
            }
            ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => timed_out(&self.limits),
            _ if message.contains("not authorized")
                || message.contains("too many attached databases") =>
            {
                refused_statement()
            }
            _ => Failure::invalid(format!("SQL error: {message}")),
        }
    }

    pub(super) async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        let pool = self
            .pools
            .lock()
            .map_err(|_| Failure::internal("DBriver's pool table is poisoned"))?
            .remove(project);
        if let Some(pool) = pool {
            pool.close().await;
        }
        super::remove_sqlite_files(&self.file(project))
    }
}

fn refused_statement() -> Failure {
    Failure::new(
        FailureKind::Forbidden,
        "refused: the statement reaches outside the project's database \
         (ATTACH, DETACH, VACUUM, extensions and PRAGMAs other than read-only ones are not allowed)",
    )
}

/// One cell as JSON, by the type of the value stored (SQLite's columns are
/// not typed).
fn cell(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Value, Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    Ok(match type_name.as_str() {
        "INTEGER" | "BOOLEAN" => Value::from(row.try_get_unchecked::<i64, _>(i)?),
        "REAL" => super::float(row.try_get_unchecked::<f64, _>(i)?),
        "BLOB" => super::base64(&row.try_get_unchecked::<Vec<u8>, _>(i)?),
        _ => Value::from(row.try_get_unchecked::<String, _>(i)?),
    })
}

/// Stops each statement of a connection once it has run for `timeout`.
///
/// Installed once per connection, so a statement costs no extra trip to
/// the connection's thread: every 10,000 virtual-machine steps the handler
/// looks at the statement running (its address and run count tell one
/// execution from the next) and interrupts it past its time.
fn stop_statements_after(handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>, timeout: Duration) {
    let db = handle.as_raw_handle().as_ptr() as usize;
    let mut current = (0usize, 0 as c_int);
    let mut started = Instant::now();
    handle.set_progress_handler(10_000, move || {
        let db = db as *mut ffi::sqlite3;
        // SAFETY: the handler runs on the connection's own thread while one
        // of its statements steps; these calls only read its statement list.
        let running = unsafe {
            let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() && ffi::sqlite3_stmt_busy(stmt) == 0 {
                stmt = ffi::sqlite3_next_stmt(db, stmt);
            }
            (
                stmt as usize,
                if stmt.is_null() {
                    0
                } else {
                    ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_RUN, 0)
                },
            )
        };
        if running != current {
            current = running;
            started = Instant::now();
        }
        started.elapsed() < timeout
    });
}

/// Makes a fresh connection safe to hand to a project.
async fn harden(
    conn: &mut SqliteConnection,
    max_pages: u64,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    conn.execute(AssertSqlSafe(format!(
        "PRAGMA max_page_count = {max_pages}"
    )))
    .await?;
    conn.execute("PRAGMA trusted_schema = OFF").await?;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // A connection whose hardening did not take must not serve: each step
    // is checked, and a failure stops the connection from opening.
    let failed = |what: &str, code: c_int| {
        sqlx::Error::Configuration(
            format!("cannot harden the SQLite connection: {what} failed (SQLite answered {code})")
                .into(),
        )
    };
    let checked = |what: &str, code: c_int| match code {
        ffi::SQLITE_OK => Ok(()),
        code => Err(failed(what, code)),
    };
    // SAFETY: `db` is this connection's open handle, which the lock keeps
    // from being used elsewhere meanwhile; the authorizer is a plain
    // function that keeps no state.
    unsafe {
        // `sqlite3_limit` answers the previous limit, not a status: read
        // the new one back (-1 asks without changing it).
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        let attached = ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, -1);
        if attached != 0 {
            return Err(failed("limiting attached databases to none", attached));
        }
        checked(
            "defensive mode",
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_DEFENSIVE,
                1,
                std::ptr::null_mut::<c_int>(),
            ),
        )?;
        checked(
            "disabling load_extension",
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION,
                0,
                std::ptr::null_mut::<c_int>(),
            ),
        )?;
        checked(
            "the authorizer",
            ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut()),
        )?;
    }
    stop_statements_after(&mut handle, timeout);
    Ok(())
}

/// Rolls back a transaction a statement left open, before the connection
/// serves another call.
async fn end_transaction(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let open = {
        let mut handle = conn.lock_handle().await?;
        // SAFETY: a valid handle, held locked.
        unsafe { ffi::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) == 0 }
    };
    if open {
        conn.execute("ROLLBACK").await?;
    }
    Ok(true)
}

/// PRAGMAs that only read the project's own schema.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "page_count",
    "freelist_count",
    "user_version",
];

/// SQLite's authorizer: refuses what could reach outside the project's file.
unsafe extern "C" fn authorize(
    _: *mut c_void,
    action: c_int,
    arg3: *const c_char,
    arg4: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes NUL-terminated strings or NULL.
    let text = |p: *const c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes());
    match action {
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => ffi::SQLITE_DENY,
        ffi::SQLITE_PRAGMA => {
            let name = text(arg3).unwrap_or_default().to_ascii_lowercase();
            // (`PRAGMA user_version = 3` writes only the file's header.)
            if READ_ONLY_PRAGMAS.iter().any(|p| p.as_bytes() == name) {
                ffi::SQLITE_OK
            } else {
                ffi::SQLITE_DENY
            }
        }
        ffi::SQLITE_FUNCTION => {
            let name = text(arg4).unwrap_or_default().to_ascii_lowercase();
            if name == b"load_extension" {
                ffi::SQLITE_DENY
            } else {
                ffi::SQLITE_OK
            }
        }
        _ => ffi::SQLITE_OK,
    }
}
