//! The Control Gate: the REST API, `/metrics` and the web dashboard.
//!
//! Every endpoint is in one table ([`routes::ROUTES`]) with what its caller
//! needs; before acting, the Gate asks Resadmin to `Authorize` the bearer
//! token for that need, so a refused call changes nothing.

pub mod api;
pub mod dashboard;
mod metrics;
pub mod routes;
mod sse;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use isms_http::{HttpError as ApiError, read_body};
use isms_ipc::commserver;
use isms_ipc::connection::Scope;
use isms_ipc::dbriver::{self, DocOp};
use isms_ipc::doer::{Invoke, Trigger};
use isms_ipc::kernel::{InstanceState, Services};
use isms_ipc::resadmin::{
    Authorize, CreateDevice, CreateProject, CreateToken, CreateUser, DeleteDevice, DeleteDoee,
    DeleteProject, DeleteUser, Deploy, GetDoee, GetInvocation, GetProject, ListDevices, ListDoees,
    ListInvocations, ListProjects, ListTokens, ListUsers, Login, Logout, Logs, Member, Need,
    Quotas, RevokeToken, Role, Rollback, SetMember, SetQuotas, SetTopics, Stats,
};
use isms_ipc::{
    Connection, DeviceName, DoeeName, Failure, FailureKind, Inbound, Incoming, InvocationId,
    ProjectName, ServiceKind, Username,
};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the Control Gate runs.
#[derive(Clone, Debug)]
pub struct ControlGateConfig {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The largest upload (a Doee archive) accepted.
    pub max_upload_bytes: usize,
    /// Timeouts and the connection cap of the API's port.
    pub http: isms_http::Limits,
    /// The web dashboard's files and what it shows of the platform.
    pub dashboard: dashboard::Dashboard,
    /// A bearer token that shows `/metrics` whole, for Prometheus.
    pub metrics_token: Option<String>,
}

/// The capacity the Control Gate registers with (it serves no requests).
pub const CAPACITY: u32 = 16;

/// How long an API call waits for the platform.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest JSON body accepted.
const MAX_JSON: usize = 64 * 1024;
/// Largest SQL request body: a statement and its parameters.
const MAX_SQL: usize = 1 << 20;

/// The Control Gate with its port bound, ready to join the kernel.
pub struct Prepared {
    config: ControlGateConfig,
    listener: tokio::net::TcpListener,
}

/// Binds the API's port, so a port in use fails before the Control Gate
/// tells the kernel it is up.
pub async fn prepare(config: ControlGateConfig) -> anyhow::Result<Prepared> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the API on {}: {e}", config.addr))?;
    tracing::info!(addr = %config.addr, "Control Gate listening");
    if let Some(dir) = &config.dashboard.dir {
        tracing::warn!(dir = %dir.display(), "serving the dashboard's files from a directory, not the built-in copies");
    }
    Ok(Prepared { config, listener })
}

impl Prepared {
    /// Serves the API until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        mut incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Prepared { config, listener } = self;
        let limits = config.http;
        let http = isms_http::serve(listener, limits, Arc::new(Gate { config, conn }));
        tokio::pin!(shutdown);
        tokio::pin!(http);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                () = &mut http => anyhow::bail!("the API's server stopped"),
                inbound = incoming.next() => match inbound {
                    Some(Inbound::Request(delivery)) => {
                        delivery.responder.reply(Err(Failure::invalid("the Control Gate takes no requests")));
                    }
                Some(Inbound::Event(_)) => {}
                    None => anyhow::bail!("lost the kernel"),
                },
            }
        }
    }
}

struct Gate {
    config: ControlGateConfig,
    conn: Connection,
}

type Reply = Response<BoxBody<Bytes, std::convert::Infallible>>;

