//! The platform's configuration: built-in defaults, an optional TOML file,
//! and `ISMS_<SECTION>_<KEY>` environment variables, in rising precedence.
//!
//! Every option lives in the one [`Config`] tree; the environment variable of
//! each is derived from the defaults, so the list in `isms up --help`, the
//! variables and the file can never drift apart.
//!
//! Why one file of this size: loading, ranges, and the translation of the
//! one Config into each service's own config, all keyed by the same option
//! names; the options themselves are in sections.rs, and the tail is tests.

use anyhow::{Context as _, bail};
use isms_commserver::broker::router::Limits as BrokerLimits;
use isms_commserver::broker::{BrokerConfig, TlsListener};
use isms_commserver::inbox::SharedConfig as SharedInbox;
use isms_commserver::mqtt::TriggerConfig;
use isms_commserver::mqtt::external::ExternalConfig;
use isms_commserver::{CommServerConfig, DoorConfig, MqttConfig};
use isms_control_gate::ControlGateConfig;
use isms_dbriver::DBriverConfig;
use isms_dbriver::docs::{DocBackend, DocLimits};
use isms_dbriver::sql::{SqlBackend, SqlLimits};
use isms_doer::DoerConfig;
use isms_doer::isolation::IsolationChoice;
use isms_ipc::Endpoint;
use isms_kernel::KernelConfig;
use isms_kernel::scheduler::QueueLimits;
use isms_resadmin::ResadminConfig;
use isms_resadmin::sandbox::SandboxConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod sections;
pub use sections::*;

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Control Gate.
    pub control_gate: ControlGateSection,
    /// The CommServer.
    pub commserver: CommServerSection,
    /// The kernel.
    pub kernel: KernelSection,
    /// The Doer.
    pub doer: DoerSection,
    /// Resadmin.
    pub resadmin: ResadminSection,
    /// DBriver.
    pub dbriver: DBriverSection,
}

/// The environment variable of an option.
pub fn env_name(section: &str, key: &str) -> String {
    format!("ISMS_{}_{}", section.to_uppercase(), key.to_uppercase())
}

/// The range of every numeric option, inclusive. A value outside it stops
/// `isms up` with the option's name and range, rather than being quietly
/// moved inside it; a test checks that every numeric option has one.
const RANGES: &[(&str, &str, u64, u64)] = &[
    ("control_gate", "max_upload_mb", 1, 4096),
    ("control_gate", "header_timeout_ms", 100, 600_000),
    // Above the 15 s between a followed log's keep-alive comments.
    ("control_gate", "idle_timeout_s", 30, 86_400),
    ("control_gate", "max_connections", 1, 1_000_000),
    ("commserver", "max_body_kb", 1, 262_144),
    ("commserver", "queue_allowance_ms", 0, 600_000),
    ("commserver", "http_header_timeout_ms", 100, 600_000),
    ("commserver", "http_idle_timeout_s", 1, 86_400),
    ("commserver", "http_max_connections", 1, 1_000_000),
    ("commserver", "mqtt_max_queued", 1, 1_000_000),
    ("commserver", "mqtt_max_inflight", 1, 65_535),
    ("commserver", "mqtt_max_attempts", 1, 100),
    ("commserver", "mqtt_retry_ms", 10, 3_600_000),
    ("commserver", "mqtt_concurrency", 1, 10_000),
    ("commserver", "mqtt_max_pending", 1, 10_000_000),
    ("commserver", "inbox_lease_ms", 1_000, 3_600_000),
    ("kernel", "queue_limit", 1, 10_000_000),
    ("kernel", "project_queue_limit", 1, 10_000_000),
    ("kernel", "heartbeat_timeout_ms", 500, 600_000),
    // The Doer's output is at most 1024 MB, and a message carries it.
    ("kernel", "max_message_mb", 1, 1100),
    ("doer", "max_workers", 1, 4096),
    ("doer", "queue_per_doee", 1, 1_000_000),
    ("doer", "idle_timeout_s", 0, 604_800),
    // Never root (0), never the overflow uid's neighbour u32::MAX (-1).
    ("doer", "worker_uid", 1, 4_294_967_294),
    ("doer", "worker_max_processes", 1, 65_536),
    ("doer", "worker_tmp_mb", 1, 65_536),
    ("doer", "max_output_mb", 1, 1024),
    ("doer", "record_output_kb", 0, 16_384),
    ("doer", "max_chain_depth", 1, 64),
    ("resadmin", "build_timeout_s", 1, 86_400),
    ("resadmin", "token_ttl_hours", 1, 87_600),
    ("resadmin", "records_max_age_hours", 1, 87_600),
    ("resadmin", "records_max_count", 1, 100_000_000),
    ("resadmin", "quota_max_doees", 1, 100_000),
    ("resadmin", "quota_max_workers", 1, 4096),
    ("resadmin", "quota_max_upload_mb", 1, 4096),
    ("resadmin", "quota_cpu_weight", 1, 10_000),
    // 0: only platform admins create projects.
    ("resadmin", "quota_max_projects", 0, 100_000),
    ("resadmin", "build_memory_mb", 256, 1_048_576),
    ("resadmin", "quota_max_dependencies_mb", 1, 1_048_576),
    ("resadmin", "build_uid", 1, 4_294_967_294),
    ("dbriver", "max_db_mb", 1, 16_777_216),
    ("dbriver", "max_connections", 1, 1000),
    ("dbriver", "statement_timeout_ms", 1, 3_600_000),
    ("dbriver", "max_rows", 1, 10_000_000),
    // MongoDB's own limit is 16 MiB.
    ("dbriver", "max_document_kb", 1, 16_384),
    ("dbriver", "max_docs_mb", 1, 16_777_216),
];

