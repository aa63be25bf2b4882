//! Sessions and tokens: log in, log out, a user's API tokens.

use crate::Gate;
use crate::api;
use crate::reply::{Reply, json, list, no_content};
use crate::request::Call;
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::resadmin::{CreateToken, ListTokens, Login, Logout, RevokeToken};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    #[serde(default = "default_token_days")]
    days: u32,
}

fn default_token_days() -> u32 {
    90
}

impl Gate {
    pub async fn login(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: LoginBody = call.json().await?;
        let login = Login {
            username: body.username,
            password: body.password,
        };
        let session = self.conn.call(&scope, login).await?;
        Ok(json(StatusCode::OK, &api::LoginView::from(session)))
    }

    pub async fn logout(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let token = call.token;
        self.conn.call(&call.scope, Logout { token }).await?;
        Ok(no_content())
    }

    pub async fn list_tokens(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let tokens = self
            .conn
            .call(&call.scope, ListTokens { by: call.by()? })
            .await?;
        Ok(list(tokens, api::TokenView::from))
    }

    pub async fn create_token(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let (scope, by) = (call.scope.clone(), call.by()?);
        let body: TokenBody = call.json().await?;
        let create = CreateToken {
            by,
            name: body.name,
            days: body.days,
        };
        let created = self.conn.call(&scope, create).await?;
        let mut view = api::TokenView::from(created.info);
        view.token = Some(created.token);
        Ok(json(StatusCode::CREATED, &view))
    }

    pub async fn revoke_token(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let id = call.param("id").to_string();
        let by = call.by()?;
        self.conn.call(&call.scope, RevokeToken { by, id }).await?;
        Ok(no_content())
    }
}
