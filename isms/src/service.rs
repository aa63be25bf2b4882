//! One service as its own process: `isms service <name>`, started by the
//! supervisor. Connects to the kernel, registers, and runs the service
//! until SIGTERM or SIGINT, or until the kernel goes away (then it exits
//! with an error and the supervisor starts it again).

use crate::config::Config;
use anyhow::Context as _;
use isms_ipc::connection::ConnectError;
use isms_ipc::link::{JoinError, Joining};
use isms_ipc::{Connection, Endpoint, Registration, ServiceKind};
use std::path::Path;
use std::time::Duration;

/// How a service started by `isms join` reaches a kernel on another host.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The kernel's `tcp://` endpoint.
    pub endpoint: Endpoint,
    /// The join key and the link's bounds.
    pub joining: Joining,
    /// Requests handled at once, if not the service's own default.
    pub capacity: Option<u32>,
    /// The operator's labels for placement.
    pub labels: Vec<(String, String)>,
}

/// The exit code of a service the kernel will not have (wrong key, another
/// kernel, a service that may not join from another host): trying again
/// cannot help, so `isms join` stops instead of retrying.
pub const REFUSED_EXIT_CODE: u8 = 3;

/// Whether `err` is the kernel's refusal rather than its absence.
pub fn is_refusal(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ConnectError>(),
            Some(
                ConnectError::Refused { .. }
                    | ConnectError::NoKey(_)
                    | ConnectError::Join(
                        JoinError::WrongKernel(_)
                            | JoinError::Refused { .. }
                            | JoinError::Unproven(_)
                    )
            )
        )
    })
}

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
    remote: Option<Remote>,
) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(config_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(serve(service, instance, data_dir, &config, remote));
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
    remote: Option<Remote>,
) -> anyhow::Result<()> {
    let endpoint = match &remote {
        Some(remote) => remote.endpoint.clone(),
        None => config.kernel_endpoint(data_dir)?,
    };
    let capacity_override = remote.as_ref().and_then(|r| r.capacity);
    // Each service prepares everything it needs first, and joins the kernel
    // only once it can serve: being registered is what "up" means.
    let join = |capacity: u32| {
        let registration = Registration {
            service,
            instance: instance.to_string(),
            pid: std::process::id(),
            capacity: capacity_override.unwrap_or(capacity),
            host: isms_ipc::link::host_name(),
            labels: remote
                .as_ref()
                .map(|r| r.labels.clone())
                .unwrap_or_default(),
        };
        join(registration, &endpoint, remote.as_ref().map(|r| &r.joining))
    };
    let shutdown = shutdown_signal();
    match service {
        ServiceKind::Kernel => isms_kernel::run(config.kernel(data_dir)?, shutdown).await,
        ServiceKind::Doer => {
            let mut doer = config.doer(data_dir)?;
            doer.instance = instance.to_string();
            if let Some(capacity) = capacity_override {
                doer.max_workers = capacity;
            }
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
            let mut commserver = config.commserver(data_dir)?;
            if let Some(shared) = &mut commserver.mqtt.shared_inbox {
                shared.owner = instance.to_string();
            }
            // Each CommServer's session at an external broker is its own:
            // one id for two would have the broker drop one for the other.
            if let isms_commserver::DoorConfig::External(external) = &mut commserver.mqtt.door
                && remote.is_some()
            {
                external.client_id = format!("{}-{instance}", external.client_id);
            }
            let prepared = isms_commserver::prepare(commserver).await?;
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
    registration: Registration,
    endpoint: &Endpoint,
    joining: Option<&Joining>,
) -> anyhow::Result<(Connection, isms_ipc::Incoming)> {
    let (service, instance) = (registration.service, registration.instance.clone());
    let joined = Connection::connect(endpoint, joining, registration, KERNEL_WAIT)
        .await
        .with_context(|| format!("the {service} cannot join the kernel"))?;
    tracing::info!(%service, %instance, %endpoint, "registered with the kernel");
    Ok(joined)
}
