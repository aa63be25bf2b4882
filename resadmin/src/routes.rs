//! Routes: the table of active versions' HTTP, MQTT and schedule triggers the
//! CommServer and the Control Gate load, and the check that keeps two Doees
//! of a project from claiming one HTTP route.

use crate::manifest::Manifest;
use crate::{State, db_failure};
use isms_ipc::resadmin::{HttpRoute, MqttRoute, RouteTable, ScheduleRoute, Target};
use isms_ipc::{Failure, FailureKind, ProjectName};

impl State {
    pub(crate) async fn routes(&self) -> Result<RouteTable, Failure> {
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
                placement: manifest.placement.clone(),
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
            for trigger in manifest.schedule {
                table.schedules.push(ScheduleRoute {
                    trigger,
                    target: target.clone(),
                });
            }
        }
        Ok(table)
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
