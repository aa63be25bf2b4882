//! Resadmin: users, projects, Doee sources, builds, versions and binaries.
//!
//! - [`store`]: the SQLite state.
//! - [`manifest`]: `doee.toml` validation.
//! - [`archive`]: bounded unpacking of uploads.
//! - [`builder`]: the build queue.
//! - [`sandbox`]: the bubblewrap sandbox builds run in.
//! - [`auth`]: passwords and tokens.
//! - [`sdk`]: the bundled Doee SDK.

pub mod archive;
pub mod auth;
pub mod builder;
mod devices;
pub mod manifest;
pub mod sandbox;
pub mod sdk;
pub mod stats;
pub mod store;

use anyhow::Context as _;
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{
    self as protocol, BuildState, Caller, Deployed, DoeeInfo, HttpRoute, MqttRoute, Need, NewToken,
    Quotas, Request, Role, RouteTable, Session, Target, UserInfo, VersionSpec,
};
use isms_ipc::topic::{self, Namespace};
use isms_ipc::{
    Connection, Delivery, DoeeName, Event, Failure, FailureKind, Inbound, Incoming, ProjectName,
    Reply, Username,
};
use manifest::Manifest;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{NewProject, Store};

/// How Resadmin runs.
#[derive(Clone, Debug)]
pub struct ResadminConfig {
    /// The platform's data directory.
    pub data_dir: PathBuf,
    /// Where builds put their output (shared between builds).
    pub build_target_dir: PathBuf,
    /// `CARGO_HOME` for builds.
    pub cargo_home: PathBuf,
    /// The longest a build may take.
    pub build_timeout: Duration,
    /// The sandbox builds run in.
    pub build_sandbox: sandbox::SandboxConfig,
    /// How long a login token lasts.
    pub token_ttl: Duration,
    /// Bounds on uploads.
    pub archive: archive::Limits,
    /// A project's quotas unless an admin set others.
    pub quotas: Quotas,
    /// Projects a user who is not a platform admin may create.
    pub max_projects_per_user: u32,
    /// Invocation records and log lines older than this are forgotten.
    pub records_max_age: Duration,
    /// At most this many invocation records (and log lines) are kept.
    pub records_max_count: u64,
}

impl ResadminConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: &std::path::Path) -> ResadminConfig {
        let dir = data_dir.join("resadmin");
        ResadminConfig {
            data_dir: data_dir.to_path_buf(),
            build_target_dir: dir.join("target"),
            cargo_home: dir.join("cargo-home"),
            build_timeout: Duration::from_secs(600),
            build_sandbox: sandbox::SandboxConfig::default(),
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            archive: archive::Limits::default(),
            quotas: Quotas::default(),
            max_projects_per_user: 10,
            records_max_age: Duration::from_secs(7 * 24 * 3600),
            records_max_count: 100_000,
        }
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.join("resadmin")
    }

    fn sources_dir(&self) -> PathBuf {
        self.dir().join("sources")
    }

    fn binaries_dir(&self) -> PathBuf {
        self.dir().join("binaries")
    }

    /// Where the initial admin password is written.
    pub fn initial_password_file(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("initial-admin-password")
    }
}

/// The capacity Resadmin registers with.
pub const CAPACITY: u32 = 64;

struct State {
    store: Store,
    config: ResadminConfig,
    builder: builder::Builder,
    conn: Connection,
    stats: stats::Stats,
}

/// Resadmin with its state open, ready to join the kernel.
pub struct Prepared {
    store: Store,
    config: ResadminConfig,
    sdk_dir: PathBuf,
}

