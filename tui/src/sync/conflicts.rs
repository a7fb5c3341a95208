//! The conflicts a two-way sync leaves for the user, and their resolution.
//!
//! A conflict is a conflict copy beside its path (reconcile.rs): the path
//! holds the side that won, the copy the side that did not, and both sides
//! of the sync hold both. Resolving one is a change in the folder that the
//! sync then carries to the sandbox like any other:
//!
//! - keep the path's side: the copy is deleted;
//! - keep the copy's side: the copy is renamed over the path;
//! - keep both: the copy is renamed to a name without the conflict mark
//!   (`a.from-sandbox.txt`), so nothing is lost and nothing is pending.
//!
//! A resolution names the content the user saw; when either file changed
//! since, it is refused, so no one's newer work is thrown away unseen.

use std::io::{ErrorKind, Read};
use std::path::Path;

use cloudcode_proto::path::WorkspacePath;

use super::beneath::{self, Parent};
use super::model::{Node, is_conflict_copy};
use super::reconcile::Side;
use super::scan::LocalIndex;

/// Content larger than this is not shown (nor diffed).
pub const MAX_SHOWN: u64 = 256 * 1024;
/// A diff of more line pairs than this is shown as one side then the
/// other, not computed line by line.
const MAX_DIFF_CELLS: usize = 4_000_000;

/// What a side holds, as the conflicts view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    Binary { size: u64 },
    TooLarge { size: u64 },
    Link { target: String },
    Dir,
    Missing,
    Unreadable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffTag {
    Same,
    /// Only in the folder's version.
    Local,
    /// Only in the sandbox's version.
    Remote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub tag: DiffTag,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The path both sides changed: it holds the side that won.
    pub path: WorkspacePath,
    /// Beside it, the content of the side that did not.
    pub copy: WorkspacePath,
    /// Whose content the copy holds.
    pub copy_from: Side,
    /// The nodes as the sync last saw them: a resolution is refused when
    /// either changed since.
    pub at_path: Option<Node>,
    pub in_copy: Node,
    /// The folder's version and the sandbox's, for the view.
    pub local: Content,
    pub remote: Content,
    /// From the sandbox's version to the folder's, when both are text.
    pub diff: Vec<DiffLine>,
}

impl Conflict {
    /// Where each side's version is in the folder.
    pub fn local_path(&self) -> &WorkspacePath {
        match self.copy_from {
            Side::Local => &self.copy,
            Side::Remote => &self.path,
        }
    }

