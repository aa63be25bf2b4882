//! `isms mqtt dead-letters|retry|purge`: MQTT messages whose Doee failed
//! every attempt.

use super::{Api, ApiArgs, format_time};

/// `isms mqtt`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum MqttCommand {
    /// List a project's dead letters, newest first.
    DeadLetters {
        /// The project.
        project: String,
    },
    /// Run dead letters again, as new messages.
    Retry {
        /// The project.
        project: String,
        /// Their ids; all of the project's when none.
        ids: Vec<u64>,
    },
    /// Delete dead letters.
    Purge {
        /// The project.
        project: String,
        /// Their ids; all of the project's when none.
        ids: Vec<u64>,
    },
}

/// Runs an MQTT command.
pub async fn run(command: MqttCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    let which = |ids: Vec<u64>| {
        if ids.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({ "ids": ids })
        }
    };
    match command {
        MqttCommand::DeadLetters { project } => {
            let letters = api
                .get_json(&format!("/api/v1/projects/{project}/mqtt/dead-letters"))
                .await?;
            println!(
                "{:<8} {:<20} {:<20} {:<30} {:>8}  ERROR",
                "ID", "RECEIVED", "DOEE", "TOPIC", "ATTEMPTS"
            );
            for letter in letters.as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<20} {:<20} {:<30} {:>8}  {}",
                    letter["id"].as_u64().unwrap_or(0),
                    format_time(letter["received_ms"].as_u64().unwrap_or(0)),
                    letter["doee"].as_str().unwrap_or("?"),
                    letter["topic"].as_str().unwrap_or("?"),
                    letter["attempts"].as_u64().unwrap_or(0),
                    letter["error"].as_str().unwrap_or("")
                );
            }
        }
        MqttCommand::Retry { project, ids } => {
            let answer = api
                .post_json(
                    &format!("/api/v1/projects/{project}/mqtt/dead-letters/retry"),
                    &which(ids),
                )
                .await?
                .json()
                .map_err(anyhow::Error::msg)?;
            println!(
                "{} dead letters run again.",
                answer["retried"].as_u64().unwrap_or(0)
            );
        }
        MqttCommand::Purge { project, ids } => {
            let answer = api
                .post_json(
                    &format!("/api/v1/projects/{project}/mqtt/dead-letters/purge"),
                    &which(ids),
                )
                .await?
                .json()
                .map_err(anyhow::Error::msg)?;
            println!(
                "{} dead letters deleted.",
                answer["purged"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(())
}
