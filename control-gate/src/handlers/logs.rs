//! A project's log: read, or followed as Server-Sent Events.

use crate::Gate;
use crate::api;
use crate::reply::{Reply, list, never_fails};
use crate::request::Call;
use crate::sse;
use bytes::Bytes;
use hyper::Response;
use hyper::header::{self, HeaderValue};
use isms_http::HttpError;
use isms_ipc::connection::Scope;
use isms_ipc::resadmin::{Authorize, Logs, Need, Role};
use std::time::Duration;

/// How often a followed log is read again.
const LOG_POLL: Duration = Duration::from_millis(200);

impl Gate {
    /// The latest lines, or those after `after` (or `Last-Event-ID`);
    /// `follow` streams them as they come.
    pub async fn logs(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let after = match call.query_number("after")? {
            Some(after) => Some(after),
            None => call
                .request
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        };
        let limit = call.query_number("limit")?.unwrap_or(100).clamp(1, 1000) as u32;
        let follow = matches!(call.query_param("follow"), Some("1" | "true" | ""));
        if follow {
            Ok(self.follow_logs(call.scope, call.token, after, limit))
        } else {
            let lines = self.conn.call(&call.scope, Logs { after, limit }).await?;
            Ok(list(lines, api::LogView::from))
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
        let mut reply = Response::new(never_fails(sse::Events(rx)));
        let headers = reply.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        reply
    }
}
