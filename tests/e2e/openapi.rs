//! The OpenAPI description against real answers: one platform, the whole
//! REST API walked, each request body and each answer (2xx, 4xx and the
//! invocation errors) checked against what `openapi.json` declares for its
//! path, method and status. At the end every component schema must have
//! been reached by a real message, and every operation called, so the
//! document can neither drift from the API nor describe what nobody calls.
//! The checker is `isms_test_support::openapi`; what it understands, and
//! why it refuses properties a schema does not list, is said there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use isms_test_support::mqtt::{Connect, RawClient};
use isms_test_support::openapi::Document;
use isms_test_support::{Options, Platform, eventually, fixtures, http};
use serde_json::{Value, json};

/// The platform with the document it serves.
struct Api<'a> {
    p: &'a Platform,
    doc: Document,
}

impl Api<'_> {
    /// Calls the API, checking the request body and the answer against the
    /// document, and expects `status`; the answer's JSON (or null).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
        status: u16,
    ) -> Value {
        if let Err(e) = self.doc.check_request(method, path, body.as_bytes()) {
            panic!("{e}");
        }
        self.answer(method, path, token, body.as_bytes(), status)
    }

    /// Sends a body the document's schema refuses and expects the API to
    /// refuse it too (400): the two agree on what is malformed.
    fn refused(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> Value {
        assert!(
            self.doc
                .check_request(method, path, body.as_bytes())
                .is_err(),
            "openapi.json accepts {body} for {method} {path}, which the API refuses"
        );
        self.answer(method, path, token, body.as_bytes(), 400)
    }

    /// As [`Api::call`] for a body that is not JSON (an archive, a Doee's
    /// input): only the answer is checked.
    fn answer(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
        status: u16,
    ) -> Value {
        let response = self.p.call_api(method, path, token, body);
        assert_eq!(
            response.status,
            status,
            "{method} {path}: {}",
            response.text()
        );
        if let Err(e) = self.doc.check_response(method, path, &response) {
            panic!("{e}");
        }
        let json = response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        if json { response.json() } else { Value::Null }
    }
}

