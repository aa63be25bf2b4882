//! `isms project create|list`.

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
}

/// Runs a project command.
pub async fn run(command: ProjectCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        ProjectCommand::Create { name } => {
            api.post_json("/api/v1/projects", &serde_json::json!({ "name": name }))
                .await?;
            println!("Created project {name}.");
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
