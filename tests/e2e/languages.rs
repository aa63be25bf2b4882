//! C and C++ Doees end to end, and the sandbox every build runs in: real
//! platforms, real compilers, real bubblewrap.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, Platform, http};
use std::process::Command;
use std::time::Duration;

fn platform() -> Platform {
    Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start()
}

/// A Doee's versions, builds and logs, from the REST API.
fn doee_info(p: &Platform, project: &str, doee: &str) -> serde_json::Value {
    let token = format!("Bearer {}", p.token());
    let r = http::request(
        "GET",
        &format!("{}/api/v1/projects/{project}/doees/{doee}", p.api),
        &[("authorization", &token)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The build log of one version.
fn build_log(p: &Platform, project: &str, doee: &str, version: u64) -> (String, String) {
    let info = doee_info(p, project, doee);
    let entry = info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"].as_u64() == Some(version))
        .unwrap_or_else(|| panic!("no version {version} in {info}"))
        .clone();
    (
        entry["build"]["status"].as_str().unwrap().to_string(),
        entry["build"]["log"].as_str().unwrap_or("").to_string(),
    )
}

fn get(p: &Platform, path: &str) -> http::Response {
    http::request("GET", &format!("{}{path}", p.triggers), &[], b"")
}

/// `make test` in a scaffolded Doee: its own test against the fake host.
fn make_test(dir: &std::path::Path) {
    let output = Command::new("make")
        .arg("test")
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains(" passed, 0 failed"),
        "`make test` in {} failed:\n{text}",
        dir.display()
    );
}

#[test]
fn scaffolded_c_and_cpp_doees_test_build_and_serve() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "langs"]);
    for (name, lang) in [("hello-c", "c"), ("hello-cpp", "cpp")] {
        let created = p.run(&["new", name, "--lang", lang]);
        assert!(created.contains("make test"), "{created}");
        // The scaffold's own test passes here, against the installed SDK.
        make_test(&p.root.join(name));
        let deployed = p.deploy(std::path::Path::new(name), "langs");
        assert!(deployed.contains("now active"), "{deployed}");
        assert!(deployed.contains("sandbox: bubblewrap"), "{deployed}");

        let r = p.trigger(&format!("/langs/{name}"), b"world");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello, world!"),
            "{name}"
        );
        let r = get(&p, &format!("/langs/{name}"));
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello, world!"),
            "{name}"
        );
        let r = p.trigger(&format!("/langs/{name}"), b" ISMS\n");
        assert_eq!(r.text(), "Hello, ISMS!", "{name}");
        let invoked = p.run(&["invoke", &format!("langs/{name}"), "-d", "CLI"]);
        assert_eq!(invoked, "Hello, CLI!", "{name}");
    }
}

/// Every function of `<isms/doee.h>` reaches the platform through the
/// Executor, as the Rust SDK's do.
#[test]
fn the_c_api_reaches_the_platform() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "capi"]);
    let dir = p.root.join("c-api");
    isms_test_support::copy_dir(&isms_test_support::fixtures().join("c-api"), &dir);
    p.deploy(&dir, "capi");

    let url = format!("{}/capi/c-api?x=1&y=two", p.triggers);
    let r = http::request("POST", &url, &[], b"abc\0def");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-lang"), Some("c"));
    assert_eq!(r.header("x-greeting"), Some("Hi"));
    let id = r.header("x-isms-invocation-id").unwrap().to_string();
    let expected = format!(
        "greeting=Hi\nmissing=(null)\ntrigger=http\nmethod=POST\npath=/c-api\nquery=x=1&y=two\n\
         project=capi\ndoee=c-api\ninvocation_id={id}\ncalls=1\ninput_len=7\ninput=abc\0def"
    );
    assert_eq!(r.text(), expected);

    // Its isms_log lines are in the invocation's record, with their levels.
    let token = p.admin_token();
    let record =
        isms_test_support::eventually(std::time::Duration::from_secs(5), "the record", || {
            let r = p.call_api(
                "GET",
                &format!("/api/v1/invocations/{id}"),
                Some(&token),
                b"",
            );
            (r.status == 200).then(|| r.json())
        });
    let logged: Vec<String> = record["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["level"].as_str().unwrap(),
                l["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        logged,
        [
            "error an error line",
            "warn a warning line",
            "info an info line",
            "debug a debug line"
        ],
        "{record}"
    );

    // One Worker, initialized once, serves the next call with GET.
    let r = get(&p, "/capi/c-api");
    assert_eq!(r.status, 201);
    let text = r.text();
    assert!(text.contains("method=GET\n"), "{text}");
    assert!(
        text.contains("query=\n") || text.contains("query=(null)\n"),
        "{text}"
    );
    assert!(text.contains("calls=2\n"), "{text}");

    // isms_error and a non-zero return: a 500 with the Doee's message.
    let r = p.trigger("/capi/c-api", b"fail");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "asked to fail");

    // The platform's services answer through the ABI: rows, or a reason.
    for call in ["sql", "doc", "publish", "invoke"] {
        let r = p.trigger("/capi/c-api", call.as_bytes());
        assert_eq!(r.status, 200, "{call}: {}", r.text());
        let text = r.text();
        let answer = text
            .strip_prefix(&format!("{call}="))
            .unwrap_or_else(|| panic!("{call}: {text}"));
        if let Some(reason) = answer.strip_prefix("refused: ") {
            assert!(reason.trim().len() > 5, "{call}: an empty reason: {text}");
        }
    }
    let r = p.trigger("/capi/c-api", b"invoke");
    assert!(
        r.text().contains("project `capi` has no Doee `nobody`"),
        "{}",
        r.text()
    );
    // And the Worker is still the first one.
    assert!(get(&p, "/capi/c-api").text().contains("calls=9\n"));

    // A failing initialize fails the invocation with its message.
    let manifest = std::fs::read_to_string(dir.join("doee.toml")).unwrap();
    std::fs::write(
        dir.join("doee.toml"),
        manifest.replace(
            "greeting = \"Hi\"",
            "greeting = \"Hi\"\nfail_initialize = \"yes\"",
        ),
    )
    .unwrap();
    p.deploy(&dir, "capi");
    let r = p.trigger("/capi/c-api", b"abc");
    assert_eq!(r.status, 500);
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("initialize was told to fail"), "{error}");
}

