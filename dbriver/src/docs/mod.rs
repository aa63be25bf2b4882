//! The document store: each project's collections of JSON documents, in
//! the embedded store (a SQLite file per project) or on a MongoDB server
//! (a database per project), queried with MongoDB's filter language.
//!
//! Everything that decides an answer lives here, above the backends:
//! arguments are parsed and checked once ([`request`]); filters,
//! projections, sorts and updates have one implementation each, which the
//! embedded store evaluates and which checks what MongoDB is sent; ids are
//! generated here; the limits are enforced here. So both backends answer
//! the same bytes for the same data, and `dbriver/tests/documents.rs`
//! holds them to it.

mod convert;
mod embedded;
pub mod filter;
mod id;
mod mongo;
pub mod path;
pub mod projection;
pub mod request;
pub mod sort;
pub mod update;
pub mod value;

use isms_ipc::dbriver::{CollectionInfo, DocOp};
use isms_ipc::{Failure, FailureKind, ProjectName};
use std::path::PathBuf;
use value::{Object, Value};

/// The largest answer one find gives, as JSON: past it, the caller must
/// project fewer fields or page with a smaller limit.
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// Where documents live.
#[derive(Clone, Debug)]
pub enum DocBackend {
    /// The embedded store, one per project under `dir`.
    Embedded {
        /// The directory.
        dir: PathBuf,
    },
    /// A MongoDB server, one database per project.
    Mongo {
        /// `mongodb://…`
        url: String,
    },
}

/// Limits on documents.
#[derive(Clone, Debug)]
pub struct DocLimits {
    /// Largest document, bytes (as compact JSON).
    pub max_document_bytes: usize,
    /// Most documents one find returns.
    pub max_results: usize,
    /// Largest store per project, bytes.
    pub max_project_bytes: u64,
}

impl Default for DocLimits {
    fn default() -> Self {
        DocLimits {
            max_document_bytes: 1 << 20,
            max_results: 10_000,
            max_project_bytes: 1 << 30,
        }
    }
}

/// The document store.
pub struct DocStore {
    backend: Backend,
    limits: DocLimits,
    ids: id::IdGenerator,
}

enum Backend {
    Embedded(embedded::Embedded),
    Mongo(mongo::Mongo),
}

impl DocStore {
    /// Opens the store: creates the embedded store's directory, or connects
    /// to MongoDB and fails clearly when it cannot be reached.
    pub async fn open(backend: DocBackend, limits: DocLimits) -> anyhow::Result<DocStore> {
        let backend = match backend {
            DocBackend::Embedded { dir } => Backend::Embedded(embedded::Embedded::open(dir)?),
            DocBackend::Mongo { url } => Backend::Mongo(mongo::Mongo::open(&url).await?),
        };
        Ok(DocStore {
            backend,
            limits,
            ids: id::IdGenerator::new(),
        })
    }

    /// For logs: `embedded store in <dir>` or `MongoDB at host:port (server
    /// X.Y)`, never a password.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Embedded(store) => store.describe(),
            Backend::Mongo(server) => server.describe(),
        }
    }

    /// One operation: `json` is its argument, the answer is JSON (see
    /// [`DocOp`]).
    pub async fn run(
        &self,
        project: &ProjectName,
        op: DocOp,
        collection: &str,
        json: &str,
    ) -> Result<String, Failure> {
        request::check_collection(collection)?;
        let limits = &self.limits;
        match op {
            DocOp::Insert => {
                let insert = request::insert(json, limits, &self.ids)?;
                let id = insert.id.clone();
                match &self.backend {
                    Backend::Embedded(s) => s.insert(project, collection, insert, limits).await?,
                    Backend::Mongo(s) => s.insert(project, collection, insert, limits).await?,
                }
                let mut answer = Object::new();
                answer.push("id", id);
                Ok(answer.to_json())
            }
            DocOp::Find => {
                let find = request::find(json, limits)?;
                let docs = match &self.backend {
                    Backend::Embedded(s) => s.find(project, collection, &find).await?,
                    Backend::Mongo(s) => s.find(project, collection, &find).await?,
                };
                if find.limit_is_default && docs.len() as u64 > find.limit {
                    return Err(request::too_many_results(limits));
                }
                render(docs)
            }
            DocOp::Update => {
                let update = request::update(json)?;
                let (matched, modified) = match &self.backend {
                    Backend::Embedded(s) => s.update(project, collection, &update, limits).await?,
                    Backend::Mongo(s) => s.update(project, collection, &update, limits).await?,
                };
                let mut answer = Object::new();
                answer.push("matched", Value::Int(matched as i64));
                answer.push("modified", Value::Int(modified as i64));
                Ok(answer.to_json())
            }
            DocOp::Delete => {
                let delete = request::delete(json)?;
                let deleted = match &self.backend {
                    Backend::Embedded(s) => s.delete(project, collection, &delete).await?,
                    Backend::Mongo(s) => s.delete(project, collection, &delete).await?,
                };
                let mut answer = Object::new();
                answer.push("deleted", Value::Int(deleted as i64));
                Ok(answer.to_json())
            }
        }
    }

    /// The project's collections, sorted by name, with their counts.
    pub async fn collections(&self, project: &ProjectName) -> Result<Vec<CollectionInfo>, Failure> {
        let mut list = match &self.backend {
            Backend::Embedded(s) => s.collections(project).await?,
            Backend::Mongo(s) => s.collections(project).await?,
        };
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// Removes the project's store (its files, or its database).
    pub async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        match &self.backend {
            Backend::Embedded(s) => s.drop_project(project).await,
            Backend::Mongo(s) => s.drop_project(project).await,
        }
    }
}

