//! MQTT devices: credentials the platform manages per project. A device's
//! username is `<project>/<device>`, its password a random secret shown
//! once and stored only as its sha256 (as API tokens are). The embedded
//! broker asks [`DeviceLogin`](isms_ipc::resadmin::DeviceLogin) on each
//! CONNECT; deleting a device tells it to end the device's connections.

use crate::store::{Store, StoreResult};
use crate::{State, auth, db_failure};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::{DeviceGrant, DeviceInfo, NewDevice};
use isms_ipc::{DeviceName, Event, Failure, FailureKind, ProjectName};
use sqlx::Row;

impl Store {
    /// Adds a device; `None` if one of that name exists.
    pub async fn create_device(
        &self,
        project: &ProjectName,
        name: &DeviceName,
        secret_hash: &str,
    ) -> StoreResult<Option<DeviceInfo>> {
        let created_ms = now_ms();
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO devices (project, name, secret_hash, created_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(project.as_str())
        .bind(name.as_str())
        .bind(secret_hash)
        .bind(created_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok((inserted.rows_affected() == 1).then(|| info(project, name.clone(), created_ms)))
    }

    /// A project's devices.
    pub async fn devices(&self, project: &ProjectName) -> StoreResult<Vec<DeviceInfo>> {
        let rows =
            sqlx::query("SELECT name, created_ms FROM devices WHERE project = ? ORDER BY name")
                .bind(project.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let name = DeviceName::new(row.get::<String, _>(0)).ok()?;
                Some(info(project, name, row.get::<i64, _>(1) as u64))
            })
            .collect())
    }

    /// Removes a device; whether it existed.
    pub async fn delete_device(
        &self,
        project: &ProjectName,
        name: &DeviceName,
    ) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM devices WHERE project = ? AND name = ?")
            .bind(project.as_str())
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// A device's secret hash.
    async fn device_secret(
        &self,
        project: &ProjectName,
        name: &DeviceName,
    ) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT secret_hash FROM devices WHERE project = ? AND name = ?")
            .bind(project.as_str())
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
    }
}

fn info(project: &ProjectName, name: DeviceName, created_ms: u64) -> DeviceInfo {
    DeviceInfo {
        username: format!("{project}/{name}"),
        name,
        created_ms,
    }
}

impl State {
    pub(crate) async fn create_device(
        &self,
        project: ProjectName,
        name: DeviceName,
    ) -> Result<NewDevice, Failure> {
        let (secret, hash) = auth::new_token().map_err(Failure::internal)?;
        let info = self
            .store
            .create_device(&project, &name, &hash)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| {
                Failure::new(
                    FailureKind::Conflict,
                    format!("project `{project}` has a device `{name}` already"),
                )
            })?;
        tracing::info!(%project, device = %name, "MQTT device created");
        Ok(NewDevice { info, secret })
    }

    pub(crate) async fn delete_device(
        &self,
        project: ProjectName,
        name: DeviceName,
    ) -> Result<(), Failure> {
        if !self
            .store
            .delete_device(&project, &name)
            .await
            .map_err(db_failure)?
        {
            return Err(Failure::not_found(format!(
                "project `{project}` has no device `{name}`"
            )));
        }
        tracing::info!(%project, device = %name, "MQTT device revoked");
        self.conn.emit(Event::DeviceRevoked {
            project,
            device: Some(name),
        });
        Ok(())
    }

    /// Checks a device's credentials: the same answer for an unknown device
    /// and a wrong secret.
    pub(crate) async fn device_login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<DeviceGrant, Failure> {
        let refused = || Failure::new(FailureKind::Unauthenticated, "bad device credentials");
        let (project, device) = username.split_once('/').ok_or_else(refused)?;
        let (Ok(project), Ok(device)) = (ProjectName::new(project), DeviceName::new(device)) else {
            return Err(refused());
        };
        let stored = self
            .store
            .device_secret(&project, &device)
            .await
            .map_err(db_failure)?
            .ok_or_else(refused)?;
        let given = auth::token_hash(password);
        // Hashes of the same length: compare every byte whatever differs.
        let same = stored.len() == given.len()
            && stored
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(refused());
        }
        Ok(DeviceGrant { project, device })
    }
}
