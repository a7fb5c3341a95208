//! The folder's paths, opened beneath its root and never through a link.
//!
//! The sandbox runs code the user does not control, and the sync carries
//! its symlinks as links. A directory on the way to a path that is a link
//! (`d -> ~/.ssh`, made by the sync a round earlier, or by the user) must
//! never take a write, a rename or a deletion out of the folder, nor bring
//! what is out there in. So every change the sync makes, and every read
//! (the scanner's listings, `lstat`s and hashes, the ignore files, what is
//! uploaded), goes through the directory that holds the path, opened from
//! the root one component at a time with `O_NOFOLLOW` (as the runner's
//! cap-std handle does on its side): a link on the way is an error
//! (`ELOOP`, `ENOTDIR`), not a way out.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cloudcode_proto::path::WorkspacePath;

/// An open directory of the folder.
pub struct Dir(OwnedFd);

/// The directory that holds a path, and the path's last component.
pub struct Parent {
    pub dir: Dir,
    pub name: CString,
}

/// A name of the folder as the calls below take it.
pub fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte"))
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Dir {
    /// The root itself (resolved once, when the sync starts).
    pub fn root(root: &Path) -> io::Result<Dir> {
        let path = CString::new(root.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a folder path with a NUL byte"))?;
        // SAFETY: a valid C string; the descriptor returned is owned here.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC) };
        Self::owned(fd)
    }

    fn owned(fd: libc::c_int) -> io::Result<Dir> {
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn open_at(&self, name: &CStr, flags: libc::c_int, mode: libc::c_uint) -> io::Result<OwnedFd> {
        // SAFETY: a valid descriptor and C string; the result is owned below.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        Self::owned(fd).map(|d| d.0)
    }

    /// A directory in this one; a link there is refused.
    pub fn child_dir(&self, name: &CStr) -> io::Result<Dir> {
        self.open_at(name, libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY, 0)
            .map(Dir)
    }

    /// The directory at the relative `path` below this one, resolved by
    /// the kernel in one step (`openat2`) that refuses a link anywhere on
    /// the way or at the end (`ELOOP`) and never leaves this directory: the
    /// walk of [`Dir::child_dir`]s without a descriptor per component (a
    /// first sync opens the parent of each of its 10,000 files).
    fn descend(&self, path: &CStr) -> io::Result<Dir> {
        // SAFETY: open_how is plain data; all zeroes is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: a valid descriptor, C string and open_how of the size
        // passed; the descriptor returned is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.0.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        Self::owned(fd as libc::c_int)
    }

    /// Creates a file that did not exist (never through a link).
    pub fn create_new(&self, name: &CStr, mode: u32) -> io::Result<File> {
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW;
        self.open_at(name, flags, mode as libc::c_uint).map(File::from)
    }

    /// Opens a regular file to read; a link is refused.
    pub fn open_file(&self, name: &CStr) -> io::Result<File> {
        // Non-blocking: a FIFO put there meanwhile must not hang the sync.
        self.open_at(name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)
            .map(File::from)
    }

    /// What is at `name`, a link not followed.
    pub fn metadata(&self, name: &CStr) -> io::Result<std::fs::Metadata> {
        File::from(self.open_at(name, libc::O_PATH | libc::O_NOFOLLOW, 0)?).metadata()
    }

    /// What is at `name`, a link not followed, in one `fstatat` (where
    /// [`Dir::metadata`] costs an open, an `fstat` and a close: std makes
    /// no `Metadata` from a `stat`). The scanner looks at every entry of
    /// the folder this way, several times in a first sync.
    pub fn lstat(&self, name: &CStr) -> io::Result<Stat> {
        // One component only: nothing on the way to resolve, and the final
        // link is not followed.
        let bytes = name.to_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a name in a directory"));
        }
        // SAFETY: stat is plain data; all zeroes is a valid value.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and C string, and a stat to fill.
        check(unsafe { libc::fstatat(self.0.as_raw_fd(), name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(Stat(stat))
    }

    /// The names in this directory (`.` and `..` left out), unsorted.
    pub fn list(&self) -> io::Result<Vec<std::ffi::OsString>> {
        use std::os::unix::ffi::OsStringExt;
        // A descriptor of its own: the stream owns and closes it.
        let fd = self.open_at(c".", libc::O_DIRECTORY | libc::O_RDONLY, 0)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: `raw` is an open directory; on success its ownership
        // passes to the stream (closed by closedir below, also on error).
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let error = io::Error::last_os_error();
            // SAFETY: not taken by a stream: still ours to close.
            unsafe { libc::close(raw) };
            return Err(error);
        }
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: errno is this thread's; readdir's NULL is the end only
            // while errno stays 0.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: a stream opened above and not closed yet.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                let error = io::Error::last_os_error();
                break if error.raw_os_error() == Some(0) {
                    Ok(())
                } else {
                    Err(error)
                };
            }
            // SAFETY: readdir returned a valid entry whose name is a C
            // string, valid until the next readdir on the stream.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsString::from_vec(name.to_vec()));
            }
        };
        // SAFETY: closed once; the descriptor goes with it.
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }

    pub fn read_link(&self, name: &CStr) -> io::Result<String> {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: the buffer is as long as told.
        let n = unsafe { libc::readlinkat(self.0.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        String::from_utf8(buf)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a link target that is not UTF-8"))
    }

    pub fn create_dir(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::mkdirat(self.0.as_raw_fd(), name.as_ptr(), 0o777) })
    }

    pub fn symlink(&self, target: &str, name: &CStr) -> io::Result<()> {
        let target = c_name(target)?;
        // SAFETY: valid C strings and descriptor.
        check(unsafe { libc::symlinkat(target.as_ptr(), self.0.as_raw_fd(), name.as_ptr()) })
    }

    pub fn remove_file(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.0.as_raw_fd(), name.as_ptr(), 0) })
    }

    pub fn remove_dir(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.0.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
    }

    /// Renames `name` here to `to` in `dir`, replacing what is there.
    pub fn rename(&self, name: &CStr, dir: &Dir, to: &CStr) -> io::Result<()> {
        // SAFETY: valid descriptors and C strings.
        check(unsafe { libc::renameat(self.0.as_raw_fd(), name.as_ptr(), dir.0.as_raw_fd(), to.as_ptr()) })
    }

    /// Renames `name` here to `to` in `dir`, failing when `to` exists.
    pub fn rename_no_replace(&self, name: &CStr, dir: &Dir, to: &CStr) -> io::Result<()> {
        // SAFETY: valid descriptors and C strings.
        check(unsafe {
            libc::renameat2(
                self.0.as_raw_fd(),
                name.as_ptr(),
                dir.0.as_raw_fd(),
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        })
    }

    /// A second name for `name`'s node (a link itself, not its target),
    /// failing when `to` exists: nothing there is ever replaced.
    pub fn hard_link(&self, name: &CStr, dir: &Dir, to: &CStr) -> io::Result<()> {
        // SAFETY: valid descriptors and C strings; flags 0 never follows a link.
        check(unsafe { libc::linkat(self.0.as_raw_fd(), name.as_ptr(), dir.0.as_raw_fd(), to.as_ptr(), 0) })
    }
}

