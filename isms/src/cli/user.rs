//! `isms user list|create|delete` (admins).

use super::{Api, ApiArgs, format_time};
use anyhow::Context as _;

/// `isms user`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// List users.
    List,
    /// Create a user; the password is read from stdin.
    Create {
        /// The user's name.
        username: String,
        /// `admin`, `developer` or `viewer`.
        #[arg(long, default_value = "developer")]
        role: String,
    },
    /// Delete a user with their tokens and memberships.
    Delete {
        /// The user.
        username: String,
    },
}

/// Runs a user command.
pub async fn run(command: UserCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        UserCommand::List => {
            let users = api.get_json("/api/v1/users").await?;
            println!("{:<24} {:<10} CREATED", "USER", "ROLE");
            for user in users.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {}",
                    user["username"].as_str().unwrap_or("?"),
                    user["role"].as_str().unwrap_or("?"),
                    format_time(user["created_ms"].as_u64().unwrap_or(0))
                );
            }
        }
        UserCommand::Create { username, role } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            api.post_json(
                "/api/v1/users",
                &serde_json::json!({ "username": username, "password": password, "role": role }),
            )
            .await?;
            println!("Created {role} {username}.");
        }
        UserCommand::Delete { username } => {
            api.delete(&format!("/api/v1/users/{username}")).await?;
            println!("Deleted {username}.");
        }
    }
    Ok(())
}
