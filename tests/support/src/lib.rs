//! Helpers for the end-to-end tests: a real platform (`isms up`) on free
//! loopback ports in a private temporary directory, the real CLI against it,
//! and a plain HTTP client. Everything is stopped and removed on drop.
//!
//! Tests never use the default ports or `./isms-data`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test support may panic.

pub mod http;
pub mod mqtt;

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

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        child
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
                // SAFETY: signal 0 only checks that the process exists.
                let gone = unsafe { libc::kill(pid as i32, 0) } != 0
                    || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                        stat.rsplit(')')
                            .next()
                            .is_some_and(|r| r.trim_start().starts_with('Z'))
                    });
                gone.then_some(())
            });
        }
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

/// Every process below `root`, from the parents `/proc` gives.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …", where comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        else {
            continue;
        };
        parents.push((pid, ppid));
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    found.remove(0);
    found
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
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

/// A fresh, empty database on the PostgreSQL server of
/// `ISMS_TEST_POSTGRES_URL` (which `tests/run` starts), dropped on drop with
/// the roles the platform made for it.
pub struct PostgresDatabase {
    server: String,
    name: String,
    /// The database's URL, for `dbriver.sql_url`.
    pub url: String,
}

impl PostgresDatabase {
    /// Creates the database, or panics saying how to get a server.
    pub fn create() -> PostgresDatabase {
        let server = std::env::var("ISMS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "these tests need a PostgreSQL server: run tests/run, which starts one, or set \
                 ISMS_TEST_POSTGRES_URL=postgres://user:password@127.0.0.1:port/postgres \
                 (a role with CREATEDB and CREATEROLE)"
            )
        });
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).unwrap();
        let name = format!("isms_test_{:08x}", u32::from_be_bytes(nonce));
        psql(&server, &format!("CREATE DATABASE {name}"));
        let (base, _) = server
            .rsplit_once('/')
            .expect("ISMS_TEST_POSTGRES_URL has no /database");
        let url = format!("{base}/{name}");
        PostgresDatabase { server, name, url }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        // Project roles are named `isms` + 6 hex digits of the database
        // name's sha256 + `_<project>` (see DBriver's postgres.rs).
        let script = format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE);\n\
             SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname LIKE \
             'isms' || left(encode(sha256('{name}'::bytea), 'hex'), 6) || '\\_%' \\gexec\n"
        );
        let _ = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", &self.server])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait()
            });
    }
}

fn psql(server: &str, command: &str) {
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", server, "-c", command])
        .output()
        .expect("cannot run psql (apt-get install postgresql-client)");
    assert!(
        output.status.success(),
        "psql `{command}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The MongoDB-wire test server `tests/run` installs (SecantusDB, found through
/// `ISMS_TEST_MONGO_SERVER`), on a free loopback port with in-memory storage,
/// killed and removed on drop.
pub struct MongoWire {
    child: Child,
    dir: PathBuf,
    /// `mongodb://127.0.0.1:<port>`.
    pub url: String,
}

impl MongoWire {
    /// Starts the server and waits until it listens, or panics saying how to install it.
    pub fn start() -> MongoWire {
        let exe = std::env::var_os("ISMS_TEST_MONGO_SERVER")
            .filter(|e| !e.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "this test needs the MongoDB-wire server SecantusDB: run tests/run, or \
                     python3 -m venv ~/.cache/isms-ci/venv && ~/.cache/isms-ci/venv/bin/pip install SecantusDB==0.7.0b3 \
                     and export ISMS_TEST_MONGO_SERVER=~/.cache/isms-ci/venv/bin/secantusd-py"
                )
            });
        let dir = temp_dir("mongo-wire");
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(&exe)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
            .current_dir(&dir)
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let server = MongoWire {
            child,
            dir,
            url: format!("mongodb://127.0.0.1:{port}"),
        };
        eventually(
            Duration::from_secs(60),
            "the MongoDB-wire server to listen",
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        server
    }
}

impl Drop for MongoWire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Mosquitto broker (Debian's `mosquitto`, which `tests/run`
/// installs) on a free loopback port, with its config, persistence and log
/// in a fresh directory, killed and removed on drop. Never the system's
/// broker on port 1883.
pub struct Mosquitto {
    child: Child,
    dir: PathBuf,
    /// `mqtt://127.0.0.1:<port>`.
    pub url: String,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Mosquitto {
    /// The broker's executable.
    pub const EXE: &'static str = "/usr/sbin/mosquitto";

    /// Starts the broker and waits until it accepts connections, or panics
    /// saying how to install it.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    /// As [`Mosquitto::start`], with more lines of configuration.
    pub fn start_with(extra: &str) -> Mosquitto {
        assert!(
            Path::new(Self::EXE).is_file(),
            "this needs the Mosquitto MQTT broker at {}: apt-get install mosquitto \
             (or run tests/run, which installs what the tests need)",
            Self::EXE
        );
        let dir = temp_dir("mosquitto");
        let port = free_port();
        // Queues and the in-flight window large enough that a benchmark's
        // burst of QoS 1 messages is relayed, not dropped or throttled by
        // the defaults (1,000 queued, 20 in flight per client).
        let mut config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             max_queued_messages 100000\n\
             max_inflight_messages 0\n\
             log_dest file {dir}/mosquitto.log\n\
             {extra}\n",
            dir = dir.display()
        );
        // As root it would switch to the `mosquitto` user, which cannot
        // write to this directory.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            config.push_str("user root\n");
        }
        std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
        let child = Mosquitto::launch(&dir, port);
        Mosquitto {
            child,
            dir,
            url: format!("mqtt://127.0.0.1:{port}"),
            port,
        }
    }

    /// Starts the broker on its configuration and waits until it listens.
    fn launch(dir: &Path, port: u16) -> Child {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout.log"))
            .unwrap();
        let mut child = Command::new(Self::EXE)
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", Self::EXE));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || {
                std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default()
                    + &std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
            };
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mosquitto exited ({status}) before listening on {port}:\n{}",
                    log()
                );
            }
            if Instant::now() > deadline {
                panic!("mosquitto did not listen on {port} within 30 s:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Stops the broker cleanly (it saves its state) and starts it again on
    /// the same directory and port.
    pub fn restart(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.child = Mosquitto::launch(&self.dir, self.port);
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        self.read_log("mosquitto.log")
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The broker starts, answers an MQTT 3.1.1 CONNECT with a CONNACK that
    /// accepts it, writes its log where the config says, and is gone with
    /// its directory after drop.
    #[test]
    fn mosquitto_accepts_a_client_and_cleans_up() {
        let broker = Mosquitto::start();
        assert_eq!(broker.url, format!("mqtt://127.0.0.1:{}", broker.port));
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s,
        // client id "self-test".
        let mut connect = vec![0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 9];
        connect.extend_from_slice(b"self-test");
        stream.write_all(&connect).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepting the client");
        drop(stream);
        let dir = broker.dir.clone();
        eventually(Duration::from_secs(10), "mosquitto's log", || {
            broker.log().contains("self-test").then_some(())
        });
        let port = broker.port;
        drop(broker);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "mosquitto still listening on {port}"
        );
    }
}
