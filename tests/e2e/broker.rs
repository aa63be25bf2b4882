//! The embedded MQTT broker behaves as Mosquitto does: one suite of
//! behaviours, each run against a platform's embedded broker and against a
//! private Mosquitto in the same test, with a raw client (the test support's
//! `mqtt::RawClient`, rumqttc's codecs) so every byte is the test's. Each
//! behaviour answers a line of what it saw; the two lines must be the same,
//! except where a difference is on purpose, and then the test says why.
//! Then what only the embedded broker does: devices' rights, and nothing
//! acknowledged lost in power cuts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::mqtt::{Connect, RawClient, Received, Version};
use isms_test_support::{Mosquitto, Options, Platform, eventually, fixtures};
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(800);
const LONG: Duration = Duration::from_secs(10);

/// A broker under test.
trait Broker {
    fn port(&self) -> u16;
    /// Stops and starts it again, keeping its state.
    fn restart(&mut self);
}

impl Broker for Platform {
    fn port(&self) -> u16 {
        self.mqtt_port
    }
    /// A power cut, harder than Mosquitto's clean restart.
    fn restart(&mut self) {
        self.crash_and_restart();
    }
}

impl Broker for Mosquitto {
    fn port(&self) -> u16 {
        self.port
    }
    fn restart(&mut self) {
        Mosquitto::restart(self);
    }
}

fn connect(port: u16, connect: Connect) -> RawClient {
    let (client, _, code) = RawClient::connect(port, &connect).unwrap();
    assert_eq!(code, 0, "{connect:?} refused");
    client
}

/// Publishes at QoS 1 and waits for the PUBACK.
fn publish(client: &mut RawClient, topic: &str, payload: &str, retain: bool, pkid: u16) {
    client.publish(topic, payload.as_bytes(), 1, retain, pkid, false);
    let acked = client.expect(
        LONG,
        |r| matches!(r, Received::PubAck { pkid: p, .. } if *p == pkid),
    );
    assert!(acked.is_some(), "no PUBACK for {topic}");
}

fn payloads(got: &[(String, String)]) -> Vec<&str> {
    got.iter().map(|(_, p)| p.as_str()).collect()
}

fn keep_alive_zero(b: &mut dyn Broker) -> String {
    let connect = Connect {
        keep_alive: 0,
        ..Connect::v4("keep-alive-0")
    };
    let (mut c, _, code) = RawClient::connect(b.port(), &connect).unwrap();
    c.ping();
    let pong = c.recv(LONG) == Some(Received::PingResp);
    format!("CONNACK {code}, PINGRESP {pong}")
}

fn zero_length_ids(b: &mut dyn Broker) -> String {
    let clean = RawClient::connect(b.port(), &Connect::v4("")).map(|r| r.2);
    let kept = RawClient::connect(
        b.port(),
        &Connect {
            clean: false,
            ..Connect::v4("")
        },
    )
    .map(|r| r.2);
    format!("clean session {clean:?}, persistent session {kept:?}")
}

fn retained(b: &mut dyn Broker) -> String {
    let mut publisher = connect(b.port(), Connect::v4("retain-pub"));
    let mut seen = Vec::new();
    for (i, payload) in ["one", "two", ""].into_iter().enumerate() {
        publish(&mut publisher, "b/retained", payload, true, i as u16 + 1);
        let mut late = connect(b.port(), Connect::v4(&format!("retain-sub-{i}")));
        late.subscribe(1, &[("b/retained", 1)]);
        let first = late.recv(SHORT);
        seen.push(match first {
            Some(Received::Publish {
                payload, retain, ..
            }) => format!("{} retain={retain}", String::from_utf8_lossy(&payload)),
            None => "nothing".into(),
            Some(other) => format!("{other:?}"),
        });
    }
    format!(
        "set: {}; replaced: {}; cleared: {}",
        seen[0], seen[1], seen[2]
    )
}

