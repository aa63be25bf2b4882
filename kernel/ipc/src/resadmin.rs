//! Requests for Resadmin: accounts, projects, Doee versions and binaries.
//!
//! Requests made for a person carry their bearer `token`; Resadmin checks it
//! and the person's rights in the same round trip. Requests the platform
//! makes for itself (routes, versions, binaries) carry no token: Resadmin
//! accepts them only from the services that need them, by the envelope's
//! origin, which the kernel vouches for.

use crate::Payload;
use crate::names::{DoeeName, Priority, ProjectName, Username};
use serde::{Deserialize, Serialize};

crate::protocol! {
    service Resadmin;

    /// Checks a password and opens a session.
    Login {
        /// The user.
        username: String,
        /// Their password.
        password: String,
    } -> Session;

    /// Creates the envelope's project, with the caller as its first member.
    CreateProject {
        /// The caller's bearer token.
        token: String,
    } -> ProjectInfo;

    /// The projects the caller may see.
    ListProjects {
        /// The caller's bearer token.
        token: String,
    } -> Vec<ProjectInfo>;

    /// Creates a new version of a Doee of the envelope's project from a
    /// `.tar.gz` of its directory, and starts building it.
    Deploy {
        /// The caller's bearer token.
        token: String,
        /// The Doee directory as `.tar.gz`.
        archive: Payload,
    } -> Deployed;

    /// One Doee of the envelope's project, with its versions.
    GetDoee {
        /// The caller's bearer token.
        token: String,
        /// The Doee.
        doee: DoeeName,
    } -> DoeeInfo;

    /// Every active HTTP route of every project (for the CommServer).
    Routes {} -> Vec<HttpRoute>;

    /// How to run a version of a Doee of the envelope's project (for the Doer).
    GetVersion {
        /// The Doee.
        doee: DoeeName,
        /// The version.
        version: u32,
    } -> VersionSpec;

    /// A built shared object by its sha256 (for the Doer).
    GetBinary {
        /// The hex sha256 of the shared object.
        sha256: String,
    } -> Payload;
}

/// A login session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The bearer token.
    pub token: String,
    /// Who logged in.
    pub user: Username,
    /// Their platform role.
    pub role: Role,
    /// When the token expires (ms since the epoch).
    pub expires_ms: u64,
}

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Everything, in every project.
    Admin,
    /// Deploys and manages Doees of their projects.
    Developer,
    /// Reads their projects.
    Viewer,
}

impl Role {
    /// `admin`, `developer` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
}

/// A project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// Its name.
    pub name: ProjectName,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// How many Doees it has.
    pub doees: u32,
}

/// The answer to a deploy: the version exists and its build has started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    /// The Doee.
    pub doee: DoeeName,
    /// The new version.
    pub version: u32,
    /// The build's state.
    pub build: BuildState,
}

/// Where a version's build stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildState {
    /// Waiting for the builder.
    Queued,
    /// Compiling.
    Building,
    /// Built; the version can run.
    Succeeded,
    /// The build failed; see the log.
    Failed,
}

impl BuildState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Building => "building",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
        }
    }

    /// Whether the build has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, BuildState::Succeeded | BuildState::Failed)
    }
}

/// A Doee with its versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoeeInfo {
    /// Its name.
    pub name: DoeeName,
    /// The version that serves, if one has built.
    pub active_version: Option<u32>,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
}

/// One version of a Doee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The number, from 1.
    pub version: u32,
    /// Its build.
    pub build: BuildState,
    /// The build log (its tail, when long).
    pub build_log: String,
    /// When it was deployed (ms since the epoch).
    pub created_ms: u64,
    /// The sha256 of its shared object, once built.
    pub sha256: Option<String>,
}

/// An HTTP route to the active version of a Doee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// The project, the first path segment.
    pub project: ProjectName,
    /// The route within the project, starting with `/`.
    pub route: String,
    /// Allowed methods, upper case.
    pub methods: Vec<String>,
    /// The Doee.
    pub doee: DoeeName,
    /// Its active version.
    pub version: u32,
    /// Its scheduling class.
    pub priority: Priority,
    /// Its per-invocation timeout.
    pub timeout_ms: u32,
}

/// What the Doer needs to run a version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionSpec {
    /// The sha256 of the shared object (fetch it with `GetBinary`).
    pub sha256: String,
    /// The manifest's `[params]`.
    pub params: Vec<(String, String)>,
    /// The manifest's `[resources]`.
    pub resources: Resources,
}

/// A Doee's resource limits, from its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Per invocation; past it the Worker is killed.
    pub timeout_ms: u32,
    /// Per Worker.
    pub memory_mb: u32,
    /// Workers of this Doee at most.
    pub concurrency: u32,
    /// Workers kept warm when idle.
    pub min_warm: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            timeout_ms: 2000,
            memory_mb: 64,
            concurrency: 4,
            min_warm: 0,
        }
    }
}