/// What [`Dir::lstat`] says of a name.
#[derive(Clone, Copy)]
pub struct Stat(libc::stat);

impl Stat {
    fn kind(&self) -> libc::mode_t {
        self.0.st_mode & libc::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }

    /// Type and permission bits, as `MetadataExt::mode`.
    pub fn mode(&self) -> u32 {
        self.0.st_mode
    }

    pub fn size(&self) -> u64 {
        self.0.st_size as u64
    }

    pub fn ino(&self) -> u64 {
        self.0.st_ino
    }

    pub fn mtime_ns(&self) -> i64 {
        self.0.st_mtime * 1_000_000_000 + self.0.st_mtime_nsec
    }

    pub fn ctime_ns(&self) -> i64 {
        self.0.st_ctime * 1_000_000_000 + self.0.st_ctime_nsec
    }
}

/// Opens the directory at `path` (the root for the root), from `root`,
/// refusing any link on the way and at its end.
pub fn open(root: &Path, path: &WorkspacePath) -> io::Result<Dir> {
    let dir = Dir::root(root)?;
    if path.is_root() {
        return Ok(dir);
    }
    match dir.descend(&c_name(path.as_str())?) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM | libc::EAGAIN)) => {
            // No openat2 here (before Linux 5.6, or a seccomp filter that
            // refuses it), or a resolution the kernel wants retried: the
            // same refusals, one component at a time.
            let mut dir = dir;
            for component in path.as_str().split('/') {
                dir = dir.child_dir(&c_name(component)?)?;
            }
            Ok(dir)
        }
        descended => descended,
    }
}

/// Opens the directory holding `path`, from `root`, refusing any link on
/// the way.
pub fn parent(root: &Path, path: &WorkspacePath) -> io::Result<Parent> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the folder itself has no parent"))?;
    let dir = open(root, &path.parent().unwrap_or_default())?;
    Ok(Parent {
        dir,
        name: c_name(name)?,
    })
}