fn last_will(b: &mut dyn Broker) -> String {
    let mut watcher = connect(b.port(), Connect::v4("will-watcher"));
    watcher.subscribe(1, &[("b/will", 1)]);
    let will = |id: &str, payload: &str| Connect {
        will: Some(("b/will".into(), payload.as_bytes().to_vec(), 1, false)),
        ..Connect::v4(id)
    };
    connect(b.port(), will("will-dropped", "dropped")).drop_connection();
    let dropped = payloads(&watcher.deliveries(Duration::from_secs(3))).join(",");
    connect(b.port(), will("will-polite", "polite")).disconnect();
    let polite = payloads(&watcher.deliveries(SHORT)).join(",");
    format!("dropped connection: [{dropped}]; DISCONNECT: [{polite}]")
}

fn persistent_session(b: &mut dyn Broker, version: Version) -> String {
    let id = format!("persistent-{version:?}");
    let topic = format!("b/persistent/{version:?}");
    let session = || Connect {
        version,
        clean: false,
        session_expiry: Some(3600),
        ..Connect::v4(&id)
    };
    let mut s = connect(b.port(), session());
    s.subscribe(1, &[(&topic, 1)]);
    s.disconnect();
    let mut publisher = connect(b.port(), Connect::v4(&format!("{id}-pub")));
    for i in 1..=3 {
        publish(&mut publisher, &topic, &format!("m{i}"), false, i);
    }
    let (mut again, present, _) = RawClient::connect(b.port(), &session()).unwrap();
    let got = payloads(&again.deliveries(SHORT)).join(",");
    format!("session present {present}, queued [{got}]")
}

fn redelivery(b: &mut dyn Broker) -> String {
    let session = || Connect {
        clean: false,
        ..Connect::v4("redeliver")
    };
    let mut s = connect(b.port(), session());
    s.subscribe(1, &[("b/redeliver", 1)]);
    let mut publisher = connect(b.port(), Connect::v4("redeliver-pub"));
    publish(&mut publisher, "b/redeliver", "again", false, 1);
    let first = s.recv(LONG);
    assert!(matches!(first, Some(Received::Publish { .. })), "{first:?}");
    // Not acknowledged: gone without a PUBACK.
    s.drop_connection();
    let (mut s, _, _) = RawClient::connect(b.port(), &session()).unwrap();
    match s.recv(LONG) {
        Some(Received::Publish {
            payload, dup, qos, ..
        }) => format!("{} dup={dup} qos={qos}", String::from_utf8_lossy(&payload)),
        other => format!("{other:?}"),
    }
}

fn overlapping(b: &mut dyn Broker) -> String {
    let mut s = connect(b.port(), Connect::v4("overlap"));
    let codes = s.subscribe(1, &[("b/overlap/#", 1), ("b/overlap/x", 0)]);
    let mut publisher = connect(b.port(), Connect::v4("overlap-pub"));
    publish(&mut publisher, "b/overlap/x", "once?", false, 1);
    let mut deliveries = Vec::new();
    while let Some(Received::Publish { qos, pkid, .. }) = s.recv(SHORT) {
        if qos == 1 {
            s.puback(pkid);
        }
        deliveries.push(qos);
    }
    format!("SUBACK {codes:?}, deliveries at QoS {deliveries:?}")
}

fn dollar_topics(b: &mut dyn Broker) -> String {
    let mut s = connect(b.port(), Connect::v4("dollar"));
    s.subscribe(1, &[("#", 0), ("+/+", 0), ("+/+/+", 0)]);
    let dollar = s
        .deliveries(Duration::from_millis(2500))
        .into_iter()
        .filter(|(t, _)| t.starts_with('$'))
        .count();
    format!("$ topics delivered to wildcards: {dollar}")
}

fn unsubscribe(b: &mut dyn Broker) -> String {
    let mut s = connect(b.port(), Connect::v4("unsub"));
    s.subscribe(1, &[("b/unsub", 1)]);
    s.unsubscribe(2, "b/unsub");
    let mut publisher = connect(b.port(), Connect::v4("unsub-pub"));
    publish(&mut publisher, "b/unsub", "after", false, 1);
    format!("after unsubscribing: {:?}", payloads(&s.deliveries(SHORT)))
}

