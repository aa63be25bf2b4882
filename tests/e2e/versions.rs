//! Versions, rollback and delete; invocation records and asynchronous
//! invocations; logs followed live; metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, eventually, http};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn deploys_make_versions_rollback_switches_and_a_failed_build_changes_nothing() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "demo"]);
    // v1 echoes; v2 answers with what triggered it.
    p.deploy_misbehave("demo", "greet", "echo", "");
    assert_eq!(p.trigger("/demo/greet", b"one").text(), "one");
    p.deploy_misbehave("demo", "greet", "respond", "");
    assert_eq!(p.trigger("/demo/greet", b"two").text(), "POST via http");

    let out = p.run(&["doee", "rollback", "demo/greet", "1"]);
    assert!(out.contains("version 1"), "{out}");
    // Rollback takes effect at once: no build, no restart (the CommServer
    // swaps its routes on the event, within moments).
    eventually(Duration::from_secs(2), "the rollback to serve", || {
        (p.trigger("/demo/greet", b"back").text() == "back").then_some(())
    });

    // v3 does not compile: the deploy fails, v1 keeps serving.
    let dir = p.root.join("doee-greet");
    let lib = dir.join("src/lib.rs");
    let mut source = std::fs::read_to_string(&lib).unwrap();
    source.push_str("\nfn broken( {\n");
    std::fs::write(&lib, source).unwrap();
    let failed = p.try_deploy(&dir, "demo");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("previous version keeps serving"),
        "{stderr}"
    );
    assert_eq!(p.trigger("/demo/greet", b"still").text(), "still");

    let shown = p.run(&["doee", "show", "demo/greet"]);
    assert!(shown.contains("active version: 1"), "{shown}");
    assert!(shown.contains("failed"), "{shown}");
    let log = p.run(&["doee", "show", "demo/greet", "--log", "3"]);
    assert!(
        log.contains("error"),
        "the build log lacks the compiler's error:\n{log}"
    );
    let listed = p.run(&["doee", "list", "demo"]);
    assert!(
        listed.contains("greet") && listed.contains("POST /greet"),
        "{listed}"
    );

    // A failed version cannot be rolled back to.
    let refused = p.try_run(&["doee", "rollback", "demo/greet", "3"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("failed"));

    // Delete removes the Doee and its route.
    p.run(&["doee", "delete", "demo/greet"]);
    eventually(Duration::from_secs(5), "the route to go", || {
        (p.trigger("/demo/greet", b"gone").status == 404).then_some(())
    });
    let gone = p.try_run(&["doee", "show", "demo/greet"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no Doee"));
}

#[test]
fn invocations_are_recorded_async_results_are_read_later_and_logs_follow_live() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    let admin = p.admin_token();
    p.login_admin();
    p.run(&["project", "create", "live"]);

    // Follow the project's log before anything happens in it.
    let mut follower = p
        .cli()
        .args(["logs", "live", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                if line.contains(needle) {
                    return line;
                }
                seen.push(line);
            }
        }
        panic!(
            "`isms logs -f` never printed {needle:?}; it printed:\n{}",
            seen.join("\n")
        );
    };

    p.deploy_misbehave_with("live", "talk", "respond", "", "");
    // The build's lines arrive in the project's log...
    wait_for("[build] building live/talk");
    // ...and so do the Doee's, live.
    let response = p.trigger("/live/talk", b"x");
    assert_eq!(response.status, 201, "the Doee's own status");
    let id = response.header("x-isms-invocation-id").unwrap().to_string();
    let line = wait_for("responded");
    assert!(
        line.contains("talk@1") && line.contains(&id[id.len() - 8..]),
        "{line}"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    // The record of that invocation.
    let record = eventually(Duration::from_secs(5), "the record", || {
        let r = p.call_api(
            "GET",
            &format!("/api/v1/invocations/{id}"),
            Some(&admin),
            b"",
        );
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["trigger"], "http");
    assert_eq!(record["trigger_detail"]["method"], "POST");
    assert_eq!(record["output"], "POST via http");
    assert_eq!(record["http_status"], 201);
    assert_eq!(record["logs"][0]["message"], "responded");
    assert!(record["duration_ms"].as_f64().unwrap() > 0.0);

    // An asynchronous invocation: 202 at once, the result later.
    p.deploy_misbehave_with("live", "slow", "work", "work_us = \"400000\"", "");
    let accepted = http::request(
        "POST",
        &format!("{}/live/slow", p.triggers),
        &[("prefer", "respond-async")],
        b"later",
    );
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let async_id = accepted.json()["invocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = p.call_api(
        "GET",
        &format!("/api/v1/invocations/{async_id}"),
        Some(&admin),
        b"",
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["status"], "pending");
    let done = eventually(Duration::from_secs(10), "the async result", || {
        let r = p
            .call_api(
                "GET",
                &format!("/api/v1/invocations/{async_id}"),
                Some(&admin),
                b"",
            )
            .json();
        (r["status"] != "pending").then_some(r)
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "later");
    let shown = p.run(&["invocation", &async_id]);
    assert_eq!(shown.trim(), "later");

    // The project's list, newest first, and the CLI's.
    let list = p
        .call_api(
            "GET",
            "/api/v1/projects/live/invocations?limit=10",
            Some(&admin),
            b"",
        )
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [async_id.as_str(), id.as_str()]);
    let table = p.run(&["invocations", "live"]);
    assert!(
        table.contains(&async_id) && table.contains("succeeded"),
        "{table}"
    );

    // Metrics count them by Doee and status, with latency histograms.
    let metrics = p.call_api("GET", "/metrics", Some(&admin), b"").text();
    for needle in [
        "isms_invocations_total{project=\"live\",doee=\"talk\",status=\"succeeded\"} 1",
        "isms_invocation_duration_seconds_count{project=\"live\",doee=\"slow\"} 1",
        "isms_service_up{service=\"doer\",instance=\"doer-1\"} 1",
        "isms_service_restarts_total{service=\"doer\"",
        "isms_kernel_queue_depth{service=\"doer\"",
        "isms_service_workers{service=\"doer\"",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
}
