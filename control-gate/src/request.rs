//! What a handler gets of a request once its caller is authorized, and
//! how the API reads names, numbers and JSON out of it.

use crate::routes;
use bytes::Bytes;
use hyper::body::Incoming as Body;
use hyper::header;
use hyper::{Request, StatusCode};
use isms_http::{HttpError, read_body};
use isms_ipc::connection::Scope;
use isms_ipc::resadmin::{Caller, Role};
use isms_ipc::{DoeeName, ProjectName, Username};
use serde::de::DeserializeOwned;

/// The largest JSON body accepted.
const MAX_JSON: usize = 64 * 1024;

/// An authorized request to an endpoint.
pub struct Call<'a> {
    /// The request, its body unread.
    pub request: Request<Body>,
    /// The query string (without `?`).
    pub query: String,
    /// The endpoint and the path's `{name}` values.
    pub matched: routes::Matched<'a>,
    /// The bearer token, empty if none.
    pub token: String,
    /// The project of the path if any, for the platform's calls.
    pub scope: Scope,
    /// Who called, for endpoints that need a token.
    pub caller: Option<Caller>,
    /// How long the body may stop arriving (the server's idle timeout).
    pub body_pace: std::time::Duration,
}

impl Call<'_> {
    /// The value of `{name}` in the path.
    pub fn param(&self, name: &str) -> &str {
        self.matched.param(name)
    }

    /// The user who called; for endpoints that need a token.
    pub fn by(&self) -> Result<Username, HttpError> {
        self.caller
            .as_ref()
            .map(|c| c.user.clone())
            .ok_or_else(|| HttpError(StatusCode::INTERNAL_SERVER_ERROR, "no caller".into()))
    }

    /// The body, up to `limit` bytes.
    pub async fn body(self, limit: usize) -> Result<Bytes, HttpError> {
        read_body(self.request, limit, self.body_pace).await
    }

    /// The body as JSON.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, HttpError> {
        parse_json(&self.body(MAX_JSON).await?)
    }

    /// As [`Call::json`], an empty body being the type's default.
    pub async fn json_or_empty<T: DeserializeOwned + Default>(self) -> Result<T, HttpError> {
        let body = self.body(MAX_JSON).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        parse_json(&body)
    }

    /// The value of `key` in the query string, as it is written there.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        query_param(&self.query, key)
    }

    /// `key` of the query string as a whole number, if given.
    pub fn query_number(&self, key: &str) -> Result<Option<u64>, HttpError> {
        self.query_param(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    HttpError::bad_request(format!("`{key}` must be a whole number (got `{v}`)"))
                })
            })
            .transpose()
    }
}

/// The bearer token of `Authorization`, empty if none.
pub fn bearer(request: &Request<Body>) -> String {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// JSON text as `T`, or 400.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("invalid JSON body: {e}")))
}

/// A project named in the path; a bad name is one that does not exist.
pub fn project(name: &str) -> Result<ProjectName, HttpError> {
    ProjectName::new(name).map_err(|e| HttpError(StatusCode::NOT_FOUND, e.to_string()))
}

/// A Doee named in the path; a bad name is one that does not exist.
pub fn doee(name: &str) -> Result<DoeeName, HttpError> {
    DoeeName::new(name).map_err(|e| HttpError(StatusCode::NOT_FOUND, e.to_string()))
}

/// A role named in a body.
pub fn role(name: &str) -> Result<Role, HttpError> {
    name.parse::<Role>()
        .map_err(|unknown| HttpError::bad_request(unknown.to_string()))
}

/// A username named in a body.
pub fn username(name: &str) -> Result<Username, HttpError> {
    Username::new(name).map_err(|e| HttpError::bad_request(format!("`username`: {e}")))
}

/// A username named in the path; a bad name is one that does not exist.
pub fn username_in_path(name: &str) -> Result<Username, HttpError> {
    Username::new(name).map_err(|e| HttpError(StatusCode::NOT_FOUND, format!("`username`: {e}")))
}

/// The value of `key` in a query string.
fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `%XX` escapes and `+` of a query string value, decoded.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
