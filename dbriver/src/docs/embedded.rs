//! The embedded store: one SQLite file per project, `<dir>/<project>.db`,
//! in WAL mode, holding `(collection, id, body)` rows with the document as
//! JSON text. Filters, sorts and projections run in Rust, over the rows of
//! the collection (or, for a filter on `_id`, only those rows).
//!
//! Writes to one project take its writer lock, so each update or delete is
//! one transaction that never meets another writer: all its documents
//! change, or none. Pools open on first use; their connections close after
//! a minute idle.

use super::filter::Filter;
use super::request::{self, Delete, Find, Insert, UpdateMany};
use super::sort::Sort;
use super::value::{Object, Value};
use super::{DocLimits, duplicate, internal, store_full};
use futures_util::TryStreamExt;
use isms_ipc::dbriver::CollectionInfo;
use isms_ipc::{Failure, ProjectName};
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, SqliteConnection};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY NOT NULL)",
    "CREATE TABLE IF NOT EXISTS documents (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (collection, id)
    )",
];

/// The embedded store.
pub struct Embedded {
    dir: PathBuf,
    projects: Mutex<HashMap<ProjectName, Arc<ProjectStore>>>,
}

/// One project's file.
struct ProjectStore {
    pool: SqlitePool,
    /// Held by every write; guards what writes remember.
    writer: Mutex<Written>,
}

/// What the writer remembers between writes, to spare statements: each
/// costs about 0.1 ms through sqlx's worker thread.
#[derive(Default)]
struct Written {
    /// Collections known to be in the `collections` table.
    collections: HashSet<String>,
    /// The file's size as last measured, and when.
    measured: Option<(u64, Instant)>,
    /// Document bytes written since.
    since: u64,
}

impl Written {
    /// The size, measured at most every [`SIZE_FRESH_FOR`] or when the
    /// estimate nears `limit`.
    async fn stored_bytes(
        &mut self,
        pool: &SqlitePool,
        adding: u64,
        limit: u64,
    ) -> Result<u64, Failure> {
        if let Some((bytes, at)) = self.measured
            && at.elapsed() < SIZE_FRESH_FOR
            && bytes + self.since + adding <= limit
        {
            return Ok(bytes + self.since);
        }
        let mut conn = pool
            .acquire()
            .await
            .map_err(failed("measure the project's store"))?;
        let bytes = stored_bytes(&mut conn).await?;
        self.measured = Some((bytes, Instant::now()));
        self.since = 0;
        Ok(bytes)
    }
}

/// How long a measured size is trusted (plus what was written since).
const SIZE_FRESH_FOR: Duration = Duration::from_secs(5);

fn failed(what: &str) -> impl FnOnce(sqlx::Error) -> Failure + '_ {
    move |e| internal(what, e)
}

