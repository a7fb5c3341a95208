//! What a client that keeps its own copy of the tree (a folder sync) needs
//! from the runner: the whole tree in one answer (`manifest`), and the two
//! things `write` alone cannot make, symbolic links and the executable bit.
//!
//! A manifest hashes every file (BLAKE3), which would mean reading the whole
//! workspace on every request. Hashes are therefore kept per path with the
//! file's identity (size, mtime, ctime, inode): a file whose identity is
//! unchanged is not read again, so the second manifest of an unchanged
//! 10,000-file tree costs 10,000 `lstat`s. ctime is in the key because a
//! program can set mtime back to what it was; it cannot set ctime. A file
//! the runner writes itself is hashed as its bytes arrive
//! ([`HashCache::remember`]), so the manifest after a first sync's uploads
//! reads none of them back.

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cap_std::fs::{Dir, Metadata, MetadataExt, Permissions};
use cloudcode_proto::message::{EntryKind, ErrorCode, ManifestEntry};
use cloudcode_proto::path::{RESERVED_PREFIX, WorkspacePath};

use crate::files::{FileError, FileResult, Workspace, version_of};

/// Longest symlink target accepted (Linux's PATH_MAX less the NUL).
const MAX_TARGET: usize = 4095;
/// A file that keeps changing while it is hashed is reported without a hash
/// after this many tries rather than holding up the manifest.
const HASH_TRIES: usize = 3;

/// What makes a cached hash still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl Identity {
    fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
        }
    }
}

/// Content hashes by path, valid while the file's [`Identity`] holds.
#[derive(Default)]
pub struct HashCache {
    hashes: Mutex<HashMap<WorkspacePath, (Identity, String)>>,
}

impl HashCache {
    /// The runner's one cache: a runner serves one workspace.
    pub fn shared() -> &'static HashCache {
        static CACHE: OnceLock<HashCache> = OnceLock::new();
        CACHE.get_or_init(HashCache::default)
    }

    fn get(&self, path: &WorkspacePath, identity: Identity) -> Option<String> {
        let hashes = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        hashes
            .get(path)
            .filter(|(known, _)| *known == identity)
            .map(|(_, hash)| hash.clone())
    }

    /// Keeps the hash of content the runner itself just wrote at `path`,
    /// as the file now is (`meta`): it is not read again.
    pub fn remember(&self, path: WorkspacePath, meta: &Metadata, hash: String) {
        self.put(path, Identity::of(meta), hash);
    }

    fn put(&self, path: WorkspacePath, identity: Identity, hash: String) {
        let mut hashes = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        hashes.insert(path, (identity, hash));
    }

    /// After a walk of the whole tree: forget paths that no longer exist.
    fn keep_only(&self, seen: &HashSet<WorkspacePath>) {
        let mut hashes = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        hashes.retain(|path, _| seen.contains(path));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.hashes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A manifest ready to send: newline-delimited JSON, one entry per line.
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub entries: u64,
    /// Files whose content was read for this manifest (the rest came from
    /// the cache).
    pub hashed: u64,
}

/// Describes `top` and everything below it, never following a symlink:
/// for the root, every entry of the workspace; for another path, that path
/// first (a file or link: only it), then what is below it. Names no client
/// can address (not UTF-8, control characters, the runner's own temporary
/// files) are left out, as `list` leaves them out.
pub fn build(ws: &Workspace, top: &WorkspacePath, cache: &HashCache) -> FileResult<Manifest> {
    let mut out = Manifest {
        bytes: Vec::new(),
        entries: 0,
        hashed: 0,
    };
    let mut seen = HashSet::new();
    let mut stack = Vec::new();
    if top.is_root() {
        stack.push((ws.dir().try_clone().map_err(|e| io_error(top, e))?, top.clone()));
    } else {
        let rel = top.as_relative_fs_path();
        let meta = ws.dir().symlink_metadata(rel).map_err(|e| io_error(top, e))?;
        let sub = describe(ws.dir(), rel, top, &meta, cache, &mut out, &mut seen)?;
        stack.extend(sub.map(|dir| (dir, top.clone())));
    }
    while let Some((dir, path)) = stack.pop() {
        let listing = match dir.entries() {
            Ok(listing) => listing,
            // Removed while we walked: simply gone.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&path, e)),
        };
        let mut children: Vec<(String, WorkspacePath)> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| io_error(&path, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(child) = path.join(&name) else { continue };
            children.push((name, child));
        }
        // Sorted, so two manifests of one tree are the same bytes.
        children.sort();
        for (name, child) in children {
            let meta = match dir.symlink_metadata(&name) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&child, e)),
            };
            let sub = describe(&dir, Path::new(&name), &child, &meta, cache, &mut out, &mut seen)?;
            stack.extend(sub.map(|d| (d, child)));
        }
    }
    if top.is_root() {
        cache.keep_only(&seen);
    }
    Ok(out)
}

