//! `mqtt`: QoS 1 messages through a trivial Doee with replies, beside
//! Mosquitto alone relaying the same messages, in the same run.
//!
//! Through the platform, a publisher sends QoS 1 messages on
//! `plant/bench/in` to the embedded broker; the `tests/doees/mqtt` fixture
//! (trigger `plant/+/in`) answers each with `<topic> <payload>`, which the
//! platform publishes on `plant/out`, where a subscriber (QoS 1) counts the
//! distinct replies. For the baseline, the same two clients go to a private
//! Mosquitto, the subscriber on the topic the publisher publishes on.
//!
//! Both halves use the same clients on one thread, and the publisher keeps
//! at most [`WINDOW`] messages unanswered end to end: otherwise it would
//! measure how big a backlog the broker swallows, not what flows through.
//! Each half publishes for `--duration` seconds, then waits for the last
//! replies; the rate is the distinct replies over the time from the first
//! publish to the last reply. Then one message at a time, for latencies.
//!
//! A third round measures the embedded broker alone: the same relay as the
//! Mosquitto baseline (device → broker → subscriber, no Doee), on the
//! platform, signed in as a device as the platform's defaults require.

use crate::{Shape, platform, round, runtime};
use isms_test_support::{Mosquitto, Platform, copy_dir, fixtures, temp_dir};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The fixture's triggers live in this project's topic namespace.
const PROJECT: &str = "plant";
const IN_TOPIC: &str = "plant/bench/in";
const OUT_TOPIC: &str = "plant/out";
/// What the baseline publishes and subscribes to.
const RELAY_TOPIC: &str = "bench/relay";
/// QoS 1 messages a client has unacknowledged at once (rumqttc's default).
const INFLIGHT: u16 = 100;
/// Messages published and not yet answered, end to end.
const WINDOW: u64 = 1000;
/// Messages answered before the measurement starts.
const WARM_UP: u64 = 500;
/// No reply for this long fails the run.
const STALL: Duration = Duration::from_secs(15);
/// Messages sent one at a time, each waiting for its reply, for latencies.
const ONE_AT_A_TIME: u64 = 300;
/// The embedded broker's relay topic (inside the project's namespace).
const PLATFORM_RELAY: &str = "plant/relay";

/// Device credentials for the platform's broker; none for Mosquitto.
pub(crate) type Login = Option<(String, String)>;

pub fn mqtt(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    // The test support starts the platform's embedded broker on a free port.
    let p = platform(isms, &[]);
    let port = p.mqtt_port;
    let address = format!("127.0.0.1:{port}");
    let output = p.output();
    if !output.contains(&format!("mqtt://{address}")) {
        let said = output
            .lines()
            .find(|l| l.contains("MQTT broker"))
            .unwrap_or("nothing about MQTT")
            .trim();
        anyhow::bail!(
            "the platform did not start its MQTT broker on {address} (its banner says: {said}): \
             this version of ISMS cannot run the mqtt scenario"
        );
    }
    p.run(&["project", "create", PROJECT]);
    let dir = temp_dir("bench-mqtt");
    copy_dir(&fixtures().join("mqtt"), &dir);
    let manifest = std::fs::read_to_string(dir.join("doee.toml"))?;
    anyhow::ensure!(
        manifest.contains("concurrency = 4"),
        "the mqtt fixture's manifest changed: the benchmark sets its `concurrency`"
    );
    let manifest = manifest.replace(
        "concurrency = 4",
        &format!("concurrency = {0}\nmin_warm = {0}", shape.workers),
    );
    std::fs::write(dir.join("doee.toml"), manifest)?;
    p.deploy(&dir, PROJECT);
    let _ = std::fs::remove_dir_all(&dir);
    let secret = p
        .run(&["device", "create", PROJECT, "bench"])
        .lines()
        .find_map(|l| l.strip_prefix("MQTT password"))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("`isms device create` printed no password"))?;
    let login: Login = Some((format!("{PROJECT}/bench"), secret));

    let rt = runtime();
    eprintln!(
        "through the platform: QoS 1 on {IN_TOPIC}, replies on {OUT_TOPIC}, {} s…",
        shape.duration
    );
    let through = rt.block_on(measure(port, &login, IN_TOPIC, OUT_TOPIC, shape.duration));
    if through.is_err() {
        print_log_tail(&p, "commserver");
    }
    let through = through?;
    eprintln!("  {}", through.describe());
    eprintln!(
        "the embedded broker alone: QoS 1 on {PLATFORM_RELAY}, {} s…",
        shape.duration
    );
    let embedded = rt.block_on(measure(
        port,
        &login,
        PLATFORM_RELAY,
        PLATFORM_RELAY,
        shape.duration,
    ))?;
    eprintln!("  {}", embedded.describe());
    drop(p);

    eprintln!(
        "Mosquitto alone: QoS 1 on {RELAY_TOPIC}, {} s…",
        shape.duration
    );
    let broker = Mosquitto::start();
    let alone = rt.block_on(measure(
        broker.port,
        &None,
        RELAY_TOPIC,
        RELAY_TOPIC,
        shape.duration,
    ));
    if alone.is_err() {
        eprintln!("---- mosquitto.log:\n{}", broker.log());
    }
    drop(broker);
    let alone = alone?;
    eprintln!("  {}", alone.describe());

    Ok(json!({
        "scenario": "mqtt",
        "duration_s": shape.duration,
        "workers": shape.workers,
        "inflight": INFLIGHT,
        "window": WINDOW,
        "msgs_per_s": round(through.round.rate()),
        "messages": through.round.distinct,
        "duplicates": through.round.duplicates,
        "reply_qos": through.round.reply_qos,
        "one_at_a_time_p50_us": through.p50_us,
        "one_at_a_time_p99_us": through.p99_us,
        "broker_msgs_per_s": round(alone.round.rate()),
        "broker_messages": alone.round.distinct,
        "broker_duplicates": alone.round.duplicates,
        "broker_one_at_a_time_p50_us": alone.p50_us,
        "ratio_to_broker": round(through.round.rate() / alone.round.rate()),
        "embedded_broker_msgs_per_s": round(embedded.round.rate()),
        "embedded_broker_one_at_a_time_p50_us": embedded.p50_us,
        "embedded_broker_ratio_to_mosquitto": round(embedded.round.rate() / alone.round.rate()),
    }))
}

