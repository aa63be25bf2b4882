//! The options of each section, with their defaults: the one place an
//! option is declared. Its range, if numeric, is in [`super::RANGES`].

use serde::{Deserialize, Serialize};

/// `[control_gate]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlGateSection {
    /// Dashboard, REST API and metrics.
    pub addr: String,
    /// Largest Doee upload, MiB.
    pub max_upload_mb: u32,
    /// For working on the dashboard: serve its files from this directory
    /// (`control-gate/dashboard`) instead of the copies built into `isms`.
    pub dashboard_dir: String,
    /// A bearer token that shows every project's metrics at `/metrics` (for
    /// Prometheus); empty means none. Without a token `/metrics` names no
    /// project; with a user's token, that user's projects.
    pub metrics_token: String,
    /// Longest wait for a request's head (also between kept-alive requests), ms.
    pub header_timeout_ms: u32,
    /// Longest silence of a connection while none of its requests is handled, seconds.
    pub idle_timeout_s: u32,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: u32,
}

impl Default for ControlGateSection {
    fn default() -> Self {
        ControlGateSection {
            addr: "127.0.0.1:7780".into(),
            max_upload_mb: 16,
            dashboard_dir: String::new(),
            metrics_token: String::new(),
            header_timeout_ms: 10_000,
            idle_timeout_s: 60,
            max_connections: 1024,
        }
    }
}

/// `[commserver]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommServerSection {
    /// HTTP triggers.
    pub http_addr: String,
    /// Largest HTTP request body, KiB.
    pub max_body_kb: u32,
    /// Time an invocation may wait in queues beyond the Doee's timeout, ms.
    pub queue_allowance_ms: u32,
    /// HTTP triggers: longest wait for a request's head (also between
    /// kept-alive requests), ms.
    pub http_header_timeout_ms: u32,
    /// HTTP triggers: longest silence of a connection while none of its
    /// requests is handled, seconds.
    pub http_idle_timeout_s: u32,
    /// HTTP triggers: connections served at once; more wait to be accepted.
    pub http_max_connections: u32,
    /// Where the embedded MQTT broker listens (when `mqtt_url` is empty).
    pub mqtt_addr: String,
    /// The embedded broker's MQTT over TLS: where (empty: none).
    pub mqtts_addr: String,
    /// The embedded broker's TLS certificate chain, PEM.
    pub mqtt_cert_file: String,
    /// The embedded broker's TLS private key, PEM.
    pub mqtt_key_file: String,
    /// Whether the embedded broker lets in clients without credentials,
    /// from loopback only (devices otherwise sign in with `isms device create`).
    pub mqtt_anonymous: bool,
    /// QoS 1 messages queued per session at the embedded broker at most.
    pub mqtt_max_queued: u32,
    /// QoS 1 messages unacknowledged per client at the embedded broker at most.
    pub mqtt_max_inflight: u32,
    /// An external broker instead, `mqtt://host:1883` or `mqtts://host:8883`.
    pub mqtt_url: String,
    /// Username for the external broker.
    pub mqtt_username: String,
    /// Password for the external broker.
    pub mqtt_password: String,
    /// PEM file of CA certificates for `mqtts://` (the Mozilla roots otherwise).
    pub mqtt_ca_file: String,
    /// The CommServer's MQTT client id: its persistent session's name.
    pub mqtt_client_id: String,
    /// With an external broker: a PostgreSQL database (`postgres://…`) that
    /// keeps every CommServer's inbox of accepted messages, so that another
    /// runs what a lost one had accepted (empty: each keeps its own).
    pub inbox_url: String,
    /// How long a CommServer's messages in the shared inbox stay its own
    /// without a renewal; past it another takes them over, ms.
    pub inbox_lease_ms: u32,
    /// Runs of a message before it becomes a dead letter.
    pub mqtt_max_attempts: u32,
    /// Delay before the first retry, ms; it doubles each time (up to a minute).
    pub mqtt_retry_ms: u32,
    /// MQTT invocations run at once.
    pub mqtt_concurrency: u32,
    /// Messages recorded and not yet run past which no more are acknowledged.
    pub mqtt_max_pending: u32,
}

