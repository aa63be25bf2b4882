//! The one way the platform writes a secret to disk (a password, a key,
//! a token): readable by its owner alone from the first byte, complete or
//! absent after a crash, never left with wider permissions by an older file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to `path`, mode 0600: first to `<path>.partial`, then
/// synced and renamed over `path`, so a crash leaves the old file or the new
/// one, never half of one.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = Path::new(&partial);
    // A partial file from a crash may carry wider permissions: start anew.
    match std::fs::remove_file(partial) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(partial, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_replaces_a_wider_file_and_is_private() {
        let dir = std::env::temp_dir().join(format!("isms-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.join("key.partial"), "stale").unwrap();
        super::write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join("key.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
