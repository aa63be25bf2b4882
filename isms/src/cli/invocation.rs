//! `isms invocations <project>` and `isms invocation <id>`.

use super::{Api, ApiArgs, format_time};

/// `isms invocations`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The project.
    pub project: String,
    /// How many, newest first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `isms invocation`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The invocation id (from `x-isms-invocation-id` or a 202 answer).
    pub id: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Lists recent invocations.
pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let records = api
        .get_json(&format!(
            "/api/v1/projects/{}/invocations?limit={}",
            args.project, args.limit
        ))
        .await?;
    let records = records.as_array().cloned().unwrap_or_default();
    if records.is_empty() {
        println!("No invocations in {} yet.", args.project);
        return Ok(());
    }
    println!(
        "{:<32}  {:<20} {:<20} {:<5} {:<11} {:>10}",
        "ID", "STARTED", "DOEE", "VIA", "STATUS", "MS"
    );
    for r in records {
        println!(
            "{:<32}  {:<20} {:<20} {:<5} {:<11} {:>10.2}",
            r["id"].as_str().unwrap_or("?"),
            format_time(r["started_ms"].as_u64().unwrap_or(0)),
            format!(
                "{}@{}",
                r["doee"].as_str().unwrap_or("?"),
                r["version"].as_u64().unwrap_or(0)
            ),
            r["trigger"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            r["duration_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Shows one invocation; prints its output when it succeeded, and fails
/// with its error when it failed (so scripts can wait on an async result).
pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let r = api
        .get_json(&format!("/api/v1/invocations/{}", args.id))
        .await?;
    let ran_on = match (r["instance"].as_str(), r["host"].as_str()) {
        (Some(instance), Some(host)) if !instance.is_empty() => {
            format!(", on {instance} at {host}")
        }
        _ => String::new(),
    };
    eprintln!(
        "{}@{} via {}: {} ({:.2} ms{}{ran_on})",
        r["doee"].as_str().unwrap_or("?"),
        r["version"].as_u64().unwrap_or(0),
        r["trigger"].as_str().unwrap_or("?"),
        r["status"].as_str().unwrap_or("?"),
        r["duration_ms"].as_f64().unwrap_or(0.0),
        if r["cold_start"].as_bool() == Some(true) {
            ", cold start"
        } else {
            ""
        }
    );
    for line in r["logs"].as_array().into_iter().flatten() {
        eprintln!(
            "  {} {:<5} {}",
            format_time(line["at_ms"].as_u64().unwrap_or(0)),
            line["level"].as_str().unwrap_or("info"),
            line["message"].as_str().unwrap_or("")
        );
    }
    match r["status"].as_str() {
        Some("succeeded") => {
            if let Some(text) = r["output"].as_str() {
                println!("{text}");
            } else if let Some(encoded) = r["output_base64"].as_str() {
                println!("(binary output, base64) {encoded}");
            }
            Ok(())
        }
        Some("pending") => anyhow::bail!("still running; ask again later"),
        _ => anyhow::bail!("{}", r["error"].as_str().unwrap_or("the invocation failed")),
    }
}
