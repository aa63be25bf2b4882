//! The web dashboard, in a real browser against a real platform: this test
//! starts `isms up`, prepares what a user would have (a viewer account, a
//! Doee folder and a `.tar.gz` of its next version, a session that has
//! expired), then runs `tests/browser/dashboard.mjs`, which drives Debian's
//! Chromium through playwright-core and saves a screenshot per step.
//!
//! A second test runs the dashboard's unit tests in node
//! (`tests/browser/units.test.mjs`).
//!
//! Needs `node`, `npm` and `/usr/bin/chromium` (`tests/run` installs them);
//! runs `npm ci` in `tests/browser` when `node_modules` is missing. Until
//! DBriver lands, run it with `ISMS_SQL_EXPECT=unavailable`: the SQL step
//! then checks that the console shows the platform's 503 message instead of
//! rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests may unwrap.

use isms_test_support::{Options, Platform, copy_dir, fixtures};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Doee the browser deploys: the `isms new` scaffold, logging a line
/// per invocation so the logs page has something to show.
const GREETER: &str = r#"//! hello: greets whoever the body names, and logs that it did.

use doee_sdk::{Context, Doee, Error, Level, export_doee};

#[derive(Default)]
pub struct Greeter {
    greeting: String,
}

impl Doee for Greeter {
    fn initialize(&mut self, ctx: &mut Context) -> Result<(), Error> {
        self.greeting = ctx.param("greeting").unwrap_or("Hello").to_string();
        Ok(())
    }

    fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
        let name = String::from_utf8_lossy(input);
        let name = match name.trim() {
            "" => "world",
            name => name,
        };
        ctx.log(Level::Info, &format!("greeted {name}"));
        // Streamed where the caller streams (the dashboard's Try it box).
        ctx.write(format!("{}, ", self.greeting).as_bytes())?;
        Ok(format!("{name}!").into_bytes())
    }
}

export_doee!(Greeter);
"#;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("browser")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// node, npm and Chromium, and playwright-core installed from the lock
/// file (once: both tests of this file need it, and run at the same time).
fn prepare_browser() {
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(install_browser);
}

fn install_browser() {
    for (program, package) in [("node", "nodejs"), ("npm", "npm")] {
        let found = Command::new(program).arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "`{program}` is not installed, and the dashboard is tested in a real browser: \
             apt-get install {package} chromium (or run tests/run, which installs what the tests need)"
        );
    }
    assert!(
        Path::new(&chromium()).exists(),
        "{} is missing: apt-get install chromium (or set CHROMIUM to a Chromium binary)",
        chromium()
    );
    let dir = browser_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
}

/// Makes a token look as if its lifetime had run out a minute ago, the way
/// Resadmin would see it after `resadmin.token_ttl_hours`.
fn expire(p: &Platform, token: &str) {
    let hash = isms_resadmin::auth::token_hash(token);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let db = p.data_dir.join("resadmin").join("state.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::ConnectOptions as _;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .busy_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let done = sqlx::query("UPDATE tokens SET expires_ms = ? WHERE hash = ?")
            .bind(now_ms - 60_000)
            .bind(hash)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            done.rows_affected(),
            1,
            "the token to expire is not in {db:?}"
        );
    });
    let refused = p.call_api("GET", "/api/v1/projects", Some(token), b"");
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(refused.text().contains("expired"), "{}", refused.text());
}

