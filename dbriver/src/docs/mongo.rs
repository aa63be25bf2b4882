//! The MongoDB backend: one database per project, `isms_<project>`.
//!
//! The server evaluates filters, sorts and projections, which DBriver has
//! already checked (so errors read the same as the embedded store's).
//! Updates that can fail or grow a document are first applied here to the
//! matching documents, so a bad `$inc` or a document pushed past the size
//! limit fails before the server changes anything (MongoDB's updateMany
//! stops at the first bad document and keeps the changes before it);
//! between that check and the update, another writer may change a
//! document, and then the server's own check has the last word.

use super::convert::{from_bson, from_raw_document, to_document};
use super::request::{Delete, Find, Insert, UpdateMany};
use super::value::{Object, Value};
use super::{DocLimits, duplicate, internal, request, store_full};
use isms_ipc::dbriver::CollectionInfo;
use isms_ipc::{Failure, FailureKind, ProjectName};
use mongodb::bson::{Document, doc};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a project's measured size is trusted (plus what was written
/// since): `dbStats` is cheap, but not per insert.
const SIZE_FRESH_FOR: Duration = Duration::from_secs(5);

/// MongoDB's limit on database names (bytes, on Linux under 64).
const MAX_DB_NAME: usize = 63;

/// A MongoDB server.
pub struct Mongo {
    client: Client,
    hosts: String,
    version: String,
    sizes: Mutex<HashMap<String, Measured>>,
}

/// A project's size as last measured.
#[derive(Clone, Copy)]
struct Measured {
    bytes: u64,
    at: Instant,
    written_since: u64,
}

