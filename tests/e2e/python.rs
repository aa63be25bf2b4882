//! Python Doees end to end: CPython embedded in the Python runtime, in real
//! Workers in real sandboxes; their requirements fetched from PyPI.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, Platform, copy_dir, fixtures, http};

fn platform() -> Platform {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "plant"]);
    p
}

/// The project's logs once they say `what` (records are written in batches).
fn logs_say(p: &Platform, what: &str) -> String {
    isms_test_support::eventually(std::time::Duration::from_secs(10), what, || {
        let logs = p.run(&["logs", "plant"]);
        logs.contains(what).then_some(logs)
    })
}

fn call(p: &Platform, input: &str) -> http::Response {
    p.trigger("/plant/py", input.as_bytes())
}

/// Every Context function through a real Worker.
#[test]
fn a_python_doee_reaches_the_whole_context() {
    let p = platform();
    let dir = p.root.join("py");
    copy_dir(&fixtures().join("python"), &dir);
    let deployed = p.deploy(&dir, "plant");
    assert!(deployed.contains("Python 3."), "{deployed}");
    let r = call(&p, "hello edge");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Hello, edge! (PYTHON)")
    );
    assert_eq!(
        call(&p, "calls").text(),
        "2",
        "the interpreter and ctx.state stay warm"
    );
    let meta: serde_json::Value = serde_json::from_str(&call(&p, "meta").text()).unwrap();
    assert_eq!(meta["method"], "POST");
    assert_eq!(meta["doee"], "py");
    let r = call(&p, "respond");
    assert_eq!((r.status, r.text().as_str()), (201, "made"));
    assert_eq!(r.header("x-answer"), Some("42"));
    assert_eq!(call(&p, "sql").text(), "22.5");
    assert!(
        call(&p, "sql-error").text().starts_with("refused: "),
        "isms.Error"
    );
    assert_eq!(call(&p, "docs").text(), r#"["hi"]"#);
    let r = call(&p, "publish");
    assert!(r.text().contains("published; elsewhere: "), "{}", r.text());
    assert!(
        r.text().contains("may not publish on `elsewhere/x`"),
        "{}",
        r.text()
    );
    assert_eq!(call(&p, "nothing").text(), "");
    assert_eq!(call(&p, "echo me").text(), "echo me");
    logs_say(&p, "logged at error");
    let logs = p.run(&["logs", "plant"]);
    for level in ["debug", "info", "warn", "error"] {
        assert!(logs.contains(&format!("logged at {level}")), "{logs}");
    }
}

/// An exception, sys.exit(), os._exit() and an endless loop each fail
/// their invocation clearly, and the next invocation works.
#[test]
fn a_failing_python_doee_fails_only_its_invocation() {
    let p = platform();
    let dir = p.root.join("py");
    copy_dir(&fixtures().join("python"), &dir);
    p.deploy(&dir, "plant");
    for (input, status, says) in [
        ("raise", 500, "ValueError: the reading is out of range"),
        ("exit", 500, "the Doee called sys.exit(3)"),
        ("os-exit", 500, "exit"),
        ("loop", 504, "3000"),
    ] {
        let r = call(&p, input);
        assert_eq!(r.status, status, "{input}: {}", r.text());
        assert!(r.text().contains(says), "{input}: {}", r.text());
        assert_eq!(
            call(&p, "hello again").text(),
            "Hello, again! (PYTHON)",
            "after {input}"
        );
    }
    // The traceback is in the log.
    let logs = logs_say(&p, "Traceback (most recent call last)");
    assert!(
        logs.contains("ValueError: the reading is out of range"),
        "{logs}"
    );
    assert!(logs.contains("handler.py"), "{logs}");
}

/// A Python Doee cannot read the host's files nor reach the network.
#[test]
fn a_python_doee_is_sandboxed_like_any() {
    let p = platform();
    let dir = p.root.join("py");
    copy_dir(&fixtures().join("python"), &dir);
    p.deploy(&dir, "plant");
    assert!(
        call(&p, "files").text().starts_with("refused: "),
        "{}",
        call(&p, "files").text()
    );
    assert!(
        call(&p, "net").text().starts_with("refused: "),
        "{}",
        call(&p, "net").text()
    );
}

