//! Where the CLI keeps the server URL and token: `credentials.toml` under the
//! user's config directory, readable by the user alone.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The Control Gate a fresh CLI talks to.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7780";

/// What `isms login` stores.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// The Control Gate's URL.
    pub url: Option<String>,
    /// The bearer token.
    pub token: Option<String>,
    /// Who logged in.
    pub user: Option<String>,
}

/// `$XDG_CONFIG_HOME/isms/credentials.toml`, or under `~/.config`.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".config"),
    };
    Ok(base.join("isms").join("credentials.toml"))
}

impl Credentials {
    /// The stored credentials, or none.
    pub fn load() -> anyhow::Result<Credentials> {
        let path = path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not valid; log in again", path.display())),
            Err(_) => Ok(Credentials::default()),
        }
    }

    /// Saves them, readable by the user alone.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        isms_ipc::secret_file::write(&path, toml::to_string(self)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