impl Default for CommServerSection {
    fn default() -> Self {
        CommServerSection {
            http_addr: "127.0.0.1:7781".into(),
            max_body_kb: 1024,
            queue_allowance_ms: 1000,
            http_header_timeout_ms: 10_000,
            http_idle_timeout_s: 60,
            http_max_connections: 1024,
            mqtt_addr: "127.0.0.1:1884".into(),
            mqtts_addr: String::new(),
            mqtt_cert_file: String::new(),
            mqtt_key_file: String::new(),
            mqtt_anonymous: false,
            mqtt_max_queued: 1000,
            mqtt_max_inflight: 100,
            mqtt_url: String::new(),
            mqtt_username: String::new(),
            mqtt_password: String::new(),
            mqtt_ca_file: String::new(),
            mqtt_client_id: "isms-commserver".into(),
            inbox_url: String::new(),
            inbox_lease_ms: 15_000,
            mqtt_max_attempts: 5,
            mqtt_retry_ms: 1000,
            mqtt_concurrency: 64,
            mqtt_max_pending: 10_000,
        }
    }
}

/// `[kernel]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelSection {
    /// Where the kernel listens: empty means `ipc://<data-dir>/run/kernel.sock`;
    /// `tcp://<addr>:<port>` adds a TLS listener for services on other hosts.
    pub listen: String,
    /// Requests waiting per target service.
    pub queue_limit: u32,
    /// Requests waiting per target service from one project.
    pub project_queue_limit: u32,
    /// Silence after which a service instance is down, ms.
    pub heartbeat_timeout_ms: u32,
    /// The largest message a link from another host may carry, MiB.
    pub max_message_mb: u32,
}

impl Default for KernelSection {
    fn default() -> Self {
        KernelSection {
            listen: String::new(),
            queue_limit: 4096,
            project_queue_limit: 1024,
            heartbeat_timeout_ms: 3000,
            max_message_mb: 80,
        }
    }
}

/// `[doer]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DoerSection {
    /// `auto`, `apptainer`, `bwrap` or `process`.
    pub isolation: String,
    /// cgroups for Workers: `auto` (where the host allows, a loud warning
    /// otherwise), `on` (refuse to start without) or `off`.
    pub cgroups: String,
    /// Workers across all Doees.
    pub max_workers: u32,
    /// Invocations waiting for a Worker per Doee version.
    pub queue_per_doee: u32,
    /// Idle time before a Worker is stopped, seconds.
    pub idle_timeout_s: u32,
    /// The uid Workers run as when the platform runs as root.
    pub worker_uid: u32,
    /// Processes and threads per Worker.
    pub worker_max_processes: u32,
    /// Size of each Worker's private /tmp, MiB.
    pub worker_tmp_mb: u32,
    /// Largest output of one invocation, MiB.
    pub max_output_mb: u32,
    /// Output kept in each invocation's record, KiB.
    pub record_output_kb: u32,
    /// How deep Doees may call Doees (`ctx.invoke`): a cycle fails there.
    pub max_chain_depth: u8,
}

impl Default for DoerSection {
    fn default() -> Self {
        DoerSection {
            isolation: "auto".into(),
            cgroups: "auto".into(),
            max_workers: 64,
            queue_per_doee: 64,
            idle_timeout_s: 60,
            worker_uid: isms_doer::isolation::DEFAULT_WORKER_UID,
            worker_max_processes: 64,
            worker_tmp_mb: 64,
            max_output_mb: 16,
            record_output_kb: 64,
            max_chain_depth: 8,
        }
    }
}

