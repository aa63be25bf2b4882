//! The Doer: runs Doees in sandboxed Workers.
//!
//! - [`admin`]: Doer Admin, the task queues and the Worker Handler's pools.
//! - [`worker`]: one Worker's process and link.
//! - [`isolation`]: the `bwrap`, `apptainer` and `process` backends.
//! - [`cgroup`]: each Worker's cgroup and each project's CPU weight.
//! - [`slots`]: how the Doer's Workers are shared between projects.
//! - [`versions`]: fetching and caching the versions to run.
//! - [`executor`]: the Doee Executor that runs inside each Worker, and
//!   [`seccomp`], the system calls it refuses the Doee.

pub mod admin;
pub mod area;
pub mod cgroup;
pub mod executor;
pub mod isolation;
pub mod seccomp;
pub mod slots;
pub mod stream;
pub mod versions;
pub mod worker;

use anyhow::{Context as _, bail};
use cgroup::{CgroupChoice, Cgroups};
use isms_ipc::{Connection, Incoming};
use isolation::{Backend, IsolationChoice};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// How the Doer runs.
#[derive(Clone, Debug)]
pub struct DoerConfig {
    /// The instance's name at the kernel, which its invocation records carry.
    pub instance: String,
    /// The host it runs on, which its invocation records carry.
    pub host: String,
    /// The Doer's own directory (`<data-dir>/doer`).
    pub dir: PathBuf,
    /// The isms executable, which runs the Executor in each Worker.
    pub executable: PathBuf,
    /// Which isolation to use.
    pub isolation: IsolationChoice,
    /// Whether Workers get cgroups.
    pub cgroups: CgroupChoice,
    /// Workers across all Doees; also the Doer's capacity at the kernel.
    pub max_workers: u32,
    /// Invocations waiting for a Worker, per Doee version; past it, 429.
    pub queue_per_doee: u32,
    /// Idle time after which a Worker is stopped (down to `min_warm`).
    pub idle_timeout: Duration,
    /// The user Workers run as when the Doer runs as root.
    pub worker_uid: u32,
    /// Processes and threads per Worker.
    pub worker_max_processes: u32,
    /// Open files per Worker.
    pub worker_max_open_files: u32,
    /// Size of each Worker's private /tmp, in MiB.
    pub worker_tmp_mb: u32,
    /// Output bytes per invocation.
    pub max_output_bytes: u32,
    /// How long a Worker may take to start.
    pub start_timeout: Duration,
    /// Output bytes kept in each invocation's record.
    pub record_output_bytes: usize,
    /// How deep Doees may call Doees (`ctx.invoke`).
    pub max_chain_depth: u8,
}

impl DoerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: &std::path::Path, executable: PathBuf) -> DoerConfig {
        DoerConfig {
            instance: "doer-1".into(),
            host: isms_ipc::link::host_name(),
            dir: data_dir.join("doer"),
            executable,
            isolation: IsolationChoice::Auto,
            cgroups: CgroupChoice::Auto,
            max_workers: 64,
            queue_per_doee: 64,
            idle_timeout: Duration::from_secs(60),
            worker_uid: isolation::DEFAULT_WORKER_UID,
            worker_max_processes: 64,
            worker_max_open_files: 256,
            worker_tmp_mb: 64,
            max_output_bytes: 16 << 20,
            start_timeout: Duration::from_secs(10),
            record_output_bytes: 64 << 10,
            max_chain_depth: 8,
        }
    }

    fn sif(&self) -> PathBuf {
        self.dir.join("worker.sif")
    }

    /// The name of the platform's cgroup: one per data directory, so that
    /// platforms side by side (tests) keep apart, and a restarted Doer
    /// finds what its predecessor left.
    fn cgroup_name(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.dir.as_os_str().as_encoded_bytes());
        format!("isms-{}", &format!("{digest:x}")[..12])
    }
}

/// What bounds a Worker's resources on this host, for the banner: the
/// Doer's cgroups (left as they are), or why there are none.
pub fn limits_summary(config: &DoerConfig) -> Result<String, String> {
    if config.cgroups == CgroupChoice::Off {
        return Err("doer.cgroups = off".into());
    }
    let host =
        cgroup::Host::current().map_err(|e| format!("cannot read the process's cgroups: {e}"))?;
    Cgroups::probe(&host, &config.cgroup_name()).map(|c| c.describe())
}

