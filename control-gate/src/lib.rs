//! The Control Gate: the REST API (and, later, the dashboard and metrics).
//!
//! Every call that acts for a person passes their bearer token to Resadmin,
//! which checks it and their rights in the same round trip.

pub mod api;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use isms_ipc::connection::Scope;
use isms_ipc::doer::{Invoke, Trigger};
use isms_ipc::kernel::{InstanceState, Services};
use isms_ipc::resadmin::{CreateProject, Deploy, GetDoee, ListProjects, Login};
use isms_ipc::{
    Connection, DoeeName, Failure, FailureKind, Inbound, Incoming, InvocationId, ProjectName,
    ServiceKind,
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
}

/// The capacity the Control Gate registers with (it serves no requests).
pub const CAPACITY: u32 = 16;

/// How long an API call waits for the platform.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest JSON body accepted.
const MAX_JSON: usize = 64 * 1024;

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
        let gate = Arc::new(Gate { config, conn });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let gate = gate.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |request| {
                                let gate = gate.clone();
                                async move { Ok::<_, std::convert::Infallible>(gate.handle(request).await) }
                            });
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                    Err(err) => {
                        tracing::warn!(cause = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
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

type Reply = Response<Full<Bytes>>;

/// An API error: a status and a message for the JSON body.
struct ApiError(StatusCode, String);

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        let status = StatusCode::from_u16(failure.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError(status, failure.message)
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_reply(err: ApiError) -> Reply {
    json(err.0, &serde_json::json!({ "error": err.1 }))
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

async fn read_body(request: Request<Body>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(err) => Err(bad_request(format!("cannot read the body: {err}"))),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

fn project(name: &str) -> Result<ProjectName, ApiError> {
    ProjectName::new(name).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
}

fn doee(name: &str) -> Result<DoeeName, ApiError> {
    DoeeName::new(name).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))
}

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

impl Gate {
    async fn handle(&self, request: Request<Body>) -> Reply {
        match self.route(request).await {
            Ok(reply) => reply,
            Err(err) => error_reply(err),
        }
    }

    async fn route(&self, request: Request<Body>) -> Result<Reply, ApiError> {
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = request.method().clone();
        let token = bearer(&request);
        let platform = Scope::platform(API_TIMEOUT);
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => self.healthz().await,
            (&Method::POST, ["api", "v1", "auth", "login"]) => {
                let body: LoginBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let session = self
                    .conn
                    .call(
                        &platform,
                        Login {
                            username: body.username,
                            password: body.password,
                        },
                    )
                    .await?;
                Ok(json(StatusCode::OK, &api::LoginView::from(session)))
            }
            (&Method::GET, ["api", "v1", "projects"]) => {
                let projects = self.conn.call(&platform, ListProjects { token }).await?;
                let views: Vec<api::ProjectView> = projects.into_iter().map(Into::into).collect();
                Ok(json(StatusCode::OK, &views))
            }
            (&Method::POST, ["api", "v1", "projects"]) => {
                let body: ProjectBody = parse_json(&read_body(request, MAX_JSON).await?)?;
                let name = ProjectName::new(body.name).map_err(|e| bad_request(e.to_string()))?;
                let created = self
                    .conn
                    .call(&Scope::project(name, API_TIMEOUT), CreateProject { token })
                    .await?;
                Ok(json(StatusCode::CREATED, &api::ProjectView::from(created)))
            }
            (&Method::POST, ["api", "v1", "projects", p, "doees"]) => {
                let scope = Scope::project(project(p)?, API_TIMEOUT);
                let archive = read_body(request, self.config.max_upload_bytes).await?;
                if archive.is_empty() {
                    return Err(bad_request(
                        "the body must be the Doee directory as .tar.gz",
                    ));
                }
                let deployed = self.conn.call(&scope, Deploy { token, archive }).await?;
                Ok(json(
                    StatusCode::ACCEPTED,
                    &api::DeployedView::from(deployed),
                ))
            }
            (&Method::GET, ["api", "v1", "projects", p, "doees", d]) => {
                let scope = Scope::project(project(p)?, API_TIMEOUT);
                let info = self
                    .conn
                    .call(
                        &scope,
                        GetDoee {
                            token,
                            doee: doee(d)?,
                        },
                    )
                    .await?;
                Ok(json(StatusCode::OK, &api::DoeeView::from(info)))
            }
            (&Method::POST, ["api", "v1", "projects", p, "doees", d, "invoke"]) => {
                let (project, doee) = (project(p)?, doee(d)?);
                let input = read_body(request, self.config.max_upload_bytes).await?;
                self.invoke(token, project, doee, input).await
            }
            (&Method::GET, ["api", "v1", "system", "services"]) => {
                let services = self.conn.call(&platform, Services {}).await?;
                let views: Vec<api::ServiceView> = services.into_iter().map(Into::into).collect();
                Ok(json(StatusCode::OK, &views))
            }
            (_, ["healthz"] | ["api", "v1", ..]) => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no API endpoint {method} {path}"),
            )),
            _ => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("nothing at {path}"),
            )),
        }
    }

    /// 200 when every service is up, 503 otherwise.
    async fn healthz(&self) -> Result<Reply, ApiError> {
        let services = self
            .conn
            .call(&Scope::platform(Duration::from_secs(5)), Services {})
            .await?;
        let required = [
            ServiceKind::Resadmin,
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

    /// Runs the active version of a Doee with the body as input (`isms invoke`).
    async fn invoke(
        &self,
        token: String,
        project: ProjectName,
        doee: DoeeName,
        input: Bytes,
    ) -> Result<Reply, ApiError> {
        let scope = Scope::project(project.clone(), API_TIMEOUT);
        let info = self
            .conn
            .call(
                &scope,
                GetDoee {
                    token,
                    doee: doee.clone(),
                },
            )
            .await?;
        let version = info.active_version.ok_or_else(|| {
            ApiError(
                StatusCode::CONFLICT,
                format!("`{doee}` has no version that built successfully yet"),
            )
        })?;
        let id = InvocationId::generate();
        let outcome = self
            .conn
            .call(
                &scope,
                Invoke {
                    id,
                    doee,
                    version,
                    trigger: Trigger::Cli,
                    input,
                },
            )
            .await
            .map_err(|failure| match failure.kind {
                FailureKind::Busy | FailureKind::Timeout | FailureKind::Unavailable => {
                    ApiError::from(failure)
                }
                _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, failure.message),
            })?;
        let invocation = HeaderValue::from_str(&id.to_string()).ok();
        let mut reply = match outcome.result {
            Ok(response) => {
                let mut reply = Response::new(Full::new(response.body));
                *reply.status_mut() = response
                    .status
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::OK);
                reply
            }
            Err(failure) => {
                let status = StatusCode::from_u16(failure.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                json(
                    status,
                    &serde_json::json!({ "error": failure.message(), "invocation_id": id.to_string() }),
                )
            }
        };
        if let Some(invocation) = invocation {
            reply
                .headers_mut()
                .insert("x-isms-invocation-id", invocation);
        }
        Ok(reply)
    }
}