fn print_log_tail(p: &Platform, service: &str) {
    let log = std::fs::read_to_string(p.data_dir.join("logs").join(format!("{service}.log")))
        .unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    eprintln!("---- {service}.log (last lines):");
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
}

/// What a client's event loop reports.
pub(crate) enum Report {
    Subscribed,
    Message { payload: bytes::Bytes, qos: QoS },
    Failed(String),
}

/// One measured round.
#[derive(Default)]
struct Round {
    /// The first message's id.
    first: u64,
    started: Option<Instant>,
    /// Whether each message published so far was answered.
    seen: Vec<bool>,
    published: u64,
    distinct: u64,
    duplicates: u64,
    elapsed: Duration,
    /// The QoS levels the replies arrived with.
    reply_qos: Vec<u8>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.distinct as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Counts a reply.
    fn take(&mut self, report: Report) -> anyhow::Result<()> {
        let (payload, qos) = match report {
            Report::Message { payload, qos } => (payload, qos),
            Report::Failed(why) => anyhow::bail!("{why}"),
            Report::Subscribed => return Ok(()),
        };
        let id = std::str::from_utf8(&payload)
            .ok()
            .and_then(|text| text.rsplit(' ').next()?.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("a reply that names no message: {payload:?}"))?;
        // Late replies of the probe or the warm-up are not this round's.
        let Some(slot) = id
            .checked_sub(self.first)
            .and_then(|i| self.seen.get_mut(usize::try_from(i).ok()?))
        else {
            return Ok(());
        };
        if std::mem::replace(slot, true) {
            self.duplicates += 1;
        } else {
            self.distinct += 1;
            self.elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
            if !self.reply_qos.contains(&(qos as u8)) {
                self.reply_qos.push(qos as u8);
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "{} messages in {:.2} s: {:.0}/s, {} duplicates",
            self.distinct,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.duplicates
        )
    }
}

/// A round's throughput, and the latencies of one message at a time.
struct Measured {
    round: Round,
    p50_us: u64,
    p99_us: u64,
}

impl Measured {
    fn describe(&self) -> String {
        format!(
            "{}; one at a time p50 {} µs, p99 {} µs",
            self.round.describe(),
            self.p50_us,
            self.p99_us
        )
    }
}

/// Connects a publisher and a subscriber to the broker on `port`, checks
/// that a message gets through, warms up, then measures a round and one
/// message at a time.
async fn measure(
    port: u16,
    login: &Login,
    publish_on: &str,
    replies_on: &str,
    duration: u64,
) -> anyhow::Result<Measured> {
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let subscriber = client("sub", port, login, reports_tx.clone());
    subscriber.subscribe(replies_on, QoS::AtLeastOnce).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), reports.recv()).await {
            Ok(Some(Report::Subscribed)) => break,
            Ok(Some(Report::Failed(why))) => anyhow::bail!("{why}"),
            Ok(Some(Report::Message { .. })) => {}
            Ok(None) | Err(_) => {
                anyhow::bail!("the subscription to {replies_on} was not acknowledged within 10 s")
            }
        }
    }
    let publisher = client("pub", port, login, reports_tx);
    let mut ids = 0..;

    // The platform may subscribe to a new Doee's topics a moment after the
    // deploy, and a message published before that is lost: probe until one
    // comes back.
    let deadline = Instant::now() + Duration::from_secs(60);
    'probe: loop {
        let id = ids.next().unwrap_or_default();
        publisher
            .publish(publish_on, QoS::AtLeastOnce, false, payload(id))
            .await?;
        let retry = Instant::now() + Duration::from_millis(500);
        loop {
            match tokio::time::timeout_at(retry.into(), reports.recv()).await {
                Ok(Some(Report::Message { .. })) => break 'probe,
                Ok(Some(Report::Failed(why))) => anyhow::bail!("{why}"),
                Ok(Some(Report::Subscribed)) => {}
                Ok(None) => anyhow::bail!("the MQTT clients stopped"),
                Err(_) => break,
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no reply on {replies_on} within 60 s of publishing on {publish_on}"
        );
    }

    let first = ids.next().unwrap_or_default() + 1_000;
    let warm = run_round(
        &publisher,
        &mut reports,
        publish_on,
        first,
        WARM_UP,
        Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| e.context("warming up"))?;
    let first = first + warm.published + 1_000;
    let publish_for = Duration::from_secs(duration.max(1));
    let round = run_round(
        &publisher,
        &mut reports,
        publish_on,
        first,
        u64::MAX,
        publish_for,
        publish_for + Duration::from_secs(duration.max(10)),
    )
    .await?;
    let mut latencies = Vec::new();
    let first = first + round.published + 1_000;
    for id in first..first + ONE_AT_A_TIME {
        let one = run_round(
            &publisher,
            &mut reports,
            publish_on,
            id,
            1,
            Duration::from_secs(10),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| e.context("one message at a time"))?;
        latencies.push(one.elapsed.as_micros() as u64);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Measured {
        round,
        p50_us: at(0.5),
        p99_us: at(0.99),
    })
}

