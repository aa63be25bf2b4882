//! `isms invoke <project>/<doee> [-d DATA | -d @file] [--follow]`.

use super::{Api, ApiArgs};
use anyhow::{Context as _, bail};
use bytes::Bytes;
use std::io::Write;

/// `isms invoke`'s arguments.
#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// `<project>/<doee>`.
    pub target: String,
    /// The input: text, or `@file` to read a file (`@-` for standard input).
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// Print the output as the Doee writes it (`ctx.write`), not at the end.
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs the Doee once and prints its output.
pub async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    let Some((project, doee)) = args.target.split_once('/') else {
        bail!("expected <project>/<doee>, got `{}`", args.target);
    };
    let input = match args.data.as_deref() {
        None => Vec::new(),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            buf
        }
        Some(data) => match data.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("cannot read {file}"))?,
            None => data.as_bytes().to_vec(),
        },
    };
    let api = Api::new(&args.api)?;
    let path = format!("/api/v1/projects/{project}/doees/{doee}/invoke");
    if args.follow {
        return follow(&api, &path, Bytes::from(input)).await;
    }
    let response = api
        .post_raw(&path, "application/octet-stream", Bytes::from(input))
        .await?;
    let invocation = response
        .headers
        .get("x-isms-invocation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !(200..300).contains(&response.status) {
        let id = if invocation.is_empty() {
            String::new()
        } else {
            format!(" (invocation {invocation})")
        };
        bail!("{}{id}", response.error_message());
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&response.body)?;
    if !response.body.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&stdout) {
        writeln!(stdout)?;
    }
    Ok(())
}

/// Prints each piece of the output as it comes.
async fn follow(api: &Api, path: &str, input: Bytes) -> anyhow::Result<()> {
    let url = format!("{}{path}", api.url());
    let what = crate::client::StreamRequest {
        method: "POST",
        body: input,
        accept: "*/*",
        extra: &[("content-type", "application/octet-stream".to_string())],
    };
    let mut failed = None;
    let refused = crate::client::stream(&url, api.token(), what, |piece| {
        let mut stdout = std::io::stdout().lock();
        if let Err(err) = stdout.write_all(piece).and_then(|()| stdout.flush()) {
            failed = Some(err);
            return false;
        }
        true
    })
    .await
    .map_err(anyhow::Error::msg)?;
    if let Some(err) = failed {
        return Err(err.into());
    }
    if let Some(response) = refused {
        let id = response
            .headers
            .get("x-isms-invocation-id")
            .and_then(|v| v.to_str().ok())
            .map_or(String::new(), |id| format!(" (invocation {id})"));
        bail!("{}{id}", response.error_message());
    }
    Ok(())
}
