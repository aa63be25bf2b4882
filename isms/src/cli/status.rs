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
        "{:<14} {:<16} {:>8} {:<5} {:>9} {:>6} {:>8} {:>9} {:>10}",
        "SERVICE",
        "INSTANCE",
        "PID",
        "STATE",
        "IN FLIGHT",
        "QUEUE",
        "WORKERS",
        "RESTARTS",
        "HANDLED"
    );
    for s in services.as_array().cloned().unwrap_or_default() {
        println!(
            "{:<14} {:<16} {:>8} {:<5} {:>9} {:>6} {:>8} {:>9} {:>10}",
            s["service"].as_str().unwrap_or("?"),
            s["instance"].as_str().unwrap_or("?"),
            s["pid"].as_u64().unwrap_or(0),
            s["status"].as_str().unwrap_or("?"),
            s["in_flight"].as_u64().unwrap_or(0),
            s["queue_depth"].as_u64().unwrap_or(0),
            s["workers"].as_u64().unwrap_or(0),
            s["restarts"].as_u64().unwrap_or(0),
            s["handled"].as_u64().unwrap_or(0),
        );
    }
    Ok(())
}
