//! Turns file-system notifications into dirty paths for [`Persister`] and
//! batched [`FsChange`] events for clients.
//!
//! inotify sees every change in the workspace, whoever makes it: the runner,
//! a program in a terminal, a `git clone`. Events are batched for 30 ms so a
//! burst of thousands becomes a handful of messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::message::{ChangeKind, FsChange};
use crate::path::WorkspacePath;
use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc};

use super::persister::Persister;

const BATCH_WINDOW: Duration = Duration::from_millis(30);
const MAX_BATCH: usize = 1000;

pub type FsEvents = broadcast::Sender<Arc<Vec<FsChange>>>;

/// Keeps the watch alive; dropping it stops watching.
pub struct WorkspaceWatcher {
    _watcher: RecommendedWatcher,
}

pub fn start(root: &Path, persister: Arc<Persister>, events: FsEvents) -> notify::Result<WorkspaceWatcher> {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<FsChange>>();
    let root_owned = root.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<Event>| match result {
        Ok(event) => {
            let changes = translate(&root_owned, &event);
            if !changes.is_empty() {
                let _ = tx.send(changes);
            }
        }
        Err(e) => {
            tracing::warn!("file watch error, rescanning: {e}");
            let _ = tx.send(vec![FsChange {
                path: WorkspacePath::root(),
                kind: ChangeKind::Modified,
            }]);
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    tokio::spawn(forward(rx, persister, events));
    Ok(WorkspaceWatcher { _watcher: watcher })
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
        persister.mark_all_dirty(batch.iter().map(|c| c.path.clone()));
        let _ = events.send(Arc::new(batch));
    }
}

fn translate(root: &Path, event: &Event) -> Vec<FsChange> {
    if event.need_rescan() {
        return vec![FsChange {
            path: WorkspacePath::root(),
            kind: ChangeKind::Modified,
        }];
    }
    let kinds: Vec<ChangeKind> = match event.kind {
        EventKind::Create(_) => vec![ChangeKind::Created],
        EventKind::Remove(_) => vec![ChangeKind::Removed],
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => vec![ChangeKind::Removed],
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => vec![ChangeKind::Created],
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => vec![ChangeKind::Removed, ChangeKind::Created],
        EventKind::Modify(_) => vec![ChangeKind::Modified],
        // Opens, reads and closes change nothing.
        EventKind::Access(_) => return Vec::new(),
        EventKind::Any | EventKind::Other => vec![ChangeKind::Modified],
    };
    event
        .paths
        .iter()
        .enumerate()
        .filter_map(|(i, abs)| {
            let path = relative(root, abs)?;
            let kind = *kinds.get(i).or(kinds.last())?;
            Some(FsChange { path, kind })
        })
        .collect()
}

/// The workspace path of an absolute path, or `None` for paths no client can
/// name (outside, not UTF-8, our own temporary files).
fn relative(root: &Path, abs: &Path) -> Option<WorkspacePath> {
    let rel: PathBuf = abs.strip_prefix(root).ok()?.to_path_buf();
    WorkspacePath::parse(rel.to_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_renames_and_ignores_temporaries() {
        let root = Path::new("/ws");
        let event = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::Both)))
            .add_path(PathBuf::from("/ws/a"))
            .add_path(PathBuf::from("/ws/b"));
        assert_eq!(
            translate(root, &event),
            vec![
                FsChange {
                    path: WorkspacePath::parse("a").unwrap(),
                    kind: ChangeKind::Removed
                },
                FsChange {
                    path: WorkspacePath::parse("b").unwrap(),
                    kind: ChangeKind::Created
                },
            ]
        );
        let tmp = Event::new(EventKind::Create(notify::event::CreateKind::File))
            .add_path(PathBuf::from("/ws/.cloudcode-tmp-1"));
        assert!(translate(root, &tmp).is_empty());
        let outside = Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path(PathBuf::from("/etc/x"));
        assert!(translate(root, &outside).is_empty());
    }
}
