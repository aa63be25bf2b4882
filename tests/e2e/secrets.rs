//! Project secrets: set with the CLI, read by Doees of their project only,
//! never shown back, and nowhere on disk or in an answer in clear.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, copy_dir, fixtures};

#[test]
fn secrets_reach_their_projects_doees_and_nothing_else() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "demo"]);
    p.run(&["project", "create", "other"]);
    let value = format!("isms-secret-{}-f00d", std::process::id());
    p.set_secret("demo", "API_TOKEN", &value);
    p.deploy_misbehave("demo", "reader", "secret", "");
    p.deploy_misbehave("other", "reader", "secret", "");
    let described = |v: &str| format!("{} bytes ending in {}", v.len(), &v[v.len() - 2..]);

    // Its project's Doee reads it (a Rust Doee here, a Python one below).
    let r = p.trigger("/demo/reader", b"API_TOKEN");
    assert_eq!((r.status, r.text()), (200, described(&value)));
    // Another project's Doee cannot: it has no such secret.
    let r = p.trigger("/other/reader", b"API_TOKEN");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("has no secret API_TOKEN"), "{}", r.text());
    // A new value takes effect at the next invocation, without a redeploy.
    let changed = format!("{value}-2");
    p.set_secret("demo", "API_TOKEN", &changed);
    assert_eq!(
        p.trigger("/demo/reader", b"API_TOKEN").text(),
        described(&changed)
    );
    // A Python Doee reads it too.
    let dir = p.root.join("py");
    copy_dir(&fixtures().join("python"), &dir);
    p.deploy(&dir, "demo");
    let r = p.trigger("/demo/py", b"secret API_TOKEN");
    assert_eq!((r.status, r.text()), (200, described(&changed)));

    // Listed by name, for developers; never a value.
    let listed = p.run(&["secret", "list", "demo"]);
    assert!(listed.contains("API_TOKEN"), "{listed}");
    let token = p.admin_token();
    let api = p.call_api("GET", "/api/v1/projects/demo/secrets", Some(&token), b"");
    assert_eq!(api.status, 200);
    assert_eq!(api.json()[0]["name"], "API_TOKEN");
    assert!(api.json()[0].get("value").is_none(), "{}", api.text());
    // A viewer of the project cannot list them.
    let viewer = p.call_api(
        "POST",
        "/api/v1/users",
        Some(&token),
        br#"{"username":"vera","password":"vera-password-1","role":"viewer"}"#,
    );
    assert_eq!(viewer.status, 201, "{}", viewer.text());
    let added = p.call_api(
        "POST",
        "/api/v1/projects/demo/members",
        Some(&token),
        br#"{"username":"vera","role":"viewer"}"#,
    );
    assert!(added.status < 300, "{}", added.text());
    let vera = p.login("vera", "vera-password-1");
    let refused = p.call_api("GET", "/api/v1/projects/demo/secrets", Some(&vera), b"");
    assert_eq!(refused.status, 403, "{}", refused.text());
    // Bad names and bodies are refused clearly.
    let bad = p.call_api(
        "PUT",
        "/api/v1/projects/demo/secrets/1BAD",
        Some(&token),
        br#"{"value":"x"}"#,
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("secret name"), "{}", bad.text());
    let nul = p.call_api(
        "PUT",
        "/api/v1/projects/demo/secrets/WITH_NUL",
        Some(&token),
        br#"{"value":"a\u0000b"}"#,
    );
    assert_eq!(nul.status, 400, "{}", nul.text());
    assert!(nul.text().contains("NUL"), "{}", nul.text());

    // Nowhere in clear: not in any answer above, the metrics, the logs,
    // the records, or any file of the data directory.
    let metrics = p.call_api("GET", "/metrics", Some(&token), b"");
    let records = p.call_api(
        "GET",
        "/api/v1/projects/demo/invocations",
        Some(&token),
        b"",
    );
    let logs = p.run(&["logs", "demo"]);
    for (what, text) in [
        ("metrics", metrics.text()),
        ("records", records.text()),
        ("logs", logs),
        ("the list", api.text()),
    ] {
        for v in [&value, &changed] {
            assert!(!text.contains(v.as_str()), "the value is in the {what}");
        }
    }
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", &value])
        .arg(&p.data_dir)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "the value is in clear in {}",
        String::from_utf8_lossy(&grep.stdout)
    );

    // Deleted, it is gone for the Doee too.
    p.run(&["secret", "delete", "demo", "API_TOKEN"]);
    let r = p.trigger("/demo/reader", b"API_TOKEN");
    assert_eq!(r.status, 500, "{}", r.text());
}
