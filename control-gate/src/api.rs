//! The REST API's JSON shapes. Kept apart from the wire types on purpose:
//! the API is a public contract and must not change when the internal
//! protocol does.
//!
//! One file on purpose, though long: it is one thing, the public contract,
//! read as a whole beside `openapi.json`; each view is a few plain lines.

use isms_ipc::commserver::DeadLetter;
use isms_ipc::doer::Trigger;
use isms_ipc::kernel::ServiceStatus;
use isms_ipc::resadmin::{
    Deployed, DoeeInfo, InvocationRecord, InvocationStatus, LogEntry, LogSource, Member,
    ProjectDetail, ProjectInfo, Quotas, Session, TokenInfo, UserInfo, VersionInfo,
};
use isms_ipc::resadmin::{DeviceInfo, NewDevice, ScheduleInfo, SecretInfo, When};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/auth/login`.
#[derive(Serialize)]
pub struct LoginView {
    /// The bearer token.
    pub token: String,
    /// Who logged in.
    pub user: String,
    /// Their role.
    pub role: &'static str,
    /// When the token expires (ms since the epoch).
    pub expires_ms: u64,
}

impl From<Session> for LoginView {
    fn from(s: Session) -> Self {
        LoginView {
            token: s.token,
            user: s.user.to_string(),
            role: s.role.as_str(),
            expires_ms: s.expires_ms,
        }
    }
}

/// A project.
#[derive(Serialize)]
pub struct ProjectView {
    /// Its name.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// How many Doees it has.
    pub doees: u32,
}

impl From<ProjectInfo> for ProjectView {
    fn from(p: ProjectInfo) -> Self {
        ProjectView {
            name: p.name.to_string(),
            created_ms: p.created_ms,
            doees: p.doees,
        }
    }
}

/// A build's state.
#[derive(Serialize)]
pub struct BuildView {
    /// `queued`, `building`, `succeeded` or `failed`.
    pub status: &'static str,
    /// The build log (its tail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// `POST /api/v1/projects/<p>/doees`.
#[derive(Serialize)]
pub struct DeployedView {
    /// The Doee.
    pub name: String,
    /// The new version.
    pub version: u32,
    /// Its build.
    pub build: BuildView,
}

impl From<Deployed> for DeployedView {
    fn from(d: Deployed) -> Self {
        DeployedView {
            name: d.doee.to_string(),
            version: d.version,
            build: BuildView {
                status: d.build.as_str(),
                log: None,
            },
        }
    }
}

/// One version of a Doee.
#[derive(Serialize)]
pub struct VersionView {
    /// Its number.
    pub version: u32,
    /// Whether it is the one serving.
    pub active: bool,
    /// Its build.
    pub build: BuildView,
    /// When it was deployed (ms since the epoch).
    pub created_ms: u64,
    /// Who deployed it.
    pub deployed_by: String,
    /// Its binary's sha256, once built.
    pub sha256: Option<String>,
}

/// A Doee, in lists and alone (`GET /api/v1/projects/<p>/doees[/<d>]`).
#[derive(Serialize)]
pub struct DoeeView {
    /// Its name.
    pub name: String,
    /// `rust`, `c` or `cpp`.
    pub language: String,
    /// The version serving, if any.
    pub active_version: Option<u32>,
    /// The triggers of the active version.
    pub triggers: TriggersView,
    /// The labels its Doer must have (`[placement]`).
    pub placement: std::collections::BTreeMap<String, String>,
    /// Every version, oldest first.
    pub versions: Vec<VersionView>,
}

/// A Doee's triggers.
#[derive(Serialize)]
pub struct TriggersView {
    /// HTTP routes.
    pub http: Vec<HttpTriggerView>,
    /// MQTT filters.
    pub mqtt: Vec<MqttTriggerView>,
    /// Schedules.
    pub schedule: Vec<ScheduleTriggerView>,
}

/// A schedule, with its next firing.
#[derive(Serialize)]
pub struct ScheduleTriggerView {
    /// How it reads: `every 30s`, `cron "*/5 * * * *" (UTC)`.
    pub description: String,
    /// The cron expression, for a cron schedule.
    pub cron: Option<String>,
    /// Its time zone, for a cron schedule.
    pub timezone: Option<String>,
    /// The period in ms, for an `every` schedule.
    pub every_ms: Option<u64>,
    /// Handed to the Doee at each firing.
    pub input: String,
    /// `last` or `none`.
    pub catch_up: &'static str,
    /// `skip` or `queue`.
    pub overlap: &'static str,
    /// Its next firing (ms since the epoch), if any.
    pub next_ms: Option<u64>,
    /// Its last firing that ran, if any.
    pub last_ms: Option<u64>,
    /// Firings skipped because the previous one still ran.
    pub skipped: u64,
}

impl From<ScheduleInfo> for ScheduleTriggerView {
    fn from(info: ScheduleInfo) -> Self {
        let trigger = info.trigger;
        let (cron, timezone, every_ms) = match &trigger.when {
            When::Cron {
                expression,
                timezone,
            } => (Some(expression.clone()), Some(timezone.clone()), None),
            When::Every { ms } => (None, None, Some(*ms)),
        };
        ScheduleTriggerView {
            description: trigger.when.to_string(),
            cron,
            timezone,
            every_ms,
            input: trigger.input,
            catch_up: trigger.catch_up.as_str(),
            overlap: trigger.overlap.as_str(),
            next_ms: info.next_ms,
            last_ms: info.last_ms,
            skipped: info.skipped,
        }
    }
}

/// An HTTP route.
#[derive(Serialize)]
pub struct HttpTriggerView {
    /// The route within the project.
    pub route: String,
    /// Allowed methods.
    pub methods: Vec<String>,
    /// Doees run in turn instead of this one; empty: this one.
    pub pipeline: Vec<String>,
}

/// An MQTT trigger.
#[derive(Serialize)]
pub struct MqttTriggerView {
    /// The filter.
    pub topic: String,
    /// Where the output goes.
    pub reply_topic: Option<String>,
    /// Doees run in turn instead of this one; empty: this one.
    pub pipeline: Vec<String>,
}

impl From<DoeeInfo> for DoeeView {
    fn from(d: DoeeInfo) -> Self {
        let active = d.active_version;
        DoeeView {
            name: d.name.to_string(),
            language: d.language,
            active_version: active,
            triggers: TriggersView {
                http: d
                    .triggers
                    .http
                    .into_iter()
                    .map(|t| HttpTriggerView {
                        route: t.route,
                        methods: t.methods,
                        pipeline: t.pipeline.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
                mqtt: d
                    .triggers
                    .mqtt
                    .into_iter()
                    .map(|t| MqttTriggerView {
                        topic: t.topic,
                        reply_topic: t.reply_topic,
                        pipeline: t.pipeline.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
                schedule: d.triggers.schedule.into_iter().map(Into::into).collect(),
            },
            placement: d.placement.into_iter().collect(),
            versions: d
                .versions
                .into_iter()
                .map(|v: VersionInfo| VersionView {
                    version: v.version,
                    active: Some(v.version) == active,
                    build: BuildView {
                        status: v.build.as_str(),
                        log: v.build_log,
                    },
                    created_ms: v.created_ms,
                    deployed_by: v.deployed_by,
                    sha256: v.sha256,
                })
                .collect(),
        }
    }
}

/// A user.
#[derive(Serialize)]
pub struct UserView {
    /// The name.
    pub username: String,
    /// The platform role.
    pub role: &'static str,
    /// When they were created (ms since the epoch).
    pub created_ms: u64,
}

impl From<UserInfo> for UserView {
    fn from(u: UserInfo) -> Self {
        UserView {
            username: u.name.to_string(),
            role: u.role.as_str(),
            created_ms: u.created_ms,
        }
    }
}

/// A token as listed.
#[derive(Serialize)]
pub struct TokenView {
    /// Its id, for revoking it.
    pub id: String,
    /// Its label.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
    /// The secret: only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            token: None,
        }
    }
}

/// `GET /api/v1/projects/<p>`.
#[derive(Serialize)]
pub struct ProjectDetailView {
    /// Its name.
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// How many Doees it has.
    pub doees: u32,
    /// Its members.
    pub members: Vec<MemberView>,
    /// Its quotas.
    pub quotas: QuotasView,
    /// Its MQTT topic namespaces, `<project>/#` first.
    pub topics: Vec<String>,
}

