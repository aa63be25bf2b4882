//! A project's secrets: set, listed by name, deleted. No call answers a
//! value: Doees read them through the Doer alone.

use crate::Gate;
use crate::api;
use crate::reply::{Reply, list, no_content};
use crate::request::Call;
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::resadmin::{DeleteSecret, ListSecrets, SetSecret};
use isms_ipc::{SecretName, SecretValue};

impl Gate {
    pub async fn list_secrets(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let secrets = self.conn.call(&call.scope, ListSecrets {}).await?;
        Ok(list(secrets, api::SecretView::from))
    }

    pub async fn set_secret(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let name = secret_name(&call)?;
        let body: api::SecretBody = call.json().await?;
        let value = SecretValue(body.value);
        self.conn.call(&scope, SetSecret { name, value }).await?;
        Ok(no_content())
    }

    pub async fn delete_secret(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let name = secret_name(&call)?;
        self.conn.call(&call.scope, DeleteSecret { name }).await?;
        Ok(no_content())
    }
}

fn secret_name(call: &Call<'_>) -> Result<SecretName, HttpError> {
    SecretName::new(call.param("secret"))
        .map_err(|e| HttpError(StatusCode::BAD_REQUEST, e.to_string()))
}
