//! MQTT triggers: devices publish, Doees run, replies and Doee publishes
//! arrive; on the embedded broker and on a real Mosquitto; nothing lost
//! across crashes; projects kept inside their topic namespaces.
//!
//! The fixture Doee `tests/doees/mqtt` answers `<topic> <payload>` on
//! `plant/out` for messages on `plant/+/in`, so its project is `plant`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Mosquitto, Options, Platform, copy_dir, eventually, fixtures, temp_dir};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

/// An MQTT device: a client on its own thread, what it receives on a channel.
struct Device {
    client: Client,
    received: mpsc::Receiver<(String, String)>,
    connected: mpsc::Receiver<Result<(), String>>,
    subacks: mpsc::Receiver<Vec<SubscribeReasonCode>>,
    acked: Arc<AtomicU64>,
}

impl Device {
    fn connect(port: u16, id: &str, credentials: Option<(&str, &str)>) -> Device {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut connection) = Client::new(options, 64);
        let (received_tx, received) = mpsc::channel();
        let (connected_tx, connected) = mpsc::channel();
        let (suback_tx, subacks) = mpsc::channel();
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        if received_tx.send((p.topic.clone(), payload)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let _ = suback_tx.send(ack.return_codes);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected_tx.send(Ok(()));
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if connected_tx.send(Err(err.to_string())).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
        Device {
            client,
            received,
            connected,
            subacks,
            acked,
        }
    }

