//! A project's Doees once deployed: reading them, rolling back, deleting,
//! and handing the Doer a version's spec and binary.

use crate::manifest::Manifest;
use crate::{State, db_failure, no_doee};
use isms_ipc::resadmin::{self as protocol, BuildState, DoeeInfo, VersionSpec};
use isms_ipc::{DoeeName, Event, Failure, FailureKind, ProjectName};

impl State {
    pub(crate) async fn doee(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
    ) -> Result<DoeeInfo, Failure> {
        self.store
            .doees(project, Some(doee), true)
            .await
            .map_err(db_failure)?
            .pop()
            .ok_or_else(|| no_doee(project, doee))
    }

    pub(crate) async fn rollback(
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

    pub(crate) async fn delete_doee(
        &self,
        project: ProjectName,
        doee: DoeeName,
    ) -> Result<(), Failure> {
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

    pub(crate) async fn version_spec(
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

    pub(crate) async fn binary(&self, sha256: &str) -> Result<bytes::Bytes, Failure> {
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
