//! With S3 storage, a sandbox still sees a local directory as its storage
//! (its runner never holds S3 credentials, so nothing in the sandbox opens
//! more than its own project). The server mirrors that directory to S3:
//! restored from S3 before the sandbox starts, every change uploaded as it
//! lands (the same reconciling sync the runner uses), and flushed when the
//! sandbox stops.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudcode_proto::storage::{ObjectStore, StorageError, layout};
use cloudcode_proto::sync::persister::Persister;
use cloudcode_proto::sync::watch::WorkspaceWatcher;
use tokio_util::sync::CancellationToken;

use crate::projects::ProjectId;

/// How long a stop waits for the last changes to reach S3.
const FLUSH_LIMIT: Duration = Duration::from_secs(60);

/// The mirror of every prefix of one project ([`layout::project_prefixes`]:
/// its files and its home), each its own reconciling sync.
pub struct Mirror {
    prefixes: Vec<MirroredPrefix>,
}

struct MirroredPrefix {
    persister: Arc<Persister>,
    _watcher: WorkspaceWatcher,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("preparing the project's local copy: {0}")]
    Local(#[from] std::io::Error),
    #[error("restoring the project from S3: {0}")]
    Restore(#[from] StorageError),
    #[error("watching the project's local copy: {0}")]
    Watch(#[source] std::io::Error),
}

impl Mirror {
    /// Restores the project's prefixes (`code/<project>/`, `home/<project>/`)
    /// from `store` into the local storage rooted at `storage_root`, then
    /// keeps `store` equal to them until [`Mirror::finish`].
    pub async fn start(
        store: Arc<dyn ObjectStore>,
        project: &ProjectId,
        storage_root: &Path,
    ) -> Result<Self, MirrorError> {
        Self::open(store, project, storage_root, Resume::Restore).await
    }

    /// The mirror of a sandbox a previous server started, whose local copy
    /// is newer than the store (it kept running while no mirror watched):
    /// nothing is restored over it, what it no longer has is deleted from
    /// the store, and the rest is reconciled up at once.
    pub async fn adopt(
        store: Arc<dyn ObjectStore>,
        project: &ProjectId,
        storage_root: &Path,
    ) -> Result<Self, MirrorError> {
        Self::open(store, project, storage_root, Resume::Adopt).await
    }

    async fn open(
        store: Arc<dyn ObjectStore>,
        project: &ProjectId,
        storage_root: &Path,
        resume: Resume,
    ) -> Result<Self, MirrorError> {
        let mut prefixes = Vec::new();
        for prefix in layout::project_prefixes(project) {
            let dir = layout::local_dir(storage_root, &prefix);
            match MirroredPrefix::start(store.clone(), prefix, &dir, resume).await {
                Ok(mirrored) => prefixes.push(mirrored),
                Err(e) => {
                    // Stop what already runs; it has uploaded nothing yet
                    // that the sandbox wrote.
                    for started in prefixes {
                        started.finish().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self { prefixes })
    }

    /// Uploads what is left; returns the paths (relative to their prefix)
    /// that could not be stored.
    pub async fn finish(self) -> Vec<String> {
        let mut unsaved = Vec::new();
        for prefix in self.prefixes {
            unsaved.extend(prefix.finish().await);
        }
        unsaved
    }
}

/// Deletes from `store` what the local copy at `root` no longer has: files
/// the sandbox deleted while no mirror watched it (the store would hand
/// them back at its next fresh start otherwise). Best effort: a store that
/// cannot be listed now never costs a running sandbox its adoption.
async fn delete_what_went_unwatched(
    store: &dyn ObjectStore,
    prefix: &cloudcode_proto::storage::KeyPrefix,
    root: &Path,
) {
    // An empty local copy (missing, wiped by an operator who took it for a
    // cache of S3, a new disk) says nothing about what the sandbox deleted:
    // deleting by it would delete the project. (A project emptied while no
    // server ran keeps its files in S3: nothing is lost that way round.)
    let empty = std::fs::read_dir(root).map_or(true, |mut entries| entries.next().is_none());
    if empty {
        tracing::warn!("{} is empty: nothing is deleted from S3 by it", root.display());
        return;
    }
    let listed = match store.list(prefix).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!("listing {prefix:?} in S3 ({e}): what the sandbox deleted while no server ran stays there");
            return;
        }
    };
    let gone: Vec<_> = listed
        .into_iter()
        .filter(|object| {
            prefix.path_of(&object.key).is_some_and(|path| {
                matches!(
                    std::fs::symlink_metadata(root.join(path.as_relative_fs_path())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound
                )
            })
        })
        .map(|object| object.key)
        .collect();
    for result in store.delete_many(gone).await {
        if let Err(e) = result {
            tracing::warn!("deleting from S3 what an adopted sandbox deleted: {e}");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Resume {
    /// A sandbox about to start: the store's files come down first.
    Restore,
    /// A running sandbox taken over: its local copy is the newest.
    Adopt,
}

impl MirroredPrefix {
    async fn start(
        store: Arc<dyn ObjectStore>,
        prefix: cloudcode_proto::storage::KeyPrefix,
        dir: &Path,
        resume: Resume,
    ) -> Result<Self, MirrorError> {
        std::fs::create_dir_all(dir)?;
        let root = dir.canonicalize()?;
        let handle = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority())?;
        let persister = Persister::mirror(
            store.clone(),
            prefix.clone(),
            handle,
            root.clone(),
            Duration::from_millis(50),
        );
        let (events, _) = tokio::sync::broadcast::channel(16);
        let watcher = match resume {
            Resume::Restore => {
                persister.restore().await?;
                cloudcode_proto::sync::watch::start(&root, persister.clone(), events, || {})
                    .map_err(MirrorError::Watch)?
            }
            Resume::Adopt => {
                // Watched first: whatever appears from now on is uploaded
                // by the worker, which starts after the deletions below.
                let watcher = cloudcode_proto::sync::watch::start(&root, persister.clone(), events, || {})
                    .map_err(MirrorError::Watch)?;
                delete_what_went_unwatched(store.as_ref(), &prefix, &root).await;
                persister.mark_dirty(cloudcode_proto::path::WorkspacePath::root());
                watcher
            }
        };
        let stop = CancellationToken::new();
        let worker = tokio::spawn(persister.clone().run(stop.clone()));
        Ok(Self {
            persister,
            _watcher: watcher,
            stop,
            worker,
        })
    }

    async fn finish(self) -> Vec<String> {
        self.stop.cancel();
        let _ = self.worker.await;
        self.persister.mark_dirty(cloudcode_proto::path::WorkspacePath::root());
        let unsaved = self.persister.flush(Instant::now() + FLUSH_LIMIT).await;
        unsaved.iter().map(|p| p.to_string()).collect()
    }
}