/// The page and its files: types, the Content-Security-Policy, caching.
fn check_files(p: &Platform) {
    let page = p.call_api("GET", "/", None, b"");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        page.text().contains(&format!("content=\"{}\"", p.triggers)),
        "the page does not name the trigger address"
    );
    assert!(
        page.text()
            .contains(&format!("content=\"mqtt://127.0.0.1:{}\"", p.mqtt_port)),
        "the page does not name the broker's address"
    );
    let script = p.call_api("GET", "/ui/app.js", None, b"");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(script.header("cache-control"), Some("no-cache"));
    let etag = script.header("etag").unwrap().to_string();
    let again = isms_test_support::http::request(
        "GET",
        &format!("{}/ui/app.js", p.api),
        &[("if-none-match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    let missing = p.call_api("GET", "/ui/nothing.js", None, b"");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
}

/// The dashboard's pure parts in node: the in-page tar writer (read back
/// by GNU tar) and the chart arithmetic.
#[test]
fn the_dashboards_tar_writer_and_charts_pass_their_unit_tests() {
    prepare_browser();
    let status = Command::new("node")
        .args(["--test", "units.test.mjs"])
        .current_dir(browser_dir())
        .status()
        .unwrap();
    assert!(status.success(), "tests/browser/units.test.mjs failed");
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    prepare_browser();
    // One attempt: the MQTT tab's dead letter is kept at once.
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_COMMSERVER_MQTT_MAX_ATTEMPTS", "1")
        .start();
    check_files(&p);

    let admin_password = std::fs::read_to_string(p.data_dir.join("initial-admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let admin = p.admin_token();
    let viewer = p.call_api(
        "POST",
        "/api/v1/users",
        Some(&admin),
        br#"{"username":"vera","password":"vera-password-1","role":"viewer"}"#,
    );
    assert_eq!(viewer.status, 201, "{}", viewer.text());
    let stale = p.login("admin", &admin_password);
    expire(&p, &stale);

    // v1: the scaffold with a log line; v2: the same greeting "Howdy",
    // packed the way `isms deploy` packs a directory.
    p.run(&["new", "hello", "--lang", "rust"]);
    let v1 = p.root.join("hello");
    std::fs::write(v1.join("src/lib.rs"), GREETER).unwrap();
    // A schedule the Triggers tab shows with its next firing (New Year's
    // midnight in Berlin: it does not fire during the test).
    let mut manifest = std::fs::read_to_string(v1.join("doee.toml")).unwrap();
    manifest
        .push_str("\n[[triggers.schedule]]\ncron = \"0 0 1 1 *\"\ntimezone = \"Europe/Berlin\"\n");
    std::fs::write(v1.join("doee.toml"), manifest).unwrap();
    let v2 = p.root.join("hello-v2");
    copy_dir(&v1, &v2);
    let manifest = std::fs::read_to_string(v2.join("doee.toml")).unwrap();
    assert!(manifest.contains("greeting = \"Hello\""), "{manifest}");
    std::fs::write(
        v2.join("doee.toml"),
        manifest.replace("greeting = \"Hello\"", "greeting = \"Howdy\""),
    )
    .unwrap();
    p.run(&["new", "sensor", "--lang", "python"]);
    let archive = p.root.join("hello-v2.tar.gz");
    std::fs::write(&archive, isms_resadmin::archive::pack(&v2).unwrap()).unwrap();

    // Kept after the test (the platform's directory is not).
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let run = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(browser_dir())
        .env("ISMS_URL", &p.api)
        .env("ISMS_TRIGGERS_URL", &p.triggers)
        .env("ISMS_MQTT_PORT", p.mqtt_port.to_string())
        .env("ISMS_MQTT_DOEE_DIR", fixtures().join("mqtt"))
        .env("ISMS_PYTHON_DOEE_DIR", p.root.join("sensor"))
        .env("ISMS_ADMIN_PASSWORD", &admin_password)
        .env("ISMS_VIEWER", "vera:vera-password-1")
        .env("ISMS_EXPIRED_TOKEN", &stale)
        .env("ISMS_DOEE_DIR", &v1)
        .env("ISMS_DOEE_V2_ARCHIVE", &archive)
        .env("ISMS_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", chromium())
        .output()
        .unwrap();
    // Captured, so a failure's report carries the browser's steps (CI
    // shows a failing test's own output, not what a child wrote).
    let steps = String::from_utf8_lossy(&run.stdout);
    println!("{steps}{}", String::from_utf8_lossy(&run.stderr));
    println!("screenshots: {}", screenshots.display());
    let failed: Vec<&str> = steps
        .lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("messages on the page"))
        .collect();
    assert!(
        run.status.success(),
        "the browser test failed: {}\n{}",
        failed.join("\n"),
        String::from_utf8_lossy(&run.stderr)
    );
}
