//! `isms token create|list|revoke`: API tokens for scripts and CI.

use super::{Api, ApiArgs, format_time};

/// `isms token`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; it is printed once and never shown again.
    Create {
        /// A label for the list.
        name: String,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// List your tokens (not their secrets).
    List,
    /// Revoke one of your tokens by its id.
    Revoke {
        /// The id from `isms token list`.
        id: String,
    },
}

/// Runs a token command.
pub async fn run(command: TokenCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        TokenCommand::Create { name, days } => {
            let token = api
                .post_json(
                    "/api/v1/tokens",
                    &serde_json::json!({ "name": name, "days": days }),
                )
                .await?
                .json()
                .map_err(anyhow::Error::msg)?;
            println!("{}", token["token"].as_str().unwrap_or(""));
            eprintln!(
                "Token {} ({name}) expires {}. Keep it secret: it is not shown again.",
                token["id"].as_str().unwrap_or("?"),
                format_time(token["expires_ms"].as_u64().unwrap_or(0))
            );
        }
        TokenCommand::List => {
            let tokens = api.get_json("/api/v1/tokens").await?;
            println!("{:<14} {:<24} {:<20} EXPIRES", "ID", "NAME", "CREATED");
            for token in tokens.as_array().into_iter().flatten() {
                println!(
                    "{:<14} {:<24} {:<20} {}",
                    token["id"].as_str().unwrap_or("?"),
                    token["name"].as_str().unwrap_or("?"),
                    format_time(token["created_ms"].as_u64().unwrap_or(0)),
                    format_time(token["expires_ms"].as_u64().unwrap_or(0))
                );
            }
        }
        TokenCommand::Revoke { id } => {
            api.delete(&format!("/api/v1/tokens/{id}")).await?;
            println!("Revoked {id}.");
        }
    }
    Ok(())
}
