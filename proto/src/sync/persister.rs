//! Keeps object storage equal to the workspace.
//!
//! Whatever changes a path (a client's save, a program in a terminal, a
//! `git clone`) marks it dirty. After a short debounce the worker
//! *reconciles* each dirty path: it looks at what is on disk now and makes
//! storage match — uploading files whose size or mtime differ from what was
//! last stored, walking directories, deleting what no longer exists. Because
//! it compares states rather than replaying events, missed, merged or
//! reordered events (inotify overflow, renames of whole trees) cannot leave
//! storage wrong: reconciling the root repairs everything.
//!
//! A failed storage call puts the path back, marks storage unhealthy (every
//! client is told) and retries with exponential backoff; nothing is dropped.
//! A client's save waits on [`Persister::persist`], which resolves only once
//! that path's content is in storage.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::message::StorageStatus;
use crate::path::{RESERVED_PREFIX, WorkspacePath};
use crate::storage::{KeyPrefix, ObjectStore, StorageError};
use cap_std::fs::{Dir, Metadata};
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// However busy a path is, it reaches storage within this long.
const MAX_DELAY: Duration = Duration::from_secs(2);
const PARALLEL_TRANSFERS: usize = 16;

/// What was last stored for a file: enough to tell whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(-1);
        Self {
            size: meta.len(),
            mtime_ns,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Dirty {
    first: Instant,
    last: Instant,
    /// A client waits on it: skip the debounce.
    urgent: bool,
}

#[derive(Default)]
struct SyncState {
    dirty: BTreeMap<WorkspacePath, Dirty>,
    stored: BTreeMap<WorkspacePath, Stamp>,
    waiters: HashMap<WorkspacePath, Vec<oneshot::Sender<()>>>,
    in_flight: usize,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

pub struct Persister {
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
    dir: Dir,
    root: PathBuf,
    debounce: Duration,
    state: Mutex<SyncState>,
    wake: Notify,
    settled: Notify,
    status: watch::Sender<StorageStatus>,
}

#[derive(Debug, thiserror::Error)]
#[error("the change to {0} did not reach storage before the runner stopped")]
pub struct NotPersisted(pub WorkspacePath);

impl Persister {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: KeyPrefix,
        dir: Dir,
        root: PathBuf,
        debounce: Duration,
    ) -> Arc<Self> {
        let (status, _) = watch::channel(StorageStatus {
            healthy: true,
            pending: 0,
            last_error: None,
        });
        Arc::new(Self {
            store,
            prefix,
            dir,
            root,
            debounce,
            state: Mutex::new(SyncState::default()),
            wake: Notify::new(),
            settled: Notify::new(),
            status,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> watch::Receiver<StorageStatus> {
        self.status.subscribe()
    }

    pub fn current_status(&self) -> StorageStatus {
        self.status.borrow().clone()
    }

    /// Notes that `path` may differ from storage.
    pub fn mark_dirty(&self, path: WorkspacePath) {
        self.mark(path, false);
        self.wake.notify_one();
    }

    pub fn mark_all_dirty(&self, paths: impl IntoIterator<Item = WorkspacePath>) {
        for path in paths {
            self.mark(path, false);
        }
        self.wake.notify_one();
    }

    fn mark(&self, path: WorkspacePath, urgent: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        let entry = state.dirty.entry(path).or_insert(Dirty {
            first: now,
            last: now,
            urgent,
        });
        entry.last = now;
        entry.urgent |= urgent;
    }

    /// Resolves once `path` as it is now is in storage. Fails only if the
    /// runner stops first.
    pub async fn persist(&self, path: WorkspacePath) -> Result<(), NotPersisted> {
        let (tx, rx) = oneshot::channel();
        self.lock().waiters.entry(path.clone()).or_default().push(tx);
        self.mark(path.clone(), true);
        self.wake.notify_one();
        rx.await.map_err(|_| NotPersisted(path))
    }

    /// Downloads the project's files into the workspace. Files already in
    /// the workspace win: they are newer than storage (a runner restarted
    /// over its old workspace) and are uploaded instead.
    pub async fn restore(self: &Arc<Self>) -> Result<usize, StorageError> {
        let objects = self.store.list(&self.prefix).await?;
        let downloads = objects.into_iter().filter_map(|object| {
            let path = self.prefix.path_of(&object.key)?;
            Some((object.key, path))
        });
        let results: Vec<Result<Option<(WorkspacePath, Stamp)>, StorageError>> = futures_util::stream::iter(downloads)
            .map(|(key, path)| {
                let this = self.clone();
                async move { this.download(&key, &path).await.map(|stamp| stamp.map(|s| (path, s))) }
            })
            .buffer_unordered(PARALLEL_TRANSFERS)
            .collect()
            .await;
        let mut restored = 0;
        let mut state = self.lock();
        for result in results {
            if let Some((path, stamp)) = result? {
                state.stored.insert(path, stamp);
                restored += 1;
            }
        }
        drop(state);
        // Anything in the workspace that storage lacks (or has older) goes up.
        self.mark_dirty(WorkspacePath::root());
        Ok(restored)
    }

    /// Returns `None` when a local file is kept instead.
    async fn download(
        &self,
        key: &crate::storage::ObjectKey,
        path: &WorkspacePath,
    ) -> Result<Option<Stamp>, StorageError> {
        let local_err = |source| StorageError::LocalIo {
            path: path.to_string(),
            source,
        };
        if self.dir.symlink_metadata(path.as_relative_fs_path()).is_ok() {
            return Ok(None);
        }
        let parent = path.parent().unwrap_or_default();
        if !parent.is_root() {
            self.dir
                .create_dir_all(parent.as_relative_fs_path())
                .map_err(local_err)?;
        }
        let tmp_name = format!("{RESERVED_PREFIX}restore-{}", unique());
        let tmp_rel = if parent.is_root() {
            PathBuf::from(&tmp_name)
        } else {
            PathBuf::from(parent.as_str()).join(&tmp_name)
        };
        // Nothing runs in the workspace yet, so the absolute path is safe here.
        let tmp_abs = self.root.join(&tmp_rel);
        if let Err(e) = self.store.get_to_file(key, &tmp_abs).await {
            let _ = std::fs::remove_file(&tmp_abs);
            return Err(e);
        }
        self.dir
            .rename(&tmp_rel, &self.dir, path.as_relative_fs_path())
            .map_err(local_err)?;
        let meta = self
            .dir
            .symlink_metadata(path.as_relative_fs_path())
            .map_err(local_err)?;
        Ok(Some(Stamp::of(&meta)))
    }

    /// The worker: runs until `stop` and then returns; call
    /// [`Persister::flush`] afterwards to drain what is left.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let wait = self.run_once(false).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reconciles every due path; returns how long until the next is due.
    async fn run_once(&self, everything_due: bool) -> Duration {
        let now = Instant::now();
        let (due, waiters) = {
            let mut state = self.lock();
            if let Some(retry_at) = state.retry_at
                && retry_at > now
                && !everything_due
            {
                return retry_at - now;
            }
            let debounce = self.debounce;
            let due: Vec<WorkspacePath> = state
                .dirty
                .iter()
                .filter(|(_, d)| everything_due || d.urgent || now - d.last >= debounce || now - d.first >= MAX_DELAY)
                .map(|(p, _)| p.clone())
                .collect();
            let mut taken = Vec::with_capacity(due.len());
            for path in &due {
                if let Some(d) = state.dirty.remove(path) {
                    taken.push((path.clone(), d));
                }
            }
            let waiters: Vec<_> = due
                .iter()
                .map(|p| state.waiters.remove(p).unwrap_or_default())
                .collect();
            state.in_flight += taken.len();
            (taken, waiters)
        };
        if !due.is_empty() {
            let paths: Vec<WorkspacePath> = due.iter().map(|(p, _)| p.clone()).collect();
            let results: Vec<_> = futures_util::stream::iter(paths)
                .map(|path| async move { self.reconcile(&path).await })
                .buffered(PARALLEL_TRANSFERS)
                .collect()
                .await;
            let mut state = self.lock();
            state.in_flight -= due.len();
            let mut failed = false;
            for (((path, dirty), result), waiters) in due.into_iter().zip(results).zip(waiters) {
                match result {
                    Ok(()) => {
                        for w in waiters {
                            let _ = w.send(());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%path, "storage sync failed, will retry: {e}");
                        failed = true;
                        state.last_error = Some(e.to_string());
                        let entry = state.dirty.entry(path.clone()).or_insert(dirty);
                        entry.urgent |= dirty.urgent;
                        entry.first = entry.first.min(dirty.first);
                        if !waiters.is_empty() {
                            state.waiters.entry(path).or_default().extend(waiters);
                        }
                    }
                }
            }
            if failed {
                let backoff = state.backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                state.backoff = Some(backoff);
                state.retry_at = Some(Instant::now() + backoff);
            } else if state.backoff.is_some() {
                tracing::info!("storage reachable again");
                state.backoff = None;
                state.retry_at = None;
                state.last_error = None;
            }
            self.publish(&state);
            drop(state);
            self.settled.notify_waiters();
        } else {
            let state = self.lock();
            self.publish(&state);
        }
        let state = self.lock();
        if let Some(retry_at) = state.retry_at {
            return retry_at.saturating_duration_since(Instant::now());
        }
        let now = Instant::now();
        state
            .dirty
            .values()
            .map(|d| {
                (d.last + self.debounce)
                    .min(d.first + MAX_DELAY)
                    .saturating_duration_since(now)
            })
            .min()
            .unwrap_or(Duration::from_secs(3600))
    }

    fn publish(&self, state: &SyncState) {
        let status = StorageStatus {
            healthy: state.backoff.is_none(),
            pending: (state.dirty.len() + state.in_flight) as u64,
            last_error: state.last_error.clone(),
        };
        self.status.send_if_modified(|current| {
            if *current != status {
                *current = status;
                true
            } else {
                false
            }
        });
    }

    /// Drains every pending change, retrying storage until `deadline`.
    /// Returns the paths that could not be stored.
    pub async fn flush(&self, deadline: Instant) -> Vec<WorkspacePath> {
        loop {
            {
                let state = self.lock();
                if state.dirty.is_empty() && state.in_flight == 0 {
                    return Vec::new();
                }
            }
            if Instant::now() >= deadline {
                return self.lock().dirty.keys().cloned().collect();
            }
            let wait = self.run_once(true).await;
            let has_failed = self.lock().retry_at.is_some();
            if has_failed {
                let pause = wait.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Makes storage match the workspace at and below `path`.
    async fn reconcile(&self, path: &WorkspacePath) -> Result<(), StorageError> {
        let meta = if path.is_root() {
            self.dir.dir_metadata()
        } else {
            self.dir.symlink_metadata(path.as_relative_fs_path())
        };
        match meta {
            Ok(meta) if meta.is_file() => {
                self.delete_below(path).await?;
                self.upload_if_changed(path, Stamp::of(&meta)).await
            }
            Ok(meta) if meta.is_dir() => {
                self.delete_stored(path).await?;
                // A large tree takes a while to walk: keep it off the
                // runtime's other tasks.
                let files = tokio::task::block_in_place(|| self.walk(path))?;
                let present: std::collections::HashSet<WorkspacePath> = files.iter().map(|(p, _)| p.clone()).collect();
                let gone: Vec<WorkspacePath> = self
                    .stored_below(path)
                    .into_iter()
                    .filter(|p| !present.contains(p))
                    .collect();
                for p in gone {
                    self.delete_stored(&p).await?;
                }
                let uploads = futures_util::stream::iter(files)
                    .map(|(p, stamp)| async move { self.upload_if_changed(&p, stamp).await })
                    .buffer_unordered(PARALLEL_TRANSFERS)
                    .collect::<Vec<_>>()
                    .await;
                uploads.into_iter().collect()
            }
            // Symlinks, sockets and the like are not stored: treat as absent.
            Ok(_) => {
                self.delete_stored(path).await?;
                self.delete_below(path).await
            }
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                self.delete_stored(path).await?;
                self.delete_below(path).await
            }
            Err(e) => {
                // Unreadable (permissions changed by user code): nothing to
                // store until it is readable again; keep what storage has.
                tracing::warn!(%path, "cannot read for sync: {e}");
                Ok(())
            }
        }
    }

    async fn upload_if_changed(&self, path: &WorkspacePath, stamp: Stamp) -> Result<(), StorageError> {
        if self.lock().stored.get(path) == Some(&stamp) {
            return Ok(());
        }
        let local_err = |source| StorageError::LocalIo {
            path: path.to_string(),
            source,
        };
        let file = match self.dir.open(path.as_relative_fs_path()) {
            Ok(file) => file,
            // Gone meanwhile: the event for that will reconcile it.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(local_err(e)),
        };
        // Stamp of what we are about to read, so a change during the upload
        // is seen as a change next time.
        let stamp = Stamp::of(&file.metadata().map_err(local_err)?);
        let key = self.prefix.key_for(path)?;
        self.store
            .put_file(&key, tokio::fs::File::from_std(file.into_std()))
            .await?;
        self.lock().stored.insert(path.clone(), stamp);
        Ok(())
    }

    async fn delete_stored(&self, path: &WorkspacePath) -> Result<(), StorageError> {
        if path.is_root() || !self.lock().stored.contains_key(path) {
            return Ok(());
        }
        self.store.delete(&self.prefix.key_for(path)?).await?;
        self.lock().stored.remove(path);
        Ok(())
    }

    async fn delete_below(&self, path: &WorkspacePath) -> Result<(), StorageError> {
        for p in self.stored_below(path) {
            self.delete_stored(&p).await?;
        }
        Ok(())
    }

    fn stored_below(&self, path: &WorkspacePath) -> Vec<WorkspacePath> {
        let state = self.lock();
        state
            .stored
            .keys()
            .filter(|p| *p != path && p.starts_with(path))
            .cloned()
            .collect()
    }

    /// Every regular file at or below the directory `path`.
    fn walk(&self, path: &WorkspacePath) -> Result<Vec<(WorkspacePath, Stamp)>, StorageError> {
        let mut out = Vec::new();
        let mut stack = vec![path.clone()];
        while let Some(dir) = stack.pop() {
            let entries = if dir.is_root() {
                self.dir.entries()
            } else {
                self.dir.read_dir(dir.as_relative_fs_path())
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StorageError::LocalIo {
                        path: dir.to_string(),
                        source: e,
                    });
                }
            };
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(child) = dir.join(&name) else { continue };
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(child);
                } else if meta.is_file() {
                    out.push((child, Stamp::of(&meta)));
                }
            }
        }
        Ok(out)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    (std::process::id() as u64) << 32 | N.fetch_add(1, Ordering::Relaxed)
}
