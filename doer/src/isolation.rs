//! Isolation backends: how a Worker's process is confined.
//!
//! Every backend starts the same Doee Executor (`isms executor`) for one
//! Worker; they differ only in the walls around it. The Executor applies the
//! Worker's resource limits to itself in every backend, before any Doee code
//! is loaded.

use anyhow::{Context as _, bail};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio::process::Command;

/// The bubblewrap profile, from `containers/worker.bwrap`.
const BWRAP_PROFILE: &str = include_str!("../../containers/worker.bwrap");
/// The Apptainer definition, from `containers/worker.def`.
pub const APPTAINER_DEF: &str = include_str!("../../containers/worker.def");

/// Where the Worker's files appear inside a sandbox.
const SANDBOX_EXECUTOR: &str = "/isms/isms";
const SANDBOX_DOEE: &str = "/isms/doee.so";
const SANDBOX_SOCKET: &str = "/run/isms/worker.sock";

/// The user a Worker runs as when the Doer runs as root: `RLIMIT_NPROC` is
/// not enforced for root, so a fork bomb is bounded only under another uid.
pub const DEFAULT_WORKER_UID: u32 = 65534;

/// The isolation a configuration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationChoice {
    /// Apptainer if installed, else bubblewrap, else `process`.
    Auto,
    /// `apptainer exec`.
    Apptainer,
    /// `bwrap`.
    Bwrap,
    /// No isolation: development only.
    Process,
}

impl FromStr for IsolationChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IsolationChoice::Auto),
            "apptainer" => Ok(IsolationChoice::Apptainer),
            "bwrap" => Ok(IsolationChoice::Bwrap),
            "process" => Ok(IsolationChoice::Process),
            other => Err(format!(
                "unknown isolation `{other}`: use auto, apptainer, bwrap or process"
            )),
        }
    }
}

/// The backend a choice resolves to on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Apptainer.
    Apptainer,
    /// Bubblewrap.
    Bwrap,
    /// No isolation.
    Process,
}

impl Backend {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Apptainer => "apptainer",
            Backend::Bwrap => "bwrap",
            Backend::Process => "process",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Finds an executable on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl IsolationChoice {
    /// The backend this choice means here (SPEC §3's `auto` order).
    pub fn resolve(self) -> Backend {
        match self {
            IsolationChoice::Apptainer => Backend::Apptainer,
            IsolationChoice::Bwrap => Backend::Bwrap,
            IsolationChoice::Process => Backend::Process,
            IsolationChoice::Auto if which("apptainer").is_some() => Backend::Apptainer,
            IsolationChoice::Auto if which("bwrap").is_some() => Backend::Bwrap,
            IsolationChoice::Auto => Backend::Process,
        }
    }
}

/// What one Worker needs from its backend.
#[derive(Debug)]
pub struct WorkerFiles<'a> {
    /// The isms executable.
    pub executable: &'a Path,
    /// The Doee's shared object.
    pub doee: &'a Path,
    /// The Worker's run directory, holding `worker.sock`.
    pub run_dir: &'a Path,
    /// The Worker's memory limit.
    pub memory_mb: u32,
}

/// One way of confining a Worker.
pub trait Isolation: Send + Sync {
    /// Which backend.
    fn backend(&self) -> Backend;

    /// The command that starts the Executor for a Worker. The caller adds
    /// stdio, spawns it, then drops the [`Launch`].
    fn command(&self, files: &WorkerFiles<'_>) -> anyhow::Result<Launch>;

    /// The uid the Worker runs as, which must own its socket.
    fn worker_uid(&self) -> u32;
}

/// The uid Workers run as: the configured one when the Doer runs as root
/// (`RLIMIT_NPROC` does not bind root), the Doer's own otherwise.
pub fn worker_uid(configured: u32) -> u32 {
    let own = current_uid();
    if own == 0 { configured } else { own }
}

/// Builds the backend for Workers running as `uid`.
pub fn build(backend: Backend, uid: u32, tmp_mb: u32, sif: PathBuf) -> Box<dyn Isolation> {
    match backend {
        Backend::Bwrap => Box::new(Bwrap { uid, tmp_mb }),
        Backend::Apptainer => Box::new(Apptainer { uid, sif }),
        Backend::Process => Box::new(Process { uid }),
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// Runs the command as `uid` when that is not the Doer's own.
fn run_as(command: &mut Command, uid: u32) {
    if uid != current_uid() {
        command.uid(uid).gid(uid);
    }
}

/// Bubblewrap, following `containers/worker.bwrap`.
pub struct Bwrap {
    uid: u32,
    tmp_mb: u32,
}

impl Bwrap {
    /// The profile's arguments with placeholders filled in.
    pub fn profile_args(tmp_bytes: u64) -> Vec<String> {
        let mut args = Vec::new();
        for line in BWRAP_PROFILE.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "{system_links}" {
                args.extend(system_links());
                continue;
            }
            args.extend(
                line.split_whitespace()
                    .map(|word| word.replace("{tmp_bytes}", &tmp_bytes.to_string())),
            );
        }
        args
    }
}

/// `/bin`, `/lib`, `/lib64`, `/sbin` as the host has them: a symlink into
/// `/usr` (merged /usr) or a directory to bind read-only.
pub fn system_links() -> Vec<String> {
    let mut args = Vec::new();
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(dir) {
                args.extend(["--symlink".into(), target.display().to_string(), dir.into()]);
            }
        } else if meta.is_dir() {
            args.extend(["--ro-bind".into(), dir.into(), dir.into()]);
        }
    }
    args
}

