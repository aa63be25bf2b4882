//! The REST API's JSON shapes. Kept apart from the wire types on purpose:
//! the API is a public contract and must not change when the internal
//! protocol does.

use isms_ipc::kernel::ServiceStatus;
use isms_ipc::resadmin::{Deployed, DoeeInfo, ProjectInfo, Session, VersionInfo};
use serde::Serialize;

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
    /// Its binary's sha256, once built.
    pub sha256: Option<String>,
}

/// `GET /api/v1/projects/<p>/doees/<d>`.
#[derive(Serialize)]
pub struct DoeeView {
    /// Its name.
    pub name: String,
    /// The version serving, if any.
    pub active_version: Option<u32>,
    /// Every version, oldest first.
    pub versions: Vec<VersionView>,
}

impl From<DoeeInfo> for DoeeView {
    fn from(d: DoeeInfo) -> Self {
        let active = d.active_version;
        DoeeView {
            name: d.name.to_string(),
            active_version: active,
            versions: d
                .versions
                .into_iter()
                .map(|v: VersionInfo| VersionView {
                    version: v.version,
                    active: Some(v.version) == active,
                    build: BuildView {
                        status: v.build.as_str(),
                        log: Some(v.build_log),
                    },
                    created_ms: v.created_ms,
                    sha256: v.sha256,
                })
                .collect(),
        }
    }
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
        }
    }
}