/// Appends the line of one entry (`rel` beneath `dir`); returns the
/// directory handle to walk when it is a directory.
fn describe(
    dir: &Dir,
    rel: &Path,
    path: &WorkspacePath,
    meta: &Metadata,
    cache: &HashCache,
    out: &mut Manifest,
    seen: &mut HashSet<WorkspacePath>,
) -> FileResult<Option<Dir>> {
    let kind = crate::files::kind_of(meta);
    let mut entry = ManifestEntry {
        path: path.clone(),
        kind,
        size: meta.len(),
        mtime_ms: mtime_ms(meta),
        version: None,
        hash: None,
        executable: false,
        target: None,
    };
    let mut sub = None;
    match kind {
        EntryKind::File => {
            let Some(h) = hash_file(dir, rel, path, meta, cache)? else {
                return Ok(None);
            };
            out.hashed += u64::from(h.read);
            entry.size = h.meta.len();
            entry.mtime_ms = mtime_ms(&h.meta);
            entry.version = Some(version_of(&h.meta));
            entry.executable = h.meta.mode() & 0o111 != 0;
            entry.hash = h.hash;
            seen.insert(path.clone());
        }
        EntryKind::Symlink => {
            entry.target = dir
                .read_link_contents(rel)
                .ok()
                .map(|t| t.to_string_lossy().into_owned());
        }
        EntryKind::Dir => match dir.open_dir(rel) {
            Ok(d) => sub = Some(d),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, e)),
        },
        EntryKind::Other => {}
    }
    // Serialising our own types cannot fail.
    let line = serde_json::to_vec(&entry).unwrap_or_default();
    out.bytes.extend_from_slice(&line);
    out.bytes.push(b'\n');
    out.entries += 1;
    Ok(sub)
}

struct Hashed {
    /// The metadata the hash is of (taken from the open file).
    meta: Metadata,
    /// `None` when the file could not be read (permissions) or would not
    /// hold still.
    hash: Option<String>,
    /// Whether the content was read (not in the cache).
    read: bool,
}

/// `None` when the file is gone.
fn hash_file(
    dir: &Dir,
    name: &Path,
    path: &WorkspacePath,
    lstat: &Metadata,
    cache: &HashCache,
) -> FileResult<Option<Hashed>> {
    if let Some(hash) = cache.get(path, Identity::of(lstat)) {
        return Ok(Some(Hashed {
            meta: lstat.clone(),
            hash: Some(hash),
            read: false,
        }));
    }
    let mut file = match dir.open(name) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Ok(Some(Hashed {
                meta: lstat.clone(),
                hash: None,
                read: false,
            }));
        }
        Err(e) => return Err(io_error(path, e)),
    };
    let mut last = file.metadata().map_err(|e| io_error(path, e))?;
    for _ in 0..HASH_TRIES {
        let hash = hash_reader(&mut file).map_err(|e| io_error(path, e))?;
        let after = file.metadata().map_err(|e| io_error(path, e))?;
        let identity = Identity::of(&last);
        // Changed while being read: the hash may be of neither version.
        if Identity::of(&after) == identity {
            cache.put(path.clone(), identity, hash.clone());
            return Ok(Some(Hashed {
                meta: after,
                hash: Some(hash),
                read: true,
            }));
        }
        last = after;
        file = match dir.open(name) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, e)),
        };
    }
    Ok(Some(Hashed {
        meta: last,
        hash: None,
        read: true,
    }))
}

