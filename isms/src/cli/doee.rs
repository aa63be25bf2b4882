//! `isms doee list|show|rollback|delete`.

use super::{Api, ApiArgs, format_time, project_doee};

/// `isms doee`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DoeeCommand {
    /// List a project's Doees.
    List {
        /// The project.
        project: String,
    },
    /// Show a Doee: versions, builds, triggers; with --log, a version's build log.
    Show {
        /// `<project>/<doee>`.
        target: String,
        /// Print the build log of this version (default: the latest).
        #[arg(long, num_args = 0..=1, default_missing_value = "0")]
        log: Option<u32>,
    },
    /// Make an earlier version active at once.
    Rollback {
        /// `<project>/<doee>`.
        target: String,
        /// The version to serve.
        version: u32,
    },
    /// Remove a Doee, its versions and its triggers.
    Delete {
        /// `<project>/<doee>`.
        target: String,
    },
}

/// Runs a Doee command.
pub async fn run(command: DoeeCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        DoeeCommand::List { project } => {
            let doees = api
                .get_json(&format!("/api/v1/projects/{project}/doees"))
                .await?;
            let doees = doees.as_array().cloned().unwrap_or_default();
            if doees.is_empty() {
                println!(
                    "No Doees in {project} yet. Deploy one with `isms deploy <dir> --project {project}`."
                );
                return Ok(());
            }
            println!(
                "{:<24} {:<5} {:>7} {:>8}  {:<10} TRIGGERS",
                "DOEE", "LANG", "ACTIVE", "LATEST", "BUILD"
            );
            for doee in doees {
                let versions = doee["versions"].as_array().cloned().unwrap_or_default();
                let latest = versions.last();
                println!(
                    "{:<24} {:<5} {:>7} {:>8}  {:<10} {}",
                    doee["name"].as_str().unwrap_or("?"),
                    doee["language"].as_str().unwrap_or("?"),
                    doee["active_version"]
                        .as_u64()
                        .map_or("-".to_string(), |v| v.to_string()),
                    latest.and_then(|v| v["version"].as_u64()).unwrap_or(0),
                    latest
                        .and_then(|v| v["build"]["status"].as_str())
                        .unwrap_or("-"),
                    triggers(&doee["triggers"])
                );
            }
        }
        DoeeCommand::Show { target, log } => {
            let (project, name) = project_doee(&target)?;
            let doee = api
                .get_json(&format!("/api/v1/projects/{project}/doees/{name}"))
                .await?;
            let versions = doee["versions"].as_array().cloned().unwrap_or_default();
            if let Some(wanted) = log {
                let version = if wanted == 0 {
                    versions.last()
                } else {
                    versions
                        .iter()
                        .find(|v| v["version"].as_u64() == Some(u64::from(wanted)))
                };
                let Some(version) = version else {
                    anyhow::bail!("{target} has no version {wanted}");
                };
                print!("{}", version["build"]["log"].as_str().unwrap_or(""));
                return Ok(());
            }
            println!("{target} ({})", doee["language"].as_str().unwrap_or("?"));
            println!(
                "active version: {}",
                doee["active_version"]
                    .as_u64()
                    .map_or("none (no version has built yet)".to_string(), |v| v
                        .to_string())
            );
            println!("triggers: {}", triggers(&doee["triggers"]));
            let schedules = doee["triggers"]["schedule"].as_array().cloned();
            for s in schedules.into_iter().flatten() {
                let time = |key: &str| s[key].as_u64().map_or("-".to_string(), format_time);
                println!(
                    "schedule {}: next {}, last {}, skipped {} (catch_up {}, overlap {})",
                    s["description"].as_str().unwrap_or("?"),
                    time("next_ms"),
                    time("last_ms"),
                    s["skipped"].as_u64().unwrap_or(0),
                    s["catch_up"].as_str().unwrap_or("?"),
                    s["overlap"].as_str().unwrap_or("?"),
                );
            }
            println!();
            println!(
                "{:>7}  {:<10} {:<20} {:<16} SHA256",
                "VERSION", "BUILD", "DEPLOYED", "BY"
            );
            for v in versions {
                let active = if v["active"].as_bool() == Some(true) {
                    "*"
                } else {
                    " "
                };
                println!(
                    "{:>6}{active}  {:<10} {:<20} {:<16} {}",
                    v["version"].as_u64().unwrap_or(0),
                    v["build"]["status"].as_str().unwrap_or("?"),
                    format_time(v["created_ms"].as_u64().unwrap_or(0)),
                    v["deployed_by"].as_str().unwrap_or(""),
                    v["sha256"].as_str().map_or("-", |s| &s[..12.min(s.len())])
                );
            }
        }
        DoeeCommand::Rollback { target, version } => {
            let (project, name) = project_doee(&target)?;
            api.post_json(
                &format!("/api/v1/projects/{project}/doees/{name}/rollback"),
                &serde_json::json!({ "version": version }),
            )
            .await?;
            println!("{target} now serves version {version}.");
        }
        DoeeCommand::Delete { target } => {
            let (project, name) = project_doee(&target)?;
            api.delete(&format!("/api/v1/projects/{project}/doees/{name}"))
                .await?;
            println!("Deleted {target}.");
        }
    }
    Ok(())
}

/// ` → parse | store` for a trigger with a pipeline, else nothing.
fn pipeline(stages: &serde_json::Value) -> String {
    let names: Vec<&str> = stages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" → {}", names.join(" | "))
    }
}

/// `POST,GET /route, mqtt greenhouse/+/temp, every 30s`.
fn triggers(triggers: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for http in triggers["http"].as_array().into_iter().flatten() {
        let methods: Vec<&str> = http["methods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        parts.push(format!(
            "{} {}{}",
            methods.join(","),
            http["route"].as_str().unwrap_or("?"),
            pipeline(&http["pipeline"])
        ));
    }
    for mqtt in triggers["mqtt"].as_array().into_iter().flatten() {
        parts.push(format!(
            "mqtt {}{}",
            mqtt["topic"].as_str().unwrap_or("?"),
            pipeline(&mqtt["pipeline"])
        ));
    }
    for schedule in triggers["schedule"].as_array().into_iter().flatten() {
        parts.push(schedule["description"].as_str().unwrap_or("?").to_string());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}
