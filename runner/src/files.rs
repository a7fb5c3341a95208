//! File operations confined to the workspace.
//!
//! Every path a client names is already a [`WorkspacePath`] (no `..`, no
//! absolute paths). What remains is symlinks: a link planted by user code may
//! point anywhere. All access therefore goes through a `cap_std::fs::Dir`
//! handle on the workspace root, which resolves each component beneath that
//! handle and refuses any resolution that would leave it, so a link out of the
//! workspace is an error rather than a way out.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata};
use cloudcode_proto::message::{Entry, EntryKind, ErrorCode};
use cloudcode_proto::path::{RESERVED_PREFIX, WorkspacePath};

/// A failed file operation, ready to be sent to the client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FileError {
    pub code: ErrorCode,
    pub message: String,
}

impl FileError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The protocol's error for an I/O error on `path`, by its kind.
    pub(crate) fn io(path: &WorkspacePath, e: io::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
            ErrorKind::NotADirectory => ErrorCode::NotADirectory,
            ErrorKind::IsADirectory => ErrorCode::IsADirectory,
            ErrorKind::DirectoryNotEmpty => ErrorCode::DirectoryNotEmpty,
            // cap-std refuses an escape (or a symlink loop it will not
            // follow) with a PermissionDenied of its own making, one that
            // no system call returned: the OS's EACCES carries its errno.
            ErrorKind::PermissionDenied if e.raw_os_error().is_none() => ErrorCode::OutsideWorkspace,
            _ if e.raw_os_error() == Some(libc::ELOOP) => ErrorCode::OutsideWorkspace,
            _ => ErrorCode::Internal,
        };
        let reason = match code {
            ErrorCode::NotFound => "no such file or directory".to_owned(),
            ErrorCode::OutsideWorkspace => "a symlink on this path leads outside the workspace".to_owned(),
            _ => e.to_string(),
        };
        Self::new(code, format!("{path}: {reason}"))
    }
}

pub type FileResult<T> = Result<T, FileError>;

/// The project's files.
pub struct Workspace {
    dir: Dir,
    root: PathBuf,
    /// Longest path storage can keep (its key limit less the project's
    /// prefix): longer ones are refused before anything is written.
    max_stored_path: usize,
}

