//! A project's databases: SQL statements, document collections.

use crate::Gate;
use crate::reply::{Reply, json, raw_json};
use crate::request::{Call, parse_json, percent_decode};
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::dbriver::{self, DocOp};

/// The largest SQL request body: a statement and its parameters.
const MAX_SQL: usize = 1 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    query: String,
    #[serde(default)]
    params: Option<Vec<serde_json::Value>>,
}

impl Gate {
    pub async fn sql(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: SqlBody = parse_json(&call.body(MAX_SQL).await?)?;
        let params = serde_json::to_string(&body.params.unwrap_or_default())
            .map_err(|e| HttpError::bad_request(format!("`params`: {e}")))?;
        let sql = dbriver::Sql {
            query: body.query,
            params,
        };
        let rows = self.conn.call(&scope, sql).await?;
        // The rows are JSON text already: spliced, not re-parsed.
        let columns = serde_json::to_string(&rows.columns).unwrap_or_else(|_| "[]".into());
        let body = format!(
            r#"{{"columns":{columns},"rows":{},"rows_affected":{}}}"#,
            rows.rows, rows.rows_affected
        );
        Ok(raw_json(StatusCode::OK, body))
    }

    pub async fn list_collections(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let collections = self.conn.call(&call.scope, dbriver::Collections {}).await?;
        Ok(json(StatusCode::OK, &collections))
    }

    /// The documents of a collection; the query's `filter`, `sort` and
    /// `projection` are JSON, `limit` and `skip` numbers.
    pub async fn get_collection(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let collection = call.param("collection").to_string();
        let mut find = serde_json::Map::new();
        for key in ["filter", "sort", "projection"] {
            if let Some(value) = call.query_param(key) {
                let text = percent_decode(value);
                let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    HttpError::bad_request(format!("`{key}` must be JSON (got `{text}`): {e}"))
                })?;
                find.insert(key.into(), value);
            }
        }
        for key in ["limit", "skip"] {
            if let Some(n) = call.query_number(key)? {
                find.insert(key.into(), n.into());
            }
        }
        let doc = dbriver::Doc {
            op: DocOp::Find,
            collection,
            json: serde_json::Value::Object(find).to_string(),
        };
        let documents = self.conn.call(&call.scope, doc).await?;
        Ok(raw_json(StatusCode::OK, documents))
    }
}
