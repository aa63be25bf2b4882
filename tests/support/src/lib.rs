//! Helpers for the end-to-end tests: a real platform (`isms up`) on free
//! loopback ports in a private temporary directory, the real CLI against it,
//! and a plain HTTP client. Everything is stopped and removed on drop.
//!
//! Tests never use the default ports or `./isms-data`.
//!
//! Why one file of this size: the platform a test starts and the calls it
//! makes on it (CLI, API, triggers, deploys), one type; side servers, /proc
//! and the clients have modules of their own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test support may panic.

pub mod http;
pub mod mqtt;
pub mod netns;
pub mod openapi;
mod procs;
pub mod relay;
mod servers;

pub use procs::{descendants, rss_kib};

pub use servers::{MongoWire, Mosquitto, PostgresDatabase};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The fixture Doees under `tests/doees`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("doees")
}

/// A free TCP port on loopback, never handed out twice in this process.
///
/// Chosen below the kernel's ephemeral range: a port from `bind(":0")` is
/// free only until the next `bind(":0")` or outgoing connection takes it,
/// and the platform binds it later, so two servers of parallel tests (or of
/// one platform) once got the same one.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Above the platform's defaults (77xx) and the usual well-known servers.
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut handed_out = HANDED_OUT.lock().unwrap();
    for _ in 0..10_000 {
        let mut nonce = [0u8; 2];
        getrandom::fill(&mut nonce).unwrap();
        let port = low + u16::from_be_bytes(nonce) % (high - low);
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.push(port);
        return port;
    }
    panic!("no free loopback port between {low} and {high}");
}

