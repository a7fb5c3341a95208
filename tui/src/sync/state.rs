//! What survives a restart, per project and folder, under the user's data
//! directory: the last state both sides agreed on (for the three-way
//! reconcile: a sync stopped for days resumes by comparing each side with
//! it, not by copying one over the other) and the folder's index (so an
//! unchanged folder is not read again).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::Tree;
use super::reconcile::Mode;
use super::scan::LocalIndex;

const FORMAT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SyncState {
    pub format: u32,
    pub project: String,
    pub folder: PathBuf,
    /// The runner instance the agreement was made with (informational: a
    /// restored sandbox holds the same files, so the base stays valid).
    #[serde(default)]
    pub instance: String,
    /// The mode the folder was last synced in, kept when `--mode` is not
    /// given again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    pub base: Tree,
    pub local: LocalIndex,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading the sync state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the sync state {path} is unreadable ({source}); move it away to start afresh (a first sync never deletes)"
    )]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("writing the sync state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("another sync of this folder with this project is running (it holds {path}): stop it first")]
    Busy { path: PathBuf },
    #[error("locking the sync state {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
}

/// Held while a sync runs. A second sync of the same folder and project
/// (another terminal, the TUI's `--sync`) would race the first one's
/// writes and agreed state, so it is refused; the lock goes with the
/// process, however it ends.
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    pub fn acquire(state_file: &Path) -> Result<Self, StateError> {
        let path = state_file.with_extension("lock");
        let err = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Busy { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
        }
    }
}

/// The directory the sync's state lives under: `explicit`
/// (`CLOUDCODE_SYNC_STATE_DIR`), else the user's data directory.
pub fn state_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(dir) => Some(dir.to_path_buf()),
        None => crate::settings::project_dirs().map(|d| d.data_dir().to_path_buf()),
    }
}

/// The mode `folder` last synced with `project` in, read without building
/// the rest of the state (the TUI's chooser offers it). `None` when the
/// folder never synced or its state cannot be read: the sync itself says
/// why when it starts.
pub fn remembered_mode(data_dir: &Path, project: &str, folder: &Path) -> Option<Mode> {
    #[derive(Deserialize)]
    struct Remembered {
        #[serde(default)]
        mode: Option<Mode>,
    }
    let folder = folder.canonicalize().ok()?;
    let bytes = std::fs::read(state_path(data_dir, project, &folder)).ok()?;
    serde_json::from_slice::<Remembered>(&bytes).ok()?.mode
}

/// Where the state of syncing `folder` (canonical) with `project` lives.
pub fn state_path(data_dir: &Path, project: &str, folder: &Path) -> PathBuf {
    let tag = blake3::hash(folder.as_os_str().as_encoded_bytes()).to_hex();
    data_dir
        .join("sync")
        .join(project)
        .join(format!("{}.json", &tag.as_str()[..16]))
}

impl SyncState {
    pub fn fresh(project: &str, folder: &Path) -> Self {
        Self {
            format: FORMAT,
            project: project.to_owned(),
            folder: folder.to_path_buf(),
            ..Self::default()
        }
    }

    /// The saved state, or a fresh one when there is none.
    pub fn load(path: &Path, project: &str, folder: &Path) -> Result<Self, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::fresh(project, folder)),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let state: SyncState = serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(state)
    }

    /// Written to a temporary file and renamed, so a crash leaves the old
    /// state or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::model::Node;
    use cloudcode_proto::path::WorkspacePath;

    #[test]
    fn one_sync_at_a_time_holds_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_path(dir.path(), "p", Path::new("/some/folder"));
        let held = StateLock::acquire(&state).unwrap();
        assert!(matches!(StateLock::acquire(&state), Err(StateError::Busy { .. })));
        let other = state_path(dir.path(), "p", Path::new("/another/folder"));
        assert!(StateLock::acquire(&other).is_ok(), "another folder is another sync");
        drop(held);
        assert!(StateLock::acquire(&state).is_ok());
    }

    #[test]
    fn the_remembered_mode_is_read_from_the_folders_state() {
        let data = tempfile::tempdir().unwrap();
        let folder = tempfile::tempdir().unwrap();
        assert_eq!(remembered_mode(data.path(), "p", folder.path()), None, "never synced");
        let canonical = folder.path().canonicalize().unwrap();
        let path = state_path(data.path(), "p", &canonical);
        let mut state = SyncState::fresh("p", &canonical);
        state.mode = Some(Mode::OneWaySafe);
        state.base.insert(WorkspacePath::parse("a").unwrap(), Node::Dir);
        state.save(&path).unwrap();
        assert_eq!(remembered_mode(data.path(), "p", folder.path()), Some(Mode::OneWaySafe));
        assert_eq!(
            remembered_mode(data.path(), "other", folder.path()),
            None,
            "per project"
        );
        std::fs::write(&path, "{").unwrap();
        assert_eq!(
            remembered_mode(data.path(), "p", folder.path()),
            None,
            "unreadable: the sync says why"
        );
    }

    #[test]
    fn state_round_trips_and_a_missing_one_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), "alpha", Path::new("/home/u/code"));
        assert_ne!(path, state_path(dir.path(), "alpha", Path::new("/home/u/other")));
        let fresh = SyncState::load(&path, "alpha", Path::new("/home/u/code")).unwrap();
        assert!(fresh.base.is_empty());
        let mut state = fresh;
        state.base.insert(WorkspacePath::parse("a/b").unwrap(), Node::Dir);
        state.save(&path).unwrap();
        let back = SyncState::load(&path, "alpha", Path::new("/home/u/code")).unwrap();
        assert_eq!(back.base, state.base);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            SyncState::load(&path, "alpha", Path::new("/x")),
            Err(StateError::Corrupt { .. })
        ));
    }
}
