//! `isms up`: starts the kernel and every service as its own process,
//! restarts a crashed one with backoff, and stops them all cleanly on
//! Ctrl-C or SIGTERM.
//!
//! Services run in their own process group, so the terminal's Ctrl-C
//! reaches only the supervisor, which then stops them in order (the kernel
//! last). Each service also dies with the supervisor (`PR_SET_PDEATHSIG`),
//! so a killed supervisor leaves nothing behind.

use crate::client;
use crate::config::Config;
use anyhow::{Context as _, bail};
use isms_doer::isolation::Backend;
use isms_ipc::{Endpoint, ServiceKind};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::mpsc;

/// The services `isms up` starts, in start order.
const SERVICES: [ServiceKind; 6] = [
    ServiceKind::Kernel,
    ServiceKind::Resadmin,
    ServiceKind::DBriver,
    ServiceKind::Doer,
    ServiceKind::CommServer,
    ServiceKind::ControlGate,
];

/// A service running longer than this before it crashes starts its backoff afresh.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(30);
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long services get to stop before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the platform may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What `isms up` needs.
pub struct Up {
    /// The data directory (absolute).
    pub data_dir: PathBuf,
    /// The configuration file, if any.
    pub config_file: Option<PathBuf>,
}

struct Running {
    pid: u32,
    started: Instant,
    backoff: Duration,
}

enum Note {
    Exited(ServiceKind, String),
    Restart(ServiceKind),
}

/// Runs the platform until Ctrl-C or SIGTERM.
pub fn up(up: Up) -> anyhow::Result<()> {
    let config = Config::load(up.config_file.as_deref())?;
    config.validate(&up.data_dir)?;
    let _lock = prepare_data_dir(&up.data_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(supervise(&up, &config))
}

/// What a supervisor (`isms up`, `isms join`) does before it starts
/// anything: a private umask, no inherited descriptors, the cgroups, the
/// data directory, and its lock (held while the returned file lives).
pub(crate) fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    // Every file the platform writes is its own (0600, directories 0700)
    // unless made readable on purpose: what Workers and builds must read.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    // What whoever started `isms up` left open reaches no service, build or
    // Worker.
    close_on_exec_from(3);
    if let Ok(host) = isms_doer::cgroup::Host::current() {
        isms_doer::cgroup::delegate(&host);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    // Private even when the Doer opens the data directory to its Workers.
    for dir in ["run", "logs", "kernel"] {
        let path = data_dir.join(dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    lock(data_dir)
}

/// Marks every descriptor from `first` on close-on-exec.
fn close_on_exec_from(first: libc::c_int) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<libc::c_int> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; a closed one only fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Holds an exclusive lock on the data directory while the platform runs.
fn lock(data_dir: &Path) -> anyhow::Result<File> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("run").join("supervisor.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another `isms up` is already running with the data directory {}",
            data_dir.display()
        );
    }
    Ok(file)
}

fn start(kind: ServiceKind, up: &Up) -> anyhow::Result<tokio::process::Child> {
    let log_path = up
        .data_dir
        .join("logs")
        .join(format!("{}.log", kind.as_str()));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the isms executable")?;
    let mut command = Command::new(exe);
    command
        .arg("service")
        .arg(kind.as_str())
        .arg("--instance")
        .arg(format!("{}-1", kind.as_str()))
        .arg("--data-dir")
        .arg(&up.data_dir);
    if let Some(file) = &up.config_file {
        command.arg("--config").arg(file);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    die_with_parent(&mut command);
    command
        .spawn()
        .with_context(|| format!("cannot start the {kind}"))
}

/// Has the child get SIGTERM when its supervisor dies, however it dies.
pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub(crate) fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (_, Some(signal)) => format!("was killed by signal {signal}"),
            _ => "ended".into(),
        },
        Err(err) => format!("could not be waited for: {err}"),
    }
}

fn launch(kind: ServiceKind, up: &Up, notes: &mpsc::UnboundedSender<Note>) -> anyhow::Result<u32> {
    let mut child = start(kind, up)?;
    let pid = child.id().unwrap_or(0);
    let notes = notes.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = notes.send(Note::Exited(kind, describe(status)));
    });
    Ok(pid)
}