fn exactly_once_in(b: &mut dyn Broker) -> String {
    let mut s = connect(b.port(), Connect::v4("qos2-sub"));
    s.subscribe(1, &[("b/qos2", 1)]);
    let mut publisher = connect(b.port(), Connect::v4("qos2-pub"));
    publisher.publish("b/qos2", b"exactly", 2, false, 7, false);
    let rec = publisher.expect(LONG, |r| matches!(r, Received::PubRec { .. }));
    // The same PUBLISH again before PUBREL: still one message.
    publisher.publish("b/qos2", b"exactly", 2, false, 7, true);
    let _ = publisher.expect(LONG, |r| matches!(r, Received::PubRec { .. }));
    publisher.pubrel(7);
    let comp = publisher.expect(LONG, |r| matches!(r, Received::PubComp(_)));
    format!(
        "PUBREC {}, PUBCOMP {}, delivered {:?}",
        rec.is_some(),
        comp.is_some(),
        payloads(&s.deliveries(SHORT))
    )
}

fn too_large(b: &mut dyn Broker) -> String {
    let mut c = connect(b.port(), Connect::v4("too-large"));
    c.publish("b/large", &vec![b'x'; 3 << 20], 1, false, 1, false);
    format!("connection closed: {}", c.closed_within(LONG))
}

fn across_restart(b: &mut dyn Broker) -> String {
    let session = || Connect {
        clean: false,
        ..Connect::v4("restart")
    };
    let mut s = connect(b.port(), session());
    s.subscribe(1, &[("b/restart", 1)]);
    s.disconnect();
    let mut publisher = connect(b.port(), Connect::v4("restart-pub"));
    publish(&mut publisher, "b/restart", "before", false, 1);
    publish(&mut publisher, "b/restart", "the restart", false, 2);
    drop(publisher);
    b.restart();
    let (mut s, present, _) = RawClient::connect(b.port(), &session()).unwrap();
    let got = payloads(&s.deliveries(Duration::from_secs(2))).join(",");
    format!("session present {present}, queued [{got}]")
}

/// Where the brokers answer differently on purpose: the reason, if the
/// answers are the ones expected.
fn on_purpose(name: &str, embedded: &str, mosquitto: &str) -> Option<&'static str> {
    (name == "overlapping subscriptions"
        && embedded == "SUBACK [1, 0], deliveries at QoS [1]"
        && mosquitto == "SUBACK [1, 0], deliveries at QoS [0]")
        .then_some(
            "MQTT 3.1.1 §3.3.5 and 5.0 §3.3.4 say a message matching overlapping \
             subscriptions is delivered at the highest of their QoS; Mosquitto 2 sends one \
             copy at the QoS of the last matching subscription",
        )
}

