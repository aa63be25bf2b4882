//! `soak`: HTTP and MQTT traffic together for `--duration` seconds, with
//! every ISMS process's resident memory sampled each second. The figure is
//! the growth over the run's second half, when caches and pools have
//! warmed up: a platform that keeps what it no longer needs grows there.
//!
//! HTTP: `--concurrency` connections to a trivial Doee. MQTT: a device
//! publishes QoS 1 messages to the `mqtt` fixture's trigger at a steady
//! rate, the replies counted by a subscriber.

use crate::mqtt::{Report, client};
use crate::{Shape, platform, round, runtime, tree_rss_mb};
use bytes::Bytes;
use isms_test_support::fixtures;
use rumqttc::QoS;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// MQTT messages a second.
const MQTT_RATE: u64 = 200;

pub fn soak(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let p = platform(isms, &[]);
    p.run(&["project", "create", "plant"]);
    p.deploy(&fixtures().join("mqtt"), "plant");
    p.deploy_misbehave(
        "plant",
        "echo",
        "echo",
        "[resources]\nconcurrency = 4\nmin_warm = 4\n",
    );
    let secret = p
        .run(&["device", "create", "plant", "soak"])
        .lines()
        .find_map(|l| l.strip_prefix("MQTT password"))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("`isms device create` printed no password"))?;
    let login = Some(("plant/soak".to_string(), secret));
    let duration = Duration::from_secs(shape.duration.max(20));
    let supervisor = p.supervisor_pid();
    let addr = crate::trigger_addr(&p);
    let port = p.mqtt_port;
    let rt = runtime();
    eprintln!(
        "soak: HTTP with {} connections and MQTT at {MQTT_RATE}/s for {} s…",
        shape.concurrency,
        duration.as_secs()
    );
    let (samples, http, mqtt_sent, mqtt_replies, growth_by_process) = rt.block_on(async {
        let http = tokio::spawn(crate::load::drive(
            addr,
            "/plant/echo",
            Bytes::from_static(b"soak"),
            shape.concurrency,
            Duration::ZERO,
            duration,
        ));
        let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let subscriber = client("soak-sub", port, &login, reports_tx.clone());
        subscriber.subscribe("plant/out", QoS::AtLeastOnce).await?;
        let publisher = client("soak-pub", port, &login, reports_tx);
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut sent = 0u64;
        let mut replies = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / MQTT_RATE));
        let mut next_sample = started;
        let mut at_mid = None;
        while started.elapsed() < duration {
            tick.tick().await;
            publisher
                .publish(
                    "plant/soak/in",
                    QoS::AtLeastOnce,
                    false,
                    format!("soak {sent}"),
                )
                .await?;
            sent += 1;
            while let Ok(report) = reports.try_recv() {
                match report {
                    Report::Message { .. } => replies += 1,
                    Report::Failed(why) => anyhow::bail!("{why}"),
                    Report::Subscribed => {}
                }
            }
            if Instant::now() >= next_sample {
                samples.push((started.elapsed().as_secs_f64(), tree_rss_mb(supervisor)));
                next_sample += Duration::from_secs(1);
                if at_mid.is_none() && started.elapsed() >= duration / 2 {
                    at_mid = Some(rss_by_process(supervisor));
                }
            }
        }
        let at_end = rss_by_process(supervisor);
        let http = http.await.unwrap_or_default();
        let growth: serde_json::Map<_, _> = at_end
            .iter()
            .map(|(name, end)| {
                let mid = at_mid
                    .as_ref()
                    .and_then(|m| m.get(name))
                    .copied()
                    .unwrap_or(0.0);
                (name.clone(), json!(round(end - mid)))
            })
            .collect();
        anyhow::Ok((samples, http, sent, replies, growth))
    })?;
    anyhow::ensure!(samples.len() >= 4, "too few samples");
    let half = samples.len() / 2;
    let mid = samples[half].1;
    let end = samples.last().map_or(0.0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    Ok(json!({
        "scenario": "soak",
        "duration_s": duration.as_secs(),
        "http_rps": round(http.rps()),
        "http_errors": http.errors,
        "mqtt_sent": mqtt_sent,
        "mqtt_replies": mqtt_replies,
        "rss_start_mb": round(samples[0].1),
        "rss_mid_mb": round(mid),
        "rss_end_mb": round(end),
        "rss_peak_mb": round(peak),
        "growth_second_half_mb": round(end - mid),
        "growth_second_half_by_process_mb": growth_by_process,
    }))
}

/// RSS in MiB of `root` and its descendants, summed by program and first two arguments.
fn rss_by_process(root: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    for pid in std::iter::once(root).chain(isms_test_support::descendants(root)) {
        // "isms service commserver …" → "isms service commserver": one binary for all.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let name = cmdline
            .split(|&b| b == 0)
            .take(3)
            .map(|arg| {
                String::from_utf8_lossy(arg.rsplit(|&b| b == b'/').next().unwrap_or(arg))
                    .into_owned()
            })
            .collect::<Vec<_>>()
            .join(" ");
        *by_name.entry(name).or_default() += isms_test_support::rss_kib(pid) as f64 / 1024.0;
    }
    by_name
}
