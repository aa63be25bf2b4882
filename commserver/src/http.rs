//! The HTTP trigger port: a request to `/<project>/<route>` becomes an
//! invocation; serving, body limits and the response are [`isms_http`]'s,
//! shared with the Control Gate's API.

use crate::CommServerConfig;
use crate::pipeline;
use crate::routes::{Lookup, Routes};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use isms_http::{
    HttpError, MaybeStreamed, Reply, Takes, invocation_error, invocation_reply, invocation_stream,
    read_body, set_invocation_header,
};
use isms_ipc::connection::Scope;
use isms_ipc::doer::{Invoke, Trigger};
use isms_ipc::resadmin::Record;
use isms_ipc::{Connection, InvocationId, ProjectName};
use std::sync::Arc;
use std::time::Duration;

/// Answers the trigger port's requests.
pub struct Server {
    config: CommServerConfig,
    conn: Connection,
    routes: Arc<Routes>,
}

impl Server {
    /// A server over the route table.
    pub fn new(config: CommServerConfig, conn: Connection, routes: Arc<Routes>) -> Server {
        Server {
            config,
            conn,
            routes,
        }
    }
}

fn error(status: StatusCode, message: &str) -> Reply {
    HttpError(status, message.to_string()).reply()
}

/// The answer to a HEAD request: the headers alone.
fn without_body(mut reply: Reply) -> Reply {
    *reply.body_mut() = Full::new(Bytes::new());
    reply
}

/// A reply in memory, as the trigger port's body.
fn left(reply: Reply) -> Response<MaybeStreamed> {
    reply.map(MaybeStreamed::Full)
}

impl isms_http::Handler for Server {
    type Body = MaybeStreamed;

    async fn handle(&self, request: Request<Body>) -> Response<MaybeStreamed> {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let Some((project, route)) = split_path(&path) else {
            return left(error(StatusCode::NOT_FOUND, "use /<project>/<route>"));
        };
        let mut lookup = self.routes.find(project, route);
        if matches!(lookup, Lookup::Missing)
            && self
                .routes
                .refresh_after_miss(Duration::from_secs(1), Duration::from_secs(2))
                .await
        {
            lookup = self.routes.find(project, route);
        }
        let found = match lookup {
            Lookup::Found(found) => found,
            Lookup::NotReady => {
                return left(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the platform is starting: routes are not loaded yet",
                ));
            }
            Lookup::Missing => {
                return left(error(
                    StatusCode::NOT_FOUND,
                    &format!("no route {route} in project {project}"),
                ));
            }
        };
        let method = request.method().clone();
        let respond_async = prefers_async(&request);
        let takes = Takes::of(&request);
        if !found.methods.iter().any(|m| m == method.as_str()) {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{route} accepts {}", found.methods.join(", ")),
            );
            if let Ok(allow) = HeaderValue::from_str(&found.methods.join(", ")) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return left(response);
        }
        let input = match read_body(
            request,
            self.config.max_body_bytes,
            self.config.http.idle_timeout,
        )
        .await
        {
            Ok(input) => input,
            Err(err) => return left(err.reply()),
        };
        let id = InvocationId::generate();
        let trigger = Trigger::Http {
            method: method.to_string(),
            path: route.to_string(),
            query,
        };
        let target = &found.target;
        // A pipeline answers when its last stage has (a preference the
        // server may decline, RFC 7240).
        if found.pipeline.is_empty() {
            let (scope, mut invoke) =
                target.invoke(id, trigger, input, self.config.queue_allowance);
            if respond_async {
                return left(
                    self.invoke_async(scope, target.project.clone(), invoke)
                        .await,
                );
            }
            if method == Method::HEAD {
                let outcome = self.conn.call(&scope, invoke).await;
                return left(without_body(invocation_reply(id, outcome)));
            }
            // What the Doee writes as it goes reaches the client as it comes.
            invoke.stream = true;
            return match self.conn.call_streaming(&scope, invoke) {
                Ok(call) => invocation_stream(id, call, takes).await,
                Err(failure) => left(invocation_reply(id, Err(failure))),
            };
        }
        let ran = pipeline::run(
            &self.conn,
            target,
            &found.pipeline,
            id,
            trigger,
            input,
            self.config.queue_allowance,
        )
        .await;
        let reply = invocation_reply(ran.id, ran.outcome);
        left(if method == Method::HEAD {
            without_body(reply)
        } else {
            reply
        })
    }
}

impl Server {
    /// `Prefer: respond-async`: records the invocation as pending, answers
    /// 202 with its id, and lets it run; its result is read from the
    /// Control Gate at `/api/v1/invocations/<id>`.
    async fn invoke_async(&self, scope: Scope, project: ProjectName, invoke: Invoke) -> Reply {
        let id = invoke.id;
        let pending = pipeline::record(project.clone(), &invoke, None);
        // Recorded before it runs, so the result is never older than the
        // pending record: the Doer's record replaces it.
        let recording = Scope::platform(Duration::from_secs(5));
        if let Err(failure) = self
            .conn
            .call(
                &recording,
                Record {
                    invocations: vec![pending],
                },
            )
            .await
        {
            return invocation_error(
                id,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot accept an asynchronous invocation: {failure}"),
            );
        }
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            // A Doer records every invocation it runs; one that never
            // reached a Doer is recorded here.
            let Err(failure) = conn.call(&scope, invoke.clone()).await else {
                return;
            };
            pipeline::record_not_run(&conn, project, &invoke, &failure, started.elapsed()).await;
        });
        let body = serde_json::json!({
            "invocation_id": id.to_string(),
            "result": format!("/api/v1/invocations/{id}"),
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = StatusCode::ACCEPTED;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
        set_invocation_header(&mut response, id);
        response
    }
}

/// Whether the request asks `Prefer: respond-async` (RFC 7240).
fn prefers_async(request: &Request<Body>) -> bool {
    request
        .headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split(';')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// `/<project>/<route...>` into the project and the route (with its `/`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (project, _) = rest.split_once('/')?;
    ProjectName::is_valid(project).then_some(())?;
    let route = &rest[project.len()..];
    (route.len() > 1).then_some((project, route))
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn paths_split_into_project_and_route() {
        assert_eq!(split_path("/demo/hello"), Some(("demo", "/hello")));
        assert_eq!(split_path("/demo/a/b"), Some(("demo", "/a/b")));
        assert_eq!(split_path("/demo/"), None);
        assert_eq!(split_path("/demo"), None);
        assert_eq!(split_path("/"), None);
        assert_eq!(split_path("/Bad/x"), None);
    }
}
