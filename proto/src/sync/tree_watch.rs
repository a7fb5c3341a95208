//! A recursive inotify watch of one directory tree (a runner's workspace or
//! home): what changed in it, as workspace paths, in batches.
//!
//! Written on inotify itself rather than `notify`, for what a workspace
//! under an `npm install` needs:
//! - **No `IN_OPEN`.** notify always asks for it, so every open in the tree
//!   queued an event and woke the watcher for nothing: storage reading each
//!   new file to persist it, a build reading its sources.
//! - **A new directory's contents are reported.** `mkdir -p a/b && touch
//!   a/b/c` makes `c` before `a/b` can be watched: the walk that adds the
//!   watch reports what it finds, so a client's `watch_fs` hears of `c`.
//! - **A directory renamed inside the tree keeps its watches** under the new
//!   name, without a walk of what it holds.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{Event, EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use crate::message::{ChangeKind, FsChange};
use crate::path::WorkspacePath;

/// The watcher thread's name (in `/proc`, `top`).
pub const THREAD_NAME: &str = "fs-watch";

/// Changes to names and contents; not opens, reads or closes after reading.
const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::EXCL_UNLINK);

/// How long a directory's `MOVED_FROM` waits for its `MOVED_TO`. The kernel
/// queues the two together; only a read that ends between them separates
/// them. Past this, the directory left the tree.
const MOVE_PATIENCE: Duration = Duration::from_millis(20);

/// Room for about a thousand events per read.
const READ_BUFFER: usize = 64 * 1024;

/// Watching stops when this is dropped.
pub struct TreeWatch {
    stop: OwnedFd,
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Watches `root` and everything below it; `on_changes` gets each batch, on
/// the watcher's own thread, which runs `on_thread_start` first (the runner
/// lowers its priority there). When this returns, every directory that was
/// there has its watch.
pub fn start(
    root: &Path,
    on_thread_start: impl FnOnce() + Send + 'static,
    on_changes: impl FnMut(Vec<FsChange>) + Send + 'static,
) -> io::Result<TreeWatch> {
    let inotify = Inotify::init()?;
    let mut tree = Tree::new(root.to_path_buf(), inotify.watches());
    tree.watch(PathBuf::new(), false, &mut Vec::new())?;
    // SAFETY: eventfd returns a new descriptor (or -1, checked), owned here.
    let stop = unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let stopped = stop.try_clone()?;
    std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
        on_thread_start();
        run(inotify, tree, stopped, on_changes)
    })?;
    Ok(TreeWatch { stop })
}

fn run(mut inotify: Inotify, mut tree: Tree, stop: OwnedFd, mut on_changes: impl FnMut(Vec<FsChange>)) {
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = if tree.moved_out.is_empty() {
            -1
        } else {
            MOVE_PATIENCE.as_millis() as libc::c_int
        };
        // SAFETY: two initialised pollfds, the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("file watch stopped: {e}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let mut changes = Vec::new();
        if fds[0].revents != 0 {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    for event in events {
                        tree.handle(event, &mut changes);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::error!("file watch stopped: {e}");
                    return;
                }
            }
        }
        // A quiet wait ends every wait for a MOVED_TO.
        tree.expire_moves(if ready == 0 { Duration::ZERO } else { MOVE_PATIENCE });
        if !changes.is_empty() {
            on_changes(changes);
        }
    }
}

/// The watched directories, by watch and by path (relative to the root).
struct Tree {
    root: PathBuf,
    watches: Watches,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_path: BTreeMap<PathBuf, WatchDescriptor>,
    /// Directories renamed away, waiting for their `MOVED_TO` by cookie.
    moved_out: HashMap<u32, (PathBuf, Instant)>,
    /// The watch limit was hit: said once, not for every directory.
    limit_reported: bool,
}

impl Tree {
    fn new(root: PathBuf, watches: Watches) -> Self {
        Self {
            root,
            watches,
            by_wd: HashMap::new(),
            by_path: BTreeMap::new(),
            moved_out: HashMap::new(),
            limit_reported: false,
        }
    }

