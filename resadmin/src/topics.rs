//! Topic namespaces: a project's own `<project>/#` and those an admin
//! granted, and the check that keeps MQTT triggers inside them.

use crate::manifest::Manifest;
use crate::{State, db_failure, forbidden, no_project};
use isms_ipc::topic::{self, Namespace};
use isms_ipc::{Event, Failure, ProjectName};

impl State {
    /// Replaces the namespaces granted to a project; its triggers are
    /// checked against them again at every delivery.
    pub(crate) async fn set_topics(
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

    /// Refuses MQTT triggers outside the project's topic namespaces.
    pub(crate) async fn check_topics(
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
}
