//! DBriver's SQL, on SQLite and on PostgreSQL, from a Doee and from the
//! API: the same suite on both, including the cross-project attempts that
//! must be refused with nothing read or written, and 1,000 concurrent
//! increments that must count exactly 1,000.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{MongoWire, Options, Platform, PostgresDatabase, fixtures, http};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Suite {
    p: Platform,
    backend: Backend,
    token: String,
}

impl Suite {
    fn start(backend: Backend, postgres: Option<&PostgresDatabase>) -> Suite {
        let mut options = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
            .env("ISMS_DBRIVER_MAX_ROWS", "50")
            .env("ISMS_DBRIVER_STATEMENT_TIMEOUT_MS", "1500")
            .env("ISMS_DBRIVER_MAX_DB_MB", "1");
        if let Some(database) = postgres {
            options = options.env("ISMS_DBRIVER_SQL_URL", &database.url);
        }
        let p = options.start();
        let banner = p.output();
        let expected = match backend {
            Backend::Sqlite => "Databases           SQLite",
            Backend::Postgres => "Databases           PostgreSQL at 127.0.0.1",
        };
        assert!(banner.contains(expected), "{banner}");
        println!("databases: the SQL suite against {backend:?}");
        p.login_admin();
        let token = p.admin_token();
        Suite { p, backend, token }
    }

    /// `POST /sql` as the admin: the status and the JSON answer.
    fn api(&self, project: &str, query: &str, params: Value) -> (u16, Value) {
        let body = json!({ "query": query, "params": params }).to_string();
        let response = self.p.call_api(
            "POST",
            &format!("/api/v1/projects/{project}/sql"),
            Some(&self.token),
            body.as_bytes(),
        );
        (response.status, response.json())
    }

    /// The rows of a statement that must succeed through the API.
    fn rows(&self, project: &str, query: &str, params: Value) -> Value {
        let (status, answer) = self.api(project, query, params);
        assert_eq!(status, 200, "{:?}: `{query}`: {answer}", self.backend);
        answer["rows"].clone()
    }

    /// The same through the project's `data` Doee: the status and the body.
    fn doee(&self, project: &str, query: &str, params: Value) -> (u16, String) {
        let input = format!("sql {query}\n{params}");
        let response = self
            .p
            .trigger(&format!("/{project}/data"), input.as_bytes());
        (response.status, response.text())
    }

    fn id_column(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "id INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "id BIGSERIAL PRIMARY KEY",
        }
    }
}

