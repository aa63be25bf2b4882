//! Requests for Resadmin: accounts, projects, Doee versions and binaries.
//!
//! Requests made for a person carry their bearer `token`; Resadmin checks it
//! and the person's rights in the same round trip. Requests the platform
//! makes for itself (routes, versions, binaries) carry no token: each
//! declares the services that need it, and the kernel delivers it from no
//! other origin.
//!
//! Why one file of this size: it is Resadmin's whole contract, one protocol!
//! block of short request declarations and the types they carry, read as one
//! list of what may be asked.

use crate::Payload;
use crate::connection::Scope;
use crate::doer::{Invoke, LogLevel, LogLine, Trigger};
use crate::names::{
    Deadline, DeviceName, DoeeName, InvocationId, Priority, ProjectName, SecretName, SecretValue,
    Username,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

crate::protocol! {
    service Resadmin;

    /// Checks a password and opens a session.
    Login {
        /// The user.
        username: String,
        /// Their password.
        password: String,
    } -> Session, from [ControlGate];

    /// Revokes the token it carries (logging out).
    Logout {
        /// The bearer token to revoke.
        token: String,
    } -> (), from [ControlGate];

    /// Checks a bearer token and that its user holds `need` (in the
    /// envelope's project, for a project role). Every API call asks this
    /// first; the management requests below trust the Control Gate's `by`.
    Authorize {
        /// The caller's bearer token.
        token: String,
        /// What the call needs.
        need: Need,
    } -> Caller, from [ControlGate];

    /// Every user.
    ListUsers {} -> Vec<UserInfo>, from [ControlGate];

    /// Creates a user.
    CreateUser {
        /// The new user's name.
        username: Username,
        /// Their password (at least 8 characters).
        password: String,
        /// Their platform role.
        role: Role,
    } -> UserInfo, from [ControlGate];

    /// Deletes a user, their tokens and memberships.
    DeleteUser {
        /// The user.
        username: Username,
    } -> (), from [ControlGate];

    /// Creates a named API token for `by`.
    CreateToken {
        /// Whose token.
        by: Username,
        /// A label, for the list.
        name: String,
        /// Days until it expires (1 to 3650).
        days: u32,
    } -> NewToken, from [ControlGate];

    /// `by`'s unexpired tokens.
    ListTokens {
        /// Whose tokens.
        by: Username,
    } -> Vec<TokenInfo>, from [ControlGate];

    /// Revokes one of `by`'s tokens by its id.
    RevokeToken {
        /// Whose token.
        by: Username,
        /// The token's id, from [`TokenInfo`].
        id: String,
    } -> (), from [ControlGate];

    /// Creates the envelope's project with `by` as its admin.
    CreateProject {
        /// The creator.
        by: Username,
    } -> ProjectInfo, from [ControlGate];

    /// Projects: every one, or those `member` belongs to.
    ListProjects {
        /// `None` for every project (platform admins).
        member: Option<Username>,
    } -> Vec<ProjectInfo>, from [ControlGate];

    /// The envelope's project with its members and quotas.
    GetProject {} -> ProjectDetail, from [ControlGate];

    /// Deletes the envelope's project with its Doees, records and logs.
    DeleteProject {} -> (), from [ControlGate];

    /// Adds a member to the envelope's project, changes their role, or
    /// (with `role: None`) removes them.
    SetMember {
        /// The user.
        username: Username,
        /// Their role in the project.
        role: Option<Role>,
    } -> (), from [ControlGate];

    /// Sets the topic namespaces granted to the envelope's project beyond
    /// its own `<project>/#` (platform admins only).
    SetTopics {
        /// Namespaces like `greenhouse/#`.
        namespaces: Vec<String>,
    } -> (), from [ControlGate];

    /// Sets the envelope's project's quotas.
    SetQuotas {
        /// The new quotas.
        quotas: Quotas,
    } -> (), from [ControlGate];

    /// Creates a new version of a Doee of the envelope's project from a
    /// `.tar.gz` of its directory, and starts building it.
    Deploy {
        /// Who deploys.
        by: Username,
        /// The Doee directory as `.tar.gz`.
        archive: Payload,
    } -> Deployed, from [ControlGate];

    /// The envelope's project's Doees (build logs left out).
    ListDoees {} -> Vec<DoeeInfo>, from [ControlGate];

    /// One Doee of the envelope's project, with its versions and build logs.
    GetDoee {
        /// The Doee.
        doee: DoeeName,
    } -> DoeeInfo, from [ControlGate];

    /// Makes an earlier (built) version of a Doee active at once.
    Rollback {
        /// The Doee.
        doee: DoeeName,
        /// The version to serve.
        version: u32,
    } -> DoeeInfo, from [ControlGate];

    /// Removes a Doee, its versions and its triggers.
    DeleteDoee {
        /// The Doee.
        doee: DoeeName,
    } -> (), from [ControlGate];

    /// Records invocations (from the Doer, in batches; from the CommServer
    /// for an accepted asynchronous invocation and for one that never
    /// reached a Doer).
    Record {
        /// The records; a later record of an id replaces a pending one.
        invocations: Vec<InvocationRecord>,
    } -> (), from [Doer, CommServer];

    /// The envelope's project's latest invocations, newest first.
    ListInvocations {
        /// At most this many (capped at 1000).
        limit: u32,
    } -> Vec<InvocationRecord>, from [ControlGate];

    /// One invocation, in whichever project it ran (the Control Gate then
    /// checks the caller's right to that project).
    GetInvocation {
        /// The id.
        id: InvocationId,
    } -> InvocationRecord, from [ControlGate];

    /// The envelope's project's log lines, oldest first: those after the
    /// cursor `after`, or the latest ones when it is `None`.
    Logs {
        /// The last id already seen.
        after: Option<u64>,
        /// At most this many (capped at 1000).
        limit: u32,
    } -> Vec<LogEntry>, from [ControlGate];

    /// Counters and latency histograms of the recorded invocations, since
    /// Resadmin started (for `/metrics`).
    Stats {} -> Vec<DoeeStats>, from [ControlGate];

    /// Every active trigger and every project's topic namespaces (for the
    /// CommServer).
    Routes {} -> RouteTable, from [CommServer];

    /// How to run a version of a Doee of the envelope's project (for the Doer).
    GetVersion {
        /// The Doee.
        doee: DoeeName,
        /// The version.
        version: u32,
    } -> VersionSpec, from [Doer];

    /// A built shared object by its sha256 (for the Doer).
    GetBinary {
        /// The hex sha256 of the shared object.
        sha256: String,
    } -> Payload, from [Doer];

    /// Creates an MQTT device of the envelope's project; its secret is in
    /// the answer, and only there.
    CreateDevice {
        /// Its name.
        name: DeviceName,
    } -> NewDevice, from [ControlGate];

    /// The envelope's project's devices.
    ListDevices {} -> Vec<DeviceInfo>, from [ControlGate];

    /// Revokes a device of the envelope's project: its credentials stop
    /// working and its connections end.
    DeleteDevice {
        /// Its name.
        name: DeviceName,
    } -> (), from [ControlGate];

    /// Checks a device's MQTT credentials (for the CommServer's broker).
    DeviceLogin {
        /// `<project>/<device>`.
        username: String,
        /// The device's secret.
        password: String,
    } -> DeviceGrant, from [CommServer];

    /// Sets a secret of the envelope's project; a value replaces the last.
    SetSecret {
        /// Its name.
        name: SecretName,
        /// Its value (64 KiB at most).
        value: SecretValue,
    } -> (), from [ControlGate];

    /// The envelope's project's secrets: their names, never their values.
    ListSecrets {} -> Vec<SecretInfo>, from [ControlGate];

    /// Deletes a secret of the envelope's project.
    DeleteSecret {
        /// Its name.
        name: SecretName,
    } -> (), from [ControlGate];

    /// The active version of a Doee of the envelope's project, as a target
    /// to invoke (a Doee's `ctx.invoke`).
    Resolve {
        /// The Doee.
        doee: DoeeName,
    } -> Target, from [Doer];

    /// Claims the firing of a schedule due at `slot_ms`, durably, before
    /// it runs: of several CommServers, the first to claim a firing runs it
    /// and the others hear `Taken`.
    ClaimFiring {
        /// The Doee (of the envelope's project) whose schedule it is.
        doee: DoeeName,
        /// The schedule's timing, which names it.
        when: When,
        /// The moment the firing was due (ms since the epoch).
        slot_ms: u64,
        /// A missed firing run after downtime (`catch_up = "last"`): a
        /// schedule Resadmin has not seen fire before missed nothing, and
        /// one already fired at or after `slot_ms` missed nothing either.
        late: bool,
        /// What to do while the previous firing still runs.
        overlap: Overlap,
        /// How long this firing may run: past it the schedule counts as
        /// idle again even if nobody said it ended.
        run_ms: u64,
        /// Random, the same for every attempt at this firing: an attempt
        /// whose answer was lost, asking again, is answered `Run` again.
        claimant: u64,
    } -> Firing, from [CommServer];

    /// The firing claimed for `slot_ms` ended.
    FiringDone {
        /// The Doee (of the envelope's project).
        doee: DoeeName,
        /// The schedule's timing.
        when: When,
        /// The firing's moment.
        slot_ms: u64,
    } -> (), from [CommServer];

    /// A secret's value, for a Doee of the envelope's project (the Doer's
    /// host call): the one way a value leaves Resadmin.
    ReadSecret {
        /// Its name.
        name: SecretName,
    } -> SecretValue, from [Doer];
}

/// A project's secret, without its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Its name.
    pub name: SecretName,
    /// When its value was last set (ms since the epoch).
    pub updated_ms: u64,
}

