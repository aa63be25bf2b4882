//! Projects: creating one within a user's quota, its members, quotas and
//! deletion with everything in it (its databases first).

use crate::store::NewProject;
use crate::{State, db_failure, forbidden, no_project};
use isms_ipc::resadmin::{ProjectDetail, ProjectInfo, Quotas, Role};
use isms_ipc::{Event, Failure, FailureKind, ProjectName, Username};
use std::time::Duration;

impl State {
    /// Creates a project with its creator as admin, within the creator's
    /// quota of projects unless they are a platform admin.
    pub(crate) async fn create_project(
        &self,
        project: ProjectName,
        by: &Username,
    ) -> Result<ProjectInfo, Failure> {
        let creator = self.store.user(by.as_str()).await.map_err(db_failure)?;
        let limit = match creator.map(|u| u.role) {
            Some(Role::Admin) => None,
            _ => Some(self.config.max_projects_per_user),
        };
        match self
            .store
            .create_project(&project, by, limit)
            .await
            .map_err(db_failure)?
        {
            NewProject::Created(info) => Ok(info),
            NewProject::Exists => Err(Failure::new(
                FailureKind::Conflict,
                format!("project `{project}` already exists"),
            )),
            NewProject::OverQuota(limit) => Err(forbidden(format!(
                "quota exceeded: `{by}` has created {limit} projects, the most a user who \
                 is not a platform admin may (resadmin.quota_max_projects); delete one, \
                 or ask an admin"
            ))),
        }
    }

    pub(crate) async fn project(&self, project: &ProjectName) -> Result<ProjectDetail, Failure> {
        self.store
            .project(project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| no_project(project))
    }

    pub(crate) async fn set_member(
        &self,
        project: ProjectName,
        username: &Username,
        role: Option<Role>,
    ) -> Result<(), Failure> {
        if self
            .store
            .set_member(&project, username, role)
            .await
            .map_err(db_failure)?
        {
            Ok(())
        } else if role.is_some() {
            Err(Failure::not_found(format!("no user `{username}`")))
        } else {
            Err(Failure::not_found(format!(
                "`{username}` is not a member of `{project}`"
            )))
        }
    }

    /// Sets a project's quotas and tells the services that enforce them.
    pub(crate) async fn set_quotas(
        &self,
        project: ProjectName,
        quotas: Quotas,
    ) -> Result<(), Failure> {
        if !(1..=10_000).contains(&quotas.cpu_weight) {
            return Err(Failure::invalid(format!(
                "cpu_weight must be 1 to 10000 (100 is every project's default), not {}",
                quotas.cpu_weight
            )));
        }
        self.store
            .set_quotas(&project, &quotas)
            .await
            .map_err(db_failure)?;
        self.conn.emit(Event::QuotasChanged { project, quotas });
        Ok(())
    }

    pub(crate) async fn delete_project(&self, project: ProjectName) -> Result<(), Failure> {
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
}