/// Whether an error opening a path beneath the root means it is not
/// there as asked: gone, or a file or a link where a directory was.
pub fn is_gone(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
        || error.raw_os_error() == Some(libc::ELOOP)
}

/// Reads a whole file of the folder, never through a link.
pub fn read(root: &Path, path: &WorkspacePath) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let at = parent(root, path)?;
    let mut bytes = Vec::new();
    at.dir.open_file(&at.name)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read`] for a file the caller knows the size of (a scan said so):
/// the buffer is made that size up front, and the kernel is not asked
/// again (a File's own `read_to_end` costs an fstat and an lseek). A file
/// that grew since is still read whole.
pub fn read_expecting(root: &Path, path: &WorkspacePath, size: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let at = parent(root, path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    at.dir.open_file(&at.name)?.take(u64::MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_expecting`] of `name` in an open directory, with the file's
/// metadata as it was once read: a caller reading many files of one
/// directory opens it once.
pub fn read_in(dir: &Dir, name: &CStr, size: u64) -> io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    let mut file = dir.open_file(name)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    Read::by_ref(&mut file).take(u64::MAX).read_to_end(&mut bytes)?;
    let meta = file.metadata()?;
    Ok((bytes, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).unwrap()
    }

    #[test]
    fn a_link_on_the_way_is_refused_and_nothing_outside_is_touched() {
        let folder = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = folder.path();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("d")).unwrap();
        std::fs::write(outside.path().join("secret"), "outside").unwrap();

        let at = parent(root, &p("real/a.txt")).unwrap();
        at.dir.create_new(&at.name, 0o644).unwrap();
        assert!(root.join("real/a.txt").exists());

        std::os::unix::fs::symlink(outside.path(), root.join("real/l")).unwrap();
        std::fs::create_dir(outside.path().join("deeper")).unwrap();
        for path in [
            "d/new.txt",
            "d/secret",
            "d/deeper/x",
            "real/l/secret",
            "real/l/deeper/x",
        ] {
            let refused = parent(root, &p(path)).err().map(|e| e.raw_os_error());
            assert!(
                matches!(refused, Some(Some(libc::ELOOP | libc::ENOTDIR))),
                "{path}: {refused:?}"
            );
        }
        assert!(read(root, &p("d/secret")).is_err(), "read through a link");
        assert!(read_expecting(root, &p("d/secret"), 7).is_err(), "read through a link");
        std::fs::write(root.join("real/grown.txt"), "longer than said").unwrap();
        assert_eq!(
            read_expecting(root, &p("real/grown.txt"), 4).unwrap(),
            b"longer than said"
        );
        // The link itself is the folder's: its last component is handled
        // as a link, never as what it points to.
        let at = parent(root, &p("d")).unwrap();
        assert!(at.dir.metadata(&at.name).unwrap().file_type().is_symlink());
        assert!(at.dir.lstat(&at.name).unwrap().is_symlink(), "lstat followed the link");
        assert!(at.dir.open_file(&at.name).is_err());
        assert_eq!(at.dir.read_link(&at.name).unwrap(), outside.path().to_str().unwrap());
        at.dir.remove_file(&at.name).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "outside"
        );
        assert!(!outside.path().join("new.txt").exists());
    }

    #[test]
    fn lstat_says_what_metadata_says_and_takes_only_a_name() {
        use std::os::unix::fs::MetadataExt;
        let folder = tempfile::tempdir().unwrap();
        std::fs::create_dir(folder.path().join("sub")).unwrap();
        std::fs::write(folder.path().join("sub/f.txt"), "twelve bytes").unwrap();
        let at = parent(folder.path(), &p("sub/f.txt")).unwrap();
        let (stat, meta) = (at.dir.lstat(&at.name).unwrap(), at.dir.metadata(&at.name).unwrap());
        assert!(stat.is_file() && !stat.is_dir() && !stat.is_symlink());
        assert_eq!(
            (stat.size(), stat.ino(), stat.mode(), stat.mtime_ns(), stat.ctime_ns()),
            (
                meta.len(),
                meta.ino(),
                meta.mode(),
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
            )
        );
        let root = Dir::root(folder.path()).unwrap();
        assert!(root.lstat(c"sub").unwrap().is_dir());
        for name in [c"sub/f.txt", c"..", c".", c""] {
            assert_eq!(
                root.lstat(name).err().map(|e| e.kind()),
                Some(io::ErrorKind::InvalidInput),
                "{name:?}"
            );
        }
        assert_eq!(
            root.lstat(c"missing").err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }
}