/// A C Doee whose compile fails: the build fails with the compiler's
/// message in its log, and the previous version keeps serving.
#[test]
fn a_failed_c_build_keeps_the_previous_version() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "broken"]);
    p.run(&["new", "greeter", "--lang", "c"]);
    p.deploy(std::path::Path::new("greeter"), "broken");
    assert_eq!(p.trigger("/broken/greeter", b"v1").text(), "Hello, v1!");

    let source = p.root.join("greeter/src/greeter.c");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(
        &source,
        text.replace(
            "return ISMS_OK;\n}\n\nstatic void",
            "return ISMS_OK\n}\n\nstatic void",
        ),
    )
    .unwrap();
    let out = p.try_deploy(std::path::Path::new("greeter"), "broken");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("previous version keeps serving"),
        "{printed}"
    );

    let (status, log) = build_log(&p, "broken", "greeter", 2);
    assert_eq!(status, "failed", "{log}");
    assert!(log.contains("src/greeter.c:"), "{log}");
    assert!(log.contains("error: expected"), "{log}");
    assert!(log.contains("cc failed"), "{log}");
    assert_eq!(
        p.trigger("/broken/greeter", b"still").text(),
        "Hello, still!"
    );

    // A source the manifest names but the upload lacks is the compiler's
    // error too.
    let manifest = p.root.join("greeter/doee.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("[\"src/greeter.c\"]", "[\"src/nowhere.c\"]"),
    )
    .unwrap();
    assert!(
        !p.try_deploy(std::path::Path::new("greeter"), "broken")
            .status
            .success()
    );
    let (_, log) = build_log(&p, "broken", "greeter", 3);
    assert!(log.contains("nowhere.c"), "{log}");
    assert_eq!(
        p.trigger("/broken/greeter", b"again").text(),
        "Hello, again!"
    );
}