/// Host files handed to the sandbox as descriptors 3, 4 and 5.
struct PassedFds {
    fds: [OwnedFd; 3],
}

impl PassedFds {
    fn open(files: &WorkerFiles<'_>) -> anyhow::Result<PassedFds> {
        let open = |path: &Path| -> anyhow::Result<OwnedFd> {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            // Duplicate above any descriptor the child will use, so the
            // dup2 calls after fork cannot overwrite one another.
            // SAFETY: fcntl on a valid descriptor.
            let high = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
            if high < 0 {
                bail!(
                    "cannot duplicate a descriptor: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: `high` is a fresh descriptor we own.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
        };
        Ok(PassedFds {
            fds: [
                open(files.executable)?,
                open(files.doee)?,
                open(files.run_dir)?,
            ],
        })
    }

    /// Arranges for the child to receive the descriptors as 3, 4 and 5.
    /// The descriptors must stay open until the command is spawned, so they
    /// travel with it in the [`Launch`].
    fn install(self, mut command: Command) -> Launch {
        let raw: [i32; 3] = [
            self.fds[0].as_raw_fd(),
            self.fds[1].as_raw_fd(),
            self.fds[2].as_raw_fd(),
        ];
        // SAFETY: only async-signal-safe calls (dup2) run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for (target, source) in (3..).zip(raw) {
                    if libc::dup2(source, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Launch {
            command,
            _keep_open: Some(self),
        }
    }
}

/// A command ready to spawn, with whatever must stay open until it is.
pub struct Launch {
    /// The command; add stdio, then spawn.
    pub command: Command,
    _keep_open: Option<PassedFds>,
}

impl Launch {
    fn plain(command: Command) -> Launch {
        Launch {
            command,
            _keep_open: None,
        }
    }
}

impl Isolation for Bwrap {
    fn backend(&self) -> Backend {
        Backend::Bwrap
    }

    fn command(&self, files: &WorkerFiles<'_>) -> anyhow::Result<Launch> {
        let mut command = Command::new("bwrap");
        command.args(Bwrap::profile_args(u64::from(self.tmp_mb) << 20));
        command.arg("--").arg(SANDBOX_EXECUTOR).args([
            "executor",
            "--socket",
            SANDBOX_SOCKET,
            "--doee",
            SANDBOX_DOEE,
        ]);
        command.env_clear();
        run_as(&mut command, self.uid);
        Ok(PassedFds::open(files)?.install(command))
    }

    fn worker_uid(&self) -> u32 {
        self.uid
    }
}

/// Apptainer, with the image built from `containers/worker.def`.
pub struct Apptainer {
    uid: u32,
    sif: PathBuf,
}

impl Isolation for Apptainer {
    fn backend(&self) -> Backend {
        Backend::Apptainer
    }

    fn command(&self, files: &WorkerFiles<'_>) -> anyhow::Result<Launch> {
        let mut command = Command::new("apptainer");
        let bind = |host: &Path, inside: &str| format!("{}:{inside}:ro", host.display());
        command
            .args([
                "exec",
                "--containall",
                "--cleanenv",
                "--no-home",
                "--net",
                "--network",
                "none",
            ])
            .arg("--memory")
            .arg(format!("{}M", files.memory_mb))
            .arg("--bind")
            .arg(bind(files.executable, SANDBOX_EXECUTOR))
            .arg("--bind")
            .arg(bind(files.doee, SANDBOX_DOEE))
            .arg("--bind")
            .arg(bind(files.run_dir, "/run/isms"))
            .arg(&self.sif)
            .args([
                SANDBOX_EXECUTOR,
                "executor",
                "--socket",
                SANDBOX_SOCKET,
                "--doee",
                SANDBOX_DOEE,
            ]);
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        run_as(&mut command, self.uid);
        Ok(Launch::plain(command))
    }

    fn worker_uid(&self) -> u32 {
        self.uid
    }
}

/// No isolation: the Executor runs as a plain child process. The Worker's
/// rlimits still hold, but it sees the host as the Doer does.
pub struct Process {
    uid: u32,
}

impl Isolation for Process {
    fn backend(&self) -> Backend {
        Backend::Process
    }

    fn command(&self, files: &WorkerFiles<'_>) -> anyhow::Result<Launch> {
        let mut command = Command::new(files.executable);
        command
            .arg("executor")
            .arg("--socket")
            .arg(files.run_dir.join("worker.sock"))
            .arg("--doee")
            .arg(files.doee)
            .env_clear();
        run_as(&mut command, self.uid);
        Ok(Launch::plain(command))
    }

    fn worker_uid(&self) -> u32 {
        self.uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_fills_its_placeholders() {
        let args = Bwrap::profile_args(8 << 20);
        let joined = args.join(" ");
        assert!(joined.contains("--size 8388608 --tmpfs /tmp"), "{joined}");
        assert!(!joined.contains('{'), "unfilled placeholder in {joined}");
        assert_eq!(
            args.last().map(String::as_str),
            Some("/"),
            "remount-ro / comes last"
        );
        assert!(joined.contains("--unshare-all"));
        assert!(joined.contains("--ro-bind-fd 5 /run/isms"));
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(IsolationChoice::Auto));
        assert!("docker".parse::<IsolationChoice>().is_err());
        assert_eq!(IsolationChoice::Process.resolve(), Backend::Process);
    }
}