impl Workspace {
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        Ok(Self {
            dir: Dir::open_ambient_dir(&root, ambient_authority())?,
            root,
            max_stored_path: usize::MAX,
        })
    }

    /// Refuses to create paths longer than `bytes`: storage could never
    /// keep them (a key is at most 1024 bytes, prefix included).
    pub fn limit_stored_paths(mut self, bytes: usize) -> Self {
        self.max_stored_path = bytes;
        self
    }

    fn check_storable(&self, path: &WorkspacePath) -> FileResult<()> {
        if path.as_str().len() > self.max_stored_path {
            return Err(FileError::new(
                ErrorCode::InvalidPath,
                format!(
                    "{path}: {} bytes is longer than storage can keep ({} bytes at most in this project); \
                     it would exist only until the sandbox stops",
                    path.as_str().len(),
                    self.max_stored_path
                ),
            ));
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory handle, for other confined access (persistence).
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    pub fn list(&self, path: &WorkspacePath) -> FileResult<Vec<Entry>> {
        let io = |e| FileError::io(path, e);
        let entries = if path.is_root() {
            self.dir.entries()
        } else {
            self.dir.read_dir(path.as_relative_fs_path())
        }
        .map_err(io)?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // Not UTF-8: no client can name it anyway.
            };
            // Names a client cannot address (control characters, our own
            // temporary files) are not shown either.
            let Ok(child) = path.join(&name) else { continue };
            match self.entry(&child) {
                Ok(e) => out.push(e),
                // Deleted between listing and stat: simply gone.
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| (a.kind != EntryKind::Dir, &a.name).cmp(&(b.kind != EntryKind::Dir, &b.name)));
        Ok(out)
    }

    /// Describes `path` without following a final symlink.
    pub fn entry(&self, path: &WorkspacePath) -> FileResult<Entry> {
        let meta = self.symlink_metadata(path)?;
        let kind = kind_of(&meta);
        let target = if kind == EntryKind::Symlink {
            self.dir
                .read_link_contents(path.as_relative_fs_path())
                .ok()
                .map(|t| t.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(Entry {
            name: path.file_name().unwrap_or("").to_owned(),
            path: path.clone(),
            kind,
            size: meta.len(),
            mtime_ms: mtime_ns(&meta) / 1_000_000,
            target,
            version: (kind == EntryKind::File).then(|| version_of(&meta)),
        })
    }

    fn symlink_metadata(&self, path: &WorkspacePath) -> FileResult<Metadata> {
        if path.is_root() {
            return self.dir.dir_metadata().map_err(|e| FileError::io(path, e));
        }
        self.dir
            .symlink_metadata(path.as_relative_fs_path())
            .map_err(|e| FileError::io(path, e))
    }

    /// The version of the file at `path` (following symlinks inside the
    /// workspace), or `None` if it does not exist.
    pub fn current_version(&self, path: &WorkspacePath) -> FileResult<Option<String>> {
        match self.dir.metadata(path.as_relative_fs_path()) {
            Ok(meta) if meta.is_dir() => Err(FileError::new(
                ErrorCode::IsADirectory,
                format!("{path}: is a directory"),
            )),
            Ok(meta) => Ok(Some(version_of(&meta))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::io(path, e)),
        }
    }

    /// Opens a regular file for reading; returns it with its size and version.
    pub fn open_read(&self, path: &WorkspacePath, max_size: u64) -> FileResult<(std::fs::File, u64, String)> {
        let file = self
            .dir
            .open(path.as_relative_fs_path())
            .map_err(|e| FileError::io(path, e))?;
        let meta = file.metadata().map_err(|e| FileError::io(path, e))?;
        if meta.is_dir() {
            return Err(FileError::new(
                ErrorCode::IsADirectory,
                format!("{path}: is a directory"),
            ));
        }
        if !meta.is_file() {
            return Err(FileError::new(
                ErrorCode::BadRequest,
                format!("{path}: not a regular file"),
            ));
        }
        if meta.len() > max_size {
            return Err(too_large(path, meta.len(), max_size));
        }
        let version = version_of(&meta);
        Ok((file.into_std(), meta.len(), version))
    }

    /// Starts an atomic write: checks the preconditions and creates a
    /// temporary file beside the destination. Nothing is visible at `path`
    /// until [`PendingWrite::commit`].
    pub fn begin_write(
        &self,
        path: &WorkspacePath,
        size: u64,
        max_size: u64,
        base_version: Option<&str>,
        create_new: bool,
    ) -> FileResult<PendingWrite> {
        if path.is_root() {
            return Err(FileError::new(
                ErrorCode::IsADirectory,
                "the workspace root is a directory",
            ));
        }
        if size > max_size {
            return Err(too_large(path, size, max_size));
        }
        self.check_storable(path)?;
        // One lstat answers for the common case (a new file, or a file
        // saved again); a link is resolved to its target first.
        let found = match self.dir.symlink_metadata(path.as_relative_fs_path()) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(FileError::io(path, e)),
        };
        let (target, existing) = match found {
            // Write through a symlink to its target, as editors do, as long
            // as the target is inside the workspace.
            Some(meta) if meta.file_type().is_symlink() => {
                let target = self.resolve_link(path)?;
                self.check_storable(&target)?;
                let existing = match self.dir.metadata(target.as_relative_fs_path()) {
                    Ok(meta) => Some(meta),
                    Err(e) if e.kind() == ErrorKind::NotFound => None,
                    Err(e) => return Err(FileError::io(&target, e)),
                };
                (target, existing)
            }
            found => (path.clone(), found),
        };
        if existing.as_ref().is_some_and(Metadata::is_dir) {
            return Err(FileError::new(
                ErrorCode::IsADirectory,
                format!("{path}: is a directory"),
            ));
        }
        let current = existing.as_ref().map(version_of);
        if create_new && current.is_some() {
            return Err(FileError::new(
                ErrorCode::AlreadyExists,
                format!("{path}: already exists"),
            ));
        }
        check_base_version(path, base_version, current.as_deref())?;
        let parent = target.parent().unwrap_or_default();
        let try_create = || {
            let name = format!("{RESERVED_PREFIX}{}", temporary_number());
            let rel = if parent.is_root() {
                PathBuf::from(name)
            } else {
                Path::new(parent.as_str()).join(name)
            };
            let created = self
                .dir
                .open_with(&rel, cap_std::fs::OpenOptions::new().write(true).create_new(true));
            (rel, created)
        };
        // Never an existing file: one left by an earlier runner under the
        // same pid (a container's runner restarts as the same pid) may be
        // another party's content kept aside, and is not truncated.
        let (mut tmp_rel, mut created) = try_create();
        for _ in 0..8 {
            if !created.as_ref().is_err_and(|e| e.kind() == ErrorKind::AlreadyExists) {
                break;
            }
            (tmp_rel, created) = try_create();
        }
        let file = match created {
            Ok(file) => file.into_std(),
            // Said of the parent, which is what is wrong: missing, or not a
            // directory.
            Err(e) => {
                return Err(match self.symlink_metadata(&parent) {
                    Ok(meta) if !meta.is_dir() => {
                        FileError::new(ErrorCode::NotADirectory, format!("{parent}: not a directory"))
                    }
                    Ok(_) => FileError::io(path, e),
                    Err(parent_error) => parent_error,
                });
            }
        };
        // A save keeps the file's mode: `run.sh` stays executable.
        if let Some(meta) = existing.as_ref().filter(|meta| meta.is_file()) {
            use std::os::unix::fs::PermissionsExt;
            let mode = cap_std::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(mode)) {
                let _ = self.dir.remove_file(&tmp_rel);
                return Err(FileError::io(path, e));
            }
        }
        Ok(PendingWrite {
            target,
            tmp_rel,
            file: Some(file),
            hasher: blake3::Hasher::new(),
            base_version: base_version.map(str::to_owned),
            create_new,
        })
    }

    /// Opens the directory `path` (not through a link out of the
    /// workspace) to make several files in it with [`Workspace::create_in`].
    pub fn open_parent_of(&self, path: &WorkspacePath) -> Option<Dir> {
        let parent = path.parent().unwrap_or_default();
        if parent.is_root() {
            self.dir.try_clone().ok()
        } else {
            self.dir.open_dir(parent.as_relative_fs_path()).ok()
        }
    }

    /// Makes `path` with `content` in `dir` (its directory, opened by
    /// [`Workspace::open_parent_of`]) where nothing is: a `create_new`
    /// write whose bytes are all here, in a few system calls on one open
    /// directory instead of the general path's three resolutions of the
    /// path. `None` when that did not go through (something is there, the
    /// disk is full, ...): nothing was made, and the general path (which
    /// answers each case as it always has) is the one to take.
    pub fn create_in(&self, dir: &Dir, path: &WorkspacePath, content: &[u8], max_size: u64) -> Option<Committed> {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Whether unnamed files can be made and linked here (`O_TMPFILE`
        /// and `/proc`); found out once.
        static UNNAMED: AtomicBool = AtomicBool::new(true);
        if content.len() as u64 > max_size || self.check_storable(path).is_err() {
            return None;
        }
        let name = std::ffi::CString::new(path.file_name()?).ok()?;
        let placed = match UNNAMED.load(Ordering::Relaxed) {
            true => place_unnamed(dir, &name, content),
            false => Placed::Unsupported,
        };
        let (file, before) = match placed {
            Placed::Done(file, before) => (file, before),
            Placed::Refused => return None,
            Placed::Unsupported => {
                UNNAMED.store(false, Ordering::Relaxed);
                place_named(dir, &name, content)?
            }
        };
        // A program writing to it since would have changed its mtime or size.
        let content = Metadata::from_file(&file)
            .ok()
            .filter(|after| mtime_ns(after) == mtime_ns(&before) && after.len() == before.len())
            .map(|after| (after, blake3::hash(content).to_hex().to_string()));
        Some(Committed {
            version: version_of(&before),
            content,
        })
    }

    /// Where the link at `path` leads, as long as that is in the workspace.
    fn resolve_link(&self, path: &WorkspacePath) -> FileResult<WorkspacePath> {
        let resolved = self
            .dir
            .canonicalize(path.as_relative_fs_path())
            .map_err(|e| FileError::io(path, e))?;
        resolved
            .to_str()
            .and_then(|s| WorkspacePath::parse(s).ok())
            .ok_or_else(|| {
                FileError::new(
                    ErrorCode::OutsideWorkspace,
                    format!("{path}: symlink target cannot be written"),
                )
            })
    }

    pub fn create_dir(&self, path: &WorkspacePath) -> FileResult<()> {
        if path.is_root() {
            return Err(FileError::new(
                ErrorCode::AlreadyExists,
                "the workspace root already exists",
            ));
        }
        self.check_storable(path)?;
        self.dir
            .create_dir(path.as_relative_fs_path())
            .map_err(|e| FileError::io(path, e))
    }

    pub fn rename(&self, from: &WorkspacePath, to: &WorkspacePath, overwrite: bool) -> FileResult<()> {
        if from.is_root() || to.is_root() {
            return Err(FileError::new(
                ErrorCode::BadRequest,
                "the workspace root cannot be renamed",
            ));
        }
        if to.starts_with(from) && to != from {
            return Err(FileError::new(
                ErrorCode::BadRequest,
                format!("cannot move {from} into itself"),
            ));
        }
        self.symlink_metadata(from)?;
        self.check_storable(to)?;
        if !overwrite && self.dir.symlink_metadata(to.as_relative_fs_path()).is_ok() {
            return Err(FileError::new(
                ErrorCode::AlreadyExists,
                format!("{to}: already exists"),
            ));
        }
        self.dir
            .rename(from.as_relative_fs_path(), &self.dir, to.as_relative_fs_path())
            .map_err(|e| FileError::io(to, e))
    }

    /// With `base_version`, only a file of that version is deleted: checked
    /// here, next to the unlink, not a round trip earlier by the client.
    pub fn delete(&self, path: &WorkspacePath, recursive: bool, base_version: Option<&str>) -> FileResult<()> {
        if path.is_root() {
            return Err(FileError::new(
                ErrorCode::BadRequest,
                "the workspace root cannot be deleted",
            ));
        }
        let meta = self.symlink_metadata(path)?;
        if let Some(base) = base_version {
            if !meta.is_file() {
                return Err(FileError::new(
                    ErrorCode::Conflict,
                    format!("{path}: no longer a file (version {base} was)"),
                ));
            }
            check_base_version(path, Some(base), Some(&version_of(&meta)))?;
        }
        let rel = path.as_relative_fs_path();
        let result = if meta.is_dir() {
            // remove_dir_all never follows symlinks: a link to elsewhere is
            // unlinked, its target untouched.
            if recursive {
                self.dir.remove_dir_all(rel)
            } else {
                self.dir.remove_dir(rel)
            }
        } else {
            self.dir.remove_file(rel)
        };
        result.map_err(|e| FileError::io(path, e))
    }
}

fn check_base_version(path: &WorkspacePath, base: Option<&str>, current: Option<&str>) -> FileResult<()> {
    match (base, current) {
        (Some(base), Some(current)) if base != current => Err(FileError::new(
            ErrorCode::Conflict,
            format!("{path}: changed since version {base} (now {current}); reload or overwrite"),
        )),
        (Some(base), None) => Err(FileError::new(
            ErrorCode::Conflict,
            format!("{path}: deleted since version {base}"),
        )),
        _ => Ok(()),
    }
}

fn too_large(path: &WorkspacePath, size: u64, max: u64) -> FileError {
    FileError::new(
        ErrorCode::TooLarge,
        format!("{path}: {size} bytes is over the {max}-byte limit for one file"),
    )
}

/// The device and inode: which file a name or a descriptor is.
fn inode_of(meta: &Metadata) -> (u64, u64) {
    use cap_std::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Swaps the names `a` and `b` of `dir` in one step.
fn exchange(dir: &Dir, a: &Path, b: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    let fd = dir.as_raw_fd();
    // SAFETY: a descriptor `dir` owns for the call and two NUL-terminated
    // names; renameat2 reads nothing else.
    let done = unsafe { libc::renameat2(fd, a.as_ptr(), fd, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How [`place_unnamed`] went.
enum Placed {
    /// At its name, with its metadata once written.
    Done(std::fs::File, Metadata),
    /// Not made: the general path answers why.
    Refused,
    /// This kernel, file system or sandbox cannot do it that way.
    Unsupported,
}

/// Writes `content` to a file without a name (`O_TMPFILE`), then links it
/// at `name`, refused at once if anything is there. No temporary name ever
/// shows in the directory: a first sync's file is one inotify event for the
/// runner's own watch and every client's, where a temporary's creation,
/// writes, close and removal were four more (10,000 files a second of them
/// overflowed the kernel's queue of 16,384 while the watch waited for CPU).
fn place_unnamed(dir: &Dir, name: &std::ffi::CStr, content: &[u8]) -> Placed {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = dir.as_raw_fd();
    // SAFETY: a descriptor `dir` owns and a NUL-terminated name.
    let opened = unsafe {
        libc::openat(
            fd,
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666,
        )
    };
    if opened < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS) => Placed::Unsupported,
            _ => Placed::Refused,
        };
    }
    // SAFETY: just returned by the kernel, owned by no one else. Dropped
    // unlinked, the file is gone.
    let mut file = unsafe { std::fs::File::from_raw_fd(opened) };
    let Ok(before) = file.write_all(content).and_then(|()| Metadata::from_file(&file)) else {
        return Placed::Refused;
    };
    let Ok(by_proc) = std::ffi::CString::new(format!("/proc/self/fd/{opened}")) else {
        return Placed::Unsupported;
    };
    // SAFETY: NUL-terminated names and the descriptor `dir` owns.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            by_proc.as_ptr(),
            fd,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No `/proc` in this sandbox, or one that refuses the link.
            Some(libc::ENOENT | libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | libc::EXDEV) => Placed::Unsupported,
            _ => Placed::Refused,
        };
    }
    Placed::Done(file, before)
}

