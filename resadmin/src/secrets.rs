//! Project secrets (`API_TOKEN` and the like), sealed at rest with
//! ChaCha20-Poly1305 under a key kept apart from the database: a 0600 file
//! in Resadmin's directory, made on first use, or the file the operator
//! names (`resadmin.secrets_key_file`). Each value gets a fresh random
//! nonce and is bound to its project and name (the associated data), so a
//! sealed value moved to another row does not open. Values leave Resadmin
//! only in `ReadSecret` answers to a Doer acting for the project; the API
//! lists names alone.

use crate::store::{Store, StoreResult};
use crate::{State, db_failure};
use isms_ipc::names::now_ms;
use isms_ipc::resadmin::SecretInfo;
use isms_ipc::{Failure, FailureKind, ProjectName, SecretName, SecretValue};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;
use std::path::Path;

/// The longest value a secret may have.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// Seals and opens secret values with the platform's key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    /// The key in `path` (64 hex digits), made there first if missing.
    pub fn open_or_create(path: &Path) -> std::io::Result<Sealer> {
        let random = SystemRandom::new();
        let hex = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_string(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                random
                    .fill(&mut key)
                    .map_err(|_| std::io::Error::other("no random numbers for a key"))?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                isms_ipc::secret_file::write(path, format!("{hex}\n").as_bytes())?;
                hex
            }
            Err(err) => return Err(err),
        };
        let bytes: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        let key = bytes
            .and_then(|bytes| UnboundKey::new(&CHACHA20_POLY1305, &bytes).ok())
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{} is not a secrets key (64 hex digits)",
                    path.display()
                ))
            })?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            random,
        })
    }

    /// `value` sealed for `project`'s secret `name`: nonce, then ciphertext
    /// and tag.
    pub fn seal(&self, project: &ProjectName, name: &SecretName, value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // SystemRandom fails only where the OS has no random source at all.
        let _ = self.random.fill(&mut nonce);
        let mut sealed = value.to_vec();
        let aad = associated(project, name);
        let sealed_ok = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut sealed,
        );
        debug_assert!(sealed_ok.is_ok(), "sealing fails only past 256 GiB");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    /// The value `sealed` holds for `project`'s secret `name`, if it opens.
    pub fn open(&self, project: &ProjectName, name: &SecretName, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let aad = associated(project, name);
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

fn associated(project: &ProjectName, name: &SecretName) -> String {
    format!("isms-secret-1/{project}/{name}")
}

impl Store {
    /// Sets a project's secret to `sealed`.
    pub async fn set_secret(
        &self,
        project: &ProjectName,
        name: &SecretName,
        sealed: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO secrets (project, name, sealed, updated_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (project, name) DO UPDATE SET sealed = excluded.sealed, updated_ms = excluded.updated_ms",
        )
        .bind(project.as_str())
        .bind(name.as_str())
        .bind(sealed)
        .bind(now_ms() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A project's secrets, by name.
    pub async fn secrets(&self, project: &ProjectName) -> StoreResult<Vec<SecretInfo>> {
        let rows =
            sqlx::query("SELECT name, updated_ms FROM secrets WHERE project = ? ORDER BY name")
                .bind(project.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(SecretInfo {
                    name: SecretName::new(row.get::<String, _>(0)).ok()?,
                    updated_ms: row.get::<i64, _>(1) as u64,
                })
            })
            .collect())
    }

    /// A secret's sealed value.
    pub async fn sealed_secret(
        &self,
        project: &ProjectName,
        name: &SecretName,
    ) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT sealed FROM secrets WHERE project = ? AND name = ?")
            .bind(project.as_str())
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await
    }

    /// Removes a secret; whether it existed.
    pub async fn delete_secret(
        &self,
        project: &ProjectName,
        name: &SecretName,
    ) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM secrets WHERE project = ? AND name = ?")
            .bind(project.as_str())
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }
}

impl State {
    pub(crate) async fn set_secret(
        &self,
        project: ProjectName,
        name: SecretName,
        value: SecretValue,
    ) -> Result<(), Failure> {
        if value.0.len() > MAX_VALUE_BYTES {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the value of {name} has {} bytes; a secret holds {MAX_VALUE_BYTES} at most",
                    value.0.len()
                ),
            ));
        }
        let sealed = self.sealer.seal(&project, &name, value.0.as_bytes());
        self.store
            .set_secret(&project, &name, &sealed)
            .await
            .map_err(db_failure)?;
        tracing::info!(%project, secret = %name, "secret set");
        Ok(())
    }

    pub(crate) async fn delete_secret(
        &self,
        project: ProjectName,
        name: SecretName,
    ) -> Result<(), Failure> {
        if !self
            .store
            .delete_secret(&project, &name)
            .await
            .map_err(db_failure)?
        {
            return Err(Failure::not_found(format!(
                "project `{project}` has no secret {name}"
            )));
        }
        tracing::info!(%project, secret = %name, "secret deleted");
        Ok(())
    }

    pub(crate) async fn read_secret(
        &self,
        project: ProjectName,
        name: SecretName,
    ) -> Result<SecretValue, Failure> {
        let sealed = self
            .store
            .sealed_secret(&project, &name)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| {
                Failure::not_found(format!("project `{project}` has no secret {name}"))
            })?;
        let value = self.sealer.open(&project, &name, &sealed).ok_or_else(|| {
            Failure::internal(format!(
                "the secret {name} does not open with this platform's key (was the key file replaced?)"
            ))
        })?;
        String::from_utf8(value)
            .map(SecretValue)
            .map_err(|_| Failure::internal(format!("the secret {name} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_project_and_name_and_key() {
        let dir = std::env::temp_dir().join(format!("isms-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("secrets.key");
        let sealer = Sealer::open_or_create(&key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (demo, other) = (
            ProjectName::new("demo").unwrap(),
            ProjectName::new("other").unwrap(),
        );
        let (token, name2) = (
            SecretName::new("API_TOKEN").unwrap(),
            SecretName::new("B").unwrap(),
        );
        let sealed = sealer.seal(&demo, &token, b"s3cr3t-value");
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"), "not in clear");
        assert_ne!(
            sealed,
            sealer.seal(&demo, &token, b"s3cr3t-value"),
            "a fresh nonce each time"
        );
        assert_eq!(
            sealer.open(&demo, &token, &sealed).unwrap(),
            b"s3cr3t-value"
        );
        assert_eq!(
            sealer.open(&other, &token, &sealed),
            None,
            "another project's row"
        );
        assert_eq!(sealer.open(&demo, &name2, &sealed), None, "another name");
        // The same key file opens it again; another key does not.
        let again = Sealer::open_or_create(&key).unwrap();
        assert_eq!(again.open(&demo, &token, &sealed).unwrap(), b"s3cr3t-value");
        let stranger = Sealer::open_or_create(&dir.join("other.key")).unwrap();
        assert_eq!(stranger.open(&demo, &token, &sealed), None);
        std::fs::write(&key, "not a key").unwrap();
        let err = Sealer::open_or_create(&key).err().unwrap().to_string();
        assert!(err.contains("is not a secrets key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
