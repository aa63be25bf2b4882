//! The sandbox every build runs in.
//!
//! A build runs user code: a Rust Doee's `build.rs` and proc macros, and
//! whatever a compiler does with the flags and files it is handed. So the
//! build runs inside bubblewrap, as the Workers do: in its own pid, ipc,
//! uts and (unless the operator allows it) network namespaces, seeing a
//! read-only `/usr` and toolchain, its own source directory and build
//! directory writable, a private `/tmp`, and nothing else of the host or
//! of the data directory. Its address space is bounded by `RLIMIT_AS`, and
//! past the build's timeout its whole process tree is killed: bubblewrap's
//! pid namespace dies with its first process.
//!
//! When the platform runs as root, the build runs as an unprivileged uid
//! (by default the Workers' 65534), so `RLIMIT_NPROC` binds it and the files
//! it can reach are only those it was given. Bubblewrap cannot bind a path
//! that the uid it runs as cannot reach (a rustup toolchain under `/root`,
//! say), so it runs as root without a user namespace, builds the mounts,
//! drops every capability but the three `setpriv` needs, and `setpriv`
//! switches to the build's uid, with no capabilities left and
//! `no_new_privs` set, before the first line of the build runs. Not running
//! as root, bubblewrap runs in a user namespace as the platform's own user.
//!
//! Without bubblewrap (`resadmin.build_isolation = "auto"` on a host that
//! lacks it, or `"none"`), builds run unsandboxed with the same limits, and
//! every build log says so loudly.
//!
//! Why one file of this size: one sandbox, its bubblewrap arguments and its
//! process-tree kill; a fifth of it is tests.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio::process::Command;

/// How builds are isolated (`resadmin.build_isolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildIsolation {
    /// Bubblewrap if installed, else unsandboxed with a warning in each log.
    Auto,
    /// Bubblewrap; builds fail if it is missing.
    Bwrap,
    /// No sandbox: for hosts where bubblewrap cannot run.
    None,
}

impl FromStr for BuildIsolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BuildIsolation::Auto),
            "bwrap" => Ok(BuildIsolation::Bwrap),
            "none" => Ok(BuildIsolation::None),
            other => Err(format!(
                "unknown build isolation `{other}`: use auto, bwrap or none"
            )),
        }
    }
}

/// The operator's choices for the build sandbox.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Bubblewrap or not.
    pub isolation: BuildIsolation,
    /// Whether builds may reach the network.
    pub network: bool,
    /// The address space of each build process, MiB.
    pub memory_mb: u32,
    /// The uid builds run as when the platform runs as root.
    pub uid: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            isolation: BuildIsolation::Auto,
            network: false,
            memory_mb: 2048,
            uid: 65534,
        }
    }
}

/// Processes and threads a build may have when it runs under its own uid.
/// They are counted with everything else that uid runs (the Workers, by
/// default), so the bound is generous: it stops a fork bomb, not rustc.
const MAX_PROCESSES: u64 = 1024;

/// Where the build's own files appear inside the sandbox.
pub const INSIDE_ROOT: &str = "/isms";

/// How a build is confined.
#[derive(Clone, Debug)]
enum Mode {
    /// Bubblewrap started as root; `setpriv` drops to `uid` inside.
    RootDropsTo { uid: u32, setpriv: PathBuf },
    /// Bubblewrap in a user namespace, as the platform's own user.
    UserNamespace,
    /// No sandbox, and why.
    Unsandboxed { why: String },
}

#[derive(Clone, Debug)]
struct Bind {
    host: PathBuf,
    inside: PathBuf,
    writable: bool,
}

/// One build's sandbox: what it may see, and how its commands are started.
#[derive(Clone, Debug)]
pub struct Sandbox {
    mode: Mode,
    binds: Vec<Bind>,
    network: bool,
    memory_bytes: u64,
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

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

impl Sandbox {
    /// The sandbox this configuration gives on this host; an error when
    /// bubblewrap is required but missing.
    pub fn new(config: &SandboxConfig) -> Result<Sandbox, String> {
        let bwrap = which("bwrap").is_some();
        let mode = match (config.isolation, bwrap) {
            (BuildIsolation::None, _) => Mode::Unsandboxed {
                why: "resadmin.build_isolation is \"none\"".into(),
            },
            (BuildIsolation::Auto, false) => Mode::Unsandboxed {
                why: "bubblewrap (bwrap) is not installed: apt-get install bubblewrap".into(),
            },
            (BuildIsolation::Bwrap, false) => {
                return Err(
                    "resadmin.build_isolation is \"bwrap\", but bubblewrap (bwrap) is not \
                     installed: apt-get install bubblewrap"
                        .into(),
                );
            }
            (_, true) => {
                let own = current_uid();
                if own == 0 && config.uid != 0 {
                    let setpriv = which("setpriv").ok_or(
                        "setpriv (util-linux) is not installed, and builds must drop root with it",
                    )?;
                    Mode::RootDropsTo {
                        uid: config.uid,
                        setpriv,
                    }
                } else {
                    Mode::UserNamespace
                }
            }
        };
        Ok(Sandbox {
            mode,
            binds: Vec::new(),
            network: config.network,
            memory_bytes: u64::from(config.memory_mb.max(64)) << 20,
        })
    }

