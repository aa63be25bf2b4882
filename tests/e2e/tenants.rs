//! Hostile and noisy neighbours: what a tenant's Doees (the C fixture
//! `tests/doees/hostile`) can take from other projects and from the host,
//! and how the platform starts where a newcomer would start it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_ipc::worker::{FromWorker, HostCall};
use isms_test_support::{INHERITED_FD, Options, Platform, eventually, rss_kib};
use std::time::{Duration, Instant};

fn options() -> Options {
    Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A platform with project `lab` and its `echo` Doee.
fn lab(options: Options) -> Platform {
    let p = options.start();
    p.login_admin();
    p.run(&["project", "create", "lab"]);
    p.deploy_hostile("lab", "echo", "echo", "");
    p
}

fn healthy(p: &Platform) {
    p.assert_healthy("/lab/echo");
}

/// The banner's `Limits` line when it names cgroups, or the line saying why
/// there are none.
fn cgroups(p: &Platform) -> Result<String, String> {
    let output = p.output();
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("Limits"))
        .expect("the banner has a Limits line")
        .trim()
        .to_string();
    if line.contains("WARNING") {
        Err(line)
    } else {
        Ok(line)
    }
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

const OUT_OF_MEMORY: &str = "killed for running out of memory";

/// `/dev/shm`, shared memory and forked children all count against one
/// Worker's memory: each attack ends at the Worker's 64 MB, the host does
/// not notice, and the next invocation works.
#[test]
fn a_workers_memory_is_bounded_all_together() {
    let p = lab(options());
    let limits = "[resources]\nmemory_mb = 64\ntimeout_ms = 30000\n";
    p.deploy_hostile("lab", "shm", "shm", limits);
    if let Err(why) = cgroups(&p) {
        eprintln!("no cgroups on this host ({why}): checking the fallback, a bounded /dev/shm");
        let r = p.trigger("/lab/shm", b"1536");
        assert_eq!(r.status, 200, "{}", r.text());
        let written: u64 = r.text().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(written <= 64, "{}", r.text());
        healthy(&p);
        return;
    }
    p.deploy_hostile("lab", "shared", "map-shared", limits);
    p.deploy_hostile("lab", "children", "fork-memory", limits);

    let before = mem_available_mib();
    let lowest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (lowest, done) = (lowest.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                lowest.fetch_min(mem_available_mib(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Each would take 1 to 1.8 GB without the Worker's cgroup.
    for (doee, input, held) in [
        ("shm", "1536", "wrote "),
        ("shared", "1024", "touched "),
        ("children", "30 60", "children that held their memory: "),
    ] {
        let r = p.trigger(&format!("/lab/{doee}"), input.as_bytes());
        let text = r.text();
        eprintln!("{doee} {input}: {} {text}", r.status);
        match r.status {
            500 => assert!(text.contains(OUT_OF_MEMORY), "{doee}: {text}"),
            200 => {
                // The Worker lived, so what it kept must fit the limit: at
                // most 64 MiB, or one child of 60.
                let kept: u64 = text
                    .strip_prefix(held)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX);
                let bound = if doee == "children" { 1 } else { 64 };
                assert!(kept <= bound, "{doee}: {text}");
            }
            other => panic!("{doee}: {other} {text}"),
        }
        healthy(&p);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let dipped = before.saturating_sub(lowest.load(std::sync::atomic::Ordering::Relaxed));
    eprintln!("the host's available memory dipped by {dipped} MiB at most");
    assert!(dipped < 600, "the host lost {dipped} MiB to a 64 MB Worker");
}

/// Children a Doee forks, even ones that leave its session and spin, die
/// when the invocation ends — also in a Worker kept warm.
#[test]
fn nothing_a_doee_starts_outlives_its_invocation() {
    let p = lab(options());
    p.deploy_hostile("lab", "spin", "spinners", "[resources]\nmin_warm = 1\n");
    healthy(&p);
    let r = p.trigger("/lab/spin", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "spawned 8 spinners0\n")
    );
    // The two Workers' Executors (echo's and spin's, kept warm), nothing more.
    let settled = || p.worker_processes().len() <= 2;
    eventually(Duration::from_secs(5), "the spinners to die", || {
        settled().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(settled(), "processes came back: {:?}", p.worker_processes());
    let r = p.trigger("/lab/spin", b"");
    assert_eq!(r.status, 200, "the warm Worker still serves");
    healthy(&p);
}

/// The frame a Worker sends for one platform call: ZMTP's short final
/// frame around the protocol's encoding.
fn host_call_frame() -> Vec<u8> {
    let call = FromWorker::HostCall(HostCall::Sql {
        query: "SELECT 1".into(),
        params: "[]".into(),
    });
    let body = call.encode().unwrap();
    let mut frame = vec![0x00, u8::try_from(body.len()).unwrap()];
    frame.extend_from_slice(&body);
    frame
}

/// A Worker can make the Doer hold almost nothing for it: platform calls
/// pipelined without reading the answers end the Worker at the second, and
/// a gigabyte on stderr without a newline is read and dropped.
#[test]
fn a_worker_cannot_make_the_doer_hold_its_memory() {
    let p = lab(options());
    p.deploy_hostile("lab", "flood", "flood", "");
    p.deploy_hostile(
        "lab",
        "noisy",
        "stderr",
        "[resources]\ntimeout_ms = 60000\n",
    );
    healthy(&p);
    let doer = p.pid_of("doer");
    let before = rss_kib(doer);

    let r = p.trigger("/lab/flood", &host_call_frame());
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text()
            .contains("made a platform call before its last one was answered"),
        "{}",
        r.text()
    );
    healthy(&p);

    let r = p.trigger("/lab/noisy", b"1024");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("wrote 1024 MiB"), "{}", r.text());
    healthy(&p);

    let after = rss_kib(doer);
    eprintln!(
        "the Doer's memory: {} MiB before, {} MiB after the flood and 1 GiB of stderr",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 64 * 1024,
        "the Doer grew from {before} to {after} KiB"
    );
}

/// Two projects holding every Worker with long invocations cannot keep a
/// third from being served: it preempts the project holding the most.
#[test]
fn a_third_project_is_served_while_two_hold_every_worker() {
    let p = options().env("ISMS_DOER_MAX_WORKERS", "4").start();
    p.login_admin();
    let sleeper = "[resources]\nconcurrency = 2\ntimeout_ms = 60000\n";
    for project in ["hog-a", "hog-b", "light"] {
        p.run(&["project", "create", project]);
    }
    p.deploy_hostile("hog-a", "sleep", "sleep", sleeper);
    p.deploy_hostile("hog-b", "sleep", "sleep", sleeper);
    p.deploy_hostile("light", "echo", "echo", "");
    let hogs: Vec<_> = ["hog-a", "hog-a", "hog-b", "hog-b"]
        .into_iter()
        .map(|project| {
            let url = format!("{}/{project}/sleep", p.triggers);
            std::thread::spawn(move || {
                isms_test_support::http::request("POST", &url, &[], b"40000")
            })
        })
        .collect();
    eventually(Duration::from_secs(20), "four busy Workers", || {
        (p.worker_processes().len() >= 4 && p.service("doer")["in_flight"] == 4).then_some(())
    });
    let asked = Instant::now();
    let r = p.trigger("/light/echo", b"served");
    let took = asked.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "served"));
    eprintln!("the third project was served in {took:?} while two held every Worker");
    assert!(
        took < Duration::from_secs(20),
        "it waited {took:?} for the hogs"
    );
    // One hog's invocation made room, and says why.
    let preempted = eventually(Duration::from_secs(5), "a preempted hog", || {
        hogs.iter().position(|h| h.is_finished())
    });
    let r = hogs.into_iter().nth(preempted).unwrap().join().unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text()
            .contains("stopped to give project `light` a Worker"),
        "{}",
        r.text()
    );
}