/// A device just created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDevice {
    /// The device.
    pub info: DeviceInfo,
    /// Its secret, the MQTT password: shown once, stored only as a hash.
    pub secret: String,
}

/// An MQTT device of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its name.
    pub name: DeviceName,
    /// Its MQTT username: `<project>/<device>`.
    pub username: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
}

/// Who a device's credentials name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceGrant {
    /// Its project.
    pub project: ProjectName,
    /// The device.
    pub device: DeviceName,
}

/// What an API call needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Need {
    /// Any valid token.
    User,
    /// The platform role `admin`.
    Admin,
    /// A platform role that may create projects (admin or developer).
    Creator,
    /// At least this role in the envelope's project; platform admins hold
    /// every role in every project. A non-member learns only that the
    /// project does not exist for them.
    Project(Role),
}

/// Who called, once their token checked out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Caller {
    /// The user.
    pub user: Username,
    /// Their platform role.
    pub role: Role,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The name.
    pub name: Username,
    /// The platform role.
    pub role: Role,
    /// When they were created (ms since the epoch).
    pub created_ms: u64,
}

/// A token just created: the only time its secret is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewToken {
    /// The bearer token.
    pub token: String,
    /// What it is listed as.
    pub info: TokenInfo,
}

/// A token as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id, for revoking it (a prefix of its hash).
    pub id: String,
    /// Its label (`login` for sessions).
    pub name: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it expires (ms since the epoch).
    pub expires_ms: u64,
}