    /// The same sandbox with network: the fetch phase, which runs none of
    /// the upload's code.
    pub fn with_network(mut self) -> Sandbox {
        self.network = true;
        self
    }

    /// Whether builds are confined at all.
    pub fn is_sandboxed(&self) -> bool {
        !matches!(self.mode, Mode::Unsandboxed { .. })
    }

    /// One line for the build log: what confines this build, or a warning
    /// that nothing does.
    pub fn describe(&self) -> String {
        let network = if self.network {
            "network allowed"
        } else {
            "no network"
        };
        let memory = self.memory_bytes >> 20;
        match &self.mode {
            Mode::RootDropsTo { uid, .. } => format!(
                "sandbox: bubblewrap, uid {uid}, {network}, {memory} MiB of address space per process"
            ),
            Mode::UserNamespace => format!(
                "sandbox: bubblewrap, uid {}, {network}, {memory} MiB of address space per process",
                current_uid()
            ),
            Mode::Unsandboxed { why } => format!(
                "WARNING: THIS BUILD IS NOT SANDBOXED ({why}). Its build scripts and compilers \
                 run with the platform's own rights and can read and change the platform's \
                 files; only the time and memory limits hold."
            ),
        }
    }

    /// Makes `host` visible to the build at `/isms/<inside>` (writable or
    /// not) and returns the path the build's commands must use for it.
    pub fn bind(&mut self, host: &Path, inside: &str, writable: bool) -> PathBuf {
        if !self.is_sandboxed() {
            return host.to_path_buf();
        }
        let inside = Path::new(INSIDE_ROOT).join(inside.trim_start_matches('/'));
        self.binds.push(Bind {
            host: host.to_path_buf(),
            inside: inside.clone(),
            writable,
        });
        inside
    }

    /// The host path of a path the build reported, if the build can see it.
    pub fn host_path(&self, seen: &Path) -> Option<PathBuf> {
        if !self.is_sandboxed() {
            return Some(seen.to_path_buf());
        }
        self.binds
            .iter()
            .filter_map(|bind| {
                let rest = seen.strip_prefix(&bind.inside).ok()?;
                Some((bind.inside.as_os_str().len(), bind.host.join(rest)))
            })
            .max_by_key(|(depth, _)| *depth)
            .map(|(_, path)| path)
    }

    /// Gives the build's uid the writable directories (recursively, when
    /// their top is not already its own).
    pub fn prepare(&self) -> io::Result<()> {
        let Mode::RootDropsTo { uid, .. } = self.mode else {
            return Ok(());
        };
        for bind in self.binds.iter().filter(|b| b.writable) {
            std::fs::create_dir_all(&bind.host)?;
            if std::fs::metadata(&bind.host)?.uid() != uid {
                chown_tree(&bind.host, uid)?;
            }
        }
        Ok(())
    }

