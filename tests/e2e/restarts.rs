//! `kill -9` of a service: the supervisor restarts it, the Services
//! Controller reports the restart, and invocations work again in seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, eventually, http};
use std::time::{Duration, Instant};

#[test]
fn killed_services_come_back_and_are_reported() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "ops"]);
    p.deploy_misbehave("ops", "echo", "echo", "");
    assert_eq!(p.trigger("/ops/echo", b"ok").status, 200);

    for service in ["doer", "commserver", "resadmin", "dbriver"] {
        let pid = p.pid_of(service);
        // SAFETY: killing a process of our own platform.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let killed = Instant::now();
        let status = eventually(
            Duration::from_secs(15),
            &format!("the {service} to come back"),
            || {
                let s = p.try_service(service)?;
                (s["status"] == "up" && s["pid"].as_u64() != Some(u64::from(pid))).then_some(s)
            },
        );
        assert!(status["restarts"].as_u64().unwrap() >= 1, "{status}");
        eventually(Duration::from_secs(15), "invocations to work again", || {
            let r = isms_test_support::http::try_request(
                "POST",
                &format!("{}/ops/echo", p.triggers),
                &[],
                b"ok",
            )
            .ok()?;
            (r.status == 200).then_some(())
        });
        eprintln!(
            "{service}: serving again {:?} after kill -9",
            killed.elapsed()
        );
        assert!(
            p.output()
                .contains(&format!("the {service} was killed by signal 9")),
            "the supervisor did not report the {service}'s death:\n{}",
            p.output()
        );
    }
    // The restarted DBriver answers SQL again.
    let token = p.admin_token();
    let sql = p.call_api(
        "POST",
        "/api/v1/projects/ops/sql",
        Some(&token),
        br#"{"query": "SELECT 1 AS one"}"#,
    );
    assert_eq!(sql.json()["rows"], serde_json::json!([{ "one": 1 }]));
    // The restarted Resadmin still builds and serves.
    p.deploy_misbehave("ops", "again", "echo", "");
    // (The CommServer loads the new route on the deploy's event, moments later.)
    eventually(Duration::from_secs(2), "the new route to serve", || {
        (p.trigger("/ops/again", b"yes").text() == "yes").then_some(())
    });
}

/// A Doer that stops answering (frozen, not dead) is marked down after its
/// heartbeats stop; invocations then answer 503 instead of waiting forever,
/// and service resumes once it wakes up and registers again.
#[test]
fn a_silent_doer_is_marked_down_and_comes_back() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_KERNEL_HEARTBEAT_TIMEOUT_MS", "1000")
        .env("ISMS_COMMSERVER_QUEUE_ALLOWANCE_MS", "300")
        .start();
    p.login_admin();
    p.run(&["project", "create", "ops"]);
    p.deploy_misbehave("ops", "echo", "echo", "[resources]\ntimeout_ms = 500\n");
    assert_eq!(p.trigger("/ops/echo", b"ok").status, 200);

    let pid = p.pid_of("doer") as i32;
    // SAFETY: pausing and resuming a process of our own platform.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    eventually(
        Duration::from_secs(10),
        "the Doer to be marked down",
        || (p.service("doer")["status"] == "down").then_some(()),
    );
    let r = p.trigger("/ops/echo", b"ok");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("not ready"),
        "{}",
        r.text()
    );

    unsafe { libc::kill(pid, libc::SIGCONT) };
    eventually(
        Duration::from_secs(10),
        "the Doer to register again",
        || (p.service("doer")["status"] == "up").then_some(()),
    );
    eventually(Duration::from_secs(10), "invocations to work again", || {
        (p.trigger("/ops/echo", b"ok").status == 200).then_some(())
    });
    assert_eq!(
        p.pid_of("doer") as i32,
        pid,
        "the same process came back, no restart"
    );
}

/// The default, one-host platform: a Doer killed with invocations queued
/// inside it (not started) runs them once its supervisor has started it
/// again; only what it was running, or had sent ahead to its Worker,
/// answers 503.
#[test]
fn what_a_killed_doer_had_not_started_runs_when_it_is_back() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "ops"]);
    p.deploy_misbehave(
        "ops",
        "slow",
        "by-input",
        "[resources]\nconcurrency = 1\ntimeout_ms = 30000\n",
    );
    // Warm, and known to run long enough for a line to be deferred.
    assert_eq!(p.trigger("/ops/slow", b"sleep:300 warm").status, 200);
    let url = format!("{}/ops/slow", p.triggers);
    let calls = http::Echoes::send(&url, (0..5).map(|i| format!("sleep:1000 #{i}")));
    // Three wait inside it: its heartbeat says so, and the kernel, which
    // reads that heartbeat after the deferrals sent before it, knows.
    eventually(
        Duration::from_secs(10),
        "three to wait inside the Doer",
        || {
            let doer = p.service("doer");
            (doer["in_flight"].as_u64()? == 5 && doer["inner_queue"].as_u64()? == 3).then_some(())
        },
    );
    let pid = p.pid_of("doer");
    // SAFETY: killing a process of our own platform.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let unavailable = calls.unavailable();
    eprintln!("{unavailable} of 5 answered 503; the rest ran on the restarted Doer");
    assert!(
        (1..=2).contains(&unavailable),
        "the running one and the one sent ahead may fail, no more"
    );
}
