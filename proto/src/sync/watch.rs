//! Turns file-system notifications into dirty paths for [`Persister`] and
//! batched [`FsChange`] events for clients.
//!
//! inotify sees every change in the workspace, whoever makes it: the runner,
//! a program in a terminal, a `git clone`. Events are batched for 30 ms so a
//! burst of thousands becomes a handful of messages.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::message::FsChange;
use tokio::sync::{broadcast, mpsc};

use super::persister::Persister;
use super::tree_watch::{self, TreeWatch};

const BATCH_WINDOW: Duration = Duration::from_millis(30);
const MAX_BATCH: usize = 1000;

pub type FsEvents = broadcast::Sender<Arc<Vec<FsChange>>>;

/// Keeps the watch alive; dropping it stops watching.
pub struct WorkspaceWatcher {
    _watch: TreeWatch,
}

/// Watches `root` for `persister` and `events`' subscribers; the watch's
/// thread runs `on_thread_start` first.
pub fn start(
    root: &Path,
    persister: Arc<Persister>,
    events: FsEvents,
    on_thread_start: impl FnOnce() + Send + 'static,
) -> std::io::Result<WorkspaceWatcher> {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<FsChange>>();
    let watch = tree_watch::start(root, on_thread_start, move |changes| {
        let _ = tx.send(changes);
    })?;
    tokio::spawn(forward(rx, persister, events));
    Ok(WorkspaceWatcher { _watch: watch })
}

async fn forward(mut rx: mpsc::UnboundedReceiver<Vec<FsChange>>, persister: Arc<Persister>, events: FsEvents) {
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        batch.dedup();
        persister.mark_changes(&batch);
        let _ = events.send(Arc::new(batch));
    }
}