/// A user who is not a platform admin creates at most
/// `resadmin.quota_max_projects` projects; an admin is not bound.
#[test]
fn a_developer_creates_a_bounded_number_of_projects() {
    let p = options()
        .env("ISMS_RESADMIN_QUOTA_MAX_PROJECTS", "2")
        .start();
    let admin = p.admin_token();
    let user =
        serde_json::json!({"username": "dev", "password": "dev-password-1", "role": "developer"});
    let created = p.call_api(
        "POST",
        "/api/v1/users",
        Some(&admin),
        user.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let dev = p.login("dev", "dev-password-1");
    let create = |token: &str, name: &str| {
        let body = serde_json::json!({ "name": name }).to_string();
        p.call_api("POST", "/api/v1/projects", Some(token), body.as_bytes())
    };
    assert_eq!(create(&dev, "one").status, 201);
    assert_eq!(create(&dev, "two").status, 201);
    let refused = create(&dev, "three");
    assert_eq!(refused.status, 403, "{}", refused.text());
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("quota exceeded") && error.contains("quota_max_projects"),
        "{error}"
    );
    assert_eq!(create(&admin, "three").status, 201, "admins are not bound");
    let listed = p
        .call_api("GET", "/api/v1/projects", Some(&admin), b"")
        .text();
    assert!(listed.contains("\"three\""), "{listed}");
}