/// [`place_unnamed`] through a temporary name, where unnamed files cannot
/// be made.
fn place_named(dir: &Dir, name: &std::ffi::CStr, content: &[u8]) -> Option<(std::fs::File, Metadata)> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = dir.as_raw_fd();
    let (tmp, mut file) = (0..9).find_map(|_| {
        let tmp = std::ffi::CString::new(format!("{RESERVED_PREFIX}{}", temporary_number())).ok()?;
        // SAFETY: a descriptor `dir` owns and a NUL-terminated name; the
        // descriptor returned is owned by the File below.
        let opened = unsafe {
            libc::openat(
                fd,
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o666,
            )
        };
        // SAFETY: just returned by the kernel, owned by no one else.
        (opened >= 0).then(|| (tmp, unsafe { std::fs::File::from_raw_fd(opened) }))
    })?;
    // SAFETY (each call below): the descriptor `dir` owns and
    // NUL-terminated names.
    let drop_tmp = || unsafe { libc::unlinkat(fd, tmp.as_ptr(), 0) };
    let Ok(before) = file.write_all(content).and_then(|()| Metadata::from_file(&file)) else {
        drop_tmp();
        return None;
    };
    // Refused at once if anything is at the name: nothing is replaced.
    let linked = unsafe { libc::linkat(fd, tmp.as_ptr(), fd, name.as_ptr(), 0) } == 0;
    drop_tmp();
    linked.then_some((file, before))
}

