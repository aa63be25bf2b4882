//! The authorisation matrix: every endpoint of the REST API, called by each
//! kind of caller, answers as it should (2xx, 401, 403 or 404), and the
//! refused calls change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::openapi::Document;
use isms_test_support::{Options, Platform};

/// The callers, in the order of each row's expectations.
const CALLERS: [&str; 7] = [
    "admin",     // platform admin, member of nothing
    "owner",     // platform developer, project admin of `alpha`
    "dev",       // developer member of `alpha`
    "view",      // viewer member of `alpha`
    "outsider",  // platform developer, not a member
    "no token",  // no Authorization header
    "bad token", // a token that was never issued
];

struct Row {
    method: &'static str,
    path: String,
    body: &'static str,
    expect: [u16; 7],
}

fn row(method: &'static str, path: &str, body: &'static str, expect: [u16; 7]) -> Row {
    Row {
        method,
        path: path.to_string(),
        body,
        expect,
    }
}

/// What the refused calls must not have changed.
fn snapshot(p: &Platform, admin: &str) -> String {
    let get = |path: &str| {
        let r = p.call_api("GET", path, Some(admin), b"");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    };
    let mut users = get("/api/v1/users");
    for user in users.as_array_mut().unwrap() {
        user.as_object_mut().unwrap().remove("created_ms");
    }
    let mut doees = get("/api/v1/projects/alpha/doees");
    for doee in doees.as_array_mut().unwrap() {
        for version in doee["versions"].as_array_mut().unwrap() {
            version.as_object_mut().unwrap().remove("build");
        }
    }
    format!(
        "users {users}\nprojects {}\nalpha {}\ndoees {doees}",
        get("/api/v1/projects"),
        get("/api/v1/projects/alpha"),
    )
}