/// The documents of a find as a JSON array, refused past [`MAX_REPLY_BYTES`].
fn render(docs: Vec<Object>) -> Result<String, Failure> {
    let mut out = String::from("[");
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&doc.to_json());
        if out.len() > MAX_REPLY_BYTES {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "find: the answer is over {}; project fewer fields or give a smaller limit",
                    human_bytes(MAX_REPLY_BYTES as u64)
                ),
            ));
        }
    }
    out.push(']');
    Ok(out)
}

/// The error for a project whose store is full.
fn store_full(limits: &DocLimits) -> Failure {
    Failure::new(
        FailureKind::TooLarge,
        format!(
            "the project's document store is at its size limit of {}; delete documents to make room",
            human_bytes(limits.max_project_bytes)
        ),
    )
}

/// `1 GiB`, `16 MiB`, `256 KiB`, `1000 bytes`.
fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// The conflict of a duplicate `_id`, worded the same for both backends.
fn duplicate(id: &Value, collection: &str) -> Failure {
    Failure::new(
        FailureKind::Conflict,
        format!(
            "insert: a document with `_id` {} already exists in `{collection}`",
            id.to_json()
        ),
    )
}

/// Logs the cause of an internal failure and says only what failed.
fn internal(what: &str, cause: impl std::fmt::Display) -> Failure {
    tracing::error!(%cause, "document store: failed to {what}");
    Failure::internal(format!("the document store failed to {what}"))
}

/// Documents of every shape the filter and sort unit tests need (`_id`s a
/// to r); `dbriver/tests/documents.rs` keeps its own copy, as an outside test.
#[cfg(test)]
pub(crate) const SHAPES: &[&str] = &[
    r#"{"_id":"a","n":1}"#,
    r#"{"_id":"b","n":1.5}"#,
    r#"{"_id":"c","n":"1"}"#,
    r#"{"_id":"d","n":null}"#,
    r#"{"_id":"e"}"#,
    r#"{"_id":"f","n":[1,5]}"#,
    r#"{"_id":"g","n":{"x":1}}"#,
    r#"{"_id":"h","n":true}"#,
    r#"{"_id":"i","n":[]}"#,
    r#"{"_id":"j","a":{"b":{"c":2}}}"#,
    r#"{"_id":"k","a":[{"b":1},{"b":2}]}"#,
    r#"{"_id":"l","a":[1,2]}"#,
    r#"{"_id":"m","a":[{"b":1},{"c":1}]}"#,
    r#"{"_id":"o","n":[[1]]}"#,
    r#"{"_id":"p","n":1099511627776}"#,
    r#"{"_id":"q","n":1.0}"#,
    r#"{"_id":"r","n":[null,3]}"#,
];

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(3 << 29), "1536 MiB");
        assert_eq!(human_bytes(16 << 20), "16 MiB");
        assert_eq!(human_bytes(256 << 10), "256 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
