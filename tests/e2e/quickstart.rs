//! The README's quick start, end to end, through real processes and real
//! bubblewrap sandboxes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, Platform};
use std::process::Command;

fn platform() -> Platform {
    Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start()
}

#[test]
fn the_quick_start_works_end_to_end() {
    let p = platform();
    let banner = p.output();
    for expected in [
        p.api.as_str(),
        &format!("{}/<project>/<route>", p.triggers),
        "MQTT broker",
        "Isolation           bwrap",
        "initial-admin-password",
    ] {
        assert!(
            banner.contains(expected),
            "the banner lacks {expected:?}:\n{banner}"
        );
    }

    p.login_admin();
    p.run(&["project", "create", "demo"]);
    assert!(p.run(&["project", "list"]).contains("demo"));
    p.run(&["new", "hello", "--lang", "rust"]);
    let deployed = p.run(&["deploy", "hello", "--project", "demo", "--wait"]);
    assert!(deployed.contains("now active"), "{deployed}");

    let response = p.trigger("/demo/hello", b"world");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "Hello, world!")
    );
    assert_eq!(
        response.header("x-isms-invocation-id").map(str::len),
        Some(32)
    );
    assert_eq!(p.run(&["invoke", "demo/hello", "-d", "CLI"]), "Hello, CLI!");

    // The scaffold's own unit test passes offline against the bundled SDK.
    let test = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--offline", "--quiet"])
        .current_dir(p.root.join("hello"))
        .env("CARGO_TARGET_DIR", p.root.join("hello-target"))
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "the scaffold's test failed:\n{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn invoking_follows_the_http_contract() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_COMMSERVER_MAX_BODY_KB", "16")
        .env("ISMS_DOER_QUEUE_PER_DOEE", "1")
        .start();
    p.login_admin();
    p.run(&["project", "create", "errs"]);
    p.deploy_misbehave("errs", "echo", "echo", "");
    p.deploy_misbehave("errs", "respond", "respond", "");
    p.deploy_misbehave(
        "errs",
        "slow",
        "spin",
        "[resources]\ntimeout_ms = 3000\nconcurrency = 1\n",
    );

    // Bytes go through untouched.
    let bytes: Vec<u8> = (0..=255).collect();
    let echoed = p.trigger("/errs/echo", &bytes);
    assert_eq!((echoed.status, echoed.body.clone()), (200, bytes));

    // The Doee's status and headers; framing headers stay the platform's.
    let responded = p.trigger("/errs/respond", b"");
    assert_eq!(responded.status, 201);
    assert_eq!(responded.header("x-answer"), Some("42"));
    assert_eq!(responded.text(), "POST via http");
    let length = responded.body.len().to_string();
    assert_eq!(
        responded.header("content-length"),
        Some(length.as_str()),
        "the Doee's 999 must not leak"
    );

    let error_of = |r: &isms_test_support::http::Response| {
        r.json()["error"].as_str().unwrap_or("").to_string()
    };
    let missing = p.trigger("/errs/nope", b"");
    assert_eq!(missing.status, 404);
    assert!(
        error_of(&missing).contains("no route /nope"),
        "{}",
        missing.text()
    );
    assert_eq!(p.trigger("/nosuchproject/echo", b"").status, 404);

    let get =
        isms_test_support::http::request("GET", &format!("{}/errs/echo", p.triggers), &[], b"");
    assert_eq!(get.status, 405);
    assert_eq!(get.header("allow"), Some("POST"));

    let too_large = p.trigger("/errs/echo", &vec![b'x'; 17 * 1024]);
    assert_eq!(too_large.status, 413);
    assert!(error_of(&too_large).contains("larger than 16384 bytes"));

    // concurrency 1 and a queue of 1: of four at once, at least two are turned away.
    let triggers = p.triggers.clone();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{triggers}/errs/slow");
            std::thread::spawn(move || isms_test_support::http::request("POST", &url, &[], b""))
        })
        .collect();
    let statuses: Vec<u16> = calls
        .into_iter()
        .map(|c| c.join().unwrap().status)
        .collect();
    assert!(
        statuses.iter().filter(|&&s| s == 429).count() >= 2,
        "{statuses:?}"
    );
    assert!(statuses.contains(&504), "{statuses:?}");
}

/// The trigger port and the API's `invoke` are two doors to the same Doee:
/// both answer with its status and headers, and fail with the same status.
#[test]
fn a_doee_answers_alike_through_a_trigger_and_the_api() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "doors"]);
    p.deploy_misbehave("doors", "respond", "respond", "");
    p.deploy_misbehave("doors", "spins", "spin", "[resources]\ntimeout_ms = 500\n");
    let token = p.admin_token();
    let both = |doee: &str| {
        let triggered = p.trigger(&format!("/doors/{doee}"), b"");
        let path = format!("/api/v1/projects/doors/doees/{doee}/invoke");
        let invoked = p.call_api("POST", &path, Some(&token), b"");
        for answer in [&triggered, &invoked] {
            let id = answer.header("x-isms-invocation-id");
            assert_eq!(id.map(str::len), Some(32), "{doee}: {}", answer.text());
        }
        (triggered, invoked)
    };

    let (triggered, invoked) = both("respond");
    for answer in [&triggered, &invoked] {
        assert_eq!(answer.status, 201, "{}", answer.text());
        assert_eq!(answer.header("x-answer"), Some("42"));
        let length = answer.body.len().to_string();
        assert_eq!(answer.header("content-length"), Some(length.as_str()));
    }
    // The API shares the dashboard's origin: no cookie of the Doee's, and
    // its answer never runs as a page there.
    assert_eq!(triggered.header("set-cookie"), Some("doee=1"));
    assert_eq!(invoked.header("set-cookie"), None);
    assert_eq!(invoked.header("content-security-policy"), Some("sandbox"));

    let (triggered, invoked) = both("spins");
    for answer in [&triggered, &invoked] {
        assert_eq!(answer.status, 504, "{}", answer.text());
        let json = answer.json();
        assert!(
            json["error"].as_str().unwrap().contains("timeout"),
            "{json}"
        );
        assert_eq!(
            json["invocation_id"].as_str(),
            answer.header("x-isms-invocation-id")
        );
    }
}

/// `kernel.listen = "tcp://…"`: the kernel listens there for other hosts
/// (TLS only; `multihost.rs` joins them), the banner says so, and the
/// platform's own services keep the Unix socket.
#[test]
fn the_kernel_can_listen_on_tcp() {
    let port = isms_test_support::free_port();
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_KERNEL_LISTEN", &format!("tcp://127.0.0.1:{port}"))
        .start();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        p.output().contains(&format!(
            "Other hosts         tcp://127.0.0.1:{port} (TLS 1.3"
        )),
        "{}",
        p.output()
    );
    assert!(p.data_dir.join("run/kernel.sock").exists());
    p.login_admin();
    p.run(&["project", "create", "net"]);
    p.deploy_misbehave("net", "echo", "echo", "");
    let r = p.trigger("/net/echo", b"over tcp");
    assert_eq!((r.status, r.text().as_str()), (200, "over tcp"));
}
