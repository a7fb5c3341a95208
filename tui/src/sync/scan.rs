//! The local side: what the folder holds, as [`Node`]s, with each file's
//! identity (size, mtime, ctime, inode) beside its hash, so a file whose
//! identity did not change is not read again. An unchanged 10,000-file
//! folder is 10,000 `lstat`s, not 10,000 reads. ctime is in the identity
//! because a tool can put an mtime back; nothing can put a ctime back.
//!
//! Symlinks are recorded as links and never followed, also on the way:
//! every directory is listed, and every entry looked at and read, through
//! descriptors opened from the root one component at a time ([`beneath`]),
//! so a directory swapped for a link to elsewhere mid-scan brings nothing
//! of elsewhere in. Names that cannot exist in the sandbox (not UTF-8,
//! control characters, the runner's reserved prefix) are reported and left
//! out.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cloudcode_proto::path::WorkspacePath;
use serde::{Deserialize, Serialize};

use super::beneath::{self, Dir};
use super::model::{Node, Tree};
use super::rules::Rules;

/// A file that keeps changing while it is read is left for a later look
/// after this many tries (a long copy in progress), as it was last seen.
const HASH_TRIES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
        }
    }

    /// The same of what `lstat` said.
    pub fn of_stat(stat: &beneath::Stat) -> Self {
        Self {
            size: stat.size(),
            mtime_ns: stat.mtime_ns(),
            ctime_ns: stat.ctime_ns(),
            ino: stat.ino(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEntry {
    pub node: Node,
    /// Files only: the identity the hash is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// The folder as last seen.
pub type LocalIndex = BTreeMap<WorkspacePath, LocalEntry>;

pub fn tree_of(index: &LocalIndex) -> Tree {
    index.iter().map(|(p, e)| (p.clone(), e.node.clone())).collect()
}

#[derive(Debug, Default, Clone)]
pub struct ScanStats {
    pub entries: u64,
    /// Files read and hashed (the rest were known by identity).
    pub hashed: u64,
    pub hashed_bytes: u64,
    /// Paths left out, with why (unsyncable names).
    pub skipped: Vec<String>,
    /// Directories scanned (what a watcher watches).
    pub dirs: Vec<WorkspacePath>,
    /// Paths whose node is not what the index held before: new, changed
    /// or gone (also newly ignored ones).
    pub changed: Vec<WorkspacePath>,
    /// Files that changed during every read: kept in the index as they
    /// were last seen (or left out if new), never taken for deleted, and to
    /// be looked at again once they may have settled.
    pub unsettled: Vec<WorkspacePath>,
}

pub struct Scanner<'a> {
    pub root: &'a Path,
    pub rules: &'a mut Rules,
    /// Called after each file hashed, with its size (progress bars).
    pub on_hashed: &'a mut dyn FnMut(u64),
}

impl Scanner<'_> {
    /// Scans everything below `top` (the root for a full scan), replacing
    /// what `index` knew there. Hashes are reused from `index` where the
    /// identity matches.
    pub fn scan(&mut self, top: &WorkspacePath, index: &mut LocalIndex) -> io::Result<ScanStats> {
        let mut stats = ScanStats::default();
        let previous: LocalIndex = if top.is_root() {
            std::mem::take(index)
        } else {
            let below: Vec<WorkspacePath> = index.keys().filter(|p| p.starts_with(top)).cloned().collect();
            let mut taken = LocalIndex::new();
            for p in below {
                if let Some(e) = index.remove(&p) {
                    taken.insert(p, e);
                }
            }
            taken
        };
        self.rules.forget_below(top);
        if top.is_root() {
            self.rules.reload_exclude();
        }
        // The top itself (a subtree scan of a path that is now a file, a
        // link, or gone).
        if !top.is_root() {
            let found = match beneath::parent(self.root, top) {
                Ok(at) => self.entry(&at.dir, &at.name, top, &previous, &mut stats)?,
                Err(e) if beneath::is_gone(&e) => None,
                Err(e) => return Err(self.context(top, e)),
            };
            match found {
                Some(entry) if entry.node.is_dir() => {
                    index.insert(top.clone(), entry);
                }
                Some(entry) => {
                    index.insert(top.clone(), entry);
                    changed_below(top, &previous, index, &mut stats.changed);
                    return Ok(stats);
                }
                None => {
                    changed_below(top, &previous, index, &mut stats.changed);
                    return Ok(stats);
                }
            }
        }
        let mut stack = vec![top.clone()];
        let mut to_hash: Vec<ToHash> = Vec::new();
        let mut dirs_waiting = 0;
        while let Some(dir) = stack.pop() {
            self.rules.load_dir(&dir);
            stats.dirs.push(dir.clone());
            let abs = self.root.join(dir.as_relative_fs_path());
            // Gone, or no longer a directory (a link now): its parent's
            // entry says what it is.
            let (handle, listing) = match beneath::open(self.root, &dir).and_then(|d| {
                let names = d.list()?;
                Ok((d, names))
            }) {
                Ok(found) => found,
                Err(e) if beneath::is_gone(&e) => continue,
                Err(e) => return Err(self.context(&dir, e)),
            };
            let mut names = Vec::new();
            for name in listing {
                let Some(name) = name.to_str() else {
                    stats
                        .skipped
                        .push(format!("{}: the name is not UTF-8", abs.join(&name).display()));
                    continue;
                };
                let named = dir
                    .join(name)
                    .map_err(|e| e.to_string())
                    .and_then(|path| Ok((path, beneath::c_name(name).map_err(|e| e.to_string())?)));
                match named {
                    Ok(named) => names.push(named),
                    Err(e) => stats.skipped.push(format!("{}: {e}", abs.join(name).display())),
                }
            }
            names.sort();
            let handle = Arc::new(handle);
            for (path, name) in names {
                let entry = match self.look(&handle, &name, &path, &previous, &mut stats)? {
                    Look::Known(Some(entry)) => entry,
                    Look::Known(None) => continue,
                    Look::Hash => {
                        to_hash.push(ToHash {
                            dir: handle.clone(),
                            name,
                            path,
                        });
                        continue;
                    }
                };
                if entry.node.is_dir() {
                    stack.push(path.clone());
                }
                index.insert(path, entry);
            }
            if Arc::strong_count(&handle) > 1 {
                dirs_waiting += 1;
            }
            // Bounded: each directory waiting holds a descriptor.
            if to_hash.len() >= HASH_AT_ONCE || dirs_waiting >= DIRS_AT_ONCE {
                self.hash_all(std::mem::take(&mut to_hash), &previous, &mut stats, index)?;
                dirs_waiting = 0;
            }
        }
        self.hash_all(to_hash, &previous, &mut stats, index)?;
        changed_below(top, &previous, index, &mut stats.changed);
        Ok(stats)
    }

    /// Hashes the files found to need it, on as many threads as there are
    /// CPUs (a first sync's scan is hashing, with nothing else to do), and
    /// enters them in `index`.
    fn hash_all(
        &mut self,
        files: Vec<ToHash>,
        previous: &LocalIndex,
        stats: &mut ScanStats,
        index: &mut LocalIndex,
    ) -> io::Result<()> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(HASH_THREADS)
            .min(files.len().div_ceil(HASH_ALONE));
        let results: Vec<io::Result<Hashed>> = if threads <= 1 {
            files.iter().map(|f| hash_file(&f.dir, &f.name)).collect()
        } else {
            let next = AtomicUsize::new(0);
            let done: Vec<Vec<(usize, io::Result<Hashed>)>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(f) = files.get(i) else { break };
                                mine.push((i, hash_file(&f.dir, &f.name)));
                            }
                            mine
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            });
            // Each file was taken by exactly one worker: in order again.
            let mut done: Vec<(usize, io::Result<Hashed>)> = done.into_iter().flatten().collect();
            done.sort_unstable_by_key(|(i, _)| *i);
            done.into_iter().map(|(_, result)| result).collect()
        };
        for (file, hashed) in files.into_iter().zip(results) {
            let hashed = hashed.map_err(|e| self.context(&file.path, e))?;
            if let Some(entry) = self.settle(&file.path, hashed, previous, stats) {
                index.insert(file.path, entry);
            }
        }
        Ok(())
    }

    fn context(&self, path: &WorkspacePath, e: io::Error) -> io::Error {
        let abs = self.root.join(path.as_relative_fs_path());
        io::Error::new(e.kind(), format!("{}: {e}", abs.display()))
    }

    /// One path's entry, `name` in `dir`; `None` when it is gone, ignored
    /// or not syncable.
    fn entry(
        &mut self,
        dir: &Dir,
        name: &CStr,
        path: &WorkspacePath,
        previous: &LocalIndex,
        stats: &mut ScanStats,
    ) -> io::Result<Option<LocalEntry>> {
        match self.look(dir, name, path, previous, stats)? {
            Look::Known(found) => Ok(found),
            Look::Hash => {
                let hashed = hash_file(dir, name).map_err(|e| self.context(path, e))?;
                Ok(self.settle(path, hashed, previous, stats))
            }
        }
    }

    /// [`Scanner::entry`] short of hashing the file, when it needs it.
    fn look(
        &mut self,
        dir: &Dir,
        name: &CStr,
        path: &WorkspacePath,
        previous: &LocalIndex,
        stats: &mut ScanStats,
    ) -> io::Result<Look> {
        let abs = self.root.join(path.as_relative_fs_path());
        let meta = match dir.lstat(name) {
            Ok(meta) => meta,
            Err(e) if beneath::is_gone(&e) => return Ok(Look::Known(None)),
            Err(e) => return Err(self.context(path, e)),
        };
        if self.rules.is_ignored(path, meta.is_dir()) {
            return Ok(Look::Known(None));
        }
        stats.entries += 1;
        if meta.is_dir() {
            return Ok(Look::Known(Some(LocalEntry {
                node: Node::Dir,
                identity: None,
            })));
        }
        if meta.is_symlink() {
            let target = match dir.read_link(name) {
                Ok(target) => target,
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    stats
                        .skipped
                        .push(format!("{}: the link's target is not UTF-8", abs.display()));
                    return Ok(Look::Known(None));
                }
                // Replaced by something else since: looked at once settled.
                Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(Look::Known(None));
                }
                Err(e) => return Err(self.context(path, e)),
            };
            return Ok(Look::Known(Some(LocalEntry {
                node: Node::Symlink { target },
                identity: None,
            })));
        }
        if !meta.is_file() {
            stats
                .skipped
                .push(format!("{}: not a file, directory or link", abs.display()));
            return Ok(Look::Known(None));
        }
        let executable = meta.mode() & 0o111 != 0;
        let identity = Identity::of_stat(&meta);
        if let Some(known) = previous.get(path)
            && known.identity == Some(identity)
            && let Node::File { hash, .. } = &known.node
        {
            return Ok(Look::Known(Some(LocalEntry {
                node: Node::File {
                    hash: hash.clone(),
                    executable,
                },
                identity: Some(identity),
            })));
        }
        Ok(Look::Hash)
    }

    /// The entry a hashed file makes.
    fn settle(
        &mut self,
        path: &WorkspacePath,
        hashed: Hashed,
        previous: &LocalIndex,
        stats: &mut ScanStats,
    ) -> Option<LocalEntry> {
        match hashed {
            Hashed::File {
                hash,
                identity,
                executable,
            } => {
                stats.hashed += 1;
                stats.hashed_bytes += identity.size;
                (self.on_hashed)(identity.size);
                Some(LocalEntry {
                    node: Node::File { hash, executable },
                    identity: Some(identity),
                })
            }
            Hashed::Gone => None,
            // Half-written content is no version of the file, and its
            // absence would read as a deletion: what was last agreed stands
            // until it holds still.
            Hashed::Unsettled => {
                stats.unsettled.push(path.clone());
                previous
                    .get(path)
                    .filter(|known| matches!(known.node, Node::File { .. }))
                    .cloned()
            }
        }
    }
}