/// A syntax error fails the build naming the file and line; an import
/// error at load fails clearly; the previous version keeps serving.
#[test]
fn broken_python_is_refused_clearly() {
    let p = platform();
    let dir = p.root.join("py");
    copy_dir(&fixtures().join("python"), &dir);
    p.deploy(&dir, "plant");
    std::fs::write(dir.join("helper.py"), "def shout(word)\n    return word\n").unwrap();
    let said = p.deploy_refused(&dir, "plant");
    assert!(said.contains("helper.py, line 1"), "{said}");
    assert_eq!(call(&p, "hello").text(), "Hello, world! (PYTHON)");

    std::fs::write(dir.join("helper.py"), "import no_such_module\n").unwrap();
    p.deploy(&dir, "plant");
    let r = call(&p, "hello");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("cannot load handler.py"), "{}", r.text());
    assert!(
        r.text().contains("No module named 'no_such_module'"),
        "{}",
        r.text()
    );
}

/// A Doee named `name` of project `plant` with `handler` and a
/// requirements.txt of `requirements`.
fn python_doee(p: &Platform, name: &str, handler: &str, requirements: &str) -> std::path::PathBuf {
    let dir = p.root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("doee.toml"),
        format!(
            "name = \"{name}\"\nlanguage = \"python\"\n[resources]\ntimeout_ms = 5000\n\
             [[triggers.http]]\nroute = \"/{name}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("handler.py"), handler).unwrap();
    std::fs::write(dir.join("requirements.txt"), requirements).unwrap();
    dir
}

/// A pure-Python wheel and one with a compiled extension, from the real PyPI, are fetched, packed and used.
#[test]
fn requirements_come_from_pypi_as_wheels() {
    let p = platform();
    let handler = r#"
from dateutil import parser
import ujson

def execute(ctx, data):
    when = parser.parse(data.decode())
    return ujson.dumps({"year": when.year, "compiled": ujson.__file__.endswith(".so")})
"#;
    let dir = python_doee(&p, "dates", handler, "python-dateutil\nujson\n");
    let deployed = p.deploy(&dir, "plant");
    assert!(
        deployed.contains("fetching dependencies from https://pypi.org/simple"),
        "{deployed}"
    );
    for wheel in ["python_dateutil-", "ujson-"] {
        assert!(
            deployed.contains(&format!("Saved ./wheels/{wheel}")),
            "{deployed}"
        );
    }
    assert!(deployed.contains("fetched: "), "{deployed}");
    let r = p.trigger("/plant/dates", b"2026-12-05T10:00:00");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"year":2026,"compiled":true}"#)
    );
}

/// A package published only as source is refused naming it; options and
/// paths in requirements.txt are refused naming the line; and no setup.py
/// of the upload ever runs.
#[test]
fn what_is_not_a_wheel_is_refused_and_nothing_of_the_upload_runs() {
    let p = platform();
    let marker_setup =
        "import pathlib\npathlib.Path(__file__).with_name('MARKER').write_text('ran')\n";
    for (requirements, says) in [
        ("docopt==0.6.2\n", "docopt"),
        ("-e .\n", "requirements.txt line 1: `-e .` is an option"),
        (
            ".\n",
            "requirements.txt line 1: `.` is not a package of the index",
        ),
    ] {
        let dir = python_doee(
            &p,
            "bad",
            "def execute(ctx, data):\n    return data\n",
            requirements,
        );
        std::fs::write(dir.join("setup.py"), marker_setup).unwrap();
        let said = p.deploy_refused(&dir, "plant");
        assert!(said.contains(says), "{requirements}: {said}");
        if requirements.starts_with("docopt") {
            assert!(said.contains("only wheels are taken"), "{said}");
        }
    }
    let marker = std::process::Command::new("find")
        .arg(&p.data_dir)
        .args(["-name", "MARKER"])
        .output()
        .unwrap();
    assert!(
        marker.stdout.is_empty(),
        "a setup.py ran: {}",
        String::from_utf8_lossy(&marker.stdout)
    );
}

/// `isms new --lang python`: the scaffold's own test passes offline against
/// the SDK's fake context, and the scaffold deploys and serves.
#[test]
fn the_python_scaffold_tests_deploys_and_serves() {
    let p = platform();
    p.run(&["new", "sensor", "--lang", "python"]);
    let dir = p.root.join("sensor");
    for file in [
        "doee.toml",
        "handler.py",
        "requirements.txt",
        "test_handler.py",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let test = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success() && said.contains("OK"), "{said}");
    p.deploy(&dir, "plant");
    let r = p.trigger("/plant/sensor", b"ISMS");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, ISMS!"));
}
