//! A project's MQTT side: dead letters and devices.

use crate::Gate;
use crate::api;
use crate::reply::{Reply, json, list, no_content};
use crate::request::Call;
use hyper::StatusCode;
use isms_http::HttpError;
use isms_ipc::DeviceName;
use isms_ipc::commserver;
use isms_ipc::resadmin::{CreateDevice, DeleteDevice, ListDevices};

impl Gate {
    pub async fn dead_letters(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let limit = call.query_number("limit")?.unwrap_or(100).min(1000) as u32;
        let letters = self
            .conn
            .call(&call.scope, commserver::DeadLetters { limit })
            .await?;
        Ok(list(letters, api::DeadLetterView::from))
    }

    /// Runs the dead letters named in the body again (all if none).
    pub async fn retry_dead_letters(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let ids = call.json_or_empty::<api::DeadLettersBody>().await?.ids;
        let retried = self
            .conn
            .call(&scope, commserver::RetryDeadLetters { ids })
            .await?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "retried": retried }),
        ))
    }

    /// Deletes the dead letters named in the body (all if none).
    pub async fn purge_dead_letters(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let ids = call.json_or_empty::<api::DeadLettersBody>().await?.ids;
        let purged = self
            .conn
            .call(&scope, commserver::PurgeDeadLetters { ids })
            .await?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "purged": purged }),
        ))
    }

    pub async fn list_devices(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let devices = self.conn.call(&call.scope, ListDevices {}).await?;
        Ok(list(devices, api::DeviceView::from))
    }

    /// A new device and its secret, shown this once.
    pub async fn create_device(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let scope = call.scope.clone();
        let body: api::DeviceBody = call.json().await?;
        let name =
            DeviceName::new(&body.name).map_err(|e| HttpError::bad_request(e.to_string()))?;
        let created = self.conn.call(&scope, CreateDevice { name }).await?;
        Ok(json(
            StatusCode::CREATED,
            &api::NewDeviceView::from(created),
        ))
    }

    pub async fn delete_device(&self, call: Call<'_>) -> Result<Reply, HttpError> {
        let name = DeviceName::new(call.param("device"))
            .map_err(|e| HttpError(StatusCode::NOT_FOUND, e.to_string()))?;
        self.conn.call(&call.scope, DeleteDevice { name }).await?;
        Ok(no_content())
    }
}
