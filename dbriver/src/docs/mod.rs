//! The document store: the interface the rest of DBriver uses.
//! (Being built on the `docs` branch; this placeholder only refuses.)

use isms_ipc::dbriver::{CollectionInfo, DocOp};
use isms_ipc::{Failure, FailureKind, ProjectName};
use std::path::PathBuf;

/// Where documents live.
#[derive(Clone, Debug)]
pub enum DocBackend {
    /// The embedded store, one per project under `dir`.
    Embedded {
        /// The directory.
        dir: PathBuf,
    },
    /// A MongoDB server, one database per project.
    Mongo {
        /// `mongodb://…`
        url: String,
    },
}

/// Limits on documents.
#[derive(Clone, Debug)]
pub struct DocLimits {
    /// Largest document, bytes.
    pub max_document_bytes: usize,
    /// Most documents one find returns.
    pub max_results: usize,
    /// Largest store per project, bytes.
    pub max_project_bytes: u64,
}

impl Default for DocLimits {
    fn default() -> Self {
        DocLimits {
            max_document_bytes: 1 << 20,
            max_results: 10_000,
            max_project_bytes: 1 << 30,
        }
    }
}

/// The document store.
pub struct DocStore {
    backend: DocBackend,
}

fn unavailable() -> Failure {
    Failure::new(FailureKind::Unavailable, "documents are not available yet")
}

impl DocStore {
    /// Opens the store.
    pub async fn open(backend: DocBackend, _limits: DocLimits) -> anyhow::Result<DocStore> {
        Ok(DocStore { backend })
    }

    /// For logs.
    pub fn describe(&self) -> String {
        format!("{:?}", self.backend)
    }

    /// One operation.
    pub async fn run(
        &self,
        _project: &ProjectName,
        _op: DocOp,
        _collection: &str,
        _json: &str,
    ) -> Result<String, Failure> {
        Err(unavailable())
    }

    /// The project's collections.
    pub async fn collections(
        &self,
        _project: &ProjectName,
    ) -> Result<Vec<CollectionInfo>, Failure> {
        Err(unavailable())
    }

    /// Removes the project's store.
    pub async fn drop_project(&self, _project: &ProjectName) -> Result<(), Failure> {
        Ok(())
    }
}