    /// Connects and waits for the broker's answer.
    fn online(port: u16, id: &str, credentials: Option<(&str, &str)>) -> Device {
        let device = Device::connect(port, id, credentials);
        match device.connected.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => device,
            other => panic!("device {id} could not connect: {other:?}"),
        }
    }

    /// Subscribes and waits for the broker's SUBACK granting it.
    fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        let codes = self
            .subacks
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no SUBACK for {filter}"));
        assert_eq!(
            codes,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            "{filter}"
        );
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes())
            .unwrap();
    }

    /// Publishes `payload` on `topic` until the Doee's echo of it arrives on
    /// `reply` (triggers are subscribed asynchronously after a deploy).
    fn expect_reply(&self, topic: &str, payload: &str, reply: &str) {
        let echo = format!("{topic} {payload}");
        for _ in 0..30 {
            self.publish(topic, payload);
            if self.wait_for(reply, &echo, Duration::from_secs(2)) {
                return;
            }
        }
        panic!("no {echo:?} on {reply}");
    }

    /// Asserts that `forbidden` (topic, payload) does not arrive: nothing
    /// for `quiet`, then `probe` sends something that must arrive as
    /// `expected`, and `forbidden` may not come before it either. The probe
    /// shows the device was still listening all along.
    fn assert_never(
        &self,
        forbidden: (&str, &str),
        quiet: Duration,
        probe: impl Fn(),
        expected: (&str, &str),
    ) {
        let seen =
            |(t, p): &(String, String), (topic, payload): (&str, &str)| t == topic && p == payload;
        let deadline = std::time::Instant::now() + quiet;
        while let Ok(message) = self
            .received
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            assert!(!seen(&message, forbidden), "{forbidden:?} arrived");
        }
        for _ in 0..10 {
            probe();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while let Ok(message) = self
                .received
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            {
                assert!(!seen(&message, forbidden), "{forbidden:?} arrived");
                if seen(&message, expected) {
                    return;
                }
            }
        }
        panic!("the probe {expected:?} never arrived: the device was not listening");
    }

    /// Whether `payload` arrives on `topic` within `timeout`.
    fn wait_for(&self, topic: &str, payload: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.received.recv_timeout(left) {
                Ok((t, p)) if t == topic && p == payload => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

fn plant(p: &Platform) {
    p.login_admin();
    p.run(&["project", "create", "plant"]);
    p.deploy(&fixtures().join("mqtt"), "plant");
}

/// The fixture with its manifest changed.
fn variant(edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let dir = temp_dir("mqtt-variant");
    copy_dir(&fixtures().join("mqtt"), &dir);
    let manifest = std::fs::read_to_string(dir.join("doee.toml")).unwrap();
    std::fs::write(dir.join("doee.toml"), edit(manifest)).unwrap();
    dir
}

fn api_json(p: &Platform, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = p.call_api(method, path, Some(&p.admin_token()), body.as_bytes());
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

/// Device → Doee → reply; a Doee's publish; a refused publish ending as a
/// dead letter; triggers following rollback and delete; the metrics.
fn round_trip(p: &Platform, port: u16) {
    plant(p);
    let device = Device::online(port, "sensor-1", None);
    device.subscribe("plant/#");
    device.subscribe("elsewhere/#");
    device.expect_reply("plant/d1/in", "hello 21", "plant/out");

    device.publish("plant/d1/in", "publish plant/d1/cmd fan-on");
    assert!(device.wait_for("plant/d1/cmd", "fan-on", Duration::from_secs(20)));

    // Outside the namespace: refused by the platform, retried, then kept
    // as a dead letter with the reason; nothing reaches the topic.
    device.publish("plant/d1/in", "publish elsewhere/x sneaky");
    let letters = eventually(Duration::from_secs(30), "a dead letter", || {
        let (status, letters) = api_json(p, "GET", "/api/v1/projects/plant/mqtt/dead-letters", "");
        assert_eq!(status, 200, "{letters}");
        letters.as_array().filter(|l| !l.is_empty()).cloned()
    });
    assert_eq!(letters[0]["topic"], "plant/d1/in");
    assert_eq!(letters[0]["attempts"], 2);
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("may not publish on `elsewhere/x`") && error.contains("plant/#"),
        "{error}"
    );
    device.assert_never(
        ("elsewhere/x", "sneaky"),
        Duration::from_millis(500),
        || device.publish("elsewhere/x", "probe"),
        ("elsewhere/x", "probe"),
    );

    // A new version with another reply topic, then a rollback to the first.
    let v2 = variant(|m| {
        m.replace(
            "reply_topic = \"plant/out\"",
            "reply_topic = \"plant/out2\"",
        )
    });
    p.deploy(&v2, "plant");
    let _ = std::fs::remove_dir_all(&v2);
    device.expect_reply("plant/d2/in", "v2", "plant/out2");
    p.run(&["doee", "rollback", "plant/mqtt", "1"]);
    device.expect_reply("plant/d3/in", "v1", "plant/out");

    let metrics = p.call_api("GET", "/metrics", None, b"").text();
    for name in [
        "isms_mqtt_received_total",
        "isms_mqtt_acknowledged_total",
        "isms_mqtt_retried_total 1",
        "isms_mqtt_dead_lettered_total 1",
        "isms_mqtt_inbox_depth",
        "isms_mqtt_connected 1",
        "isms_mqtt_delivered_total",
        "isms_mqtt_refused_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // Only the embedded broker's clients are the platform's to count.
    if port == p.mqtt_port {
        let clients = metrics
            .lines()
            .find_map(|l| l.strip_prefix("isms_mqtt_clients "))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(clients >= Some(1), "the device is connected:\n{metrics}");
    }

    // Deleted: its trigger goes with it.
    p.run(&["doee", "delete", "plant/mqtt"]);
    std::thread::sleep(Duration::from_secs(1));
    device.publish("plant/d4/in", "after delete");
    device.assert_never(
        ("plant/out", "plant/d4/in after delete"),
        Duration::from_secs(3),
        || device.publish("plant/out", "probe"),
        ("plant/out", "probe"),
    );
}

/// A platform whose embedded broker lets test devices in without
/// credentials (from loopback), as `commserver.mqtt_anonymous` allows.
fn options() -> Options {
    signed_in_options().env("ISMS_COMMSERVER_MQTT_ANONYMOUS", "true")
}

/// A platform with the defaults: devices sign in.
fn signed_in_options() -> Options {
    Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_COMMSERVER_MQTT_MAX_ATTEMPTS", "2")
        .env("ISMS_COMMSERVER_MQTT_RETRY_MS", "200")
}

#[test]
fn devices_trigger_doees_on_the_embedded_broker() {
    let p = options().start();
    assert!(
        p.output()
            .contains(&format!("mqtt://127.0.0.1:{} (embedded", p.mqtt_port)),
        "{}",
        p.output()
    );
    round_trip(&p, p.mqtt_port);
}

#[test]
fn devices_trigger_doees_through_mosquitto() {
    let broker = Mosquitto::start();
    let p = options()
        .env("ISMS_COMMSERVER_MQTT_URL", &broker.url)
        .start();
    assert!(p.output().contains(&format!("{} (external)", broker.url)));
    round_trip(&p, broker.port);
}

#[test]
fn projects_stay_inside_their_topic_namespaces() {
    let p = options().start();
    plant(&p);
    // A wildcard that could capture other projects' topics is refused at
    // deploy, with the namespaces and how to get more.
    for filter in ["+/+/in", "#", "greenhouse/+/temp"] {
        let dir =
            variant(|m| m.replace("topic = \"plant/+/in\"", &format!("topic = \"{filter}\"")));
        let out = p.try_deploy(&dir, "plant");
        let _ = std::fs::remove_dir_all(&dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!(
                "`{filter}` is outside project `plant`'s topic namespaces (plant/#)"
            )),
            "{err}"
        );
    }
    let reply_outside =
        variant(|m| m.replace("reply_topic = \"plant/out\"", "reply_topic = \"other/out\""));
    let out = p.try_deploy(&reply_outside, "plant");
    let _ = std::fs::remove_dir_all(&reply_outside);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`other/out` is outside"));

    // Another project's device traffic never reaches plant's Doee.
    p.run(&["project", "create", "other"]);
    let device = Device::online(p.mqtt_port, "sensor-2", None);
    device.subscribe("plant/out");
    device.expect_reply("plant/a/in", "mine", "plant/out");
    device.publish("other/a/in", "theirs");
    device.assert_never(
        ("plant/out", "other/a/in theirs"),
        Duration::from_secs(2),
        || device.publish("plant/b/in", "still mine"),
        ("plant/out", "plant/b/in still mine"),
    );

    // An admin grants a namespace: a trigger there deploys and runs;
    // revoked, it stops at once though still deployed.
    let bad = api_json(
        &p,
        "PUT",
        "/api/v1/projects/plant/topics",
        r#"{"namespaces":["+/#"]}"#,
    );
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(
        bad.1["error"].as_str().unwrap().contains("literal"),
        "{}",
        bad.1
    );
    let granted = api_json(
        &p,
        "PUT",
        "/api/v1/projects/plant/topics",
        r#"{"namespaces":["greenhouse/#"]}"#,
    );
    assert_eq!(granted.0, 200, "{}", granted.1);
    assert_eq!(
        granted.1["namespaces"],
        serde_json::json!(["plant/#", "greenhouse/#"])
    );
    let green = variant(|m| {
        m.replace("topic = \"plant/+/in\"", "topic = \"greenhouse/+/temp\"")
            .replace("name = \"mqtt\"", "name = \"green\"")
    });
    p.deploy(&green, "plant");
    let _ = std::fs::remove_dir_all(&green);
    device.expect_reply("greenhouse/g1/temp", "21.5", "plant/out");
    let revoked = api_json(
        &p,
        "PUT",
        "/api/v1/projects/plant/topics",
        r#"{"namespaces":[]}"#,
    );
    assert_eq!(revoked.0, 200);
    std::thread::sleep(Duration::from_secs(1));
    device.publish("greenhouse/g1/temp", "22");
    device.assert_never(
        ("plant/out", "greenhouse/g1/temp 22"),
        Duration::from_secs(3),
        || device.publish("plant/g/in", "still runs"),
        ("plant/out", "plant/g/in still runs"),
    );
}

/// By default devices sign in with the credentials `isms device create`
/// gives them; wrong, unknown and missing ones are refused, and a revoked
/// device is disconnected at once.
#[test]
fn devices_sign_in_with_credentials_the_platform_gives_them() {
    let p = signed_in_options().start();
    assert!(
        p.output()
            .contains("(embedded; devices sign in with `isms device create`)"),
        "{}",
        p.output()
    );
    plant(&p);
    let created = p.run(&["device", "create", "plant", "sensor-3"]);
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("MQTT password"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        created.contains("MQTT username  plant/sensor-3"),
        "{created}"
    );
    assert!(
        p.run(&["device", "list", "plant"])
            .contains("plant/sensor-3")
    );
    for credentials in [
        None,
        Some(("plant/sensor-3", "wrong")),
        Some(("plant/ghost", secret.as_str())),
        Some(("other/sensor-3", secret.as_str())),
    ] {
        let device = Device::connect(p.mqtt_port, "intruder", credentials);
        let answer = device.connected.recv_timeout(Duration::from_secs(20));
        assert!(
            matches!(answer, Ok(Err(_))),
            "{credentials:?} got in: {answer:?}"
        );
    }
    let device = Device::online(p.mqtt_port, "sensor-3", Some(("plant/sensor-3", &secret)));
    device.subscribe("plant/out");
    device.expect_reply("plant/s3/in", "signed in", "plant/out");

    p.run(&["device", "revoke", "plant", "sensor-3"]);
    let dropped = device.connected.recv_timeout(Duration::from_secs(5));
    assert!(
        matches!(dropped, Ok(Err(_))),
        "still connected: {dropped:?}"
    );
    let again = Device::connect(p.mqtt_port, "sensor-3", Some(("plant/sensor-3", &secret)));
    assert!(matches!(
        again.connected.recv_timeout(Duration::from_secs(20)),
        Ok(Err(_))
    ));
}

/// 2,000 QoS 1 messages while the CommServer is killed twice and the whole
/// platform once: every one runs at least once.
#[test]
fn no_acknowledged_message_is_lost_across_crashes() {
    const MESSAGES: u64 = 2000;
    let broker = Mosquitto::start();
    let mut p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_COMMSERVER_MQTT_URL", &broker.url)
        .env("ISMS_COMMSERVER_MQTT_RETRY_MS", "200")
        .env("ISMS_COMMSERVER_MQTT_MAX_ATTEMPTS", "20")
        .start();
    plant(&p);
    let sql = |p: &Platform, query: &str| {
        let body = serde_json::json!({ "query": query }).to_string();
        let (status, answer) = api_json(p, "POST", "/api/v1/projects/plant/sql", &body);
        assert_eq!(status, 200, "{query}: {answer}");
        answer
    };
    sql(&p, "CREATE TABLE seen (id TEXT NOT NULL)");
    let device = Device::online(broker.port, "loss-test", None);
    device.subscribe("plant/out");
    device.expect_reply("plant/warm/in", "ready?", "plant/out");

    let sent = Arc::new(AtomicU64::new(0));
    let publisher = {
        let sent = sent.clone();
        let client = device.client.clone();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                let topic = format!("plant/d{}/in", i % 10);
                client
                    .publish(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        format!("seen m{i}").into_bytes(),
                    )
                    .unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(8));
            }
        })
    };
    let wait_sent = |n: u64| {
        eventually(Duration::from_secs(120), "messages to be published", || {
            (sent.load(Ordering::Relaxed) >= n).then_some(())
        })
    };
    let kill_commserver = |p: &Platform| {
        let pid = p.pid_of("commserver");
        // SAFETY: signalling a service of our own platform.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        eventually(Duration::from_secs(30), "a new CommServer", || {
            p.try_service("commserver")
                .filter(|s| s["pid"].as_u64() != Some(u64::from(pid)) && s["status"] == "up")
        });
        println!(
            "mqtt loss: killed the CommServer (pid {pid}) after {} messages",
            sent.load(Ordering::Relaxed)
        );
    };
    wait_sent(300);
    kill_commserver(&p);
    wait_sent(800);
    kill_commserver(&p);
    wait_sent(1300);
    println!(
        "mqtt loss: killing the whole platform after {} messages",
        sent.load(Ordering::Relaxed)
    );
    p.crash_and_restart();
    println!("mqtt loss: the platform is up again");
    publisher.join().unwrap();
    eventually(
        Duration::from_secs(60),
        "Mosquitto to acknowledge every message",
        || (device.acked.load(Ordering::Relaxed) >= MESSAGES).then_some(()),
    );
    let (distinct, total) = eventually(Duration::from_secs(240), "every message to run", || {
        let rows = sql(
            &p,
            "SELECT count(DISTINCT id) AS distinct_ids, count(*) AS runs FROM seen",
        );
        let row = &rows["rows"][0];
        let (distinct, total) = (row["distinct_ids"].as_u64()?, row["runs"].as_u64()?);
        (distinct >= MESSAGES).then_some((distinct, total))
    });
    let (_, letters) = api_json(&p, "GET", "/api/v1/projects/plant/mqtt/dead-letters", "");
    println!(
        "mqtt loss: {MESSAGES} messages, {distinct} distinct ids ran, {} duplicate runs, {} dead letters",
        total - distinct,
        letters.as_array().map_or(0, Vec::len)
    );
    assert_eq!(distinct, MESSAGES);
    assert_eq!(
        letters,
        serde_json::json!([]),
        "no message should have failed"
    );
}