fn hash_reader(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Makes `path` a symbolic link to `target`, through a temporary name and a
/// rename, so a link replacing a file is never seen half-made (no moment
/// without either).
pub fn symlink(ws: &Workspace, path: &WorkspacePath, target: &str, overwrite: bool) -> FileResult<()> {
    if path.is_root() {
        return Err(FileError::new(ErrorCode::AlreadyExists, "the workspace root exists"));
    }
    if target.is_empty() || target.len() > MAX_TARGET || target.contains('\0') {
        return Err(FileError::new(
            ErrorCode::BadRequest,
            format!("{path}: a link target is 1 to {MAX_TARGET} bytes without NUL"),
        ));
    }
    let dir = ws.dir();
    match dir.symlink_metadata(path.as_relative_fs_path()) {
        Ok(meta) if meta.is_dir() => {
            return Err(FileError::new(
                ErrorCode::IsADirectory,
                format!("{path}: is a directory"),
            ));
        }
        Ok(_) if !overwrite => {
            return Err(FileError::new(
                ErrorCode::AlreadyExists,
                format!("{path}: already exists"),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, e)),
    }
    if !overwrite {
        // Made at its name, the link fails with EEXIST if anything appeared
        // there since the check: nothing is ever replaced.
        return dir
            .symlink_contents(target, path.as_relative_fs_path())
            .map_err(|e| io_error(path, e));
    }
    let tmp = temporary_beside(path);
    dir.symlink_contents(target, &tmp).map_err(|e| io_error(path, e))?;
    if let Err(e) = dir.rename(&tmp, dir, path.as_relative_fs_path()) {
        let _ = dir.remove_file(&tmp);
        return Err(io_error(path, e));
    }
    Ok(())
}

/// Sets (where the read bits are: 0644 becomes 0755) or clears every
/// executable bit of a regular file. Symlinks are refused rather than
/// followed: their mode means nothing, and their target may be anywhere.
pub fn set_executable(ws: &Workspace, path: &WorkspacePath, executable: bool) -> FileResult<()> {
    let rel = path.as_relative_fs_path();
    let meta = ws.dir().symlink_metadata(rel).map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(FileError::new(
            ErrorCode::BadRequest,
            format!("{path}: only a regular file has an executable bit"),
        ));
    }
    let mode = meta.mode() & 0o7777;
    let wanted = if executable {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    };
    if wanted != mode {
        let perms = Permissions::from_std(std::fs::Permissions::from_mode(wanted));
        ws.dir().set_permissions(rel, perms).map_err(|e| io_error(path, e))?;
    }
    Ok(())
}

fn temporary_beside(path: &WorkspacePath) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{RESERVED_PREFIX}link-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    match path.parent() {
        Some(parent) if !parent.is_root() => Path::new(parent.as_str()).join(name),
        _ => PathBuf::from(name),
    }
}

fn mtime_ms(meta: &Metadata) -> i64 {
    crate::files::mtime_ns(meta) / 1_000_000
}

