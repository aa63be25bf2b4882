//! The CLI's commands that talk to a running platform through the REST API.

pub mod credentials;
pub mod deploy;
pub mod invoke;
pub mod login;
pub mod new;
pub mod project;
pub mod status;

use crate::client::{self, Response};
use anyhow::bail;
use bytes::Bytes;
use credentials::Credentials;

/// Where the API is and who is calling; flags beat the environment, which
/// beats what `isms login` stored.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// The Control Gate's URL [default: from `isms login`, else http://127.0.0.1:7780]
    #[arg(long, env = "ISMS_URL")]
    pub url: Option<String>,
    /// A bearer token [default: from `isms login`]
    #[arg(long, env = "ISMS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A client for the REST API.
pub struct Api {
    url: String,
    token: Option<String>,
}

impl Api {
    /// Resolves the URL and token.
    pub fn new(args: &ApiArgs) -> anyhow::Result<Api> {
        let stored = Credentials::load()?;
        let url = args
            .url
            .clone()
            .or(stored.url)
            .unwrap_or_else(|| credentials::DEFAULT_URL.to_string());
        Ok(Api {
            url: url.trim_end_matches('/').to_string(),
            token: args.token.clone().or(stored.token),
        })
    }

    /// The Control Gate's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.url);
        client::request(method, &url, self.token.as_deref(), content_type, body)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// GET, failing on a non-2xx answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        ok(self.send("GET", path, None, Bytes::new()).await?)
    }

    /// POST JSON, failing on a non-2xx answer.
    pub async fn post_json(
        &self,
        path: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<Response> {
        ok(self
            .send(
                "POST",
                path,
                Some("application/json"),
                Bytes::from(value.to_string()),
            )
            .await?)
    }

    /// POST bytes; the caller decides what a non-2xx answer means.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        self.send("POST", path, Some(content_type), body).await
    }

    /// POST bytes, failing on a non-2xx answer.
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        ok(self.post_raw(path, content_type, body).await?)
    }
}

fn ok(response: Response) -> anyhow::Result<Response> {
    if (200..300).contains(&response.status) {
        return Ok(response);
    }
    let message = response.error_message();
    if response.status == 401 {
        bail!("{message} (run `isms login`)");
    }
    bail!("{message}");
}
