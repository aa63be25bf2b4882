//! `isms-bench`: benchmarks of a real platform, started by the benchmark
//! itself (its own data directory, free ports), driven from this machine.
//! Each scenario prints progress, then one JSON object on its last line.
//!
//!     cargo run --release -p isms-bench -- http-warm --duration 10 --concurrency 32
//!
//! Why one file of this size: the command line and the scenarios small
//! enough to read in one screen each; the larger ones (db, mqtt, soak) and
//! the load generator have modules of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark may stop on the first surprise.

mod db;
mod helpers;
mod load;
mod mqtt;
mod remote;
mod soak;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use isms_test_support::{Options, Platform, free_port, temp_dir};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "isms-bench",
    about = "Benchmarks of a real ISMS platform (SPEC §11)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Clone, Copy)]
struct Shape {
    /// Seconds of measurement (warm-ups come on top).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent connections (the flood's, in `fairness`).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Workers of the benchmarked Doee (its `concurrency` resource).
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// The benchmarked Doee's language (`http-warm` and `cold-start`); a
    /// Python run of `http-warm` measures the Rust Doee beside it.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
}

/// The languages a benchmarked echo Doee is written in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    Rust,
    Python,
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
        }
    }
}

/// Deploys an echo Doee called `name` in `lang` to project `bench`, with
/// `extra` in its manifest.
fn deploy_echo(p: &Platform, lang: Lang, name: &str, extra: &str) {
    match lang {
        Lang::Rust => p.deploy_misbehave("bench", name, "echo", extra),
        Lang::Python => {
            let dir = p.root.join(format!("doee-{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("doee.toml"),
                format!(
                    "name = \"{name}\"\nlanguage = \"python\"\n\
                     [[triggers.http]]\nroute = \"/{name}\"\nmethods = [\"POST\"]\n{extra}"
                ),
            )
            .unwrap();
            std::fs::write(
                dir.join("handler.py"),
                "def execute(ctx, data):\n    return data\n",
            )
            .unwrap();
            p.deploy(&dir, "bench");
        }
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// A trivial Doee under a fixed concurrency, beside a bare hyper server.
    HttpWarm(Shape),
    /// The first invocation after deploy, and after idle reaping.
    ColdStart(Shape),
    /// Messages through the kernel alone, between two test services.
    Kernel(Shape),
    /// A light project's latency while another floods.
    Fairness(Shape),
    /// The machine's floor: a round trip between two processes over a Unix
    /// socket, with no platform at all.
    Handoff(Shape),
    /// QoS 1 messages through a trivial Doee with replies, beside Mosquitto
    /// alone relaying the same messages.
    Mqtt(Shape),
    /// A Doee doing one indexed SQL insert and one select, beside the same statements issued directly.
    Db(Shape),
    /// HTTP and MQTT traffic for a while, every ISMS process's memory sampled.
    Soak(Shape),
    /// The trivial Doee through a Doer joined from another host (a network
    /// namespace, the TLS link), beside the kernel's own Doer (root only).
    RemoteDoer(Shape),
    #[command(hide = true)]
    BareServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        body: String,
    },
    /// Drives an already running platform (for profiling).
    #[command(hide = true)]
    Load {
        /// An `http://127.0.0.1:<port>/<project>/<route>` URL.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        shape: Shape,
    },
    #[command(hide = true)]
    HandoffEcho {
        #[arg(long)]
        socket: PathBuf,
    },
    #[command(hide = true)]
    KernelEcho {
        #[arg(long)]
        endpoint: String,
    },
}

const BODY: &str = "Hello, bench!";

fn main() {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::BareServer { port, body } => helpers::bare_server(port, body).map(|()| None),
        Scenario::KernelEcho { endpoint } => helpers::kernel_echo(&endpoint).map(|()| None),
        Scenario::HandoffEcho { socket } => helpers::handoff_echo(&socket).map(|()| None),
        Scenario::Handoff(shape) => handoff(shape).map(Some),
        Scenario::Load { url, shape } => load_only(&url, shape).map(Some),
        scenario => run(scenario).map(Some),
    };
    match result {
        Ok(Some(summary)) => println!("{summary}"),
        Ok(None) => {}
        Err(err) => {
            eprintln!("error: {err:#}");
            println!("{}", json!({ "error": format!("{err:#}") }));
            std::process::exit(1);
        }
    }
}