/// `/metrics` names a project only to who may see it.
#[test]
fn metrics_name_projects_only_to_who_may_see_them() {
    let secret = "prometheus-scrapes-with-this-0123456789";
    let p = lab(options().env("ISMS_CONTROL_GATE_METRICS_TOKEN", secret));
    p.run(&["project", "create", "other"]);
    p.deploy_hostile("other", "echo", "echo", "");
    assert_eq!(p.trigger("/lab/echo", b"x").status, 200);
    assert_eq!(p.trigger("/other/echo", b"x").status, 200);
    // Both invocations' records have reached Resadmin's counters.
    let secret_view = || p.call_api("GET", "/metrics", Some(secret), b"").text();
    eventually(
        Duration::from_secs(5),
        "both invocations in /metrics",
        || {
            let all = secret_view();
            (all.contains("project=\"lab\"") && all.contains("project=\"other\"")).then_some(())
        },
    );
    let metrics = |token: Option<&str>| p.call_api("GET", "/metrics", token, b"");
    let anonymous = metrics(None);
    assert_eq!(anonymous.status, 200);
    assert!(
        anonymous
            .text()
            .contains("isms_service_up{service=\"doer\"")
    );
    assert!(
        !anonymous.text().contains("lab") && !anonymous.text().contains("other"),
        "{}",
        anonymous.text()
    );
    let all = metrics(Some(secret)).text();
    assert!(
        all.contains("project=\"lab\"") && all.contains("project=\"other\""),
        "{all}"
    );
    let forged = p.call_api("GET", "/metrics", Some("not-a-token"), b"");
    assert_eq!(forged.status, 401, "{}", forged.text());

    // A developer of `lab` only sees `lab`.
    let admin = p.admin_token();
    let user =
        serde_json::json!({"username": "dev", "password": "dev-password-1", "role": "developer"});
    assert_eq!(
        p.call_api(
            "POST",
            "/api/v1/users",
            Some(&admin),
            user.to_string().as_bytes()
        )
        .status,
        201
    );
    let member = serde_json::json!({"username": "dev", "role": "developer"});
    let added = p.call_api(
        "POST",
        "/api/v1/projects/lab/members",
        Some(&admin),
        member.to_string().as_bytes(),
    );
    assert!(added.status < 300, "{}", added.text());
    let dev = p.login("dev", "dev-password-1");
    let own = metrics(Some(&dev)).text();
    assert!(
        own.contains("project=\"lab\"") && !own.contains("project=\"other\""),
        "{own}"
    );
}

/// A descriptor `isms up` inherited reaches no service and no Worker.
#[test]
fn an_inherited_descriptor_reaches_no_worker() {
    let marker = isms_test_support::temp_dir("inherited").join("inherited-secret");
    std::fs::write(&marker, "not for Doees").unwrap();
    let p = lab(options().inherit(&marker));
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/fd/{INHERITED_FD}", p.supervisor_pid())).unwrap(),
        marker,
        "the test really handed isms up the descriptor"
    );
    p.deploy_hostile("lab", "fds", "fds", "");
    let r = p.trigger("/lab/fds", b"");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("0 -> /dev/null"), "{}", r.text());
    assert!(!r.text().contains("inherited-secret"), "{}", r.text());
    for service in isms_test_support::SERVICES {
        let pid = p.pid_of(service);
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
            assert_ne!(target, marker, "the {service} holds the inherited file");
        }
    }
    let _ = std::fs::remove_dir_all(marker.parent().unwrap());
}

/// The calls the seccomp filter denies answer EPERM in a Worker.
#[test]
fn denied_system_calls_answer_eperm() {
    let p = lab(options());
    p.deploy_hostile("lab", "calls", "syscalls", "");
    let r = p.trigger("/lab/calls", b"");
    assert_eq!(r.status, 200);
    let report = r.text();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 13, "{report}");
    for line in lines {
        assert!(line.ends_with(": EPERM"), "{line}\n{report}");
    }
    healthy(&p);
}

/// Files the platform writes are its own (0600), but for what Workers and
/// builds must read.
#[test]
fn state_files_are_private() {
    let p = lab(options());
    assert_eq!(p.trigger("/lab/echo", b"x").status, 200);
    p.run(&["sql", "lab", "CREATE TABLE readings (value REAL)"]);
    p.run(&["sql", "lab", "INSERT INTO readings VALUES (21.5)"]);
    std::thread::sleep(Duration::from_millis(300)); // the invocation's record
    let shared = ["doer/cache/", "doer/bin/", "resadmin/doee-sdk/"];
    let mut checked = 0;
    let mut stack = vec![p.data_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            let relative = entry
                .path()
                .strip_prefix(&p.data_dir)
                .unwrap()
                .display()
                .to_string();
            if shared.iter().any(|s| relative.starts_with(s)) {
                continue;
            }
            assert_eq!(mode & 0o077, 0, "{relative} is {mode:o}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} files");
    for file in [
        "dbriver/sql/lab.db",
        "resadmin/state.db",
        "initial-admin-password",
    ] {
        assert!(p.data_dir.join(file).exists(), "{file}");
    }
}

/// As root, with the data directory under a directory only root may
/// enter (as `/root` is): Workers run as another uid and still start.
#[test]
fn starts_as_root_under_a_private_directory() {
    if !is_root() {
        eprintln!("SKIPPED: not running as root (the case is root's)");
        return;
    }
    let p = lab(options().private_root());
    healthy(&p);
}

/// As an ordinary user: the tests' own user, or `nobody` when they run as
/// root. Without rights to cgroups the banner says so.
#[test]
fn starts_as_an_ordinary_user() {
    let p = lab(if is_root() {
        options().as_user(65534)
    } else {
        options()
    });
    healthy(&p);
    let limits = cgroups(&p);
    eprintln!("as an ordinary user: {limits:?}");
    if let Err(line) = limits {
        assert!(line.contains("no cgroups ("), "{line}");
    }
}
