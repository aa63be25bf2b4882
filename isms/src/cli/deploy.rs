//! `isms deploy <dir> --project <p> [--wait]`.

use super::{Api, ApiArgs};
use anyhow::{Context as _, bail};
use bytes::Bytes;
use isms_resadmin::manifest::{self, Manifest};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `isms deploy`'s arguments.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The Doee directory (holding doee.toml).
    pub dir: PathBuf,
    /// The project to deploy into.
    #[arg(long, short)]
    pub project: String,
    /// Wait for the build, showing its progress.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Uploads the directory; with `--wait`, follows the build to its end.
pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let manifest_path = args.dir.join(manifest::FILE);
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "cannot read {}: is {} a Doee directory?",
            manifest_path.display(),
            args.dir.display()
        )
    })?;
    // Check locally first: the same rules as the server, without the upload.
    let manifest = Manifest::parse(&text)?;
    let archive = isms_resadmin::archive::pack(&args.dir)
        .with_context(|| format!("cannot pack {}", args.dir.display()))?;
    let api = Api::new(&args.api)?;
    let deployed = api
        .post_bytes(
            &format!("/api/v1/projects/{}/doees", args.project),
            "application/gzip",
            Bytes::from(archive),
        )
        .await?
        .json()
        .map_err(anyhow::Error::msg)?;
    let version = deployed["version"].as_u64().unwrap_or(0);
    println!(
        "Deployed {} version {version} to {}; build queued.",
        manifest.name, args.project
    );
    if !args.wait {
        println!("Follow it with `isms deploy … --wait`, or look at it in the dashboard.");
        return Ok(());
    }
    follow_build(&api, &args.project, manifest.name.as_str(), version).await?;
    for trigger in &manifest.http {
        let runs = match trigger.pipeline.as_slice() {
            [] => String::new(),
            stages => format!(
                " → {}",
                stages
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        };
        println!(
            "Serving {} {} at /{}{}{runs}",
            trigger.methods.join("|"),
            trigger.route,
            args.project,
            trigger.route
        );
    }
    for schedule in &manifest.schedule {
        println!(
            "Firing {} (`isms doee show {}/{}` lists the next firings)",
            schedule.when, args.project, manifest.name
        );
    }
    Ok(())
}

async fn follow_build(api: &Api, project: &str, doee: &str, version: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut printed = 0usize;
    loop {
        let info = api
            .get(&format!("/api/v1/projects/{project}/doees/{doee}"))
            .await?
            .json()
            .map_err(anyhow::Error::msg)?;
        let entry = info["versions"]
            .as_array()
            .and_then(|versions| {
                versions
                    .iter()
                    .find(|v| v["version"].as_u64() == Some(version))
            })
            .cloned()
            .context("the version disappeared while building")?;
        let status = entry["build"]["status"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let log = entry["build"]["log"].as_str().unwrap_or("");
        // The log only grows (its head may be trimmed when long): print what is new.
        if log.len() > printed {
            let fresh = log.get(printed..).unwrap_or("");
            for line in fresh.lines() {
                println!("  │ {line}");
            }
            printed = log.len();
        } else if log.len() < printed {
            printed = log.len();
        }
        match status.as_str() {
            "succeeded" => {
                println!(
                    "Built {doee} version {version} in {:.1} s; it is now active.",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            "failed" => bail!(
                "the build of {doee} version {version} failed (log above); the previous version keeps serving"
            ),
            _ => tokio::time::sleep(Duration::from_millis(400)).await,
        }
    }
}
