//! Invocations: run a Doee once (`isms invoke`), list a project's, read one.

use crate::Gate;
use crate::api;
use crate::reply::{BodyError, Reply, boxed, json};
use crate::request::{Call, doee};
use crate::router::API_TIMEOUT;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use isms_http::{HttpError, Takes, invocation_reply, invocation_stream};
use isms_ipc::connection::Scope;
use isms_ipc::doer::{Invoke, Trigger};
use isms_ipc::resadmin::{Authorize, GetDoee, GetInvocation, ListInvocations, Need, Role};
use isms_ipc::{FailureKind, InvocationId};

impl Gate {
    /// Runs the active version of a Doee with the body as input, and answers
    /// as an HTTP trigger of it would ([`invocation_reply`]).
    pub async fn invoke(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let (doee, scope) = (doee(call.param("doee"))?, call.scope.clone());
        // Streamed for a client that can tell a failure after the first
        // piece (the dashboard's events, `isms invoke --follow`'s trailers);
        // any other gets the answer whole, with its status.
        let takes = Takes::of(&call.request);
        let input = call.body(self.config.max_upload_bytes).await?;
        let get = GetDoee { doee: doee.clone() };
        let info = self.conn.call(&scope, get).await?;
        let version = info.active_version;
        let version = version.ok_or_else(|| {
            HttpError(
                StatusCode::CONFLICT,
                format!("`{doee}` has no version that built successfully yet"),
            )
        })?;
        let id = InvocationId::generate();
        let invoke = Invoke {
            id,
            doee,
            version,
            trigger: Trigger::Cli,
            input,
            stream: takes.events || takes.trailers,
        };
        let scope = Scope {
            placement: info.placement,
            ..scope
        };
        let mut reply = match self.conn.call_streaming(&scope, invoke) {
            Ok(call) => invocation_stream(id, call, takes)
                .await
                .map(|body| body.map_err(BodyError::from).boxed()),
            Err(failure) => boxed(invocation_reply(id, Err(failure))),
        };
        confine_to_the_api(reply.headers_mut());
        Ok(reply)
    }

    pub async fn list_invocations(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let limit = call.query_number("limit")?.unwrap_or(50).min(1000) as u32;
        let records = self
            .conn
            .call(&call.scope, ListInvocations { limit })
            .await?;
        let views: Vec<_> = records
            .into_iter()
            .map(|r| api::InvocationView::new(r, false))
            .collect();
        Ok(json(StatusCode::OK, &views))
    }

    /// One invocation, for a caller who may view its project. Anyone else
    /// learns nothing, not even that it exists.
    pub async fn invocation(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let (token, id) = (call.token.clone(), call.param("id"));
        let missing = || HttpError(StatusCode::NOT_FOUND, format!("no invocation {id}"));
        let platform = Scope::platform(API_TIMEOUT);
        let record = match id.parse::<InvocationId>() {
            Ok(id) => match self.conn.call(&platform, GetInvocation { id }).await {
                Ok(record) => Some(record),
                Err(failure) if failure.kind == FailureKind::NotFound => None,
                Err(failure) => return Err(failure.into()),
            },
            Err(_) => None,
        };
        let Some(record) = record else {
            // Still 401 before 404 for a caller without a valid token.
            let need = Need::User;
            self.conn.call(&platform, Authorize { token, need }).await?;
            return Err(missing());
        };
        let scope = Scope::project(record.project.clone(), API_TIMEOUT);
        let need = Need::Project(Role::Viewer);
        match self.conn.call(&scope, Authorize { token, need }).await {
            Ok(_) => Ok(json(
                StatusCode::OK,
                &api::InvocationView::new(record, true),
            )),
            Err(failure) if failure.kind == FailureKind::NotFound => Err(missing()),
            Err(failure) => Err(failure.into()),
        }
    }
}

/// The API shares its origin with the dashboard, where a trigger port does
/// not: a Doee's answer through it may not set cookies or CORS for that
/// origin, and is never run as a page of it.
fn confine_to_the_api(headers: &mut HeaderMap) {
    headers.remove(header::SET_COOKIE);
    let cors: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