    /// Watches `dir` and every directory below it. With `report`, also
    /// reports everything found as created: it may have been made before
    /// the watch existed. Fails only for `dir` itself.
    fn watch(&mut self, dir: PathBuf, report: bool, changes: &mut Vec<FsChange>) -> io::Result<()> {
        let mut stack = vec![dir];
        let mut first = true;
        while let Some(dir) = stack.pop() {
            let abs = self.root.join(&dir);
            match self.watches.add(&abs, MASK) {
                Ok(wd) => self.insert(wd, dir.clone()),
                Err(e) if first => return Err(e),
                // Gone again, or replaced by a file: its own event says so.
                Err(e) if is_gone(&e) => continue,
                Err(e) => {
                    self.watch_failed(&abs, &e, changes);
                    continue;
                }
            }
            first = false;
            let entries = match std::fs::read_dir(&abs) {
                Ok(entries) => entries,
                Err(e) if is_gone(&e) => continue,
                Err(e) => {
                    self.watch_failed(&abs, &e, changes);
                    continue;
                }
            };
            for entry in entries.flatten() {
                let child = dir.join(entry.file_name());
                // A name no client can use is not watched below either.
                let Some(path) = workspace_path(&child) else { continue };
                if report {
                    changes.push(change(path, ChangeKind::Created));
                }
                // The entry's own type: a link to a directory is not followed.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(child);
                }
            }
        }
        Ok(())
    }

    /// A directory that cannot be watched: storage and clients rescan, so
    /// nothing in it is missed, only noticed later.
    fn watch_failed(&mut self, abs: &Path, e: &io::Error, changes: &mut Vec<FsChange>) {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            if !std::mem::replace(&mut self.limit_reported, true) {
                tracing::warn!(
                    "the inotify watch limit is reached at {}: changes below are found by rescans \
                     (raise fs.inotify.max_user_watches)",
                    abs.display()
                );
            }
        } else {
            tracing::warn!("cannot watch {}: {e}; rescanning", abs.display());
        }
        changes.push(change(WorkspacePath::root(), ChangeKind::Modified));
    }

    fn insert(&mut self, wd: WatchDescriptor, dir: PathBuf) {
        // The same directory watched again (its inode): one name for it.
        if let Some(old) = self.by_wd.insert(wd.clone(), dir.clone())
            && old != dir
            && self.by_path.get(&old) == Some(&wd)
        {
            self.by_path.remove(&old);
        }
        self.by_path.insert(dir, wd);
    }

    /// The kernel ended a watch (its directory was deleted, or we removed
    /// it).
    fn forget(&mut self, wd: &WatchDescriptor) {
        if let Some(dir) = self.by_wd.remove(wd)
            && self.by_path.get(&dir) == Some(wd)
        {
            self.by_path.remove(&dir);
        }
    }

    fn handle(&mut self, event: Event<&OsStr>, changes: &mut Vec<FsChange>) {
        let mask = event.mask;
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify's queue overflowed: rescanning");
            changes.push(change(WorkspacePath::root(), ChangeKind::Modified));
            // Directories made meanwhile have no watch yet.
            if let Err(e) = self.watch(PathBuf::new(), false, changes) {
                tracing::error!("cannot watch {} again: {e}", self.root.display());
            }
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.forget(&event.wd);
            return;
        }
        // Events about a watched directory itself come from its parent's
        // watch too, with its name: those are the ones used.
        let Some(name) = event.name else { return };
        let Some(dir) = self.by_wd.get(&event.wd) else { return };
        let rel = dir.join(name);
        let Some(path) = workspace_path(&rel) else { return };
        let is_dir = mask.contains(EventMask::ISDIR);
        if mask.contains(EventMask::CREATE) {
            changes.push(change(path, ChangeKind::Created));
            if is_dir && let Err(e) = self.watch(rel, true, changes) {
                self.watch_gone(&e, changes);
            }
        } else if mask.contains(EventMask::MOVED_TO) {
            changes.push(change(path.clone(), ChangeKind::Created));
            if is_dir {
                // Its contents came with it and are not reported one by
                // one: modified as a whole (storage walks it; a made
                // directory's entries each have their own change).
                changes.push(change(path, ChangeKind::Modified));
                match self.moved_out.remove(&event.cookie) {
                    Some((from, _)) => self.rename(&from, &rel),
                    // From outside the tree: everything in it is new here,
                    // and storage plans the directory as a whole.
                    None => {
                        if let Err(e) = self.watch(rel, false, changes) {
                            self.watch_gone(&e, changes);
                        }
                    }
                }
            }
        } else if mask.contains(EventMask::MOVED_FROM) {
            changes.push(change(path, ChangeKind::Removed));
            if is_dir {
                self.moved_out.insert(event.cookie, (rel, Instant::now()));
            }
        } else if mask.contains(EventMask::DELETE) {
            changes.push(change(path, ChangeKind::Removed));
        } else if mask.intersects(EventMask::MODIFY | EventMask::CLOSE_WRITE | EventMask::ATTRIB) {
            changes.push(change(path, ChangeKind::Modified));
        }
    }

    /// A new directory that could not be watched: gone already is fine.
    fn watch_gone(&mut self, e: &io::Error, changes: &mut Vec<FsChange>) {
        if !is_gone(e) {
            let root = self.root.clone();
            self.watch_failed(&root, e, changes);
        }
    }

    /// The watched directories at `top` and below it.
    fn watched_below(&self, top: &Path) -> Vec<(PathBuf, WatchDescriptor)> {
        self.by_path
            .range(top.to_path_buf()..)
            .take_while(|(dir, _)| dir.starts_with(top))
            .map(|(dir, wd)| (dir.clone(), wd.clone()))
            .collect()
    }

    /// A directory renamed inside the tree: its watches, and those below
    /// it, keep working under the new name.
    fn rename(&mut self, from: &Path, to: &Path) {
        for (dir, wd) in self.watched_below(from) {
            self.by_path.remove(&dir);
            let Ok(below) = dir.strip_prefix(from) else { continue };
            let renamed = if below.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(below)
            };
            self.by_path.insert(renamed.clone(), wd.clone());
            self.by_wd.insert(wd, renamed);
        }
    }

    /// Directories renamed away longer than `patience` ago left the tree:
    /// their watches go, so nothing there is reported under a stale name.
    fn expire_moves(&mut self, patience: Duration) {
        let now = Instant::now();
        let expired: Vec<u32> = self
            .moved_out
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= patience)
            .map(|(cookie, _)| *cookie)
            .collect();
        for cookie in expired {
            let Some((from, _)) = self.moved_out.remove(&cookie) else {
                continue;
            };
            for (dir, wd) in self.watched_below(&from) {
                self.by_path.remove(&dir);
                self.by_wd.remove(&wd);
                // Its IGNORED then finds nothing to forget.
                let _ = self.watches.remove(wd);
            }
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// The workspace path of a path relative to the root, or `None` for names no
/// client can use (not UTF-8, our own temporary files).
fn workspace_path(rel: &Path) -> Option<WorkspacePath> {
    WorkspacePath::parse(rel.to_str()?).ok()
}

fn change(path: WorkspacePath, kind: ChangeKind) -> FsChange {
    FsChange { path, kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn p(raw: &str) -> WorkspacePath {
        WorkspacePath::parse(raw).unwrap()
    }

    fn created(raw: &str) -> FsChange {
        change(p(raw), ChangeKind::Created)
    }

    /// A tree over a real directory, its events fed by hand.
    fn tree(root: &Path) -> (Inotify, Tree, WatchDescriptor) {
        let inotify = Inotify::init().unwrap();
        let mut tree = Tree::new(root.to_path_buf(), inotify.watches());
        tree.watch(PathBuf::new(), false, &mut Vec::new()).unwrap();
        let root_wd = tree.by_path[Path::new("")].clone();
        (inotify, tree, root_wd)
    }

    fn event<'a>(wd: &WatchDescriptor, mask: EventMask, cookie: u32, name: &'a str) -> Event<&'a OsStr> {
        Event {
            wd: wd.clone(),
            mask,
            cookie,
            name: Some(OsStr::new(name)),
        }
    }

    #[test]
    fn what_a_new_directory_holds_before_its_watch_exists_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_inotify, mut tree, root) = tree(dir.path());
        // Made before the watcher hears of `new`, as `mkdir -p` and a fast
        // writer do.
        std::fs::create_dir_all(dir.path().join("new/sub")).unwrap();
        std::fs::write(dir.path().join("new/sub/file.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("new/etc")).unwrap();
        let mut changes = Vec::new();
        tree.handle(
            event(&root, EventMask::CREATE | EventMask::ISDIR, 0, "new"),
            &mut changes,
        );
        changes.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        assert_eq!(
            changes,
            [
                created("new"),
                created("new/etc"),
                created("new/sub"),
                created("new/sub/file.txt"),
            ]
        );
        assert!(tree.by_path.contains_key(Path::new("new/sub")), "watched below");
        assert!(
            !tree.by_path.contains_key(Path::new("new/etc")),
            "a link is not followed"
        );
    }

    #[test]
    fn renames_are_a_removal_and_a_creation_and_temporaries_are_no_ones_business() {
        let dir = tempfile::tempdir().unwrap();
        let (_inotify, mut tree, root) = tree(dir.path());
        let mut changes = Vec::new();
        tree.handle(event(&root, EventMask::MOVED_FROM, 7, "a"), &mut changes);
        tree.handle(event(&root, EventMask::MOVED_TO, 7, "b"), &mut changes);
        tree.handle(event(&root, EventMask::CREATE, 0, ".cloudcode-tmp-1"), &mut changes);
        tree.handle(
            event(&root, EventMask::CLOSE_WRITE, 0, ".cloudcode-tmp-1"),
            &mut changes,
        );
        assert_eq!(changes, [change(p("a"), ChangeKind::Removed), created("b")]);
    }

    /// The watcher's thread on a real directory; changes as they come.
    fn watching(root: &Path) -> (TreeWatch, mpsc::Receiver<Vec<FsChange>>) {
        let (tx, rx) = mpsc::channel();
        let watch = start(
            root,
            || {},
            move |changes| {
                let _ = tx.send(changes);
            },
        )
        .unwrap();
        (watch, rx)
    }

    /// Every change up to the first for `marker`, which the caller makes
    /// last: what came before it is all the watcher reported.
    fn until(rx: &mpsc::Receiver<Vec<FsChange>>, marker: &str) -> Vec<FsChange> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no change for {marker}: {seen:?}"));
            let done = batch.iter().any(|c| c.path.as_str() == marker);
            seen.extend(batch);
            if done {
                return seen;
            }
        }
    }

    #[test]
    fn a_renamed_directory_is_watched_under_its_new_name_and_one_moved_out_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("leaving/deep")).unwrap();
        let (_watch, rx) = watching(dir.path());

        std::fs::rename(dir.path().join("a"), dir.path().join("z")).unwrap();
        std::fs::write(dir.path().join("z/b/file.txt"), "x").unwrap();
        let seen = until(&rx, "z/b/file.txt");
        assert!(!seen.iter().any(|c| c.path.as_str().starts_with("a/")), "{seen:?}");

        std::fs::rename(dir.path().join("leaving"), outside.path().join("left")).unwrap();
        let seen = until(&rx, "leaving");
        let others: Vec<&FsChange> = seen.iter().filter(|c| c.path.as_str() != "z/b/file.txt").collect();
        assert_eq!(others, [&change(p("leaving"), ChangeKind::Removed)]);
    }

    /// A directory moved in brings its contents unreported: it is reported
    /// modified too, so storage walks it; a made one's entries are each
    /// reported, and it is not.
    #[test]
    fn a_directory_moved_in_is_modified_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("arriving/deep")).unwrap();
        std::fs::write(outside.path().join("arriving/deep/file.txt"), "x").unwrap();
        let (_inotify, mut tree, root) = tree(dir.path());
        std::fs::rename(outside.path().join("arriving"), dir.path().join("arrived")).unwrap();
        let mut changes = Vec::new();
        tree.handle(
            event(&root, EventMask::MOVED_TO | EventMask::ISDIR, 5, "arrived"),
            &mut changes,
        );
        assert_eq!(
            changes,
            [created("arrived"), change(p("arrived"), ChangeKind::Modified)]
        );
        assert!(tree.by_path.contains_key(Path::new("arrived/deep")), "watched below");
        std::fs::create_dir(dir.path().join("made")).unwrap();
        let mut changes = Vec::new();
        tree.handle(
            event(&root, EventMask::CREATE | EventMask::ISDIR, 0, "made"),
            &mut changes,
        );
        assert_eq!(changes, [created("made")]);
    }

    #[test]
    fn a_directory_moved_out_of_the_tree_loses_its_watches() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("leaving/deep")).unwrap();
        std::fs::create_dir_all(dir.path().join("staying")).unwrap();
        let (_inotify, mut tree, root) = tree(dir.path());
        std::fs::rename(dir.path().join("leaving"), outside.path().join("left")).unwrap();
        let mut changes = Vec::new();
        tree.handle(
            event(&root, EventMask::MOVED_FROM | EventMask::ISDIR, 9, "leaving"),
            &mut changes,
        );
        assert!(
            tree.by_path.contains_key(Path::new("leaving/deep")),
            "its MOVED_TO may come yet"
        );
        tree.expire_moves(Duration::ZERO);
        let watched: Vec<&Path> = tree.by_path.keys().map(PathBuf::as_path).collect();
        assert_eq!(watched, [Path::new(""), Path::new("staying")]);
        assert_eq!(tree.by_wd.len(), 2);
    }

    #[test]
    fn opening_and_reading_a_file_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("read-me.txt"), "x").unwrap();
        let (_watch, rx) = watching(dir.path());
        for _ in 0..10 {
            std::fs::read(dir.path().join("read-me.txt")).unwrap();
        }
        std::fs::write(dir.path().join("marker"), "x").unwrap();
        let seen = until(&rx, "marker");
        assert!(seen.iter().all(|c| c.path.as_str() == "marker"), "{seen:?}");
    }
}
