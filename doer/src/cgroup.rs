//! cgroups for Workers: one per Worker, under one per project, under the
//! platform's own.
//!
//! A Worker's cgroup bounds the memory of all its processes together —
//! heap, shared memory, the files of its tmpfs mounts — and how many
//! processes it has; a project's cgroup carries the project's CPU weight,
//! so projects that want more CPU than the host has share it by weight,
//! however many Workers each runs. The Executor's rlimits stay as a first,
//! friendlier line (an allocation that fails rather than a kill); they are
//! all there is where no cgroup can be made (no rights, no controller),
//! which the Doer and `isms up` say loudly.
//!
//! Both hierarchies are supported:
//! - **v2**, one tree. Running as root, the platform's group sits at the top
//!   of the tree, as a container engine's would. Otherwise it needs a
//!   delegated group (`systemd-run --user --scope -p Delegate=yes isms up`):
//!   `isms up` moves itself into a `services` leaf of it ([`delegate`]) so
//!   that the group may hand its controllers down, and the Workers' groups
//!   go beside that leaf.
//! - **v1**, one tree per controller: the platform's group goes below the
//!   Doer's own group in each of the `memory`, `pids` and `cpu` trees.
//!
//! Names: `isms-<hash of the Doer's directory>/p-<project>/w-<worker>`.
//! The prefixes keep names apart from the trees' control files (a project
//! may be called `tasks`).
//!
//! Why one file of this size: one hierarchy's rules (v1 and v2, root and
//! delegated) decided in one place; a fifth of it is tests against made-up
//! trees.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Whether Workers get cgroups (`doer.cgroups`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupChoice {
    /// Where they can be made; rlimits only otherwise, with a warning.
    Auto,
    /// Always: the Doer does not start without them.
    On,
    /// Never: rlimits only.
    Off,
}

impl FromStr for CgroupChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CgroupChoice::Auto),
            "on" => Ok(CgroupChoice::On),
            "off" => Ok(CgroupChoice::Off),
            other => Err(format!("unknown choice `{other}`: use auto, on or off")),
        }
    }
}

/// Which kind of hierarchy holds the groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// One tree per controller.
    V1,
    /// The unified tree.
    V2,
}

/// The CPU weight of all Workers together against the processes beside
/// them, the platform's services first: a quarter of one process's. Every
/// invocation passes through the services (CommServer, kernel, Doer), so
/// when the CPU is short they go first, and the Workers share the rest by
/// project. Measured (`isms-bench fairness`, `http-warm`): with the
/// default weight a flood of Workers slowed everyone's path through the
/// services, and throughput dropped by some 8%.
pub const WORKERS_CPU_WEIGHT: u32 = 25;

/// What a Worker's group allows beyond the Doee's `memory_mb`: the Executor
/// and the sandbox themselves (~4 MiB), and room for the Executor's own
/// limit on its heap (`memory_mb`) to fail an allocation, a clear error,
/// before the group's limit kills the Worker.
pub const WORKER_OVERHEAD_MB: u32 = 16;

/// Where cgroups live on this host, for the current process: read from
/// `/proc/self/mountinfo` and `/proc/self/cgroup` (or a test's copies).
#[derive(Clone, Debug)]
pub struct Host {
    mountinfo: String,
    own: String,
    root: bool,
}

impl Host {
    /// This process's view.
    pub fn current() -> io::Result<Host> {
        Ok(Host {
            mountinfo: fs::read_to_string("/proc/self/mountinfo")?,
            own: fs::read_to_string("/proc/self/cgroup")?,
            // SAFETY: geteuid cannot fail.
            root: unsafe { libc::geteuid() } == 0,
        })
    }

    /// A made-up view, for tests.
    pub fn new(mountinfo: &str, own: &str, root: bool) -> Host {
        Host {
            mountinfo: mountinfo.into(),
            own: own.into(),
            root,
        }
    }

    /// The v2 tree's mount point, and the process's group in it.
    fn v2(&self) -> Option<(PathBuf, String)> {
        let mount = self.mounts().find(|m| m.fstype == "cgroup2")?;
        let own = self.own.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some((mount.point.clone(), mount.relative(own)?))
    }