/// Opens the state, creates the initial admin and installs the SDK: all
/// that must hold before Resadmin tells the kernel it is up.
pub async fn prepare(config: ResadminConfig) -> anyhow::Result<Prepared> {
    // Private: the data directory above may be searchable by the Workers' uid.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(config.dir())
        .with_context(|| format!("cannot create {}", config.dir().display()))?;
    std::fs::set_permissions(
        config.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    for dir in [
        config.sources_dir(),
        config.binaries_dir(),
        config.cargo_home.clone(),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Builds read it as their own uid (one of the operator's own is left alone).
    if config.cargo_home.starts_with(config.dir()) {
        std::fs::set_permissions(
            &config.cargo_home,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
    }
    let store = Store::open(&config.dir())
        .await
        .context("cannot open the state database")?;
    let interrupted = store.fail_interrupted_builds().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "marked builds interrupted by a restart as failed"
        );
    }
    create_initial_admin(&store, &config).await?;
    let sdk_dir = sdk::install(&config.dir()).context("cannot install the Doee SDK")?;
    Ok(Prepared {
        store,
        config,
        sdk_dir,
    })
}

impl Prepared {
    /// Serves until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        mut incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Prepared {
            store,
            config,
            sdk_dir,
        } = self;
        let builder = builder::Builder::start(
            store.clone(),
            conn.clone(),
            builder::BuildConfig {
                sdk_dir,
                target_dir: config.build_target_dir.clone(),
                cargo_home: config.cargo_home.clone(),
                binaries_dir: config.binaries_dir(),
                timeout: config.build_timeout,
                sandbox: config.build_sandbox.clone(),
            },
        );
        let pruner = {
            let store = store.clone();
            let (max_age, max_count) = (config.records_max_age, config.records_max_count);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    match store.prune(max_age.as_millis() as u64, max_count).await {
                        Ok(0) => {}
                        Ok(removed) => tracing::debug!(removed, "pruned old records"),
                        Err(err) => tracing::warn!(cause = %err, "cannot prune old records"),
                    }
                }
            })
        };
        let _pruner = AbortOnDrop(pruner);
        let state = Arc::new(State {
            store,
            config,
            builder,
            conn,
            stats: stats::Stats::default(),
        });
        tracing::info!("Resadmin ready");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                inbound = incoming.next() => match inbound {
                    Some(Inbound::Request(delivery)) => {
                        let state = state.clone();
                        tokio::spawn(async move { state.handle(delivery).await });
                    }
                Some(Inbound::Event(_)) => {}
                    None => anyhow::bail!("lost the kernel"),
                },
            }
        }
    }
}

