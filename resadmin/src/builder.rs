//! Builds Doee versions into shared objects, one at a time.
//!
//! A Rust Doee builds with `cargo rustc --crate-type cdylib`, offline,
//! against the SDK bundled with the platform (patched in for the `doee-sdk`
//! dependency), into a target directory shared by the project's builds so
//! rebuilds take seconds. A C or C++ Doee's `sources` are compiled with the
//! system's `cc` or `c++` into one shared object, against the bundled
//! headers. Every build runs in a [`Sandbox`]. The result is stored by its
//! sha256 and the version becomes active only if the build succeeds.

use crate::fetch::{self, FetchConfig};
use crate::manifest::{Language, Manifest};
use crate::sandbox::{Sandbox, SandboxConfig, which};
use crate::store::Store;
use crate::{python, sdk};
use isms_ipc::doer::LogLevel;
use isms_ipc::resadmin::BuildState;
use isms_ipc::{Connection, DoeeName, Event, ProjectName};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The most of a build log that is kept (its tail).
const MAX_LOG: usize = 64 * 1024;

/// Where and how builds run.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The bundled SDK crate.
    pub sdk_dir: PathBuf,
    /// The cargo target directory; each project builds in its own
    /// subdirectory.
    pub target_dir: PathBuf,
    /// Where each project's `CARGO_HOME` is made (keeps the operator's
    /// cargo config out; holds the project's fetched crates).
    pub cargo_home: PathBuf,
    /// Where dependencies come from, and how much of them.
    pub fetch: FetchConfig,
    /// Where built binaries are stored by hash.
    pub binaries_dir: PathBuf,
    /// The longest a build may take.
    pub timeout: Duration,
    /// The walls around each build.
    pub sandbox: SandboxConfig,
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
    /// The project's quota on its fetched dependencies.
    pub max_dependencies_bytes: u64,
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
                .records
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
        "building {project}/{doee} version {version} ({})",
        job.manifest.language.as_str()
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
    let built = build(&job, config, &log).await;
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

/// Builds a version in a fresh sandbox; returns the shared object's path.
async fn build(job: &Job, config: &BuildConfig, log: &Log) -> Result<PathBuf, String> {
    let mut sandbox = Sandbox::new(&config.sandbox)?;
    log.push(&sandbox.describe());
    if !sandbox.is_sandboxed() {
        tracing::warn!(project = %job.project, doee = %job.doee, "{}", sandbox.describe());
    }
    let deadline = Instant::now() + config.timeout;
    match job.manifest.language {
        Language::Rust => build_rust(job, config, &mut sandbox, log, deadline).await,
        Language::C | Language::Cpp => build_c(job, config, &mut sandbox, log, deadline).await,
        Language::Python => build_python(job, config, &mut sandbox, log, deadline).await,
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

/// Runs one build step to its end: stderr (and stdout, unless `artifacts`
/// reads it) goes into the log; past `deadline` the whole process tree is
/// killed. Returns whether it succeeded and the last artifact `artifacts`
/// found on stdout.
async fn run_step(
    mut command: Command,
    log: &Log,
    deadline: Instant,
    timeout: Duration,
    artifacts: Option<fn(&str) -> Option<PathBuf>>,
) -> Result<(ExitStatus, Option<PathBuf>), String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
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
    let stdout_log = log.clone();
    let stdout_task = tokio::spawn(async move {
        let mut artifact = None;
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match artifacts {
                    Some(find) => {
                        if let Some(path) = find(&line) {
                            artifact = Some(path);
                        }
                    }
                    None => stdout_log.push(&line),
                }
            }
        }
        artifact
    });
    let waited = tokio::time::timeout_at(deadline, child.wait()).await;
    let status = match waited {
        Ok(status) => status.map_err(|e| format!("cannot wait for {program}: {e}"))?,
        Err(_) => {
            if let Some(pid) = child.id() {
                // The step leads its own process group (see Sandbox::command).
                // SAFETY: signalling a process group we started.
                unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            stderr_task.abort();
            stdout_task.abort();
            return Err(format!(
                "the build took longer than {} s and was stopped",
                timeout.as_secs()
            ));
        }
    };
    // An unsandboxed step may leave a process behind holding the pipes;
    // what it prints after its parent is gone is not waited for.
    let grace = Instant::now() + Duration::from_secs(2);
    let _ = tokio::time::timeout_at(grace, stderr_task).await;
    let artifact = match tokio::time::timeout_at(grace, stdout_task).await {
        Ok(Ok(artifact)) => artifact,
        _ => None,
    };
    Ok((status, artifact))
}