fn load_only(url: &str, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("an http:// URL"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse()?;
    let window = Duration::from_secs(shape.duration);
    let mut measured = runtime().block_on(load::drive(
        addr,
        path,
        Bytes::from(BODY),
        shape.concurrency,
        Duration::from_secs(1),
        window,
    ));
    Ok(json!({
        "rps": round(measured.rps()),
        "p50_us": measured.percentile(50.0),
        "p99_us": measured.percentile(99.0),
        "errors": measured.errors,
    }))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run(scenario: Scenario) -> anyhow::Result<serde_json::Value> {
    if let Scenario::Handoff(shape) = scenario {
        return handoff(shape);
    }
    let isms = build_isms()?;
    match scenario {
        Scenario::HttpWarm(shape) => http_warm(&isms, shape),
        Scenario::ColdStart(shape) => cold_start(&isms, shape),
        Scenario::Kernel(shape) => kernel(&isms, shape),
        Scenario::Fairness(shape) => fairness(&isms, shape),
        Scenario::Db(shape) => db::db(&isms, shape),
        Scenario::Soak(shape) => soak::soak(&isms, shape),
        Scenario::Mqtt(shape) => mqtt::mqtt(&isms, shape),
        Scenario::RemoteDoer(shape) => remote::remote_doer(&isms, shape),
        _ => unreachable!("handled in main"),
    }
}

/// Builds the release `isms` binary next to this one, so the benchmark can
/// never measure a stale build.
fn build_isms() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ISMS_BENCH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the release isms binary…");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "isms",
            "--bin",
            "isms",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "cargo build --release -p isms failed");
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("isms"))
}

fn target_tmp() -> String {
    let me = std::env::current_exe().unwrap();
    me.parent().unwrap().join("bench-tmp").display().to_string()
}

fn platform(isms: &Path, env: &[(&str, &str)]) -> Platform {
    let mut options = Options::new(isms.to_str().unwrap(), &target_tmp());
    for (key, value) in env {
        options = options.env(key, value);
    }
    let platform = options.start();
    platform.login_admin();
    platform
}

pub(crate) fn trigger_addr(p: &Platform) -> SocketAddr {
    p.triggers.trim_start_matches("http://").parse().unwrap()
}