#[test]
fn the_embedded_broker_behaves_as_mosquitto_does() {
    let mut ours = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_COMMSERVER_MQTT_ANONYMOUS", "true")
        .start();
    // Mosquitto publishes $SYS every second; packets are bounded as ours.
    let mut theirs = Mosquitto::start_with("sys_interval 1\nmax_packet_size 2097152");
    type Behaviour = fn(&mut dyn Broker) -> String;
    let behaviours: [(&str, Behaviour); 13] = [
        ("keep-alive 0 (no keep-alive)", keep_alive_zero),
        ("zero-length client ids", zero_length_ids),
        ("retained messages", retained),
        ("last will", last_will),
        ("a 3.1.1 persistent session", |b| {
            persistent_session(b, Version::V4)
        }),
        ("a 5.0 session with an expiry", |b| {
            persistent_session(b, Version::V5)
        }),
        ("redelivery of what was not acknowledged", redelivery),
        ("overlapping subscriptions", overlapping),
        ("$ topics and wildcards", dollar_topics),
        ("unsubscribe", unsubscribe),
        ("QoS 2 from a client", exactly_once_in),
        ("a packet past the size limit", too_large),
        ("a persistent session across a restart", across_restart),
    ];
    let mut differences = Vec::new();
    for (name, behaviour) in behaviours {
        let embedded = behaviour(&mut ours);
        let mosquitto = behaviour(&mut theirs);
        println!("{name}:\n  embedded:  {embedded}\n  mosquitto: {mosquitto}");
        if let Some(why) = on_purpose(name, &embedded, &mosquitto) {
            println!("  (differs on purpose: {why})");
        } else if embedded != mosquitto {
            differences.push(format!(
                "{name}: embedded {embedded:?}, Mosquitto {mosquitto:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the brokers differ:\n{}",
        differences.join("\n")
    );
}

/// A device signs in for one project and may use its namespaces only:
/// refusals carry MQTT 5's reason codes; 3.1.1's SUBACK says 0x80 and its
/// PUBACK cannot refuse, so such a message is acknowledged and dropped (as
/// Mosquitto does); a revoked device is disconnected at once.
#[test]
fn devices_have_their_projects_rights_and_no_more() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    for project in ["plant", "other"] {
        p.run(&["project", "create", project]);
    }
    p.deploy(&fixtures().join("mqtt"), "plant");
    let secret = |project: &str, device: &str| p.create_device(project, device);
    let plant_secret = secret("plant", "sensor");
    let other_secret = secret("other", "intruder");
    let login = |version: Version, id: &str, user: &str, secret: &str| Connect {
        login: Some((user.into(), secret.into())),
        ..Connect {
            version,
            ..Connect::v4(id)
        }
    };

    let mut sensor = connect(
        p.mqtt_port,
        login(Version::V5, "sensor", "plant/sensor", &plant_secret),
    );
    assert_eq!(sensor.subscribe(1, &[("plant/out", 1)]), vec![1]);

    let mut v5 = connect(
        p.mqtt_port,
        login(Version::V5, "rights-5", "other/intruder", &other_secret),
    );
    assert_eq!(
        v5.subscribe(1, &[("#", 1), ("plant/#", 1), ("+/out", 1), ("other/#", 1)]),
        vec![0x87, 0x87, 0x87, 1],
        "5.0: not authorized, but for its own namespace"
    );
    v5.publish("plant/x/in", b"sneak", 1, false, 2, false);
    assert_eq!(
        v5.expect(LONG, |r| matches!(r, Received::PubAck { .. })),
        Some(Received::PubAck {
            pkid: 2,
            code: 0x87
        })
    );

    let mut v4 = connect(
        p.mqtt_port,
        login(Version::V4, "rights-4", "other/intruder", &other_secret),
    );
    assert_eq!(
        v4.subscribe(1, &[("plant/out", 1), ("other/out", 1)]),
        vec![0x80, 1]
    );
    v4.publish("plant/x/in", b"sneak", 1, false, 3, false);
    assert!(
        v4.expect(LONG, |r| matches!(r, Received::PubAck { pkid: 3, .. }))
            .is_some()
    );

    // The plant device sees its own trigger's reply, and never the
    // intruders' messages running its Doee (it subscribed before they
    // published, and theirs were queued before its own).
    let mut seen = Vec::new();
    eventually(Duration::from_secs(30), "the trigger to run", || {
        sensor.publish("plant/s/in", b"mine", 1, false, 9, false);
        seen.extend(sensor.deliveries(Duration::from_secs(1)));
        seen.iter()
            .any(|(_, p)| p == "plant/s/in mine")
            .then_some(())
    });
    assert!(
        !seen.iter().any(|(_, p)| p.contains("sneak")),
        "another project's device ran plant's trigger: {seen:?}"
    );

    // Revoked: disconnected at once (5.0 says why), and refused after.
    p.run(&["device", "revoke", "other", "intruder"]);
    assert_eq!(v5.recv(LONG), Some(Received::Disconnect(0x87)));
    assert!(v4.closed_within(LONG));
    let again = RawClient::connect(
        p.mqtt_port,
        &login(Version::V5, "rights-5", "other/intruder", &other_secret),
    );
    assert_eq!(
        again.map(|r| r.2).ok(),
        Some(0x86),
        "bad username or password"
    );
}

/// Power cuts in the default configuration: a device publishes 2,000 QoS 1
/// messages to a trigger on the embedded broker, signed in as devices do,
/// resending what was not acknowledged whenever it reconnects; every
/// process of the platform is killed with SIGKILL twice meanwhile, and the
/// platform started again on its data directory. Every message the device
/// saw acknowledged must run (the Doee records each id in SQL).
#[test]
fn no_acknowledged_message_is_lost_in_a_power_cut() {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const MESSAGES: u64 = 2000;
    let mut p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_COMMSERVER_MQTT_RETRY_MS", "200")
        .env("ISMS_COMMSERVER_MQTT_MAX_ATTEMPTS", "20")
        .start();
    p.login_admin();
    p.run(&["project", "create", "plant"]);
    p.deploy(&fixtures().join("mqtt"), "plant");
    let secret = p.create_device("plant", "meter");
    let sql = |p: &Platform, query: &str| {
        let body = serde_json::json!({ "query": query }).to_string();
        let r = p.call_api(
            "POST",
            "/api/v1/projects/plant/sql",
            Some(&p.admin_token()),
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()
    };
    sql(&p, "CREATE TABLE seen (id TEXT NOT NULL)");
    // The trigger is live once a message runs.
    let session = Connect {
        clean: false,
        login: Some(("plant/meter".into(), secret)),
        ..Connect::v4("meter")
    };
    let port = p.mqtt_port;
    eventually(Duration::from_secs(30), "the trigger to run", || {
        let mut c = connect(
            port,
            Connect {
                clean: true,
                ..session.clone()
            },
        );
        publish(&mut c, "plant/warm/in", "seen warm", false, 1);
        let rows = sql(&p, "SELECT count(*) AS n FROM seen");
        (rows["rows"][0]["n"].as_u64() >= Some(1)).then_some(())
    });

    let acked = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let device = {
        let (acked, reconnects, stop) = (acked.clone(), reconnects.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut unacked: BTreeMap<u16, u64> = BTreeMap::new();
            let mut seen_acked: HashSet<u64> = HashSet::new();
            let mut next = 0u64;
            while (seen_acked.len() as u64) < MESSAGES && !stop.load(Ordering::Relaxed) {
                let Ok((mut client, _, 0)) = RawClient::connect(port, &session) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                reconnects.fetch_add(1, Ordering::Relaxed);
                for (&pkid, &i) in &unacked {
                    let payload = format!("seen m{i}");
                    client.publish(
                        &format!("plant/d{}/in", i % 10),
                        payload.as_bytes(),
                        1,
                        false,
                        pkid,
                        true,
                    );
                }
                while !client.is_closed() && (seen_acked.len() as u64) < MESSAGES {
                    // Paced, so that the power cuts fall in the middle.
                    while unacked.len() < 20 && next < MESSAGES {
                        std::thread::sleep(Duration::from_millis(2));
                        let pkid = (next % 60_000) as u16 + 1;
                        let payload = format!("seen m{next}");
                        client.publish(
                            &format!("plant/d{}/in", next % 10),
                            payload.as_bytes(),
                            1,
                            false,
                            pkid,
                            false,
                        );
                        unacked.insert(pkid, next);
                        next += 1;
                    }
                    if let Some(Received::PubAck { pkid, .. }) =
                        client.recv(Duration::from_millis(200))
                        && let Some(i) = unacked.remove(&pkid)
                        && seen_acked.insert(i)
                    {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let wait_acked = |n: u64| {
        eventually(Duration::from_secs(180), "acknowledgements", || {
            (acked.load(Ordering::Relaxed) >= n).then_some(())
        })
    };
    for after in [600, 1300] {
        wait_acked(after);
        let at = acked.load(Ordering::Relaxed);
        assert!(at < MESSAGES, "the device finished before the power cut");
        println!("power cut: killing every process after {at} acknowledgements");
        p.crash_and_restart();
    }
    wait_acked(MESSAGES);
    stop.store(true, Ordering::Relaxed);
    device.join().unwrap();
    let (distinct, total) = eventually(Duration::from_secs(240), "every message to run", || {
        let rows = sql(
            &p,
            "SELECT count(DISTINCT id) AS distinct_ids, count(*) AS runs FROM seen WHERE id <> 'warm'",
        );
        let row = &rows["rows"][0];
        let (distinct, total) = (row["distinct_ids"].as_u64()?, row["runs"].as_u64()?);
        (distinct >= MESSAGES).then_some((distinct, total))
    });
    println!(
        "power cut: {MESSAGES} messages acknowledged, {distinct} distinct ids ran, {} duplicate runs, {} connections",
        total - distinct,
        reconnects.load(Ordering::Relaxed)
    );
    assert_eq!(distinct, MESSAGES);
    assert!(
        reconnects.load(Ordering::Relaxed) >= 3,
        "the device lived through both cuts"
    );
}