impl Embedded {
    /// Uses `dir`, creating it.
    pub fn open(dir: PathBuf) -> anyhow::Result<Embedded> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the document store's directory {}: {e}",
                dir.display()
            )
        })?;
        Ok(Embedded {
            dir,
            projects: Mutex::new(HashMap::new()),
        })
    }

    pub fn describe(&self) -> String {
        format!("embedded store in {}", self.dir.display())
    }

    fn file(&self, project: &ProjectName) -> PathBuf {
        self.dir.join(format!("{project}.db"))
    }

    /// The project's store; `None` when it has none yet and `create` is
    /// false (reads of a project that never wrote create no file).
    async fn store(
        &self,
        project: &ProjectName,
        create: bool,
    ) -> Result<Option<Arc<ProjectStore>>, Failure> {
        let mut projects = self.projects.lock().await;
        if let Some(store) = projects.get(project) {
            return Ok(Some(store.clone()));
        }
        let file = self.file(project);
        if !create && !file.exists() {
            return Ok(None);
        }
        let options = isms_sqlite::connect_options(
            &file,
            isms_sqlite::Durability::Process,
            Duration::from_secs(5),
        );
        // Idle projects' files are closed after a minute.
        let pool = isms_sqlite::pool_options(4, Some(Duration::from_secs(60)))
            .connect_with(options)
            .await
            .map_err(failed("open the project's store"))?;
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(failed("create the project's store"))?;
        }
        let store = Arc::new(ProjectStore {
            pool,
            writer: Mutex::new(Written::default()),
        });
        projects.insert(project.clone(), store.clone());
        Ok(Some(store))
    }

    pub async fn insert(
        &self,
        project: &ProjectName,
        collection: &str,
        insert: Insert,
        limits: &DocLimits,
    ) -> Result<(), Failure> {
        let Some(store) = self.store(project, true).await? else {
            return Err(Failure::internal("the project's store did not open"));
        };
        let key = request::id_key(&insert.id)
            .ok_or_else(|| Failure::internal("an `_id` without a key"))?;
        let bytes = insert.bytes as u64;
        let mut written = store.writer.lock().await;
        let limit = limits.max_project_bytes;
        if written.stored_bytes(&store.pool, bytes, limit).await? + bytes > limit {
            return Err(store_full(limits));
        }
        let statement =
            sqlx::query("INSERT INTO documents (collection, id, body) VALUES (?, ?, ?)")
                .bind(collection)
                .bind(&key)
                .bind(insert.doc.to_json());
        // One statement when the collection is known; with its first
        // document, the collection too, in one transaction.
        let inserted = if written.collections.contains(collection) {
            statement.execute(&store.pool).await.map(drop)
        } else {
            let mut tx = store
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(failed("begin an insert"))?;
            sqlx::query("INSERT OR IGNORE INTO collections (name) VALUES (?)")
                .bind(collection)
                .execute(&mut *tx)
                .await
                .map_err(failed("insert"))?;
            match statement.execute(&mut *tx).await {
                Ok(_) => tx.commit().await,
                Err(e) => Err(e),
            }
        };
        match inserted {
            Ok(()) => {
                written.collections.insert(collection.to_string());
                written.since += bytes;
                Ok(())
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(duplicate(&insert.id, collection))
            }
            Err(e) => Err(internal("insert", e)),
        }
    }

    pub async fn find(
        &self,
        project: &ProjectName,
        collection: &str,
        find: &Find,
    ) -> Result<Vec<Object>, Failure> {
        let Some(store) = self.store(project, false).await? else {
            return Ok(Vec::new());
        };
        let mut conn = store.pool.acquire().await.map_err(failed("read"))?;
        // Keep only the best `skip + fetch` so far: a find costs memory for
        // the page it returns, not for every match.
        let keep = usize::try_from(find.skip.saturating_add(find.fetch())).unwrap_or(usize::MAX);
        let mut best: Vec<Object> = Vec::new();
        scan(&mut conn, collection, &find.selection.filter, |doc| {
            best.push(doc);
            if best.len() >= keep.saturating_mul(2).max(1024) {
                find.sort.sort(&mut best);
                best.truncate(keep);
            }
            Ok(())
        })
        .await?;
        find.sort.sort(&mut best);
        let skip = usize::try_from(find.skip).unwrap_or(usize::MAX);
        let fetch = usize::try_from(find.fetch()).unwrap_or(usize::MAX);
        Ok(best
            .into_iter()
            .skip(skip)
            .take(fetch)
            .map(|doc| find.projection.apply(doc))
            .collect())
    }

    pub async fn update(
        &self,
        project: &ProjectName,
        collection: &str,
        update: &UpdateMany,
        limits: &DocLimits,
    ) -> Result<(u64, u64), Failure> {
        let Some(store) = self.store(project, false).await? else {
            return Ok((0, 0));
        };
        let mut written = store.writer.lock().await;
        let mut tx = store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin an update"))?;
        let mut docs = Vec::new();
        scan(&mut tx, collection, &update.selection.filter, |doc| {
            docs.push(doc);
            Ok(())
        })
        .await?;
        // In `_id` order, as the MongoDB backend checks them, so an error
        // names the same document on both.
        Sort::by_id().sort(&mut docs);
        let matched = docs.len() as u64;
        let mut growth = 0u64;
        let mut changed = Vec::new();
        for doc in &docs {
            if let Some((after, grew)) = request::updated(doc, &update.update, limits)? {
                growth += grew;
                changed.push(after);
            }
        }
        if growth > 0 && stored_bytes(&mut tx).await? + growth > limits.max_project_bytes {
            return Err(store_full(limits));
        }
        for doc in &changed {
            let key = doc.get("_id").and_then(request::id_key).unwrap_or_default();
            sqlx::query("UPDATE documents SET body = ? WHERE collection = ? AND id = ?")
                .bind(doc.to_json())
                .bind(collection)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(failed("update"))?;
        }
        tx.commit().await.map_err(failed("commit an update"))?;
        written.since += growth;
        Ok((matched, changed.len() as u64))
    }

    pub async fn delete(
        &self,
        project: &ProjectName,
        collection: &str,
        delete: &Delete,
    ) -> Result<u64, Failure> {
        let Some(store) = self.store(project, false).await? else {
            return Ok(0);
        };
        let mut written = store.writer.lock().await;
        let mut tx = store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed("begin a delete"))?;
        let deleted = if delete.selection.object.is_empty() {
            sqlx::query("DELETE FROM documents WHERE collection = ?")
                .bind(collection)
                .execute(&mut *tx)
                .await
                .map_err(failed("delete"))?
                .rows_affected()
        } else {
            let mut keys = Vec::new();
            scan(&mut tx, collection, &delete.selection.filter, |doc| {
                keys.extend(doc.get("_id").and_then(request::id_key));
                Ok(())
            })
            .await?;
            for key in &keys {
                sqlx::query("DELETE FROM documents WHERE collection = ? AND id = ?")
                    .bind(collection)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed("delete"))?;
            }
            keys.len() as u64
        };
        tx.commit().await.map_err(failed("commit a delete"))?;
        if deleted > 0 {
            written.measured = None;
        }
        Ok(deleted)
    }

    pub async fn collections(&self, project: &ProjectName) -> Result<Vec<CollectionInfo>, Failure> {
        let Some(store) = self.store(project, false).await? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT c.name, (SELECT COUNT(*) FROM documents d WHERE d.collection = c.name)
             FROM collections c ORDER BY c.name",
        )
        .fetch_all(&store.pool)
        .await
        .map_err(failed("list collections"))?;
        rows.iter()
            .map(|row| {
                Ok(CollectionInfo {
                    name: row.try_get(0).map_err(failed("list collections"))?,
                    count: row
                        .try_get::<i64, _>(1)
                        .map_err(failed("list collections"))? as u64,
                })
            })
            .collect()
    }

    pub async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        let mut projects = self.projects.lock().await;
        if let Some(store) = projects.remove(project) {
            store.pool.close().await;
        }
        crate::sql::remove_sqlite_files(&self.file(project))
    }
}