    pub fn remote_path(&self) -> &WorkspacePath {
        match self.copy_from {
            Side::Local => &self.path,
            Side::Remote => &self.copy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    KeepLocal,
    KeepRemote,
    KeepBoth,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{0} changed since the conflict was shown: look at it again")]
    Changed(WorkspacePath),
    #[error("{0} is a directory now: keeping the file would delete it; keep both, or move the directory away first")]
    WouldReplaceDir(WorkspacePath),
    #[error("{path}: {source}")]
    Io {
        path: WorkspacePath,
        #[source]
        source: std::io::Error,
    },
}

/// What a resolution did: said to the user, and the paths the sync must
/// look at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub message: String,
    pub touched: Vec<WorkspacePath>,
}

/// The path a conflict copy is of, and whose content it holds; None for
/// a name that is not a conflict copy.
pub fn original_of(copy: &WorkspacePath) -> Option<(WorkspacePath, Side)> {
    let name = copy.file_name()?;
    let (at, side, marker) = [(Side::Local, ".conflict-local-"), (Side::Remote, ".conflict-remote-")]
        .into_iter()
        .find_map(|(side, marker)| name.find(marker).map(|at| (at, side, marker)))?;
    let tag_and_rest = &name[at + marker.len()..];
    let tag_len = tag_and_rest
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(tag_and_rest.len(), |(i, _)| i);
    if at == 0 || tag_len == 0 {
        return None;
    }
    let original = format!("{}{}", &name[..at], &tag_and_rest[tag_len..]);
    Some((copy.parent()?.join(&original).ok()?, side))
}

/// Every conflict in the folder as the index has it, with both versions
/// read for the view.
pub fn find(root: &Path, index: &LocalIndex) -> Vec<Conflict> {
    index
        .iter()
        .filter(|(p, _)| is_conflict_copy(p))
        .filter_map(|(copy, entry)| {
            let (path, copy_from) = original_of(copy)?;
            let at_path = index.get(&path).map(|e| e.node.clone());
            let shown_path = content(root, &path, at_path.as_ref());
            let shown_copy = content(root, copy, Some(&entry.node));
            let (local, remote) = match copy_from {
                Side::Local => (shown_copy, shown_path),
                Side::Remote => (shown_path, shown_copy),
            };
            let diff = match (&remote, &local) {
                (Content::Text(old), Content::Text(new)) => diff_lines(old, new),
                _ => Vec::new(),
            };
            Some(Conflict {
                path,
                copy: copy.clone(),
                copy_from,
                at_path,
                in_copy: entry.node.clone(),
                local,
                remote,
                diff,
            })
        })
        .collect()
}

fn content(root: &Path, path: &WorkspacePath, node: Option<&Node>) -> Content {
    match node {
        None => Content::Missing,
        Some(Node::Dir) => Content::Dir,
        Some(Node::Symlink { target }) => Content::Link { target: target.clone() },
        Some(Node::File { .. }) => {
            let read = || -> std::io::Result<Content> {
                let at = beneath::parent(root, path)?;
                let file = at.dir.open_file(&at.name)?;
                let size = file.metadata()?.len();
                if size > MAX_SHOWN {
                    return Ok(Content::TooLarge { size });
                }
                let mut bytes = Vec::with_capacity(size as usize);
                file.take(MAX_SHOWN).read_to_end(&mut bytes)?;
                Ok(match String::from_utf8(bytes) {
                    Ok(text) if !text.contains('\0') => Content::Text(text),
                    _ => Content::Binary { size },
                })
            };
            read().unwrap_or_else(|e| match e.kind() {
                ErrorKind::NotFound => Content::Missing,
                _ => Content::Unreadable(e.to_string()),
            })
        }
    }
}

/// A line diff from `old` to `new`: the longest common subsequence of the
/// lines between their common start and end.
pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let line = |tag, text: &str| DiffLine {
        tag,
        text: text.to_owned(),
    };
    let mut out: Vec<DiffLine> = a[..prefix].iter().map(|t| line(DiffTag::Same, t)).collect();
    if ma.len().saturating_mul(mb.len()) > MAX_DIFF_CELLS {
        out.extend(ma.iter().map(|t| line(DiffTag::Remote, t)));
        out.extend(mb.iter().map(|t| line(DiffTag::Local, t)));
    } else {
        // lcs[i][j]: the common subsequence's length of ma[i..] and mb[j..].
        let width = mb.len() + 1;
        let mut lcs = vec![0u32; (ma.len() + 1) * width];
        for i in (0..ma.len()).rev() {
            for j in (0..mb.len()).rev() {
                lcs[i * width + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < ma.len() || j < mb.len() {
            if i < ma.len() && j < mb.len() && ma[i] == mb[j] {
                out.push(line(DiffTag::Same, ma[i]));
                i += 1;
                j += 1;
            } else if i < ma.len() && (j == mb.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1]) {
                out.push(line(DiffTag::Remote, ma[i]));
                i += 1;
            } else {
                out.push(line(DiffTag::Local, mb[j]));
                j += 1;
            }
        }
    }
    out.extend(a[a.len() - suffix..].iter().map(|t| line(DiffTag::Same, t)));
    out
}

/// Carries a resolution out in the folder; the sync brings the sandbox
/// along. Refused when either file is not what the user saw.
pub fn resolve(root: &Path, conflict: &Conflict, resolution: Resolution) -> Result<Resolved, ResolveError> {
    let io = |path: &WorkspacePath| {
        let path = path.clone();
        move |source| ResolveError::Io { path, source }
    };
    for (path, expected) in [
        (&conflict.copy, Some(&conflict.in_copy)),
        (&conflict.path, conflict.at_path.as_ref()),
    ] {
        if !holds(root, path, expected).map_err(io(path))? {
            return Err(ResolveError::Changed(path.clone()));
        }
    }
    let keep_copy = match (resolution, conflict.copy_from) {
        (Resolution::KeepBoth, _) => None,
        (Resolution::KeepLocal, Side::Local) | (Resolution::KeepRemote, Side::Remote) => Some(true),
        (Resolution::KeepLocal, Side::Remote) | (Resolution::KeepRemote, Side::Local) => Some(false),
    };
    let at = |path: &WorkspacePath| beneath::parent(root, path).map_err(io(path));
    let copy: Parent = at(&conflict.copy)?;
    let side = |s: Side| match s {
        Side::Local => "the folder's",
        Side::Remote => "the sandbox's",
    };
    let won = match conflict.copy_from {
        Side::Local => Side::Remote,
        Side::Remote => Side::Local,
    };
    match keep_copy {
        Some(false) => {
            copy.dir.remove_file(&copy.name).map_err(io(&conflict.copy))?;
            Ok(Resolved {
                message: format!("{}: kept {} version", conflict.path, side(won)),
                touched: vec![conflict.copy.clone()],
            })
        }
        Some(true) => {
            if conflict.at_path.as_ref().is_some_and(Node::is_dir) {
                return Err(ResolveError::WouldReplaceDir(conflict.path.clone()));
            }
            let dest = at(&conflict.path)?;
            copy.dir
                .rename(&copy.name, &dest.dir, &dest.name)
                .map_err(io(&conflict.path))?;
            Ok(Resolved {
                message: format!("{}: kept {} version", conflict.path, side(conflict.copy_from)),
                touched: vec![conflict.copy.clone(), conflict.path.clone()],
            })
        }
        None => {
            let label = match conflict.copy_from {
                Side::Local => "from-folder",
                Side::Remote => "from-sandbox",
            };
            // A link, not a rename, so a name someone took meanwhile is
            // never replaced; then the conflict copy goes.
            let mut n = 1;
            let kept = loop {
                let Some(name) = both_name(&conflict.path, label, n) else {
                    return Err(ResolveError::Io {
                        path: conflict.path.clone(),
                        source: std::io::Error::new(ErrorKind::InvalidInput, "no name to keep the copy under"),
                    });
                };
                let dest = at(&name)?;
                match copy.dir.hard_link(&copy.name, &dest.dir, &dest.name) {
                    Ok(()) => break name,
                    Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 100 => n += 1,
                    Err(e) => return Err(ResolveError::Io { path: name, source: e }),
                }
            };
            copy.dir.remove_file(&copy.name).map_err(io(&conflict.copy))?;
            Ok(Resolved {
                message: format!(
                    "{}: kept both; {} version is in {kept}",
                    conflict.path,
                    side(conflict.copy_from)
                ),
                touched: vec![conflict.copy.clone(), kept],
            })
        }
    }
}

/// `a.from-sandbox.txt`, then `a.from-sandbox-2.txt`, ...
fn both_name(path: &WorkspacePath, label: &str, n: usize) -> Option<WorkspacePath> {
    let name = path.file_name()?;
    let label = if n > 1 {
        format!("{label}-{n}")
    } else {
        label.to_owned()
    };
    let kept = match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{}.{label}{}", &name[..dot], &name[dot..]),
        _ => format!("{name}.{label}"),
    };
    path.parent()?.join(&kept).ok()
}

/// Whether the folder holds `expected` at `path` now (read again, not
/// taken from the index).
fn holds(root: &Path, path: &WorkspacePath, expected: Option<&Node>) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let at = match beneath::parent(root, path) {
        Ok(at) => at,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(expected.is_none()),
        Err(e) => return Err(e),
    };
    let meta = match at.dir.metadata(&at.name) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(expected.is_none()),
        Err(e) => return Err(e),
    };
    Ok(match expected {
        None => false,
        Some(Node::Dir) => meta.is_dir(),
        Some(Node::Symlink { target }) => meta.file_type().is_symlink() && at.dir.read_link(&at.name)? == *target,
        Some(Node::File { hash, executable }) => {
            let exec = meta.permissions().mode() & 0o111 != 0;
            meta.is_file() && exec == *executable && {
                let mut hasher = blake3::Hasher::new();
                std::io::copy(&mut at.dir.open_file(&at.name)?, &mut hasher)?;
                hasher.finalize().to_hex().as_str() == hash
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::model::conflict_copy_path;
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    #[test]
    fn a_copy_names_its_path_and_side() {
        let node = Node::File {
            hash: "1f2e3d4c5b6a".into(),
            executable: false,
        };
        for (path, side) in [
            ("src/a.txt", "remote"),
            (".env", "local"),
            ("Makefile", "remote"),
            ("a.b.c", "local"),
        ] {
            let copy = conflict_copy_path(&p(path), side, &node).unwrap();
            let (original, found) = original_of(&copy).unwrap();
            assert_eq!(original.as_str(), path);
            assert_eq!(found.name(), side);
        }
        assert_eq!(original_of(&p("src/a.txt")), None);
        assert_eq!(
            both_name(&p("d/a.txt"), "from-sandbox", 1).unwrap().as_str(),
            "d/a.from-sandbox.txt"
        );
        assert_eq!(
            both_name(&p(".env"), "from-folder", 2).unwrap().as_str(),
            ".env.from-folder-2"
        );
    }

    #[test]
    fn the_diff_keeps_common_lines_and_marks_each_sides_own() {
        let diff = diff_lines("a\nb\nc\nd\n", "a\nB\nc\nd\ne\n");
        let shown: Vec<(DiffTag, &str)> = diff.iter().map(|l| (l.tag, l.text.as_str())).collect();
        assert_eq!(
            shown,
            [
                (DiffTag::Same, "a"),
                (DiffTag::Remote, "b"),
                (DiffTag::Local, "B"),
                (DiffTag::Same, "c"),
                (DiffTag::Same, "d"),
                (DiffTag::Local, "e"),
            ]
        );
        assert!(diff_lines("same\n", "same\n").iter().all(|l| l.tag == DiffTag::Same));
    }
}
