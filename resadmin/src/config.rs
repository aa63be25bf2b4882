//! How Resadmin runs: its directories, limits and defaults.

use crate::{archive, sandbox};
use isms_ipc::resadmin::Quotas;
use std::path::PathBuf;
use std::time::Duration;

/// How Resadmin runs.
#[derive(Clone, Debug)]
pub struct ResadminConfig {
    /// The platform's data directory.
    pub data_dir: PathBuf,
    /// Where builds put their output (shared between builds).
    pub build_target_dir: PathBuf,
    /// Where builds' `CARGO_HOME`s are, one per project.
    pub cargo_home: PathBuf,
    /// Where builds fetch dependencies from.
    pub fetch: crate::fetch::FetchConfig,
    /// The key that seals project secrets: a file of 64 hex digits, made
    /// (0600) on first use if missing.
    pub secrets_key_file: PathBuf,
    /// The longest a build may take.
    pub build_timeout: Duration,
    /// The sandbox builds run in.
    pub build_sandbox: sandbox::SandboxConfig,
    /// How long a login token lasts.
    pub token_ttl: Duration,
    /// Bounds on uploads.
    pub archive: archive::Limits,
    /// A project's quotas unless an admin set others.
    pub quotas: Quotas,
    /// Projects a user who is not a platform admin may create.
    pub max_projects_per_user: u32,
    /// Invocation records and log lines older than this are forgotten.
    pub records_max_age: Duration,
    /// At most this many invocation records (and log lines) are kept.
    pub records_max_count: u64,
}

impl ResadminConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: &std::path::Path) -> ResadminConfig {
        let dir = data_dir.join("resadmin");
        ResadminConfig {
            data_dir: data_dir.to_path_buf(),
            build_target_dir: dir.join("target"),
            cargo_home: dir.join("cargo-home"),
            fetch: crate::fetch::FetchConfig::default(),
            secrets_key_file: dir.join("secrets.key"),
            build_timeout: Duration::from_secs(600),
            build_sandbox: sandbox::SandboxConfig::default(),
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            archive: archive::Limits::default(),
            quotas: Quotas::default(),
            max_projects_per_user: 10,
            records_max_age: Duration::from_secs(7 * 24 * 3600),
            records_max_count: 100_000,
        }
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.data_dir.join("resadmin")
    }

    pub(crate) fn sources_dir(&self) -> PathBuf {
        self.dir().join("sources")
    }

    pub(crate) fn binaries_dir(&self) -> PathBuf {
        self.dir().join("binaries")
    }

    /// Where the initial admin password is written.
    pub fn initial_password_file(data_dir: &std::path::Path) -> PathBuf {
        data_dir.join("initial-admin-password")
    }
}