/// The body of `PUT .../topics`: the namespaces granted beyond `<project>/#`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsView {
    /// Namespaces like `greenhouse/#`.
    pub namespaces: Vec<String>,
}

/// An MQTT message given up on.
#[derive(Serialize)]
pub struct DeadLetterView {
    /// Its place in the inbox.
    pub id: u64,
    /// The Doee it was for.
    pub doee: String,
    /// The topic it arrived on.
    pub topic: String,
    /// The payload, as text when it is UTF-8.
    pub payload: String,
    /// `utf8` or `base64`.
    pub payload_encoding: &'static str,
    /// When it arrived (ms since the epoch).
    pub received_ms: u64,
    /// How many times it ran.
    pub attempts: u32,
    /// Why the last run failed.
    pub error: String,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        let (payload, payload_encoding) = match std::str::from_utf8(&d.payload) {
            Ok(text) => (text.to_string(), "utf8"),
            Err(_) => (base64_encode(&d.payload), "base64"),
        };
        DeadLetterView {
            id: d.id,
            doee: d.doee.to_string(),
            topic: d.topic,
            payload,
            payload_encoding,
            received_ms: d.received_ms,
            attempts: d.attempts,
            error: d.error,
        }
    }
}

/// A member of a project.
#[derive(Serialize)]
pub struct MemberView {
    /// The user.
    pub username: String,
    /// Their role in the project.
    pub role: &'static str,
}

