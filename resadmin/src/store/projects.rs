//! Projects: their members and roles, quotas and granted topic namespaces.

use super::{Store, StoreResult, decode_err, parse_role};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{Member, ProjectDetail, ProjectInfo, ProjectTopics, Quotas, Role};
use isms_ipc::topic::Namespace;
use isms_ipc::{ProjectName, Username};
use sqlx::Row;

/// What creating a project did.
pub enum NewProject {
    /// It exists now, with its creator as its admin.
    Created(ProjectInfo),
    /// A project of that name exists already.
    Exists,
    /// The creator has made the most projects they may (this many).
    OverQuota(u32),
}

impl Store {
    /// Creates a project with `creator` as its first member; `None` if the
    /// name is taken.
    pub async fn create_project(
        &self,
        name: &ProjectName,
        creator: &Username,
        limit: Option<u32>,
    ) -> StoreResult<NewProject> {
        let created_ms = now_ms();
        let mut tx = self.pool.begin().await?;
        // One statement, so two creations at once cannot both pass the quota.
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO projects (name, created_ms, created_by) \
             SELECT ?1, ?2, ?3 WHERE (SELECT count(*) FROM projects WHERE created_by = ?3) < ?4",
        )
        .bind(name.as_str())
        .bind(created_ms as i64)
        .bind(creator.as_str())
        .bind(limit.map_or(i64::MAX, i64::from))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM projects WHERE name = ?")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Ok(match (exists, limit) {
                (false, Some(limit)) => NewProject::OverQuota(limit),
                _ => NewProject::Exists,
            });
        }
        sqlx::query("INSERT INTO members (project, user, role) VALUES (?, ?, ?)")
            .bind(name.as_str())
            .bind(creator.as_str())
            .bind(Role::Admin.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(NewProject::Created(ProjectInfo {
            name: name.clone(),
            created_ms,
            doees: 0,
        }))
    }

    /// Projects: all of them, or those `user` is a member of.
    pub async fn projects(&self, member: Option<&Username>) -> StoreResult<Vec<ProjectInfo>> {
        let rows = sqlx::query(
            "SELECT p.name, p.created_ms, (SELECT count(*) FROM doees d WHERE d.project = p.name) \
             FROM projects p WHERE ?1 IS NULL OR EXISTS \
             (SELECT 1 FROM members m WHERE m.project = p.name AND m.user = ?1) ORDER BY p.name",
        )
        .bind(member.map(Username::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ProjectInfo {
                    name: ProjectName::new(row.get::<String, _>(0))
                        .map_err(|_| decode_err("project name"))?,
                    created_ms: row.get::<i64, _>(1) as u64,
                    doees: row.get::<i64, _>(2) as u32,
                })
            })
            .collect()
    }

    /// A project with its members and quotas (`defaults` where none are set).
    pub async fn project(
        &self,
        name: &ProjectName,
        defaults: Quotas,
    ) -> StoreResult<Option<ProjectDetail>> {
        let row = sqlx::query(
            "SELECT p.created_ms, (SELECT count(*) FROM doees d WHERE d.project = p.name), p.quotas, p.topics \
             FROM projects p WHERE p.name = ?",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let quotas = match row.get::<Option<&str>, _>(2) {
            Some(json) => serde_json::from_str(json).map_err(|_| decode_err("quotas"))?,
            None => defaults,
        };
        let members = sqlx::query("SELECT user, role FROM members WHERE project = ? ORDER BY user")
            .bind(name.as_str())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| {
                Ok(Member {
                    user: Username::new(row.get::<String, _>(0))
                        .map_err(|_| decode_err("user name"))?,
                    role: parse_role(row.get::<&str, _>(1))?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(ProjectDetail {
            info: ProjectInfo {
                name: name.clone(),
                created_ms: row.get::<i64, _>(0) as u64,
                doees: row.get::<i64, _>(1) as u32,
            },
            members,
            quotas,
            topics: namespaces(name, row.get::<Option<&str>, _>(3))?,
        }))
    }

    /// Every project's topic namespaces, `<project>/#` first.
    pub async fn all_topics(&self) -> StoreResult<Vec<ProjectTopics>> {
        let rows = sqlx::query("SELECT name, topics FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let project = ProjectName::new(row.get::<String, _>(0))
                    .map_err(|_| decode_err("project name"))?;
                let namespaces = namespaces(&project, row.get::<Option<&str>, _>(1))?;
                Ok(ProjectTopics {
                    project,
                    namespaces,
                })
            })
            .collect()
    }

    /// Sets the namespaces granted to a project beyond `<project>/#`.
    pub async fn set_topics(&self, name: &ProjectName, granted: &[Namespace]) -> StoreResult<()> {
        let granted: Vec<&str> = granted.iter().map(Namespace::as_str).collect();
        let json = serde_json::to_string(&granted).map_err(|_| decode_err("topics"))?;
        sqlx::query("UPDATE projects SET topics = ? WHERE name = ?")
            .bind(json)
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets a project's quotas.
    pub async fn set_quotas(&self, name: &ProjectName, quotas: &Quotas) -> StoreResult<()> {
        let json = serde_json::to_string(quotas).map_err(|_| decode_err("quotas"))?;
        sqlx::query("UPDATE projects SET quotas = ? WHERE name = ?")
            .bind(json)
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes a project with everything in it; `false` if it did not exist.
    /// Its records go first, from their file: should the project's row
    /// then fail to go, it stays with fewer records, never the reverse
    /// (records of a deleted project shown to the next of its name). They
    /// are swept once more after the row: a batch of records in flight
    /// (from the Doer, the CommServer, a build) may land in between.
    pub async fn delete_project(&self, name: &ProjectName) -> StoreResult<bool> {
        self.records.delete_project(name).await?;
        let done = sqlx::query("DELETE FROM projects WHERE name = ?")
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        self.records.delete_project(name).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds, changes or (with `None`) removes a member; `false` if the user
    /// does not exist (or, removing, was not a member).
    pub async fn set_member(
        &self,
        project: &ProjectName,
        user: &Username,
        role: Option<Role>,
    ) -> StoreResult<bool> {
        let done = match role {
            Some(role) => sqlx::query(
                "INSERT INTO members (project, user, role) SELECT ?1, name, ?3 FROM users WHERE name = ?2 \
                 ON CONFLICT (project, user) DO UPDATE SET role = excluded.role",
            )
            .bind(project.as_str())
            .bind(user.as_str())
            .bind(role.as_str())
            .execute(&self.pool)
            .await?,
            None => sqlx::query("DELETE FROM members WHERE project = ? AND user = ?")
                .bind(project.as_str())
                .bind(user.as_str())
                .execute(&self.pool)
                .await?,
        };
        Ok(done.rows_affected() > 0)
    }

    /// Whether a project exists.
    pub async fn project_exists(&self, name: &ProjectName) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// A user's role in a project, if they are a member.
    pub async fn member_role(
        &self,
        project: &ProjectName,
        user: &Username,
    ) -> StoreResult<Option<Role>> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM members WHERE project = ? AND user = ?")
                .bind(project.as_str())
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        role.as_deref().map(parse_role).transpose()
    }
}

/// A project's namespaces: its own, then the granted ones stored as JSON.
fn namespaces(project: &ProjectName, granted: Option<&str>) -> StoreResult<Vec<String>> {
    let mut all = vec![Namespace::of_project(project).as_str().to_string()];
    if let Some(json) = granted {
        let granted: Vec<String> = serde_json::from_str(json).map_err(|_| decode_err("topics"))?;
        all.extend(granted);
    }
    Ok(all)
}