/// `[resadmin]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResadminSection {
    /// Longest build, seconds.
    pub build_timeout_s: u32,
    /// Lifetime of a login token, hours.
    pub token_ttl_hours: u32,
    /// Cargo target directory shared by builds; empty means `<data-dir>/resadmin/target`.
    pub build_target_dir: String,
    /// `CARGO_HOME` for builds; empty means `<data-dir>/resadmin/cargo-home`.
    pub cargo_home: String,
    /// Invocation records and log lines kept at most this long, hours.
    pub records_max_age_hours: u32,
    /// Invocation records (and log lines) kept at most.
    pub records_max_count: u32,
    /// Doees per project, unless an admin sets another quota.
    pub quota_max_doees: u32,
    /// Workers per project (the sum of its Doees' concurrency), unless an admin sets another quota.
    pub quota_max_workers: u32,
    /// Largest upload per project, MiB, unless an admin sets another quota.
    pub quota_max_upload_mb: u32,
    /// A project's CPU weight against other projects (1 to 10000), unless an admin sets another quota.
    pub quota_cpu_weight: u32,
    /// What a project's fetched dependencies (crates, wheels) may take, MiB, unless an admin sets another quota.
    pub quota_max_dependencies_mb: u32,
    /// Projects a user who is not a platform admin may create.
    pub quota_max_projects: u32,
    /// `auto` (bubblewrap if installed, else unsandboxed with a warning), `bwrap` or `none`.
    pub build_isolation: String,
    /// Whether builds may reach the network.
    pub build_network: bool,
    /// Address space of each build process, MiB.
    pub build_memory_mb: u32,
    /// The uid builds run as when the platform runs as root.
    pub build_uid: u32,
    /// Where builds fetch crates: a sparse registry URL (a crates.io mirror,
    /// for a platform without Internet); empty means crates.io.
    pub crates_registry: String,
    /// Where builds fetch Python packages: a simple index URL (a PyPI
    /// mirror); empty means PyPI.
    pub pip_index_url: String,
    /// The key sealing project secrets (64 hex digits, made 0600 if
    /// missing); empty means `<data-dir>/resadmin/secrets.key`.
    pub secrets_key_file: String,
}

impl Default for ResadminSection {
    fn default() -> Self {
        ResadminSection {
            build_timeout_s: 600,
            token_ttl_hours: 720,
            build_target_dir: String::new(),
            cargo_home: String::new(),
            records_max_age_hours: 168,
            records_max_count: 100_000,
            quota_max_doees: 50,
            quota_max_workers: 32,
            quota_max_upload_mb: 16,
            quota_cpu_weight: 100,
            quota_max_dependencies_mb: 1024,
            quota_max_projects: 10,
            build_isolation: "auto".into(),
            build_network: false,
            build_memory_mb: 2048,
            build_uid: 65534,
            crates_registry: String::new(),
            pip_index_url: String::new(),
            secrets_key_file: String::new(),
        }
    }
}

/// `[dbriver]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DBriverSection {
    /// `postgres://user:password@host:port/database` of a role that may create roles and schemas; empty means one SQLite file per project.
    pub sql_url: String,
    /// `mongodb://…`; empty means the embedded document store.
    pub mongodb_url: String,
    /// Largest SQL database per project, MiB.
    pub max_db_mb: u32,
    /// SQL connections per project.
    pub max_connections: u32,
    /// Longest SQL statement, ms.
    pub statement_timeout_ms: u32,
    /// Most rows one SQL statement returns.
    pub max_rows: u32,
    /// Largest document, KiB.
    pub max_document_kb: u32,
    /// Largest document store per project, MiB.
    pub max_docs_mb: u32,
}

impl Default for DBriverSection {
    fn default() -> Self {
        DBriverSection {
            sql_url: String::new(),
            mongodb_url: String::new(),
            max_db_mb: 1024,
            max_connections: 4,
            statement_timeout_ms: 5000,
            max_rows: 10_000,
            max_document_kb: 1024,
            max_docs_mb: 1024,
        }
    }
}