/// A project with its members and quotas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectDetail {
    /// The project.
    pub info: ProjectInfo,
    /// Its members.
    pub members: Vec<Member>,
    /// Its quotas.
    pub quotas: Quotas,
    /// Its MQTT topic namespaces, `<project>/#` first.
    pub topics: Vec<String>,
}

/// A member of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user: Username,
    /// Their role in the project.
    pub role: Role,
}

/// What a project may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Doees.
    pub max_doees: u32,
    /// Workers: the sum of its active Doees' `concurrency`.
    pub max_workers: u32,
    /// Bytes of one uploaded archive.
    pub max_upload_bytes: u64,
    /// The project's share of the CPU against other projects' when the
    /// host has too little for all: 1 to 10,000, 100 for everyone unless an
    /// admin changes it.
    #[serde(default = "default_cpu_weight")]
    pub cpu_weight: u32,
    /// Bytes the project's fetched dependencies (crates, wheels) may take.
    #[serde(default = "default_max_dependencies_bytes")]
    pub max_dependencies_bytes: u64,
}

fn default_cpu_weight() -> u32 {
    100
}

fn default_max_dependencies_bytes() -> u64 {
    1 << 30
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_doees: 50,
            max_workers: 32,
            max_upload_bytes: 16 << 20,
            cpu_weight: default_cpu_weight(),
            max_dependencies_bytes: default_max_dependencies_bytes(),
        }
    }
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