/// One mapping of I/O errors to the protocol's codes, the file ops' own.
fn io_error(path: &WorkspacePath, e: io::Error) -> FileError {
    FileError::io(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    fn entries(m: &Manifest) -> Vec<ManifestEntry> {
        m.bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_manifest_lists_the_tree_with_hashes_and_reads_an_unchanged_file_once() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        std::fs::create_dir_all(root.path().join("src/deep")).unwrap();
        std::fs::write(root.path().join("src/deep/a.txt"), "hello").unwrap();
        std::fs::write(root.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", root.path().join("py")).unwrap();
        std::fs::write(root.path().join(".cloudcode-tmp-x"), "hidden").unwrap();
        let cache = HashCache::default();

        let first = build(&ws, &WorkspacePath::root(), &cache).unwrap();
        let list = entries(&first);
        let paths: Vec<&str> = list.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["py", "run.sh", "src", "src/deep", "src/deep/a.txt"]);
        let a = &list[4];
        assert_eq!(a.hash.as_deref(), Some(blake3::hash(b"hello").to_hex().as_str()));
        assert!(a.version.is_some());
        assert!(!a.executable);
        assert!(list[1].executable);
        assert_eq!(list[0].kind, EntryKind::Symlink);
        assert_eq!(list[0].target.as_deref(), Some("/usr/bin/python3"));
        assert_eq!(first.hashed, 2);

        let second = build(&ws, &WorkspacePath::root(), &cache).unwrap();
        assert_eq!(second.hashed, 0, "unchanged files were read again");
        assert_eq!(second.bytes, first.bytes);

        std::fs::write(root.path().join("src/deep/a.txt"), "hellp").unwrap();
        let third = build(&ws, &WorkspacePath::root(), &cache).unwrap();
        assert_eq!(third.hashed, 1);
        assert_eq!(
            entries(&third)[4].hash.as_deref(),
            Some(blake3::hash(b"hellp").to_hex().as_str())
        );
        std::fs::remove_file(root.path().join("run.sh")).unwrap();
        build(&ws, &WorkspacePath::root(), &cache).unwrap();
        assert_eq!(cache.len(), 1, "a deleted file's hash is kept");

        let sub = build(&ws, &p("src"), &cache).unwrap();
        let paths: Vec<String> = entries(&sub).iter().map(|e| e.path.to_string()).collect();
        assert_eq!(paths, ["src", "src/deep", "src/deep/a.txt"]);
        let one = entries(&build(&ws, &p("src/deep/a.txt"), &cache).unwrap());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].hash.as_deref(), Some(blake3::hash(b"hellp").to_hex().as_str()));
        let link = entries(&build(&ws, &p("py"), &cache).unwrap());
        assert_eq!(link[0].target.as_deref(), Some("/usr/bin/python3"));
        assert_eq!(
            build(&ws, &p("nothing"), &cache).err().unwrap().code,
            ErrorCode::NotFound
        );
    }

    /// What a write hands on, kept as a write's commit keeps it.
    fn write(ws: &Workspace, cache: &HashCache, path: &str, chunks: &[&[u8]], create_new: bool) {
        let size = chunks.iter().map(|c| c.len() as u64).sum();
        let mut w = ws.begin_write(&p(path), size, u64::MAX, None, create_new).unwrap();
        for chunk in chunks {
            w.append(chunk).unwrap();
        }
        let committed = w.commit(ws).unwrap();
        let (meta, hash) = committed.content.expect("nothing touched the file");
        cache.remember(p(path), &meta, hash);
    }

    #[test]
    fn what_the_runner_wrote_is_in_the_manifest_without_being_read_back() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        let cache = HashCache::default();
        // New files (linked into place) and a replaced one (renamed over it).
        write(&ws, &cache, "a.txt", &[b"hel", b"lo"], true);
        write(&ws, &cache, "b.txt", &[], true);
        std::fs::write(root.path().join("c.txt"), "old").unwrap();
        write(&ws, &cache, "c.txt", &[b"new content"], false);

        let manifest = build(&ws, &WorkspacePath::root(), &cache).unwrap();
        assert_eq!(manifest.hashed, 0, "a file the runner wrote was read back");
        let hashes: Vec<(String, Option<String>)> = entries(&manifest)
            .into_iter()
            .map(|e| (e.path.to_string(), e.hash))
            .collect();
        let hash = |b: &[u8]| Some(blake3::hash(b).to_hex().to_string());
        assert_eq!(
            hashes,
            [
                ("a.txt".to_owned(), hash(b"hello")),
                ("b.txt".to_owned(), hash(b"")),
                ("c.txt".to_owned(), hash(b"new content")),
            ]
        );

        // A program's change since is read, not taken from the write.
        std::fs::write(root.path().join("a.txt"), "HELLO").unwrap();
        let again = build(&ws, &WorkspacePath::root(), &cache).unwrap();
        assert_eq!(again.hashed, 1);
        assert_eq!(entries(&again)[0].hash, hash(b"HELLO"));
    }

    #[test]
    fn links_and_the_executable_bit_are_made_as_asked() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        std::fs::write(root.path().join("f"), "x").unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();

        symlink(&ws, &p("l"), "/usr/bin/python3", false).unwrap();
        assert_eq!(
            std::fs::read_link(root.path().join("l")).unwrap(),
            Path::new("/usr/bin/python3")
        );
        let err = symlink(&ws, &p("f"), "l", false).unwrap_err();
        assert_eq!(err.code, ErrorCode::AlreadyExists);
        symlink(&ws, &p("f"), "d", true).unwrap();
        assert_eq!(std::fs::read_link(root.path().join("f")).unwrap(), Path::new("d"));
        assert_eq!(
            symlink(&ws, &p("d"), "x", true).unwrap_err().code,
            ErrorCode::IsADirectory
        );
        assert_eq!(symlink(&ws, &p("e"), "", true).unwrap_err().code, ErrorCode::BadRequest);
        let left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(RESERVED_PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");

        std::fs::write(root.path().join("run.sh"), "x").unwrap();
        std::fs::set_permissions(root.path().join("run.sh"), std::fs::Permissions::from_mode(0o640)).unwrap();
        set_executable(&ws, &p("run.sh"), true).unwrap();
        let mode = std::fs::metadata(root.path().join("run.sh")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o750);
        set_executable(&ws, &p("run.sh"), false).unwrap();
        let mode = std::fs::metadata(root.path().join("run.sh")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            set_executable(&ws, &p("l"), true).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