/// Stops a background task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long ago a time (ms since the epoch) was, for messages.
fn ago(at_ms: u64) -> String {
    let secs = now_ms().saturating_sub(at_ms) / 1000;
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// Creates the `admin` user with a random password on the first start, and
/// writes the password to `<data-dir>/initial-admin-password` (mode 0600).
async fn create_initial_admin(store: &Store, config: &ResadminConfig) -> anyhow::Result<()> {
    if store.user_count().await? > 0 {
        return Ok(());
    }
    let password = auth::random_password().map_err(anyhow::Error::msg)?;
    let hash =
        tokio::task::spawn_blocking(move || auth::hash_password(&password).map(|h| (password, h)))
            .await?
            .map_err(anyhow::Error::msg)?;
    let path = ResadminConfig::initial_password_file(&config.data_dir);
    isms_ipc::secret_file::write(&path, format!("{}\n", hash.0).as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let admin = Username::new("admin").map_err(anyhow::Error::msg)?;
    store.create_user(&admin, &hash.1, Role::Admin).await?;
    tracing::info!(file = %path.display(), "created the initial admin user");
    Ok(())
}

fn db_failure(err: sqlx::Error) -> Failure {
    tracing::error!(cause = %err, "state database error");
    Failure::internal("the state database failed; see Resadmin's log")
}

fn forbidden(message: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Forbidden, message)
}

fn no_project(project: &ProjectName) -> Failure {
    Failure::not_found(format!("no project `{project}`"))
}

fn no_doee(project: &ProjectName, doee: &DoeeName) -> Failure {
    Failure::not_found(format!("no Doee `{doee}` in project `{project}`"))
}

/// The most records or log lines one request lists.
const MAX_LIST: u32 = 1000;

impl State {
    async fn handle(&self, delivery: Delivery) {
        let Delivery {
            envelope,
            request,
            responder,
        } = delivery;
        let isms_ipc::Request::Resadmin(request) = request else {
            responder.reply(Err(Failure::invalid("not a Resadmin request")));
            return;
        };
        let project = envelope.project;
        let result = self.dispatch(project, request).await;
        responder.reply(result.map(Reply::Resadmin));
    }

    async fn dispatch(
        &self,
        project: Option<ProjectName>,
        request: Request,
    ) -> Result<protocol::Reply, Failure> {
        let project = || {
            project
                .clone()
                .ok_or_else(|| Failure::invalid("this request needs a project"))
        };
        // Who may ask what is declared in the protocol and enforced by the
        // kernel before delivery: people's requests arrive only through the
        // Control Gate, which has asked `Authorize` first.
        use protocol::Reply as R;
        let store = &self.store;
        match request {
            Request::Login(r) => self.login(r.username, r.password).await.map(R::Login),
            Request::Logout(r) => {
                store
                    .revoke_token_hash(&auth::token_hash(&r.token))
                    .await
                    .map_err(db_failure)?;
                Ok(R::Logout(()))
            }
            Request::Authorize(r) => self
                .authorize(&r.token, r.need, project().ok())
                .await
                .map(R::Authorize),
            Request::ListUsers(_) => store.users().await.map_err(db_failure).map(R::ListUsers),
            Request::CreateUser(r) => self.create_user(r).await.map(R::CreateUser),
            Request::DeleteUser(r) => {
                match store.delete_user(&r.username).await.map_err(db_failure)? {
                    store::DeleteUser::Deleted => Ok(R::DeleteUser(())),
                    store::DeleteUser::NoSuchUser => {
                        Err(Failure::not_found(format!("no user `{}`", r.username)))
                    }
                    store::DeleteUser::LastAdmin => Err(Failure::new(
                        FailureKind::Conflict,
                        format!(
                            "`{}` is the last admin; make another admin first",
                            r.username
                        ),
                    )),
                }
            }
            Request::CreateToken(r) => self
                .create_token(&r.by, &r.name, r.days)
                .await
                .map(R::CreateToken),
            Request::ListTokens(r) => store
                .tokens(&r.by)
                .await
                .map_err(db_failure)
                .map(R::ListTokens),
            Request::RevokeToken(r) => {
                if store.revoke_token(&r.by, &r.id).await.map_err(db_failure)? {
                    Ok(R::RevokeToken(()))
                } else {
                    Err(Failure::not_found(format!("you have no token `{}`", r.id)))
                }
            }
            Request::CreateProject(r) => {
                let project = project()?;
                let creator = store.user(r.by.as_str()).await.map_err(db_failure)?;
                let limit = match creator.map(|u| u.role) {
                    Some(Role::Admin) => None,
                    _ => Some(self.config.max_projects_per_user),
                };
                match store
                    .create_project(&project, &r.by, limit)
                    .await
                    .map_err(db_failure)?
                {
                    NewProject::Created(info) => Ok(R::CreateProject(info)),
                    NewProject::Exists => Err(Failure::new(
                        FailureKind::Conflict,
                        format!("project `{project}` already exists"),
                    )),
                    NewProject::OverQuota(limit) => Err(forbidden(format!(
                        "quota exceeded: `{}` has created {limit} projects, the most a user who \
                         is not a platform admin may (resadmin.quota_max_projects); delete one, \
                         or ask an admin",
                        r.by
                    ))),
                }
            }
            Request::ListProjects(r) => store
                .projects(r.member.as_ref())
                .await
                .map_err(db_failure)
                .map(R::ListProjects),
            Request::GetProject(_) => {
                let project = project()?;
                store
                    .project(&project, self.config.quotas)
                    .await
                    .map_err(db_failure)?
                    .ok_or_else(|| no_project(&project))
                    .map(R::GetProject)
            }
            Request::DeleteProject(_) => {
                self.delete_project(project()?).await.map(R::DeleteProject)
            }
            Request::SetMember(r) => {
                let project = project()?;
                if store
                    .set_member(&project, &r.username, r.role)
                    .await
                    .map_err(db_failure)?
                {
                    Ok(R::SetMember(()))
                } else if r.role.is_some() {
                    Err(Failure::not_found(format!("no user `{}`", r.username)))
                } else {
                    Err(Failure::not_found(format!(
                        "`{}` is not a member of `{project}`",
                        r.username
                    )))
                }
            }
            Request::SetTopics(r) => self
                .set_topics(project()?, r.namespaces)
                .await
                .map(R::SetTopics),
            Request::SetQuotas(r) => {
                let project = project()?;
                if !(1..=10_000).contains(&r.quotas.cpu_weight) {
                    return Err(Failure::invalid(format!(
                        "cpu_weight must be 1 to 10000 (100 is every project's default), not {}",
                        r.quotas.cpu_weight
                    )));
                }
                store
                    .set_quotas(&project, &r.quotas)
                    .await
                    .map_err(db_failure)?;
                self.conn.emit(Event::QuotasChanged {
                    project,
                    quotas: r.quotas,
                });
                Ok(R::SetQuotas(()))
            }
            Request::Deploy(r) => self
                .deploy(&r.by, project()?, r.archive)
                .await
                .map(R::Deploy),
            Request::ListDoees(_) => store
                .doees(&project()?, None, false)
                .await
                .map_err(db_failure)
                .map(R::ListDoees),
            Request::GetDoee(r) => self.doee(&project()?, &r.doee).await.map(R::GetDoee),
            Request::Rollback(r) => self
                .rollback(project()?, r.doee, r.version)
                .await
                .map(R::Rollback),
            Request::DeleteDoee(r) => self
                .delete_doee(project()?, r.doee)
                .await
                .map(R::DeleteDoee),
            Request::Record(r) => {
                self.stats.add(&r.invocations);
                store
                    .records
                    .record(&r.invocations)
                    .await
                    .map_err(db_failure)
                    .map(R::Record)
            }
            Request::ListInvocations(r) => store
                .records
                .invocations(&project()?, r.limit.min(MAX_LIST))
                .await
                .map_err(db_failure)
                .map(R::ListInvocations),
            Request::GetInvocation(r) => store
                .records
                .invocation(r.id)
                .await
                .map_err(db_failure)?
                .ok_or_else(|| Failure::not_found(format!("no invocation {}", r.id)))
                .map(R::GetInvocation),
            Request::Logs(r) => store
                .records
                .logs(&project()?, r.after, r.limit.min(MAX_LIST))
                .await
                .map_err(db_failure)
                .map(R::Logs),
            Request::Stats(_) => Ok(R::Stats(self.stats.snapshot())),
            Request::Routes(_) => self.routes().await.map(R::Routes),
            Request::GetVersion(r) => self.version_spec(project()?, r).await.map(R::GetVersion),
            Request::GetBinary(r) => self.binary(&r.sha256).await.map(R::GetBinary),
            Request::CreateDevice(r) => self
                .create_device(project()?, r.name)
                .await
                .map(R::CreateDevice),
            Request::ListDevices(_) => store
                .devices(&project()?)
                .await
                .map_err(db_failure)
                .map(R::ListDevices),
            Request::DeleteDevice(r) => self
                .delete_device(project()?, r.name)
                .await
                .map(R::DeleteDevice),
            Request::DeviceLogin(r) => self
                .device_login(&r.username, &r.password)
                .await
                .map(R::DeviceLogin),
        }
    }

    async fn login(&self, username: String, password: String) -> Result<Session, Failure> {
        let wrong = || Failure::new(FailureKind::Unauthenticated, "wrong username or password");
        let user = self.store.user(&username).await.map_err(db_failure)?;
        // Verify against a dummy hash when the user does not exist, so the
        // answer takes as long either way.
        let stored = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.into());
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &stored))
            .await
            .unwrap_or(false);
        let user = match user {
            Some(user) if ok => user,
            _ => return Err(wrong()),
        };
        let (token, hash) = auth::new_token().map_err(Failure::internal)?;
        let expires_ms = now_ms() + self.config.token_ttl.as_millis() as u64;
        self.store
            .insert_token(&hash, &user.name, "login", expires_ms)
            .await
            .map_err(db_failure)?;
        Ok(Session {
            token,
            user: user.name,
            role: user.role,
            expires_ms,
        })
    }

    /// Checks a token and that its user holds `need`. The order of the
    /// checks decides what a refused caller learns: no token or a bad one
    /// (401) before anything else; a project the caller is not a member of
    /// reads as missing (404), so names do not leak; a member without the
    /// role gets 403.
    async fn authorize(
        &self,
        token: &str,
        need: Need,
        project: Option<ProjectName>,
    ) -> Result<Caller, Failure> {
        let unauthenticated = |message: String| Failure::new(FailureKind::Unauthenticated, message);
        if token.is_empty() {
            return Err(unauthenticated(
                "log in first: no token was given (Authorization: Bearer <token>)".into(),
            ));
        }
        let caller = match self
            .store
            .token_user(&auth::token_hash(token))
            .await
            .map_err(db_failure)?
        {
            store::TokenCheck::Valid(user, role) => Caller { user, role },
            store::TokenCheck::Expired { expires_ms } => {
                return Err(unauthenticated(format!(
                    "the token expired {} ago: log in again",
                    ago(expires_ms)
                )));
            }
            store::TokenCheck::Unknown => {
                return Err(unauthenticated(
                    "the token is unknown or was revoked: log in again".into(),
                ));
            }
        };
        match need {
            Need::User => Ok(caller),
            Need::Admin if caller.role == Role::Admin => Ok(caller),
            Need::Admin => Err(forbidden("only an admin may do that")),
            Need::Creator if caller.role != Role::Viewer => Ok(caller),
            Need::Creator => Err(forbidden("a viewer may not create projects")),
            Need::Project(needed) => {
                let project =
                    project.ok_or_else(|| Failure::invalid("this request needs a project"))?;
                if !self
                    .store
                    .project_exists(&project)
                    .await
                    .map_err(db_failure)?
                {
                    return Err(no_project(&project));
                }
                if caller.role == Role::Admin {
                    return Ok(caller);
                }
                match self
                    .store
                    .member_role(&project, &caller.user)
                    .await
                    .map_err(db_failure)?
                {
                    None => Err(no_project(&project)),
                    // Roles order Admin < Developer < Viewer: lower is stronger.
                    Some(role) if role <= needed => Ok(caller),
                    Some(role) => Err(forbidden(format!(
                        "a {} of `{project}` may not do that; it needs a {}",
                        role.as_str(),
                        needed.as_str()
                    ))),
                }
            }
        }
    }

    async fn create_user(&self, r: protocol::CreateUser) -> Result<UserInfo, Failure> {
        if r.password.chars().count() < 8 {
            return Err(Failure::invalid(
                "`password` must have at least 8 characters",
            ));
        }
        let password = r.password;
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(Failure::internal)?
            .map_err(Failure::internal)?;
        if !self
            .store
            .create_user(&r.username, &hash, r.role)
            .await
            .map_err(db_failure)?
        {
            return Err(Failure::new(
                FailureKind::Conflict,
                format!("user `{}` already exists", r.username),
            ));
        }
        Ok(UserInfo {
            name: r.username,
            role: r.role,
            created_ms: now_ms(),
        })
    }

    async fn create_token(
        &self,
        by: &Username,
        name: &str,
        days: u32,
    ) -> Result<NewToken, Failure> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Failure::invalid(
                "`name` must be 1 to 64 printable characters",
            ));
        }
        if !(1..=3650).contains(&days) {
            return Err(Failure::invalid("`days` must be between 1 and 3650"));
        }
        let (token, hash) = auth::new_token().map_err(Failure::internal)?;
        let expires_ms = now_ms() + u64::from(days) * 24 * 3600 * 1000;
        let info = self
            .store
            .insert_token(&hash, by, name, expires_ms)
            .await
            .map_err(db_failure)?;
        Ok(NewToken { token, info })
    }

    async fn doee(&self, project: &ProjectName, doee: &DoeeName) -> Result<DoeeInfo, Failure> {
        self.store
            .doees(project, Some(doee), true)
            .await
            .map_err(db_failure)?
            .pop()
            .ok_or_else(|| no_doee(project, doee))
    }

    async fn rollback(
        &self,
        project: ProjectName,
        doee: DoeeName,
        version: u32,
    ) -> Result<DoeeInfo, Failure> {
        let row = self
            .store
            .version(&project, &doee, version)
            .await
            .map_err(db_failure)?;
        match row {
            None if self.doee(&project, &doee).await.is_err() => {
                return Err(no_doee(&project, &doee));
            }
            None => {
                return Err(Failure::not_found(format!(
                    "`{doee}` has no version {version}"
                )));
            }
            Some(row) if row.build != BuildState::Succeeded => {
                return Err(Failure::new(
                    FailureKind::Conflict,
                    format!(
                        "version {version} of `{doee}` cannot serve: its build {}",
                        row.build.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
        self.store
            .activate(&project, &doee, version)
            .await
            .map_err(db_failure)?;
        tracing::info!(%project, %doee, version, "rolled back");
        self.conn.emit(Event::DeploymentsChanged {
            project: project.clone(),
        });
        self.doee(&project, &doee).await
    }

    async fn delete_doee(&self, project: ProjectName, doee: DoeeName) -> Result<(), Failure> {
        if !self
            .store
            .delete_doee(&project, &doee)
            .await
            .map_err(db_failure)?
        {
            return Err(no_doee(&project, &doee));
        }
        let sources = self
            .config
            .sources_dir()
            .join(project.as_str())
            .join(doee.as_str());
        let _ = tokio::fs::remove_dir_all(&sources).await;
        tracing::info!(%project, %doee, "deleted");
        self.conn.emit(Event::DeploymentsChanged { project });
        Ok(())
    }

    async fn delete_project(&self, project: ProjectName) -> Result<(), Failure> {
        self.store
            .project(&project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| no_project(&project))?;
        // The databases go first: a project deleted with its databases
        // left behind would hand them to the next project of that name.
        self.conn
            .call(
                &isms_ipc::Scope::project(project.clone(), Duration::from_secs(30)),
                isms_ipc::dbriver::DropProject {},
            )
            .await
            .map_err(|failure| {
                Failure::new(
                    failure.kind,
                    format!(
                        "the project was not deleted: its databases could not be removed: {failure}"
                    ),
                )
            })?;
        if !self
            .store
            .delete_project(&project)
            .await
            .map_err(db_failure)?
        {
            return Err(no_project(&project));
        }
        let sources = self.config.sources_dir().join(project.as_str());
        let _ = tokio::fs::remove_dir_all(&sources).await;
        tracing::info!(%project, "project deleted");
        self.conn.emit(Event::DeviceRevoked {
            project: project.clone(),
            device: None,
        });
        self.conn.emit(Event::DeploymentsChanged { project });
        Ok(())
    }

    async fn deploy(
        &self,
        by: &Username,
        project: ProjectName,
        archive: bytes::Bytes,
    ) -> Result<Deployed, Failure> {
        let quotas = self
            .store
            .project(&project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| no_project(&project))?
            .quotas;
        if archive.len() as u64 > quotas.max_upload_bytes {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the upload has {} bytes, past project `{project}`'s quota max_upload_bytes of {}",
                    archive.len(),
                    quotas.max_upload_bytes
                ),
            ));
        }
        // Unpack into a fresh directory; it only becomes a version once the
        // manifest is valid, and is removed otherwise.
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let staging = self
            .config
            .sources_dir()
            .join(format!(".upload-{}", u64::from_be_bytes(nonce)));
        let limits = self.config.archive;
        let unpack_dir = staging.clone();
        let unpacked =
            tokio::task::spawn_blocking(move || archive::unpack(&archive, &unpack_dir, &limits))
                .await
                .map_err(Failure::internal)?;
        let root = unpacked.map_err(|err| match err {
            archive::ArchiveError::TooLarge(why) => Failure::new(FailureKind::TooLarge, why),
            archive::ArchiveError::Io(err) => {
                Failure::internal(format!("cannot unpack the upload: {err}"))
            }
            other => Failure::invalid(other.to_string()),
        })?;
        let discard = |failure: Failure| {
            let _ = std::fs::remove_dir_all(&staging);
            failure
        };
        let text = std::fs::read_to_string(root.join(manifest::FILE))
            .map_err(|_| discard(Failure::invalid("doee.toml is not valid UTF-8")))?;
        let manifest = Manifest::parse(&text).map_err(|e| discard(Failure::invalid(e)))?;
        self.check_routes(&project, &manifest)
            .await
            .map_err(discard)?;
        self.check_topics(&project, &manifest)
            .await
            .map_err(discard)?;
        self.check_quotas(&project, &manifest, quotas)
            .await
            .map_err(discard)?;
        let manifest_json =
            serde_json::to_string(&manifest).map_err(|e| discard(Failure::internal(e)))?;
        let version = self
            .store
            .new_version(&project, &manifest.name, &manifest_json, by)
            .await
            .map_err(|e| discard(db_failure(e)))?;
        let dest = self
            .config
            .sources_dir()
            .join(project.as_str())
            .join(manifest.name.as_str())
            .join(version.to_string());
        let moved = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&root, &dest));
        if let Err(err) = moved {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = self
                .store
                .set_build(
                    &project,
                    &manifest.name,
                    version,
                    BuildState::Failed,
                    &format!("cannot store the sources: {err}"),
                    None,
                )
                .await;
            return Err(Failure::internal(format!(
                "cannot store the sources: {err}"
            )));
        }
        let _ = std::fs::remove_dir_all(&staging);
        let doee = manifest.name.clone();
        tracing::info!(%project, %doee, version, user = %by, "deployed; build queued");
        self.builder.submit(builder::Job {
            project,
            doee: doee.clone(),
            version,
            root: dest,
            manifest,
        });
        Ok(Deployed {
            doee,
            version,
            build: BuildState::Queued,
        })
    }

    /// Refuses a manifest that would take the project past its quotas.
    async fn check_quotas(
        &self,
        project: &ProjectName,
        manifest: &Manifest,
        quotas: Quotas,
    ) -> Result<(), Failure> {
        let exceeded = |message: String| forbidden(format!("quota exceeded: {message}"));
        let (others, workers) = self
            .store
            .usage(project, &manifest.name)
            .await
            .map_err(db_failure)?;
        let exists = self
            .store
            .doees(project, Some(&manifest.name), false)
            .await
            .map_err(db_failure)?
            .pop()
            .is_some();
        if !exists && others >= quotas.max_doees {
            return Err(exceeded(format!(
                "project `{project}` has {others} Doees, its max_doees"
            )));
        }
        let asked = manifest.resources.concurrency;
        if workers + asked > quotas.max_workers {
            return Err(exceeded(format!(
                "project `{project}` may run {} Workers (max_workers); its other Doees use {workers} \
                 and `resources.concurrency` asks {asked} more",
                quotas.max_workers
            )));
        }
        Ok(())
    }

    /// Refuses a manifest whose routes another Doee of the project serves.
    async fn check_routes(
        &self,
        project: &ProjectName,
        manifest: &Manifest,
    ) -> Result<(), Failure> {
        for active in self.store.active(Some(project)).await.map_err(db_failure)? {
            if active.doee == manifest.name {
                continue;
            }
            let Ok(other) = serde_json::from_str::<Manifest>(&active.manifest) else {
                continue;
            };
            for trigger in &manifest.http {
                if other.http.iter().any(|h| h.route == trigger.route) {
                    return Err(Failure::new(
                        FailureKind::Conflict,
                        format!(
                            "route {} is already served by Doee `{}` in `{project}`",
                            trigger.route, active.doee
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn routes(&self) -> Result<RouteTable, Failure> {
        let mut table = RouteTable {
            topics: self.store.all_topics().await.map_err(db_failure)?,
            ..RouteTable::default()
        };
        for active in self.store.active(None).await.map_err(db_failure)? {
            let Ok(manifest) = serde_json::from_str::<Manifest>(&active.manifest) else {
                tracing::error!(project = %active.project, doee = %active.doee, "unreadable stored manifest");
                continue;
            };
            let target = Target {
                project: active.project.clone(),
                doee: active.doee.clone(),
                version: active.version,
                priority: manifest.priority,
                timeout_ms: manifest.resources.timeout_ms,
            };
            for trigger in manifest.http {
                table.http.push(HttpRoute {
                    route: trigger.route,
                    methods: trigger.methods,
                    target: target.clone(),
                });
            }
            for trigger in manifest.mqtt {
                table.mqtt.push(MqttRoute {
                    filter: trigger.topic,
                    reply_topic: trigger.reply_topic,
                    target: target.clone(),
                });
            }
        }
        Ok(table)
    }

    /// Refuses MQTT triggers outside the project's topic namespaces.
    async fn check_topics(
        &self,
        project: &ProjectName,
        manifest: &Manifest,
    ) -> Result<(), Failure> {
        if manifest.mqtt.is_empty() {
            return Ok(());
        }
        let detail = self
            .store
            .project(project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| no_project(project))?;
        let namespaces: Vec<Namespace> = detail
            .topics
            .iter()
            .filter_map(|ns| Namespace::parse(ns).ok())
            .collect();
        let outside = |topic: &str| {
            forbidden(format!(
                "MQTT topic `{topic}` is outside project `{project}`'s topic namespaces ({}); \
                 a platform admin can grant more with PUT /api/v1/projects/{project}/topics",
                detail.topics.join(", ")
            ))
        };
        for trigger in &manifest.mqtt {
            if !topic::allowed(&namespaces, &trigger.topic) {
                return Err(outside(&trigger.topic));
            }
            if let Some(reply) = &trigger.reply_topic
                && !topic::allowed(&namespaces, reply)
            {
                return Err(outside(reply));
            }
        }
        Ok(())
    }

    /// Replaces the namespaces granted to a project; its triggers are
    /// checked against them again at every delivery.
    async fn set_topics(
        &self,
        project: ProjectName,
        namespaces: Vec<String>,
    ) -> Result<(), Failure> {
        let mut granted = Vec::new();
        for text in &namespaces {
            let namespace = Namespace::parse(text)
                .map_err(|why| Failure::invalid(format!("topic namespace: {why}")))?;
            if namespace == Namespace::of_project(&project) {
                continue;
            }
            if !granted.contains(&namespace) {
                granted.push(namespace);
            }
        }
        if granted.len() > 64 {
            return Err(Failure::invalid("at most 64 topic namespaces per project"));
        }
        if self
            .store
            .project(&project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .is_none()
        {
            return Err(no_project(&project));
        }
        self.store
            .set_topics(&project, &granted)
            .await
            .map_err(db_failure)?;
        self.conn.emit(Event::DeploymentsChanged { project });
        Ok(())
    }

    async fn version_spec(
        &self,
        project: ProjectName,
        r: protocol::GetVersion,
    ) -> Result<VersionSpec, Failure> {
        let missing = || {
            Failure::not_found(format!(
                "no version {} of `{}` in `{project}`",
                r.version, r.doee
            ))
        };
        let row = self
            .store
            .version(&project, &r.doee, r.version)
            .await
            .map_err(db_failure)?
            .ok_or_else(missing)?;
        let (BuildState::Succeeded, Some(sha256)) = (row.build, row.sha256) else {
            return Err(Failure::new(
                FailureKind::Conflict,
                format!("version {} of `{}` has not been built", r.version, r.doee),
            ));
        };
        let manifest: Manifest = serde_json::from_str(&row.manifest).map_err(Failure::internal)?;
        let quotas = self
            .store
            .project(&project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .map_or(self.config.quotas, |p| p.quotas);
        Ok(VersionSpec {
            sha256,
            params: manifest.params,
            resources: manifest.resources,
            cpu_weight: quotas.cpu_weight,
        })
    }

    async fn binary(&self, sha256: &str) -> Result<bytes::Bytes, Failure> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Failure::invalid("not a sha256"));
        }
        let path = self.config.binaries_dir().join(format!("{sha256}.so"));
        tokio::fs::read(&path)
            .await
            .map(bytes::Bytes::from)
            .map_err(|_| Failure::not_found(format!("no binary {sha256}")))
    }
}

/// An argon2 hash of a random password, verified against when the user does
/// not exist so that a login's timing does not reveal which users exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$FfAWhxqSbzxsNvmNMCK3ICPH1uqWwvqUTyXGBjIkAWw";