/// A role's name that is none of `admin`, `developer` or `viewer`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`role` must be \"admin\", \"developer\" or \"viewer\" (got \"{0}\")")]
pub struct UnknownRole(pub String);

/// The one reading of a role's name, wherever one comes from (an API body,
/// the state database): an unknown name is an error, never a viewer.
impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Role, UnknownRole> {
        match name {
            "admin" => Ok(Role::Admin),
            "developer" => Ok(Role::Developer),
            "viewer" => Ok(Role::Viewer),
            other => Err(UnknownRole(other.to_string())),
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
    /// `rust`, `c` or `cpp`, as its latest version says.
    pub language: String,
    /// The version that serves, if one has built.
    pub active_version: Option<u32>,
    /// The triggers of the active version (of the latest, before one built).
    pub triggers: Triggers,
    /// The labels its Doer must have, as that same version says.
    pub placement: Vec<(String, String)>,
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
    /// The build log (its tail, when long); left out of lists.
    pub build_log: Option<String>,
    /// When it was deployed (ms since the epoch).
    pub created_ms: u64,
    /// Who deployed it.
    pub deployed_by: String,
    /// The sha256 of its shared object, once built.
    pub sha256: Option<String>,
}

/// What starts a Doee.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Triggers {
    /// HTTP routes.
    pub http: Vec<HttpTrigger>,
    /// MQTT filters.
    pub mqtt: Vec<MqttTrigger>,
    /// Schedules, with their next firing.
    pub schedule: Vec<ScheduleInfo>,
}

/// A schedule of a manifest (`[[triggers.schedule]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTrigger {
    /// When it fires.
    pub when: When,
    /// Handed to the Doee at each firing.
    pub input: String,
    /// What to run after downtime.
    pub catch_up: CatchUp,
    /// What a firing does while the previous one still runs.
    pub overlap: Overlap,
}

/// When a schedule fires.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum When {
    /// At the moments a cron expression matches, read in a time zone.
    Cron {
        /// Five fields, or six with seconds first.
        expression: String,
        /// An IANA time zone (`UTC`, `Europe/Berlin`).
        timezone: String,
    },
    /// At each multiple of a period since the Unix epoch, so every
    /// CommServer computes the same moments.
    Every {
        /// The period, ms.
        ms: u64,
    },
}

impl std::fmt::Display for When {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            When::Cron {
                expression,
                timezone,
            } => write!(f, "cron \"{expression}\" ({timezone})"),
            When::Every { ms } if ms % 1000 == 0 => write!(f, "every {}s", ms / 1000),
            When::Every { ms } => write!(f, "every {ms}ms"),
        }
    }
}

/// Which firings missed while the platform was down run when it is back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatchUp {
    /// None of them.
    None,
    /// The last one, once.
    #[default]
    Last,
}

impl CatchUp {
    /// Its name in a manifest: `none` or `last`.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Last => "last",
        }
    }

    /// The value a manifest names.
    pub fn named(name: &str) -> Option<CatchUp> {
        [CatchUp::None, CatchUp::Last]
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

/// What a firing does while the previous one still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Nothing: it is skipped, and counted.
    #[default]
    Skip,
    /// It waits for the previous one to end.
    Queue,
}

impl Overlap {
    /// Its name in a manifest: `skip` or `queue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }

    /// The value a manifest names.
    pub fn named(name: &str) -> Option<Overlap> {
        [Overlap::Skip, Overlap::Queue]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// A schedule as `isms doee show` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// The manifest's schedule.
    pub trigger: ScheduleTrigger,
    /// Its next firing (ms since the epoch), if it has one.
    pub next_ms: Option<u64>,
    /// Its last firing that ran (ms since the epoch), if any.
    pub last_ms: Option<u64>,
    /// Firings skipped because the previous one still ran.
    pub skipped: u64,
}

/// What a [`ClaimFiring`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Firing {
    /// Run it: it is this CommServer's.
    Run,
    /// Another CommServer claimed it, or it is not to run (a missed firing
    /// of a schedule new to Resadmin).
    Taken,
    /// The previous firing still runs: skipped, and counted.
    Skipped,
    /// The previous firing still runs and this one queues: ask again.
    Wait,
}

