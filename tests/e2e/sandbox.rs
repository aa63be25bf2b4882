//! Misbehaving Doees fail only their own invocation, and the sandbox keeps
//! Doees away from the network and the host.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, Platform};
use std::time::{Duration, Instant};

fn platform() -> Platform {
    Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_DOER_WORKER_MAX_PROCESSES", "32")
        .start()
}

fn healthy(p: &Platform) {
    p.assert_healthy("/lab/echo");
}

#[test]
fn misbehaving_doees_fail_only_their_own_invocation() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "lab"]);
    p.deploy_misbehave("lab", "echo", "echo", "");
    p.deploy_misbehave("lab", "panics", "panic", "");
    p.deploy_misbehave("lab", "segfaults", "segfault", "");
    p.deploy_misbehave("lab", "spins", "spin", "[resources]\ntimeout_ms = 1000\n");
    p.deploy_misbehave("lab", "hoards", "allocate", "[resources]\nmemory_mb = 64\n");
    // Memory enough that the process limit, not the memory limit, is what
    // stops it (with 64 MiB the two raced: 504 or an out-of-memory 500).
    p.deploy_misbehave(
        "lab",
        "forks",
        "fork-bomb",
        "[resources]\ntimeout_ms = 1500\nmemory_mb = 512\n",
    );
    healthy(&p);

    let cases: [(&str, u16, &str); 3] = [
        (
            "panics",
            500,
            "the Doee panicked: misbehave panics on purpose",
        ),
        ("segfaults", 500, "SIGSEGV"),
        ("hoards", 500, "memory allocation"),
    ];
    for (doee, status, message) in cases {
        let r = p.trigger(&format!("/lab/{doee}"), b"");
        assert_eq!(r.status, status, "{doee}: {}", r.text());
        let json = r.json();
        assert!(
            json["error"].as_str().unwrap().contains(message),
            "{doee}: {}",
            r.text()
        );
        assert_eq!(json["invocation_id"].as_str().map(str::len), Some(32));
        healthy(&p);
    }

    let started = Instant::now();
    let r = p.trigger("/lab/spins", b"");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("timeout of 1000 ms"), "{}", r.text());
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    healthy(&p);

    // The fork bomb hits the per-Worker process limit and dies with its
    // Worker. Counted as this platform's Executors and what they forked,
    // whoever runs the tests.
    let worker_processes = || p.worker_processes().len();
    let before = worker_processes();
    let bomb = {
        let url = format!("{}/lab/forks", p.triggers);
        std::thread::spawn(move || isms_test_support::http::request("POST", &url, &[], b""))
    };
    let mut peak = 0;
    while !bomb.is_finished() {
        peak = peak.max(worker_processes());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = bomb.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    // 32 processes for the bomb's Worker, plus the sandbox's own.
    assert!(
        peak <= before + 36,
        "the fork bomb reached {peak} processes (from {before})"
    );
    assert!(peak > before, "the fork bomb was never seen running");
    isms_test_support::eventually(Duration::from_secs(5), "the bomb's processes to go", || {
        (worker_processes() <= before).then_some(())
    });
    healthy(&p);
}

/// With one Worker, a second invocation is sent ahead to the busy Worker.
/// When that Worker crashes on the first, the second never started: it must
/// run on a new Worker, not fail with the first.
#[test]
fn work_sent_ahead_to_a_crashing_worker_runs_elsewhere() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "lab"]);
    p.deploy_misbehave(
        "lab",
        "fragile",
        "by-input",
        "[resources]\nconcurrency = 1\nmin_warm = 1\ntimeout_ms = 10000\n",
    );
    assert_eq!(p.trigger("/lab/fragile", b"warm").text(), "warm");
    let url = format!("{}/lab/fragile", p.triggers);
    let in_flight = |n: u64| {
        let what = format!("{n} invocations in the Doer");
        isms_test_support::eventually(Duration::from_secs(10), &what, || {
            (p.service("doer")["in_flight"] == n).then_some(())
        })
    };
    let send = |body: &'static [u8]| {
        let url = url.clone();
        std::thread::spawn(move || isms_test_support::http::request("POST", &url, &[], body))
    };
    let first = send(b"crash-after:1500");
    in_flight(1);
    let second = send(b"survivor");
    // Both are in the Doer while the only Worker runs the first: the
    // second has been sent ahead to it.
    in_flight(2);
    let (first, second) = (first.join().unwrap(), second.join().unwrap());
    assert_eq!(first.status, 500, "{}", first.text());
    assert!(first.text().contains("SIGSEGV"), "{}", first.text());
    assert_eq!((second.status, second.text().as_str()), (200, "survivor"));
    let log = std::fs::read_to_string(p.data_dir.join("logs/doer.log")).unwrap();
    assert!(
        log.contains("a task sent ahead to a Worker that ended goes back in line"),
        "the second invocation was not sent ahead:\n{log}"
    );
}

/// A shared object built for another ABI version is refused, and says so.
#[test]
fn a_doee_of_another_abi_is_refused() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "lab"]);
    let dir = p.root.join("wrong-abi");
    isms_test_support::copy_dir(&isms_test_support::fixtures().join("wrong-abi"), &dir);
    p.deploy(&dir, "lab");
    let r = p.trigger("/lab/wrong-abi", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("built for ABI version 99") && error.contains("speaks version 1"),
        "{error}"
    );
}

#[test]
fn the_sandbox_refuses_the_network_and_the_host() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "lab"]);
    p.deploy_misbehave("lab", "echo", "echo", "");
    p.deploy_misbehave("lab", "dialer", "connect", "");
    p.deploy_misbehave("lab", "escaper", "escape", "");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let r = p.trigger("/lab/dialer", target.as_bytes());
    assert_eq!(r.status, 200);
    let report = r.text();
    assert!(
        !report.contains("CONNECTED"),
        "a Doee reached the network:\n{report}"
    );
    let refused = |report: &str| report.lines().filter(|l| l.contains(": refused")).count();
    assert_eq!(refused(&report), 2, "{report}");
    assert!(listener.accept().is_err(), "the host listener was reached");

    let secrets = [
        p.data_dir.display().to_string(),
        p.data_dir.join("resadmin/state.db").display().to_string(),
        p.data_dir
            .join("initial-admin-password")
            .display()
            .to_string(),
        env!("CARGO_MANIFEST_DIR").to_string(),
        "/etc/passwd".to_string(),
    ];
    let r = p.trigger("/lab/escaper", secrets.join(" ").as_bytes());
    assert_eq!(r.status, 200);
    let report = r.text();
    assert!(
        !report.contains("WRITTEN") && !report.contains("READ"),
        "the sandbox leaked:\n{report}"
    );
    assert!(report.contains("write /tmp/allowed: ok"), "{report}");
    assert_eq!(refused(&report), 5 + secrets.len(), "{report}");
    healthy(&p);
}