impl Mongo {
    /// Connects and asks the server its version: an unreachable server
    /// fails here, at start-up, not at the first Doee's call.
    pub async fn open(url: &str) -> anyhow::Result<Mongo> {
        if url.starts_with("mongodb+srv://") {
            anyhow::bail!(
                "mongodb+srv:// URLs need DNS SRV lookups, which this build of ISMS leaves out; \
                 give the hosts in a mongodb:// URL instead (e.g. mongodb://h1:27017,h2:27017/?tls=true&replicaSet=rs0)"
            );
        }
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| anyhow::anyhow!("bad MongoDB URL: {}", redact(&e.to_string(), url)))?;
        let hosts = options
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        options
            .app_name
            .get_or_insert_with(|| "isms-dbriver".to_string());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options)
            .map_err(|e| anyhow::anyhow!("bad MongoDB options: {}", redact(&e.to_string(), url)))?;
        let info = client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach MongoDB at {hosts}: {}",
                    redact(&e.to_string(), url)
                )
            })?;
        let version = info.get_str("version").unwrap_or("unknown").to_string();
        Ok(Mongo {
            client,
            hosts,
            version,
            sizes: Mutex::new(HashMap::new()),
        })
    }

    pub fn describe(&self) -> String {
        format!("MongoDB at {} (server {})", self.hosts, self.version)
    }

    fn database(&self, project: &ProjectName) -> Database {
        self.client.database(&database_name(project))
    }

    fn collection(&self, project: &ProjectName, collection: &str) -> Collection<Document> {
        self.database(project).collection(collection)
    }

    /// Turns a driver error into a failure: unreachable → Unavailable,
    /// anything else → Internal (logged).
    fn failure(&self, what: &str, e: Error) -> Failure {
        match *e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => {
                tracing::warn!(cause = %e, "MongoDB unreachable");
                Failure::new(
                    FailureKind::Unavailable,
                    format!(
                        "the document store (MongoDB at {}) cannot be reached; try again later",
                        self.hosts
                    ),
                )
            }
            _ => internal(what, e),
        }
    }

    pub async fn insert(
        &self,
        project: &ProjectName,
        collection: &str,
        insert: Insert,
        limits: &DocLimits,
    ) -> Result<(), Failure> {
        if self.stored_bytes(project).await? + insert.bytes as u64 > limits.max_project_bytes {
            return Err(store_full(limits));
        }
        let result = self
            .collection(project, collection)
            .insert_one(to_document(&insert.doc))
            .await;
        match result {
            Ok(_) => {
                self.wrote(project, insert.bytes as u64);
                Ok(())
            }
            Err(e) if code(&e) == Some(11000) => Err(duplicate(&insert.id, collection)),
            Err(e) => Err(self.failure("insert", e)),
        }
    }

    pub async fn find(
        &self,
        project: &ProjectName,
        collection: &str,
        find: &Find,
    ) -> Result<Vec<Object>, Failure> {
        let fetch = i64::try_from(find.fetch()).unwrap_or(i64::MAX);
        let coll = self.collection(project, collection);
        let mut action = coll
            .find(to_document(&find.selection.object))
            .sort(to_document(&find.sort.to_object()))
            .skip(find.skip)
            .limit(fetch);
        if let Some(projection) = &find.projection_object {
            action = action.projection(to_document(projection));
        }
        let mut cursor = action.await.map_err(|e| self.failure("find", e))?;
        let mut docs = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.failure("find", e))?
        {
            docs.push(
                from_raw_document(cursor.current()).map_err(|e| internal("read a document", e))?,
            );
        }
        Ok(docs)
    }

    pub async fn update(
        &self,
        project: &ProjectName,
        collection: &str,
        update: &UpdateMany,
        limits: &DocLimits,
    ) -> Result<(u64, u64), Failure> {
        let filter = to_document(&update.selection.object);
        let coll = self.collection(project, collection);
        let mut growth = 0u64;
        let mut matched = 0u64;
        if update.update.can_fail_or_grow() {
            // In `_id` order, as the embedded store checks them, so an
            // error names the same document on both.
            let mut cursor = coll
                .find(filter.clone())
                .sort(doc! { "_id": 1 })
                .await
                .map_err(|e| self.failure("update", e))?;
            while cursor
                .advance()
                .await
                .map_err(|e| self.failure("update", e))?
            {
                matched += 1;
                let before = from_raw_document(cursor.current())
                    .map_err(|e| internal("read a document", e))?;
                if let Some((_, grew)) = request::updated(&before, &update.update, limits)? {
                    growth += grew;
                }
            }
            if growth > 0 && self.stored_bytes(project).await? + growth > limits.max_project_bytes {
                return Err(store_full(limits));
            }
        } else {
            // Only `$unset`s (or nothing): is there anything to change?
            matched = coll
                .count_documents(filter.clone())
                .await
                .map_err(|e| self.failure("update", e))?;
        }
        // Nothing matched: nothing to send. (SecantusDB, the test server,
        // would create the collection on an update that matches nothing;
        // mongod does not.) An update without changes only counts.
        if matched == 0 || update.update.is_empty() {
            return Ok((matched, 0));
        }
        let result = coll
            .update_many(filter, to_document(&update.update.to_object()))
            .await
            .map_err(|e| match code(&e) {
                // What the check above catches, unless a document changed
                // in between: then the server's words.
                Some(2 | 14 | 28 | 40 | 66) => {
                    Failure::invalid(format!("update: MongoDB refused it: {}", message(&e)))
                }
                _ => self.failure("update", e),
            })?;
        self.wrote(project, growth);
        Ok((result.matched_count, result.modified_count))
    }

    pub async fn delete(
        &self,
        project: &ProjectName,
        collection: &str,
        delete: &Delete,
    ) -> Result<u64, Failure> {
        let result = self
            .collection(project, collection)
            .delete_many(to_document(&delete.selection.object))
            .await
            .map_err(|e| self.failure("delete", e))?;
        if result.deleted_count > 0 {
            self.forget_size(project);
        }
        Ok(result.deleted_count)
    }

    pub async fn collections(&self, project: &ProjectName) -> Result<Vec<CollectionInfo>, Failure> {
        let db = self.database(project);
        let names = db
            .list_collection_names()
            .await
            .map_err(|e| self.failure("list collections", e))?;
        let mut list = Vec::new();
        // Only names this platform can create: not `system.*`.
        for name in names
            .into_iter()
            .filter(|n| request::check_collection(n).is_ok())
        {
            // The count from the collection's metadata: exact on a
            // standalone server or replica set, and no scan.
            let count = db
                .collection::<Document>(&name)
                .estimated_document_count()
                .await
                .map_err(|e| self.failure("count documents", e))?;
            list.push(CollectionInfo { name, count });
        }
        Ok(list)
    }

    pub async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        self.database(project)
            .drop()
            .await
            .map_err(|e| self.failure("drop the project's database", e))?;
        self.forget_size(project);
        Ok(())
    }

    /// The project's data size: measured with `dbStats` at most every
    /// [`SIZE_FRESH_FOR`], plus what this process wrote since.
    async fn stored_bytes(&self, project: &ProjectName) -> Result<u64, Failure> {
        let name = database_name(project);
        if let Some(m) = self.sizes_lock().get(&name)
            && m.at.elapsed() < SIZE_FRESH_FOR
        {
            return Ok(m.bytes + m.written_since);
        }
        let stats = self
            .client
            .database(&name)
            .run_command(doc! { "dbStats": 1 })
            .await
            .map_err(|e| self.failure("measure the project's database", e))?;
        let bytes = match stats.get("dataSize").map(from_bson) {
            Some(Value::Int(n)) => n.max(0) as u64,
            Some(Value::Float(f)) => f.max(0.0) as u64,
            _ => 0,
        };
        self.sizes_lock().insert(
            name,
            Measured {
                bytes,
                at: Instant::now(),
                written_since: 0,
            },
        );
        Ok(bytes)
    }

    fn wrote(&self, project: &ProjectName, bytes: u64) {
        if let Some(m) = self.sizes_lock().get_mut(&database_name(project)) {
            m.written_since += bytes;
        }
    }

    fn forget_size(&self, project: &ProjectName) {
        self.sizes_lock().remove(&database_name(project));
    }

    fn sizes_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Measured>> {
        // A panic while holding this lock leaves only a cache behind.
        self.sizes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `isms_<project>`; a name too long for MongoDB keeps its first letters
/// and ends with a hash of the whole, so it stays unique and the same on
/// every start. (Short names have no `_` after the prefix, so they cannot
/// meet a hashed one.)
pub fn database_name(project: &ProjectName) -> String {
    let name = format!("isms_{project}");
    if name.len() <= MAX_DB_NAME {
        return name;
    }
    let hash = Sha256::digest(project.as_str().as_bytes());
    let suffix: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let keep = MAX_DB_NAME - "isms_".len() - 1 - suffix.len();
    format!("isms_{}_{suffix}", &project.as_str()[..keep])
}

/// The server's error code, if it sent one.
fn code(e: &Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn message(e: &Error) -> String {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.message.clone(),
        ErrorKind::Command(c) => c.message.clone(),
        _ => e.to_string(),
    }
}

/// `text` without the password of `url`, should an error quote it.
fn redact(text: &str, url: &str) -> String {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return text.to_string();
    };
    let Some((userinfo, _)) = rest.split_once('@') else {
        return text.to_string();
    };
    match userinfo.split_once(':') {
        Some((_, password)) if !password.is_empty() => text.replace(password, "***"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn database_names_fit() {
        let p = |s: &str| ProjectName::new(s).unwrap();
        assert_eq!(database_name(&p("greenhouse")), "isms_greenhouse");
        let long = "a".repeat(58);
        assert_eq!(database_name(&p(&long)), format!("isms_{long}"));
        let longer = "b".repeat(63);
        let name = database_name(&p(&longer));
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("isms_bbbb"), "{name}");
        let other = format!("{}c", "b".repeat(62));
        assert_ne!(database_name(&p(&other)), name);
        assert_eq!(database_name(&p(&longer)), name);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact(
                "failed for mongodb://u:s3cret@h/ (s3cret)",
                "mongodb://u:s3cret@h/"
            ),
            "failed for mongodb://u:***@h/ (***)"
        );
        assert_eq!(redact("x", "mongodb://h/"), "x");
    }
}