/// What a first look at a path found.
enum Look {
    /// Its entry (`None`: nothing to sync there).
    Known(Option<LocalEntry>),
    /// A file whose content must be read.
    Hash,
}

/// A file to hash, and the open directory it is in.
struct ToHash {
    dir: Arc<Dir>,
    name: CString,
    path: WorkspacePath,
}

/// Files found to hash before they are hashed together.
const HASH_AT_ONCE: usize = 4096;
/// Directories (open descriptors) those files may be in.
const DIRS_AT_ONCE: usize = 256;
/// Hashing threads at most.
const HASH_THREADS: usize = 4;
/// Files worth one more thread.
const HASH_ALONE: usize = 64;

/// What reading a file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Hashed {
    File {
        hash: String,
        identity: Identity,
        executable: bool,
    },
    /// Vanished, or replaced by something that is not a file.
    Gone,
    /// Changed during every read: still being written.
    Unsettled,
}

/// Hashes the file `name` in `dir` and returns the identity the hash is
/// of: taken from the open file before and after reading, and retried while
/// they differ (the file is being written).
pub fn hash_file(dir: &Dir, name: &CStr) -> io::Result<Hashed> {
    for _ in 0..HASH_TRIES {
        let mut file = match dir.open_file(name) {
            Ok(file) => file,
            Err(e) if beneath::is_gone(&e) => return Ok(Hashed::Gone),
            Err(e) => return Err(e),
        };
        // Opened without blocking (a FIFO put there meanwhile): a regular
        // file reads the same either way.
        let before = file.metadata()?;
        if !before.is_file() {
            return Ok(Hashed::Gone);
        }
        let mut hasher = blake3::Hasher::new();
        // As large as the file (and a byte, to see its end in one read), up
        // to 256 KiB: zeroing 256 KiB for each small file was a tenth of a
        // first sync's scan.
        let len = usize::try_from(before.len()).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; len.saturating_add(1).clamp(4096, 256 * 1024)];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let after = file.metadata()?;
        let identity = Identity::of(&before);
        // Also the name: a rename over it while we read means another file.
        let now = dir.lstat(name).map(|m| Identity::of_stat(&m)).ok();
        if Identity::of(&after) == identity && now == Some(identity) {
            return Ok(Hashed::File {
                hash: hasher.finalize().to_hex().to_string(),
                identity,
                executable: after.mode() & 0o111 != 0,
            });
        }
    }
    Ok(Hashed::Unsettled)
}

