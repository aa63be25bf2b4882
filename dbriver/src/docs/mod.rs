//! The document store: one per project, embedded (a SQLite file of JSON
//! documents under the data directory, queried by [`query`]) by default.
//!
//! An operation's JSON is parsed and checked whole (collection name,
//! document, filter, projection, sort, update) before anything is read or
//! written, and each write is one transaction: a refused call leaves
//! nothing behind.

mod embedded;
pub mod query;

use isms_ipc::dbriver::{CollectionInfo, DocOp};
use isms_ipc::{Failure, FailureKind, ProjectName};
use query::{Filter, Projection, Sort, Update};
use serde_json::{Map, Value};
use std::path::PathBuf;

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
    /// Largest document, bytes.
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

/// Documents a find returns when it names no limit.
const DEFAULT_LIMIT: usize = 100;

/// The document store.
pub struct DocStore {
    store: embedded::Store,
    limits: DocLimits,
}

/// One checked operation, ready to run.
pub(crate) enum Op {
    Insert {
        id: Value,
        document: Value,
    },
    Find {
        filter: Filter,
        projection: Projection,
        sort: Sort,
        skip: usize,
        limit: usize,
    },
    Update {
        filter: Filter,
        update: Update,
    },
    Delete {
        filter: Filter,
    },
}

impl DocStore {
    /// Opens the store.
    pub async fn open(backend: DocBackend, limits: DocLimits) -> anyhow::Result<DocStore> {
        match backend {
            DocBackend::Embedded { dir } => Ok(DocStore {
                store: embedded::Store::open(&dir, limits.max_project_bytes)?,
                limits,
            }),
            DocBackend::Mongo { .. } => anyhow::bail!(
                "dbriver.mongodb_url is set, but this build of ISMS has only the embedded document store; \
                 leave dbriver.mongodb_url empty"
            ),
        }
    }

    /// Where the documents are, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// One operation on `project`'s `collection`.
    pub async fn run(
        &self,
        project: &ProjectName,
        op: DocOp,
        collection: &str,
        json: &str,
    ) -> Result<String, Failure> {
        check_collection(collection)?;
        let op = self.parse(op, json)?;
        self.store.run(project, collection, op).await
    }

    fn parse(&self, op: DocOp, json: &str) -> Result<Op, Failure> {
        let value: Value = if json.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(json).map_err(|e| {
                Failure::invalid(format!("the {op} argument is not valid JSON: {e}"))
            })?
        };
        let invalid = |e: query::QueryError| Failure::invalid(e);
        if op == DocOp::Insert {
            return self.document(value);
        }
        let Value::Object(mut args) = value else {
            return Err(Failure::invalid(format!(
                "the {op} argument must be a JSON object"
            )));
        };
        let allowed: &[&str] = match op {
            DocOp::Find => &["filter", "projection", "sort", "limit", "skip"],
            DocOp::Update => &["filter", "update"],
            _ => &["filter"],
        };
        if let Some(unknown) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(Failure::invalid(format!(
                "unknown key `{unknown}` in the {op} argument (expected {})",
                allowed.join(", ")
            )));
        }
        let filter =
            Filter::parse(&args.remove("filter").unwrap_or(Value::Null)).map_err(invalid)?;
        Ok(match op {
            DocOp::Find => {
                let number = |key: &str, default: usize| match args.get(key) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v
                        .as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| Failure::invalid(format!("`{key}` must be a whole number"))),
                };
                let limit = number("limit", DEFAULT_LIMIT.min(self.limits.max_results))?;
                if limit > self.limits.max_results {
                    return Err(Failure::new(
                        FailureKind::TooLarge,
                        format!(
                            "`limit` {limit} is above the most a find returns, {} (dbriver.max_rows)",
                            self.limits.max_results
                        ),
                    ));
                }
                Op::Find {
                    filter,
                    projection: Projection::parse(args.get("projection").unwrap_or(&Value::Null))
                        .map_err(invalid)?,
                    sort: Sort::parse(args.get("sort").unwrap_or(&Value::Null)).map_err(invalid)?,
                    skip: number("skip", 0)?,
                    limit,
                }
            }
            DocOp::Update => {
                let update = args.get("update").ok_or_else(|| {
                    Failure::invalid("update needs `update`, like {\"$set\": {\"a\": 1}}")
                })?;
                Op::Update {
                    filter,
                    update: Update::parse(update).map_err(invalid)?,
                }
            }
            _ => Op::Delete { filter },
        })
    }

    /// Checks a document to insert and gives it an `_id` if it has none.
    fn document(&self, value: Value) -> Result<Op, Failure> {
        let Value::Object(mut map) = value else {
            return Err(Failure::invalid("a document must be a JSON object"));
        };
        check_keys(&map)?;
        let id = match map.get("_id") {
            None => {
                let id = Value::String(object_id());
                map.insert("_id".into(), id.clone());
                id
            }
            Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
            Some(_) => return Err(Failure::invalid("`_id` must be a string or a number")),
        };
        let document = Value::Object(map);
        let size = document.to_string().len();
        if size > self.limits.max_document_bytes {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the document is {size} bytes; the limit is {} (dbriver.max_document_kb)",
                    self.limits.max_document_bytes
                ),
            ));
        }
        Ok(Op::Insert { id, document })
    }

    /// The project's collections.
    pub async fn collections(&self, project: &ProjectName) -> Result<Vec<CollectionInfo>, Failure> {
        self.store.collections(project).await
    }

    /// Removes the project's store.
    pub async fn drop_project(&self, project: &ProjectName) -> Result<(), Failure> {
        self.store.drop_project(project).await
    }
}

fn check_collection(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "invalid collection name `{}`: 1 to 64 of A-Z, a-z, 0-9, _ and -",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// Field names may not start with `$` nor contain `.` or NUL, at any depth.
fn check_keys(map: &Map<String, Value>) -> Result<(), Failure> {
    for (key, value) in map {
        if key.is_empty() || key.starts_with('$') || key.contains('.') || key.contains('\0') {
            return Err(Failure::invalid(format!(
                "invalid field name `{key}`: it may not be empty, start with $, or contain . or NUL"
            )));
        }
        let nested: Vec<&Map<String, Value>> = match value {
            Value::Object(inner) => vec![inner],
            Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        };
        for inner in nested {
            check_keys(inner)?;
        }
    }
    Ok(())
}

/// A 24-hex-digit id like MongoDB's ObjectId: seconds, then random and a counter.
fn object_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let secs = (isms_ipc::names::now_ms() / 1000) as u32;
    let random = isms_ipc::InvocationId::generate().0 as u64;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    format!("{secs:08x}{:010x}{count:06x}", random & 0xff_ffff_ffff)
}
