//! `isms device create|list|revoke`: MQTT devices' credentials, per project.

use super::{Api, ApiArgs, format_time};

/// `isms device`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DeviceCommand {
    /// Create a device; its MQTT password is printed once, never again.
    Create {
        /// The project.
        project: String,
        /// The device's name (`[a-z0-9-]`).
        name: String,
    },
    /// List a project's devices (not their secrets).
    List {
        /// The project.
        project: String,
    },
    /// Revoke a device: its credentials stop working and its connections end.
    Revoke {
        /// The project.
        project: String,
        /// The device.
        name: String,
    },
}

/// Runs a device command.
pub async fn run(command: DeviceCommand, api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    match command {
        DeviceCommand::Create { project, name } => {
            let device = api
                .post_json(
                    &format!("/api/v1/projects/{project}/devices"),
                    &serde_json::json!({ "name": name }),
                )
                .await?
                .json()
                .map_err(anyhow::Error::msg)?;
            println!(
                "MQTT username  {}",
                device["username"].as_str().unwrap_or("?")
            );
            println!(
                "MQTT password  {}",
                device["secret"].as_str().unwrap_or("?")
            );
            eprintln!(
                "Created device {name} of project {project}. Keep the password: it is not shown again."
            );
        }
        DeviceCommand::List { project } => {
            let devices = api
                .get_json(&format!("/api/v1/projects/{project}/devices"))
                .await?;
            println!("{:<24} {:<40} CREATED", "DEVICE", "MQTT USERNAME");
            for device in devices.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<40} {}",
                    device["name"].as_str().unwrap_or("?"),
                    device["username"].as_str().unwrap_or("?"),
                    format_time(device["created_ms"].as_u64().unwrap_or(0))
                );
            }
        }
        DeviceCommand::Revoke { project, name } => {
            api.delete(&format!("/api/v1/projects/{project}/devices/{name}"))
                .await?;
            println!("Revoked device {name} of project {project}; its connections are closed.");
        }
    }
    Ok(())
}