fn run_suite(backend: Backend, postgres: Option<&PostgresDatabase>) {
    let s = Suite::start(backend, postgres);
    for project in ["alpha", "beta"] {
        s.p.run(&["project", "create", project]);
        s.p.deploy(&fixtures().join("data"), project);
    }

    // Statements with bound parameters, from the API: never spliced, so
    // the quote and the semicolon are data.
    s.rows(
        "alpha",
        &format!(
            "CREATE TABLE readings ({}, device TEXT NOT NULL, value DOUBLE PRECISION, note TEXT)",
            s.id_column()
        ),
        json!([]),
    );
    s.rows(
        "alpha",
        "CREATE INDEX readings_device ON readings (device)",
        json!([]),
    );
    let hostile = "it's; DROP TABLE readings; --";
    let (status, answer) = s.api(
        "alpha",
        "INSERT INTO readings (device, value, note) VALUES ($1, $2, $3)",
        json!(["d1", 21.5, hostile]),
    );
    assert_eq!(
        (status, &answer["rows_affected"]),
        (200, &json!(1)),
        "{answer}"
    );
    let (_, answer) = s.api(
        "alpha",
        "SELECT device, value, note FROM readings WHERE device = $1",
        json!(["d1"]),
    );
    assert_eq!(answer["columns"], json!(["device", "value", "note"]));
    assert_eq!(
        answer["rows"],
        json!([{ "device": "d1", "value": 21.5, "note": hostile }])
    );
    assert_eq!(
        s.rows(
            "alpha",
            "SELECT 7 AS i, 2.5 AS f, 'x' AS s, NULL AS z, $1 AS p",
            json!([true])
        ),
        json!([{ "i": 7, "f": 2.5, "s": "x", "z": null, "p": if backend == Backend::Sqlite { json!(1) } else { json!(true) } }])
    );
    let (status, answer) = s.api("alpha", "SELEC oops", json!([]));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("SQL error"),
        "{answer}"
    );
    let (status, answer) = s.api("alpha", "SELECT 1", json!({"not": "an array"}));
    assert_eq!(status, 400, "{answer}");

    // From a Doee: its own project's table, and only that.
    let (status, body) = s.doee("alpha", "SELECT count(*) AS n FROM readings", json!([]));
    assert_eq!((status, body.as_str()), (200, r#"[{"n":1}]"#));
    let (status, body) = s.doee("beta", "SELECT count(*) AS n FROM readings", json!([]));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("no such table") || body.contains("does not exist"),
        "{backend:?}: beta saw alpha's table: {body}"
    );
    s.rows(
        "beta",
        "CREATE TABLE readings (device TEXT, value DOUBLE PRECISION)",
        json!([]),
    );

    // Every way out of a project, from beta's Doee and from the API as
    // beta: refused, and alpha's data as it was.
    let alpha_file = s.p.data_dir.join("dbriver/sql/alpha.db");
    let stolen = s.p.root.join("stolen.db");
    let pwned = s.p.root.join("pwned");
    let attempts: Vec<String> = match backend {
        Backend::Sqlite => vec![
            format!("ATTACH DATABASE '{}' AS a", alpha_file.display()),
            format!("VACUUM INTO '{}'", stolen.display()),
            "PRAGMA database_list".into(),
            "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libz.so.1')".into(),
            "PRAGMA max_page_count = 1000000000".into(),
            "PRAGMA writable_schema = ON".into(),
            "PRAGMA journal_mode = OFF".into(),
        ],
        Backend::Postgres => vec![
            "SELECT * FROM isms_alpha.readings".into(),
            "INSERT INTO isms_alpha.readings (device) VALUES ('evil')".into(),
            "ALTER TABLE isms_alpha.readings ADD COLUMN evil INT".into(),
            "DROP SCHEMA isms_alpha CASCADE".into(),
            "CREATE TABLE isms_alpha.evil (a INT)".into(),
            "CREATE TABLE public.evil (a INT)".into(),
            format!("COPY (SELECT 1) TO PROGRAM 'touch {}'", pwned.display()),
            format!("COPY (SELECT 1) TO '{}'", pwned.display()),
            "SELECT pg_read_file('/etc/hostname')".into(),
            "CREATE EXTENSION IF NOT EXISTS dblink".into(),
            "SET ROLE isms".into(),
            "SET SESSION AUTHORIZATION isms".into(),
            "LOAD 'auto_explain'".into(),
        ],
    };
    for attempt in &attempts {
        let (status, answer) = s.api("beta", attempt, json!([]));
        assert!(
            status == 403 || status == 400,
            "{backend:?}: `{attempt}` from the API was not refused: {status} {answer}"
        );
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains("refused") || message.contains("permission denied"),
            "{backend:?}: `{attempt}`: {message}"
        );
        let (status, body) = s.doee("beta", attempt, json!([]));
        assert_eq!(status, 500, "{backend:?}: `{attempt}` from a Doee: {body}");
    }
    if backend == Backend::Postgres {
        // A changed search_path is harmless and lasts one call.
        s.rows("beta", "SET search_path TO isms_alpha", json!([]));
        assert_eq!(
            s.rows("beta", "SELECT count(*) AS n FROM readings", json!([])),
            json!([{ "n": 0 }])
        );
    }
    assert_eq!(
        s.rows(
            "alpha",
            "SELECT device, value, note FROM readings",
            json!([])
        ),
        json!([{ "device": "d1", "value": 21.5, "note": hostile }]),
        "{backend:?}: alpha's data changed"
    );
    assert!(!stolen.exists() && !pwned.exists(), "a file was written");

    // 1,000 concurrent increments, each one statement from a Doee.
    s.rows(
        "alpha",
        "CREATE TABLE counter (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
        json!([]),
    );
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..32 {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < 1000 {
                    let url = format!("{}/alpha/data", s.p.triggers);
                    let response = http::request("POST", &url, &[], b"count");
                    if response.status != 200 {
                        failures.lock().unwrap().push(response.text());
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(
        s.rows(
            "alpha",
            "SELECT n FROM counter WHERE name = 'calls'",
            json!([])
        ),
        json!([{ "n": 1000 }]),
        "{backend:?}: increments were lost or doubled"
    );

    // Limits: rows, time, size; each a clear error.
    let up_to = |n: u32| {
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c"
        )
    };
    assert_eq!(
        s.rows("alpha", &up_to(50), json!([]))
            .as_array()
            .unwrap()
            .len(),
        50
    );
    let (status, answer) = s.api("alpha", &up_to(51), json!([]));
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("more than 50 rows"),
        "{answer}"
    );
    let forever =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let (status, answer) = s.api("alpha", forever, json!([]));
    assert_eq!(status, 504, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("1500 ms"),
        "{answer}"
    );
    let (status, body) = s.doee("alpha", forever, json!([]));
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("1500 ms"), "{body}");
    s.rows("alpha", "CREATE TABLE big (b TEXT)", json!([]));
    let fill = match backend {
        // ~100 KiB of incompressible text per statement.
        Backend::Sqlite => "INSERT INTO big SELECT hex(randomblob(50000))",
        Backend::Postgres => {
            "INSERT INTO big SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3200)"
        }
    };
    let refused = (0..200).find_map(|_| {
        let (status, answer) = s.api("alpha", fill, json!([]));
        if status == 200 {
            // PostgreSQL's size is measured every few seconds.
            std::thread::sleep(std::time::Duration::from_millis(50));
            return None;
        }
        Some((status, answer))
    });
    let (status, answer) = refused.expect("the size limit never refused an insert");
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("size limit of 1 MiB"),
        "{answer}"
    );
    // Reading and deleting still work at the limit.
    s.rows("alpha", "SELECT count(*) AS n FROM big", json!([]));
    s.rows("alpha", "DELETE FROM big", json!([]));

    // Deleting a project deletes its database: a new project of that name starts empty.
    let deleted =
        s.p.call_api("DELETE", "/api/v1/projects/alpha", Some(&s.token), b"");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    s.p.run(&["project", "create", "alpha"]);
    let (status, answer) = s.api("alpha", "SELECT count(*) AS n FROM readings", json!([]));
    assert_eq!(
        status, 400,
        "{backend:?}: the old database survived: {answer}"
    );
}

