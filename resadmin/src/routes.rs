//! Routes: the table of active versions' HTTP, MQTT and schedule triggers the
//! CommServer and the Control Gate load, and the check that keeps two Doees
//! of a project from claiming one HTTP route.

use crate::manifest::Manifest;
use crate::store::ActiveRow;
use crate::{State, db_failure};
use isms_ipc::resadmin::{HttpRoute, MqttRoute, RouteTable, ScheduleRoute, Stage, Target};
use isms_ipc::{DoeeName, Failure, FailureKind, ProjectName};
use std::collections::HashMap;

/// What invoking an active version takes, from its manifest.
fn target_of(active: &ActiveRow, manifest: &Manifest) -> Target {
    Target {
        project: active.project.clone(),
        doee: active.doee.clone(),
        version: active.version,
        priority: manifest.priority,
        timeout_ms: manifest.resources.timeout_ms,
        placement: manifest.placement.clone(),
    }
}

impl State {
    pub(crate) async fn routes(&self) -> Result<RouteTable, Failure> {
        let mut table = RouteTable {
            topics: self.store.all_topics().await.map_err(db_failure)?,
            ..RouteTable::default()
        };
        let mut actives = Vec::new();
        for active in self.store.active(None).await.map_err(db_failure)? {
            let Ok(manifest) = serde_json::from_str::<Manifest>(&active.manifest) else {
                tracing::error!(project = %active.project, doee = %active.doee, "unreadable stored manifest");
                continue;
            };
            actives.push((target_of(&active, &manifest), manifest));
        }
        // Pipelines name Doees of their project: their active versions.
        let targets: HashMap<(&ProjectName, &DoeeName), &Target> = actives
            .iter()
            .map(|(target, _)| ((&target.project, &target.doee), target))
            .collect();
        let stages = |project: &ProjectName, names: &[DoeeName]| -> Vec<Stage> {
            names
                .iter()
                .map(|doee| Stage {
                    doee: doee.clone(),
                    target: targets.get(&(project, doee)).map(|t| (*t).clone()),
                })
                .collect()
        };
        for (target, manifest) in &actives {
            for trigger in &manifest.http {
                table.http.push(HttpRoute {
                    route: trigger.route.clone(),
                    methods: trigger.methods.clone(),
                    target: target.clone(),
                    pipeline: stages(&target.project, &trigger.pipeline),
                });
            }
            for trigger in &manifest.mqtt {
                table.mqtt.push(MqttRoute {
                    filter: trigger.topic.clone(),
                    reply_topic: trigger.reply_topic.clone(),
                    target: target.clone(),
                    pipeline: stages(&target.project, &trigger.pipeline),
                });
            }
            for trigger in &manifest.schedule {
                table.schedules.push(ScheduleRoute {
                    trigger: trigger.clone(),
                    target: target.clone(),
                });
            }
        }
        Ok(table)
    }

    /// The active version of a Doee of `project`, for a Doee that calls it.
    pub(crate) async fn resolve(
        &self,
        project: &ProjectName,
        doee: &DoeeName,
    ) -> Result<Target, Failure> {
        let active = self
            .store
            .active_doee(project, doee)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| {
                Failure::not_found(format!(
                    "project `{project}` has no Doee `{doee}` with a built version"
                ))
            })?;
        let manifest =
            serde_json::from_str::<Manifest>(&active.manifest).map_err(Failure::internal)?;
        Ok(target_of(&active, &manifest))
    }

    /// Refuses a manifest whose routes another Doee of the project serves.
    pub(crate) async fn check_routes(
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
}
