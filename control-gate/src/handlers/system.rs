//! The platform itself: health, metrics, its services, the API's
//! description and the dashboard's files.

use crate::reply::{Reply, error_reply, full, json, list};
use crate::request::Call;
use crate::{Gate, OPENAPI, api, dashboard, metrics};
use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use isms_http::HttpError;
use isms_ipc::ServiceKind;
use isms_ipc::commserver;
use isms_ipc::connection::Scope;
use isms_ipc::kernel::{InstanceState, Services};
use isms_ipc::resadmin::{Authorize, ListProjects, Need, Role, Stats};
use std::time::Duration;

/// The OpenAPI description of the API.
pub fn openapi() -> Reply {
    let mut reply = Response::new(full(Bytes::from_static(OPENAPI.as_bytes())));
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Gate {
    /// The Services Controller's view of every service instance.
    pub async fn services(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let services = self.conn.call(&call.scope, Services {}).await?;
        Ok(list(services, api::ServiceView::from))
    }

    /// A file of the dashboard, or 304 when the browser holds this version.
    /// `no-cache`: the browser asks each time, so a new binary's dashboard is
    /// never mixed with an old one's modules.
    pub fn dashboard_file(&self, call: &Call<'_>, name: &str) -> Reply {
        let Some(file) = self.config.dashboard.file(name) else {
            return error_reply(HttpError(
                StatusCode::NOT_FOUND,
                format!("the dashboard has no file {name}"),
            ));
        };
        let fresh = call
            .request
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == file.etag));
        let mut reply = if fresh {
            let mut reply = Response::new(full(Bytes::new()));
            *reply.status_mut() = StatusCode::NOT_MODIFIED;
            reply
        } else {
            let mut reply = Response::new(full(file.body));
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(file.content_type),
            );
            reply
        };
        let headers = reply.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(etag) = HeaderValue::from_str(&file.etag) {
            headers.insert(header::ETAG, etag);
        }
        for (name, value) in dashboard::SECURITY_HEADERS {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        reply
    }

    /// 200 when every service is up, 503 otherwise.
    pub async fn healthz(&self) -> Result<Reply, HttpError> {
        let services = self
            .conn
            .call(&Scope::platform(Duration::from_secs(5)), Services {})
            .await?;
        let required = [
            ServiceKind::Resadmin,
            ServiceKind::DBriver,
            ServiceKind::Doer,
            ServiceKind::CommServer,
            ServiceKind::ControlGate,
        ];
        let missing: Vec<&str> = required
            .iter()
            .filter(|kind| {
                !services
                    .iter()
                    .any(|s| s.service == **kind && s.state == InstanceState::Up)
            })
            .map(|kind| kind.as_str())
            .collect();
        if missing.is_empty() {
            Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok" })))
        } else {
            Ok(json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "degraded", "down": missing }),
            ))
        }
    }

    /// `/metrics`: the Services Controller's view and Resadmin's counters.
    /// Whatever names a project is shown only to who may see it: every
    /// project for the metrics token and platform admins, a user's own
    /// projects for their token, none without one.
    pub async fn metrics(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let shown = self.metrics_viewer(&call.scope, call.token).await?;
        let scope = Scope::platform(Duration::from_secs(5));
        let (services, stats, mqtt) = tokio::join!(
            self.conn.call(&scope, Services {}),
            async {
                match &shown {
                    metrics::Shown::Nothing => Ok(Vec::new()),
                    _ => self.conn.call(&scope, Stats {}).await,
                }
            },
            self.conn.call(&scope, commserver::Stats {})
        );
        // Services answer from the kernel itself; the counters need Resadmin
        // and the CommServer, and the rest of the page is worth serving
        // without them.
        let stats = stats.unwrap_or_default();
        let text = metrics::render(&services?, &shown.filter(stats), mqtt.ok().as_ref());
        let mut reply = Response::new(full(Bytes::from(text)));
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(reply)
    }

    /// Which projects' metrics the bearer of `token` may see.
    async fn metrics_viewer(
        &self,
        scope: &Scope,
        token: String,
    ) -> Result<metrics::Shown, HttpError> {
        if token.is_empty() {
            return Ok(metrics::Shown::Nothing);
        }
        if let Some(expected) = &self.config.metrics_token
            && constant_time_eq(expected.as_bytes(), token.as_bytes())
        {
            return Ok(metrics::Shown::Everything);
        }
        let caller = self
            .conn
            .call(
                scope,
                Authorize {
                    token,
                    need: Need::User,
                },
            )
            .await?;
        if caller.role == Role::Admin {
            return Ok(metrics::Shown::Everything);
        }
        let member = Some(caller.user);
        let projects = self.conn.call(scope, ListProjects { member }).await?;
        Ok(metrics::Shown::Projects(
            projects.into_iter().map(|p| p.name).collect(),
        ))
    }
}
