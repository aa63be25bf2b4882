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

/// The longest value a secret may have: a JSON body of the API, escaped,
/// must still fit the Control Gate's 64 KiB.
pub const MAX_VALUE_BYTES: usize = 32 << 10;

/// Seals and opens secret values with the platform's key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

/// The platform's sealer: its key file opened (made, 0600, only while no
/// secret is stored) and checked against a stored secret, so a key lost or
/// replaced stops Resadmin at start, saying so, rather than failing every
/// Doee that reads a secret later.
pub async fn open_sealer(store: &Store, path: &Path) -> anyhow::Result<Sealer> {
    let sample = store.any_sealed_secret().await?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => anyhow::bail!(
            "cannot read the key of project secrets {}: {err}",
            path.display()
        ),
    };
    let key = match text {
        Some(text) => isms_ipc::hex::decode32(text.trim()).ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not a key of project secrets (64 hex digits)",
                path.display()
            )
        })?,
        None if sample.is_some() => anyhow::bail!(
            "the key of project secrets {} is missing, and secrets sealed with it are stored: \
             restore the key file (it belongs with the data directory's backups)",
            path.display()
        ),
        None => {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| anyhow::anyhow!("no random numbers for a key"))?;
            isms_ipc::secret_file::write(
                path,
                format!("{}\n", isms_ipc::hex::encode(&key)).as_bytes(),
            )?;
            key
        }
    };
    let sealer = Sealer::new(&key)?;
    if let Some((project, name, sealed)) = sample
        && sealer.open(&project, &name, &sealed).is_none()
    {
        anyhow::bail!(
            "the key of project secrets {} does not open the stored secrets: was it replaced? \
             Restore the key they were sealed with",
            path.display()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path)?.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the key of project secrets is readable by others than its owner: chmod 600 it");
    }
    Ok(sealer)
}

impl Sealer {
    /// A sealer with `key`.
    pub fn new(key: &[u8; 32]) -> anyhow::Result<Sealer> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| anyhow::anyhow!("not a ChaCha20-Poly1305 key"))?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// `value` sealed for `project`'s secret `name`: nonce, then ciphertext
    /// and tag.
    pub fn seal(
        &self,
        project: &ProjectName,
        name: &SecretName,
        value: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| Failure::internal("no random numbers to seal a secret with"))?;
        let mut sealed = value.to_vec();
        let aad = associated(project, name);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| Failure::internal("cannot seal the secret"))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
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

    /// One stored secret, sealed, to check the key against.
    pub async fn any_sealed_secret(
        &self,
    ) -> StoreResult<Option<(ProjectName, SecretName, Vec<u8>)>> {
        let row = sqlx::query("SELECT project, name, sealed FROM secrets LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|row| {
            Some((
                ProjectName::new(row.get::<String, _>(0)).ok()?,
                SecretName::new(row.get::<String, _>(1)).ok()?,
                row.get::<Vec<u8>, _>(2),
            ))
        }))
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
        if value.0.contains('\0') {
            return Err(Failure::invalid(format!(
                "the value of {name} holds a NUL character, which a Doee could not read whole"
            )));
        }
        if value.0.len() > MAX_VALUE_BYTES {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the value of {name} has {} bytes; a secret holds {MAX_VALUE_BYTES} at most",
                    value.0.len()
                ),
            ));
        }
        let sealed = self.sealer.seal(&project, &name, value.0.as_bytes())?;
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
        let sealer = Sealer::new(&[7u8; 32]).unwrap();
        let (demo, other) = (
            ProjectName::new("demo").unwrap(),
            ProjectName::new("other").unwrap(),
        );
        let (token, name2) = (
            SecretName::new("API_TOKEN").unwrap(),
            SecretName::new("B").unwrap(),
        );
        let sealed = sealer.seal(&demo, &token, b"s3cr3t-value").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"), "not in clear");
        assert_ne!(
            sealed,
            sealer.seal(&demo, &token, b"s3cr3t-value").unwrap(),
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
        let stranger = Sealer::new(&[8u8; 32]).unwrap();
        assert_eq!(stranger.open(&demo, &token, &sealed), None, "another key");
    }

    /// A key lost or replaced stops Resadmin at start, saying which; a
    /// key is made only while no secret is stored.
    #[tokio::test]
    async fn a_lost_or_replaced_key_is_refused_at_start() {
        let dir = std::env::temp_dir().join(format!("isms-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).await.unwrap();
        let key = dir.join("secrets.key");
        let sealer = open_sealer(&store, &key).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        sqlx::query("INSERT INTO projects (name, created_ms) VALUES ('demo', 0)")
            .execute(&store.pool)
            .await
            .unwrap();
        let (demo, token) = (
            ProjectName::new("demo").unwrap(),
            SecretName::new("T").unwrap(),
        );
        let sealed = sealer.seal(&demo, &token, b"v").unwrap();
        store.set_secret(&demo, &token, &sealed).await.unwrap();
        assert!(sealer_opens(&store, &key).await, "the same key opens them");

        let original = std::fs::read(&key).unwrap();
        std::fs::remove_file(&key).unwrap();
        let err = open_sealer(&store, &key).await.err().unwrap().to_string();
        assert!(
            err.contains("is missing, and secrets sealed with it are stored"),
            "{err}"
        );
        assert!(!key.exists(), "no new key made over stored secrets");
        std::fs::write(&key, format!("{}\n", isms_ipc::hex::encode(&[9u8; 32]))).unwrap();
        let err = open_sealer(&store, &key).await.err().unwrap().to_string();
        assert!(err.contains("does not open the stored secrets"), "{err}");
        std::fs::write(&key, "é".repeat(32)).unwrap();
        let err = open_sealer(&store, &key).await.err().unwrap().to_string();
        assert!(err.contains("is not a key of project secrets"), "{err}");
        std::fs::write(&key, original).unwrap();
        assert!(sealer_opens(&store, &key).await);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn sealer_opens(store: &Store, key: &Path) -> bool {
        open_sealer(store, key).await.is_ok()
    }
}
