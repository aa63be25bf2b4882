//! Isolation backends: how a Worker's process is confined.
//!
//! Every backend starts the same Doee Executor (`isms executor`) for one
//! Worker; they differ only in the walls around it. The Executor applies the
//! Worker's resource limits to itself in every backend, before any Doee code
//! is loaded.

use crate::cgroup::WorkerGroup;
use anyhow::{Context as _, bail};
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio::process::{Child, Command};

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
    /// stdio, then [`Launch::spawn`]s it.
    fn command(&self, files: &WorkerFiles<'_>) -> anyhow::Result<Launch>;

    /// Whether the Worker has a pid namespace of its own, so that the
    /// Executor may kill every other process in it.
    fn own_pid_namespace(&self) -> bool;

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

/// The uid to switch to, when it is not the Doer's own.
fn switch_to(uid: u32) -> Option<u32> {
    (uid != current_uid()).then_some(uid)
}

/// Bubblewrap, following `containers/worker.bwrap`.
pub struct Bwrap {
    uid: u32,
    tmp_mb: u32,
}

impl Bwrap {
    /// The profile's arguments with placeholders filled in.
    pub fn profile_args(tmp_bytes: u64, shm_bytes: u64) -> Vec<String> {
        let mut args = Vec::new();
        for line in BWRAP_PROFILE.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "{system_links}" {
                args.extend(system_links());
                continue;
            }
            args.extend(line.split_whitespace().map(|word| {
                word.replace("{tmp_bytes}", &tmp_bytes.to_string())
                    .replace("{shm_bytes}", &shm_bytes.to_string())
            }));
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

    fn raw(&self) -> [RawFd; 3] {
        [
            self.fds[0].as_raw_fd(),
            self.fds[1].as_raw_fd(),
            self.fds[2].as_raw_fd(),
        ]
    }
}

/// A command ready to spawn, with what its first process does between fork
/// and exec.
pub struct Launch {
    /// The command; add stdio, then [`Launch::spawn`].
    pub command: Command,
    /// Host files for the child as descriptors 3, 4 and 5.
    passed: Option<PassedFds>,
    /// The uid to become.
    uid: Option<u32>,
}

impl Launch {
    fn new(command: Command, passed: Option<PassedFds>, uid: u32) -> Launch {
        Launch {
            command,
            passed,
            uid: switch_to(uid),
        }
    }

    /// Spawns the Worker's first process, which before it runs anything:
    /// joins the Worker's cgroup (while it still has the rights to), takes
    /// the passed descriptors as 3, 4 and 5 and marks every other one above
    /// them close-on-exec (nothing the Doer or `isms up` inherited reaches a
    /// Worker), then becomes the Workers' uid.
    pub fn spawn(mut self, cgroup: Option<&WorkerGroup>) -> std::io::Result<Child> {
        let join: Vec<CString> = cgroup.map(WorkerGroup::join_files).unwrap_or_default();
        let passed = self.passed.as_ref().map(PassedFds::raw);
        let uid = self.uid;
        // SAFETY: only async-signal-safe calls (open, write, close, dup2,
        // close_range, fcntl, setgroups, setgid, setuid) run between fork
        // and exec, on memory allocated before the fork.
        unsafe {
            self.command.pre_exec(move || {
                for file in &join {
                    join_cgroup(file)?;
                }
                let first_free = match passed {
                    Some(raw) => {
                        for (target, source) in (3..).zip(raw) {
                            check(libc::dup2(source, target))?;
                        }
                        6
                    }
                    None => 3,
                };
                close_on_exec_from(first_free);
                if let Some(uid) = uid {
                    check(libc::setgroups(0, std::ptr::null()))?;
                    check(libc::setgid(uid))?;
                    check(libc::setuid(uid))?;
                }
                Ok(())
            });
        }
        let child = self.command.spawn();
        // The passed descriptors may close now: the child has its copies.
        drop(self.passed);
        child
    }
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling process into a cgroup: `0` written to its `cgroup.procs`.
///
/// # Safety
/// Async-signal-safe; `file` is a valid C string.
unsafe fn join_cgroup(file: &CString) -> std::io::Result<()> {
    // SAFETY: plain system calls on a valid path and buffer.
    unsafe {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec. Marked rather than
/// closed: the standard library reports a failed exec through a descriptor
/// of its own, which must stay open until the exec.
///
/// # Safety
/// Async-signal-safe.
unsafe fn close_on_exec_from(first: libc::c_uint) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range and fcntl on descriptor numbers only.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Kernels before 5.11: one by one, as far as the descriptor limit.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(65_536) as libc::c_int
        } else {
            1024
        };
        for fd in first as libc::c_int..top {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

impl Isolation for Bwrap {
    fn backend(&self) -> Backend {
        Backend::Bwrap
    }

    fn command(&self, files: &WorkerFiles<'_>) -> anyhow::Result<Launch> {
        let mut command = Command::new("bwrap");
        command.args(Bwrap::profile_args(
            u64::from(self.tmp_mb) << 20,
            u64::from(files.memory_mb) << 20,
        ));
        command.arg("--").arg(SANDBOX_EXECUTOR).args([
            "executor",
            "--socket",
            SANDBOX_SOCKET,
            "--doee",
            SANDBOX_DOEE,
        ]);
        command.env_clear();
        Ok(Launch::new(
            command,
            Some(PassedFds::open(files)?),
            self.uid,
        ))
    }

    fn own_pid_namespace(&self) -> bool {
        true
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
        Ok(Launch::new(command, None, self.uid))
    }

    fn own_pid_namespace(&self) -> bool {
        // `--containall` includes `--pid`.
        true
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
        Ok(Launch::new(command, None, self.uid))
    }

    fn own_pid_namespace(&self) -> bool {
        false
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
        let args = Bwrap::profile_args(8 << 20, 64 << 20);
        let joined = args.join(" ");
        assert!(joined.contains("--size 8388608 --tmpfs /tmp"), "{joined}");
        assert!(
            joined.contains("--size 67108864 --tmpfs /dev/shm --remount-ro /dev"),
            "{joined}"
        );
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
