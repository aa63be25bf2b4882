//! One service as its own process: `isms service <name>`, started by the
//! supervisor. Connects to the kernel, registers, and runs the service
//! until SIGTERM or SIGINT, or until the kernel goes away (then it exits
//! with an error and the supervisor starts it again).

use crate::config::Config;
use anyhow::Context as _;
use isms_ipc::{Connection, Registration, ServiceKind};
use std::path::Path;
use std::time::Duration;

/// How long a starting service waits for the kernel.
const KERNEL_WAIT: Duration = Duration::from_secs(30);

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs one service until it stops.
pub fn run(
    service: ServiceKind,
    instance: &str,
    data_dir: &Path,
    config_file: Option<&Path>,
) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(config_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(serve(service, instance, data_dir, &config));
    if let Err(err) = &result {
        tracing::error!("{service} stopped: {err:#}");
    }
    result
}

async fn serve(
    service: ServiceKind,
    instance: &str,
    data_dir: &Path,
    config: &Config,
) -> anyhow::Result<()> {
    let endpoint = config.kernel_endpoint(data_dir)?;
    // Each service prepares everything it needs first, and joins the kernel
    // only once it can serve: being registered is what "up" means.
    let join = |capacity| join(service, instance, capacity, &endpoint);
    let shutdown = shutdown_signal();
    match service {
        ServiceKind::Kernel => isms_kernel::run(config.kernel(data_dir)?, shutdown).await,
        ServiceKind::Doer => {
            let doer = config.doer(data_dir)?;
            let capacity = isms_doer::capacity(&doer);
            let prepared = isms_doer::prepare(doer).await?;
            let (conn, incoming) = join(capacity).await?;
            prepared.serve(conn, incoming, shutdown).await
        }
        ServiceKind::Resadmin => {
            let prepared = isms_resadmin::prepare(config.resadmin(data_dir)?).await?;
            let (conn, incoming) = join(isms_resadmin::CAPACITY).await?;
            prepared.serve(conn, incoming, shutdown).await
        }
        ServiceKind::DBriver => {
            let prepared = isms_dbriver::prepare(config.dbriver(data_dir)?).await?;
            let (conn, incoming) = join(isms_dbriver::CAPACITY).await?;
            prepared.serve(conn, incoming, shutdown).await
        }
        ServiceKind::CommServer => {
            let prepared = isms_commserver::prepare(config.commserver(data_dir)?).await?;
            let (conn, incoming) = join(isms_commserver::CAPACITY).await?;
            prepared.serve(conn, incoming, shutdown).await
        }
        ServiceKind::ControlGate => {
            let prepared = isms_control_gate::prepare(config.control_gate()?).await?;
            let (conn, incoming) = join(isms_control_gate::CAPACITY).await?;
            prepared.serve(conn, incoming, shutdown).await
        }
    }
}

/// Connects to the kernel and registers.
async fn join(
    service: ServiceKind,
    instance: &str,
    capacity: u32,
    endpoint: &isms_ipc::Endpoint,
) -> anyhow::Result<(Connection, isms_ipc::Incoming)> {
    let registration = Registration {
        service,
        instance: instance.to_string(),
        pid: std::process::id(),
        capacity,
    };
    let joined = Connection::connect(endpoint, registration, KERNEL_WAIT)
        .await
        .with_context(|| format!("the {service} cannot join the kernel"))?;
    tracing::info!(%service, %instance, "registered with the kernel");
    Ok(joined)
}