async fn supervise(up: &Up, config: &Config) -> anyhow::Result<()> {
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let mut running: HashMap<ServiceKind, Running> = HashMap::new();
    let endpoint = config.kernel_endpoint(&up.data_dir)?;
    let gate = config.control_gate()?.addr;
    let backend = config.isolation()?.resolve();

    let started = Instant::now();
    for kind in SERVICES {
        let pid = launch(kind, up, &notes_tx)?;
        running.insert(
            kind,
            Running {
                pid,
                started: Instant::now(),
                backoff: FIRST_BACKOFF,
            },
        );
        if kind == ServiceKind::Kernel {
            wait_for_kernel(&endpoint, &mut notes).await?;
        }
    }
    // Wait until every service reports healthy, failing fast if one dies.
    let health_url = format!("http://{gate}/healthz");
    loop {
        let waited = tokio::time::timeout(Duration::from_millis(200), notes.recv()).await;
        if let Ok(Some(Note::Exited(kind, how))) = waited {
            stop_all(&running).await;
            let log = up
                .data_dir
                .join("logs")
                .join(format!("{}.log", kind.as_str()));
            let last = last_error(&log)
                .map(|line| format!(": {line}"))
                .unwrap_or_default();
            bail!(
                "the {kind} {how} while starting{last}\n(full log: {})",
                log.display()
            );
        }
        if client::get_status(&health_url).await == Some(200) {
            break;
        }
        if started.elapsed() > START_TIMEOUT {
            stop_all(&running).await;
            bail!(
                "the platform did not become healthy within {START_TIMEOUT:?}; see the logs in {}",
                up.data_dir.join("logs").display()
            );
        }
    }
    let limits = match config.doer(&up.data_dir) {
        Ok(doer) => isms_doer::limits_summary(&doer),
        Err(err) => Err(format!("{err:#}")),
    };
    print_banner(up, config, backend, limits);

    let mut stop = std::pin::pin!(crate::service::shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut stop => {
                println!("\nStopping ISMS…");
                stop_all(&running).await;
                println!("Stopped.");
                return Ok(());
            }
            Some(note) = notes.recv() => match note {
                Note::Exited(kind, how) => {
                    let Some(state) = running.get_mut(&kind) else { continue };
                    if state.started.elapsed() > STABLE_AFTER {
                        state.backoff = FIRST_BACKOFF;
                    }
                    let delay = state.backoff;
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                    println!("{} the {kind} {how}; restarting it in {:.1} s", timestamp(), delay.as_secs_f64());
                    let notes = notes_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = notes.send(Note::Restart(kind));
                    });
                }
                Note::Restart(kind) => match launch(kind, up, &notes_tx) {
                    Ok(pid) => {
                        if let Some(state) = running.get_mut(&kind) {
                            state.pid = pid;
                            state.started = Instant::now();
                        }
                        println!("{} the {kind} restarted (pid {pid})", timestamp());
                    }
                    Err(err) => {
                        println!("{} cannot restart the {kind}: {err:#}; trying again", timestamp());
                        let notes = notes_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(MAX_BACKOFF).await;
                            let _ = notes.send(Note::Restart(kind));
                        });
                    }
                },
            },
        }
    }
}

async fn wait_for_kernel(
    endpoint: &Endpoint,
    notes: &mut mpsc::UnboundedReceiver<Note>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = match endpoint {
            Endpoint::Ipc(path) => path.exists(),
            Endpoint::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
        };
        if ready {
            return Ok(());
        }
        if let Ok(Some(Note::Exited(_, how))) =
            tokio::time::timeout(Duration::from_millis(20), notes.recv()).await
        {
            bail!("the kernel {how} while starting; see its log");
        }
        if Instant::now() > deadline {
            bail!("the kernel did not open {endpoint} within 10 s");
        }
    }
}

/// Stops every service, the kernel last: SIGTERM, then SIGKILL after a grace period.
async fn stop_all(running: &HashMap<ServiceKind, Running>) {
    for kind in SERVICES.iter().rev() {
        let Some(state) = running.get(kind) else {
            continue;
        };
        let pid = state.pid as libc::pid_t;
        if pid <= 0 {
            continue;
        }
        // SAFETY: signalling a child we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn alive(pid: libc::pid_t) -> bool {
    // A zombie still answers kill(0); its /proc status says Z. Reaping
    // happens in the waiting task, so check the state rather than kill().
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The last `error:` line a service wrote to its log.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .map(str::to_string)
}

pub(crate) fn timestamp() -> String {
    let secs = isms_ipc::names::now_ms() / 1000;
    format!(
        "[{:02}:{:02}:{:02}]",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

fn print_banner(up: &Up, config: &Config, backend: Backend, limits: Result<String, String>) {
    let password = isms_resadmin::ResadminConfig::initial_password_file(&up.data_dir);
    let isolation = match backend {
        Backend::Bwrap => "bwrap (bubblewrap sandboxes)".to_string(),
        Backend::Apptainer => "apptainer (containers)".to_string(),
        Backend::Process => {
            "process: WARNING, Doees run WITHOUT ISOLATION (development only)".to_string()
        }
    };
    let limits = match limits {
        Ok(cgroups) => cgroups,
        Err(why) => format!(
            "WARNING, no cgroups ({why}): a Worker's memory is bounded per process only, \
             and projects do not share the CPU by weight"
        ),
    };
    // One write, so whoever reads the output sees the whole banner at once.
    let banner = format!(
        "ISMS is up.
  Dashboard and API   http://{api}
  HTTP triggers       http://{http}/<project>/<route>
  MQTT broker         {mqtt}
  Isolation           {isolation}
  Limits              {limits}
  Databases           {databases}
  Languages           Rust, C, C++, {python}
  Other hosts         {other_hosts}
  Initial admin       user `admin`, password in {password}
  Data and logs       {data}
Press Ctrl-C to stop.
",
        api = config.control_gate.addr,
        http = config.commserver.http_addr,
        mqtt = config.mqtt_summary(),
        databases = config.databases_summary(&up.data_dir),
        python = match isms_resadmin::python::detect() {
            Ok(host) => format!("Python {} ({})", host.version, isms_resadmin::python::PYTHON),
            Err(why) => format!("not Python: {why}"),
        },
        other_hosts = match config.kernel(&up.data_dir).ok().and_then(|k| k.remote) {
            Some(remote) => format!(
                "tcp://{} (TLS 1.3; they join with `isms join`, the key from `isms join-key`)",
                remote.address
            ),
            None => "none (set kernel.listen = \"tcp://0.0.0.0:7790\" to let Doers and CommServers join)"
                .to_string(),
        },
        password = password.display(),
        data = up.data_dir.display(),
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(banner.as_bytes());
    let _ = stdout.flush();
}
