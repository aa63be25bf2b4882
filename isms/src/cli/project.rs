//! `isms project create|list|show|delete|add-member|remove-member`.

use super::{Api, ApiArgs};

/// `isms project`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ProjectCommand {
    /// Create a project; you become its first member.
    Create {
        /// Its name: a-z, 0-9 and -, up to 63 characters.
        name: String,
    },
    /// List the projects you can see.
    List,
    /// Show a project's members and quotas.
    Show {
        /// The project.
        name: String,
    },
    /// Delete a project with its Doees, invocation records and logs.
    Delete {
        /// The project.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Add a member to a project, or change their role.
    AddMember {
        /// The project.
        name: String,
        /// The user.
        username: String,
        /// `admin`, `developer` or `viewer`.
        #[arg(long, default_value = "developer")]
        role: String,
    },
    /// Remove a member from a project.
    RemoveMember {
        /// The project.
        name: String,
        /// The user.
        username: String,
    },
}

/// Runs a project command.
pub async fn run(command: ProjectCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        ProjectCommand::Create { name } => {
            api.post_json("/api/v1/projects", &serde_json::json!({ "name": name }))
                .await?;
            println!("Created project {name}; you are its admin.");
        }
        ProjectCommand::Show { name } => {
            let project = api.get_json(&format!("/api/v1/projects/{name}")).await?;
            let quotas = &project["quotas"];
            println!(
                "{name}: {} Doees (quota {}), at most {} Workers, uploads up to {} MiB, \
                 dependencies up to {} MiB",
                project["doees"].as_u64().unwrap_or(0),
                quotas["max_doees"].as_u64().unwrap_or(0),
                quotas["max_workers"].as_u64().unwrap_or(0),
                quotas["max_upload_bytes"].as_u64().unwrap_or(0) >> 20,
                quotas["max_dependencies_bytes"].as_u64().unwrap_or(0) >> 20
            );
            println!("\n{:<24} ROLE", "MEMBER");
            for member in project["members"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {}",
                    member["username"].as_str().unwrap_or("?"),
                    member["role"].as_str().unwrap_or("?")
                );
            }
        }
        ProjectCommand::Delete { name, yes } => {
            if !yes {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!("deleting {name} removes everything in it: pass --yes");
                }
                print!(
                    "Delete project {name} with all its Doees, records and logs? Type its name: "
                );
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if answer.trim() != name {
                    anyhow::bail!("not deleted");
                }
            }
            api.delete(&format!("/api/v1/projects/{name}")).await?;
            println!("Deleted project {name}.");
        }
        ProjectCommand::AddMember {
            name,
            username,
            role,
        } => {
            api.post_json(
                &format!("/api/v1/projects/{name}/members"),
                &serde_json::json!({ "username": username, "role": role }),
            )
            .await?;
            println!("{username} is now a {role} of {name}.");
        }
        ProjectCommand::RemoveMember { name, username } => {
            api.delete(&format!("/api/v1/projects/{name}/members/{username}"))
                .await?;
            println!("{username} is no longer a member of {name}.");
        }
        ProjectCommand::List => {
            let projects = api
                .get("/api/v1/projects")
                .await?
                .json()
                .map_err(anyhow::Error::msg)?;
            let projects = projects.as_array().cloned().unwrap_or_default();
            if projects.is_empty() {
                println!("No projects yet. Create one with `isms project create <name>`.");
                return Ok(());
            }
            println!("{:<32} {:>6}", "PROJECT", "DOEES");
            for project in projects {
                println!(
                    "{:<32} {:>6}",
                    project["name"].as_str().unwrap_or("?"),
                    project["doees"].as_u64().unwrap_or(0)
                );
            }
        }
    }
    Ok(())
}
