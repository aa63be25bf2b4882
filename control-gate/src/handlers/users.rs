//! The platform's users (platform admins only).

use crate::Gate;
use crate::api;
use crate::reply::{Reply, json, list, no_content};
use crate::request::{Call, role, username, username_in_path};
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::resadmin::{CreateUser, DeleteUser, ListUsers};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    username: String,
    password: String,
    role: String,
}

impl Gate {
    pub async fn list_users(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let users = self.conn.call(&call.scope, ListUsers {}).await?;
        Ok(list(users, api::UserView::from))
    }

    pub async fn create_user(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: UserBody = call.json().await?;
        let create = CreateUser {
            username: username(&body.username)?,
            password: body.password,
            role: role(&body.role)?,
        };
        let user = self.conn.call(&scope, create).await?;
        Ok(json(StatusCode::CREATED, &api::UserView::from(user)))
    }

    pub async fn delete_user(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let username = username_in_path(call.param("username"))?;
        self.conn.call(&call.scope, DeleteUser { username }).await?;
        Ok(no_content())
    }
}
