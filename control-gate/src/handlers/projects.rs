//! Projects, their members, quotas and MQTT topic namespaces.

use crate::Gate;
use crate::api;
use crate::reply::{Reply, json, list, no_content};
use crate::request::{Call, role, username, username_in_path};
use crate::router::API_TIMEOUT;
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::ProjectName;
use isms_ipc::connection::Scope;
use isms_ipc::resadmin::{
    CreateProject, DeleteProject, GetProject, ListProjects, Member, Quotas, Role, SetMember,
    SetQuotas, SetTopics,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectBody {
    name: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    username: String,
    role: String,
}

impl Gate {
    /// Every project for a platform admin; a user's own projects otherwise.
    pub async fn list_projects(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let member = call
            .caller
            .as_ref()
            .filter(|c| c.role != Role::Admin)
            .map(|c| c.user.clone());
        let projects = self.conn.call(&call.scope, ListProjects { member }).await?;
        Ok(list(projects, api::ProjectView::from))
    }

    pub async fn create_project(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let by = call.by()?;
        let body: ProjectBody = call.json().await?;
        let name = ProjectName::new(body.name)
            .map_err(|e| HttpError::bad_request(format!("`name`: {e}")))?;
        let scope = Scope::project(name, API_TIMEOUT);
        let created = self.conn.call(&scope, CreateProject { by }).await?;
        Ok(json(StatusCode::CREATED, &api::ProjectView::from(created)))
    }

    pub async fn get_project(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let detail = self.conn.call(&call.scope, GetProject {}).await?;
        Ok(json(StatusCode::OK, &api::ProjectDetailView::from(detail)))
    }

    pub async fn delete_project(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        self.conn.call(&call.scope, DeleteProject {}).await?;
        Ok(no_content())
    }

    pub async fn list_members(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let detail = self.conn.call(&call.scope, GetProject {}).await?;
        Ok(list(detail.members, api::MemberView::from))
    }

    pub async fn add_member(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: MemberBody = call.json().await?;
        let (username, role) = (username(&body.username)?, role(&body.role)?);
        let set = SetMember {
            username: username.clone(),
            role: Some(role),
        };
        self.conn.call(&scope, set).await?;
        let member = Member {
            user: username,
            role,
        };
        Ok(json(StatusCode::OK, &api::MemberView::from(member)))
    }

    pub async fn remove_member(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let username = username_in_path(call.param("username"))?;
        let set = SetMember {
            username,
            role: None,
        };
        self.conn.call(&call.scope, set).await?;
        Ok(no_content())
    }

    pub async fn set_quotas(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: api::QuotasView = call.json().await?;
        let quotas = Quotas {
            max_doees: body.max_doees,
            max_workers: body.max_workers,
            max_upload_bytes: body.max_upload_bytes,
            cpu_weight: body.cpu_weight,
            max_dependencies_bytes: body.max_dependencies_bytes,
        };
        self.conn.call(&scope, SetQuotas { quotas }).await?;
        Ok(json(StatusCode::OK, &body))
    }

    /// Sets the namespaces granted, and answers all of them as now stored.
    pub async fn set_topics(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: api::TopicsView = call.json().await?;
        let namespaces = body.namespaces;
        self.conn.call(&scope, SetTopics { namespaces }).await?;
        let detail = self.conn.call(&scope, GetProject {}).await?;
        let namespaces = detail.topics;
        Ok(json(StatusCode::OK, &api::TopicsView { namespaces }))
    }
}