fn full(bytes: Bytes) -> BoxBody<Bytes, std::convert::Infallible> {
    BodyExt::boxed(Full::new(bytes))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// A reply of [`isms_http`], with the body type of this server's replies.
fn boxed(reply: isms_http::Reply) -> Reply {
    reply.map(BodyExt::boxed)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    boxed(isms_http::json(status, value))
}

/// A response whose JSON is already text.
fn raw_json(status: StatusCode, body: String) -> Reply {
    boxed(isms_http::raw_json(status, body))
}

fn error_reply(err: ApiError) -> Reply {
    boxed(err.reply())
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(request: &Request<Body>) -> String {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// As [`parse_json`], an empty body being the type's default.
fn parse_json_or_empty<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

fn project(name: &str) -> Result<ProjectName, ApiError> {
    ProjectName::new(name).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
}

fn doee(name: &str) -> Result<DoeeName, ApiError> {
    DoeeName::new(name).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
}

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectBody {
    name: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    username: String,
    password: String,
    role: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    query: String,
    #[serde(default)]
    params: Option<Vec<serde_json::Value>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    username: String,
    role: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    #[serde(default = "default_token_days")]
    days: u32,
}

fn default_token_days() -> u32 {
    90
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u32,
}

fn role(name: &str) -> Result<Role, ApiError> {
    match name {
        "admin" => Ok(Role::Admin),
        "developer" => Ok(Role::Developer),
        "viewer" => Ok(Role::Viewer),
        other => Err(bad_request(format!(
            "`role` must be \"admin\", \"developer\" or \"viewer\" (got \"{other}\")"
        ))),
    }
}

fn username(name: &str) -> Result<Username, ApiError> {
    Username::new(name).map_err(|e| bad_request(format!("`username`: {e}")))
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
fn percent_decode(value: &str) -> String {
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

fn query_number(query: &str, key: &str) -> Result<Option<u64>, ApiError> {
    query_param(query, key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad_request(format!("`{key}` must be a whole number (got `{v}`)")))
        })
        .transpose()
}

impl isms_http::Handler for Gate {
    type Body = BoxBody<Bytes, std::convert::Infallible>;

    async fn handle(&self, request: Request<Body>) -> Reply {
        match self.route(request).await {
            Ok(reply) => reply,
            Err(err) => error_reply(err),
        }
    }
}

impl Gate {
    async fn route(&self, request: Request<Body>) -> Result<Reply, ApiError> {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let method = request.method().clone();
        let matched = match routes::lookup(method.as_str(), &path) {
            routes::Lookup::Found(matched) => matched,
            routes::Lookup::WrongMethod(allowed) => {
                let mut reply = error_reply(ApiError(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} accepts {}", allowed.join(", ")),
                ));
                if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
                    reply.headers_mut().insert(header::ALLOW, allow);
                }
                return Ok(reply);
            }
            routes::Lookup::Missing => {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no API endpoint {method} {path}"),
                ));
            }
        };
        let token = bearer(&request);
        // A project in the path is checked before anything is read.
        let project = match matched.params.iter().find(|(n, _)| *n == "project") {
            Some((_, name)) => Some(project(name)?),
            None => None,
        };
        let scope = match &project {
            Some(project) => Scope::project(project.clone(), API_TIMEOUT),
            None => Scope::platform(API_TIMEOUT),
        };
        let caller = match matched.access {
            routes::Access::Needs(need) => Some(
                self.conn
                    .call(
                        &scope,
                        Authorize {
                            token: token.clone(),
                            need,
                        },
                    )
                    .await?,
            ),
            routes::Access::Public | routes::Access::ByRecord => None,
        };
        let by = || {
            caller
                .as_ref()
                .map(|c| c.user.clone())
                .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no caller".into()))
        };
        use routes::Endpoint as E;
        match matched.endpoint {
            E::Dashboard => Ok(self.dashboard_file(&request, dashboard::INDEX)),
            E::DashboardFile => Ok(self.dashboard_file(&request, matched.param("file"))),
            E::Healthz => self.healthz().await,
            E::Metrics => self.metrics(&scope, token).await,
            E::OpenApi => {
                let mut reply = Response::new(full(Bytes::from_static(OPENAPI.as_bytes())));
                reply.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(reply)
            }
            E::Login => {
                let body: LoginBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let session = self
                    .conn
                    .call(
                        &scope,
                        Login {
                            username: body.username,
                            password: body.password,
                        },
                    )
                    .await?;
                Ok(json(StatusCode::OK, &api::LoginView::from(session)))
            }
            E::Logout => {
                self.conn.call(&scope, Logout { token }).await?;
                Ok(no_content())
            }
            E::ListUsers => {
                let users = self.conn.call(&scope, ListUsers {}).await?;
                Ok(json(StatusCode::OK, &map(users, api::UserView::from)))
            }
            E::CreateUser => {
                let body: UserBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let user = self
                    .conn
                    .call(
                        &scope,
                        CreateUser {
                            username: username(&body.username)?,
                            password: body.password,
                            role: role(&body.role)?,
                        },
                    )
                    .await?;
                Ok(json(StatusCode::CREATED, &api::UserView::from(user)))
            }
            E::DeleteUser => {
                let username = username(matched.param("username"))
                    .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.1))?;
                self.conn.call(&scope, DeleteUser { username }).await?;
                Ok(no_content())
            }
            E::ListTokens => {
                let tokens = self.conn.call(&scope, ListTokens { by: by()? }).await?;
                Ok(json(StatusCode::OK, &map(tokens, api::TokenView::from)))
            }
            E::CreateToken => {
                let body: TokenBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let created = self
                    .conn
                    .call(
                        &scope,
                        CreateToken {
                            by: by()?,
                            name: body.name,
                            days: body.days,
                        },
                    )
                    .await?;
                let mut view = api::TokenView::from(created.info);
                view.token = Some(created.token);
                Ok(json(StatusCode::CREATED, &view))
            }
            E::RevokeToken => {
                let id = matched.param("id").to_string();
                self.conn
                    .call(&scope, RevokeToken { by: by()?, id })
                    .await?;
                Ok(no_content())
            }
            E::ListProjects => {
                let member = caller
                    .as_ref()
                    .filter(|c| c.role != Role::Admin)
                    .map(|c| c.user.clone());
                let projects = self.conn.call(&scope, ListProjects { member }).await?;
                Ok(json(StatusCode::OK, &map(projects, api::ProjectView::from)))
            }
            E::CreateProject => {
                let body: ProjectBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let name =
                    ProjectName::new(body.name).map_err(|e| bad_request(format!("`name`: {e}")))?;
                let created = self
                    .conn
                    .call(
                        &Scope::project(name, API_TIMEOUT),
                        CreateProject { by: by()? },
                    )
                    .await?;
                Ok(json(StatusCode::CREATED, &api::ProjectView::from(created)))
            }
            E::GetProject => {
                let detail = self.conn.call(&scope, GetProject {}).await?;
                Ok(json(StatusCode::OK, &api::ProjectDetailView::from(detail)))
            }
            E::DeleteProject => {
                self.conn.call(&scope, DeleteProject {}).await?;
                Ok(no_content())
            }
            E::ListMembers => {
                let detail = self.conn.call(&scope, GetProject {}).await?;
                Ok(json(
                    StatusCode::OK,
                    &map(detail.members, api::MemberView::from),
                ))
            }
            E::AddMember => {
                let body: MemberBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let (username, role) = (username(&body.username)?, role(&body.role)?);
                self.conn
                    .call(
                        &scope,
                        SetMember {
                            username: username.clone(),
                            role: Some(role),
                        },
                    )
                    .await?;
                Ok(json(
                    StatusCode::OK,
                    &api::MemberView::from(Member {
                        user: username,
                        role,
                    }),
                ))
            }
            E::RemoveMember => {
                let username = username(matched.param("username"))
                    .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.1))?;
                self.conn
                    .call(
                        &scope,
                        SetMember {
                            username,
                            role: None,
                        },
                    )
                    .await?;
                Ok(no_content())
            }
            E::SetQuotas => {
                let body: api::QuotasView = parse_json(&read_body(request, MAX_JSON).await?)?;
                let quotas = Quotas {
                    max_doees: body.max_doees,
                    max_workers: body.max_workers,
                    max_upload_bytes: body.max_upload_bytes,
                    cpu_weight: body.cpu_weight,
                };
                self.conn.call(&scope, SetQuotas { quotas }).await?;
                Ok(json(StatusCode::OK, &body))
            }
            E::SetTopics => {
                let body: api::TopicsView = parse_json(&read_body(request, MAX_JSON).await?)?;
                let namespaces = body.namespaces;
                self.conn.call(&scope, SetTopics { namespaces }).await?;
                let detail = self.conn.call(&scope, GetProject {}).await?;
                Ok(json(
                    StatusCode::OK,
                    &api::TopicsView {
                        namespaces: detail.topics,
                    },
                ))
            }
            E::ListDoees => {
                let doees = self.conn.call(&scope, ListDoees {}).await?;
                Ok(json(StatusCode::OK, &map(doees, api::DoeeView::from)))
            }
            E::Deploy => {
                let archive = read_body(request, self.config.max_upload_bytes).await?;
                if archive.is_empty() {
                    return Err(bad_request(
                        "the body must be the Doee directory as .tar.gz",
                    ));
                }
                let deployed = self
                    .conn
                    .call(&scope, Deploy { by: by()?, archive })
                    .await?;
                Ok(json(
                    StatusCode::ACCEPTED,
                    &api::DeployedView::from(deployed),
                ))
            }
            E::GetDoee => {
                let doee = doee(matched.param("doee"))?;
                let info = self.conn.call(&scope, GetDoee { doee }).await?;
                Ok(json(StatusCode::OK, &api::DoeeView::from(info)))
            }
            E::DeleteDoee => {
                let doee = doee(matched.param("doee"))?;
                self.conn.call(&scope, DeleteDoee { doee }).await?;
                Ok(no_content())
            }
            E::Rollback => {
                let doee = doee(matched.param("doee"))?;
                let body: RollbackBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let info = self
                    .conn
                    .call(
                        &scope,
                        Rollback {
                            doee,
                            version: body.version,
                        },
                    )
                    .await?;
                Ok(json(StatusCode::OK, &api::DoeeView::from(info)))
            }
            E::Invoke => {
                let doee = doee(matched.param("doee"))?;
                let input = read_body(request, self.config.max_upload_bytes).await?;
                self.invoke(scope, doee, input).await
            }
            E::ListInvocations => {
                let limit = query_number(&query, "limit")?.unwrap_or(50).min(1000) as u32;
                let records = self.conn.call(&scope, ListInvocations { limit }).await?;
                let views: Vec<_> = records
                    .into_iter()
                    .map(|r| api::InvocationView::new(r, false))
                    .collect();
                Ok(json(StatusCode::OK, &views))
            }
            E::GetInvocation => self.invocation(token, matched.param("id")).await,
            E::Logs => {
                let after = match query_number(&query, "after")? {
                    Some(after) => Some(after),
                    None => request
                        .headers()
                        .get("last-event-id")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok()),
                };
                let limit = query_number(&query, "limit")?.unwrap_or(100).clamp(1, 1000) as u32;
                let follow = matches!(query_param(&query, "follow"), Some("1" | "true" | ""));
                if follow {
                    Ok(self.follow_logs(scope, token, after, limit))
                } else {
                    let lines = self.conn.call(&scope, Logs { after, limit }).await?;
                    Ok(json(StatusCode::OK, &map(lines, api::LogView::from)))
                }
            }
            E::Sql => {
                let body: SqlBody = parse_json(&read_body(request, MAX_SQL).await?)?;
                let params = serde_json::to_string(&body.params.unwrap_or_default())
                    .map_err(|e| bad_request(format!("`params`: {e}")))?;
                let rows = self
                    .conn
                    .call(
                        &scope,
                        dbriver::Sql {
                            query: body.query,
                            params,
                        },
                    )
                    .await?;
                // The rows are JSON text already: spliced, not re-parsed.
                let columns = serde_json::to_string(&rows.columns).unwrap_or_else(|_| "[]".into());
                let body = format!(
                    r#"{{"columns":{columns},"rows":{},"rows_affected":{}}}"#,
                    rows.rows, rows.rows_affected
                );
                Ok(raw_json(StatusCode::OK, body))
            }
            E::ListCollections => {
                let collections = self.conn.call(&scope, dbriver::Collections {}).await?;
                Ok(json(StatusCode::OK, &collections))
            }
            E::GetCollection => {
                let collection = matched.param("collection").to_string();
                let mut find = serde_json::Map::new();
                for key in ["filter", "sort", "projection"] {
                    if let Some(value) = query_param(&query, key) {
                        let text = percent_decode(value);
                        let value: serde_json::Value =
                            serde_json::from_str(&text).map_err(|e| {
                                bad_request(format!("`{key}` must be JSON (got `{text}`): {e}"))
                            })?;
                        find.insert(key.into(), value);
                    }
                }
                for key in ["limit", "skip"] {
                    if let Some(n) = query_number(&query, key)? {
                        find.insert(key.into(), n.into());
                    }
                }
                let documents = self
                    .conn
                    .call(
                        &scope,
                        dbriver::Doc {
                            op: DocOp::Find,
                            collection,
                            json: serde_json::Value::Object(find).to_string(),
                        },
                    )
                    .await?;
                Ok(raw_json(StatusCode::OK, documents))
            }
            E::DeadLetters => {
                let limit = query_number(&query, "limit")?.unwrap_or(100).min(1000) as u32;
                let letters = self
                    .conn
                    .call(&scope, commserver::DeadLetters { limit })
                    .await?;
                Ok(json(
                    StatusCode::OK,
                    &map(letters, api::DeadLetterView::from),
                ))
            }
            E::RetryDeadLetters | E::PurgeDeadLetters => {
                let body: api::DeadLettersBody =
                    parse_json_or_empty(&read_body(request, MAX_JSON).await?)?;
                let ids = body.ids;
                let (key, count) = if matched.endpoint == E::RetryDeadLetters {
                    let n = self
                        .conn
                        .call(&scope, commserver::RetryDeadLetters { ids })
                        .await?;
                    ("retried", n)
                } else {
                    let n = self
                        .conn
                        .call(&scope, commserver::PurgeDeadLetters { ids })
                        .await?;
                    ("purged", n)
                };
                Ok(json(StatusCode::OK, &serde_json::json!({ key: count })))
            }
            E::ListDevices => {
                let devices = self.conn.call(&scope, ListDevices {}).await?;
                Ok(json(StatusCode::OK, &map(devices, api::DeviceView::from)))
            }
            E::CreateDevice => {
                let body: api::DeviceBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let name = DeviceName::new(&body.name).map_err(|e| bad_request(e.to_string()))?;
                let created = self.conn.call(&scope, CreateDevice { name }).await?;
                Ok(json(
                    StatusCode::CREATED,
                    &api::NewDeviceView::from(created),
                ))
            }
            E::DeleteDevice => {
                let name = DeviceName::new(matched.param("device"))
                    .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
                self.conn.call(&scope, DeleteDevice { name }).await?;
                Ok(no_content())
            }
            E::Services => {
                let services = self.conn.call(&scope, Services {}).await?;
                Ok(json(StatusCode::OK, &map(services, api::ServiceView::from)))
            }
        }
    }

    /// A file of the dashboard, or 304 when the browser holds this version.
    /// `no-cache`: the browser asks each time, so a new binary's dashboard is
    /// never mixed with an old one's modules.
    fn dashboard_file(&self, request: &Request<Body>, name: &str) -> Reply {
        let Some(file) = self.config.dashboard.file(name) else {
            return error_reply(ApiError(
                StatusCode::NOT_FOUND,
                format!("the dashboard has no file {name}"),
            ));
        };
        let fresh = request
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
    async fn healthz(&self) -> Result<Reply, ApiError> {
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
    async fn metrics(&self, scope: &Scope, token: String) -> Result<Reply, ApiError> {
        let shown = self.metrics_viewer(scope, token).await?;
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
    ) -> Result<metrics::Shown, ApiError> {
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

    /// One invocation, for a caller who may view its project. Anyone else
    /// learns nothing, not even that it exists.
    async fn invocation(&self, token: String, id: &str) -> Result<Reply, ApiError> {
        let missing = || ApiError(StatusCode::NOT_FOUND, format!("no invocation {id}"));
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

    /// Streams a project's log as Server-Sent Events: the latest lines (or
    /// those after the cursor), then new ones as they are recorded. The
    /// token is checked again every half minute, so revoking it ends the
    /// stream.
    fn follow_logs(&self, scope: Scope, token: String, after: Option<u64>, limit: u32) -> Reply {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let mut cursor = after;
            let mut checked = std::time::Instant::now();
            let mut quiet = std::time::Instant::now();
            if tx
                .send(Bytes::from_static(b"retry: 1000\n\n"))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let lines = match conn
                    .call(
                        &scope,
                        Logs {
                            after: cursor,
                            limit,
                        },
                    )
                    .await
                {
                    Ok(lines) => lines,
                    Err(failure) => {
                        let event = format!("event: error\ndata: {}\n\n", failure.message);
                        let _ = tx.send(Bytes::from(event)).await;
                        return;
                    }
                };
                if cursor.is_none() {
                    cursor = Some(lines.last().map_or(0, |l| l.id));
                }
                let got = lines.len();
                for line in lines {
                    cursor = Some(line.id);
                    let data = serde_json::to_string(&api::LogView::from(line)).unwrap_or_default();
                    let event =
                        format!("id: {}\nevent: log\ndata: {data}\n\n", cursor.unwrap_or(0));
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                if got > 0 {
                    quiet = std::time::Instant::now();
                    if got == limit as usize {
                        continue;
                    }
                } else if quiet.elapsed() > Duration::from_secs(15) {
                    // A comment keeps proxies and the client from timing out,
                    // and tells us when the client has gone.
                    if tx
                        .send(Bytes::from_static(b": keep-alive\n\n"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    quiet = std::time::Instant::now();
                }
                if checked.elapsed() > Duration::from_secs(30) {
                    let need = Need::Project(Role::Viewer);
                    let again = Authorize {
                        token: token.clone(),
                        need,
                    };
                    if let Err(failure) = conn.call(&scope, again).await {
                        let event = format!("event: error\ndata: {}\n\n", failure.message);
                        let _ = tx.send(Bytes::from(event)).await;
                        return;
                    }
                    checked = std::time::Instant::now();
                }
                tokio::select! {
                    _ = tokio::time::sleep(LOG_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        let mut reply = Response::new(BodyExt::boxed(sse::Events(rx)));
        let headers = reply.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        reply
    }

    /// Runs the active version of a Doee with the body as input (`isms invoke`).
    async fn invoke(&self, scope: Scope, doee: DoeeName, input: Bytes) -> Result<Reply, ApiError> {
        let info = self
            .conn
            .call(&scope, GetDoee { doee: doee.clone() })
            .await?;
        let version = info.active_version.ok_or_else(|| {
            ApiError(
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
        };
        let outcome = self.conn.call(&scope, invoke).await;
        Ok(boxed(isms_http::invocation_reply(id, outcome)))
    }
}

/// How often a followed log is read again.
const LOG_POLL: Duration = Duration::from_millis(200);

fn map<T, V>(items: Vec<T>, view: impl Fn(T) -> V) -> Vec<V> {
    items.into_iter().map(view).collect()
}

fn no_content() -> Reply {
    let mut reply = Response::new(full(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}
