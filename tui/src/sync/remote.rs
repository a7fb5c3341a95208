//! The sandbox's side as the sync sees it: nodes from the runner's
//! manifest, plus each file's version (what `base_version` names, and how
//! the sync recognises its own writes coming back as `fs_changed`: an event
//! for a path whose version is the one our write returned is our echo).

use std::collections::{BTreeSet, HashMap};

use cloudcode_proto::client::{ClientError, RunnerHandle};
use cloudcode_proto::message::{ErrorCode, ManifestEntry};
use cloudcode_proto::path::WorkspacePath;

use super::model::{Node, Tree};

#[derive(Debug, Default, Clone)]
pub struct RemoteView {
    pub tree: Tree,
    pub versions: HashMap<WorkspacePath, String>,
    /// Paths whose content the sync cannot know this round (a file the
    /// runner may not read, a socket): left out of the reconcile entirely,
    /// so they are neither deleted nor overwritten.
    pub unknown: BTreeSet<WorkspacePath>,
}

/// The runner's manifest of `top` and everything below it; none when `top`
/// (not the root) is gone.
pub async fn fetch(handle: &RunnerHandle, top: &WorkspacePath) -> Result<Vec<ManifestEntry>, ClientError> {
    match handle.manifest(top).await {
        Ok(entries) => Ok(entries),
        // Gone, and so is everything below it.
        Err(ClientError::Remote {
            code: ErrorCode::NotFound | ErrorCode::NotADirectory | ErrorCode::OutsideWorkspace,
            ..
        }) if !top.is_root() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

impl RemoteView {
    /// Replaces `top` and everything below it (the root: everything) with
    /// the runner's manifest of it.
    pub async fn load(&mut self, handle: &RunnerHandle, top: &WorkspacePath) -> Result<u64, ClientError> {
        let entries = fetch(handle, top).await?;
        Ok(self.apply(top, entries))
    }

    /// Replaces `top` and everything below it with `entries`, a manifest of
    /// it ([`fetch`]); returns how many there were.
    pub fn apply(&mut self, top: &WorkspacePath, entries: Vec<ManifestEntry>) -> u64 {
        self.forget_below(top);
        let count = entries.len() as u64;
        for entry in entries {
            match Node::from_manifest(&entry) {
                Some(node) => {
                    if let Some(version) = entry.version {
                        self.versions.insert(entry.path.clone(), version);
                    }
                    self.tree.insert(entry.path, node);
                }
                None => {
                    self.unknown.insert(entry.path);
                }
            }
        }
        count
    }

    fn forget_below(&mut self, top: &WorkspacePath) {
        let keep = |p: &WorkspacePath| !p.starts_with(top);
        self.tree.retain(|p, _| keep(p));
        self.versions.retain(|p, _| keep(p));
        self.unknown.retain(keep);
    }

    /// Brings the view up to date for paths the runner said changed: a
    /// manifest of each (the runner hashes only what changed). Our own
    /// writes come back with the version and hash we recorded, so they
    /// change nothing.
    /// Returns the paths whose node the refresh changed (new, different
    /// or gone): what the sandbox changed, as opposed to the echoes of the
    /// sync's own writes, which change nothing.
    pub async fn refresh(
        &mut self,
        handle: &RunnerHandle,
        paths: &BTreeSet<WorkspacePath>,
    ) -> Result<Vec<WorkspacePath>, ClientError> {
        let mut done: Vec<&WorkspacePath> = Vec::new();
        let mut changed = Vec::new();
        for path in paths {
            // A path below one just loaded is already fresh (sorted: a
            // parent comes before its children).
            if done.iter().any(|d| path.starts_with(d)) {
                continue;
            }
            let before = self.subtree(path);
            self.load(handle, path).await?;
            let after = self.subtree(path);
            changed.extend(
                before
                    .iter()
                    .filter(|(p, n)| after.get(*p) != Some(n))
                    .map(|(p, _)| p.clone()),
            );
            changed.extend(after.keys().filter(|p| !before.contains_key(*p)).cloned());
            done.push(path);
        }
        Ok(changed)
    }

    /// `top` and what is below it.
    fn subtree(&self, top: &WorkspacePath) -> Tree {
        if top.is_root() {
            return self.tree.clone();
        }
        // Below `top` sorts from it to before `top0` ('/' is just below '0').
        let end = format!("{}0", top.as_str());
        self.tree
            .range(top.clone()..)
            .take_while(|(p, _)| p.as_str() < end.as_str())
            .filter(|(p, _)| p.starts_with(top))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect()
    }

    /// Records one of our own moves: what was below `from` is below `to`,
    /// with the same versions (a rename keeps a file's mtime and size).
    pub fn record_move(&mut self, from: &WorkspacePath, to: &WorkspacePath) {
        let moved: Vec<(WorkspacePath, Node)> = self
            .tree
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        for (path, node) in moved {
            self.tree.remove(&path);
            let version = self.versions.remove(&path);
            if let Some(new) = super::apply::rebase(&path, from, to) {
                if let Some(version) = version {
                    self.versions.insert(new.clone(), version);
                }
                self.tree.insert(new, node);
            }
        }
    }

    /// Records the result of one of our own changes.
    pub fn record(&mut self, path: &WorkspacePath, node: Option<Node>, version: Option<String>) {
        match node {
            Some(node) => {
                self.tree.insert(path.clone(), node);
            }
            None => {
                self.forget_below(path);
            }
        }
        match version {
            Some(v) => {
                self.versions.insert(path.clone(), v);
            }
            None => {
                self.versions.remove(path);
            }
        }
    }
}
