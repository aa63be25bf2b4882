//! The CLI's commands that talk to a running platform through the REST API.

pub mod credentials;
pub mod deploy;
pub mod device;
pub mod doee;
pub mod invocation;
pub mod invoke;
pub mod login;
pub mod logs;
pub mod mqtt;
pub mod new;
pub mod project;
pub mod secret;
pub mod sql;
pub mod status;
pub mod token;
pub mod user;

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

    /// The bearer token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// GET JSON, failing on a non-2xx answer.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.get(path).await?.json().map_err(anyhow::Error::msg)
    }

    /// DELETE, failing on a non-2xx answer.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Response> {
        ok(self.send("DELETE", path, None, Bytes::new()).await?)
    }

    /// PUT JSON, failing on a non-2xx answer.
    pub async fn put_json(
        &self,
        path: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<Response> {
        self.send_json("PUT", path, value).await
    }

    async fn send_json(
        &self,
        method: &str,
        path: &str,
        value: &serde_json::Value,
    ) -> anyhow::Result<Response> {
        let body = Bytes::from(value.to_string());
        ok(self
            .send(method, path, Some("application/json"), body)
            .await?)
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
        self.send_json("POST", path, value).await
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

/// Splits `<project>/<doee>`.
pub fn project_doee(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((project, doee)) if !project.is_empty() && !doee.is_empty() => Ok((project, doee)),
        _ => bail!("`{target}` is not <project>/<doee>"),
    }
}

/// A time in ms since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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

#[cfg(test)]
mod tests {
    #[test]
    fn times_format_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::format_time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