    /// The v1 tree holding `controller`: its mount point, and the
    /// process's group in it.
    fn v1(&self, controller: &str) -> Option<(PathBuf, String)> {
        let mount = self
            .mounts()
            .find(|m| m.fstype == "cgroup" && m.options.split(',').any(|o| o == controller))?;
        let own = self.own.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then_some(path)
        })?;
        Some((mount.point.clone(), mount.relative(own)?))
    }

    fn mounts(&self) -> impl Iterator<Item = Mount> + '_ {
        self.mountinfo.lines().filter_map(Mount::parse)
    }
}

/// One line of `/proc/self/mountinfo`, the parts that matter here.
struct Mount {
    /// The directory of the tree that is mounted.
    root: String,
    point: PathBuf,
    fstype: String,
    options: String,
}

impl Mount {
    fn parse(line: &str) -> Option<Mount> {
        let (before, after) = line.split_once(" - ")?;
        let mut before = before.split(' ');
        let root = before.nth(3)?.to_string();
        let point = PathBuf::from(unescape(before.next()?));
        let mut after = after.split(' ');
        let fstype = after.next()?.to_string();
        let options = after.nth(1)?.to_string();
        Some(Mount {
            root,
            point,
            fstype,
            options,
        })
    }

    /// `group` (a path in the tree) relative to what is mounted.
    fn relative(&self, group: &str) -> Option<String> {
        let group = group.trim();
        if self.root == "/" {
            return Some(group.trim_start_matches('/').to_string());
        }
        let rest = group.strip_prefix(self.root.as_str())?;
        Some(rest.trim_start_matches('/').to_string())
    }
}

/// mountinfo writes spaces and the like as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&code, 8) {
                out.push(char::from(byte));
                continue;
            }
            out.push(c);
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// The platform's groups: where each controller's part of the tree starts.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    memory: PathBuf,
    pids: PathBuf,
    /// `None` where the host has no `cpu` controller for us: no weights.
    cpu: Option<PathBuf>,
}

impl Cgroups {
    /// Makes (or takes over) the platform's groups named `name`, removing
    /// what an earlier Doer of the same name left. `Err` says why there
    /// can be none, for people.
    pub fn open(host: &Host, name: &str) -> Result<Cgroups, String> {
        let cgroups = Cgroups::probe(host, name)?;
        if cgroups.version == Version::V2 {
            let controllers = if cgroups.cpu.is_some() {
                "+memory +pids +cpu"
            } else {
                "+memory +pids"
            };
            write(&cgroups.memory.join("cgroup.subtree_control"), controllers)
                .map_err(|e| format!("cannot enable {controllers} for Workers: {e}"))?;
        }
        if let Some(cpu) = &cgroups.cpu {
            set_weight(cpu, cgroups.version, WORKERS_CPU_WEIGHT)
                .map_err(|e| format!("cannot set the Workers' CPU weight: {e}"))?;
        }
        cgroups.clear();
        Ok(cgroups)
    }