/// An HTTP route of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTrigger {
    /// The route within the project, starting with `/`.
    pub route: String,
    /// Allowed methods, upper case.
    pub methods: Vec<String>,
    /// Doees of the project run in turn instead of this one, each output
    /// the next one's input; empty: this Doee. (Stored manifests from
    /// before have none.)
    #[serde(default)]
    pub pipeline: Vec<DoeeName>,
}

/// An MQTT trigger of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttTrigger {
    /// The topic filter (`+` and `#` allowed).
    pub topic: String,
    /// Where the output is published, if anywhere.
    pub reply_topic: Option<String>,
    /// As [`HttpTrigger::pipeline`].
    #[serde(default)]
    pub pipeline: Vec<DoeeName>,
}

/// One stage of a trigger's pipeline, as routes carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The Doee.
    pub doee: DoeeName,
    /// Its active version, if it has one: a pipeline naming a Doee
    /// without one answers 503 naming it.
    pub target: Option<Target>,
}

/// One invocation, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Its id.
    pub id: InvocationId,
    /// Its project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The version that ran.
    pub version: u32,
    /// What started it.
    pub trigger: Trigger,
    /// How it ended, or that it has not yet.
    pub status: InvocationStatus,
    /// When it was accepted (ms since the epoch).
    pub started_ms: u64,
    /// Microseconds from acceptance to its end (0 while pending).
    pub duration_us: u64,
    /// Whether a Worker had to be started for it.
    pub cold_start: bool,
    /// The HTTP status its caller got (0 while pending).
    pub http_status: u16,
    /// Why it failed.
    pub error: Option<String>,
    /// Its output, up to the recording bound.
    pub output: Payload,
    /// Whether the output was cut at the bound.
    pub output_truncated: bool,
    /// The Doee's log lines.
    pub logs: Vec<LogLine>,
    /// The Doer instance that ran it (empty if none did).
    pub instance: String,
    /// The host of that Doer.
    pub host: String,
}

/// How an invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InvocationStatus {
    /// Accepted (asynchronously) and not finished yet.
    Pending,
    /// The Doee answered.
    Succeeded,
    /// The Doee returned an error or panicked.
    Error,
    /// Its Worker died.
    Crashed,
    /// It ran past its timeout.
    Timeout,
    /// The Doee could not start.
    NotStarted,
    /// Its Workers and queue were full, or the platform's.
    Busy,
    /// It never reached a Doer (none was up, or the platform stopped).
    Unavailable,
    /// Its Worker was stopped to give another project one.
    Preempted,
}

impl InvocationStatus {
    /// Every status, in the order metrics list them.
    pub const ALL: [InvocationStatus; 9] = [
        InvocationStatus::Pending,
        InvocationStatus::Succeeded,
        InvocationStatus::Error,
        InvocationStatus::Crashed,
        InvocationStatus::Timeout,
        InvocationStatus::NotStarted,
        InvocationStatus::Busy,
        InvocationStatus::Unavailable,
        InvocationStatus::Preempted,
    ];

    /// Lower-case name, as the API and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Pending => "pending",
            InvocationStatus::Succeeded => "succeeded",
            InvocationStatus::Error => "error",
            InvocationStatus::Crashed => "crashed",
            InvocationStatus::Timeout => "timeout",
            InvocationStatus::NotStarted => "not_started",
            InvocationStatus::Busy => "busy",
            InvocationStatus::Unavailable => "unavailable",
            InvocationStatus::Preempted => "preempted",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<InvocationStatus> {
        InvocationStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One line of a project's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its position in the project's log: the cursor for the next read.
    pub id: u64,
    /// When it was written (ms since the epoch).
    pub at_ms: u64,
    /// The level.
    pub level: LogLevel,
    /// The Doee it is about.
    pub doee: DoeeName,
    /// Its version.
    pub version: u32,
    /// Who wrote it.
    pub source: LogSource,
    /// The text.
    pub message: String,
}

/// Who wrote a log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogSource {
    /// The Doee, during this invocation.
    Invocation(InvocationId),
    /// The build of the version.
    Build,
}

