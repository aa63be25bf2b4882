//! A project's Doees: deploy, list, look at, delete, roll back.

use crate::Gate;
use crate::api;
use crate::reply::{Reply, json, list, no_content};
use crate::request::{Call, doee};
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::resadmin::{DeleteDoee, Deploy, GetDoee, ListDoees, Rollback};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u32,
}

impl Gate {
    pub async fn list_doees(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let doees = self.conn.call(&call.scope, ListDoees {}).await?;
        Ok(list(doees, api::DoeeView::from))
    }

    /// The body is the Doee's directory as `.tar.gz`; the build runs after
    /// the answer (202).
    pub async fn deploy(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let (scope, by) = (call.scope.clone(), call.by()?);
        let archive = call.body(self.config.max_upload_bytes).await?;
        if archive.is_empty() {
            return Err(HttpError::bad_request(
                "the body must be the Doee directory as .tar.gz",
            ));
        }
        let deployed = self.conn.call(&scope, Deploy { by, archive }).await?;
        Ok(json(
            StatusCode::ACCEPTED,
            &api::DeployedView::from(deployed),
        ))
    }

    pub async fn get_doee(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let doee = doee(call.param("doee"))?;
        let info = self.conn.call(&call.scope, GetDoee { doee }).await?;
        Ok(json(StatusCode::OK, &api::DoeeView::from(info)))
    }

    pub async fn delete_doee(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let doee = doee(call.param("doee"))?;
        self.conn.call(&call.scope, DeleteDoee { doee }).await?;
        Ok(no_content())
    }

    pub async fn rollback(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let (doee, scope) = (doee(call.param("doee"))?, call.scope.clone());
        let body: RollbackBody = call.json().await?;
        let version = body.version;
        let info = self.conn.call(&scope, Rollback { doee, version }).await?;
        Ok(json(StatusCode::OK, &api::DoeeView::from(info)))
    }
}
