//! DBriver: each project's SQL database (SQLite files or PostgreSQL schemas)
//! and document store (embedded or MongoDB).
//!
//! Every request acts on the project its envelope names. The kernel refuses
//! a DBriver request without one, the Doer sets it from the Worker a call
//! came from and the Control Gate from the authorized path: nothing a Doee
//! or a user sends can name another project. Inside DBriver, each project
//! gets its own connections (its own file, or its own PostgreSQL role that
//! owns one schema and nothing else), so a statement cannot reach another
//! project's data whatever it says.

pub mod docs;
pub mod sql;

use isms_ipc::dbriver::{self as protocol, Request};
use isms_ipc::{Connection, Delivery, Failure, Inbound, Incoming, Reply};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Requests DBriver handles at once.
pub const CAPACITY: u32 = 256;

/// DBriver's configuration.
#[derive(Clone, Debug)]
pub struct DBriverConfig {
    /// `<data-dir>/dbriver`: SQLite files, the embedded document store, secrets.
    pub dir: PathBuf,
    /// Where SQL databases live.
    pub sql: sql::SqlBackend,
    /// Limits on SQL.
    pub sql_limits: sql::SqlLimits,
    /// Where documents live.
    pub docs: docs::DocBackend,
    /// Limits on documents.
    pub doc_limits: docs::DocLimits,
}

impl DBriverConfig {
    /// The defaults: SQLite files and the embedded store under `data_dir`.
    pub fn new(data_dir: &Path) -> DBriverConfig {
        let dir = data_dir.join("dbriver");
        DBriverConfig {
            sql: sql::SqlBackend::Sqlite {
                dir: dir.join("sql"),
            },
            sql_limits: sql::SqlLimits::default(),
            docs: docs::DocBackend::Embedded {
                dir: dir.join("docs"),
            },
            doc_limits: docs::DocLimits::default(),
            dir,
        }
    }
}

/// DBriver with its databases open, ready to join the kernel.
pub struct Prepared {
    sql: sql::Sql,
    docs: docs::DocStore,
}

/// Opens (or connects to) the databases.
pub async fn prepare(config: DBriverConfig) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&config.dir)?;
    let sql = sql::Sql::open(&config.sql, config.sql_limits.clone(), &config.dir).await?;
    let docs = docs::DocStore::open(config.docs.clone(), config.doc_limits.clone()).await?;
    tracing::info!(sql = %sql.describe(), documents = %docs.describe(), "DBriver ready");
    Ok(Prepared { sql, docs })
}

impl Prepared {
    /// Serves until `shutdown` or until the kernel is gone.
    pub async fn serve(
        self,
        conn: Connection,
        mut incoming: Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let state = Arc::new(self);
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
                    None => {
                        drop(conn);
                        anyhow::bail!("lost the kernel")
                    }
                },
            }
        }
    }

    async fn handle(&self, delivery: Delivery) {
        let project = delivery.project();
        let Delivery {
            request, responder, ..
        } = delivery;
        let isms_ipc::Request::DBriver(request) = request else {
            responder.reply(Err(Failure::invalid("not a DBriver request")));
            return;
        };
        let result = match project {
            Ok(project) => self.dispatch(&project, request).await,
            Err(failure) => Err(failure),
        };
        responder.reply(result.map(Reply::DBriver));
    }

    async fn dispatch(
        &self,
        project: &isms_ipc::ProjectName,
        request: Request,
    ) -> Result<protocol::Reply, Failure> {
        match request {
            Request::Sql(protocol::Sql { query, params }) => self
                .sql
                .run(project, &query, &params)
                .await
                .map(protocol::Reply::Sql),
            Request::Doc(protocol::Doc {
                op,
                collection,
                json,
            }) => self
                .docs
                .run(project, op, &collection, &json)
                .await
                .map(protocol::Reply::Doc),
            Request::Collections(protocol::Collections {}) => self
                .docs
                .collections(project)
                .await
                .map(protocol::Reply::Collections),
            Request::DropProject(protocol::DropProject {}) => {
                self.sql.drop_project(project).await?;
                self.docs.drop_project(project).await?;
                tracing::info!(%project, "dropped the project's databases");
                Ok(protocol::Reply::DropProject(()))
            }
        }
    }
}
