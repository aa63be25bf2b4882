//! Versions ready to run: their spec from Resadmin and their shared object,
//! fetched once by content hash and cached on disk. Versions are immutable,
//! so neither ever needs invalidating.

use isms_ipc::connection::Scope;
use isms_ipc::resadmin::{GetBinary, GetVersion, Resources};
use isms_ipc::{Connection, DoeeName, ProjectName};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One version of one Doee of one project.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionKey {
    /// The project.
    pub project: ProjectName,
    /// The Doee.
    pub doee: DoeeName,
    /// The version.
    pub version: u32,
}

impl std::fmt::Display for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.project, self.doee, self.version)
    }
}

/// A version ready to start Workers for.
#[derive(Debug)]
pub struct Prepared {
    /// The cached shared object.
    pub shared_object: PathBuf,
    /// The manifest's `[params]`.
    pub params: Vec<(String, String)>,
    /// The manifest's `[resources]`.
    pub resources: Resources,
    /// The project's CPU weight when the version was fetched.
    pub cpu_weight: u32,
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches what is needed to run `key`, reusing the cached binary.
pub async fn prepare(
    conn: &Connection,
    cache: &Path,
    key: &VersionKey,
) -> Result<Prepared, String> {
    let scope = Scope::project(key.project.clone(), FETCH_TIMEOUT);
    let spec = conn
        .call(
            &scope,
            GetVersion {
                doee: key.doee.clone(),
                version: key.version,
            },
        )
        .await
        .map_err(|f| format!("cannot find {key}: {f}"))?;
    if spec.sha256.len() != 64 || !spec.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{key} has a malformed binary hash"));
    }
    let path = cache.join(format!("{}.so", spec.sha256));
    if !path.exists() {
        let bytes = conn
            .call(
                &scope,
                GetBinary {
                    sha256: spec.sha256.clone(),
                },
            )
            .await
            .map_err(|f| format!("cannot fetch the binary of {key}: {f}"))?;
        let digest = format!("{:x}", Sha256::digest(&bytes));
        if digest != spec.sha256 {
            return Err(format!("the binary of {key} does not match its hash"));
        }
        // Named by the version too: two versions built from the same source
        // share the binary, and may be fetched at the same time.
        let partial = cache.join(format!(
            "{}.so.{}.{}.{}.partial",
            spec.sha256, key.project, key.doee, key.version
        ));
        // Readable by the Workers' uid, which may not be ours.
        tokio::fs::write(&partial, &bytes)
            .await
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o644))
            })
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot cache the binary of {key}: {e}"))?;
    }
    Ok(Prepared {
        shared_object: path,
        params: spec.params,
        resources: spec.resources,
        cpu_weight: spec.cpu_weight,
    })
}