/// RSS of a process and all its descendants, in MiB.
pub(crate) fn tree_rss_mb(root: u32) -> f64 {
    let kib: u64 = std::iter::once(root)
        .chain(isms_test_support::descendants(root))
        .map(isms_test_support::rss_kib)
        .sum();
    kib as f64 / 1024.0
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn http_warm(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let p = platform(isms, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_mb = tree_rss_mb(p.supervisor_pid());
    p.run(&["project", "create", "bench"]);
    let workers = shape.workers.to_string();
    let resources = format!("[resources]\nconcurrency = {workers}\nmin_warm = {workers}\n");
    deploy_echo(&p, Lang::Rust, "echo", &resources);
    let addr = trigger_addr(&p);
    let window = Duration::from_secs(shape.duration);
    let rt = runtime();
    // The other language first, beside the Rust Doee in the same run.
    let other = (shape.lang != Lang::Rust).then(|| {
        deploy_echo(&p, shape.lang, "other", &resources);
        eprintln!(
            "{} Doee, {} connections, {} s…",
            shape.lang.as_str(),
            shape.concurrency,
            shape.duration
        );
        let mut single = rt.block_on(load::drive(
            addr,
            "/bench/other",
            Bytes::from(BODY),
            1,
            Duration::from_secs(1),
            Duration::from_secs(3),
        ));
        let mut loaded = rt.block_on(load::drive(
            addr,
            "/bench/other",
            Bytes::from(BODY),
            shape.concurrency,
            Duration::from_secs(2),
            window,
        ));
        json!({
            "lang": shape.lang.as_str(),
            "rps": round(loaded.rps()),
            "p50_us": loaded.percentile(50.0),
            "p99_us": loaded.percentile(99.0),
            "errors": loaded.errors,
            "p50_us_one_connection": single.percentile(50.0),
        })
    });
    eprintln!("one connection, 3 s…");
    let mut single = rt.block_on(load::drive(
        addr,
        "/bench/echo",
        Bytes::from(BODY),
        1,
        Duration::from_secs(1),
        Duration::from_secs(3),
    ));
    eprintln!("{} connections, {} s…", shape.concurrency, shape.duration);
    let mut loaded = rt.block_on(load::drive(
        addr,
        "/bench/echo",
        Bytes::from(BODY),
        shape.concurrency,
        Duration::from_secs(2),
        window,
    ));
    let loaded_rss_mb = tree_rss_mb(p.supervisor_pid());
    drop(p);

    eprintln!(
        "the bare hyper server, {} connections, {} s…",
        shape.concurrency, shape.duration
    );
    let port = free_port();
    let mut bare = spawn_self(&["bare-server", "--port", &port.to_string(), "--body", BODY])?;
    let bare_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_for_port(bare_addr)?;
    let mut baseline = rt.block_on(load::drive(
        bare_addr,
        "/",
        Bytes::from(BODY),
        shape.concurrency,
        Duration::from_secs(2),
        window,
    ));
    let mut bare_single = rt.block_on(load::drive(
        bare_addr,
        "/",
        Bytes::from(BODY),
        1,
        Duration::from_secs(1),
        Duration::from_secs(3),
    ));
    let _ = bare.kill();
    let _ = bare.wait();

    Ok(json!({
        "scenario": "http-warm",
        "concurrency": shape.concurrency,
        "duration_s": shape.duration,
        "workers": shape.workers,
        "rps": round(loaded.rps()),
        "p50_us": loaded.percentile(50.0),
        "p99_us": loaded.percentile(99.0),
        "errors": loaded.errors,
        "p50_us_one_connection": single.percentile(50.0),
        "p99_us_one_connection": single.percentile(99.0),
        "rps_one_connection": round(single.rps()),
        "bare_rps": round(baseline.rps()),
        "bare_p50_us": baseline.percentile(50.0),
        "bare_p50_us_one_connection": bare_single.percentile(50.0),
        "ratio_to_bare": round(loaded.rps() / baseline.rps()),
        "idle_rss_mb": round(idle_rss_mb),
        "loaded_rss_mb": round(loaded_rss_mb),
        "other_lang": other.as_ref().map(|o| {
            let mut o = o.clone();
            o["ratio_to_rust"] = json!(round(o["rps"].as_f64().unwrap_or(0.0) / loaded.rps()));
            o
        }),
    }))
}

fn timed(p: &Platform, path: &str) -> f64 {
    let started = Instant::now();
    let r = p.trigger(path, BODY.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    started.elapsed().as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn cold_start(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let p = platform(isms, &[("ISMS_DOER_IDLE_TIMEOUT_S", "1")]);
    p.run(&["project", "create", "bench"]);
    let mut first = Vec::new();
    for i in 0..3 {
        let name = format!("cold{i}");
        deploy_echo(&p, shape.lang, &name, "");
        first.push(timed(&p, &format!("/bench/{name}")));
    }
    let warm: Vec<f64> = (0..20).map(|_| timed(&p, "/bench/cold0")).collect();
    let rounds = (shape.duration / 3).clamp(3, 10);
    let mut after_reap = Vec::new();
    let workers = |p: &Platform| p.service("doer")["workers"].as_u64();
    for _ in 0..rounds {
        // The Worker count arrives with the Doer's heartbeats: first see the
        // Worker the last invocation used, then see it reaped.
        isms_test_support::eventually(Duration::from_secs(10), "the Worker to be counted", || {
            (workers(&p) > Some(0)).then_some(())
        });
        isms_test_support::eventually(Duration::from_secs(30), "idle Workers to be reaped", || {
            (workers(&p) == Some(0)).then_some(())
        });
        after_reap.push(timed(&p, "/bench/cold0"));
    }
    Ok(json!({
        "scenario": "cold-start",
        "cold_ms": round(median(first.clone())),
        "cold_ms_all": first.iter().map(|x| round(*x)).collect::<Vec<_>>(),
        "after_reap_ms": round(median(after_reap.clone())),
        "after_reap_ms_all": after_reap.iter().map(|x| round(*x)).collect::<Vec<_>>(),
        "warm_ms": round(median(warm)),
        "lang": shape.lang.as_str(),
        "isolation": "bwrap",
    }))
}

fn kernel(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    use isms_ipc::connection::Scope;
    use isms_ipc::doer::{Invoke, Trigger};
    use isms_ipc::{Connection, DoeeName, InvocationId, ProjectName, Registration, ServiceKind};

    let dir = temp_dir("bench-kernel");
    let endpoint = format!("ipc://{}", dir.join("kernel.sock").display());
    let mut kernel = Command::new(isms)
        .args(["service", "kernel", "--data-dir"])
        .arg(&dir)
        .env("ISMS_KERNEL_LISTEN", &endpoint)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut echo = spawn_self(&["kernel-echo", "--endpoint", &endpoint])?;
    let window = Duration::from_secs(shape.duration.max(2) / 2);
    let result = runtime().block_on(async {
        let registration = Registration {
            service: ServiceKind::CommServer,
            instance: "bench-client".into(),
            pid: std::process::id(),
            capacity: 1,
            host: "bench".into(),
            labels: Vec::new(),
        };
        let (conn, _incoming) = Connection::connect(
            &endpoint.parse().map_err(anyhow::Error::msg)?,
            None,
            registration,
            Duration::from_secs(10),
        )
        .await?;
        let project = ProjectName::new("bench").map_err(anyhow::Error::msg)?;
        let call = move |conn: Connection| {
            let project = project.clone();
            async move {
                let invoke = Invoke {
                    id: InvocationId(0),
                    doee: DoeeName::new("echo").unwrap(),
                    version: 1,
                    trigger: Trigger::Cli,
                    input: Bytes::from_static(
                        b"0123456789012345678901234567890123456789012345678901234567890123",
                    ),
                    stream: false,
                };
                let started = Instant::now();
                let ok = conn
                    .call(&Scope::project(project, Duration::from_secs(5)), invoke)
                    .await
                    .is_ok();
                (ok, started.elapsed())
            }
        };
        // Wait for the echo service to register.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !call(conn.clone()).await.0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the echo service did not join the kernel"
            );
        }
        // Latency: one request at a time.
        let mut latencies = Vec::new();
        let end = Instant::now() + window;
        while Instant::now() < end {
            let (ok, took) = call(conn.clone()).await;
            anyhow::ensure!(ok, "a call through the kernel failed");
            latencies.push(took.as_micros() as u32);
        }
        // Throughput: 64 requests in flight.
        let end = Instant::now() + window;
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let conn = conn.clone();
                let call = call.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while Instant::now() < end {
                        if call(conn.clone()).await.0 {
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        let mut round_trips = 0;
        for task in tasks {
            round_trips += task.await.unwrap_or(0);
        }
        Ok::<_, anyhow::Error>((latencies, round_trips))
    });
    let _ = echo.kill();
    let _ = echo.wait();
    let _ = kernel.kill();
    let _ = kernel.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (mut latencies, round_trips) = result?;
    latencies.sort_unstable();
    let rt_per_s = round_trips as f64 / window.as_secs_f64();
    Ok(json!({
        "scenario": "kernel",
        "round_trips_per_s": round(rt_per_s),
        "msgs_per_s": round(rt_per_s * 2.0),
        "p50_us": latencies[latencies.len() / 2],
        "p99_us": latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)],
        "in_flight": 64,
    }))
}

/// A light project's latency alone and while a heavy one floods with a
/// Doee that wants more CPU than the machine has: with the platform's
/// defaults (a cgroup per Worker, a CPU weight per project, where the host
/// allows) and, as the baseline in the same run, without cgroups.
fn fairness(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let with = fairness_once(isms, &shape, &[])?;
    let without = fairness_once(isms, &shape, &[("ISMS_DOER_CGROUPS", "off")])?;
    let mut summary = json!({
        "scenario": "fairness",
        "flood_connections": shape.concurrency,
        "cgroups": with.limits,
    });
    for (suffix, run) in [("", with), ("_no_cgroups", without)] {
        let mut run = run;
        for (key, value) in [
            ("light_p99_us", json!(run.light.percentile(99.0))),
            ("light_p50_us", json!(run.light.percentile(50.0))),
            ("light_alone_p99_us", json!(run.alone.percentile(99.0))),
            ("light_alone_p50_us", json!(run.alone.percentile(50.0))),
            ("light_rps", json!(round(run.light.rps()))),
            ("heavy_rps", json!(round(run.heavy.rps()))),
            ("heavy_p99_us", json!(run.heavy.percentile(99.0))),
            ("light_errors", json!(run.light.errors)),
            ("heavy_errors", json!(run.heavy.errors)),
        ] {
            summary[format!("{key}{suffix}")] = value;
        }
    }
    Ok(summary)
}

/// One platform's fairness figures.
struct FairnessRun {
    /// The banner's `Limits` line.
    limits: String,
    alone: load::Measured,
    light: load::Measured,
    heavy: load::Measured,
}

fn fairness_once(isms: &Path, shape: &Shape, env: &[(&str, &str)]) -> anyhow::Result<FairnessRun> {
    let p = platform(isms, env);
    let limits = p
        .output()
        .lines()
        .find_map(|l| l.trim().strip_prefix("Limits"))
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!("platform limits: {limits}");
    let workers = shape.workers;
    for project in ["heavy", "light"] {
        p.run(&["project", "create", project]);
        p.deploy_misbehave_with(
            project,
            "work",
            "work",
            "work_us = \"200\"",
            &format!("[resources]\nconcurrency = {workers}\nmin_warm = {workers}\n"),
        );
    }
    let addr = trigger_addr(&p);
    let window = Duration::from_secs(shape.duration);
    let rt = runtime();
    eprintln!("the light project alone, {} s…", shape.duration);
    let alone = rt.block_on(load::drive(
        addr,
        "/light/work",
        Bytes::from(BODY),
        1,
        Duration::from_secs(1),
        window,
    ));
    eprintln!(
        "the light project while the heavy one floods with {} connections…",
        shape.concurrency
    );
    // The light project is another client: its own thread and runtime, so
    // its latency is the platform's, not that of waiting behind the flood's
    // connections in one event loop.
    let light = std::thread::spawn(move || {
        runtime().block_on(load::drive(
            addr,
            "/light/work",
            Bytes::from(BODY),
            1,
            Duration::from_secs(2),
            window,
        ))
    });
    let heavy = rt.block_on(load::drive(
        addr,
        "/heavy/work",
        Bytes::from(BODY),
        shape.concurrency,
        Duration::from_secs(1),
        window + Duration::from_secs(2),
    ));
    let light = light
        .join()
        .map_err(|_| anyhow::anyhow!("the light client panicked"))?;
    Ok(FairnessRun {
        limits,
        alone,
        light,
        heavy,
    })
}

/// Round trips of 64 bytes between this process and a child echoing them.
fn handoff(shape: Shape) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read, Write};
    let dir = temp_dir("bench-handoff");
    let path = dir.join("echo.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let mut child = spawn_self(&[
        "handoff-echo",
        "--socket",
        path.to_str().unwrap_or_default(),
    ])?;
    let (mut stream, _) = listener.accept()?;
    let mut buf = [0u8; 64];
    let mut latencies = Vec::new();
    let end = Instant::now() + Duration::from_secs(shape.duration.clamp(1, 10));
    while Instant::now() < end {
        let started = Instant::now();
        stream.write_all(&buf)?;
        stream.read_exact(&mut buf)?;
        latencies.push(started.elapsed().as_micros() as u32);
    }
    drop(stream);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_unstable();
    Ok(json!({
        "scenario": "handoff",
        "round_trips": latencies.len(),
        "p50_us": latencies[latencies.len() / 2],
        "p99_us": latencies[latencies.len() * 99 / 100],
    }))
}

fn spawn_self(args: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .spawn()?)
}

fn wait_for_port(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{addr} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
