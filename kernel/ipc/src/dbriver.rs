//! Requests for DBriver: each project's SQL and document databases.
//!
//! Every request acts on the project of its envelope, which the platform
//! sets (the Doer from the Worker a call came from, the Control Gate from
//! the authorized path) and the kernel requires: a request without one is
//! refused before it reaches DBriver. No request names a project itself, so
//! none can name another one.
//!
//! JSON travels as text: postcard cannot carry `serde_json::Value`, and the
//! Doee gets text anyway.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

crate::protocol! {
    service DBriver;

    /// Runs one SQL statement on the project's database, its `?`/`$n`
    /// placeholders bound to `params`.
    Sql {
        /// The statement.
        query: String,
        /// A JSON array of positional parameters (`""` for none).
        params: String,
    } -> SqlRows, from [Doer, ControlGate];

    /// One operation on the project's document store.
    Doc {
        /// What to do.
        op: DocOp,
        /// The collection.
        collection: String,
        /// The operation's JSON argument (see [`DocOp`]).
        json: String,
    } -> String, from [Doer, ControlGate];

    /// The project's collections, with their document counts.
    Collections {} -> Vec<CollectionInfo>, from [ControlGate];

    /// Removes the project's SQL and document databases, before the project
    /// itself is deleted.
    DropProject {} -> (), from [Resadmin];
}

/// What an SQL statement answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SqlRows {
    /// The result's column names, in order.
    pub columns: Vec<String>,
    /// The rows as a JSON array of objects keyed by column name.
    pub rows: String,
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
}

/// A document operation, with the JSON argument each takes and answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocOp {
    /// The document (an object) → `{"id": …}`.
    Insert,
    /// `{"filter", "projection", "sort", "limit", "skip"}`, all optional →
    /// an array of documents.
    Find,
    /// `{"filter", "update": {"$set", "$inc", "$unset"}}` → `{"matched": n, "modified": n}`.
    Update,
    /// `{"filter"}` → `{"deleted": n}`.
    Delete,
}

impl DocOp {
    /// The name a Doee uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DocOp::Insert => "insert",
            DocOp::Find => "find",
            DocOp::Update => "update",
            DocOp::Delete => "delete",
        }
    }
}

impl fmt::Display for DocOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DocOp {
    type Err = String;
    fn from_str(s: &str) -> Result<DocOp, String> {
        match s {
            "insert" => Ok(DocOp::Insert),
            "find" => Ok(DocOp::Find),
            "update" => Ok(DocOp::Update),
            "delete" => Ok(DocOp::Delete),
            other => Err(format!(
                "unknown document operation `{}` (expected insert, find, update or delete)",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// One collection of a project's document store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// How many documents it holds.
    pub count: u64,
}
