//! Builds Doee versions into shared objects, one at a time.
//!
//! A Rust Doee builds with `cargo rustc --crate-type cdylib`, offline,
//! against the SDK bundled with the platform (patched in for the `doee-sdk`
//! dependency), into a target directory shared by all builds so rebuilds
//! take seconds. The result is stored by its sha256 and the version becomes
//! active only if the build succeeds.

use crate::manifest::{Language, Manifest};
use crate::store::Store;
use isms_ipc::doer::LogLevel;
use isms_ipc::resadmin::BuildState;
use isms_ipc::{Connection, DoeeName, Event, ProjectName};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// The most of a build log that is kept (its tail).
const MAX_LOG: usize = 64 * 1024;

/// Where and how builds run.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The bundled SDK crate.
    pub sdk_dir: PathBuf,
    /// The shared cargo target directory.
    pub target_dir: PathBuf,
    /// `CARGO_HOME` for builds (keeps the operator's cargo config out).
    pub cargo_home: PathBuf,
    /// Where built binaries are stored by hash.
    pub binaries_dir: PathBuf,
    /// The longest a build may take.
    pub timeout: Duration,
}

/// One version to build.
#[derive(Debug)]
pub struct Job {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The version.
    pub version: u32,
    /// The unpacked Doee directory.
    pub root: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// The build queue.
#[derive(Clone)]
pub struct Builder {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Builder {
    /// Starts the builder task.
    pub fn start(store: Store, conn: Connection, config: BuildConfig) -> Builder {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                run_job(&store, &conn, &config, job).await;
            }
        });
        Builder { jobs }
    }

    /// Queues a build.
    pub fn submit(&self, job: Job) {
        if let Err(rejected) = self.jobs.send(job) {
            tracing::error!(doee = %rejected.0.doee, "the builder has stopped");
        }
    }
}

/// A build log shared between the reader tasks and the progress flusher:
/// the version's log text, and the lines not yet copied to the project's
/// log stream.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<LogState>>);

#[derive(Default)]
struct LogState {
    text: String,
    unsent: Vec<String>,
}

/// Lines waiting for the project's log stream at most; a build that prints
/// more between two flushes loses the oldest from the stream (its version
/// log keeps the tail either way).
const MAX_UNSENT: usize = 10_000;

impl Log {
    fn push(&self, line: &str) {
        if let Ok(mut state) = self.0.lock() {
            if state.unsent.len() < MAX_UNSENT {
                state.unsent.push(line.to_string());
            }
            let log = &mut state.text;
            log.push_str(line);
            log.push('\n');
            if log.len() > MAX_LOG * 2 {
                let cut = log.len() - MAX_LOG;
                let cut = (cut..log.len())
                    .find(|&i| log.is_char_boundary(i))
                    .unwrap_or(cut);
                log.replace_range(..cut, "…\n");
            }
        }
    }

    fn take_unsent(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut state| std::mem::take(&mut state.unsent))
            .unwrap_or_default()
    }

    /// Copies new lines to the project's log stream.
    async fn send(&self, store: &Store, project: &ProjectName, doee: &DoeeName, version: u32) {
        let lines = self.take_unsent();
        if !lines.is_empty() {
            let _ = store
                .build_log(project, doee, version, LogLevel::Info, &lines)
                .await;
        }
    }

    fn text(&self) -> String {
        let log = self.0.lock().map(|l| l.text.clone()).unwrap_or_default();
        if log.len() <= MAX_LOG {
            return log;
        }
        let cut = log.len() - MAX_LOG;
        let cut = (cut..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(cut);
        format!("…{}", &log[cut..])
    }
}