/// Publishes up to `count` messages with ids from `first`, for at most
/// `publish_for`, never more than [`WINDOW`] unanswered, and waits for
/// every reply; fails past `limit` or after [`STALL`] without a reply.
async fn run_round(
    publisher: &AsyncClient,
    reports: &mut mpsc::UnboundedReceiver<Report>,
    topic: &str,
    first: u64,
    count: u64,
    publish_for: Duration,
    limit: Duration,
) -> anyhow::Result<Round> {
    let started = Instant::now();
    let mut round = Round {
        first,
        started: Some(started),
        ..Round::default()
    };
    let (stop_publishing, deadline) = (started + publish_for, started + limit);
    loop {
        while let Ok(report) = reports.try_recv() {
            round.take(report)?;
        }
        let now = Instant::now();
        let publishing = round.published < count && now < stop_publishing;
        if publishing && round.published - round.distinct < WINDOW {
            let id = first + round.published;
            publisher
                .publish(topic, QoS::AtLeastOnce, false, payload(id))
                .await?;
            round.seen.push(false);
            round.published += 1;
            continue;
        }
        if !publishing && round.distinct == round.published {
            return Ok(round);
        }
        let wait_until = deadline.min(now + STALL);
        match tokio::time::timeout_at(wait_until.into(), reports.recv()).await {
            Ok(Some(report)) => round.take(report)?,
            Ok(None) => anyhow::bail!("the MQTT clients stopped"),
            Err(_) => anyhow::bail!(
                "{} after {:.1} s: {} of {} messages answered ({} duplicates)",
                if Instant::now() >= deadline {
                    "out of time"
                } else {
                    "no reply for 15 s"
                },
                started.elapsed().as_secs_f64(),
                round.distinct,
                round.published,
                round.duplicates
            ),
        }
    }
}

/// About 20 bytes, ending with the message's id.
fn payload(id: u64) -> Vec<u8> {
    format!("msg {id:016}").into_bytes()
}

/// A client on 127.0.0.1:`port` whose event loop runs as a task, reporting
/// subscriptions, messages and a lost connection to `reports`.
pub(crate) fn client(
    role: &str,
    port: u16,
    login: &Login,
    reports: mpsc::UnboundedSender<Report>,
) -> AsyncClient {
    let id = format!("isms-bench-{role}-{}", std::process::id());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(INFLIGHT);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(INFLIGHT));
    // Replies and acknowledgements go out one by one: no Nagle delays.
    eventloop.network_options.set_tcp_nodelay(true);
    let role = role.to_string();
    tokio::spawn(async move {
        loop {
            let report = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => Report::Message {
                    payload: publish.payload,
                    qos: publish.qos,
                },
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        Report::Failed("the broker refused the subscription".into())
                    } else {
                        Report::Subscribed
                    }
                }
                Ok(_) => continue,
                Err(e) => Report::Failed(format!("the {role} client's connection failed: {e}")),
            };
            let failed = matches!(report, Report::Failed(_));
            if reports.send(report).is_err() || failed {
                return;
            }
        }
    });
    client
}