    /// Finds the platform's groups named `name`, making them if need be,
    /// but leaves their contents alone (a running Doer's Workers).
    pub fn probe(host: &Host, name: &str) -> Result<Cgroups, String> {
        let cgroups = Cgroups::locate(host, name)?;
        for dir in cgroups.dirs() {
            fs::create_dir_all(dir).map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => format!(
                    "no right to create {} ({e}): run ISMS as root, or give it a delegated \
                     cgroup v2",
                    dir.display()
                ),
                _ => format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        Ok(cgroups)
    }

    /// Where the groups would go, without touching anything.
    fn locate(host: &Host, name: &str) -> Result<Cgroups, String> {
        if let Some((mount, own)) = host.v2() {
            let available =
                fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| available.split_whitespace().any(|a| a == c);
            if has("memory") && has("pids") {
                let parent = if host.root {
                    mount.clone()
                } else {
                    match own.rsplit_once('/') {
                        Some((parent, DELEGATED_LEAF)) => mount.join(parent),
                        _ if own == DELEGATED_LEAF => mount.clone(),
                        _ => {
                            return Err(format!(
                                "not running as root, and the process's cgroup /{own} is not a \
                                 delegated one (start ISMS with `systemd-run --user --scope -p \
                                 Delegate=yes isms up`)"
                            ));
                        }
                    }
                };
                let base = parent.join(name);
                return Ok(Cgroups {
                    version: Version::V2,
                    memory: base.clone(),
                    pids: base.clone(),
                    cpu: has("cpu").then_some(base),
                });
            }
        }
        let tree = |controller: &str| {
            host.v1(controller)
                .map(|(mount, own)| mount.join(own).join(name))
        };
        match (tree("memory"), tree("pids")) {
            (Some(memory), Some(pids)) => Ok(Cgroups {
                version: Version::V1,
                memory,
                pids,
                cpu: tree("cpu"),
            }),
            _ => Err(
                "the host offers no memory and pids cgroup controllers (neither v2 nor v1)".into(),
            ),
        }
    }

    /// For the banner and the log: which hierarchy and what it bounds.
    pub fn describe(&self) -> String {
        let version = match self.version {
            Version::V1 => "cgroup v1",
            Version::V2 => "cgroup v2",
        };
        let cpu = if self.cpu.is_some() {
            "a CPU weight per project"
        } else {
            "no CPU weights (no cpu controller)"
        };
        format!("{version}: memory and processes per Worker, {cpu}")
    }

    /// The distinct platform groups (one on v2, up to three on v1).
    fn dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = vec![&self.memory, &self.pids];
        dirs.extend(self.cpu.as_deref());
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Removes every project's and Worker's group, killing what is left in
    /// them: Workers of a Doer that died, or of this one as it stops.
    pub fn clear(&self) {
        for dir in self.dirs() {
            for project in children(dir) {
                for worker in children(&project) {
                    remove(&worker);
                }
                remove(&project);
            }
        }
    }

    /// Removes the platform's groups too, as the Doer stops.
    pub fn close(&self) {
        self.clear();
        for dir in self.dirs() {
            let _ = fs::remove_dir(dir);
        }
    }

    fn project_dir(base: &Path, project: &str) -> PathBuf {
        base.join(format!("p-{project}"))
    }

    /// Sets a project's CPU weight (1 to 10,000; 100 is everyone's default).
    pub fn set_cpu_weight(&self, project: &str, weight: u32) -> io::Result<()> {
        let Some(cpu) = &self.cpu else {
            return Ok(());
        };
        let dir = Cgroups::project_dir(cpu, project);
        make_project(&dir, self.version)?;
        set_weight(&dir, self.version, weight)
    }

    /// Makes the group of a new Worker of `project`, with its limits.
    pub fn worker(&self, project: &str, id: u64, limits: WorkerLimits) -> io::Result<WorkerGroup> {
        let mut dirs = Vec::new();
        let mut join = Vec::new();
        for base in self.dirs() {
            let project_dir = Cgroups::project_dir(base, project);
            make_project(&project_dir, self.version)?;
            // The CPU is shared by project: in v1's own cpu tree a Worker
            // joins its project's group, a level less for the scheduler to
            // walk at every switch (on v2 the Worker's group has no cpu
            // controller, to the same effect).
            if Some(base) == self.cpu.as_deref() && base != self.memory && base != self.pids {
                join.push(project_dir);
                continue;
            }
            let dir = project_dir.join(format!("w-{id}"));
            match fs::create_dir(&dir) {
                Ok(()) => {}
                // Left by a Worker whose group could not be removed: reuse it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            dirs.push(dir.clone());
            join.push(dir);
        }
        let group = WorkerGroup {
            version: self.version,
            memory: Cgroups::project_dir(&self.memory, project).join(format!("w-{id}")),
            pids: Cgroups::project_dir(&self.pids, project).join(format!("w-{id}")),
            dirs,
            join,
        };
        if let Err(err) = group.limit(limits) {
            group.remove();
            return Err(err);
        }
        Ok(group)
    }
}

/// The name a Leaf of a delegated v2 group has: see [`delegate`].
const DELEGATED_LEAF: &str = "services";

/// On a delegated cgroup v2 group (not running as root), moves this process
/// into a `services` leaf of it, so that the group may hand controllers down
/// to the Workers' groups beside it; `isms up` calls this before it starts
/// any service, which then inherit the leaf. Does nothing elsewhere.
pub fn delegate(host: &Host) {
    if host.root {
        return;
    }
    let Some((mount, own)) = host.v2() else {
        return;
    };
    let group = mount.join(&own);
    let leaf = group.join(DELEGATED_LEAF);
    let procs = fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
    // Only a group of our own: one where this process is alone.
    if own.is_empty() || procs.lines().count() != 1 || fs::create_dir_all(&leaf).is_err() {
        return;
    }
    let _ = write(&leaf.join("cgroup.procs"), "0");
}

/// Limits of one Worker's group.
#[derive(Clone, Copy, Debug)]
pub struct WorkerLimits {
    /// All its processes' memory together, bytes.
    pub memory_bytes: u64,
    /// Its processes (and threads).
    pub max_processes: u32,
}

/// One Worker's group (one directory per tree).
#[derive(Debug)]
pub struct WorkerGroup {
    version: Version,
    memory: PathBuf,
    pids: PathBuf,
    /// The Worker's own groups, removed with it.
    dirs: Vec<PathBuf>,
    /// The groups its processes join.
    join: Vec<PathBuf>,
}

impl WorkerGroup {
    fn limit(&self, limits: WorkerLimits) -> io::Result<()> {
        let bytes = limits.memory_bytes.to_string();
        match self.version {
            Version::V2 => {
                write(&self.memory.join("memory.max"), &bytes)?;
                // No swap: the limit is the memory it holds, and an OOM
                // kills the whole Worker, not one process of it.
                let _ = write(&self.memory.join("memory.swap.max"), "0");
                let _ = write(&self.memory.join("memory.oom.group"), "1");
            }
            Version::V1 => {
                write(&self.memory.join("memory.limit_in_bytes"), &bytes)?;
                // Present only with swap accounting; memory + swap, so no swap.
                let _ = write(&self.memory.join("memory.memsw.limit_in_bytes"), &bytes);
            }
        }
        write(
            &self.pids.join("pids.max"),
            &limits.max_processes.to_string(),
        )
    }

    /// The `cgroup.procs` files a new process writes `0` to, to join.
    pub fn join_files(&self) -> Vec<CString> {
        self.join
            .iter()
            .filter_map(|dir| {
                CString::new(
                    dir.join("cgroup.procs")
                        .into_os_string()
                        .into_encoded_bytes(),
                )
                .ok()
            })
            .collect()
    }

    /// Whether the kernel killed a process of the group for memory.
    pub fn out_of_memory(&self) -> bool {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
            })
            .is_some_and(|kills| kills > 0)
    }