/// The platform's cgroups as `config` asks for them: `None` (with a
/// warning) where there can be none and the choice is `auto`.
fn open_cgroups(config: &DoerConfig) -> anyhow::Result<Option<Cgroups>> {
    if config.cgroups == CgroupChoice::Off {
        tracing::warn!(
            "Workers get no cgroups (doer.cgroups = off): their memory is bounded per process \
             only, and projects do not share the CPU by weight"
        );
        return Ok(None);
    }
    let opened = cgroup::Host::current()
        .map_err(|e| format!("cannot read the process's cgroups: {e}"))
        .and_then(|host| Cgroups::open(&host, &config.cgroup_name()));
    match opened {
        Ok(cgroups) => {
            tracing::info!(limits = %cgroups.describe(), "Workers get cgroups");
            Ok(Some(cgroups))
        }
        Err(why) if config.cgroups == CgroupChoice::On => {
            bail!("Workers cannot get cgroups (doer.cgroups = on): {why}")
        }
        Err(why) => {
            tracing::warn!(
                %why,
                "Workers get NO CGROUPS: their memory is bounded per process only (rlimits), and \
                 projects do not share the CPU by weight"
            );
            Ok(None)
        }
    }
}

/// The Doer with its worker area and sandbox checked, ready to join the kernel.
pub struct Prepared {
    config: DoerConfig,
    area: area::WorkerArea,
    isolation: Box<dyn isolation::Isolation>,
    cgroups: Option<Cgroups>,
}

/// Prepares the worker area and checks the isolation backend: all that must
/// hold before the Doer tells the kernel it is up.
pub async fn prepare(config: DoerConfig) -> anyhow::Result<Prepared> {
    let uid = isolation::worker_uid(config.worker_uid);
    let area = area::WorkerArea::prepare(&config.dir, &config.executable, uid)?;
    let backend = config.isolation.resolve();
    match backend {
        Backend::Process => tracing::warn!(
            "Workers run WITHOUT ISOLATION (doer.isolation = process): any Doee can read and \
             write what this user can. Use this for development only; install bubblewrap."
        ),
        Backend::Bwrap => probe_bwrap(&config).await?,
        Backend::Apptainer => build_apptainer_image(&config).await?,
    }
    let cgroups = open_cgroups(&config)?;
    tracing::info!(%backend, uid, area = %area.dir.display(), "Doer ready");
    let isolation = isolation::build(backend, uid, config.worker_tmp_mb, config.sif());
    Ok(Prepared {
        config,
        area,
        isolation,
        cgroups,
    })
}

impl Prepared {
    /// Serves invocations until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        admin::Admin::run(
            conn,
            incoming,
            self.config,
            self.area,
            self.isolation,
            self.cgroups,
            shutdown,
        )
        .await
    }
}

/// The capacity the Doer registers with.
pub fn capacity(config: &DoerConfig) -> u32 {
    config.max_workers
}

/// Checks once that bubblewrap can build a sandbox here, so a broken host
/// fails at start with a fix rather than at every invocation.
async fn probe_bwrap(config: &DoerConfig) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new("bwrap");
    command
        .args([
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
        ])
        .args(isolation::system_links())
        .args(["--", "/usr/bin/true"]);
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        command.uid(config.worker_uid).gid(config.worker_uid);
    }
    let output = command.output().await.context("cannot run bwrap")?;
    if !output.status.success() {
        bail!(
            "bubblewrap cannot create a sandbox on this host: {}. Enable unprivileged user \
             namespaces (sysctl kernel.unprivileged_userns_clone=1), or set \
             doer.isolation = \"process\" to run Doees without isolation (development only)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Builds the Worker image from `containers/worker.def` once.
async fn build_apptainer_image(config: &DoerConfig) -> anyhow::Result<()> {
    let sif = config.sif();
    if sif.exists() {
        return Ok(());
    }
    let def = config.dir.join("worker.def");
    std::fs::write(&def, isolation::APPTAINER_DEF)?;
    tracing::info!(image = %sif.display(), "building the Worker image (once)");
    let output = tokio::process::Command::new("apptainer")
        .arg("build")
        .arg(&sif)
        .arg(&def)
        .output()
        .await
        .context("cannot run apptainer")?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&sif);
        bail!(
            "cannot build the Worker image {} from containers/worker.def: {}",
            sif.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
