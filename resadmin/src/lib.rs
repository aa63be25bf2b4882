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
pub mod manifest;
pub mod sandbox;
pub mod sdk;
pub mod store;

use anyhow::Context as _;
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{
    self as protocol, BuildState, Deployed, HttpRoute, ProjectInfo, Request, Role, Session,
    VersionSpec,
};
use isms_ipc::{
    Connection, Delivery, Failure, FailureKind, Inbound, Incoming, ProjectName, Reply, ServiceKind,
    Username,
};
use manifest::Manifest;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

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
    let store = Store::open(&config.dir().join("state.db"))
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
        let state = Arc::new(State {
            store,
            config,
            builder,
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
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(file, "{}", hash.0)?;
    }
    let admin = Username::new("admin").map_err(anyhow::Error::msg)?;
    store.create_user(&admin, &hash.1, Role::Admin).await?;
    tracing::info!(file = %path.display(), "created the initial admin user");
    Ok(())
}

/// Who is calling, once their token checks out.
struct Caller {
    user: Username,
    role: Role,
}

fn db_failure(err: sqlx::Error) -> Failure {
    tracing::error!(cause = %err, "state database error");
    Failure::internal("the state database failed; see Resadmin's log")
}

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
        let origin = envelope.origin;
        let project = envelope.project;
        let result = self.dispatch(origin, project, request).await;
        responder.reply(result.map(Reply::Resadmin));
    }

    async fn dispatch(
        &self,
        origin: ServiceKind,
        project: Option<ProjectName>,
        request: Request,
    ) -> Result<protocol::Reply, Failure> {
        let need_project = || {
            project
                .clone()
                .ok_or_else(|| Failure::invalid("this request needs a project"))
        };
        let from = |allowed: &[ServiceKind]| {
            if allowed.contains(&origin) {
                Ok(())
            } else {
                Err(Failure::new(
                    FailureKind::Forbidden,
                    format!("the {origin} may not ask that"),
                ))
            }
        };
        use protocol::Reply as R;
        match request {
            Request::Login(r) => {
                from(&[ServiceKind::ControlGate])?;
                self.login(r.username, r.password).await.map(R::Login)
            }
            Request::CreateProject(r) => {
                from(&[ServiceKind::ControlGate])?;
                self.create_project(&r.token, need_project()?)
                    .await
                    .map(R::CreateProject)
            }
            Request::ListProjects(r) => {
                from(&[ServiceKind::ControlGate])?;
                let caller = self.caller(&r.token).await?;
                let member = (caller.role != Role::Admin).then_some(&caller.user);
                self.store
                    .projects(member)
                    .await
                    .map_err(db_failure)
                    .map(R::ListProjects)
            }
            Request::Deploy(r) => {
                from(&[ServiceKind::ControlGate])?;
                self.deploy(&r.token, need_project()?, r.archive)
                    .await
                    .map(R::Deploy)
            }
            Request::GetDoee(r) => {
                from(&[ServiceKind::ControlGate])?;
                let project = need_project()?;
                let caller = self.caller(&r.token).await?;
                self.require(&caller, &project, Role::Viewer).await?;
                self.store
                    .doee(&project, &r.doee)
                    .await
                    .map_err(db_failure)?
                    .ok_or_else(|| {
                        Failure::not_found(format!("no Doee `{}` in project `{project}`", r.doee))
                    })
                    .map(R::GetDoee)
            }
            Request::Routes(_) => {
                from(&[ServiceKind::CommServer, ServiceKind::ControlGate])?;
                self.routes().await.map(R::Routes)
            }
            Request::GetVersion(r) => {
                from(&[ServiceKind::Doer])?;
                self.version_spec(need_project()?, r)
                    .await
                    .map(R::GetVersion)
            }
            Request::GetBinary(r) => {
                from(&[ServiceKind::Doer])?;
                self.binary(&r.sha256).await.map(R::GetBinary)
            }
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
            .insert_token(&hash, &user.name, expires_ms)
            .await
            .map_err(db_failure)?;
        Ok(Session {
            token,
            user: user.name,
            role: user.role,
            expires_ms,
        })
    }

    async fn caller(&self, token: &str) -> Result<Caller, Failure> {
        if token.is_empty() {
            return Err(Failure::new(
                FailureKind::Unauthenticated,
                "log in first: no token was given",
            ));
        }
        match self
            .store
            .token_user(&auth::token_hash(token))
            .await
            .map_err(db_failure)?
        {
            Some((user, role)) => Ok(Caller { user, role }),
            None => Err(Failure::new(
                FailureKind::Unauthenticated,
                "the token is unknown or expired: log in again",
            )),
        }
    }

    /// Checks that `caller` holds at least `needed` in `project` (admins hold
    /// everything). A non-member learns only that the project is not theirs.
    async fn require(
        &self,
        caller: &Caller,
        project: &ProjectName,
        needed: Role,
    ) -> Result<(), Failure> {
        if !self
            .store
            .project_exists(project)
            .await
            .map_err(db_failure)?
        {
            return Err(Failure::not_found(format!("no project `{project}`")));
        }
        if caller.role == Role::Admin {
            return Ok(());
        }
        match self
            .store
            .member_role(project, &caller.user)
            .await
            .map_err(db_failure)?
        {
            None => Err(Failure::not_found(format!("no project `{project}`"))),
            // Roles order Admin < Developer < Viewer: lower is stronger.
            Some(role) if role <= needed => Ok(()),
            Some(role) => Err(Failure::new(
                FailureKind::Forbidden,
                format!("a {} of `{project}` may not do that", role.as_str()),
            )),
        }
    }

    async fn create_project(
        &self,
        token: &str,
        project: ProjectName,
    ) -> Result<ProjectInfo, Failure> {
        let caller = self.caller(token).await?;
        if caller.role == Role::Viewer {
            return Err(Failure::new(
                FailureKind::Forbidden,
                "viewers may not create projects",
            ));
        }
        let role = if caller.role == Role::Admin {
            Role::Admin
        } else {
            Role::Developer
        };
        self.store
            .create_project(&project, &caller.user, role)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| {
                Failure::new(
                    FailureKind::Conflict,
                    format!("project `{project}` already exists"),
                )
            })
    }

    async fn deploy(
        &self,
        token: &str,
        project: ProjectName,
        archive: bytes::Bytes,
    ) -> Result<Deployed, Failure> {
        let caller = self.caller(token).await?;
        self.require(&caller, &project, Role::Developer).await?;
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
        let manifest_json =
            serde_json::to_string(&manifest).map_err(|e| discard(Failure::internal(e)))?;
        let version = self
            .store
            .new_version(&project, &manifest.name, &manifest_json)
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
        tracing::info!(%project, %doee, version, user = %caller.user, "deployed; build queued");
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

    async fn routes(&self) -> Result<Vec<HttpRoute>, Failure> {
        let mut routes = Vec::new();
        for active in self.store.active(None).await.map_err(db_failure)? {
            let Ok(manifest) = serde_json::from_str::<Manifest>(&active.manifest) else {
                tracing::error!(project = %active.project, doee = %active.doee, "unreadable stored manifest");
                continue;
            };
            for trigger in manifest.http {
                routes.push(HttpRoute {
                    project: active.project.clone(),
                    route: trigger.route,
                    methods: trigger.methods,
                    doee: active.doee.clone(),
                    version: active.version,
                    priority: manifest.priority,
                    timeout_ms: manifest.resources.timeout_ms,
                });
            }
        }
        Ok(routes)
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
        Ok(VersionSpec {
            sha256,
            params: manifest.params,
            resources: manifest.resources,
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