/// The sysroot of the Rust toolchain a build uses (where `bin/cargo` and
/// `bin/rustc` are), as the platform's own `rustc` names it. Builds run
/// those binaries directly, not rustup's proxies, which would need the
/// operator's home directory.
async fn rust_sysroot() -> Result<PathBuf, String> {
    let mut command = Command::new("rustc");
    command
        .args(["--print", "sysroot"])
        // Away from any rust-toolchain file a Doee could have left.
        .current_dir("/")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for key in ["RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(key);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .map_err(|_| "`rustc --print sysroot` did not answer within 60 s".to_string())?
        .map_err(|e| format!("cannot run rustc, needed to build Rust Doees: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for tool in ["cargo", "rustc"] {
        if !sysroot.join("bin").join(tool).is_file() {
            return Err(format!(
                "the Rust toolchain in {} has no bin/{tool}",
                sysroot.display()
            ));
        }
    }
    Ok(sysroot)
}

/// Where a version's sources appear inside the sandbox: unique per
/// version, so cargo never takes one version's outputs for another's.
fn sources_inside(job: &Job) -> String {
    format!("src/{}/{}/{}", job.project, job.doee, job.version)
}

/// Builds a Rust Doee crate into a `cdylib`.
async fn build_rust(
    job: &Job,
    config: &BuildConfig,
    sandbox: &mut Sandbox,
    log: &Log,
    deadline: Instant,
) -> Result<PathBuf, String> {
    let root = &job.root;
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
    let needs_fetch = fetch::upload_dependencies(root)?;

    let sysroot = rust_sysroot().await?;
    let home = fetch::project_cache(&config.cargo_home, job.project.as_str())
        .map_err(|e| format!("cannot prepare the project's cargo home: {e}"))?;
    let cargo_config = home.join("config.toml");
    std::fs::write(&cargo_config, fetch::cargo_config(&config.fetch))
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cargo_config, std::fs::Permissions::from_mode(0o644))
        })
        .map_err(|e| format!("cannot prepare the project's cargo home: {e}"))?;
    if needs_fetch {
        fetch_rust(job, config, &sysroot, &home, log, deadline).await?;
    }
    let cargo = Cargo::bind(sandbox, job, config, &sysroot, &home, false);
    // One target directory per project: shared by its builds, so rebuilds
    // take seconds, but never with another project's build scripts.
    let target = sandbox.bind(
        &config.target_dir.join(job.project.as_str()),
        "target",
        true,
    );
    prepare(sandbox).await?;
    let command = cargo.command(
        sandbox,
        &[
            "rustc",
            "--release",
            "--lib",
            "--crate-type",
            "cdylib",
            "--offline",
            "--message-format",
            "json-render-diagnostics",
        ],
        vec![("CARGO_TARGET_DIR", target.into_os_string())],
    );
    let (status, artifact) = run_step(
        command,
        log,
        deadline,
        config.timeout,
        Some(shared_object_in),
    )
    .await?;
    if !status.success() {
        return Err(format!("cargo failed ({status}); see the log above"));
    }
    let artifact = artifact.ok_or_else(|| "cargo produced no shared object".to_string())?;
    sandbox
        .host_path(&artifact)
        .ok_or_else(|| format!("cargo reported {} outside the build", artifact.display()))
}

/// Where cargo sees the toolchain, the Doee's crate, the SDK and the
/// project's cargo home in a build's sandbox.
struct Cargo {
    toolchain: PathBuf,
    src: PathBuf,
    sdk: PathBuf,
    home: PathBuf,
}

