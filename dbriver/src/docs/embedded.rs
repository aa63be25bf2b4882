//! The embedded store: one SQLite file per project,
//! `<dir>/<project>.db`, holding each document as JSON text keyed by its
//! collection and `_id`. Queries read the collection and evaluate filters
//! in Rust ([`super::query`]), so the semantics are ours and the same
//! everywhere; writes of one operation are one transaction.

use super::Op;
use isms_ipc::dbriver::CollectionInfo;
use isms_ipc::{Failure, FailureKind, ProjectName};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Executor, Row};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS documents (\
    collection TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, \
    PRIMARY KEY (collection, id)) WITHOUT ROWID";

pub struct Store {
    dir: PathBuf,
    max_pages: u64,
    pools: Mutex<HashMap<ProjectName, SqlitePool>>,
}

impl Store {
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            max_pages: (max_bytes / 4096).max(1),
            pools: Mutex::new(HashMap::new()),
        })
    }

    pub fn describe(&self) -> String {
        format!("the embedded store in {}", self.dir.display())
    }

    fn file(&self, project: &ProjectName) -> PathBuf {
        self.dir.join(format!("{project}.db"))
    }

    fn pool(&self, project: &ProjectName) -> Result<SqlitePool, Failure> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| Failure::internal("the document pool table is poisoned"))?;
        if let Some(pool) = pools.get(project) {
            return Ok(pool.clone());
        }
        let options = SqliteConnectOptions::new()
            .filename(self.file(project))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let max_pages = self.max_pages;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .idle_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute(AssertSqlSafe(format!(
                        "PRAGMA max_page_count = {max_pages}"
                    )))
                    .await?;
                    conn.execute(SCHEMA).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        pools.insert(project.clone(), pool.clone());
        Ok(pool)
    }

    pub async fn run(
        &self,
        project: &ProjectName,
        collection: &str,
        op: Op,
    ) -> Result<String, Failure> {
        let pool = self.pool(project)?;
        let failure = |e: sqlx::Error| self.failure(project, e);
        match op {
            Op::Insert { id, document } => {
                let inserted =
                    sqlx::query("INSERT INTO documents (collection, id, body) VALUES ($1, $2, $3)")
                        .bind(collection)
                        .bind(id.to_string())
                        .bind(document.to_string())
                        .execute(&pool)
                        .await;
                match inserted {
                    Ok(_) => Ok(serde_json::json!({ "id": id }).to_string()),
                    Err(err) if is_unique_violation(&err) => Err(Failure::new(
                        FailureKind::Conflict,
                        format!("a document with _id {id} already exists in `{collection}`"),
                    )),
                    Err(err) => Err(failure(err)),
                }
            }
            Op::Find {
                filter,
                projection,
                sort,
                skip,
                limit,
            } => {
                let mut found: Vec<Value> = load(&pool, collection)
                    .await
                    .map_err(failure)?
                    .into_iter()
                    .map(|(_, doc)| doc)
                    .filter(|doc| filter.matches(doc))
                    .collect();
                found.sort_by(|a, b| sort.compare(a, b));
                let page: Vec<Value> = found
                    .into_iter()
                    .skip(skip)
                    .take(limit)
                    .map(|doc| projection.apply(doc))
                    .collect();
                Ok(Value::Array(page).to_string())
            }
            Op::Update { filter, update } => {
                let mut tx = pool.begin().await.map_err(failure)?;
                let (mut matched, mut modified) = (0u64, 0u64);
                for (id, mut doc) in load(&mut *tx, collection).await.map_err(failure)? {
                    if !filter.matches(&doc) {
                        continue;
                    }
                    matched += 1;
                    let before = doc.clone();
                    update.apply(&mut doc).map_err(Failure::invalid)?;
                    if doc != before {
                        modified += 1;
                        sqlx::query(
                            "UPDATE documents SET body = $1 WHERE collection = $2 AND id = $3",
                        )
                        .bind(doc.to_string())
                        .bind(collection)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(failure)?;
                    }
                }
                tx.commit().await.map_err(failure)?;
                Ok(serde_json::json!({ "matched": matched, "modified": modified }).to_string())
            }
            Op::Delete { filter } => {
                let mut tx = pool.begin().await.map_err(failure)?;
                let mut deleted = 0u64;
                for (id, doc) in load(&mut *tx, collection).await.map_err(failure)? {
                    if filter.matches(&doc) {
                        deleted += 1;
                        sqlx::query("DELETE FROM documents WHERE collection = $1 AND id = $2")
                            .bind(collection)
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(failure)?;
                    }
                }
                tx.commit().await.map_err(failure)?;
                Ok(serde_json::json!({ "deleted": deleted }).to_string())
            }
        }
    }

    pub async fn collections(&self, project: &ProjectName) -> Result<Vec<CollectionInfo>, Failure> {
        let pool = self.pool(project)?;
        let rows = sqlx::query(
            "SELECT collection, count(*) AS n FROM documents GROUP BY collection ORDER BY collection",
        )
        .fetch_all(&pool)
        .await
        .map_err(|e| self.failure(project, e))?;
        rows.iter()
            .map(|row| {
                Ok(CollectionInfo {
                    name: row.try_get("collection")?,
                    count: row.try_get::<i64, _>("n")?.max(0) as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.failure(project, e))
    }

    pub async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        let pool = self
            .pools
            .lock()
            .map_err(|_| Failure::internal("the document pool table is poisoned"))?
            .remove(project);
        if let Some(pool) = pool {
            pool.close().await;
        }
        crate::sql::remove_sqlite_files(&self.file(project))
    }

    fn failure(&self, project: &ProjectName, err: sqlx::Error) -> Failure {
        let full = err
            .as_database_error()
            .and_then(|db| db.code())
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == libsqlite3_sys::SQLITE_FULL);
        if full {
            return Failure::new(
                FailureKind::TooLarge,
                format!(
                    "project `{project}`'s document store is at its size limit of {} MiB (dbriver.max_docs_mb); delete documents to make room",
                    (self.max_pages * 4096) >> 20
                ),
            );
        }
        crate::sql::internal("the project's document store failed", err)
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Every document of a collection, with its stored id.
async fn load<'e, E>(executor: E, collection: &str) -> Result<Vec<(String, Value)>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let rows = sqlx::query("SELECT id, body FROM documents WHERE collection = $1")
        .bind(collection)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            let body: String = row.try_get("body")?;
            let doc = serde_json::from_str(&body).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok((row.try_get("id")?, doc))
        })
        .collect()
}
