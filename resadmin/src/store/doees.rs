//! Doees and their versions: each version's manifest, build and binary,
//! and which version is active (what the routes are made from).

use super::{Store, StoreResult, decode_err};
use crate::manifest::Manifest;
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{BuildState, DoeeInfo, Triggers, VersionInfo};
use isms_ipc::{DoeeName, ProjectName, Username};
use sqlx::Row;
use std::str::FromStr;

/// What is needed to run a version.
pub struct VersionRow {
    /// The validated manifest, as JSON.
    pub manifest: String,
    /// Its build.
    pub build: BuildState,
    /// Its binary, once built.
    pub sha256: Option<String>,
}

/// An active version, for routing.
pub struct ActiveRow {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The active version.
    pub version: u32,
    /// Its manifest, as JSON.
    pub manifest: String,
}

fn parse_build(text: &str) -> BuildState {
    match text {
        "queued" => BuildState::Queued,
        "building" => BuildState::Building,
        "succeeded" => BuildState::Succeeded,
        _ => BuildState::Failed,
    }
}

impl Store {
    /// Records a new version of a Doee (creating the Doee on its first
    /// deploy) and returns its number.
    pub async fn new_version(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        manifest: &str,
        by: &Username,
    ) -> StoreResult<u32> {
        let now = now_ms() as i64;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT OR IGNORE INTO doees (project, name, created_ms) VALUES (?, ?, ?)")
            .bind(project.as_str())
            .bind(doee.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM versions WHERE project = ? AND doee = ?")
                .bind(project.as_str())
                .bind(doee.as_str())
                .fetch_one(&mut *tx)
                .await?;
        let version = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO versions (project, doee, version, build, manifest, created_ms, deployed_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(version)
        .bind(BuildState::Queued.as_str())
        .bind(manifest)
        .bind(now)
        .bind(by.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version as u32)
    }

    /// Updates a version's build state and log (and binary, once built).
    pub async fn set_build(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
        state: BuildState,
        log: &str,
        sha256: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE versions SET build = ?, build_log = ?, sha256 = coalesce(?, sha256) \
             WHERE project = ? AND doee = ? AND version = ?",
        )
        .bind(state.as_str())
        .bind(log)
        .bind(sha256)
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(version as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes a version the active one.
    pub async fn activate(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE doees SET active_version = ? WHERE project = ? AND name = ?")
            .bind(version as i64)
            .bind(project.as_str())
            .bind(doee.as_str())
            .execute(&self.pool)
            .await?;
        let manifest: Option<String> = sqlx::query_scalar(
            "SELECT manifest FROM versions WHERE project = ? AND doee = ? AND version = ?",
        )
        .bind(project.as_str())
        .bind(doee.as_str())
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        let Ok(manifest) =
            serde_json::from_str::<Manifest>(manifest.as_deref().unwrap_or_default())
        else {
            return Err(decode_err("manifest"));
        };
        let timings: Vec<_> = manifest.schedule.into_iter().map(|s| s.when).collect();
        self.keep_schedules(project, doee, &timings).await
    }

    /// Marks builds that were interrupted (the service stopped mid-build) as failed.
    pub async fn fail_interrupted_builds(&self) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE versions SET build = 'failed', build_log = build_log || '\ninterrupted: Resadmin stopped during the build; deploy again' \
             WHERE build IN ('queued', 'building')",
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// A project's Doees with their versions; build logs only with `logs`.
    pub async fn doees(
        &self,
        project: &ProjectName,
        only: Option<&DoeeName>,
        logs: bool,
    ) -> StoreResult<Vec<DoeeInfo>> {
        let heads = sqlx::query(
            "SELECT name, active_version FROM doees WHERE project = ?1 AND (?2 IS NULL OR name = ?2) \
             ORDER BY name",
        )
        .bind(project.as_str())
        .bind(only.map(DoeeName::as_str))
        .fetch_all(&self.pool)
        .await?;
        let mut doees = Vec::with_capacity(heads.len());
        for head in heads {
            let name =
                DoeeName::new(head.get::<String, _>(0)).map_err(|_| decode_err("Doee name"))?;
            let active = head.get::<Option<i64>, _>(1).map(|v| v as u32);
            let rows = sqlx::query(
                "SELECT version, build, CASE WHEN ?3 THEN build_log END, created_ms, deployed_by, sha256, manifest \
                 FROM versions WHERE project = ?1 AND doee = ?2 ORDER BY version",
            )
            .bind(project.as_str())
            .bind(name.as_str())
            .bind(logs)
            .fetch_all(&self.pool)
            .await?;
            let mut language = String::new();
            let mut triggers = Triggers::default();
            let mut placement = Vec::new();
            let mut versions = Vec::with_capacity(rows.len());
            for row in rows {
                let version = row.get::<i64, _>(0) as u32;
                // The active version's triggers, else the latest's.
                if active.is_none() || active == Some(version) {
                    let manifest: Manifest = serde_json::from_str(row.get::<&str, _>(6))
                        .map_err(|_| decode_err("manifest"))?;
                    language = manifest.language.as_str().to_string();
                    let states = self.schedule_states(project, &name).await?;
                    triggers = Triggers {
                        http: manifest.http,
                        mqtt: manifest.mqtt,
                        schedule: crate::schedules::describe(manifest.schedule, &states, now_ms()),
                    };
                    placement = manifest.placement;
                }
                versions.push(VersionInfo {
                    version,
                    build: parse_build(row.get::<&str, _>(1)),
                    build_log: row.get(2),
                    created_ms: row.get::<i64, _>(3) as u64,
                    deployed_by: row.get(4),
                    sha256: row.get(5),
                });
            }
            doees.push(DoeeInfo {
                name,
                language,
                active_version: active,
                triggers,
                placement,
                versions,
            });
        }
        Ok(doees)
    }

    /// How many Doees a project has, and the Workers its active versions
    /// may use, leaving out one Doee.
    pub async fn usage(&self, project: &ProjectName, except: &DoeeName) -> StoreResult<(u32, u32)> {
        let mut doees = 0;
        let mut workers = 0;
        let rows = sqlx::query(
            "SELECT d.name, v.manifest FROM doees d LEFT JOIN versions v ON v.project = d.project \
             AND v.doee = d.name AND v.version = d.active_version WHERE d.project = ?",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            if row.get::<&str, _>(0) == except.as_str() {
                continue;
            }
            doees += 1;
            if let Some(manifest) = row.get::<Option<&str>, _>(1) {
                let manifest: Manifest =
                    serde_json::from_str(manifest).map_err(|_| decode_err("manifest"))?;
                workers += manifest.resources.concurrency;
            }
        }
        Ok((doees, workers))
    }

    /// Removes a Doee and its versions; `false` if it did not exist.
    pub async fn delete_doee(&self, project: &ProjectName, doee: &DoeeName) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM doees WHERE project = ? AND name = ?")
            .bind(project.as_str())
            .bind(doee.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One version's manifest, build and binary.
    pub async fn version(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
        version: u32,
    ) -> StoreResult<Option<VersionRow>> {
        let row = sqlx::query("SELECT manifest, build, sha256 FROM versions WHERE project = ? AND doee = ? AND version = ?")
            .bind(project.as_str())
            .bind(doee.as_str())
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| VersionRow {
            manifest: row.get(0),
            build: parse_build(row.get::<&str, _>(1)),
            sha256: row.get(2),
        }))
    }

    /// Every Doee's active version, optionally within one project.
    pub async fn active(&self, project: Option<&ProjectName>) -> StoreResult<Vec<ActiveRow>> {
        self.active_where(project, None).await
    }

    /// The active version of one Doee, if it has one.
    pub async fn active_doee(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
    ) -> StoreResult<Option<ActiveRow>> {
        Ok(self.active_where(Some(project), Some(doee)).await?.pop())
    }

    async fn active_where(
        &self,
        project: Option<&ProjectName>,
        doee: Option<&DoeeName>,
    ) -> StoreResult<Vec<ActiveRow>> {
        let rows = sqlx::query(
            "SELECT d.project, d.name, d.active_version, v.manifest FROM doees d \
             JOIN versions v ON v.project = d.project AND v.doee = d.name AND v.version = d.active_version \
             WHERE (?1 IS NULL OR d.project = ?1) AND (?2 IS NULL OR d.name = ?2) \
             ORDER BY d.project, d.name",
        )
        .bind(project.map(ProjectName::as_str))
        .bind(doee.map(DoeeName::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ActiveRow {
                    project: ProjectName::from_str(row.get::<&str, _>(0))
                        .map_err(|_| decode_err("project name"))?,
                    doee: DoeeName::from_str(row.get::<&str, _>(1))
                        .map_err(|_| decode_err("Doee name"))?,
                    version: row.get::<i64, _>(2) as u32,
                    manifest: row.get(3),
                })
            })
            .collect()
    }
}