/// A build script is user code: in its sandbox it reaches no network, no
/// file of the data directory or the host, writes nowhere but its own
/// directories, runs as the unprivileged build uid, and its memory is
/// bounded. A C compile cannot read host files either.
#[test]
fn builds_cannot_reach_the_network_or_the_host() {
    let p = platform();
    p.login_admin();
    p.run(&["project", "create", "walls"]);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let secret = p.root.join("shadow");
    std::fs::write(&secret, "root:secret-hash:19000:0:99999:7:::\n").unwrap();
    let escape = p.root.join("escaped-by-build");
    let probes = [
        format!("connect {}", listener.local_addr().unwrap()),
        format!("read {}", secret.display()),
        format!("read {}", p.data_dir.join("resadmin/state.db").display()),
        format!(
            "read {}",
            p.data_dir.join("initial-admin-password").display()
        ),
        "read /etc/passwd".to_string(),
        format!("write {}", escape.display()),
        "write /usr/escaped-by-build".to_string(),
        "allocate 3221225472".to_string(),
        "whoami".to_string(),
    ];
    let dir = p.root.join("build-probe");
    isms_test_support::copy_dir(&isms_test_support::fixtures().join("build-probe"), &dir);
    std::fs::write(dir.join("probes.txt"), probes.join("\n")).unwrap();
    let deployed = p.deploy(&dir, "walls");

    // The build log shows each probe's outcome (cargo prints the build
    // script's warnings); the Doee's output carries them too.
    let report = p.trigger("/walls/build-probe", b"").text();
    for probe in &probes[..8] {
        assert!(
            report.contains(&format!("{probe}: refused")),
            "`{probe}` was not refused:\n{report}\n{deployed}"
        );
        assert!(
            deployed.contains(&format!("probe {probe}: refused")),
            "{deployed}"
        );
    }
    for leak in ["CONNECTED", "READ", "WRITTEN", "ALLOCATED"] {
        assert!(
            !report.contains(leak),
            "the build sandbox leaked:\n{report}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "the build reached the host's listener"
    );
    assert!(!escape.exists());
    // As root, builds drop to the unprivileged uid; an ordinary user's
    // builds cannot change uid and run as that user.
    // SAFETY: getuid cannot fail.
    let uid = match unsafe { libc::getuid() } {
        0 => 65534,
        uid => uid,
    };
    assert!(report.contains(&format!("whoami: uid={uid}")), "{report}");

    // The compiler itself is as walled in: an #include of a host file
    // fails, and its content never reaches the build log.
    let dir = p.root.join("c-include");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("doee.toml"),
        "name = \"c-include\"\nlanguage = \"c\"\nsources = [\"src/steal.c\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/steal.c"),
        format!("#include \"{}\"\n", secret.display()),
    )
    .unwrap();
    let out = p.try_deploy(&dir, "walls");
    assert!(!out.status.success());
    let (status, log) = build_log(&p, "walls", "c-include", 1);
    assert_eq!(status, "failed");
    assert!(log.contains("No such file or directory"), "{log}");
    assert!(!log.contains("secret-hash"), "{log}");
}

/// `resadmin.build_network = true` lets builds reach the network (here, a
/// listener on this machine's loopback).
#[test]
fn the_operator_can_let_builds_reach_the_network() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_RESADMIN_BUILD_NETWORK", "true")
        .start();
    p.login_admin();
    p.run(&["project", "create", "online"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let probe = format!("connect {}", listener.local_addr().unwrap());
    let dir = p.root.join("build-probe");
    isms_test_support::copy_dir(&isms_test_support::fixtures().join("build-probe"), &dir);
    std::fs::write(dir.join("probes.txt"), &probe).unwrap();
    let deployed = p.deploy(&dir, "online");
    assert!(deployed.contains("network allowed"), "{deployed}");
    let report = p.trigger("/online/build-probe", b"").text();
    assert_eq!(report, format!("{probe}: CONNECTED"));
}

/// Past the build timeout the whole build is killed, the processes it left
/// behind included.
#[test]
fn a_hanging_build_is_killed_whole() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_RESADMIN_BUILD_TIMEOUT_S", "20")
        .start();
    p.login_admin();
    p.run(&["project", "create", "hangs"]);
    let dir = p.root.join("build-probe");
    isms_test_support::copy_dir(&isms_test_support::fixtures().join("build-probe"), &dir);
    // A marker no other process on the machine has.
    let marker = format!("{}", 900_000 + std::process::id() % 90_000);
    std::fs::write(dir.join("probes.txt"), format!("hang {marker}\n")).unwrap();
    let out = p.try_deploy(&dir, "hangs");
    assert!(!out.status.success());
    let (status, log) = build_log(&p, "hangs", "build-probe", 1);
    assert_eq!(status, "failed");
    assert!(log.contains("longer than 20 s and was stopped"), "{log}");
    let left_behind = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                cmdline.trim() == format!("sleep {marker}")
            })
    };
    isms_test_support::eventually(
        Duration::from_secs(5),
        "the build's processes to go",
        || (!left_behind()).then_some(()),
    );
}

/// Without a sandbox (`resadmin.build_isolation = "none"`, as on a host
/// without bubblewrap) builds still work, and every log says so loudly.
#[test]
fn an_unsandboxed_build_says_so() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_RESADMIN_BUILD_ISOLATION", "none")
        .start();
    p.login_admin();
    p.run(&["project", "create", "open"]);
    p.run(&["new", "plain", "--lang", "cpp"]);
    let deployed = p.deploy(std::path::Path::new("plain"), "open");
    assert!(
        deployed.contains("THIS BUILD IS NOT SANDBOXED"),
        "{deployed}"
    );
    assert_eq!(p.trigger("/open/plain", b"you").text(), "Hello, you!");
}
