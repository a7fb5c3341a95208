//! What the sync compares: a path's content on one side, reduced to what
//! both sides can hold (a file's bytes and executable bit, a link's target, a
//! directory). Sizes, owners, clocks and versions are not content: two sides
//! agree when their nodes are equal, whatever their mtimes say.

use std::collections::BTreeMap;

use cloudcode_proto::message::{EntryKind, ManifestEntry};
use cloudcode_proto::path::WorkspacePath;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    /// `hash`: BLAKE3 of the bytes, lowercase hex (what the runner's
    /// manifest reports).
    File {
        hash: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        executable: bool,
    },
    Symlink {
        target: String,
    },
    Dir,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir)
    }

    /// Same kind of thing (so one can replace the other in place).
    pub fn same_kind(&self, other: &Node) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
            Node::Dir => "directory",
        }
    }

    /// A short tag of the content, for conflict copies' names.
    pub fn short_tag(&self) -> String {
        match self {
            Node::File { hash, .. } => hash.chars().take(8).collect(),
            Node::Symlink { target } => blake3::hash(target.as_bytes()).to_hex().chars().take(8).collect(),
            Node::Dir => "dir".to_owned(),
        }
    }

    /// The node a manifest line describes; `None` for what the sync does not
    /// carry (sockets, FIFOs) or a file the runner could not hash.
    pub fn from_manifest(entry: &ManifestEntry) -> Option<Node> {
        match entry.kind {
            EntryKind::File => Some(Node::File {
                hash: entry.hash.clone()?,
                executable: entry.executable,
            }),
            EntryKind::Symlink => Some(Node::Symlink {
                target: entry.target.clone()?,
            }),
            EntryKind::Dir => Some(Node::Dir),
            EntryKind::Other => None,
        }
    }
}

/// One side's tree: every path below the root, with its node.
pub type Tree = BTreeMap<WorkspacePath, Node>;

pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Depth of a path (the root is 0).
pub fn depth(path: &WorkspacePath) -> usize {
    if path.is_root() {
        0
    } else {
        path.as_str().split('/').count()
    }
}

/// The ancestors of `path`, nearest first, the root excluded.
pub fn ancestors(path: &WorkspacePath) -> impl Iterator<Item = WorkspacePath> {
    std::iter::successors(path.parent(), |p| p.parent()).take_while(|p| !p.is_root())
}

/// Where a conflict keeps the side that did not win: beside the path, the
/// extension kept so editors still know the file (`a.conflict-remote-1f2e3d4c.txt`).
pub fn conflict_copy_path(path: &WorkspacePath, side: &str, node: &Node) -> Option<WorkspacePath> {
    let name = path.file_name()?;
    let tag = format!("conflict-{side}-{}", node.short_tag());
    let copy = match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{}.{tag}{}", &name[..dot], &name[dot..]),
        _ => format!("{name}.{tag}"),
    };
    path.parent()?.join(&copy).ok()
}

/// Whether a name is one of the sync's conflict copies: while one exists, a
/// conflict remains for the user to look at.
pub fn is_conflict_copy(path: &WorkspacePath) -> bool {
    path.file_name()
        .is_some_and(|n| n.contains(".conflict-local-") || n.contains(".conflict-remote-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    #[test]
    fn conflict_copies_keep_the_extension_and_are_recognised() {
        let node = Node::File {
            hash: "1f2e3d4c5b6a".into(),
            executable: false,
        };
        let copy = conflict_copy_path(&p("src/a.txt"), "remote", &node).unwrap();
        assert_eq!(copy.as_str(), "src/a.conflict-remote-1f2e3d4c.txt");
        assert!(is_conflict_copy(&copy));
        let copy = conflict_copy_path(&p(".env"), "local", &node).unwrap();
        assert_eq!(copy.as_str(), ".env.conflict-local-1f2e3d4c");
        assert!(is_conflict_copy(&copy));
        assert!(!is_conflict_copy(&p("src/a.txt")));
        let ancestors: Vec<String> = ancestors(&p("a/b/c")).map(|a| a.to_string()).collect();
        assert_eq!(ancestors, ["a/b", "a"]);
        assert_eq!(depth(&p("a/b/c")), 3);
    }
}
