//! `isms secret set|list|delete`: a project's secrets. A value is read from
//! standard input (never an argument, which `ps` and shell histories show)
//! and never printed back.

use super::{Api, ApiArgs, format_time};
use anyhow::Context as _;
use std::io::Read;

/// `isms secret`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Set a secret from standard input, 32 KiB at most (one trailing
    /// newline is dropped):
    /// `printf %s "$TOKEN" | isms secret set demo API_TOKEN`.
    Set {
        /// The project.
        project: String,
        /// The secret's name (`[A-Za-z_][A-Za-z0-9_]*`).
        name: String,
    },
    /// List a project's secrets: names only.
    List {
        /// The project.
        project: String,
    },
    /// Delete a secret.
    Delete {
        /// The project.
        project: String,
        /// The secret's name.
        name: String,
    },
}

/// Runs a secret command.
pub async fn run(command: SecretCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        SecretCommand::Set { project, name } => {
            const MAX: u64 = 32 << 10;
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(MAX + 3)
                .read_to_end(&mut bytes)
                .context("cannot read the secret's value from standard input")?;
            let value = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("the secret's value is not UTF-8 text"))?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value);
            anyhow::ensure!(
                value.len() as u64 <= MAX,
                "the secret's value is past {MAX} bytes"
            );
            api.put_json(
                &format!("/api/v1/projects/{project}/secrets/{name}"),
                &serde_json::json!({ "value": value }),
            )
            .await?;
            println!(
                "Set secret {name} of project {project}; its Doees read it with ctx.secret(\"{name}\") from their next invocation."
            );
        }
        SecretCommand::List { project } => {
            let secrets = api
                .get_json(&format!("/api/v1/projects/{project}/secrets"))
                .await?;
            println!("{:<40} SET", "SECRET");
            for secret in secrets.as_array().into_iter().flatten() {
                println!(
                    "{:<40} {}",
                    secret["name"].as_str().unwrap_or("?"),
                    format_time(secret["updated_ms"].as_u64().unwrap_or(0))
                );
            }
        }
        SecretCommand::Delete { project, name } => {
            api.delete(&format!("/api/v1/projects/{project}/secrets/{name}"))
                .await?;
            println!("Deleted secret {name} of project {project}.");
        }
    }
    Ok(())
}
