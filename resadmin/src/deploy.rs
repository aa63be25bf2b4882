//! The deploy pipeline: an upload is unpacked into a staging directory,
//! its manifest checked (routes, topics, quotas), and only then recorded
//! as a new version whose build is queued.

use crate::manifest::{self, Manifest};
use crate::{State, archive, builder, db_failure, forbidden, no_project};
use isms_ipc::resadmin::{BuildState, Deployed, Quotas};
use isms_ipc::{Failure, FailureKind, ProjectName, Username};

impl State {
    pub(crate) async fn deploy(
        &self,
        by: &Username,
        project: ProjectName,
        archive: bytes::Bytes,
    ) -> Result<Deployed, Failure> {
        let quotas = self
            .store
            .project(&project, self.config.quotas)
            .await
            .map_err(db_failure)?
            .ok_or_else(|| no_project(&project))?
            .quotas;
        if archive.len() as u64 > quotas.max_upload_bytes {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "the upload has {} bytes, past project `{project}`'s quota max_upload_bytes of {}",
                    archive.len(),
                    quotas.max_upload_bytes
                ),
            ));
        }
        // Unpack into a fresh directory; it only becomes a version once the
        // manifest is valid, and is removed otherwise.
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let staging = self
            .config
            .sources_dir()
            .join(format!(".upload-{}", u64::from_be_bytes(nonce)));
        let limits = self.config.archive;
        let unpack_dir = staging.clone();
        let unpacked =
            tokio::task::spawn_blocking(move || archive::unpack(&archive, &unpack_dir, &limits))
                .await
                .map_err(Failure::internal)?;
        let root = unpacked.map_err(|err| match err {
            archive::ArchiveError::TooLarge(why) => Failure::new(FailureKind::TooLarge, why),
            archive::ArchiveError::Io(err) => {
                Failure::internal(format!("cannot unpack the upload: {err}"))
            }
            other => Failure::invalid(other.to_string()),
        })?;
        let discard = |failure: Failure| {
            let _ = std::fs::remove_dir_all(&staging);
            failure
        };
        let text = std::fs::read_to_string(root.join(manifest::FILE))
            .map_err(|_| discard(Failure::invalid("doee.toml is not valid UTF-8")))?;
        let manifest = Manifest::parse(&text).map_err(|e| discard(Failure::invalid(e)))?;
        self.check_routes(&project, &manifest)
            .await
            .map_err(discard)?;
        self.check_topics(&project, &manifest)
            .await
            .map_err(discard)?;
        self.check_quotas(&project, &manifest, quotas)
            .await
            .map_err(discard)?;
        let manifest_json =
            serde_json::to_string(&manifest).map_err(|e| discard(Failure::internal(e)))?;
        let version = self
            .store
            .new_version(&project, &manifest.name, &manifest_json, by)
            .await
            .map_err(|e| discard(db_failure(e)))?;
        let dest = self
            .config
            .sources_dir()
            .join(project.as_str())
            .join(manifest.name.as_str())
            .join(version.to_string());
        let moved = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&root, &dest));
        if let Err(err) = moved {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = self
                .store
                .set_build(
                    &project,
                    &manifest.name,
                    version,
                    BuildState::Failed,
                    &format!("cannot store the sources: {err}"),
                    None,
                )
                .await;
            return Err(Failure::internal(format!(
                "cannot store the sources: {err}"
            )));
        }
        let _ = std::fs::remove_dir_all(&staging);
        let doee = manifest.name.clone();
        tracing::info!(%project, %doee, version, user = %by, "deployed; build queued");
        self.builder.submit(builder::Job {
            project,
            doee: doee.clone(),
            version,
            root: dest,
            manifest,
            max_dependencies_bytes: quotas.max_dependencies_bytes,
        });
        Ok(Deployed {
            doee,
            version,
            build: BuildState::Queued,
        })
    }

    /// Refuses a manifest that would take the project past its quotas.
    pub(crate) async fn check_quotas(
        &self,
        project: &ProjectName,
        manifest: &Manifest,
        quotas: Quotas,
    ) -> Result<(), Failure> {
        let exceeded = |message: String| forbidden(format!("quota exceeded: {message}"));
        let (others, workers) = self
            .store
            .usage(project, &manifest.name)
            .await
            .map_err(db_failure)?;
        let exists = self
            .store
            .doees(project, Some(&manifest.name), false)
            .await
            .map_err(db_failure)?
            .pop()
            .is_some();
        if !exists && others >= quotas.max_doees {
            return Err(exceeded(format!(
                "project `{project}` has {others} Doees, its max_doees"
            )));
        }
        let asked = manifest.resources.concurrency;
        if workers + asked > quotas.max_workers {
            return Err(exceeded(format!(
                "project `{project}` may run {} Workers (max_workers); its other Doees use {workers} \
                 and `resources.concurrency` asks {asked} more",
                quotas.max_workers
            )));
        }
        Ok(())
    }
}
