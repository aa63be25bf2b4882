//! More than one machine (SPEC §10): Doers and CommServers on other hosts,
//! simulated with network namespaces on a bridge the test makes, joined to
//! the kernel over its TLS link with the join key.
//!
//! Each test skips, saying why, where it cannot make namespaces (not root);
//! `tests/run` runs the tests as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::netns::{Host, Joined, Network};
use isms_test_support::{Options, Platform, copy_dir, eventually, fixtures, free_port, http};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_isms");

/// A platform whose kernel listens on the test's bridge, and its join key.
struct Fleet {
    p: Platform,
    network: Network,
    endpoint: String,
    key_file: PathBuf,
}

impl Fleet {
    fn start(options: Options) -> Option<Fleet> {
        Some(Fleet::on(network()?, options))
    }

    fn on(network: Network, options: Options) -> Fleet {
        let endpoint = format!("tcp://{}:{}", network.kernel_ip, free_port());
        let p = options
            .env("ISMS_KERNEL_LISTEN", &endpoint)
            .env("ISMS_KERNEL_HEARTBEAT_TIMEOUT_MS", "1500")
            .start();
        p.login_admin();
        let output = std::process::Command::new(EXE)
            .args(["join-key", "--data-dir", p.data_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let key_file = p.root.join("join.key");
        std::fs::write(&key_file, &output.stdout).unwrap();
        Fleet {
            p,
            network,
            endpoint,
            key_file,
        }
    }

    fn join(&self, host: &Host, service: &str, extra: &[&str]) -> Joined {
        host.join(
            Path::new(EXE),
            &self.endpoint,
            service,
            &self.key_file,
            &self.p.root,
            extra,
        )
    }

    /// The Services Controller's entry for `instance`, once it is up.
    fn wait_up(&self, instance: &str, joined: &Joined) -> serde_json::Value {
        let entry = eventually(
            Duration::from_secs(60),
            &format!("{instance} to be up"),
            || {
                let entry = self.instance(instance)?;
                (entry["status"] == "up").then_some(entry)
            },
        );
        eprintln!("{instance} joined:\n{}", joined.output());
        entry
    }

    fn instance(&self, instance: &str) -> Option<serde_json::Value> {
        let token = self.p.admin_token();
        let response = http::try_request(
            "GET",
            &format!("{}/api/v1/system/services", self.p.api),
            &[("authorization", &format!("Bearer {token}"))],
            b"",
        )
        .ok()?;
        response
            .json()
            .as_array()?
            .iter()
            .find(|s| s["instance"] == instance)
            .cloned()
    }

    /// The Doer instances that ran the project's recorded invocations.
    fn ran_on(&self, project: &str) -> Vec<(String, String)> {
        self.records(project)
            .iter()
            .map(|r| {
                (
                    r["instance"].as_str().unwrap().to_string(),
                    r["host"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The Doer instances that ran the Doee `doee`.
    fn ran_doee_on(&self, project: &str, doee: &str) -> String {
        let instances: Vec<String> = self
            .records(project)
            .iter()
            .filter(|r| r["doee"] == doee)
            .map(|r| r["instance"].as_str().unwrap().to_string())
            .collect();
        instances.join(" ")
    }

    fn records(&self, project: &str) -> Vec<serde_json::Value> {
        let token = self.p.admin_token();
        let records = self.p.call_api(
            "GET",
            &format!("/api/v1/projects/{project}/invocations?limit=1000"),
            Some(&token),
            b"",
        );
        records.json().as_array().unwrap().clone()
    }
}

/// The test's own bridge, or `None` (the test skips) saying why not.
fn network() -> Option<Network> {
    match Network::create() {
        Ok(network) => Some(network),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

fn options() -> Options {
    Options::new(EXE, env!("CARGO_TARGET_TMPDIR"))
}

/// Deploys the `data` fixture under `name`, with `extra` appended to its
/// manifest.
fn deploy_data(p: &Platform, project: &str, name: &str, extra: &str) {
    let dir = p.root.join(format!("doee-{name}"));
    copy_dir(&fixtures().join("data"), &dir);
    let manifest = std::fs::read_to_string(dir.join("doee.toml"))
        .unwrap()
        .replace("name = \"data\"", &format!("name = \"{name}\""))
        .replace("route = \"/data\"", &format!("route = \"/{name}\""));
    std::fs::write(dir.join("doee.toml"), format!("{manifest}\n{extra}")).unwrap();
    p.deploy(&dir, project);
}

/// A Doer joined from another host serves invocations placed on it, its
/// records name it and its host, its Doees' SQL reaches the project's
/// database through the kernel, and work not placed anywhere is spread over
/// it and the kernel's own Doer.
#[test]
fn a_doer_on_another_host_serves_and_reaches_the_database() {
    let Some(mut fleet) = Fleet::start(options()) else {
        return;
    };
    let shed = fleet.network.host("shed");
    let joined = fleet.join(&shed, "doer", &["--capacity", "4", "--label", "site=shed"]);
    let entry = fleet.wait_up("doer@shed", &joined);
    assert_eq!(entry["host"], "shed", "{entry}");
    assert_eq!(entry["labels"]["site"], "shed", "{entry}");
    assert_eq!(entry["capacity"], 4, "{entry}");
    assert!(
        entry["remote"].as_str().unwrap().starts_with(&shed.address),
        "{entry}"
    );
    let status = fleet.p.run(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("doer@shed") && l.contains("site=shed")),
        "{status}"
    );

    let p = &fleet.p;
    p.run(&["project", "create", "farm"]);
    deploy_data(
        p,
        "farm",
        "near",
        "[placement]\nlabels = { site = \"shed\" }\n",
    );
    let sql = |statement: &str| p.trigger("/farm/near", format!("sql {statement}\n[]").as_bytes());
    let r = sql("CREATE TABLE readings (value REAL)");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sql("INSERT INTO readings VALUES (21.5)").status, 200);
    let r = sql("SELECT value FROM readings");
    assert!(r.text().contains("21.5"), "{}", r.text());
    // What the remote Doer wrote is in the project's database, as the
    // platform's own SQL endpoint reads it.
    let token = p.admin_token();
    let rows = p.call_api(
        "POST",
        "/api/v1/projects/farm/sql",
        Some(&token),
        br#"{"query": "SELECT value FROM readings"}"#,
    );
    assert_eq!(rows.json()["rows"], serde_json::json!([{ "value": 21.5 }]));
    let ran_on = eventually(Duration::from_secs(10), "the records", || {
        let ran_on = fleet.ran_on("farm");
        (ran_on.len() == 3).then_some(ran_on)
    });
    assert!(
        ran_on
            .iter()
            .all(|(instance, host)| instance == "doer@shed" && host == "shed"),
        "{ran_on:?}"
    );

    // Not placed: calls one at a time take turns over both Doers.
    p.deploy_misbehave("farm", "echo", "echo", "");
    for _ in 0..10 {
        assert_eq!(p.trigger("/farm/echo", b"hi").text(), "hi");
    }
    let ran_on = eventually(Duration::from_secs(10), "the records", || {
        let ran_on = fleet.ran_on("farm");
        (ran_on.len() == 13).then_some(ran_on)
    });
    let remote = ran_on.iter().filter(|(i, _)| i == "doer@shed").count();
    let local = ran_on.iter().filter(|(i, _)| i == "doer-1").count();
    assert!(remote >= 3 + 3 && local >= 3, "{ran_on:?}");

    // Placed where no Doer is: 503 at once, saying so.
    deploy_data(
        p,
        "farm",
        "far",
        "[placement]\nlabels = { site = \"moon\" }\n",
    );
    let r = p.trigger("/farm/far", b"sql SELECT 1\n[]");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("site=moon"), "{}", r.text());
}

/// Two Doers on two hosts share a load; one's cable is pulled: what it was
/// running is answered (503, not a hang), what waited inside it runs on the
/// other, new work goes to the other, and once the cable is back it joins
/// again by itself and serves.
#[test]
fn a_cut_link_fails_what_ran_moves_what_waited_and_heals() {
    let Some(mut fleet) = Fleet::start(options()) else {
        return;
    };
    let (a, b) = (fleet.network.host("edge-a"), fleet.network.host("edge-b"));
    let joined_a = fleet.join(&a, "doer", &["--label", "zone=edge", "--label", "site=a"]);
    let joined_b = fleet.join(&b, "doer", &["--label", "zone=edge", "--label", "site=b"]);
    fleet.wait_up("doer@edge-a", &joined_a);
    fleet.wait_up("doer@edge-b", &joined_b);
    let p = &fleet.p;
    p.run(&["project", "create", "ops"]);
    let edge = "[placement]\nlabels = { zone = \"edge\" }\n";
    p.deploy_misbehave("ops", "echo", "echo", edge);
    let on_a = "[resources]\ntimeout_ms = 60000\n[placement]\nlabels = { site = \"a\" }\n";
    p.deploy_misbehave("ops", "slow", "by-input", on_a);
    for _ in 0..10 {
        assert_eq!(p.trigger("/ops/echo", b"hi").status, 200);
    }
    let ran_on = eventually(Duration::from_secs(10), "the records", || {
        let ran_on = fleet.ran_on("ops");
        (ran_on.len() == 10).then_some(ran_on)
    });
    for instance in ["doer@edge-a", "doer@edge-b"] {
        assert!(
            ran_on.iter().filter(|(i, _)| i == instance).count() >= 3,
            "{ran_on:?}"
        );
    }

    // Work queued on both Doers, one at a time each: edge-a runs one, has
    // the next sent ahead (claimed from the kernel), and the rest wait
    // inside it, deferred, when its cable is pulled.
    let one_at_a_time = format!("[resources]\nconcurrency = 1\ntimeout_ms = 60000\n{edge}");
    p.deploy_misbehave("ops", "queued", "by-input", &one_at_a_time);
    // Warm on both, so that edge-a starts the first at once, and knows
    // these run long enough for the rest to be deferred (not started).
    for _ in 0..20 {
        let ran = fleet.ran_on("ops").len();
        assert_eq!(p.trigger("/ops/queued", b"sleep:100 warm").status, 200);
        eventually(Duration::from_secs(10), "the record", || {
            (fleet.ran_on("ops").len() > ran).then_some(())
        });
        let warm = fleet.ran_doee_on("ops", "queued");
        if warm.contains("doer@edge-a") && warm.contains("doer@edge-b") {
            break;
        }
    }
    let ran_before = fleet.ran_on("ops").len();
    let url = format!("{}/ops/queued", p.triggers);
    let calls = http::Echoes::send(&url, (0..8).map(|i| format!("sleep:1500 #{i}")));
    // More than edge-a runs and sends ahead.
    let held = eventually(
        Duration::from_secs(20),
        "edge-a to hold work it has not started",
        || {
            let held = fleet.instance("doer@edge-a")?["in_flight"].as_u64()?;
            (held >= 3).then_some(held)
        },
    );
    a.cut();
    let cut = Instant::now();
    let unavailable = calls.unavailable();
    eprintln!(
        "edge-a held {held} when cut; {unavailable} answered 503, all answered {:?} after the cut",
        cut.elapsed()
    );
    // What edge-a was running cannot answer through a cut cable.
    assert!(
        (1..=2).contains(&unavailable),
        "only what edge-a ran and had sent ahead may fail; what waited inside it runs on edge-b"
    );
    eventually(Duration::from_secs(10), "the records of what ran", || {
        (fleet.ran_on("ops").len() == ran_before + 8 - unavailable).then_some(())
    });
    eventually(Duration::from_secs(10), "edge-a to be down", || {
        (fleet.instance("doer@edge-a")?["status"] == "down").then_some(())
    });
    let count = |ran_on: &[(String, String)], instance: &str| {
        ran_on.iter().filter(|(i, _)| i == instance).count()
    };
    let before = fleet.ran_on("ops");
    for _ in 0..5 {
        assert_eq!(p.trigger("/ops/echo", b"still").text(), "still");
    }
    let after = eventually(Duration::from_secs(10), "the records", || {
        let after = fleet.ran_on("ops");
        (count(&after, "doer@edge-b") == count(&before, "doer@edge-b") + 5).then_some(after)
    });
    assert_eq!(
        count(&after, "doer@edge-a"),
        count(&before, "doer@edge-a"),
        "{after:?}"
    );
    let r = p.trigger("/ops/slow", b"hello");
    assert_eq!(r.status, 503, "placed on a host that is down: {}", r.text());

    // Long enough for both ends to give the silent link up (link::SILENCE):
    // edge-a must make a new one, not resume the old.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(cut.elapsed()));
    a.restore();
    let restored = Instant::now();
    eventually(Duration::from_secs(60), "edge-a to join again", || {
        (fleet.instance("doer@edge-a")?["status"] == "up").then_some(())
    });
    eprintln!(
        "edge-a up again {:?} after its cable was back",
        restored.elapsed()
    );
    let r = p.trigger("/ops/slow", b"back");
    assert_eq!((r.status, r.text().as_str()), (200, "back"));
    assert!(
        joined_a.output().contains("joining again"),
        "{}",
        joined_a.output()
    );
}

/// The kernel restarted (kill -9, its supervisor starts it again), then the
/// kernel's whole host power-cut and started again: each time the Doer on
/// another host joins again by itself.
#[test]
fn remote_instances_come_back_after_the_kernel_restarts() {
    let Some(mut fleet) = Fleet::start(options()) else {
        return;
    };
    let shed = fleet.network.host("shed");
    let joined = fleet.join(&shed, "doer", &["--label", "site=shed"]);
    fleet.wait_up("doer@shed", &joined);
    let p = &fleet.p;
    p.run(&["project", "create", "farm"]);
    let here = "[placement]\nlabels = { site = \"shed\" }\n";
    p.deploy_misbehave("farm", "echo", "echo", here);
    assert_eq!(p.trigger("/farm/echo", b"one").text(), "one");

    let kernel = p.pid_of("kernel");
    // SAFETY: killing a process of our own platform.
    unsafe { libc::kill(kernel as i32, libc::SIGKILL) };
    eventually(
        Duration::from_secs(60),
        "the remote Doer to serve again",
        || {
            let r = http::try_request("POST", &format!("{}/farm/echo", p.triggers), &[], b"two")
                .ok()?;
            (r.status == 200 && r.text() == "two").then_some(())
        },
    );
    let entry = fleet.instance("doer@shed").unwrap();
    assert_eq!(entry["status"], "up", "{entry}");
    assert!(
        joined.output().contains("joining again"),
        "{}",
        joined.output()
    );

    // A power cut of the kernel's host: every process there killed at once,
    // then `isms up` again on the same data directory. The kernel keeps its
    // certificate and key there, so the host's key still holds, and it comes
    // back by itself.
    fleet.p.crash_and_restart();
    let p = &fleet.p;
    eventually(
        Duration::from_secs(60),
        "the remote Doer to serve after the power cut",
        || {
            let r = http::try_request("POST", &format!("{}/farm/echo", p.triggers), &[], b"three")
                .ok()?;
            (r.status == 200 && r.text() == "three").then_some(())
        },
    );
}

/// What may not join is refused, each with a clear error on its end and a
/// line in the kernel's log naming its address, and the kernel is unharmed:
/// a wrong key, no key, a plaintext client, a 4 GiB frame header, and a
/// Control Gate (with the right key) from another host.
#[test]
fn what_may_not_join_is_refused() {
    let Some(mut fleet) = Fleet::start(options()) else {
        return;
    };
    let intruder = fleet.network.host("intruder");
    let key = std::fs::read_to_string(&fleet.key_file).unwrap();
    // The same kernel, another secret.
    let mut wrong = key.trim().to_string();
    let flip = wrong.find(':').unwrap() + 1;
    let flipped = if &wrong[flip..=flip] == "0" { "1" } else { "0" };
    wrong.replace_range(flip..=flip, flipped);
    let wrong_file = fleet.p.root.join("wrong.key");
    std::fs::write(&wrong_file, &wrong).unwrap();

    let run = |args: &[&str]| intruder.command(Path::new(EXE), args).output().unwrap();
    let data = fleet.p.root.join("intruder-data");
    let data = data.to_str().unwrap();
    let out = run(&[
        "join",
        &fleet.endpoint,
        "--service",
        "doer",
        "--key-file",
        wrong_file.to_str().unwrap(),
        "--data-dir",
        data,
    ]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("refused to let this host join"), "{text}");
    assert!(text.contains("not trying again"), "{text}");

    let out = run(&[
        "join",
        &fleet.endpoint,
        "--service",
        "doer",
        "--data-dir",
        data,
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("needs the kernel's join key"), "{text}");

    // The right key, but a service that stays beside the kernel.
    let out = run(&[
        "service",
        "control-gate",
        "--instance",
        "control-gate@intruder",
        "--data-dir",
        data,
        "--kernel",
        &fleet.endpoint,
        "--key-file",
        fleet.key_file.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("may not join from another host"), "{text}");

    // A plaintext ZMTP peer, and one that declares a 4 GiB frame.
    let address = fleet.endpoint.strip_prefix("tcp://").unwrap().to_string();
    let script = format!(
        "import socket, struct\n\
         for payload in [b'\\xff' + b'\\0' * 8 + b'\\x7f\\x03\\x00NULL' + b'\\0' * 48,\n\
                         b'\\x02' + struct.pack('>Q', 4 << 30)]:\n\
         \x20   s = socket.create_connection(('{}', {}))\n\
         \x20   s.sendall(payload)\n\
         \x20   s.settimeout(15)\n\
         \x20   try:\n\
         \x20       while s.recv(4096): pass\n\
         \x20   except OSError: pass\n\
         \x20   s.close()\n",
        address.rsplit_once(':').unwrap().0,
        address.rsplit_once(':').unwrap().1
    );
    let out = intruder
        .command(Path::new("python3"), &["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let log = std::fs::read_to_string(fleet.p.data_dir.join("logs/kernel.log")).unwrap();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| {
            (l.contains("refused a link") || l.contains("refused a registration"))
                && l.contains(&intruder.address)
        })
        .collect();
    assert!(refusals.len() >= 4, "{log}");
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("wrong or missing join key")),
        "{refusals:?}"
    );
    assert!(refusals.iter().any(|l| l.contains("TLS")), "{refusals:?}");
    // Unharmed, and nothing of the intruder's registered.
    let services = fleet.p.services();
    assert!(!services.to_string().contains("intruder"), "{services}");
    assert_eq!(fleet.p.service("kernel")["status"], "up");
}

/// A CommServer on another host serves the project's HTTP triggers there,
/// and its embedded broker takes the site's devices, signed in with the
/// credentials the platform gave them, and runs their messages' triggers.
#[test]
fn a_commserver_on_another_host_serves_http_and_mqtt_triggers() {
    use isms_test_support::mqtt::{Connect, RawClient, Received};
    let Some(mut fleet) = Fleet::start(options()) else {
        return;
    };
    let site = fleet.network.host("site");
    let config = fleet.p.root.join("site.toml");
    let (http_port, mqtt_port) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[commserver]\nhttp_addr = \"{0}:{http_port}\"\nmqtt_addr = \"{0}:{mqtt_port}\"\n",
            site.address
        ),
    )
    .unwrap();
    let joined = fleet.join(&site, "commserver", &["--config", config.to_str().unwrap()]);
    let entry = fleet.wait_up("commserver@site", &joined);
    assert_eq!(entry["host"], "site", "{entry}");
    let p = &fleet.p;
    p.run(&["project", "create", "plant"]);
    p.deploy_misbehave("plant", "echo", "echo", "");
    p.deploy(&fixtures().join("mqtt"), "plant");

    let url = format!("http://{}:{http_port}/plant/echo", site.address);
    let post = format!(
        "import urllib.request\n\
         print(urllib.request.urlopen('{url}', data=b'from the site').read().decode(), end='')"
    );
    let r = eventually(
        Duration::from_secs(20),
        "the remote trigger to serve",
        || {
            let r = site
                .command(Path::new("python3"), &["-c", &post])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&r.stdout).into_owned();
            (text == "from the site").then_some(text)
        },
    );
    assert_eq!(r, "from the site");

    let secret = p.create_device("plant", "meter");
    let connect = Connect {
        login: Some(("plant/meter".into(), secret)),
        ..Connect::v4("meter")
    };
    let broker = format!("{}:{mqtt_port}", site.address);
    let mut device = RawClient::open_at(&broker, &connect).unwrap();
    assert!(
        matches!(
            device.recv(Duration::from_secs(20)),
            Some(Received::ConnAck { code: 0, .. })
        ),
        "the site's broker refused the device"
    );
    device.subscribe(1, &["plant/out"].map(|t| (t, 1)));
    let reply = eventually(Duration::from_secs(30), "the site's trigger to run", || {
        device.publish("plant/d1/in", b"21.5", 1, false, 7, false);
        device
            .deliveries(Duration::from_secs(2))
            .into_iter()
            .find(|(topic, _)| topic == "plant/out")
    });
    assert_eq!(reply.1, "plant/d1/in 21.5");

    // Both CommServers keep every schedule; each firing runs once.
    p.deploy_misbehave(
        "plant",
        "tick",
        "scheduled",
        "[[triggers.schedule]]\nevery = \"1s\"\n",
    );
    let mut moments = eventually(Duration::from_secs(30), "five firings", || {
        let moments: Vec<u64> = fleet
            .records("plant")
            .iter()
            .filter(|r| r["doee"] == "tick")
            .map(|r| r["trigger_detail"]["scheduled_ms"].as_u64().unwrap())
            .collect();
        (moments.len() >= 5).then_some(moments)
    });
    moments.sort_unstable();
    let fired = moments.len();
    moments.dedup();
    assert_eq!(moments.len(), fired, "a moment ran twice: {moments:?}");
}

/// `isms join-key --rotate` cuts off every host that joined with the old
/// key, at once and for good: its `isms join` stops with the kernel's
/// refusal rather than knocking forever.
#[test]
fn a_rotated_key_cuts_off_the_hosts_that_used_the_old_one() {
    let Some(mut fleet) = Fleet::start(options()) else {
        return;
    };
    let shed = fleet.network.host("shed");
    let mut joined = fleet.join(&shed, "doer", &[]);
    fleet.wait_up("doer@shed", &joined);
    let old = std::fs::read_to_string(&fleet.key_file).unwrap();
    let output = std::process::Command::new(EXE)
        .args(["join-key", "--rotate", "--data-dir"])
        .arg(&fleet.p.data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let new = String::from_utf8(output.stdout).unwrap();
    assert_ne!(old.trim(), new.trim());
    eventually(
        Duration::from_secs(10),
        "the old key's host to be cut off",
        || (fleet.instance("doer@shed")?["status"] == "down").then_some(()),
    );
    let status = eventually(Duration::from_secs(60), "isms join to give up", || {
        joined.try_wait()
    });
    assert!(!status.success());
    assert!(
        joined.output().contains("wrong or missing join key"),
        "{}",
        joined.output()
    );
    // The new key joins.
    std::fs::write(&fleet.key_file, new).unwrap();
    let again = fleet.join(&shed, "doer", &["--name", "shed2"]);
    fleet.wait_up("doer@shed2", &again);
}

/// Two CommServers, the kernel's and one on another host, on one external
/// Mosquitto: each message to a trigger runs once, not once per CommServer
/// (shared subscriptions).
#[test]
fn two_commservers_on_one_broker_run_each_message_once() {
    use isms_test_support::Mosquitto;
    use isms_test_support::mqtt::{Connect, RawClient};
    let Some(network) = network() else {
        return;
    };
    // A second listener on the bridge, for the CommServer on the other host.
    let bridge_port = free_port();
    let broker = Mosquitto::start_with(&format!("listener {bridge_port} {}", network.kernel_ip));
    let mut fleet = Fleet::on(
        network,
        options().env("ISMS_COMMSERVER_MQTT_URL", &broker.url),
    );
    let site = fleet.network.host("site");
    let config = fleet.p.root.join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[commserver]\nhttp_addr = \"{}:{}\"\nmqtt_url = \"mqtt://{}:{bridge_port}\"\n",
            site.address,
            free_port(),
            fleet.network.kernel_ip,
        ),
    )
    .unwrap();
    let joined = fleet.join(&site, "commserver", &["--config", config.to_str().unwrap()]);
    fleet.wait_up("commserver@site", &joined);
    let p = &fleet.p;
    p.run(&["project", "create", "plant"]);
    p.deploy(&fixtures().join("mqtt"), "plant");
    let mut device = RawClient::connect(broker.port, &Connect::v4("counter"))
        .unwrap()
        .0;
    device.subscribe(1, &[("plant/out", 1)]);
    eventually(
        Duration::from_secs(30),
        "both CommServers to subscribe",
        || {
            joined
                .output()
                .contains("subscribing to MQTT triggers")
                .then_some(())
        },
    );
    let n = 60;
    for i in 0..n {
        device.publish(
            "plant/d1/in",
            format!("m-{i}").as_bytes(),
            1,
            false,
            100 + i,
            false,
        );
    }
    let mut replies: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        replies.extend(
            device
                .deliveries(Duration::from_secs(2))
                .into_iter()
                .filter(|(topic, _)| topic == "plant/out")
                .map(|(_, payload)| payload),
        );
        let distinct: std::collections::BTreeSet<&String> = replies.iter().collect();
        if distinct.len() >= n as usize {
            break;
        }
    }
    // Late duplicates would come within this.
    replies.extend(
        device
            .deliveries(Duration::from_secs(3))
            .into_iter()
            .filter(|(topic, _)| topic == "plant/out")
            .map(|(_, payload)| payload),
    );
    for i in 0..n {
        let echo = format!("plant/d1/in m-{i}");
        let times = replies.iter().filter(|r| **r == echo).count();
        assert_eq!(times, 1, "m-{i} ran {times} times: {replies:?}");
    }
}

/// Two CommServers share an external broker and an inbox in PostgreSQL;
/// one's host dies for good (every process killed at once) with messages
/// it had acknowledged and not yet run: the other takes them over once
/// their lease runs out, and every message runs.
#[test]
fn a_commserver_host_lost_for_good_loses_no_acknowledged_message() {
    use isms_test_support::mqtt::{Connect, RawClient};
    use isms_test_support::relay::Relay;
    use isms_test_support::{Mosquitto, PostgresDatabase};
    let Some(network) = network() else {
        return;
    };
    let db = PostgresDatabase::create();
    // PostgreSQL and the broker listen on loopback; the site reaches them
    // through the bridge.
    let (loopback, _) = db.url.rsplit_once('@').unwrap().1.split_once('/').unwrap();
    let relay = Relay::start(
        network.kernel_ip.parse().unwrap(),
        loopback.parse().unwrap(),
    );
    let site_inbox = db.url.replace(loopback, &relay.addr.to_string());
    let bridge_port = free_port();
    let broker = Mosquitto::start_with(&format!("listener {bridge_port} {}", network.kernel_ip));
    let mut fleet = Fleet::on(
        network,
        options()
            .env("ISMS_COMMSERVER_MQTT_URL", &broker.url)
            .env("ISMS_COMMSERVER_INBOX_URL", &db.url)
            .env("ISMS_COMMSERVER_INBOX_LEASE_MS", "2000"),
    );
    let site = fleet.network.host("site");
    let config = fleet.p.root.join("site.toml");
    // One at a time: the site's messages wait in its inbox.
    std::fs::write(
        &config,
        format!(
            "[commserver]\nhttp_addr = \"{}:{}\"\nmqtt_url = \"mqtt://{}:{bridge_port}\"\n\
             inbox_url = \"{site_inbox}\"\ninbox_lease_ms = 2000\nmqtt_concurrency = 1\n",
            site.address,
            free_port(),
            fleet.network.kernel_ip,
        ),
    )
    .unwrap();
    let mut joined = fleet.join(&site, "commserver", &["--config", config.to_str().unwrap()]);
    fleet.wait_up("commserver@site", &joined);
    let p = &fleet.p;
    p.run(&["project", "create", "plant"]);
    p.deploy_misbehave(
        "plant",
        "slow",
        "by-input",
        "[resources]\nconcurrency = 8\n[[triggers.mqtt]]\ntopic = \"plant/+/in\"\nreply_topic = \"plant/out\"\n",
    );
    let mut device = RawClient::connect(broker.port, &Connect::v4("sensor"))
        .unwrap()
        .0;
    device.subscribe(1, &[("plant/out", 1)]);
    eventually(Duration::from_secs(30), "the site to subscribe", || {
        joined
            .output()
            .contains("subscribing to MQTT triggers")
            .then_some(())
    });
    let n = 40u16;
    let sent: std::collections::BTreeSet<String> =
        (0..n).map(|i| format!("sleep:200 m-{i}")).collect();
    for (i, message) in sent.iter().enumerate() {
        device.publish(
            "plant/d1/in",
            message.as_bytes(),
            1,
            false,
            100 + i as u16,
            false,
        );
    }
    // Every message either answered or in an inbox: accepted by one of
    // the CommServers, and acknowledged to the broker.
    let mut replies: Vec<String> = Vec::new();
    // (owner, payload) of the jobs waiting.
    let inbox_rows = || -> Vec<(String, String)> {
        let output = std::process::Command::new("psql")
            .args(["-X", "-t", "-A", "-F", " ", &db.url, "-c"])
            .arg("SELECT owner, convert_from(payload, 'UTF8') FROM isms_mqtt_inbox WHERE NOT dead")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(owner, payload)| (owner.to_string(), payload.to_string()))
            .collect()
    };
    let waiting = eventually(Duration::from_secs(30), "every message accepted", || {
        replies.extend(
            device
                .deliveries(Duration::from_millis(200))
                .into_iter()
                .map(|(_, m)| m),
        );
        let rows = inbox_rows();
        let accounted: std::collections::BTreeSet<&String> = replies
            .iter()
            .chain(rows.iter().map(|(_, payload)| payload))
            .collect();
        let at_site = rows
            .iter()
            .filter(|(owner, _)| owner == "commserver@site")
            .count();
        (accounted.len() == sent.len()).then_some(at_site)
    });
    joined.power_cut();
    let cut = Instant::now();
    assert!(
        waiting > 0,
        "the site had nothing waiting: the test proves nothing"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        replies.extend(
            device
                .deliveries(Duration::from_secs(1))
                .into_iter()
                .map(|(_, m)| m),
        );
        if sent.iter().all(|m| replies.contains(m)) {
            break;
        }
    }
    let lost: Vec<&String> = sent.iter().filter(|m| !replies.contains(m)).collect();
    let twice = replies.len() - (sent.len() - lost.len());
    eprintln!(
        "{waiting} messages waited in the site's inbox at the power cut; all answered {:?} after it; \
         {} lost, {twice} ran twice",
        cut.elapsed(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    let log = std::fs::read_to_string(p.data_dir.join("logs/commserver.log")).unwrap();
    assert!(
        log.contains("took over MQTT messages"),
        "the kernel host's CommServer took them over: {log}"
    );
}