/// The body of `POST …/mqtt/dead-letters/retry` and `…/purge`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersBody {
    /// Which dead letters; all of the project's when absent.
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
}

/// The body of `POST …/devices`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// The device's name.
    pub name: String,
}

/// The body of `PUT .../secrets/{secret}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// The value.
    pub value: String,
}

/// A project's secret, by name: never its value.
#[derive(Serialize)]
pub struct SecretView {
    /// Its name.
    pub name: String,
    /// When its value was last set (ms since the epoch).
    pub updated_ms: u64,
}

impl From<SecretInfo> for SecretView {
    fn from(s: SecretInfo) -> Self {
        SecretView {
            name: s.name.to_string(),
            updated_ms: s.updated_ms,
        }
    }
}

/// An MQTT device.
#[derive(Serialize)]
pub struct DeviceView {
    /// Its name.
    pub name: String,
    /// Its MQTT username.
    pub username: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
}

impl From<DeviceInfo> for DeviceView {
    fn from(d: DeviceInfo) -> Self {
        DeviceView {
            name: d.name.to_string(),
            username: d.username,
            created_ms: d.created_ms,
        }
    }
}

/// A device just created, with its secret (shown once).
#[derive(Serialize)]
pub struct NewDeviceView {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceView,
    /// Its MQTT password.
    pub secret: String,
}

impl From<NewDevice> for NewDeviceView {
    fn from(d: NewDevice) -> Self {
        NewDeviceView {
            device: d.info.into(),
            secret: d.secret,
        }
    }
}

/// A project's quotas (also the body of `PUT .../quotas`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasView {
    /// Doees.
    pub max_doees: u32,
    /// Workers: the sum of its active Doees' concurrency.
    pub max_workers: u32,
    /// Bytes of one upload.
    pub max_upload_bytes: u64,
    /// Its share of the CPU against other projects' (1 to 10,000).
    #[serde(default = "default_cpu_weight")]
    pub cpu_weight: u32,
    /// Bytes its fetched dependencies (crates, wheels) may take.
    #[serde(default = "default_max_dependencies_bytes")]
    pub max_dependencies_bytes: u64,
}

fn default_cpu_weight() -> u32 {
    Quotas::default().cpu_weight
}

fn default_max_dependencies_bytes() -> u64 {
    Quotas::default().max_dependencies_bytes
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        MemberView {
            username: m.user.to_string(),
            role: m.role.as_str(),
        }
    }
}

impl From<ProjectDetail> for ProjectDetailView {
    fn from(p: ProjectDetail) -> Self {
        ProjectDetailView {
            name: p.info.name.to_string(),
            created_ms: p.info.created_ms,
            doees: p.info.doees,
            members: p.members.into_iter().map(Into::into).collect(),
            quotas: QuotasView {
                max_doees: p.quotas.max_doees,
                max_workers: p.quotas.max_workers,
                max_upload_bytes: p.quotas.max_upload_bytes,
                cpu_weight: p.quotas.cpu_weight,
                max_dependencies_bytes: p.quotas.max_dependencies_bytes,
            },
            topics: p.topics,
        }
    }
}

/// An invocation, in lists and alone.
#[derive(Serialize)]
pub struct InvocationView {
    /// Its id.
    pub id: String,
    /// Its project.
    pub project: String,
    /// The Doee.
    pub doee: String,
    /// The version that ran.
    pub version: u32,
    /// `http`, `mqtt` or `cli`.
    pub trigger: &'static str,
    /// The HTTP method, path and query, or the MQTT topic.
    pub trigger_detail: serde_json::Value,
    /// `pending`, `succeeded`, `error`, `crashed`, `timeout`, `not_started`, `busy` or `unavailable`.
    pub status: &'static str,
    /// When it was accepted (ms since the epoch).
    pub started_ms: u64,
    /// From acceptance to its end, ms.
    pub duration_ms: f64,
    /// Whether a Worker was started for it.
    pub cold_start: bool,
    /// The HTTP status its caller got (0 while pending).
    pub http_status: u16,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its output as text, when it succeeded and the output is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Its output in base64, when it succeeded and is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_base64: Option<String>,
    /// Whether the recorded output was cut at the recording bound.
    pub output_truncated: bool,
    /// The Doee's log lines (in the one-invocation view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLineView>>,
    /// The Doer instance that ran it (empty if none did).
    pub instance: String,
    /// The host of that Doer.
    pub host: String,
}