impl Cargo {
    /// Binds what cargo needs: the sources writable (cargo writes the
    /// Cargo.lock it makes), the cargo home only for a fetch.
    fn bind(
        sandbox: &mut Sandbox,
        job: &Job,
        config: &BuildConfig,
        sysroot: &Path,
        home: &Path,
        home_writable: bool,
    ) -> Cargo {
        Cargo {
            toolchain: sandbox.bind(sysroot, "toolchain", false),
            src: sandbox.bind(&job.root, &sources_inside(job), true),
            sdk: sandbox.bind(&config.sdk_dir, "sdk", false),
            home: sandbox.bind(home, "cargo-home", home_writable),
        }
    }

    /// `cargo <args>` on the Doee's crate, with the SDK patched in, in the
    /// sandbox, with `env` added to its environment.
    fn command(
        &self,
        sandbox: &Sandbox,
        args: &[&str],
        mut env: Vec<(&'static str, OsString)>,
    ) -> Command {
        let args: Vec<OsString> = args
            .iter()
            .map(OsString::from)
            .chain([
                "--manifest-path".into(),
                self.src.join("Cargo.toml").into_os_string(),
                "--config".into(),
                sdk_patch(&self.sdk),
            ])
            .collect();
        env.extend([
            ("CARGO_HOME", self.home.clone().into_os_string()),
            ("CARGO_TERM_COLOR", "never".into()),
            ("RUSTC", self.toolchain.join("bin/rustc").into_os_string()),
        ]);
        sandbox.command(
            &self.toolchain.join("bin/cargo"),
            &args,
            &env,
            &[self.toolchain.join("bin")],
            &self.src,
        )
    }
}

/// The cargo `--config` that takes the SDK crate from the platform.
fn sdk_patch(sdk: &Path) -> OsString {
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("patch.crates-io.doee-sdk.path=\"{sdk}\"").into()
}

/// The fetch phase of a Rust build (see [`fetch`]): `cargo fetch` with
/// network into the project's cargo home, in a sandbox of its own.
async fn fetch_rust(
    job: &Job,
    config: &BuildConfig,
    sysroot: &Path,
    home: &Path,
    log: &Log,
    deadline: Instant,
) -> Result<(), String> {
    let mut sandbox = Sandbox::new(&config.sandbox)?.with_network();
    let cargo = Cargo::bind(&mut sandbox, job, config, sysroot, home, true);
    prepare(&sandbox).await?;
    let registry = config
        .fetch
        .crates_registry
        .as_deref()
        .unwrap_or("crates.io");
    let started = announce_fetch(log, registry);
    let command = cargo.command(&sandbox, &["fetch"], Vec::new());
    let (status, _) = run_step(command, log, deadline, config.timeout, None).await?;
    if !status.success() {
        let why = complaint(log, &started, "error: ");
        return Err(format!("cannot fetch the dependencies: {why}"));
    }
    let (crates, _) = fetch::cache_size(home);
    settle_cache(job, home, log, &format!("{crates} crates in all")).await
}

/// Logs the line that starts a fetch from `from`, and returns it (what the
/// tool says after it is its own).
fn announce_fetch(log: &Log, from: &str) -> String {
    let line =
        format!("fetching dependencies from {from} (with network; nothing of the upload runs)");
    log.push(&line);
    line
}

/// The last complaint a fetch tool wrote (lines starting with `prefix`)
/// since `started`: cargo and pip both name the package there.
fn complaint(log: &Log, started: &str, prefix: &str) -> String {
    log.text()
        .lines()
        .skip_while(|line| *line != started)
        .filter_map(|line| line.strip_prefix(prefix))
        .last()
        .unwrap_or("see the log above")
        .to_string()
}

/// Says how big the project's cache of dependencies is after a fetch, and
/// refuses it past the project's quota. A cache over its quota is emptied,
/// so that the next build fetches only what it needs.
async fn settle_cache(job: &Job, home: &Path, log: &Log, fetched: &str) -> Result<(), String> {
    let measured = home.to_path_buf();
    let (_, bytes) = tokio::task::spawn_blocking(move || fetch::cache_size(&measured))
        .await
        .unwrap_or_default();
    log.push(&format!(
        "fetched: {fetched}; the project's cache holds {:.1} MB",
        bytes as f64 / 1e6
    ));
    let within = fetch::within_quota(job.project.as_str(), bytes, job.max_dependencies_bytes);
    if within.is_err() {
        for dir in ["registry", "git", "pip"] {
            let _ = std::fs::remove_dir_all(home.join(dir));
        }
    }
    within
}

/// Where a C or C++ build writes its shared object, in the version's
/// directory (a Doee cannot upload it: it is removed before the build).
const C_OUTPUT_DIR: &str = ".isms-build";

/// Compiles a C or C++ Doee's sources into a shared object.
async fn build_c(
    job: &Job,
    config: &BuildConfig,
    sandbox: &mut Sandbox,
    log: &Log,
    deadline: Instant,
) -> Result<PathBuf, String> {
    let (compiler, package) = match job.manifest.language {
        Language::Cpp => ("c++", "g++"),
        _ => ("cc", "gcc"),
    };
    if which(compiler).is_none() {
        return Err(format!(
            "there is no {compiler} on this host to compile the Doee: apt-get install {package}"
        ));
    }
    let out_dir = job.root.join(C_OUTPUT_DIR);
    let _ = std::fs::remove_dir_all(&out_dir).or_else(|_| std::fs::remove_file(&out_dir));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot prepare the build: {e}"))?;
    let src = sandbox.bind(&job.root, &sources_inside(job), true);
    let include = sandbox.bind(&sdk::include_dir(&config.sdk_dir), "include", false);
    prepare(sandbox).await?;

    let output = format!("{C_OUTPUT_DIR}/doee.so");
    let mut args = shared_object_args(include, &output);
    // "./" keeps a source named like an option from being one.
    args.extend(
        job.manifest
            .sources
            .iter()
            .map(|s| OsString::from(format!("./{s}"))),
    );
    // An undefined symbol is a build error here, not a load error later.
    args.extend(["-Wl,-z,defs", "-lm"].map(OsString::from));
    log.push(&format!(
        "$ {compiler} {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let command = sandbox.command(Path::new(compiler), &args, &[], &[], &src);
    let (status, _) = run_step(command, log, deadline, config.timeout, None).await?;
    if !status.success() {
        return Err(format!("{compiler} failed ({status}); see the log above"));
    }
    let built = job.root.join(&output);
    if !built.is_file() {
        return Err(format!("{compiler} produced no shared object"));
    }
    Ok(built)
}

/// Builds a Python Doee (see [`crate::python`]): fetches its requirements'
/// wheels, packs them with the upload, compiles the runtime against the
/// host's Python and appends the pack to it.
async fn build_python(
    job: &Job,
    config: &BuildConfig,
    sandbox: &mut Sandbox,
    log: &Log,
    deadline: Instant,
) -> Result<PathBuf, String> {
    if !job.root.join("handler.py").is_file() {
        return Err("a python Doee needs a handler.py next to its doee.toml".into());
    }
    if which("cc").is_none() {
        return Err(
            "there is no cc on this host to build the Python runtime: apt-get install gcc".into(),
        );
    }
    let host = python::detect()?;
    log.push(&format!("Python {} ({})", host.version, python::PYTHON));
    let requirements = python::requirements(&job.root)?;
    let out_dir = job.root.join(C_OUTPUT_DIR);
    let _ = std::fs::remove_dir_all(&out_dir).or_else(|_| std::fs::remove_file(&out_dir));
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot prepare the build: {e}"))?;
    if !requirements.is_empty() {
        std::fs::write(
            out_dir.join("requirements.txt"),
            requirements.join("\n") + "\n",
        )
        .map_err(|e| format!("cannot prepare the build: {e}"))?;
        fetch_python(job, config, log, deadline).await?;
    }

    let src = sandbox.bind(&job.root, &sources_inside(job), true);
    let include = sandbox.bind(&sdk::include_dir(&config.sdk_dir), "include", false);
    let runtime = sandbox.bind(
        &sdk::python_runtime(&config.sdk_dir),
        "python/isms_python.c",
        false,
    );
    prepare(sandbox).await?;
    let pack = sandbox.command(
        Path::new(python::PYTHON),
        &["-I".into(), "-c".into(), python::PACK.into()],
        &[],
        &[],
        &src,
    );
    let (status, _) = run_step(pack, log, deadline, config.timeout, None).await?;
    if !status.success() {
        return Err("the Doee's Python files do not compile; see the log above".into());
    }
    let mut args = shared_object_args(include, &format!("{C_OUTPUT_DIR}/runtime.so"));
    args.extend(["-I".into(), host.include.clone().into_os_string()]);
    args.push(runtime.into_os_string());
    args.extend(
        [
            "-Wl,-z,defs",
            &format!("-l{}", host.library()),
            "-ldl",
            "-lm",
        ]
        .map(OsString::from),
    );
    let command = sandbox.command(Path::new("cc"), &args, &[], &[], &src);
    let (status, _) = run_step(command, log, deadline, config.timeout, None).await?;
    if !status.success() {
        return Err(format!(
            "cc could not build the Python runtime ({status}); see the log above"
        ));
    }
    // The runtime finds the pack at its own end (zip readers skip the ELF).
    let built = out_dir.join("doee.so");
    let joined = std::fs::read(out_dir.join("runtime.so")).and_then(|mut bytes| {
        bytes.extend(std::fs::read(out_dir.join("payload.zip"))?);
        std::fs::write(&built, bytes)
    });
    joined.map_err(|e| format!("cannot join the runtime and the Doee: {e}"))?;
    Ok(built)
}

/// The fetch phase of a Python build: the requirements' wheels, and only
/// wheels, from PyPI or `resadmin.pip_index_url`, into `.isms-build/wheels`
/// through the project's pip cache.
async fn fetch_python(
    job: &Job,
    config: &BuildConfig,
    log: &Log,
    deadline: Instant,
) -> Result<(), String> {
    let mut sandbox = Sandbox::new(&config.sandbox)?.with_network();
    let home = fetch::project_cache(&config.cargo_home, job.project.as_str())
        .map_err(|e| format!("cannot prepare the project's cache: {e}"))?;
    let pip_cache = home.join("pip");
    std::fs::create_dir_all(&pip_cache)
        .map_err(|e| format!("cannot prepare the project's cache: {e}"))?;
    let src = sandbox.bind(&job.root, &sources_inside(job), true);
    let cache = sandbox.bind(&pip_cache, "pip-cache", true);
    prepare(&sandbox).await?;
    let index = config
        .fetch
        .pip_index_url
        .as_deref()
        .unwrap_or("https://pypi.org/simple");
    let started = announce_fetch(log, index);
    let args: Vec<OsString> = [
        "-I",
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--index-url",
        index,
        "--dest",
        "wheels",
        "--requirement",
        "requirements.txt",
        "--cache-dir",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([cache.into_os_string()])
    .collect();
    // In the build's own directory, where nothing of the upload is: no
    // name in the requirements can be taken for a local file.
    let command = sandbox.command(
        Path::new(python::PYTHON),
        &args,
        &[],
        &[],
        &src.join(C_OUTPUT_DIR),
    );
    let (status, _) = run_step(command, log, deadline, config.timeout, None).await?;
    if !status.success() {
        let why = complaint(log, &started, "ERROR: ");
        return Err(format!(
            "cannot fetch the requirements: {why} (only wheels are taken: a package published as source only cannot be used)"
        ));
    }
    let (wheels, bytes) = fetch::cache_size(&job.root.join(C_OUTPUT_DIR).join("wheels"));
    let fetched = format!("{wheels} wheels, {:.1} MB", bytes as f64 / 1e6);
    settle_cache(job, &home, log, &fetched).await
}

/// The compiler's arguments for a Doee's shared object at `output`, with
/// the SDK's headers at `include`: sources and libraries come after.
fn shared_object_args(include: PathBuf, output: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-shared",
        "-fPIC",
        "-O2",
        "-Wall",
        // Only the ABI's symbols are exported (ISMS_DOEE_C marks them).
        "-fvisibility=hidden",
        "-I",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(include.into_os_string());
    args.extend(["-o".into(), output.into()]);
    args
}

/// Hands the sandbox's writable directories to the build's uid.
async fn prepare(sandbox: &Sandbox) -> Result<(), String> {
    let sandbox = sandbox.clone();
    tokio::task::spawn_blocking(move || sandbox.prepare())
        .await
        .map_err(|e| format!("cannot prepare the build: {e}"))?
        .map_err(|e| format!("cannot prepare the build directories: {e}"))
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