#[test]
fn every_endpoint_checks_role_and_membership() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    let admin = p.admin_token();
    let post = |path: &str, token: &str, body: String| {
        let r = p.call_api("POST", path, Some(token), body.as_bytes());
        assert!(r.status < 300, "POST {path}: {} {}", r.status, r.text());
        r.json()
    };
    for (user, role) in [
        ("owner", "developer"),
        ("dev", "developer"),
        ("view", "viewer"),
        ("outsider", "developer"),
    ] {
        post(
            "/api/v1/users",
            &admin,
            format!(r#"{{"username":"{user}","password":"password-of-{user}","role":"{role}"}}"#),
        );
    }
    let owner = p.login("owner", "password-of-owner");
    post("/api/v1/projects", &owner, r#"{"name":"alpha"}"#.into());
    for (user, role) in [("dev", "developer"), ("view", "viewer")] {
        post(
            "/api/v1/projects/alpha/members",
            &owner,
            format!(r#"{{"username":"{user}","role":"{role}"}}"#),
        );
    }
    p.login_admin();
    p.deploy_misbehave("alpha", "echo", "echo", "");
    let invoked = p.call_api(
        "POST",
        "/api/v1/projects/alpha/doees/echo/invoke",
        Some(&admin),
        b"hi",
    );
    assert_eq!(invoked.status, 200, "{}", invoked.text());
    let invocation = invoked.header("x-isms-invocation-id").unwrap().to_string();
    let tokens: Vec<Option<String>> = vec![
        Some(admin.clone()),
        Some(owner),
        Some(p.login("dev", "password-of-dev")),
        Some(p.login("view", "password-of-view")),
        Some(p.login("outsider", "password-of-outsider")),
        None,
        Some("isms_0000000000000000000000000000000000000000000000000000000000000000".into()),
    ];
    // The invocation's record reaches Resadmin within a moment.
    isms_test_support::eventually(
        std::time::Duration::from_secs(5),
        "the invocation to be recorded",
        || {
            let r = p.call_api(
                "GET",
                &format!("/api/v1/invocations/{invocation}"),
                Some(&admin),
                b"",
            );
            (r.status == 200).then_some(())
        },
    );

    // admin, owner, dev, view, outsider, no token, bad token
    let viewer = [200, 200, 200, 200, 404, 401, 401];
    let rows = vec![
        row(
            "GET",
            "/api/v1/users",
            "",
            [200, 403, 403, 403, 403, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/users",
            r#"{"username":"dev","password":"whatever-long","role":"viewer"}"#,
            [409, 403, 403, 403, 403, 401, 401],
        ),
        row(
            "DELETE",
            "/api/v1/users/ghost",
            "",
            [404, 403, 403, 403, 403, 401, 401],
        ),
        row(
            "GET",
            "/api/v1/tokens",
            "",
            [200, 200, 200, 200, 200, 401, 401],
        ),
        row(
            "DELETE",
            "/api/v1/tokens/000000000000",
            "",
            [404, 404, 404, 404, 404, 401, 401],
        ),
        row(
            "GET",
            "/api/v1/projects",
            "",
            [200, 200, 200, 200, 200, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/projects",
            r#"{"name":"alpha"}"#,
            [409, 409, 409, 403, 409, 401, 401],
        ),
        row("GET", "/api/v1/projects/alpha", "", viewer),
        row("GET", "/api/v1/projects/alpha/members", "", viewer),
        row(
            "POST",
            "/api/v1/projects/alpha/members",
            r#"{"username":"view","role":"viewer"}"#,
            [200, 200, 403, 403, 404, 401, 401],
        ),
        row(
            "DELETE",
            "/api/v1/projects/alpha/members/outsider",
            "",
            [404, 404, 403, 403, 404, 401, 401],
        ),
        row(
            "PUT",
            "/api/v1/projects/alpha/quotas",
            r#"{"max_doees":50,"max_workers":32,"max_upload_bytes":16777216}"#,
            [200, 403, 403, 403, 403, 401, 401],
        ),
        row(
            "PUT",
            "/api/v1/projects/alpha/topics",
            r#"{"namespaces":[]}"#,
            [200, 403, 403, 403, 403, 401, 401],
        ),
        row("GET", "/api/v1/projects/alpha/doees", "", viewer),
        row(
            "POST",
            "/api/v1/projects/alpha/doees",
            "not a gzip archive",
            [400, 400, 400, 403, 404, 401, 401],
        ),
        row("GET", "/api/v1/projects/alpha/doees/echo", "", viewer),
        row(
            "POST",
            "/api/v1/projects/alpha/doees/echo/rollback",
            r#"{"version":1}"#,
            [200, 200, 200, 403, 404, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/projects/alpha/doees/echo/invoke",
            "hello",
            [200, 200, 200, 403, 404, 401, 401],
        ),
        row(
            "DELETE",
            "/api/v1/projects/alpha/doees/ghost",
            "",
            [404, 404, 404, 403, 404, 401, 401],
        ),
        row("GET", "/api/v1/projects/alpha/invocations", "", viewer),
        row(
            "GET",
            &format!("/api/v1/invocations/{invocation}"),
            "",
            viewer,
        ),
        row("GET", "/api/v1/projects/alpha/logs", "", viewer),
        row(
            "POST",
            "/api/v1/projects/alpha/sql",
            r#"{"query":"SELECT 1"}"#,
            [200, 200, 200, 403, 404, 401, 401],
        ),
        row("GET", "/api/v1/projects/alpha/collections", "", viewer),
        row(
            "GET",
            "/api/v1/projects/alpha/collections/things",
            "",
            viewer,
        ),
        row(
            "GET",
            "/api/v1/projects/alpha/mqtt/dead-letters",
            "",
            viewer,
        ),
        row(
            "GET",
            "/api/v1/system/services",
            "",
            [200, 200, 200, 200, 200, 401, 401],
        ),
        row("GET", "/healthz", "", [200; 7]),
        row("GET", "/api/v1/projects/alpha/devices", "", viewer),
        row(
            "POST",
            "/api/v1/projects/alpha/devices",
            r#"{"name":"Not A Name"}"#,
            [400, 400, 400, 403, 404, 401, 401],
        ),
        row(
            "DELETE",
            "/api/v1/projects/alpha/devices/ghost",
            "",
            [404, 404, 404, 403, 404, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/projects/alpha/mqtt/dead-letters/retry",
            r#"{"ids":[]}"#,
            [200, 200, 200, 403, 404, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/projects/alpha/mqtt/dead-letters/purge",
            r#"{"ids":[]}"#,
            [200, 200, 200, 403, 404, 401, 401],
        ),
        // Public, but a token that is not one is refused rather than
        // shown the anonymous view (which names no project).
        row("GET", "/metrics", "", [200, 200, 200, 200, 200, 200, 401]),
        row("GET", "/api/v1/openapi.json", "", [200; 7]),
        // Refused for all but the project's admins, who go last below.
        row(
            "DELETE",
            "/api/v1/projects/alpha",
            "",
            [0, 0, 403, 403, 404, 401, 401],
        ),
    ];
    let before = snapshot(&p, &admin);
    // Every answer, refusals included, must also be one the API description
    // declares (the full walk of its schemas is `openapi.rs`).
    let served = p.call_api("GET", "/api/v1/openapi.json", None, b"").text();
    let described = Document::new(&served).unwrap_or_else(|e| panic!("{e}"));
    let mut wrong = Vec::new();
    for row in &rows {
        for (i, token) in tokens.iter().enumerate() {
            if row.expect[i] == 0 {
                continue;
            }
            let r = p.call_api(row.method, &row.path, token.as_deref(), row.body.as_bytes());
            let expected = row.expect[i];
            let matches =
                r.status == expected || (expected == 200 && (200..300).contains(&r.status));
            if let Err(e) = described.check_response(row.method, &row.path, &r) {
                wrong.push(format!("as {}: {e}", CALLERS[i]));
            }
            if !matches {
                wrong.push(format!(
                    "{} {} as {}: {} (expected {expected}) {}",
                    row.method,
                    row.path,
                    CALLERS[i],
                    r.status,
                    r.text()
                ));
            }
            if r.status >= 400 {
                let error = r.json()["error"].as_str().map(str::to_string);
                assert!(
                    error.is_some_and(|e| !e.is_empty()),
                    "{} {} as {} answered {} without a JSON error",
                    row.method,
                    row.path,
                    CALLERS[i],
                    r.status
                );
            }
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    assert_eq!(
        snapshot(&p, &admin),
        before,
        "a refused call changed something"
    );

    // The outsider sees only their own projects; errors name the problem.
    let outsider = tokens[4].as_deref();
    let listed = p.call_api("GET", "/api/v1/projects", outsider, b"").json();
    assert_eq!(listed, serde_json::json!([]));
    let refused = p.call_api(
        "GET",
        "/api/v1/projects/alpha/doees",
        tokens[3].as_deref(),
        b"",
    );
    assert_eq!(refused.status, 200);
    let refused = p.call_api(
        "POST",
        "/api/v1/projects/alpha/doees/echo/invoke",
        tokens[3].as_deref(),
        b"",
    );
    assert!(
        refused.json()["error"].as_str().unwrap().contains("viewer"),
        "{}",
        refused.text()
    );
    let anonymous = p.call_api("GET", "/api/v1/projects", None, b"");
    assert!(
        anonymous.json()["error"]
            .as_str()
            .unwrap()
            .contains("log in"),
        "{}",
        anonymous.text()
    );

    // An API token: created once with its secret, listed without it, usable,
    // and gone once revoked.
    let view = tokens[3].as_deref();
    let created = p.call_api("POST", "/api/v1/tokens", view, br#"{"name":"ci","days":7}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let (secret, token_id) = (
        created["token"].as_str().unwrap().to_string(),
        created["id"].as_str().unwrap().to_string(),
    );
    let listed = p.call_api("GET", "/api/v1/tokens", view, b"").text();
    assert!(
        listed.contains(&token_id) && !listed.contains(&secret),
        "{listed}"
    );
    assert_eq!(
        p.call_api("GET", "/api/v1/projects/alpha", Some(&secret), b"")
            .status,
        200
    );
    let bad_days = p.call_api("POST", "/api/v1/tokens", view, br#"{"name":"x","days":0}"#);
    assert_eq!(bad_days.status, 400, "{}", bad_days.text());
    assert!(bad_days.text().contains("days"));
    let revoke = format!("/api/v1/tokens/{token_id}");
    assert_eq!(p.call_api("DELETE", &revoke, view, b"").status, 204);
    assert_eq!(
        p.call_api("GET", "/api/v1/projects/alpha", Some(&secret), b"")
            .status,
        401
    );

    // A revoked token stops working at once.
    let dev = tokens[2].as_deref();
    assert_eq!(
        p.call_api("POST", "/api/v1/auth/logout", dev, b"").status,
        204
    );
    let after = p.call_api("GET", "/api/v1/projects", dev, b"");
    assert_eq!(after.status, 401);
    assert!(
        after.json()["error"].as_str().unwrap().contains("revoked"),
        "{}",
        after.text()
    );

    // The project's admin may delete it; then it is gone for everyone.
    let owner = tokens[1].as_deref();
    assert_eq!(
        p.call_api("DELETE", "/api/v1/projects/alpha", owner, b"")
            .status,
        204
    );
    assert_eq!(
        p.call_api("GET", "/api/v1/projects/alpha", Some(&admin), b"")
            .status,
        404
    );
    // Its routes go with it (the CommServer reloads them on the event).
    isms_test_support::eventually(std::time::Duration::from_secs(5), "the route to go", || {
        (p.trigger("/alpha/echo", b"x").status == 404).then_some(())
    });
}

#[test]
fn quotas_refuse_with_a_clear_error() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_RESADMIN_QUOTA_MAX_DOEES", "1")
        .start();
    let admin = p.admin_token();
    p.login_admin();
    p.run(&["project", "create", "small"]);
    p.deploy_misbehave("small", "first", "echo", "");
    // Deploys the fixture's directory under another manifest.
    let dir = p.root.join("doee-first");
    let deploy = |manifest: Option<&str>| {
        if let Some(manifest) = manifest {
            std::fs::write(dir.join("doee.toml"), manifest).unwrap();
        }
        p.try_deploy(&dir, "small")
    };
    let second = deploy(None);
    assert!(
        second.status.success(),
        "redeploying the same Doee is not a new one"
    );
    let refused = deploy(Some("name = \"second\"\nlanguage = \"rust\"\n"));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("quota") && stderr.contains("max_doees"),
        "{stderr}"
    );
    // Workers: concurrency past the project's max_workers.
    let quotas = r#"{"max_doees":5,"max_workers":4,"max_upload_bytes":1000000}"#;
    let path = "/api/v1/projects/small/quotas";
    let set = p.call_api("PUT", path, Some(&admin), quotas.as_bytes());
    assert_eq!(set.status, 200, "{}", set.text());
    let refused = deploy(Some(
        "name = \"second\"\nlanguage = \"rust\"\n[resources]\nconcurrency = 4\n",
    ));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("max_workers"),
        "{stderr}"
    );
    let doees = p
        .call_api("GET", "/api/v1/projects/small/doees", Some(&admin), b"")
        .json();
    assert_eq!(
        doees.as_array().unwrap().len(),
        1,
        "a refused deploy left a Doee: {doees}"
    );
}