    /// The command running `program` with `args` in the sandbox, in `cwd`
    /// (a path the build sees), with only `env` and a minimal environment.
    /// `path` is prepended to a `PATH` of the system's directories.
    pub fn command(
        &self,
        program: &Path,
        args: &[OsString],
        env: &[(&str, OsString)],
        path: &[PathBuf],
        cwd: &Path,
    ) -> Command {
        let system_path = match self.mode {
            Mode::Unsandboxed { .. } => std::env::var_os("PATH")
                .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin")),
            _ => OsString::from("/usr/local/bin:/usr/bin:/bin"),
        };
        let full_path = std::env::join_paths(
            path.iter()
                .cloned()
                .chain(std::env::split_paths(&system_path)),
        )
        .unwrap_or(system_path);
        let mut env: Vec<(&str, OsString)> = env.to_vec();
        env.push(("PATH", full_path));
        env.push(("LANG", "C.UTF-8".into()));
        let mut command = match &self.mode {
            Mode::Unsandboxed { .. } => {
                let mut command = Command::new(program);
                command.args(args).current_dir(cwd).env_clear();
                if let Some(home) = std::env::var_os("HOME") {
                    command.env("HOME", home);
                }
                command.envs(env);
                command
            }
            mode => {
                let mut command = Command::new("bwrap");
                command.args(self.bwrap_args(mode, &env, cwd));
                if let Mode::RootDropsTo { uid, setpriv } = mode {
                    command.arg(setpriv).args([
                        format!("--reuid={uid}"),
                        format!("--regid={uid}"),
                        "--clear-groups".into(),
                        "--no-new-privs".into(),
                        "--bounding-set=-all".into(),
                        "--inh-caps=-all".into(),
                        "--".into(),
                    ]);
                }
                command.arg(program).args(args);
                // bwrap itself needs nothing from the platform's environment.
                command.env_clear();
                command
            }
        };
        let memory = self.memory_bytes;
        let processes = matches!(self.mode, Mode::RootDropsTo { .. }).then_some(MAX_PROCESSES);
        // SAFETY: only async-signal-safe calls (setrlimit) run between fork
        // and exec.
        unsafe {
            command.pre_exec(move || limit(memory, processes));
        }
        // Its own process group, so a timeout can kill an unsandboxed
        // build's whole tree; a sandboxed one dies with its pid namespace.
        command.process_group(0);
        command
    }

    fn bwrap_args(&self, mode: &Mode, env: &[(&str, OsString)], cwd: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&[
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        if !self.network {
            push(&["--unshare-net"]);
        }
        match mode {
            Mode::RootDropsTo { .. } => push(&[
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_SETPCAP",
            ]),
            _ => push(&["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]),
        }
        push(&[
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "isms-build",
            "--clearenv",
        ]);
        for (key, value) in env {
            args.extend([
                OsString::from("--setenv"),
                OsString::from(key),
                value.clone(),
            ]);
        }
        for (key, value) in [("HOME", "/tmp"), ("TMPDIR", "/tmp")] {
            args.extend(["--setenv", key, value].map(OsString::from));
        }
        let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
        push(&["--ro-bind", "/usr", "/usr"]);
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            let Ok(meta) = std::fs::symlink_metadata(dir) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(dir) {
                    args.extend([
                        OsString::from("--symlink"),
                        target.into_os_string(),
                        OsString::from(dir),
                    ]);
                }
            } else if meta.is_dir() {
                args.extend(["--ro-bind", dir, dir].map(OsString::from));
            }
        }
        // Debian's `cc` and `c++` are links through /etc/alternatives.
        let mut etc = vec!["/etc/alternatives"];
        if self.network {
            etc.extend([
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/nsswitch.conf",
                "/etc/ssl",
                "/etc/ca-certificates",
            ]);
        }
        let mut made = Vec::new();
        for path in etc {
            args.extend(dirs_for(Path::new(path), &mut made));
            args.extend(["--ro-bind-try", path, path].map(OsString::from));
        }
        let tmp_size = self.memory_bytes.to_string();
        args.extend(
            [
                "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", &tmp_size,
                "--tmpfs", "/tmp",
            ]
            .map(OsString::from),
        );
        for bind in &self.binds {
            args.extend(dirs_for(&bind.inside, &mut made));
            let option = if bind.writable { "--bind" } else { "--ro-bind" };
            args.extend([
                OsString::from(option),
                bind.host.clone().into_os_string(),
                bind.inside.clone().into_os_string(),
            ]);
        }
        args.extend([
            OsString::from("--chdir"),
            cwd.as_os_str().to_owned(),
            OsString::from("--remount-ro"),
            OsString::from("/"),
            OsString::from("--"),
        ]);
        args
    }
}

/// `--dir` options creating the missing ancestors of `path` as 0755:
/// bubblewrap would make them 0700, closed to an unprivileged build.
fn dirs_for(path: &Path, made: &mut Vec<PathBuf>) -> Vec<OsString> {
    let mut args = Vec::new();
    let mut ancestors: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .collect();
    ancestors.reverse();
    for dir in ancestors {
        if made.iter().any(|m| m == dir) {
            continue;
        }
        made.push(dir.to_path_buf());
        args.extend([
            OsString::from("--perms"),
            OsString::from("0755"),
            OsString::from("--dir"),
            dir.as_os_str().to_owned(),
        ]);
    }
    args
}

/// Sets the build's limits on itself, between fork and exec.
fn limit(memory: u64, processes: Option<u64>) -> io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_AS, memory)?;
    set(libc::RLIMIT_CORE, 0)?;
    if let Some(processes) = processes {
        set(libc::RLIMIT_NPROC, processes)?;
    }
    Ok(())
}