/// The bytes the project's file holds in use.
async fn stored_bytes(conn: &mut SqliteConnection) -> Result<u64, Failure> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (p.page_count - f.freelist_count) * s.page_size
         FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
    )
    .fetch_one(conn)
    .await
    .map_err(failed("measure the project's store"))?;
    Ok(bytes.max(0) as u64)
}

/// Calls `each` with every document of `collection` that matches `filter`
/// (looking up ids when the filter names them).
async fn scan(
    conn: &mut SqliteConnection,
    collection: &str,
    filter: &Filter,
    mut each: impl FnMut(Object) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut check = |body: &str| -> Result<(), Failure> {
        let doc = match Value::parse(body) {
            Ok(Value::Object(doc)) => doc,
            Ok(_) => {
                return Err(internal(
                    "read a document",
                    "a stored body is not an object",
                ));
            }
            Err(e) => return Err(internal("read a document", e)),
        };
        if filter.matches(&doc) {
            each(doc)?;
        }
        Ok(())
    };
    if let Some(ids) = filter.id_candidates() {
        let mut keys: Vec<String> = ids.into_iter().filter_map(request::id_key).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let body: Option<String> =
                sqlx::query_scalar("SELECT body FROM documents WHERE collection = ? AND id = ?")
                    .bind(collection)
                    .bind(&key)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(failed("read"))?;
            if let Some(body) = body {
                check(&body)?;
            }
        }
        return Ok(());
    }
    let mut rows = sqlx::query("SELECT body FROM documents WHERE collection = ?")
        .bind(collection)
        .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await.map_err(failed("read"))? {
        let body: &str = row.try_get(0).map_err(failed("read"))?;
        check(body)?;
    }
    Ok(())
}