/// A log line of an invocation.
#[derive(Serialize)]
pub struct LogLineView {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// `error`, `warn`, `info` or `debug`.
    pub level: &'static str,
    /// The text.
    pub message: String,
}

fn trigger_detail(trigger: &Trigger) -> serde_json::Value {
    match trigger {
        Trigger::Http {
            method,
            path,
            query,
        } => serde_json::json!({ "method": method, "path": path, "query": query }),
        Trigger::Mqtt { topic } => serde_json::json!({ "topic": topic }),
        Trigger::Cli => serde_json::json!({}),
        Trigger::Schedule { slot_ms } => serde_json::json!({ "scheduled_ms": slot_ms }),
        Trigger::Chain { parent, depth } => {
            serde_json::json!({ "parent": parent.to_string(), "depth": depth })
        }
    }
}

impl InvocationView {
    /// The view of a record; `with_logs` for the one-invocation answer.
    pub fn new(r: InvocationRecord, with_logs: bool) -> Self {
        let succeeded = r.status == InvocationStatus::Succeeded;
        let (output, output_base64) = match std::str::from_utf8(&r.output) {
            _ if !succeeded => (None, None),
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (None, Some(base64_encode(&r.output))),
        };
        InvocationView {
            id: r.id.to_string(),
            project: r.project.to_string(),
            doee: r.doee.to_string(),
            version: r.version,
            trigger: r.trigger.as_str(),
            trigger_detail: trigger_detail(&r.trigger),
            status: r.status.as_str(),
            started_ms: r.started_ms,
            duration_ms: r.duration_us as f64 / 1000.0,
            cold_start: r.cold_start,
            http_status: r.http_status,
            error: r.error,
            output,
            output_base64,
            output_truncated: r.output_truncated,
            instance: r.instance,
            host: r.host,
            logs: with_logs.then(|| {
                r.logs
                    .into_iter()
                    .map(|l| LogLineView {
                        at_ms: l.at_ms,
                        level: l.level.as_str(),
                        message: l.message,
                    })
                    .collect()
            }),
        }
    }
}

/// A line of a project's log (`GET /api/v1/projects/<p>/logs`, and each
/// Server-Sent Event's data).
#[derive(Serialize)]
pub struct LogView {
    /// The cursor: pass it as `after` (or `Last-Event-ID`) to read on.
    pub id: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// `error`, `warn`, `info` or `debug`.
    pub level: &'static str,
    /// The Doee.
    pub doee: String,
    /// Its version.
    pub version: u32,
    /// `build`, or `invocation` with `invocation_id`.
    pub source: &'static str,
    /// The invocation that logged it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// The text.
    pub message: String,
}

impl From<LogEntry> for LogView {
    fn from(l: LogEntry) -> Self {
        let (source, invocation_id) = match l.source {
            LogSource::Build => ("build", None),
            LogSource::Invocation(id) => ("invocation", Some(id.to_string())),
        };
        LogView {
            id: l.id,
            at_ms: l.at_ms,
            level: l.level.as_str(),
            doee: l.doee.to_string(),
            version: l.version,
            source,
            invocation_id,
            message: l.message,
        }
    }
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One service instance in `GET /api/v1/system/services`.
#[derive(Serialize)]
pub struct ServiceView {
    /// Which service.
    pub service: &'static str,
    /// The instance's name.
    pub instance: String,
    /// Its process id.
    pub pid: u32,
    /// `up` or `down`.
    pub status: &'static str,
    /// Requests it handles at once.
    pub capacity: u32,
    /// Requests it is handling.
    pub in_flight: u32,
    /// Requests waiting for it in the kernel.
    pub queue_depth: u32,
    /// Work waiting inside it.
    pub inner_queue: u32,
    /// Workers (Doer) or connections it holds.
    pub workers: u32,
    /// Times it was restarted.
    pub restarts: u32,
    /// Requests it answered.
    pub handled: u64,
    /// When its current process registered (ms since the epoch).
    pub up_since_ms: u64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// The host it runs on.
    pub host: String,
    /// Its labels for placement.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The address of its link, for an instance on another host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

impl From<ServiceStatus> for ServiceView {
    fn from(s: ServiceStatus) -> Self {
        ServiceView {
            service: s.service.as_str(),
            instance: s.instance,
            pid: s.pid,
            status: s.state.as_str(),
            capacity: s.capacity,
            in_flight: s.in_flight,
            queue_depth: s.queued,
            inner_queue: s.inner_queue,
            workers: s.workers,
            restarts: s.restarts,
            handled: s.handled,
            up_since_ms: s.up_since_ms,
            heartbeat_age_ms: s.heartbeat_age_ms,
            host: s.host,
            labels: s.labels.into_iter().collect(),
            remote: s.remote,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64_encode(plain.as_bytes()), encoded);
        }
    }
}