/// Upper bounds, in microseconds, of the latency histogram's buckets (a
/// last bucket counts the rest).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// One Doee's recorded invocations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoeeStats {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// Invocations by how they ended (every finished status, in
    /// [`InvocationStatus::ALL`] order without `Pending`).
    pub by_status: Vec<(InvocationStatus, u64)>,
    /// Finished invocations per latency bucket ([`LATENCY_BUCKETS_US`],
    /// then one for the rest); not cumulative.
    pub latency_buckets: Vec<u64>,
    /// The sum of their durations, in microseconds.
    pub latency_sum_us: u64,
}

/// What a trigger runs: the active version of a Doee, and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// Its active version.
    pub version: u32,
    /// Its scheduling class.
    pub priority: Priority,
    /// Its per-invocation timeout.
    pub timeout_ms: u32,
    /// Labels the Doer that runs it must have (`[placement]`).
    pub placement: Vec<(String, String)>,
}

impl Target {
    /// The call that runs the target once for `trigger`: the `Invoke`, and
    /// its scope, whose deadline is the Doee's timeout plus
    /// `queue_allowance` (the time it may wait in queues).
    pub fn invoke(
        &self,
        id: InvocationId,
        trigger: Trigger,
        input: Payload,
        queue_allowance: Duration,
    ) -> (Scope, Invoke) {
        let timeout = Duration::from_millis(u64::from(self.timeout_ms)) + queue_allowance;
        let scope = Scope {
            project: Some(self.project.clone()),
            priority: self.priority,
            deadline: Deadline::after(timeout),
            placement: self.placement.clone(),
        };
        let invoke = Invoke {
            id,
            doee: self.doee.clone(),
            version: self.version,
            trigger,
            input,
            stream: false,
        };
        (scope, invoke)
    }
}

/// An HTTP route to the active version of a Doee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// The route within the project, starting with `/`.
    pub route: String,
    /// Allowed methods, upper case.
    pub methods: Vec<String>,
    /// The Doee that declares it; its project is the first path segment.
    pub target: Target,
    /// What runs instead of `target`, in turn; empty: `target`.
    pub pipeline: Vec<Stage>,
}

/// Every active trigger, and where each project may publish and subscribe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    /// HTTP routes.
    pub http: Vec<HttpRoute>,
    /// MQTT triggers.
    pub mqtt: Vec<MqttRoute>,
    /// Each project's topic namespaces, `<project>/#` first.
    pub topics: Vec<ProjectTopics>,
    /// Schedules.
    pub schedules: Vec<ScheduleRoute>,
}

/// A schedule of the active version of a Doee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRoute {
    /// The schedule.
    pub trigger: ScheduleTrigger,
    /// What it runs.
    pub target: Target,
}

/// An MQTT trigger of the active version of a Doee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MqttRoute {
    /// The topic filter.
    pub filter: String,
    /// Where the output is published, if anywhere.
    pub reply_topic: Option<String>,
    /// The Doee that declares it.
    pub target: Target,
    /// What runs instead of `target`, in turn; empty: `target`.
    pub pipeline: Vec<Stage>,
}

/// A project's topic namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectTopics {
    /// The project.
    pub project: ProjectName,
    /// `<project>/#` first, then those granted.
    pub namespaces: Vec<String>,
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
    /// The project's CPU weight (its quota `cpu_weight`).
    pub cpu_weight: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_their_names_and_nothing_else() {
        for role in [Role::Admin, Role::Developer, Role::Viewer] {
            assert_eq!(role.as_str().parse(), Ok(role));
        }
        for name in ["", "Admin", "owner", "viewer "] {
            assert_eq!(name.parse::<Role>(), Err(UnknownRole(name.to_string())));
        }
    }
}