/// A fresh directory under /tmp, short enough for Unix socket paths.
pub fn temp_dir(label: &str) -> PathBuf {
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).unwrap();
    let dir = PathBuf::from("/tmp").join(format!("isms-{label}-{:08x}", u32::from_be_bytes(nonce)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How to start a platform.
#[derive(Clone)]
pub struct Options {
    exe: PathBuf,
    build_cache: PathBuf,
    env: Vec<(String, String)>,
    private_root: bool,
    user: Option<u32>,
    inherited: Option<PathBuf>,
}

/// The services `isms up` runs, by the names the Services Controller gives.
pub const SERVICES: [&str; 6] = [
    "kernel",
    "resadmin",
    "dbriver",
    "doer",
    "commserver",
    "control-gate",
];

/// The descriptor number an inherited file gets in `isms up` (see
/// [`Options::inherit`]).
pub const INHERITED_FD: i32 = 9;

impl Options {
    /// The `isms` binary to run and a directory where Doee builds may share
    /// their cargo target (kept across tests to make builds fast).
    pub fn new(exe: &str, build_cache: &str) -> Options {
        Options {
            exe: PathBuf::from(exe),
            build_cache: PathBuf::from(build_cache).join("doee-builds"),
            env: Vec::new(),
            private_root: false,
            user: None,
            inherited: None,
        }
    }

    /// Puts the data directory under a directory only its owner may enter
    /// (mode 0700), as `/root` or a `mktemp -d` is.
    pub fn private_root(mut self) -> Options {
        self.private_root = true;
        self
    }

    /// Runs `isms up` as `uid` (the test must run as root), with its test
    /// directory and its own build cache owned by that user.
    pub fn as_user(mut self, uid: u32) -> Options {
        self.user = Some(uid);
        self
    }

    /// Starts `isms up` with `file` open on descriptor [`INHERITED_FD`], not
    /// closed on exec: what a careless parent process would leave it.
    pub fn inherit(mut self, file: &Path) -> Options {
        self.inherited = Some(file.to_path_buf());
        self
    }

    /// Sets an option through its environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts `isms up` and waits until it is healthy.
    pub fn start(self) -> Platform {
        let isolation_chosen = self.env.iter().any(|(k, _)| k == "ISMS_DOER_ISOLATION");
        let has_bwrap = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("bwrap").is_file())
        });
        assert!(
            isolation_chosen || has_bwrap,
            "bubblewrap is not installed, and the tests run Doees in real sandboxes: \
             apt-get install bubblewrap (or run tests/run, which installs what the tests need)"
        );
        let root = temp_dir("e2e");
        if self.private_root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        if let Some(uid) = self.user {
            std::os::unix::fs::chown(&root, Some(uid), Some(uid)).unwrap();
        }
        let data_dir = root.join("data");
        let ports = Ports {
            api: free_port(),
            http: free_port(),
            mqtt: free_port(),
        };
        let output = Arc::new(Mutex::new(String::new()));
        let child = self.spawn(&data_dir, ports, &output);
        let platform = Platform {
            root,
            data_dir,
            api: format!("http://127.0.0.1:{}", ports.api),
            triggers: format!("http://127.0.0.1:{}", ports.http),
            mqtt_port: ports.mqtt,
            ports,
            options: self,
            child,
            output,
            admin_token: std::sync::OnceLock::new(),
        };
        platform.wait_until_up();
        platform
    }

    /// Runs `isms up` on `data_dir`, its output collected into `output`.
    fn spawn(&self, data_dir: &Path, ports: Ports, output: &Arc<Mutex<String>>) -> Child {
        let mut command = Command::new(&self.exe);
        command
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .env("ISMS_CONTROL_GATE_ADDR", format!("127.0.0.1:{}", ports.api))
            .env(
                "ISMS_COMMSERVER_HTTP_ADDR",
                format!("127.0.0.1:{}", ports.http),
            )
            .env(
                "ISMS_COMMSERVER_MQTT_ADDR",
                format!("127.0.0.1:{}", ports.mqtt),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match self.user {
            // Builds of another user cannot share the tests' cache.
            Some(uid) => {
                use std::os::unix::process::CommandExt;
                let root = data_dir.parent().unwrap();
                command.uid(uid).gid(uid).env("HOME", root);
            }
            None => {
                command.env("ISMS_RESADMIN_BUILD_TARGET_DIR", &self.build_cache);
            }
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let inherited = self
            .inherited
            .as_ref()
            .map(|path| std::fs::File::open(path).unwrap());
        if let Some(file) = &inherited {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = file.as_raw_fd();
            // SAFETY: dup2 is async-signal-safe; the copy is not close-on-exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::dup2(fd, INHERITED_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("cannot start isms up");
        drop(inherited);
        collect_output(&mut child, output);
        child
    }
}

/// Appends what `child` prints (its piped stdout and stderr), line by line,
/// to `output`, from threads of their own.
pub fn collect_output(child: &mut Child, output: &Arc<Mutex<String>>) {
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
    }
}

/// The loopback ports of a platform.
#[derive(Clone, Copy)]
struct Ports {
    api: u16,
    http: u16,
    mqtt: u16,
}

/// A running platform.
pub struct Platform {
    /// The test's temporary directory.
    pub root: PathBuf,
    /// The platform's data directory.
    pub data_dir: PathBuf,
    /// The Control Gate, `http://127.0.0.1:<port>`.
    pub api: String,
    /// The HTTP trigger base, `http://127.0.0.1:<port>`.
    pub triggers: String,
    /// The embedded MQTT broker's port on 127.0.0.1 (unused when the test
    /// gives an external broker).
    pub mqtt_port: u16,
    ports: Ports,
    options: Options,
    child: Child,
    output: Arc<Mutex<String>>,
    admin_token: std::sync::OnceLock<String>,
}

impl Platform {
    fn wait_until_up(&self) {
        let started = Instant::now();
        loop {
            // The banner's last line: the lines before it are read by then.
            if self.output().contains("Press Ctrl-C to stop.") {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                panic!("the platform did not start:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A power cut: SIGKILL to `isms up` and every process below it (its
    /// services, Workers, builds) at once, so none shuts down cleanly; then
    /// starts it again on the same data directory and ports and waits until
    /// it is up.
    pub fn crash_and_restart(&mut self) {
        self.crash_and_restart_after(Duration::ZERO);
    }

    /// As [`Platform::crash_and_restart`], with the platform down for
    /// `down` before it starts again.
    pub fn crash_and_restart_after(&mut self, down: Duration) {
        let supervisor = self.child.id();
        let mut all = descendants(supervisor);
        all.push(supervisor);
        for &pid in &all {
            // SAFETY: signalling processes of our own platform.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        for pid in all {
            eventually(Duration::from_secs(20), "every process to die", || {
                procs::gone(pid).then_some(())
            });
        }
        std::thread::sleep(down);
        self.output.lock().unwrap().clear();
        self.child = self.options.spawn(&self.data_dir, self.ports, &self.output);
        self.wait_until_up();
    }

    /// The pid of `isms up`.
    pub fn supervisor_pid(&self) -> u32 {
        self.child.id()
    }

    /// What `isms up` printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The `isms` CLI, pointed at this platform with its own config directory.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(&self.options.exe);
        command
            .env("ISMS_URL", &self.api)
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("XDG_DATA_HOME", self.root.join("share"))
            .env_remove("ISMS_TOKEN")
            .current_dir(&self.root);
        command
    }

    /// Runs the CLI and returns its output, asserting it succeeded.
    pub fn run(&self, args: &[&str]) -> String {
        let output = self.cli().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "isms {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs the CLI, whatever the outcome.
    pub fn try_run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().unwrap()
    }

    /// `isms login` as the initial admin, the way the README shows it.
    pub fn login_admin(&self) {
        let password = std::fs::File::open(self.data_dir.join("initial-admin-password")).unwrap();
        let output = self
            .cli()
            .args(["login", "--username", "admin", "--password-stdin"])
            .stdin(password)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The admin's stored token.
    pub fn token(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("config/isms/credentials.toml")).unwrap();
        let table: toml::Table = text.parse().unwrap();
        table["token"].as_str().unwrap().to_string()
    }

    /// POSTs to an HTTP trigger: `/<project>/<route>`.
    pub fn trigger(&self, path: &str, body: &[u8]) -> http::Response {
        http::request("POST", &format!("{}{path}", self.triggers), &[], body)
    }

    /// A token of the initial admin, from a login through the API (made
    /// once per platform).
    pub fn admin_token(&self) -> String {
        self.admin_token
            .get_or_init(|| {
                let password =
                    std::fs::read_to_string(self.data_dir.join("initial-admin-password")).unwrap();
                self.login("admin", password.trim())
            })
            .clone()
    }

    /// Logs a user in through the API and returns their token.
    pub fn login(&self, username: &str, password: &str) -> String {
        let body = serde_json::json!({ "username": username, "password": password });
        let response = self.call_api(
            "POST",
            "/api/v1/auth/login",
            None,
            body.to_string().as_bytes(),
        );
        assert_eq!(
            response.status,
            200,
            "login of {username}: {}",
            response.text()
        );
        response.json()["token"].as_str().unwrap().to_string()
    }

    /// Calls the REST API at `path`, with a bearer token if given.
    pub fn call_api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> http::Response {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        http::request(method, &format!("{}{path}", self.api), &headers, body)
    }

    /// The Services Controller's view, from the API.
    pub fn services(&self) -> serde_json::Value {
        let token = self.admin_token();
        self.call_api("GET", "/api/v1/system/services", Some(&token), b"")
            .json()
    }

    /// One service instance from the Services Controller's view, or `None`
    /// while the API cannot answer (the view needs Resadmin to check the
    /// token: not while it restarts).
    pub fn try_service(&self, name: &str) -> Option<serde_json::Value> {
        let token = self.admin_token();
        let response = http::try_request(
            "GET",
            &format!("{}/api/v1/system/services", self.api),
            &[("authorization", &format!("Bearer {token}"))],
            b"",
        )
        .ok()?;
        (response.status == 200).then_some(())?;
        response
            .json()
            .as_array()?
            .iter()
            .find(|s| s["service"] == name)
            .cloned()
    }

    /// One service instance from the Services Controller's view.
    pub fn service(&self, name: &str) -> serde_json::Value {
        self.services()
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in the services list"))
    }

    /// Copies the `misbehave` fixture as a Doee called `name` doing `mode`,
    /// deploys it into `project` and waits for its build. `extra_manifest`
    /// is appended to the manifest (a `[resources]` table, say); extra
    /// parameters go in `params` as TOML lines.
    pub fn deploy_misbehave(&self, project: &str, name: &str, mode: &str, extra_manifest: &str) {
        self.deploy_misbehave_with(project, name, mode, "", extra_manifest);
    }

    /// As [`Platform::deploy_misbehave`], with extra `[params]` lines.
    pub fn deploy_misbehave_with(
        &self,
        project: &str,
        name: &str,
        mode: &str,
        params: &str,
        extra_manifest: &str,
    ) {
        let dir = self.root.join(format!("doee-{name}"));
        copy_dir(&fixtures().join("misbehave"), &dir);
        let manifest = format!(
            "name = \"{name}\"\nlanguage = \"rust\"\n\n[params]\nmode = \"{mode}\"\n{params}\n\
             [[triggers.http]]\nroute = \"/{name}\"\nmethods = [\"POST\"]\n{extra_manifest}"
        );
        std::fs::write(dir.join("doee.toml"), manifest).unwrap();
        self.deploy(&dir, project);
    }

    /// `isms deploy <dir> --project <project> --wait`, whatever its outcome.
    /// A relative `dir` is relative to the test's directory.
    pub fn try_deploy(&self, dir: &Path, project: &str) -> Output {
        let dir = self.root.join(dir);
        self.try_run(&[
            "deploy",
            dir.to_str().unwrap(),
            "--project",
            project,
            "--wait",
        ])
    }

    /// As [`Platform::try_deploy`], asserting it fails; what it printed
    /// (stdout, then stderr).
    pub fn deploy_refused(&self, dir: &Path, project: &str) -> String {
        let output = self.try_deploy(dir, project);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "the deploy succeeded: {said}");
        said
    }

    /// As [`Platform::try_deploy`], asserting it succeeds; what it printed.
    pub fn deploy(&self, dir: &Path, project: &str) -> String {
        let output = self.try_deploy(dir, project);
        assert!(
            output.status.success(),
            "deploying {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `isms secret set <project> <name>` with `value` on stdin.
    pub fn set_secret(&self, project: &str, name: &str, value: &str) {
        let mut child = self
            .cli()
            .args(["secret", "set", project, name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            format!("{value}\n").as_bytes(),
        )
        .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The record of invocation `id`, once it is there and no longer
    /// pending (`GET /api/v1/invocations/<id>`).
    pub fn invocation(&self, id: &str) -> serde_json::Value {
        let token = self.admin_token();
        eventually(Duration::from_secs(10), "the invocation's record", || {
            let r = self.call_api(
                "GET",
                &format!("/api/v1/invocations/{id}"),
                Some(&token),
                b"",
            );
            (r.status == 200 && r.json()["status"] != "pending").then(|| r.json())
        })
    }

    /// `isms device create <project> <name>`: the device's MQTT password.
    pub fn create_device(&self, project: &str, name: &str) -> String {
        self.run(&["device", "create", project, name])
            .lines()
            .find_map(|l| l.strip_prefix("MQTT password"))
            .expect("isms device create printed no password")
            .trim()
            .to_string()
    }

    /// Asserts that `path` (an echoing Doee's trigger) still answers.
    pub fn assert_healthy(&self, path: &str) {
        let r = self.trigger(path, b"still here");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "still here"),
            "the platform did not recover"
        );
    }

    /// The pid of a service, from the Services Controller.
    pub fn pid_of(&self, service: &str) -> u32 {
        self.service(service)["pid"].as_u64().unwrap() as u32
    }

    /// Copies the `hostile` fixture (a C Doee) as a Doee called `name`
    /// doing `mode`, deploys it into `project` and waits for its build.
    /// `extra_manifest` is appended to the manifest.
    pub fn deploy_hostile(&self, project: &str, name: &str, mode: &str, extra_manifest: &str) {
        let dir = self.root.join(format!("doee-{name}"));
        copy_dir(&fixtures().join("hostile"), &dir);
        let manifest = format!(
            "name = \"{name}\"\nlanguage = \"c\"\nsources = [\"src/hostile.c\"]\n\n\
             [params]\nmode = \"{mode}\"\n\n\
             [[triggers.http]]\nroute = \"/{name}\"\nmethods = [\"POST\"]\n{extra_manifest}"
        );
        std::fs::write(dir.join("doee.toml"), manifest).unwrap();
        self.deploy(&dir, project);
    }

    /// The Doee Executors of this platform's Workers, and what they forked:
    /// every process below the Doer running `isms executor`.
    pub fn worker_processes(&self) -> Vec<u32> {
        let doer = self.pid_of("doer");
        descendants(doer)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).nth(1) == Some(b"executor"))
            })
            .collect()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "---- isms up printed:\n{}", self.output());
            for service in SERVICES {
                let log = std::fs::read_to_string(
                    self.data_dir.join("logs").join(format!("{service}.log")),
                )
                .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let _ = writeln!(err, "---- {service}.log (last lines):");
                for line in tail.iter().rev() {
                    let _ = writeln!(err, "{line}");
                }
            }
        }
        if std::env::var_os("ISMS_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Copies a directory tree (files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