fn range_of(section: &str, key: &str) -> Option<(u64, u64)> {
    RANGES
        .iter()
        .find(|(s, k, _, _)| *s == section && *k == key)
        .map(|&(_, _, min, max)| (min, max))
}

/// Where the kernel keeps its certificate and join key.
pub fn join_credentials_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("kernel")
}

/// Refuses any numeric option of `table` (the file and the environment,
/// before they become a [`Config`]) outside its range in [`RANGES`].
fn check_ranges(table: &toml::Table) -> anyhow::Result<()> {
    for &(section, key, min, max) in RANGES {
        let Some(value) = table
            .get(section)
            .and_then(|keys| keys.get(key))
            .and_then(toml::Value::as_integer)
        else {
            continue;
        };
        if !u64::try_from(value).is_ok_and(|v| (min..=max).contains(&v)) {
            bail!(
                "{section}.{key} ({}) must be {min} to {max}, not {value}",
                env_name(section, key)
            );
        }
    }
    Ok(())
}

fn defaults_table() -> toml::Table {
    toml::Table::try_from(Config::default()).unwrap_or_default()
}

impl Config {
    /// Loads defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                text.parse::<toml::Table>()
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?
            }
            None => toml::Table::new(),
        };
        for (section, keys) in defaults_table() {
            let toml::Value::Table(keys) = keys else {
                continue;
            };
            for (key, default) in keys {
                let name = env_name(&section, &key);
                let Ok(raw) = std::env::var(&name) else {
                    continue;
                };
                let value = match default {
                    toml::Value::Integer(_) => raw
                        .trim()
                        .parse::<i64>()
                        .map(toml::Value::Integer)
                        .map_err(|_| {
                            anyhow::anyhow!("{name} must be a whole number (got `{raw}`)")
                        })?,
                    toml::Value::Boolean(_) => raw
                        .trim()
                        .parse::<bool>()
                        .map(toml::Value::Boolean)
                        .map_err(|_| {
                            anyhow::anyhow!("{name} must be true or false (got `{raw}`)")
                        })?,
                    _ => toml::Value::String(raw),
                };
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(entry) = entry {
                    entry.insert(key, value);
                }
            }
        }
        let origin = file.map_or("the environment".to_string(), |p| {
            format!("{} or the environment", p.display())
        });
        check_ranges(&table)?;
        Config::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("invalid configuration in {origin}: {}", e.message()))
    }

    /// Every option with its default and variable, for `isms up --help`.
    pub fn options_help() -> String {
        let mut out =
            String::from("Options (in the --config TOML file, or as environment variables):\n");
        for (section, keys) in defaults_table() {
            let toml::Value::Table(keys) = keys else {
                continue;
            };
            for (key, default) in keys {
                let default = match (section.as_str(), key.as_str(), default) {
                    ("kernel", "listen", _) => "ipc://<data-dir>/run/kernel.sock".to_string(),
                    ("resadmin", "build_target_dir", _) => "<data-dir>/resadmin/target".to_string(),
                    ("resadmin", "cargo_home", _) => "<data-dir>/resadmin/cargo-home".to_string(),
                    ("resadmin", "secrets_key_file", _) => {
                        "<data-dir>/resadmin/secrets.key".to_string()
                    }
                    ("control_gate", "dashboard_dir", _) => "the copy built into isms".to_string(),
                    (_, _, other) => other.to_string(),
                };
                let default = match range_of(&section, &key) {
                    Some((min, max)) => format!("{default} ({min} to {max})"),
                    None => default,
                };
                out.push_str(&format!(
                    "  {:<34} {:<42} default {}\n",
                    format!("{section}.{key}"),
                    env_name(&section, &key),
                    default
                ));
            }
        }
        out
    }

    /// Where the services of the kernel's own host reach it: `kernel.listen`
    /// if that is an `ipc://` path, else `ipc://<data-dir>/run/kernel.sock`
    /// (a `tcp://` listen address is for other hosts only).
    pub fn kernel_endpoint(&self, data_dir: &Path) -> anyhow::Result<Endpoint> {
        let endpoint = match self.kernel_listen()? {
            Some(endpoint @ Endpoint::Ipc(_)) => endpoint,
            _ => Endpoint::Ipc(data_dir.join("run").join("kernel.sock")),
        };
        if let Endpoint::Ipc(path) = &endpoint {
            check_socket_path(path, "the kernel's socket")?;
        }
        Ok(endpoint)
    }

    fn kernel_listen(&self) -> anyhow::Result<Option<Endpoint>> {
        if self.kernel.listen.is_empty() {
            return Ok(None);
        }
        let endpoint = self
            .kernel
            .listen
            .parse()
            .map_err(|e| anyhow::anyhow!("kernel.listen: {e}"))?;
        Ok(Some(endpoint))
    }

    /// The kernel's configuration. A `tcp://` `kernel.listen` opens the
    /// TLS listener for other hosts beside the local socket.
    pub fn kernel(&self, data_dir: &Path) -> anyhow::Result<KernelConfig> {
        let remote = match self.kernel_listen()? {
            Some(Endpoint::Tcp(address)) => Some(isms_kernel::remote::RemoteConfig {
                address,
                credentials: join_credentials_dir(data_dir),
                max_message: (self.kernel.max_message_mb as usize) << 20,
            }),
            _ => None,
        };
        Ok(KernelConfig {
            listen: self.kernel_endpoint(data_dir)?,
            remote,
            queue: QueueLimits {
                total: self.kernel.queue_limit as usize,
                per_project: self.kernel.project_queue_limit as usize,
            },
            heartbeat_timeout: Duration::from_millis(u64::from(self.kernel.heartbeat_timeout_ms)),
        })
    }

    /// The isolation the Doer will use.
    pub fn isolation(&self) -> anyhow::Result<IsolationChoice> {
        self.doer
            .isolation
            .parse()
            .map_err(|e| anyhow::anyhow!("doer.isolation: {e}"))
    }

    /// The Doer's configuration.
    pub fn doer(&self, data_dir: &Path) -> anyhow::Result<DoerConfig> {
        let executable = std::env::current_exe().context("cannot find the isms executable")?;
        let mut doer = DoerConfig::new(data_dir, executable);
        doer.isolation = self.isolation()?;
        doer.cgroups = self
            .doer
            .cgroups
            .parse()
            .map_err(|e| anyhow::anyhow!("doer.cgroups: {e}"))?;
        doer.max_workers = self.doer.max_workers;
        doer.queue_per_doee = self.doer.queue_per_doee;
        doer.idle_timeout = Duration::from_secs(u64::from(self.doer.idle_timeout_s));
        doer.worker_uid = self.doer.worker_uid;
        doer.worker_max_processes = self.doer.worker_max_processes;
        doer.worker_tmp_mb = self.doer.worker_tmp_mb;
        doer.max_output_bytes = self.doer.max_output_mb << 20;
        doer.record_output_bytes = (self.doer.record_output_kb as usize) << 10;
        doer.max_chain_depth = self.doer.max_chain_depth;
        // The longest Worker socket path: <data>/doer/workers/<id>/worker.sock.
        check_socket_path(
            &doer
                .dir
                .join("workers")
                .join("18446744073709551615")
                .join("worker.sock"),
            "Worker sockets",
        )?;
        Ok(doer)
    }

    /// Resadmin's configuration.
    pub fn resadmin(&self, data_dir: &Path) -> anyhow::Result<ResadminConfig> {
        let mut resadmin = ResadminConfig::new(data_dir);
        resadmin.build_timeout = Duration::from_secs(u64::from(self.resadmin.build_timeout_s));
        resadmin.token_ttl = Duration::from_secs(u64::from(self.resadmin.token_ttl_hours) * 3600);
        if !self.resadmin.build_target_dir.is_empty() {
            resadmin.build_target_dir = PathBuf::from(&self.resadmin.build_target_dir);
        }
        if !self.resadmin.cargo_home.is_empty() {
            resadmin.cargo_home = PathBuf::from(&self.resadmin.cargo_home);
        }
        if !self.resadmin.secrets_key_file.is_empty() {
            resadmin.secrets_key_file = PathBuf::from(&self.resadmin.secrets_key_file);
        }
        resadmin.archive.max_compressed = u64::from(self.control_gate.max_upload_mb) << 20;
        resadmin.records_max_age =
            Duration::from_secs(u64::from(self.resadmin.records_max_age_hours) * 3600);
        resadmin.records_max_count = u64::from(self.resadmin.records_max_count);
        resadmin.quotas = isms_ipc::resadmin::Quotas {
            max_doees: self.resadmin.quota_max_doees,
            max_workers: self.resadmin.quota_max_workers,
            max_upload_bytes: u64::from(self.resadmin.quota_max_upload_mb) << 20,
            cpu_weight: self.resadmin.quota_cpu_weight,
            max_dependencies_bytes: u64::from(self.resadmin.quota_max_dependencies_mb) << 20,
        };
        resadmin.max_projects_per_user = self.resadmin.quota_max_projects;
        resadmin.build_sandbox = SandboxConfig {
            isolation: self
                .resadmin
                .build_isolation
                .parse()
                .map_err(|e| anyhow::anyhow!("resadmin.build_isolation: {e}"))?,
            network: self.resadmin.build_network,
            memory_mb: self.resadmin.build_memory_mb,
            uid: self.resadmin.build_uid,
        };
        let registry = &self.resadmin.crates_registry;
        if !registry.is_empty()
            && !["https://", "http://", "sparse+http"]
                .iter()
                .any(|scheme| registry.starts_with(scheme))
        {
            anyhow::bail!(
                "resadmin.crates_registry must be the URL of a sparse registry (https://…), not {registry}"
            );
        }
        let index = &self.resadmin.pip_index_url;
        if !index.is_empty() && !index.starts_with("https://") && !index.starts_with("http://") {
            anyhow::bail!(
                "resadmin.pip_index_url must be the URL of a simple index (https://…/simple), not {index}"
            );
        }
        resadmin.fetch = isms_resadmin::fetch::FetchConfig {
            pip_index_url: Some(index.clone()).filter(|i| !i.is_empty()),
            crates_registry: Some(registry.clone()).filter(|r| !r.is_empty()),
        };
        Ok(resadmin)
    }

    /// The CommServer's configuration.
    pub fn commserver(&self, data_dir: &Path) -> anyhow::Result<CommServerConfig> {
        let section = &self.commserver;
        let queue_allowance = Duration::from_millis(u64::from(section.queue_allowance_ms));
        let max_body_bytes = (section.max_body_kb as usize) << 10;
        let door = match self.mqtt_broker()? {
            Broker::Embedded(addr) => DoorConfig::Embedded(BrokerConfig {
                addr,
                tls: self.mqtts()?,
                anonymous: section.mqtt_anonymous,
                limits: BrokerLimits {
                    max_packet: max_body_bytes + 64 * 1024,
                    max_inflight: section.mqtt_max_inflight as usize,
                    max_queued: section.mqtt_max_queued as usize,
                },
            }),
            Broker::External { host, port, tls } => DoorConfig::External(ExternalConfig {
                host,
                port,
                tls,
                ca_file: Some(&section.mqtt_ca_file)
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
                credentials: (!section.mqtt_username.is_empty())
                    .then(|| (section.mqtt_username.clone(), section.mqtt_password.clone())),
                client_id: section.mqtt_client_id.clone(),
                max_payload_bytes: max_body_bytes,
            }),
        };
        Ok(CommServerConfig {
            http_addr: parse_addr("commserver.http_addr", &section.http_addr)?,
            max_body_bytes,
            http: http_limits(
                section.http_header_timeout_ms,
                section.http_idle_timeout_s,
                section.http_max_connections,
            ),
            queue_allowance,
            mqtt: MqttConfig {
                store: data_dir.join("commserver").join("mqtt.db"),
                shared_inbox: self.shared_inbox(&door)?,
                door,
                triggers: TriggerConfig {
                    max_attempts: section.mqtt_max_attempts,
                    retry_base: Duration::from_millis(u64::from(section.mqtt_retry_ms)),
                    concurrency: section.mqtt_concurrency as usize,
                    max_payload_bytes: max_body_bytes,
                    queue_allowance,
                },
                max_pending: section.mqtt_max_pending as usize,
            },
        })
    }

    /// The inbox shared between CommServers, if configured; its owner is
    /// named by the service that runs it.
    fn shared_inbox(&self, door: &DoorConfig) -> anyhow::Result<Option<SharedInbox>> {
        let section = &self.commserver;
        if section.inbox_url.is_empty() {
            return Ok(None);
        }
        if !section.inbox_url.starts_with("postgres://")
            && !section.inbox_url.starts_with("postgresql://")
        {
            anyhow::bail!(
                "commserver.inbox_url must be a PostgreSQL URL, postgres://user:password@host:port/database"
            );
        }
        if let DoorConfig::Embedded(_) = door {
            anyhow::bail!(
                "commserver.inbox_url is for CommServers that share an external broker (commserver.mqtt_url); \
                 the embedded broker keeps its inbox with its own state"
            );
        }
        Ok(Some(SharedInbox {
            url: section.inbox_url.clone(),
            owner: "commserver".into(),
            lease: Duration::from_millis(u64::from(section.inbox_lease_ms)),
        }))
    }

    /// The embedded broker's TLS listener, if configured.
    fn mqtts(&self) -> anyhow::Result<Option<TlsListener>> {
        let section = &self.commserver;
        if section.mqtts_addr.is_empty() {
            return Ok(None);
        }
        if section.mqtt_cert_file.is_empty() || section.mqtt_key_file.is_empty() {
            bail!(
                "commserver.mqtts_addr needs commserver.mqtt_cert_file and commserver.mqtt_key_file (PEM)"
            );
        }
        Ok(Some(TlsListener {
            addr: parse_addr("commserver.mqtts_addr", &section.mqtts_addr)?,
            cert: PathBuf::from(&section.mqtt_cert_file),
            key: PathBuf::from(&section.mqtt_key_file),
        }))
    }

    /// The broker: embedded at `mqtt_addr`, or the external one of `mqtt_url`.
    pub fn mqtt_broker(&self) -> anyhow::Result<Broker> {
        let section = &self.commserver;
        if section.mqtt_url.is_empty() {
            return parse_addr("commserver.mqtt_addr", &section.mqtt_addr).map(Broker::Embedded);
        }
        let url = &section.mqtt_url;
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            bail!(
                "commserver.mqtt_url must be mqtt://host:port or mqtts://host:port (leave it empty for the embedded broker)"
            );
        };
        if rest.contains('@') {
            bail!(
                "commserver.mqtt_url: give the username and password in commserver.mqtt_username and commserver.mqtt_password, not in the URL"
            );
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("commserver.mqtt_url: `{port}` is not a port"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            bail!("commserver.mqtt_url: `{url}` has no host");
        }
        Ok(Broker::External {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            tls,
        })
    }

    /// The MQTT line of the banner.
    pub fn mqtt_summary(&self) -> String {
        let section = &self.commserver;
        match self.mqtt_broker() {
            Ok(Broker::Embedded(addr)) => {
                let tls = match section.mqtts_addr.as_str() {
                    "" => String::new(),
                    tls => format!(", mqtts://{tls}"),
                };
                let who = if section.mqtt_anonymous {
                    "devices sign in with `isms device create`, or anonymously from loopback"
                } else {
                    "devices sign in with `isms device create`"
                };
                format!("mqtt://{addr}{tls} (embedded; {who})")
            }
            Ok(Broker::External { .. }) => format!("{} (external)", section.mqtt_url),
            Err(err) => format!("{err}"),
        }
    }

    /// DBriver's configuration.
    pub fn dbriver(&self, data_dir: &Path) -> anyhow::Result<DBriverConfig> {
        let section = &self.dbriver;
        let mut dbriver = DBriverConfig::new(data_dir);
        if !section.sql_url.is_empty() {
            if !section.sql_url.starts_with("postgres://")
                && !section.sql_url.starts_with("postgresql://")
            {
                bail!("dbriver.sql_url must be a postgres:// URL (leave it empty for SQLite)");
            }
            dbriver.sql = SqlBackend::Postgres {
                url: section.sql_url.clone(),
            };
        }
        if !section.mongodb_url.is_empty() {
            if !section.mongodb_url.starts_with("mongodb://") {
                bail!(
                    "dbriver.mongodb_url must be a mongodb:// URL (mongodb+srv:// is not supported: list the hosts, with ?tls=true if needed; leave it empty for the embedded store)"
                );
            }
            dbriver.docs = DocBackend::Mongo {
                url: section.mongodb_url.clone(),
            };
        }
        dbriver.sql_limits = SqlLimits {
            max_db_bytes: u64::from(section.max_db_mb) << 20,
            max_connections: section.max_connections,
            statement_timeout: Duration::from_millis(u64::from(section.statement_timeout_ms)),
            max_rows: section.max_rows as usize,
        };
        dbriver.doc_limits = DocLimits {
            max_document_bytes: (section.max_document_kb as usize) << 10,
            max_results: section.max_rows as usize,
            max_project_bytes: u64::from(section.max_docs_mb) << 20,
        };
        Ok(dbriver)
    }

    /// Where the databases are, for the banner: never with a password.
    pub fn databases_summary(&self, data_dir: &Path) -> String {
        let sql = match &self.dbriver.sql_url {
            url if url.is_empty() => "SQLite".to_string(),
            url => format!("PostgreSQL at {}", url_host(url)),
        };
        let docs = match &self.dbriver.mongodb_url {
            url if url.is_empty() => "embedded documents".to_string(),
            url => format!("MongoDB at {}", url_host(url)),
        };
        format!(
            "{sql}, {docs} (under {})",
            data_dir.join("dbriver").display()
        )
    }

    /// The Control Gate's configuration.
    pub fn control_gate(&self) -> anyhow::Result<ControlGateConfig> {
        Ok(ControlGateConfig {
            addr: parse_addr("control_gate.addr", &self.control_gate.addr)?,
            max_upload_bytes: (self.control_gate.max_upload_mb as usize) << 20,
            http: http_limits(
                self.control_gate.header_timeout_ms,
                self.control_gate.idle_timeout_s,
                self.control_gate.max_connections,
            ),
            dashboard: isms_control_gate::dashboard::Dashboard {
                dir: Some(&self.control_gate.dashboard_dir)
                    .filter(|dir| !dir.is_empty())
                    .map(PathBuf::from),
                triggers_url: format!("http://{}", self.commserver.http_addr),
                mqtt_url: match self.mqtt_broker()? {
                    Broker::Embedded(addr) => format!("mqtt://{addr}"),
                    Broker::External { .. } => String::new(),
                },
            },
            metrics_token: Some(self.control_gate.metrics_token.clone()).filter(|t| !t.is_empty()),
        })
    }

    /// Checks every section, so `isms up` fails before starting anything.
    pub fn validate(&self, data_dir: &Path) -> anyhow::Result<()> {
        self.kernel(data_dir)?;
        self.doer(data_dir)?;
        self.resadmin(data_dir)?;
        self.dbriver(data_dir)?;
        self.commserver(data_dir)?;
        self.control_gate()?;
        Ok(())
    }
}