/// The `misbehave` fixture doing `mode`, as the `.tar.gz` a deploy takes;
/// `source` replaces its code when given.
fn misbehave(name: &str, mode: &str, timeout_ms: u32, source: Option<&str>) -> Vec<u8> {
    let dir = fixtures().join("misbehave");
    let manifest = format!(
        "name = \"{name}\"\nlanguage = \"rust\"\n\n[params]\nmode = \"{mode}\"\n\n\
         [resources]\ntimeout_ms = {timeout_ms}\n\n\
         [[triggers.http]]\nroute = \"/{name}\"\nmethods = [\"POST\"]\n\n\
         [[triggers.schedule]]\ncron = \"0 0 1 1 *\"\n"
    );
    let code = match source {
        Some(source) => source.as_bytes().to_vec(),
        None => std::fs::read(dir.join("src/lib.rs")).unwrap(),
    };
    let files = vec![
        ("doee.toml", manifest.into_bytes()),
        ("Cargo.toml", std::fs::read(dir.join("Cargo.toml")).unwrap()),
        ("src/lib.rs", code),
    ];
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

/// `GET path` as a Server-Sent Events stream: the answer's head (without
/// its endless body) and the data of its first `log` event.
fn first_log_event(p: &Platform, path: &str, token: &str) -> (http::Response, Value) {
    let host = p.api.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(stream).lines().map(Result::unwrap);
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .by_ref()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    // Each event arrives as one chunk, so its lines are whole.
    let mut after_log = false;
    let data = lines
        .find_map(|line| {
            let data = line.strip_prefix("data: ").filter(|_| after_log);
            after_log = line == "event: log";
            data.map(str::to_string)
        })
        .unwrap();
    let head = http::Response {
        status,
        headers,
        body: Vec::new(),
    };
    (head, serde_json::from_str(&data).unwrap())
}

#[test]
fn every_schema_matches_real_answers() {
    // A frozen Doer is marked down soon, for the answers of a degraded
    // platform at the end.
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_KERNEL_HEARTBEAT_TIMEOUT_MS", "2000")
        .start();
    let served = p.call_api("GET", "/api/v1/openapi.json", None, b"");
    assert_eq!(
        served.text(),
        include_str!("../../control-gate/src/openapi.json"),
        "the Control Gate serves another document than control-gate/src/openapi.json"
    );
    let doc = Document::new(&served.text()).unwrap_or_else(|e| panic!("{e}"));
    doc.check_response("GET", "/api/v1/openapi.json", &served)
        .unwrap();
    let api = Api { p: &p, doc };
    let admin = p.admin_token();
    let admin = Some(admin.as_str());

    // The system: health, metrics, services.
    api.call("GET", "/healthz", None, "", 200);
    api.call("GET", "/metrics", None, "", 200);
    api.call("GET", "/metrics", Some("isms_forged"), "", 401);
    let services = api.call("GET", "/api/v1/system/services", admin, "", 200);
    assert!(!services.as_array().unwrap().is_empty());

    // Sessions and users.
    let password = std::fs::read_to_string(p.data_dir.join("initial-admin-password")).unwrap();
    let login = |user: &str, password: &str| {
        let body = json!({ "username": user, "password": password }).to_string();
        api.call("POST", "/api/v1/auth/login", None, &body, 200)["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    login("admin", password.trim());
    let wrong = json!({ "username": "admin", "password": "not-the-password" }).to_string();
    api.call("POST", "/api/v1/auth/login", None, &wrong, 401);
    api.refused("POST", "/api/v1/auth/login", None, "{");
    api.refused(
        "POST",
        "/api/v1/auth/login",
        None,
        r#"{"username":"admin"}"#,
    );
    for (user, role) in [("dev", "developer"), ("view", "viewer"), ("temp", "viewer")] {
        let body =
            json!({ "username": user, "password": format!("password-of-{user}"), "role": role });
        api.call("POST", "/api/v1/users", admin, &body.to_string(), 201);
    }
    for refused in [
        json!({ "username": "short", "password": "1234567", "role": "viewer" }),
        json!({ "username": "root", "password": "password-of-root", "role": "root" }),
        json!({ "username": "more", "password": "password-of-more", "role": "viewer", "x": 1 }),
    ] {
        api.refused("POST", "/api/v1/users", admin, &refused.to_string());
    }
    let again = json!({ "username": "temp", "password": "password-again", "role": "viewer" });
    api.call("POST", "/api/v1/users", admin, &again.to_string(), 409);
    let users = api.call("GET", "/api/v1/users", admin, "", 200);
    assert_eq!(users.as_array().unwrap().len(), 4, "{users}");
    api.call("DELETE", "/api/v1/users/temp", admin, "", 204);
    api.call("DELETE", "/api/v1/users/ghost", admin, "", 404);
    let dev = login("dev", "password-of-dev");
    let view = login("view", "password-of-view");
    let (dev, view) = (Some(dev.as_str()), Some(view.as_str()));
    api.call("GET", "/api/v1/users", dev, "", 403);
    api.call("GET", "/api/v1/users", None, "", 401);

    // API tokens: the secret once, then listed without it, then revoked.
    let created = api.call(
        "POST",
        "/api/v1/tokens",
        dev,
        r#"{"name":"ci","days":7}"#,
        201,
    );
    assert!(created["token"].is_string(), "{created}");
    let listed = api.call("GET", "/api/v1/tokens", dev, "", 200);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none())
    );
    let revoke = format!("/api/v1/tokens/{}", created["id"].as_str().unwrap());
    api.call("DELETE", &revoke, dev, "", 204);
    api.call("DELETE", &revoke, dev, "", 404);
    api.refused("POST", "/api/v1/tokens", dev, r#"{"name":"x","days":0}"#);

    // Projects, members, quotas.
    api.call("POST", "/api/v1/projects", dev, r#"{"name":"shapes"}"#, 201);
    api.call("POST", "/api/v1/projects", dev, r#"{"name":"shapes"}"#, 409);
    api.call("POST", "/api/v1/projects", view, r#"{"name":"mine"}"#, 403);
    api.refused("POST", "/api/v1/projects", dev, r#"{"name":"Not A Name"}"#);
    let member = r#"{"username":"view","role":"viewer"}"#;
    api.call("POST", "/api/v1/projects/shapes/members", dev, member, 200);
    let owner = r#"{"username":"view","role":"owner"}"#;
    api.refused("POST", "/api/v1/projects/shapes/members", dev, owner);
    api.call("GET", "/api/v1/projects/shapes/members", view, "", 200);
    api.call(
        "DELETE",
        "/api/v1/projects/shapes/members/ghost",
        dev,
        "",
        404,
    );
    let projects = api.call("GET", "/api/v1/projects", view, "", 200);
    assert_eq!(projects.as_array().unwrap().len(), 1, "{projects}");
    api.call("GET", "/api/v1/projects/ghost", dev, "", 404);
    let quotas =
        r#"{"max_doees":10,"max_workers":16,"max_upload_bytes":16777216,"cpu_weight":200}"#;
    api.call("PUT", "/api/v1/projects/shapes/quotas", admin, quotas, 200);
    api.call("PUT", "/api/v1/projects/shapes/quotas", dev, quotas, 403);
    for cpu_weight in [0, 10_001] {
        let quotas = json!({ "max_doees": 1, "max_workers": 1, "max_upload_bytes": 1, "cpu_weight": cpu_weight });
        api.refused(
            "PUT",
            "/api/v1/projects/shapes/quotas",
            admin,
            &quotas.to_string(),
        );
    }

    // Doees: deploy through the API, watch the build, a second version,
    // a rollback.
    let doees = "/api/v1/projects/shapes/doees";
    let deploy = |name: &str, mode: &str, version: u64| {
        let archive = misbehave(name, mode, 1000, None);
        let deployed = api.answer("POST", doees, dev, &archive, 202);
        assert_eq!(deployed["version"], version, "{deployed}");
        let path = format!("{doees}/{name}");
        eventually(Duration::from_secs(300), "the build", || {
            let doee = api.call("GET", &path, view, "", 200);
            let build = &doee["versions"][version as usize - 1]["build"];
            assert_ne!(build["status"], "failed", "{doee}");
            (build["status"] == "succeeded" && doee["active_version"] == version).then_some(())
        });
    };
    deploy("echo", "echo", 1);
    deploy("echo", "respond", 2);
    deploy("boom", "panic", 1);
    deploy("slow", "spin", 1);
    let broken = misbehave("broken", "echo", 1000, Some("this is not Rust"));
    api.answer("POST", doees, dev, &broken, 202);
    let broken = eventually(Duration::from_secs(300), "the broken build", || {
        let doee = api.call("GET", &format!("{doees}/broken"), view, "", 200);
        (doee["versions"][0]["build"]["status"] == "failed").then_some(doee)
    });
    assert!(
        broken["versions"][0]["build"]["log"].is_string(),
        "{broken}"
    );
    let archive = misbehave("nope", "echo", 1000, None);
    api.answer("POST", doees, view, &archive, 403);
    api.answer("POST", doees, dev, b"not a gzip archive", 400);
    api.call("GET", doees, view, "", 200);
    api.call("GET", &format!("{doees}/ghost"), view, "", 404);

    // Invocations: an HTTP trigger of v2 (which logs), then v1 again
    // through the API, and one that panics.
    let triggered = p.trigger("/shapes/echo", b"over http");
    assert_eq!(triggered.status, 201, "{}", triggered.text());
    let http_id = triggered.header("x-isms-invocation-id").map(str::to_string);
    let rollback = format!("{doees}/echo/rollback");
    let rolled = api.call("POST", &rollback, dev, r#"{"version":1}"#, 200);
    assert_eq!(rolled["active_version"], 1, "{rolled}");
    api.call("POST", &rollback, dev, r#"{"version":9}"#, 404);
    api.call("POST", &rollback, view, r#"{"version":1}"#, 403);
    let invoke = format!("{doees}/echo/invoke");
    api.answer("POST", &invoke, dev, b"hello", 200);
    api.answer("POST", &invoke, view, b"hello", 403);
    let failed = api.answer("POST", &format!("{doees}/boom/invoke"), dev, b"x", 500);
    assert!(failed["invocation_id"].is_string(), "{failed}");
    let late = api.answer("POST", &format!("{doees}/slow/invoke"), dev, b"x", 504);
    assert!(late["invocation_id"].is_string(), "{late}");
    api.answer("POST", &format!("{doees}/broken/invoke"), dev, b"x", 409);
    let records = eventually(Duration::from_secs(10), "the records", || {
        let records = api.call("GET", "/api/v1/projects/shapes/invocations", view, "", 200);
        (records.as_array().unwrap().len() >= 3).then_some(records)
    });
    let http_record = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["trigger"] == "http")
        .unwrap_or_else(|| panic!("no record of the HTTP trigger: {records}"));
    if let Some(id) = &http_id {
        assert_eq!(http_record["id"], id.as_str());
    }
    let one = format!(
        "/api/v1/invocations/{}",
        http_record["id"].as_str().unwrap()
    );
    let record = api.call("GET", &one, view, "", 200);
    assert!(!record["logs"].as_array().unwrap().is_empty(), "{record}");
    api.call("GET", "/api/v1/invocations/ghost", view, "", 404);
    let lines = api.call(
        "GET",
        "/api/v1/projects/shapes/logs?limit=1000",
        view,
        "",
        200,
    );
    for source in ["build", "invocation"] {
        assert!(
            lines
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["source"] == source),
            "no {source} line: {lines}"
        );
    }
    api.call("GET", "/api/v1/projects/shapes/logs?limit=x", view, "", 400);
    let (head, event) = first_log_event(&p, "/api/v1/projects/shapes/logs?follow=1", view.unwrap());
    assert_eq!(head.status, 200);
    api.doc
        .check_response("GET", "/api/v1/projects/shapes/logs", &head)
        .unwrap();
    api.doc
        .check_value("LogLine", &event)
        .unwrap_or_else(|e| panic!("a followed log's event: {e}"));
    api.call(
        "GET",
        "/api/v1/projects/shapes/invocations?limit=x",
        view,
        "",
        400,
    );

    // Data: SQL and documents.
    let sql = "/api/v1/projects/shapes/sql";
    api.call(
        "POST",
        sql,
        dev,
        r#"{"query":"CREATE TABLE t (a INTEGER, b TEXT)"}"#,
        200,
    );
    let insert = r#"{"query":"INSERT INTO t VALUES (?, ?)","params":[1,"one"]}"#;
    api.call("POST", sql, dev, insert, 200);
    let rows = api.call("POST", sql, view, r#"{"query":"SELECT a, b FROM t"}"#, 403);
    assert!(rows["error"].is_string());
    let rows = api.call("POST", sql, dev, r#"{"query":"SELECT a, b FROM t"}"#, 200);
    assert_eq!(rows["rows"], json!([{ "a": 1, "b": "one" }]), "{rows}");
    api.call("POST", sql, dev, r#"{"query":"SELEKT"}"#, 400);
    api.refused("POST", sql, dev, r#"{"query":1}"#);
    api.call("GET", "/api/v1/projects/shapes/collections", view, "", 200);
    api.call(
        "GET",
        "/api/v1/projects/shapes/collections/things",
        view,
        "",
        200,
    );
    let bad_filter = "/api/v1/projects/shapes/collections/things?filter=nope";
    api.call("GET", bad_filter, view, "", 400);

    // MQTT: the fixture in `plant`, a granted namespace, a device whose
    // message ends as a dead letter, retried and purged.
    api.call("POST", "/api/v1/projects", dev, r#"{"name":"plant"}"#, 201);
    let mqtt_doee = {
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_dir_all(".", fixtures().join("mqtt")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    };
    api.answer("POST", "/api/v1/projects/plant/doees", dev, &mqtt_doee, 202);
    let doee = eventually(Duration::from_secs(300), "the MQTT Doee's build", || {
        let doee = api.call("GET", "/api/v1/projects/plant/doees/mqtt", dev, "", 200);
        assert_ne!(doee["versions"][0]["build"]["status"], "failed", "{doee}");
        (doee["active_version"] == 1).then_some(doee)
    });
    assert_eq!(doee["triggers"]["mqtt"][0]["reply_topic"], "plant/out");
    let topics = "/api/v1/projects/plant/topics";
    let granted = api.call(
        "PUT",
        topics,
        admin,
        r#"{"namespaces":["greenhouse/#"]}"#,
        200,
    );
    assert!(
        granted["namespaces"].to_string().contains("greenhouse/#"),
        "{granted}"
    );
    api.call("PUT", topics, dev, r#"{"namespaces":[]}"#, 403);
    api.refused("PUT", topics, admin, r#"{"namespaces":[],"more":1}"#);
    api.call("GET", "/api/v1/projects/plant", view, "", 404);
    let detail = api.call("GET", "/api/v1/projects/plant", dev, "", 200);
    assert!(
        !detail["members"].as_array().unwrap().is_empty(),
        "{detail}"
    );
    let devices = "/api/v1/projects/plant/devices";
    let device = api.call("POST", devices, dev, r#"{"name":"sensor"}"#, 201);
    api.call("POST", devices, dev, r#"{"name":"sensor"}"#, 409);
    api.refused("POST", devices, dev, r#"{"name":"Not A Name"}"#);
    api.call("GET", devices, dev, "", 200);
    let connect = Connect {
        login: Some((
            device["username"].as_str().unwrap().to_string(),
            device["secret"].as_str().unwrap().to_string(),
        )),
        ..Connect::v4("openapi-sensor")
    };
    let (mut client, _, code) = RawClient::connect(p.mqtt_port, &connect).unwrap();
    assert_eq!(code, 0, "the device was refused");
    let letters = "/api/v1/projects/plant/mqtt/dead-letters";
    let mut pkid = 0;
    let letter = eventually(Duration::from_secs(120), "a dead letter", || {
        // Triggers are subscribed a moment after the build: publish until
        // the Doee has run and failed (its publish outside the namespace
        // is refused).
        pkid += 1;
        client.publish(
            "plant/d1/in",
            b"publish elsewhere/x sneaky",
            1,
            false,
            pkid,
            false,
        );
        std::thread::sleep(Duration::from_millis(500));
        let letters = api.call("GET", letters, dev, "", 200);
        letters.as_array().unwrap().first().cloned()
    });
    let retry = json!({ "ids": [letter["id"]] }).to_string();
    let retried = api.call("POST", &format!("{letters}/retry"), dev, &retry, 200);
    assert_eq!(retried["retried"], 1, "{retried}");
    api.call("POST", &format!("{letters}/retry"), view, &retry, 404);
    api.call("POST", &format!("{letters}/purge"), dev, "", 200);
    api.call(
        "POST",
        &format!("{letters}/purge"),
        dev,
        r#"{"ids":[]}"#,
        200,
    );
    api.refused("POST", &format!("{letters}/purge"), dev, r#"{"ids":"all"}"#);
    api.call("DELETE", &format!("{devices}/sensor"), dev, "", 204);
    api.call("DELETE", &format!("{devices}/sensor"), dev, "", 404);

    // Secrets: set, listed by name, refused when malformed, deleted.
    let secrets = "/api/v1/projects/plant/secrets";
    api.call(
        "PUT",
        &format!("{secrets}/API_TOKEN"),
        dev,
        r#"{"value":"v"}"#,
        204,
    );
    api.call("GET", secrets, dev, "", 200);
    api.answer(
        "PUT",
        &format!("{secrets}/9LIVES"),
        dev,
        br#"{"value":"v"}"#,
        400,
    );
    api.refused(
        "PUT",
        &format!("{secrets}/API_TOKEN"),
        dev,
        r#"{"value":"v","more":1}"#,
    );
    api.call("DELETE", &format!("{secrets}/API_TOKEN"), dev, "", 204);
    api.call("DELETE", &format!("{secrets}/API_TOKEN"), dev, "", 404);
    client.disconnect();

    // Removal, and the end of a session.
    api.call("DELETE", &format!("{doees}/boom"), dev, "", 204);
    api.call("DELETE", &format!("{doees}/boom"), dev, "", 404);
    api.call(
        "DELETE",
        "/api/v1/projects/shapes/members/view",
        dev,
        "",
        204,
    );
    api.call("DELETE", "/api/v1/projects/plant", view, "", 404);
    api.call("DELETE", "/api/v1/projects/plant", dev, "", 204);
    api.call("POST", "/api/v1/auth/logout", dev, "", 204);
    api.call("POST", "/api/v1/auth/logout", dev, "", 401);

    // A frozen Doer: health degraded, the service down, an invocation
    // refused before it ran (so its error names no invocation).
    let doer = p.pid_of("doer") as i32;
    // SAFETY: pausing and resuming a process of our own platform.
    unsafe { libc::kill(doer, libc::SIGSTOP) };
    let health = eventually(
        Duration::from_secs(20),
        "the Doer to be marked down",
        || {
            let response = p.call_api("GET", "/healthz", None, b"");
            (response.status == 503).then(|| api.answer("GET", "/healthz", None, b"", 503))
        },
    );
    // SAFETY: as above.
    unsafe { libc::kill(doer, libc::SIGCONT) };
    assert!(health["down"].to_string().contains("doer"), "{health}");
    eventually(Duration::from_secs(20), "the Doer to be up again", || {
        let response = p.call_api("GET", "/healthz", None, b"");
        (response.status == 200).then_some(())
    });

    let unused = api.doc.unused_schemas();
    assert!(
        unused.is_empty(),
        "component schemas no real request or answer reached (an endpoint nobody \
         calls, or a walk that misses it): {unused:?}"
    );
    let uncalled = api.doc.uncalled_operations();
    assert!(uncalled.is_empty(), "operations never called: {uncalled:?}");
}