/// `chown -R uid:uid`, without following links. Directories become
/// searchable by all too: bubblewrap, running as root but without
/// `CAP_DAC_OVERRIDE`, must enter them (the platform's umask makes them 0700).
fn chown_tree(path: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandboxed() -> Sandbox {
        Sandbox {
            mode: Mode::UserNamespace,
            binds: Vec::new(),
            network: false,
            memory_bytes: 1 << 30,
        }
    }

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(BuildIsolation::Auto));
        assert_eq!("none".parse(), Ok(BuildIsolation::None));
        assert!("docker".parse::<BuildIsolation>().is_err());
    }

    #[test]
    fn paths_map_between_the_host_and_the_sandbox() {
        let mut sandbox = sandboxed();
        let target = sandbox.bind(Path::new("/data/target/demo"), "target", true);
        let src = sandbox.bind(
            Path::new("/data/sources/demo/hello/3"),
            "src/demo/hello/3",
            true,
        );
        assert_eq!(target, Path::new("/isms/target"));
        assert_eq!(src, Path::new("/isms/src/demo/hello/3"));
        assert_eq!(
            sandbox.host_path(Path::new("/isms/target/release/libhello.so")),
            Some(PathBuf::from("/data/target/demo/release/libhello.so"))
        );
        assert_eq!(sandbox.host_path(Path::new("/etc/passwd")), None);

        let mut open = Sandbox {
            mode: Mode::Unsandboxed { why: "test".into() },
            ..sandboxed()
        };
        let host = Path::new("/data/target/demo");
        assert_eq!(open.bind(host, "target", true), host);
        assert!(open.describe().starts_with("WARNING"));
    }

    #[test]
    fn the_build_sees_only_what_it_was_given() {
        let mut sandbox = sandboxed();
        sandbox.bind(Path::new("/data/sources/p/d/1"), "src/p/d/1", true);
        sandbox.bind(Path::new("/data/sdk"), "sdk", false);
        let args = sandbox.bwrap_args(&Mode::UserNamespace, &[], Path::new("/isms/src/p/d/1"));
        let joined = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("--unshare-net"), "{joined}");
        assert!(
            joined.contains("--bind /data/sources/p/d/1 /isms/src/p/d/1"),
            "{joined}"
        );
        assert!(joined.contains("--ro-bind /data/sdk /isms/sdk"), "{joined}");
        assert!(
            joined.contains("--perms 0755 --dir /isms/src/p/d --"),
            "{joined}"
        );
        assert!(joined.ends_with("--remount-ro / --"), "{joined}");
        assert!(!joined.contains("/data/resadmin"), "{joined}");

        sandbox.network = true;
        let args = sandbox.bwrap_args(&Mode::UserNamespace, &[], Path::new("/"));
        assert!(!args.iter().any(|a| a == "--unshare-net"));
    }

    /// Both ways of running bubblewrap, for real: the command sees its
    /// writable directory and not the host, and runs as the expected uid.
    #[tokio::test]
    async fn a_command_runs_walled_in() {
        if which("bwrap").is_none() {
            eprintln!("skipped: bubblewrap is not installed");
            return;
        }
        let mut modes = vec![(Mode::UserNamespace, current_uid())];
        if current_uid() == 0 {
            let setpriv = which("setpriv").expect("setpriv");
            modes.push((
                Mode::RootDropsTo {
                    uid: 65534,
                    setpriv,
                },
                65534,
            ));
        }
        for (mode, uid) in modes {
            let dir = std::env::temp_dir()
                .join(format!("isms-sandbox-test-{}-{uid}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut sandbox = Sandbox {
                mode,
                ..sandboxed()
            };
            let work = sandbox.bind(&dir, "work", true);
            sandbox.prepare().unwrap();
            let script = "id -u > uid; for f in /etc/passwd /root /home; do \
                          test -e $f && echo $f >> leaked; done; touch /usr/x 2>/dev/null \
                          && echo /usr >> leaked; echo done > done";
            let args = ["-c", script].map(OsString::from);
            let status = sandbox
                .command(Path::new("/bin/sh"), &args, &[], &[], &work)
                .status()
                .await
                .unwrap();
            assert!(status.success());
            let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert_eq!(read("done"), "done\n");
            assert_eq!(read("uid").trim(), uid.to_string());
            assert_eq!(read("leaked"), "");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