fn http_limits(
    header_timeout_ms: u32,
    idle_timeout_s: u32,
    max_connections: u32,
) -> isms_http::Limits {
    isms_http::Limits {
        header_read_timeout: Duration::from_millis(u64::from(header_timeout_ms)),
        idle_timeout: Duration::from_secs(u64::from(idle_timeout_s)),
        max_connections: max_connections as usize,
    }
}

fn parse_addr(option: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{option}: `{value}` is not an address like 127.0.0.1:7780"))
}

/// Which MQTT broker the platform uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broker {
    /// The one `isms up` runs, listening here.
    Embedded(SocketAddr),
    /// Someone else's.
    External {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// `mqtts://`.
        tls: bool,
    },
}

/// Unix socket paths are limited to 107 bytes.
fn check_socket_path(path: &Path, what: &str) -> anyhow::Result<()> {
    let len = path.as_os_str().len();
    if len > 107 {
        bail!(
            "{what} would be at {} ({len} bytes), past the 107-byte limit of Unix socket paths: \
             use a shorter --data-dir",
            path.display()
        );
    }
    Ok(())
}

/// `host:port` of a URL, without its credentials.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_has_an_env_name_in_the_help() {
        let help = Config::options_help();
        assert!(help.contains("control_gate.addr"));
        assert!(help.contains("ISMS_CONTROL_GATE_ADDR"));
        assert!(help.contains("ISMS_DOER_ISOLATION"));
        assert!(help.contains("ISMS_COMMSERVER_HTTP_ADDR"));
    }

    #[test]
    fn a_file_overrides_defaults_and_typos_are_refused() {
        let dir = std::env::temp_dir().join(format!("isms-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("isms.toml");
        std::fs::write(
            &file,
            "[doer]\nmax_workers = 7\n[control_gate]\naddr = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.doer.max_workers, 7);
        assert_eq!(config.control_gate.addr, "127.0.0.1:9");
        std::fs::write(&file, "[doer]\nmax_worker = 7\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("max_worker"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_numeric_option_has_a_range_holding_its_default() {
        let defaults = defaults_table();
        for (section, keys) in &defaults {
            for (key, value) in keys.as_table().unwrap() {
                let range = range_of(section, key);
                match value.as_integer() {
                    Some(v) => {
                        let (min, max) =
                            range.unwrap_or_else(|| panic!("{section}.{key}: no range"));
                        assert!((min..=max).contains(&(v as u64)), "{section}.{key}: {v}");
                    }
                    None => assert!(range.is_none(), "{section}.{key} is not numeric"),
                }
            }
        }
        assert!(check_ranges(&defaults).is_ok());
    }

    #[test]
    fn values_out_of_range_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("isms-config-range-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("isms.toml");
        for (text, expected) in [
            (
                "[doer]\nmax_workers = 0\n",
                "doer.max_workers (ISMS_DOER_MAX_WORKERS) must be 1 to 4096, not 0",
            ),
            ("[doer]\nworker_uid = 0\n", "doer.worker_uid"),
            (
                "[kernel]\nheartbeat_timeout_ms = 100\n",
                "must be 500 to 600000, not 100",
            ),
            (
                "[commserver]\nmqtt_max_inflight = 70000\n",
                "must be 1 to 65535, not 70000",
            ),
            ("[dbriver]\nmax_rows = -1\n", "dbriver.max_rows"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = format!("{:#}", Config::load(Some(&file)).unwrap_err());
            assert!(err.contains(expected), "{text}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shared_inbox_needs_postgresql_and_an_external_broker() {
        let mut config = Config::default();
        config.commserver.inbox_url = "postgres://isms:pw@db/isms".into();
        let err = config
            .validate(Path::new("/tmp/isms"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("external broker (commserver.mqtt_url)"),
            "{err}"
        );
        config.commserver.mqtt_url = "mqtt://broker:1883".into();
        let commserver = config.commserver(Path::new("/tmp/isms")).unwrap();
        let shared = commserver.mqtt.shared_inbox.unwrap();
        assert_eq!(shared.lease, Duration::from_secs(15));
        config.commserver.inbox_url = "mysql://db/isms".into();
        let err = config
            .validate(Path::new("/tmp/isms"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a PostgreSQL URL"), "{err}");
    }

    #[test]
    fn long_data_directories_are_refused_with_a_fix() {
        let config = Config::default();
        let long = PathBuf::from("/tmp").join("x".repeat(120));
        let err = config.kernel(&long).unwrap_err().to_string();
        assert!(err.contains("shorter --data-dir"), "{err}");
    }
}
