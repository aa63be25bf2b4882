//! The worker area: the directory holding what a Worker's sandbox binds in
//! (its socket directory, the cached shared objects, the executable).
//!
//! A sandbox runs as the Worker's uid, and bubblewrap resolves every host
//! path it binds with that uid's permissions, even paths passed as file
//! descriptors. So when the Doer runs as root and Workers as an
//! unprivileged uid, everything they bind must be reachable by that uid.
//! The area is `<data-dir>/doer` when that can be made reachable (the data
//! directory becomes searchable but not listable; its other subdirectories
//! stay private), and a directory under `/run` otherwise.

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where Workers' files live.
#[derive(Clone, Debug)]
pub struct WorkerArea {
    /// The area's root.
    pub dir: PathBuf,
    /// The isms executable Workers run.
    pub executable: PathBuf,
}

impl WorkerArea {
    /// Cached shared objects, by sha256.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// One run directory per Worker.
    pub fn workers_dir(&self) -> PathBuf {
        self.dir.join("workers")
    }

    /// Prepares the area for Workers running as `uid`.
    pub fn prepare(doer_dir: &Path, executable: &Path, uid: u32) -> anyhow::Result<WorkerArea> {
        std::fs::create_dir_all(doer_dir)
            .with_context(|| format!("cannot create {}", doer_dir.display()))?;
        let own = current_uid() == uid;
        let dir = if own {
            doer_dir.to_path_buf()
        } else {
            let data_dir = doer_dir.parent().unwrap_or(doer_dir);
            if searchable(data_dir.parent().unwrap_or(data_dir))? {
                set_mode(data_dir, 0o711)?;
                set_mode(doer_dir, 0o711)?;
                doer_dir.to_path_buf()
            } else {
                let fallback = fallback_dir(doer_dir)?;
                tracing::info!(
                    area = %fallback.display(),
                    "the data directory is not reachable by the Workers' uid; using a worker area outside it"
                );
                fallback
            }
        };
        let mode = if own { 0o700 } else { 0o711 };
        for sub in ["cache", "workers", "bin"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            set_mode(&path, mode)?;
        }
        let executable = if own || reachable_file(executable)? {
            executable.to_path_buf()
        } else {
            copy_executable(executable, &dir.join("bin"))?
        };
        Ok(WorkerArea { dir, executable })
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the permissions of {}", path.display()))
}

/// Whether other users can search `dir` and every directory above it.
fn searchable(dir: &Path) -> anyhow::Result<bool> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    Ok(dir
        .ancestors()
        .all(|dir| dir.metadata().is_ok_and(|m| m.mode() & 0o001 != 0)))
}

/// Whether other users can reach and run `file`.
fn reachable_file(file: &Path) -> anyhow::Result<bool> {
    let file = file
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", file.display()))?;
    let dir = file.parent().unwrap_or(&file);
    Ok(searchable(dir)? && file.metadata().is_ok_and(|m| m.mode() & 0o005 == 0o005))
}

/// `/run/isms-<hash>` (or under the temporary directory), owned by root and
/// searchable but not listable by others.
fn fallback_dir(doer_dir: &Path) -> anyhow::Result<PathBuf> {
    let digest = Sha256::digest(doer_dir.as_os_str().as_encoded_bytes());
    let name = format!("isms-{}", &format!("{digest:x}")[..12]);
    for base in [PathBuf::from("/run"), std::env::temp_dir()] {
        // The base must exist: `/run` may be missing in a container.
        if !searchable(&base).unwrap_or(false) {
            continue;
        }
        let dir = base.join(&name);
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let meta = std::fs::symlink_metadata(&dir)?;
        if !meta.is_dir() || meta.uid() != current_uid() {
            bail!("{} exists and is not ours: remove it", dir.display());
        }
        set_mode(&dir, 0o711)?;
        return Ok(dir);
    }
    bail!(
        "no directory reachable by the Workers' uid could be created under /run or the temporary directory"
    )
}

/// Copies the executable where Workers can reach it, replacing an older
/// copy atomically (running Workers keep theirs).
fn copy_executable(executable: &Path, bin: &Path) -> anyhow::Result<PathBuf> {
    let target = bin.join("isms");
    let partial = bin.join("isms.partial");
    std::fs::copy(executable, &partial).with_context(|| {
        format!(
            "cannot copy {} to {}",
            executable.display(),
            partial.display()
        )
    })?;
    set_mode(&partial, 0o755)?;
    std::fs::rename(&partial, &target)?;
    Ok(target)
}