    /// Kills what is left in the group and removes it.
    pub fn remove(&self) {
        for dir in &self.dirs {
            remove(dir);
        }
    }
}

/// Sets a group's CPU weight, in v2's terms (1 to 10,000, 100 by default).
fn set_weight(dir: &Path, version: Version, weight: u32) -> io::Result<()> {
    let weight = weight.clamp(1, 10_000);
    match version {
        Version::V2 => write(&dir.join("cpu.weight"), &weight.to_string()),
        // v1's shares: 1024 is the default, as 100 is v2's.
        Version::V1 => write(
            &dir.join("cpu.shares"),
            &(u64::from(weight) * 1024 / 100).max(2).to_string(),
        ),
    }
}

fn make_project(dir: &Path, version: Version) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) if version == Version::V2 => {
            write(&dir.join("cgroup.subtree_control"), "+memory +pids")
        }
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn children(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process in a leaf group, then removes it. A group can only
/// be removed once empty, and a process being killed leaves it a moment
/// later, so this waits a little (bounded).
fn remove(dir: &Path) {
    for _ in 0..200 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: signalling a process of a Worker's group.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    tracing::warn!(group = %dir.display(), "cannot remove a Worker's cgroup");
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_OWN: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    /// A directory standing in for the cgroup trees, and `mounts` pointing there.
    fn tree(label: &str, mounts: &str) -> (PathBuf, String) {
        let root = std::env::temp_dir().join(format!("isms-cgroup-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for dir in [
            "cpu",
            "memory/process_api/abc",
            "pids",
            "unified",
            "v2/user/services",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        (
            root.clone(),
            mounts.replace("{root}", &root.display().to_string()),
        )
    }

    #[test]
    fn v1_groups_go_below_the_processs_own_group_in_each_tree() {
        let (root, mounts) = tree("v1", V1_MOUNTS);
        let host = Host::new(&mounts, V1_OWN, true);
        let cgroups = Cgroups::locate(&host, "isms-x").unwrap();
        assert_eq!(cgroups.version, Version::V1);
        assert_eq!(cgroups.memory, root.join("memory/process_api/abc/isms-x"));
        assert_eq!(cgroups.pids, root.join("pids/isms-x"));
        assert_eq!(cgroups.cpu, Some(root.join("cpu/isms-x")));
        assert!(cgroups.describe().starts_with("cgroup v1"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_empty_v2_tree_falls_back_to_v1_and_none_at_all_says_why() {
        let (root, mounts) = tree("fallback", V1_MOUNTS);
        fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
        let host = Host::new(&mounts, V1_OWN, true);
        assert_eq!(Cgroups::locate(&host, "i").unwrap().version, Version::V1);
        let no_pids: String = mounts
            .lines()
            .filter(|l| !l.contains("pids"))
            .collect::<Vec<_>>()
            .join("\n");
        let why = Cgroups::locate(&Host::new(&no_pids, V1_OWN, true), "i").unwrap_err();
        assert!(why.contains("no memory and pids"), "{why}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v2_groups_go_at_the_top_for_root_and_beside_the_leaf_when_delegated() {
        let (root, _) = tree("v2", "");
        let mounts = format!(
            "41 31 0:38 / {}/v2 rw - cgroup2 cgroup2 rw\n",
            root.display()
        );
        fs::write(
            root.join("v2/cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        let as_root =
            Cgroups::locate(&Host::new(&mounts, "0::/user/services\n", true), "i").unwrap();
        assert_eq!(as_root.version, Version::V2);
        assert_eq!(as_root.memory, root.join("v2/i"));
        assert_eq!(as_root.cpu, Some(root.join("v2/i")));
        let delegated =
            Cgroups::locate(&Host::new(&mounts, "0::/user/services\n", false), "i").unwrap();
        assert_eq!(delegated.memory, root.join("v2/user/i"));
        let why = Cgroups::locate(
            &Host::new(&mounts, "0::/user/session-1.scope\n", false),
            "i",
        )
        .unwrap_err();
        assert!(why.contains("Delegate=yes"), "{why}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_worker_group_gets_its_limits_in_each_tree() {
        let (root, mounts) = tree("worker", V1_MOUNTS);
        let cgroups = Cgroups::locate(&Host::new(&mounts, V1_OWN, true), "isms-x").unwrap();
        for dir in cgroups.dirs() {
            fs::create_dir_all(dir).unwrap();
        }
        // A plain directory stands in for cgroupfs: the control files a
        // kernel would make must exist to be written.
        for (tree, file) in [
            ("memory/process_api/abc", "memory.limit_in_bytes"),
            ("pids", "pids.max"),
            ("cpu", "cpu.shares"),
        ] {
            let dir = root.join(tree).join("isms-x/p-tasks");
            fs::create_dir_all(dir.join("w-7")).unwrap();
            fs::write(dir.join("w-7").join(file), "").unwrap();
            fs::write(dir.join(file), "").unwrap();
        }
        let limits = WorkerLimits {
            memory_bytes: 64 << 20,
            max_processes: 36,
        };
        let group = cgroups.worker("tasks", 7, limits).unwrap();
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(
            read("memory/process_api/abc/isms-x/p-tasks/w-7/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read("pids/isms-x/p-tasks/w-7/pids.max"), "36");
        assert_eq!(group.join_files().len(), 3);
        assert!(
            group.join_files()[0]
                .to_str()
                .unwrap()
                .ends_with("cpu/isms-x/p-tasks/cgroup.procs"),
            "a Worker joins its project's group in the cpu tree: {:?}",
            group.join_files()
        );
        cgroups.set_cpu_weight("tasks", 200).unwrap();
        assert_eq!(read("cpu/isms-x/p-tasks/cpu.shares"), "2048");
        assert!(!group.out_of_memory());
        fs::write(
            root.join("memory/process_api/abc/isms-x/p-tasks/w-7/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert!(group.out_of_memory());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        let mount = Mount::parse(
            "35 31 0:32 /sub /sys/fs/cgroup/my\\040mem rw,relatime shared:1 - cgroup cgroup rw,memory",
        )
        .unwrap();
        assert_eq!(mount.point, PathBuf::from("/sys/fs/cgroup/my mem"));
        assert_eq!(mount.fstype, "cgroup");
        assert_eq!(mount.options, "rw,memory");
        assert_eq!(mount.relative("/sub/a/b").as_deref(), Some("a/b"));
        assert_eq!(mount.relative("/other"), None);
        assert_eq!("on".parse(), Ok(CgroupChoice::On));
        assert!("maybe".parse::<CgroupChoice>().is_err());
    }
}