/// A number for a temporary file's name: the pid, asked of the kernel once
/// (glibc does not cache it, and a first sync makes 10,000 temporary
/// files), and a counter. A leftover of an earlier runner with the same pid
/// may have the name: creating refuses it, and the next number is tried.
fn temporary_number() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PID: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    *PID.get_or_init(|| u64::from(std::process::id())) * 1_000_003 + COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn kind_of(meta: &Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

pub(crate) fn mtime_ns(meta: &Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Modification time and size: every write through the runner renames a new
/// inode into place, so the nanosecond mtime changes with every save.
pub fn version_of(meta: &Metadata) -> String {
    format!("{:x}-{:x}", mtime_ns(meta), meta.len())
}

/// A write in progress: bytes go to a temporary file that replaces the
/// destination on commit, so readers (and storage) never see half a file.
pub struct PendingWrite {
    target: WorkspacePath,
    tmp_rel: PathBuf,
    file: Option<std::fs::File>,
    /// Of every byte appended: the content's hash is known without reading
    /// the file back (a manifest after a first sync costs a stat per file).
    hasher: blake3::Hasher,
    base_version: Option<String>,
    /// Only if nothing is at the target when it is committed.
    create_new: bool,
}

/// A write that took effect.
#[derive(Debug)]
pub struct Committed {
    pub version: String,
    /// The content's BLAKE3 and the file's metadata once in place, when
    /// nothing touched the file between the two looks at it: what a hash
    /// cache keeps for the path.
    pub content: Option<(Metadata, String)>,
}

impl PendingWrite {
    pub fn target(&self) -> &WorkspacePath {
        &self.target
    }

    /// Appends the next bytes of the content.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the write has ended"));
        };
        file.write_all(bytes)?;
        self.hasher.update(bytes);
        Ok(())
    }

    /// Renames the temporary file over the destination.
    pub fn commit(mut self, workspace: &Workspace) -> FileResult<Committed> {
        // The version is the new inode's, read from the open file: neither
        // a link nor a rename changes its mtime or size.
        let file = self.file.take();
        let before = file.as_ref().and_then(|file| Metadata::from_file(file).ok());
        let renamed = if self.create_new {
            // Linked, not renamed: the kernel refuses at once if something
            // is there, so what a program made at that path while the bytes
            // were arriving is not replaced. Both names are in one
            // directory, opened once for the two calls.
            self.link_beside(workspace)
        } else if let Some(base) = self.base_version.clone() {
            self.replace_if_unchanged(workspace, &base, before.as_ref().map(inode_of))
        } else {
            workspace
                .dir
                .rename(&self.tmp_rel, &workspace.dir, self.target.as_relative_fs_path())
                .map_err(|e| FileError::io(&self.target, e))
        };
        if let Err(e) = renamed {
            drop(file);
            self.cleanup(workspace);
            return Err(e);
        }
        self.tmp_rel = PathBuf::new();
        let Some(before) = before else {
            let meta = workspace
                .dir
                .metadata(self.target.as_relative_fs_path())
                .map_err(|e| FileError::io(&self.target, e))?;
            return Ok(Committed {
                version: version_of(&meta),
                content: None,
            });
        };
        // Placing the file changed its ctime; a program writing to it since
        // would have changed its mtime or size too.
        let after = file.as_ref().and_then(|file| Metadata::from_file(file).ok());
        let content = after
            .filter(|after| mtime_ns(after) == mtime_ns(&before) && after.len() == before.len())
            .map(|after| (after, self.hasher.finalize().to_hex().to_string()));
        Ok(Committed {
            version: version_of(&before),
            content,
        })
    }

    /// Puts the new content at the target only if the file there is still
    /// of version `base`. A look first answers the usual conflict (the file
    /// changed while the bytes were arriving). Then the two files swap
    /// names in one step (`RENAME_EXCHANGE`) and the one swapped out is
    /// looked at: a program's write between that look and the swap is found
    /// there and swapped back, where a check followed by a rename would
    /// have replaced it unseen.
    ///
    /// `ours` is the new file's inode, when known: it is swapped back only
    /// if still at the target (a program that saved by renaming its own
    /// file over ours meanwhile keeps its newer one there).
    fn replace_if_unchanged(&mut self, workspace: &Workspace, base: &str, ours: Option<(u64, u64)>) -> FileResult<()> {
        let current = workspace.current_version(&self.target)?;
        check_base_version(&self.target, Some(base), current.as_deref())?;
        #[cfg(test)]
        tests::program_runs(tests::Moment::BeforeSwap);
        let io = |e| FileError::io(&self.target, e);
        let (dir, tmp_name, name) = self.beside(workspace)?;
        match exchange(&dir, &tmp_name, &name) {
            Ok(()) => {}
            // A file system (or a seccomp filter) without the swap: the
            // look above must do.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EPERM)
                ) =>
            {
                return dir.rename(&tmp_name, &dir, &name).map_err(io);
            }
            // The target went since the look (ours is still there).
            Err(e) if e.kind() == ErrorKind::NotFound && dir.symlink_metadata(&tmp_name).is_ok() => {
                return check_base_version(&self.target, Some(base), None);
            }
            Err(e) => return Err(io(e)),
        }
        #[cfg(test)]
        tests::program_runs(tests::Moment::AfterSwap);
        let swapped_out = match dir.symlink_metadata(&tmp_name) {
            Ok(meta) if meta.is_file() => Some(version_of(&meta)),
            _ => None,
        };
        if swapped_out.as_deref() == Some(base) {
            let _ = dir.remove_file(&tmp_name);
            return Ok(());
        }
        // Theirs goes back; ours, at the temporary name again, is dropped.
        // Unless ours is no longer at the target: then what is there is
        // newer than what was swapped out, and stays.
        let ours_at_target = match (ours, dir.symlink_metadata(&name)) {
            (Some(ours), Ok(meta)) => inode_of(&meta) == ours,
            (None, _) => true,
            (Some(_), Err(_)) => false,
        };
        if !ours_at_target {
            let current = swapped_out.unwrap_or_else(|| "not a file".to_owned());
            return check_base_version(&self.target, Some(base), Some(&current));
        }
        if let Err(e) = exchange(&dir, &tmp_name, &name) {
            // Theirs is at the temporary name: kept there, not deleted.
            self.tmp_rel = PathBuf::new();
            tracing::error!(path = %self.target, "a conflicting file could not be put back: {e}");
            return Err(io(e));
        }
        let current = swapped_out.unwrap_or_else(|| "not a file".to_owned());
        check_base_version(&self.target, Some(base), Some(&current))
    }

    /// The target's directory, opened, with the two names in it.
    fn beside(&self, workspace: &Workspace) -> FileResult<(Dir, PathBuf, PathBuf)> {
        let io = |e| FileError::io(&self.target, e);
        let (Some(tmp_name), Some(name)) = (self.tmp_rel.file_name(), self.target.file_name()) else {
            return Err(FileError::new(
                ErrorCode::Internal,
                format!("{}: no file name", self.target),
            ));
        };
        let parent = self.target.parent().unwrap_or_default();
        let dir = if parent.is_root() {
            workspace.dir.try_clone().map_err(io)?
        } else {
            workspace.dir.open_dir(parent.as_relative_fs_path()).map_err(io)?
        };
        Ok((dir, PathBuf::from(tmp_name), PathBuf::from(name)))
    }

    /// Links the temporary file at the target's name, then drops its own.
    fn link_beside(&self, workspace: &Workspace) -> FileResult<()> {
        let (dir, tmp_name, name) = self.beside(workspace)?;
        dir.hard_link(&tmp_name, &dir, &name)
            .map_err(|e| FileError::io(&self.target, e))?;
        let _ = dir.remove_file(&tmp_name);
        Ok(())
    }

    /// Drops the temporary file.
    pub fn abort(mut self, workspace: &Workspace) {
        self.cleanup(workspace);
    }

    fn cleanup(&mut self, workspace: &Workspace) {
        drop(self.file.take());
        if !self.tmp_rel.as_os_str().is_empty() {
            let _ = workspace.dir.remove_file(&self.tmp_rel);
            self.tmp_rel = PathBuf::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "top secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("secret-link")).unwrap();

        let err = ws.open_read(&p("escape/secret"), u64::MAX).unwrap_err();
        assert_eq!(err.code, ErrorCode::OutsideWorkspace, "{err}");
        let err = ws.open_read(&p("secret-link"), u64::MAX).unwrap_err();
        assert_eq!(err.code, ErrorCode::OutsideWorkspace, "{err}");
        assert!(ws.list(&p("escape")).is_err());
        assert!(ws.begin_write(&p("escape/new"), 1, 10, None, false).is_err());
        assert!(ws.begin_write(&p("secret-link"), 1, 10, None, false).is_err());
        // Listed as a link, not followed.
        let entries = ws.list(&WorkspacePath::root()).unwrap();
        let link = entries.iter().find(|e| e.name == "escape").unwrap();
        assert_eq!(link.kind, EntryKind::Symlink);
        // Deleting the link leaves its target alone.
        ws.delete(&p("escape"), true, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "top secret"
        );
    }

    /// A new file of a batch is made at its name or not at all, both with
    /// an unnamed file and through a temporary name: never replacing what
    /// is there (a link or a directory either), never leaving a temporary.
    #[test]
    fn new_files_made_in_an_open_directory_replace_nothing() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        std::fs::create_dir(root.path().join("src")).unwrap();
        std::fs::write(root.path().join("src/taken"), "theirs").unwrap();
        std::os::unix::fs::symlink("nowhere", root.path().join("src/link")).unwrap();
        std::fs::create_dir(root.path().join("src/dir")).unwrap();
        let dir = ws.open_parent_of(&p("src/a")).unwrap();
        let made = ws.create_in(&dir, &p("src/a"), b"print()\n", 100).unwrap();
        let meta = std::fs::metadata(root.path().join("src/a")).unwrap();
        assert_eq!(made.version, version_of(&Metadata::from_just_metadata(meta)));
        let (_, hash) = made.content.unwrap();
        assert_eq!(hash, blake3::hash(b"print()\n").to_hex().to_string());
        for taken in ["src/taken", "src/link", "src/dir"] {
            assert!(ws.create_in(&dir, &p(taken), b"ours", 100).is_none(), "{taken}");
        }
        assert!(ws.create_in(&dir, &p("src/big"), b"too large", 3).is_none());
        // The same through temporary names.
        let name = std::ffi::CString::new("b").unwrap();
        let (_, before) = place_named(&dir, &name, b"named").unwrap();
        assert_eq!(before.len(), 5);
        assert!(place_named(&dir, c"taken", b"ours").is_none());
        assert!(matches!(place_unnamed(&dir, c"taken", b"ours"), Placed::Refused));
        // Where the tests run (Linux, /proc, ext4 or tmpfs) unnamed files work.
        assert!(matches!(place_unnamed(&dir, c"c", b"unnamed"), Placed::Done(..)));
        assert_eq!(std::fs::read(root.path().join("src/a")).unwrap(), b"print()\n");
        assert_eq!(std::fs::read(root.path().join("src/b")).unwrap(), b"named");
        assert_eq!(std::fs::read(root.path().join("src/taken")).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_link(root.path().join("src/link")).unwrap(),
            Path::new("nowhere")
        );
        let mut names: Vec<String> = std::fs::read_dir(root.path().join("src"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c", "dir", "link", "taken"]);
    }

    /// Where a replacing commit lets a test's program run: after its look
    /// at the file and before the swap, or right after the swap.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Moment {
        BeforeSwap,
        AfterSwap,
    }

    type Program = Box<dyn FnOnce()>;

    thread_local! {
        static PROGRAMS: std::cell::RefCell<Vec<(Moment, Program)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn at(moment: Moment, program: impl FnOnce() + 'static) {
        PROGRAMS.with(|programs| programs.borrow_mut().push((moment, Box::new(program))));
    }

    /// Runs what a test put at `moment`: a program writing meanwhile.
    pub(super) fn program_runs(moment: Moment) {
        let due: Vec<Program> = PROGRAMS.with(|programs| {
            let mut programs = programs.borrow_mut();
            let (due, later) = programs.drain(..).partition(|(m, _)| *m == moment);
            *programs = later;
            due.into_iter().map(|(_, program)| program).collect()
        });
        for program in due {
            program();
        }
    }

    /// A save of `content` over `src/main.py` as it is now, bytes written,
    /// not yet committed.
    fn replacing(ws: &Workspace, content: &[u8]) -> PendingWrite {
        let base = ws.current_version(&p("src/main.py")).unwrap().unwrap();
        let mut ours = ws
            .begin_write(&p("src/main.py"), content.len() as u64, 100, Some(&base), false)
            .unwrap();
        ours.append(content).unwrap();
        ours
    }

    fn only_the_file_is_left(root: &Path) {
        let left: Vec<_> = std::fs::read_dir(root.join("src")).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary file left behind: {left:?}");
    }

    #[test]
    fn a_write_landing_between_the_check_and_the_swap_is_a_conflict_and_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        std::fs::create_dir(root.path().join("src")).unwrap();
        let file = root.path().join("src/main.py");
        std::fs::write(&file, "print(1)\n").unwrap();

        let ours = replacing(&ws, b"print(2)\n");
        let theirs = file.clone();
        at(Moment::BeforeSwap, move || {
            std::fs::write(theirs, "print('formatted')\n").unwrap()
        });
        let err = ours.commit(&ws).unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict, "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "print('formatted')\n");
        only_the_file_is_left(root.path());

        // As above, and the program then saves again by renaming its own
        // file over the path, right after the swap: its newer file stays.
        let ours = replacing(&ws, b"print(4)\n");
        let theirs = file.clone();
        at(Moment::BeforeSwap, move || std::fs::write(theirs, "v1\n").unwrap());
        let (theirs, saved) = (file.clone(), root.path().join("src/.main.py.swp"));
        at(Moment::AfterSwap, move || {
            std::fs::write(&saved, "v2\n").unwrap();
            std::fs::rename(&saved, theirs).unwrap();
        });
        let err = ours.commit(&ws).unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict, "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "v2\n");
        only_the_file_is_left(root.path());

        // Unchanged since the look: replaced, and nothing left beside it.
        replacing(&ws, b"print(3)\n").commit(&ws).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "print(3)\n");
        only_the_file_is_left(root.path());
    }

    #[test]
    fn writes_are_atomic_and_versioned() {
        let root = tempfile::tempdir().unwrap();
        let ws = Workspace::open(root.path()).unwrap();
        let mut w = ws.begin_write(&p("a.txt"), 5, 100, None, true).unwrap();
        w.append(b"hello").unwrap();
        assert!(!root.path().join("a.txt").exists(), "visible before commit");
        let v1 = w.commit(&ws).unwrap().version;
        assert_eq!(std::fs::read(root.path().join("a.txt")).unwrap(), b"hello");

        let err = ws.begin_write(&p("a.txt"), 1, 100, None, true).err().unwrap();
        assert_eq!(err.code, ErrorCode::AlreadyExists);
        let err = ws.begin_write(&p("a.txt"), 1, 100, Some("0-0"), false).err().unwrap();
        assert_eq!(err.code, ErrorCode::Conflict);
        let err = ws.begin_write(&p("a.txt"), 101, 100, None, false).err().unwrap();
        assert_eq!(err.code, ErrorCode::TooLarge);

        // Someone else writes while our bytes are in flight: conflict at commit.
        let mut w = ws.begin_write(&p("a.txt"), 3, 100, Some(&v1), false).unwrap();
        w.append(b"new").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(root.path().join("a.txt"), "theirs").unwrap();
        assert_eq!(w.commit(&ws).err().unwrap().code, ErrorCode::Conflict);
        assert_eq!(std::fs::read(root.path().join("a.txt")).unwrap(), b"theirs");
        let leftovers: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind: {leftovers:?}");
    }
}