async fn run_job(store: &Store, conn: &Connection, config: &BuildConfig, job: Job) {
    let (project, doee, version) = (job.project.clone(), job.doee.clone(), job.version);
    tracing::info!(%project, %doee, version, "building");
    let log = Log::default();
    log.push(&format!(
        "building {project}/{doee} version {version} ({:?})",
        job.manifest.language
    ));
    // Records "building" at once (an interval's first tick is immediate),
    // then the growing log every second, so `isms deploy --wait` shows progress.
    let flusher = {
        let (store, log, project, doee) =
            (store.clone(), log.clone(), project.clone(), doee.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                log.send(&store, &project, &doee, version).await;
                let _ = store
                    .set_build(
                        &project,
                        &doee,
                        version,
                        BuildState::Building,
                        &log.text(),
                        None,
                    )
                    .await;
            }
        })
    };
    let started = std::time::Instant::now();
    let built = match job.manifest.language {
        Language::Rust => build_rust(&job.root, config, &log).await,
        Language::C | Language::Cpp => {
            Err("C and C++ Doees are not supported by this release yet".to_string())
        }
    };
    let stored = match built {
        Ok(artifact) => store_binary(&artifact, &config.binaries_dir).await,
        Err(why) => Err(why),
    };
    flusher.abort();
    match &stored {
        Ok(sha256) => log.push(&format!(
            "built in {:.1} s: sha256 {sha256}",
            started.elapsed().as_secs_f64()
        )),
        Err(why) => log.push(&format!("build failed: {why}")),
    }
    log.send(store, &project, &doee, version).await;
    match stored {
        Ok(sha256) => {
            let saved = store
                .set_build(
                    &project,
                    &doee,
                    version,
                    BuildState::Succeeded,
                    &log.text(),
                    Some(&sha256),
                )
                .await;
            let activated = match saved {
                Ok(()) => store.activate(&project, &doee, version).await,
                Err(err) => Err(err),
            };
            match activated {
                Ok(()) => {
                    tracing::info!(%project, %doee, version, "build succeeded; version active");
                    conn.emit(Event::DeploymentsChanged { project });
                }
                Err(err) => tracing::error!(cause = %err, "cannot record a finished build"),
            }
        }
        Err(why) => {
            tracing::warn!(%project, %doee, version, %why, "build failed");
            let _ = store
                .set_build(
                    &project,
                    &doee,
                    version,
                    BuildState::Failed,
                    &log.text(),
                    None,
                )
                .await;
        }
    }
}

/// Copies a built shared object into the store under its hash.
async fn store_binary(artifact: &Path, binaries: &Path) -> Result<String, String> {
    let bytes = tokio::fs::read(artifact)
        .await
        .map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let path = binaries.join(format!("{sha256}.so"));
    if !path.exists() {
        let partial = binaries.join(format!("{sha256}.so.partial"));
        tokio::fs::write(&partial, &bytes)
            .await
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot store the binary: {e}"))?;
    }
    Ok(sha256)
}

/// Builds a Rust Doee crate into a `cdylib`.
async fn build_rust(root: &Path, config: &BuildConfig, log: &Log) -> Result<PathBuf, String> {
    // Files that would let the upload reconfigure the toolchain or cargo.
    for name in [".cargo", "rust-toolchain", "rust-toolchain.toml"] {
        let path = root.join(name);
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    let manifest_path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|_| "a rust Doee needs a Cargo.toml next to its doee.toml".to_string())?;
    let mut cargo_toml: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("Cargo.toml: {}", e.message()))?;
    // Make the crate its own workspace root: cargo would otherwise look for
    // a workspace in the directories above the build directory.
    cargo_toml
        .entry("workspace")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    std::fs::write(&manifest_path, cargo_toml.to_string())
        .map_err(|e| format!("cannot prepare Cargo.toml: {e}"))?;

    let sdk = config
        .sdk_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let mut command = Command::new("cargo");
    command
        .args([
            "rustc",
            "--release",
            "--lib",
            "--crate-type",
            "cdylib",
            "--offline",
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest_path)
        .arg("--config")
        .arg(format!("patch.crates-io.doee-sdk.path=\"{sdk}\""))
        .env("CARGO_TARGET_DIR", &config.target_dir)
        .env("CARGO_HOME", &config.cargo_home)
        .env("CARGO_TERM_COLOR", "never")
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let leaks_in = key.starts_with("CARGO_") && key != "CARGO_HOME"
            || matches!(
                key.as_ref(),
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTDOCFLAGS"
            );
        if leaks_in {
            command.env_remove(key.as_ref());
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = child.stderr.take();
    let stdout = child.stdout.take();
    let stderr_log = log.clone();
    let stderr_task = tokio::spawn(async move {
        if let Some(stderr) = stderr {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                stderr_log.push(&line);
            }
        }
    });
    let stdout_task = tokio::spawn(async move {
        let mut artifact = None;
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(path) = shared_object_in(&line) {
                    artifact = Some(path);
                }
            }
        }
        artifact
    });
    let status = match tokio::time::timeout(config.timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| format!("cannot wait for cargo: {e}"))?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!(
                "the build took longer than {} s and was stopped",
                config.timeout.as_secs()
            ));
        }
    };
    let _ = stderr_task.await;
    let artifact = stdout_task.await.ok().flatten();
    if !status.success() {
        return Err(format!("cargo failed ({status}); see the log above"));
    }
    artifact.ok_or_else(|| "cargo produced no shared object".to_string())
}

/// The `.so` named by a cargo `compiler-artifact` JSON message, if any.
fn shared_object_in(line: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    message
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".so"))
        .map(PathBuf::from)
}
