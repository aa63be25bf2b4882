//! `remote-doer`: the same trivial Doee through the kernel's own Doer (over
//! `ipc://`) and through a Doer joined from another host (a network
//! namespace, over the authenticated, encrypted `tcp://` link), in one run,
//! both driven over HTTP from the kernel's host. Needs root, for the
//! namespace.

use crate::{BODY, Shape, load, platform, round, runtime, trigger_addr};
use bytes::Bytes;
use isms_test_support::netns::Network;
use isms_test_support::{eventually, free_port};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

pub(crate) fn remote_doer(isms: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let mut network = Network::create().map_err(anyhow::Error::msg)?;
    let endpoint = format!("tcp://{}:{}", network.kernel_ip, free_port());
    let p = platform(isms, &[("ISMS_KERNEL_LISTEN", endpoint.as_str())]);
    p.run(&["project", "create", "bench"]);
    let workers = shape.workers.to_string();
    let resources = format!("[resources]\nconcurrency = {workers}\nmin_warm = {workers}\n");
    let addr = trigger_addr(&p);
    let window = Duration::from_secs(shape.duration);
    let rt = runtime();
    let measure = |path: &str| {
        eprintln!(
            "{path}: {} connections, {} s…",
            shape.concurrency, shape.duration
        );
        rt.block_on(load::drive(
            addr,
            path,
            Bytes::from(BODY),
            shape.concurrency,
            Duration::from_secs(3),
            window,
        ))
    };

    // First the kernel's own Doer alone.
    p.deploy_misbehave("bench", "near", "echo", &resources);
    let mut local = measure("/bench/near");

    // Then a Doer on another host, and a Doee placed there.
    let key = std::process::Command::new(isms)
        .args(["join-key", "--data-dir"])
        .arg(&p.data_dir)
        .output()?;
    anyhow::ensure!(key.status.success(), "isms join-key failed");
    let key_file = p.root.join("join.key");
    std::fs::write(&key_file, &key.stdout)?;
    let host = network.host("remote");
    let capacity = (shape.workers * 2).to_string();
    let joined = host.join(
        isms,
        &endpoint,
        "doer",
        &key_file,
        &p.root,
        &["--capacity", &capacity, "--label", "site=remote"],
    );
    eventually(Duration::from_secs(60), "the remote Doer to join", || {
        let services = p.services();
        services
            .as_array()?
            .iter()
            .any(|s| s["instance"] == "doer@remote" && s["status"] == "up")
            .then_some(())
    });
    p.deploy_misbehave(
        "bench",
        "far",
        "echo",
        &format!("{resources}[placement]\nlabels = {{ site = \"remote\" }}\n"),
    );
    let mut remote = measure("/bench/far");
    drop(joined);
    drop(host);
    drop(p);

    Ok(json!({
        "scenario": "remote-doer",
        "concurrency": shape.concurrency,
        "duration_s": shape.duration,
        "workers": shape.workers,
        "rps": round(remote.rps()),
        "p50_us": remote.percentile(50.0),
        "p99_us": remote.percentile(99.0),
        "errors": remote.errors,
        "local_rps": round(local.rps()),
        "local_p50_us": local.percentile(50.0),
        "local_p99_us": local.percentile(99.0),
        "local_errors": local.errors,
        "ratio_to_local": round(remote.rps() / local.rps()),
    }))
}