/// What differs at or below `top` between the index before a scan and after.
fn changed_below(top: &WorkspacePath, previous: &LocalIndex, index: &LocalIndex, out: &mut Vec<WorkspacePath>) {
    let node = |i: &LocalIndex, p: &WorkspacePath| i.get(p).map(|e| e.node.clone());
    for path in previous.keys() {
        if node(index, path) != node(previous, path) {
            out.push(path.clone());
        }
    }
    // Below `top` sorts from `top` to before `top0` ('/' is just below '0').
    let end = format!("{}0", top.as_str());
    let below = index
        .range(top.clone()..)
        .take_while(|(p, _)| top.is_root() || p.as_str() < end.as_str())
        .filter(|(p, _)| top.is_root() || p.starts_with(top));
    for (path, _) in below {
        if !previous.contains_key(path) {
            out.push(path.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    fn scan(root: &Path, rules: &mut Rules, top: &WorkspacePath, index: &mut LocalIndex) -> ScanStats {
        let mut ignore = |_| {};
        Scanner {
            root,
            rules,
            on_hashed: &mut ignore,
        }
        .scan(top, index)
        .unwrap()
    }

    /// Many files are hashed on several threads, in batches bounded by the
    /// directories they hold open: every file is found, with its own hash.
    #[test]
    fn a_large_tree_is_hashed_whole_and_each_file_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let dirs = DIRS_AT_ONCE + 10;
        for i in 0..dirs * 3 {
            let path = root.join(format!("d{}/f{i}.txt", i % dirs));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("content {i}")).unwrap();
        }
        let mut rules = Rules::new(root);
        let mut index = LocalIndex::new();
        let stats = scan(root, &mut rules, &WorkspacePath::root(), &mut index);
        assert_eq!(stats.hashed, (dirs * 3) as u64);
        for i in 0..dirs * 3 {
            let path = p(&format!("d{}/f{i}.txt", i % dirs));
            let expected = super::super::model::hash_bytes(format!("content {i}").as_bytes());
            match &index[&path].node {
                Node::File { hash, .. } => assert_eq!(hash, &expected, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_rescan_of_an_unchanged_folder_reads_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/deep")).unwrap();
        for i in 0..20 {
            std::fs::write(root.join(format!("src/deep/{i}.txt")), format!("{i}")).unwrap();
        }
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(root.join("x.log"), "ignored").unwrap();
        std::os::unix::fs::symlink("src", root.join("link")).unwrap();
        let mut rules = Rules::new(root);
        let mut index = LocalIndex::new();
        let first = scan(root, &mut rules, &WorkspacePath::root(), &mut index);
        assert_eq!(first.hashed, 21);
        assert!(!index.contains_key(&p("x.log")));
        assert_eq!(index[&p("link")].node, Node::Symlink { target: "src".into() });
        assert!(!index.contains_key(&p("link/deep")), "a link was followed");
        let second = scan(root, &mut rules, &WorkspacePath::root(), &mut index);
        assert_eq!(second.hashed, 0);
        assert_eq!(index.len(), 24);

        std::fs::write(root.join("src/deep/3.txt"), "changed").unwrap();
        std::fs::remove_file(root.join("src/deep/4.txt")).unwrap();
        let sub = scan(root, &mut rules, &p("src/deep"), &mut index);
        assert_eq!(sub.hashed, 1);
        assert!(!index.contains_key(&p("src/deep/4.txt")));
        assert_eq!(
            index[&p("src/deep/3.txt")].node,
            Node::File {
                hash: super::super::model::hash_bytes(b"changed"),
                executable: false
            }
        );
        assert_eq!(index.len(), 23);
        // A subtree scan of a path that is gone removes it and its children.
        std::fs::remove_dir_all(root.join("src")).unwrap();
        scan(root, &mut rules, &p("src"), &mut index);
        assert_eq!(index.len(), 2, "{index:?}");
    }

    #[test]
    fn a_directory_swapped_for_a_link_on_the_way_brings_nothing_from_outside() {
        let folder = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/sub/x.txt"), "mine").unwrap();
        std::fs::create_dir_all(outside.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("sub/x.txt"), "outside x").unwrap();
        std::fs::write(outside.path().join("sub/secret.txt"), "secret").unwrap();
        let mut rules = Rules::new(root);
        let mut index = LocalIndex::new();
        scan(root, &mut rules, &WorkspacePath::root(), &mut index);
        assert!(index.contains_key(&p("d/sub/x.txt")));

        // `d` becomes a link out of the folder; the events that follow
        // name paths below it, each looked at on its own.
        std::fs::remove_dir_all(root.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("d")).unwrap();
        for top in ["d/sub/x.txt", "d/sub/secret.txt", "d/sub"] {
            let stats = scan(root, &mut rules, &p(top), &mut index);
            assert_eq!(stats.hashed, 0, "{top}: read through the link");
            let below = |k: &WorkspacePath| k.starts_with(&p("d/sub")) && k.as_str() != "d/sub";
            assert!(!index.keys().any(below), "{top}: {index:?}");
        }
        assert!(!index.contains_key(&p("d/sub")), "{index:?}");
        scan(root, &mut rules, &WorkspacePath::root(), &mut index);
        assert_eq!(
            index[&p("d")].node,
            Node::Symlink {
                target: outside.path().to_str().unwrap().into()
            }
        );
        let outside_hashes = [b"outside x".as_slice(), b"secret"].map(super::super::model::hash_bytes);
        assert!(
            !index.iter().any(|(path, e)| path.starts_with(&p("d/sub"))
                || matches!(&e.node, Node::File { hash, .. } if outside_hashes.contains(hash))),
            "{index:?}"
        );
    }
}