#[test]
fn sql_on_sqlite_from_doees_and_the_api() {
    run_suite(Backend::Sqlite, None);
}

#[test]
fn sql_on_postgres_from_doees_and_the_api() {
    let database = PostgresDatabase::create();
    run_suite(Backend::Postgres, Some(&database));
}

#[test]
fn sql_for_a_project_that_does_not_exist_creates_nothing() {
    // Access is checked before DBriver is asked: no file appears.
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    let token = p.admin_token();
    let response = p.call_api(
        "POST",
        "/api/v1/projects/nowhere/sql",
        Some(&token),
        br#"{"query": "SELECT 1"}"#,
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        p.data_dir
            .join("dbriver/sql")
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn documents_on_the_embedded_store_from_doees_and_the_api() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    assert!(p.output().contains("embedded documents"), "{}", p.output());
    documents_suite(&p);
}

#[test]
fn documents_on_mongodb_from_doees_and_the_api() {
    let server = MongoWire::start();
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_DBRIVER_MONGODB_URL", &server.url)
        .start();
    assert!(
        p.output().contains("MongoDB at 127.0.0.1"),
        "{}",
        p.output()
    );
    println!(
        "databases: the documents suite against the MongoDB-wire server at {}",
        server.url
    );
    documents_suite(&p);
}

/// Documents from a Doee and through the API, each project seeing its own.
fn documents_suite(p: &Platform) {
    p.login_admin();
    let token = p.admin_token();
    for project in ["alpha", "beta"] {
        p.run(&["project", "create", project]);
        p.deploy(&fixtures().join("data"), project);
    }
    let doc = |project: &str, op: &str, collection: &str, json: &str| {
        let input = format!("doc {op} {collection}\n{json}");
        let response = p.trigger(&format!("/{project}/data"), input.as_bytes());
        (response.status, response.text())
    };
    for (device, temp) in [("d1", 19.5), ("d2", 23.0), ("d3", 25.5)] {
        let (status, body) = doc(
            "alpha",
            "insert",
            "readings",
            &json!({ "device": device, "temp": temp, "tags": ["greenhouse"] }).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        assert!(
            serde_json::from_str::<Value>(&body).unwrap()["id"].is_string(),
            "{body}"
        );
    }
    let (status, body) = doc(
        "alpha",
        "find",
        "readings",
        r#"{"filter": {"temp": {"$gte": 20}}, "projection": {"device": 1, "_id": 0}, "sort": {"temp": -1}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([{ "device": "d3" }, { "device": "d2" }])
    );
    let (status, body) = doc(
        "alpha",
        "update",
        "readings",
        r#"{"filter": {"device": "d1"}, "update": {"$inc": {"temp": 1}, "$set": {"checked": true}}}"#,
    );
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({ "matched": 1, "modified": 1 }))
    );
    let (status, body) = doc(
        "alpha",
        "find",
        "readings",
        r#"{"filter": {"$regex": "x"}}"#,
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("$regex"),
        "the error names the operator: {body}"
    );

    // The API browses the same documents; another project sees none.
    let get = |project: &str, path: &str| {
        let response = p.call_api(
            "GET",
            &format!("/api/v1/projects/{project}/collections{path}"),
            Some(&token),
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    };
    assert_eq!(
        get("alpha", ""),
        json!([{ "name": "readings", "count": 3 }])
    );
    let filter = "%7B%22checked%22%3Atrue%7D"; // {"checked":true}
    let found = get("alpha", &format!("/readings?filter={filter}&limit=5"));
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["temp"], json!(20.5));
    assert_eq!(get("beta", ""), json!([]));
    assert_eq!(get("beta", "/readings"), json!([]));
    let (status, body) = doc("beta", "find", "readings", "{}");
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, body) = doc("beta", "delete", "readings", "{}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        get("alpha", ""),
        json!([{ "name": "readings", "count": 3 }])
    );
}
