//! Resadmin: users, projects, Doee sources, builds, versions and binaries.
//!
//! What it does, one module each: `config` (how it runs), `access`
//! (who may do what to which project), `accounts` (the initial admin,
//! logins, users, tokens), `projects` (creation within quotas, members,
//! deletion), `deploy` (the deploy pipeline), `doees` (deployed Doees:
//! rollback, deletion, what the Doer runs), `routes` and `topics`, MQTT
//! devices, `secrets` and `schedules` (which firing ran). What it keeps: `store` (the SQLite state and records).
//! What it builds with: `manifest` (`doee.toml` validation), `archive`
//! (bounded unpacking of uploads), `builder` (the build queue),
//! `sandbox` (the bubblewrap sandbox builds run in), `auth` (passwords
//! and tokens) and `sdk` (the bundled Doee SDK).

mod access;
mod accounts;
pub mod archive;
pub mod auth;
pub mod builder;
pub mod config;
mod deploy;
mod devices;
mod doees;
pub mod fetch;
pub mod manifest;
mod projects;
pub mod python;
mod routes;
pub mod sandbox;
mod schedules;
pub mod sdk;
mod secrets;
pub mod stats;
pub mod store;
mod topics;

pub use config::ResadminConfig;

use anyhow::Context as _;
use isms_ipc::resadmin::{self as protocol, Request};
use isms_ipc::{
    Connection, Delivery, DoeeName, Failure, FailureKind, Inbound, Incoming, ProjectName, Reply,
};
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

/// The capacity Resadmin registers with.
pub const CAPACITY: u32 = 64;

struct State {
    store: Store,
    config: ResadminConfig,
    builder: builder::Builder,
    conn: Connection,
    stats: stats::Stats,
    sealer: secrets::Sealer,
}

/// Resadmin with its state open, ready to join the kernel.
pub struct Prepared {
    store: Store,
    config: ResadminConfig,
    sdk_dir: PathBuf,
    sealer: secrets::Sealer,
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
    accounts::create_initial_admin(&store, &config).await?;
    let sdk_dir = sdk::install(&config.dir()).context("cannot install the Doee SDK")?;
    let sealer = secrets::open_sealer(&store, &config.secrets_key_file).await?;
    Ok(Prepared {
        store,
        config,
        sdk_dir,
        sealer,
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
            sealer,
        } = self;
        let builder = builder::Builder::start(
            store.clone(),
            conn.clone(),
            builder::BuildConfig {
                sdk_dir,
                target_dir: config.build_target_dir.clone(),
                cargo_home: config.cargo_home.clone(),
                fetch: config.fetch.clone(),
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
            sealer,
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
                Some(
                        Inbound::Event(_)
                        | Inbound::Claimed { .. }
                        | Inbound::Pull(_)
                        | Inbound::Cancel(_),
                    ) => {}
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
        let result = self.dispatch(envelope.project, request).await;
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
            Request::Logout(r) => self.logout(&r.token).await.map(R::Logout),
            Request::Authorize(r) => self
                .authorize(&r.token, r.need, project().ok())
                .await
                .map(R::Authorize),
            Request::ListUsers(_) => store.users().await.map_err(db_failure).map(R::ListUsers),
            Request::CreateUser(r) => self.create_user(r).await.map(R::CreateUser),
            Request::DeleteUser(r) => self.delete_user(&r.username).await.map(R::DeleteUser),
            Request::CreateToken(r) => self
                .create_token(&r.by, &r.name, r.days)
                .await
                .map(R::CreateToken),
            Request::ListTokens(r) => store
                .tokens(&r.by)
                .await
                .map_err(db_failure)
                .map(R::ListTokens),
            Request::RevokeToken(r) => self.revoke_token(&r.by, &r.id).await.map(R::RevokeToken),
            Request::CreateProject(r) => self
                .create_project(project()?, &r.by)
                .await
                .map(R::CreateProject),
            Request::ListProjects(r) => store
                .projects(r.member.as_ref())
                .await
                .map_err(db_failure)
                .map(R::ListProjects),
            Request::GetProject(_) => self.project(&project()?).await.map(R::GetProject),
            Request::DeleteProject(_) => {
                self.delete_project(project()?).await.map(R::DeleteProject)
            }
            Request::SetMember(r) => self
                .set_member(project()?, &r.username, r.role)
                .await
                .map(R::SetMember),
            Request::SetTopics(r) => self
                .set_topics(project()?, r.namespaces)
                .await
                .map(R::SetTopics),
            Request::SetQuotas(r) => self
                .set_quotas(project()?, r.quotas)
                .await
                .map(R::SetQuotas),
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
            Request::SetSecret(r) => self
                .set_secret(project()?, r.name, r.value)
                .await
                .map(R::SetSecret),
            Request::ListSecrets(_) => store
                .secrets(&project()?)
                .await
                .map_err(db_failure)
                .map(R::ListSecrets),
            Request::DeleteSecret(r) => self
                .delete_secret(project()?, r.name)
                .await
                .map(R::DeleteSecret),
            Request::ReadSecret(r) => self
                .read_secret(project()?, r.name)
                .await
                .map(R::ReadSecret),
            Request::Resolve(r) => self.resolve(&project()?, &r.doee).await.map(R::Resolve),
            Request::ClaimFiring(r) => self.claim_firing(&project()?, r).await.map(R::ClaimFiring),
            Request::FiringDone(r) => self.firing_done(&project()?, r).await.map(R::FiringDone),
        }
    }
}
