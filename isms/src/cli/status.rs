//! `isms status`: the Services Controller's view.

use super::{Api, ApiArgs};

/// Prints every service instance with its health and load.
pub async fn run(api: &ApiArgs) -> anyhow::Result<()> {
    let api = Api::new(api)?;
    let services = api
        .get("/api/v1/system/services")
        .await?
        .json()
        .map_err(anyhow::Error::msg)?;
    println!(
        "{:<14} {:<18} {:<16} {:>8} {:<5} {:>9} {:>6} {:>8} {:>9} {:>10} {:>9}  LABELS",
        "SERVICE",
        "INSTANCE",
        "HOST",
        "PID",
        "STATE",
        "LOAD",
        "QUEUE",
        "WORKERS",
        "RESTARTS",
        "HANDLED",
        "HEARTBEAT"
    );
    for s in services.as_array().cloned().unwrap_or_default() {
        let labels: Vec<String> = s["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .map(|(name, value)| format!("{name}={}", value.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        let load = match s["capacity"].as_u64().unwrap_or(0) {
            0 => format!("{}", s["in_flight"].as_u64().unwrap_or(0)),
            capacity => format!("{}/{capacity}", s["in_flight"].as_u64().unwrap_or(0)),
        };
        println!(
            "{:<14} {:<18} {:<16} {:>8} {:<5} {:>9} {:>6} {:>8} {:>9} {:>10} {:>8.1}s  {}",
            s["service"].as_str().unwrap_or("?"),
            s["instance"].as_str().unwrap_or("?"),
            s["host"].as_str().unwrap_or("?"),
            s["pid"].as_u64().unwrap_or(0),
            s["status"].as_str().unwrap_or("?"),
            load,
            s["queue_depth"].as_u64().unwrap_or(0),
            s["workers"].as_u64().unwrap_or(0),
            s["restarts"].as_u64().unwrap_or(0),
            s["handled"].as_u64().unwrap_or(0),
            s["heartbeat_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            labels.join(","),
        );
    }
    Ok(())
}
