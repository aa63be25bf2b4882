//! From a request to its handler: the endpoint from the table, the
//! project in the path, the caller's authorization, then one line per
//! endpoint naming the handler.

use crate::Gate;
use crate::reply::{Reply, error_reply};
use crate::request::{Call, bearer, project};
use crate::routes::{self, Access, Endpoint as E};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use isms_http::HttpError;
use isms_ipc::connection::Scope;
use isms_ipc::resadmin::Authorize;
use std::time::Duration;

/// How long an API call waits for the platform.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

impl Gate {
    /// The answer to `request`.
    pub async fn route(&self, request: Request<Body>) -> Result<Reply, HttpError> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let matched = match routes::lookup(method.as_str(), &path) {
            routes::Lookup::Found(matched) => matched,
            routes::Lookup::WrongMethod(allowed) => {
                let mut reply = error_reply(HttpError(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} accepts {}", allowed.join(", ")),
                ));
                if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
                    reply.headers_mut().insert(header::ALLOW, allow);
                }
                return Ok(reply);
            }
            routes::Lookup::Missing => {
                return Err(HttpError(
                    StatusCode::NOT_FOUND,
                    format!("no API endpoint {method} {path}"),
                ));
            }
        };
        let token = bearer(&request);
        // A project in the path is checked before anything is read.
        let scope = match matched.params.iter().find(|(n, _)| *n == "project") {
            Some((_, name)) => Scope::project(project(name)?, API_TIMEOUT),
            None => Scope::platform(API_TIMEOUT),
        };
        let caller = match matched.access {
            Access::Needs(need) => {
                let token = token.clone();
                Some(self.conn.call(&scope, Authorize { token, need }).await?)
            }
            Access::Public | Access::ByRecord => None,
        };
        let call = Call {
            query: request.uri().query().unwrap_or("").to_string(),
            request,
            matched,
            token,
            scope,
            caller,
            body_pace: self.config.http.idle_timeout,
        };
        self.dispatch(call).await
    }

    async fn dispatch(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        match call.matched.endpoint {
            E::Dashboard => Ok(self.dashboard_file(&call, crate::dashboard::INDEX)),
            E::DashboardFile => Ok(self.dashboard_file(&call, call.param("file"))),
            E::Healthz => self.healthz().await,
            E::Metrics => self.metrics(call).await,
            E::OpenApi => Ok(crate::handlers::system::openapi()),
            E::Services => self.services(call).await,
            E::Login => self.login(call).await,
            E::Logout => self.logout(call).await,
            E::ListTokens => self.list_tokens(call).await,
            E::CreateToken => self.create_token(call).await,
            E::RevokeToken => self.revoke_token(call).await,
            E::ListUsers => self.list_users(call).await,
            E::CreateUser => self.create_user(call).await,
            E::DeleteUser => self.delete_user(call).await,
            E::ListProjects => self.list_projects(call).await,
            E::CreateProject => self.create_project(call).await,
            E::GetProject => self.get_project(call).await,
            E::DeleteProject => self.delete_project(call).await,
            E::ListMembers => self.list_members(call).await,
            E::AddMember => self.add_member(call).await,
            E::RemoveMember => self.remove_member(call).await,
            E::SetQuotas => self.set_quotas(call).await,
            E::SetTopics => self.set_topics(call).await,
            E::ListDoees => self.list_doees(call).await,
            E::Deploy => self.deploy(call).await,
            E::GetDoee => self.get_doee(call).await,
            E::DeleteDoee => self.delete_doee(call).await,
            E::Rollback => self.rollback(call).await,
            E::Invoke => self.invoke(call).await,
            E::ListInvocations => self.list_invocations(call).await,
            E::GetInvocation => self.invocation(call).await,
            E::Logs => self.logs(call).await,
            E::Sql => self.sql(call).await,
            E::ListCollections => self.list_collections(call).await,
            E::GetCollection => self.get_collection(call).await,
            E::DeadLetters => self.dead_letters(call).await,
            E::RetryDeadLetters => self.retry_dead_letters(call).await,
            E::PurgeDeadLetters => self.purge_dead_letters(call).await,
            E::ListDevices => self.list_devices(call).await,
            E::CreateDevice => self.create_device(call).await,
            E::DeleteDevice => self.delete_device(call).await,
            E::ListSecrets => self.list_secrets(call).await,
            E::SetSecret => self.set_secret(call).await,
            E::DeleteSecret => self.delete_secret(call).await,
        }
    }
}
