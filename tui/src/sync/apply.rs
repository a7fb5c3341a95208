//! Carries a [`Plan`] out, each change guarded so that nothing either side
//! did since the plan was made is overwritten:
//!
//! - uploads carry `base_version` (or `create_new`), so a sandbox change in
//!   between is refused by the runner, not overwritten;
//! - a remote deletion first checks the file's version is still the one
//!   planned on;
//! - a local write or deletion first checks the path's identity (size,
//!   mtime, ctime, inode) is still the scanned one, and writes through a
//!   temporary file renamed into place; every local change (and every read
//!   that is uploaded) goes through the path's directory opened beneath the
//!   folder's root, so a link on the way never leads it outside
//!   ([`super::beneath`]);
//! - content is hashed again as it is sent or received: what travels is what
//!   was planned, or the change is left for the next round. Small files sent
//!   many to a request are checked by identity instead (size, mtime, ctime
//!   and inode as they were hashed, looked at once read), as an unchanged
//!   folder is: the scan hashed them a moment before.
//!
//! A change that fails is reported and left: the views are updated only
//! with what happened, so the next round decides it again.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cloudcode_proto::client::{ClientError, RunnerHandle};
use cloudcode_proto::message::{BatchedWrite, ErrorCode, Op, WriteOptions};
use cloudcode_proto::path::WorkspacePath;
use futures_util::StreamExt;
use futures_util::future::Either;

use super::beneath::{self, Parent};
use super::model::{Node, hash_bytes};
use super::reconcile::{Change, ConflictCopy, Plan, Side};
use super::remote::RemoteView;
use super::rules::TEMP_PREFIX;
use super::scan::{Identity, LocalEntry, LocalIndex};

/// Changes in flight at once. The runner answers an upload once the file
/// is in storage, and commits what is waiting as one batch of up to 512
/// files: a window of 64 left its commits small and storage idle between
/// them (a first sync of 10,000 files: 8.4 s of uploads at 64, 3.5 s at
/// 512; 1,024 was no faster). A wave this large is sent as `bulk` writes,
/// which the runner persists in batches of their own, so a save the user
/// makes meanwhile (another client's, or a small round's) does not wait
/// behind them.
const PARALLEL: usize = 512;
/// Content in flight at once, read into memory until answered: so a window
/// of large files does not hold gigabytes.
const BYTES_IN_FLIGHT: u64 = 64 * 1024 * 1024;
/// The unit the byte budget is counted in: a semaphore counts in `u32`.
const BUDGET_UNIT: u64 = 1024;

/// A wave's small new or changed files go to the runner many to a request
/// (`write_many`): a request per file was three messages and a round of
/// the runner's machinery each, most of a first sync's CPU. Files up to
/// this size...
const BATCHED_FILE: u64 = 256 * 1024;
/// ...in requests of at most this many files...
const BATCH_FILES: usize = 256;
/// ...and bytes, well within the runner's limits.
const BATCH_BYTES: u64 = 1024 * 1024;

/// The bytes a wave may hold in memory at once, shared by its uploads.
#[derive(Clone)]
struct ByteBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// All of it, in [`BUDGET_UNIT`]s.
    units: u64,
}

impl ByteBudget {
    fn new(bytes: u64) -> Self {
        let units = bytes.div_ceil(BUDGET_UNIT).max(1);
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(units as usize)),
            units,
        }
    }

    /// Waits until `size` bytes fit, then holds them until the permit is
    /// dropped. A file larger than the whole budget waits until all of it
    /// is free, then goes alone; an empty one still takes a unit, so a wave
    /// of empty files is bounded too.
    async fn hold(&self, size: u64) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
        let units = size.div_ceil(BUDGET_UNIT).clamp(1, self.units);
        self.permits.clone().acquire_many_owned(units as u32).await
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub done: usize,
    pub uploaded: usize,
    pub downloaded: usize,
    pub deleted_local: usize,
    pub deleted_remote: usize,
    pub moved: usize,
    pub copies: Vec<WorkspacePath>,
    /// Changes not made, and why (each will be decided again).
    pub skipped: Vec<String>,
    /// Paths found changed on a side since it was looked at: to look at
    /// again before the next round.
    pub stale_local: Vec<WorkspacePath>,
    pub stale_remote: Vec<WorkspacePath>,
    /// Uploads in flight: path, number and content (see [`Deferred`]).
    pub deferred: Vec<(WorkspacePath, u64, Node)>,
}

pub struct Executor<'a> {
    pub root: &'a Path,
    pub handle: &'a RunnerHandle,
    pub index: &'a mut LocalIndex,
    pub remote: &'a mut RemoteView,
    /// Called after each change (progress bars).
    pub on_done: &'a mut (dyn FnMut() + Send),
    /// While watching: small uploads are answered later (see [`Deferred`]).
    pub defer: Option<&'a mut Deferred>,
}

#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error("{0}")]
    Because(String),
    /// The folder no longer holds what the plan was made from.
    #[error("changed in the folder meanwhile; looking again")]
    LocalChanged,
    /// The sandbox no longer holds what the plan was made from.
    #[error("changed in the sandbox meanwhile; looking again")]
    RemoteChanged,
    #[error(transparent)]
    Runner(#[from] ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Outcome {
    fn note_stale(&mut self, skip: &Skip, path: &WorkspacePath) {
        match skip {
            Skip::LocalChanged => self.stale_local.push(path.clone()),
            Skip::RemoteChanged => self.stale_remote.push(path.clone()),
            _ => {}
        }
    }
}

fn because(why: impl Into<String>) -> Skip {
    Skip::Because(why.into())
}

/// What a remote change did, applied to the view afterwards.
struct Recorded {
    path: WorkspacePath,
    node: Option<Node>,
    version: Option<String>,
    /// An upload whose answer comes later, as a [`WriteDone`] of this number.
    deferred: Option<u64>,
}

/// Waves of at most this many uploads have their answers awaited off the
/// sync's loop (more are awaited as they go, PARALLEL at a time).
const DEFER_AT_MOST: usize = 8;

/// Where the answers of uploads awaited off the loop go.
///
/// The runner answers a write once the file is durable in storage, which
/// can take a while after the file is in the sandbox; a save should not wait
/// for the previous save's storage. Until its answer, such an upload is
/// "in flight": the sandbox's view holds its content without a version, and
/// the agreed state does not count it (so a refusal still ends in a
/// conflict, never in the sandbox's content winning over the user's).
pub struct Deferred {
    pub tx: tokio::sync::mpsc::UnboundedSender<WriteDone>,
    /// The last upload's number.
    pub next: u64,
}

#[derive(Debug)]
pub struct WriteDone {
    pub path: WorkspacePath,
    pub seq: u64,
    /// What was uploaded.
    pub node: Node,
    /// The new version, or why not.
    pub result: Result<String, ClientError>,
}

impl Executor<'_> {
    /// Returns an error only when the connection is gone (the rest of the
    /// plan cannot be carried out); other failures are in the outcome.
    pub async fn run(&mut self, plan: &Plan) -> Result<Outcome, ClientError> {
        let mut outcome = Outcome::default();
        for copy in &plan.copies {
            match self.make_copy(copy).await {
                Ok(()) => outcome.copies.push(copy.copy.clone()),
                Err(Skip::Runner(ClientError::Closed | ClientError::Connect(_))) => return Err(ClientError::Closed),
                Err(e) => {
                    outcome.note_stale(&e, &copy.path);
                    outcome.skipped.push(format!("conflict copy {}: {e}", copy.copy));
                }
            }
            (self.on_done)();
        }
        for change in &plan.local {
            let result = match change {
                Change::Delete { path, was } => self.delete_local(path, was).map(|()| {
                    outcome.deleted_local += 1;
                }),
                Change::Put { path, node, was } => self.put_local(path, node, was.as_ref()).await.map(|downloaded| {
                    outcome.downloaded += usize::from(downloaded);
                }),
                Change::Move { from, to } => self.move_local(from, to),
            };
            match result {
                Ok(()) => outcome.done += 1,
                Err(Skip::Runner(ClientError::Closed | ClientError::Connect(_))) => return Err(ClientError::Closed),
                Err(e) => {
                    outcome.note_stale(&e, change.path());
                    outcome.skipped.push(format!("{} (in the folder): {e}", change.path()));
                }
            }
            (self.on_done)();
        }
        // Remote changes in waves that may run in parallel. What is put
        // goes first, so a renamed directory shows at its new name before
        // the old one is cleared: deletions that make room for a put (the
        // same path, or a file where a directory must be) of one depth,
        // then directories of one depth, then every file and link, then the
        // other deletions, deepest first.
        let mut needed: HashSet<&WorkspacePath> = HashSet::new();
        let mut ancestors_needed: HashSet<WorkspacePath> = HashSet::new();
        for change in &plan.remote {
            if let Change::Put { path, .. } = change {
                needed.insert(path);
                ancestors_needed.extend(super::model::ancestors(path));
            }
        }
        let wave_of = |c: &Change| match c {
            Change::Delete { path, .. } if needed.contains(path) || ancestors_needed.contains(path) => {
                (0u8, usize::MAX - super::model::depth(path))
            }
            Change::Put {
                node: Node::Dir, path, ..
            } => (1, super::model::depth(path)),
            Change::Move { to, .. } => (1, super::model::depth(to)),
            Change::Put { .. } => (2, 0),
            Change::Delete { path, .. } => (3, usize::MAX - super::model::depth(path)),
        };
        let mut ordered: Vec<&Change> = plan.remote.iter().collect();
        // Stable: within a wave the plan's order (deepest first, parents
        // first) holds.
        ordered.sort_by_key(|c| wave_of(c));
        let mut waves: Vec<Vec<&Change>> = Vec::new();
        let mut last = None;
        for change in ordered {
            let key = wave_of(change);
            if last != Some(key) {
                waves.push(Vec::new());
                last = Some(key);
            }
            if let Some(wave) = waves.last_mut() {
                wave.push(change);
            }
        }
        for wave in waves {
            // A few small uploads (a save) are not held up by the previous
            // one's storage: their answers are awaited off the loop.
            let uploads = wave
                .iter()
                .filter(|c| {
                    matches!(
                        c,
                        Change::Put {
                            node: Node::File { .. },
                            ..
                        }
                    )
                })
                .count();
            let defer_wave = uploads <= DEFER_AT_MOST;
            // The futures are made first, not in a stream's closure: a
            // closure there makes the future not Send (a higher-ranked
            // lifetime the compiler cannot prove), and the TUI runs the
            // sync as a task.
            let budget = ByteBudget::new(BYTES_IN_FLIGHT);
            let (batched, single): (Vec<&Change>, Vec<&Change>) = wave
                .into_iter()
                .partition(|change| !defer_wave && self.batchable(change).is_some());
            let mut batches: Vec<Vec<BatchItem>> = Vec::new();
            let mut batch_bytes = 0u64;
            for item in batched.into_iter().filter_map(|change| self.batchable(change)) {
                match batches.last_mut() {
                    Some(batch) if batch.len() < BATCH_FILES && batch_bytes + item.size <= BATCH_BYTES => {
                        batch_bytes += item.size;
                        batch.push(item);
                    }
                    _ => {
                        batch_bytes = item.size;
                        batches.push(vec![item]);
                    }
                }
            }
            let mut jobs: Vec<_> = batches
                .into_iter()
                .map(|items| {
                    let job = BatchJob {
                        root: self.root,
                        handle: self.handle,
                        budget: budget.clone(),
                        items,
                    };
                    Either::Left(job.apply())
                })
                .collect();
            for change in single {
                let size = self
                    .index
                    .get(change.path())
                    .and_then(|e| e.identity)
                    .map_or(0, |identity| identity.size);
                let defer = match (&mut self.defer, change) {
                    (
                        Some(deferred),
                        Change::Put {
                            node: Node::File { executable: false, .. },
                            ..
                        },
                    ) if defer_wave => {
                        deferred.next += 1;
                        Some((deferred.tx.clone(), deferred.next))
                    }
                    _ => None,
                };
                let job = RemoteJob {
                    root: self.root,
                    handle: self.handle,
                    version: self.remote.versions.get(change.path()).cloned(),
                    defer,
                    bulk: !defer_wave,
                    size,
                    budget: budget.clone(),
                };
                jobs.push(Either::Right(async move { vec![(change, job.apply(change).await)] }));
            }
            let results: Vec<(&Change, Result<Recorded, Skip>)> = futures_util::stream::iter(jobs)
                .buffer_unordered(PARALLEL)
                .flat_map(futures_util::stream::iter)
                .collect()
                .await;
            for (change, result) in results {
                match result {
                    Ok(recorded) => {
                        if let (Some(seq), Some(node)) = (recorded.deferred, &recorded.node) {
                            outcome.deferred.push((recorded.path.clone(), seq, node.clone()));
                        }
                        match change {
                            Change::Delete { .. } => outcome.deleted_remote += 1,
                            Change::Put { node: Node::Dir, .. } => {}
                            Change::Put { .. } => outcome.uploaded += 1,
                            Change::Move { .. } => outcome.moved += 1,
                        }
                        outcome.done += 1;
                        match change {
                            Change::Move { from, to } => self.remote.record_move(from, to),
                            _ => self.remote.record(&recorded.path, recorded.node, recorded.version),
                        }
                    }
                    Err(Skip::Runner(ClientError::Closed | ClientError::Connect(_))) => {
                        return Err(ClientError::Closed);
                    }
                    Err(e) => {
                        outcome.note_stale(&e, change.path());
                        outcome.skipped.push(format!("{} (in the sandbox): {e}", change.path()));
                    }
                }
                (self.on_done)();
            }
        }
        Ok(outcome)
    }

    /// A file upload that may go in a `write_many`: new content, small.
    fn batchable<'c>(&self, change: &'c Change) -> Option<BatchItem<'c>> {
        let Change::Put {
            path,
            node: Node::File { hash, .. },
            was,
        } = change
        else {
            return None;
        };
        let content_known = matches!(was, Some(Node::File { hash: h, .. }) if h == hash);
        let identity = self.index.get(path)?.identity?;
        (!content_known && identity.size <= BATCHED_FILE).then(|| BatchItem {
            change,
            size: identity.size,
            identity,
            version: self.remote.versions.get(path).cloned(),
        })
    }

    async fn make_copy(&mut self, copy: &ConflictCopy) -> Result<(), Skip> {
        let dest = self.parent(&copy.copy)?;
        if dest.dir.metadata(&dest.name).is_ok() {
            // Made in an earlier round (the name carries the content).
            return Ok(());
        }
        match (&copy.node, copy.from) {
            (Node::File { hash, executable }, Side::Remote) => {
                let (bytes, _) = self.handle.read_file(&copy.path).await?;
                if &hash_bytes(&bytes) != hash {
                    return Err(Skip::RemoteChanged);
                }
                // The folder may have changed during the download.
                let dest = self.parent(&copy.copy)?;
                write_atomically(&dest, &bytes, *executable, None)?;
            }
            (Node::File { hash, executable }, Side::Local) => {
                let bytes = beneath::read(self.root, &copy.path)?;
                if &hash_bytes(&bytes) != hash {
                    return Err(Skip::LocalChanged);
                }
                write_atomically(&dest, &bytes, *executable, None)?;
            }
            (Node::Symlink { target }, _) => link_atomically(&dest, target)?,
            (Node::Dir, _) => {}
        }
        Ok(())
    }

    /// The directory holding `path`, opened beneath the root; a link on
    /// the way means the folder is not what the plan was made from.
    fn parent(&self, path: &WorkspacePath) -> Result<Parent, Skip> {
        beneath::parent(self.root, path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT) => Skip::LocalChanged,
            _ => e.into(),
        })
    }

    /// The folder still holds what the plan was made from.
    fn check_local(&self, path: &WorkspacePath, expected: Option<&Node>) -> Result<(), Skip> {
        let at = match beneath::parent(self.root, path) {
            Ok(at) => Some(at),
            // No directory to hold it: nothing is there.
            Err(e) if e.kind() == ErrorKind::NotFound && expected.is_none() => None,
            Err(_) => return Err(Skip::LocalChanged),
        };
        let meta = match at.as_ref().map(|at| at.dir.lstat(&at.name)) {
            Some(Ok(meta)) => Some(meta),
            None => None,
            Some(Err(e)) if e.kind() == ErrorKind::NotFound => None,
            Some(Err(e)) => return Err(e.into()),
        };
        let still = match (expected, &meta, &at) {
            (None, None, _) => true,
            (Some(Node::Dir), Some(m), _) => m.is_dir(),
            (Some(Node::Symlink { target }), Some(m), Some(at)) if m.is_symlink() => {
                at.dir.read_link(&at.name)? == *target
            }
            (Some(Node::File { .. }), Some(m), _) if m.is_file() => {
                let known = self.index.get(path).and_then(|e| e.identity);
                known == Some(Identity::of_stat(m))
            }
            _ => false,
        };
        if still { Ok(()) } else { Err(Skip::LocalChanged) }
    }

    fn delete_local(&mut self, path: &WorkspacePath, was: &Node) -> Result<(), Skip> {
        self.check_local(path, Some(was))?;
        let at = self.parent(path)?;
        match was {
            Node::Dir => match at.dir.remove_dir(&at.name) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                    return Err(because("kept: it holds files the sync ignores"));
                }
                Err(e) => return Err(e.into()),
            },
            _ => at.dir.remove_file(&at.name)?,
        }
        self.index.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn move_local(&mut self, from: &WorkspacePath, to: &WorkspacePath) -> Result<(), Skip> {
        self.check_local(to, None)?;
        let (source, dest) = (self.parent(from)?, self.parent(to)?);
        // Never over what appeared at `to` since the check.
        source
            .dir
            .rename_no_replace(&source.name, &dest.dir, &dest.name)
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Skip::LocalChanged,
                _ => e.into(),
            })?;
        let moved: Vec<(WorkspacePath, LocalEntry)> = self
            .index
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        for (path, entry) in moved {
            self.index.remove(&path);
            if let Some(new) = rebase(&path, from, to) {
                self.index.insert(new, entry);
            }
        }
        Ok(())
    }

    /// Returns whether content was downloaded.
    async fn put_local(&mut self, path: &WorkspacePath, node: &Node, was: Option<&Node>) -> Result<bool, Skip> {
        match node {
            Node::Dir => {
                self.check_local(path, was)?;
                let at = self.parent(path)?;
                match at.dir.create_dir(&at.name) {
                    Ok(()) => {}
                    // A directory already, not a link to one.
                    Err(e)
                        if e.kind() == ErrorKind::AlreadyExists
                            && at.dir.metadata(&at.name).is_ok_and(|m| m.is_dir()) => {}
                    Err(e) => return Err(e.into()),
                }
                self.index.insert(
                    path.clone(),
                    LocalEntry {
                        node: Node::Dir,
                        identity: None,
                    },
                );
                Ok(false)
            }
            Node::Symlink { target } => {
                self.check_local(path, was)?;
                link_atomically(&self.parent(path)?, target)?;
                self.index.insert(
                    path.clone(),
                    LocalEntry {
                        node: node.clone(),
                        identity: None,
                    },
                );
                Ok(false)
            }
            Node::File { hash, executable } => {
                let content_known = matches!(was, Some(Node::File { hash: h, .. }) if h == hash);
                let (bytes, version) = if content_known {
                    (None, None)
                } else {
                    let (bytes, version) = self.handle.read_file(path).await?;
                    if &hash_bytes(&bytes) != hash {
                        return Err(Skip::RemoteChanged);
                    }
                    (Some(bytes), Some(version))
                };
                // Checked after the download, right before replacing.
                self.check_local(path, was)?;
                let at = self.parent(path)?;
                let identity = match bytes {
                    Some(bytes) => {
                        let keep_mode = at
                            .dir
                            .metadata(&at.name)
                            .ok()
                            .filter(|m| m.is_file())
                            .map(|m| m.permissions().mode());
                        write_atomically(&at, &bytes, *executable, keep_mode)?
                    }
                    // Only the executable bit changed.
                    None => {
                        let file = at.dir.open_file(&at.name)?;
                        let mode = file.metadata()?.permissions().mode();
                        file.set_permissions(std::fs::Permissions::from_mode(with_exec(mode, *executable)))?;
                        Identity::of(&at.dir.metadata(&at.name)?)
                    }
                };
                self.index.insert(
                    path.clone(),
                    LocalEntry {
                        node: node.clone(),
                        identity: Some(identity),
                    },
                );
                if let Some(version) = version {
                    self.remote.versions.insert(path.clone(), version);
                }
                Ok(!content_known)
            }
        }
    }
}

struct RemoteJob<'a> {
    root: &'a Path,
    handle: &'a RunnerHandle,
    /// The version the plan saw, for files.
    version: Option<String>,
    /// Send an upload's answer here instead of awaiting it.
    defer: Option<(tokio::sync::mpsc::UnboundedSender<WriteDone>, u64)>,
    /// One of many uploads (a first sync, a checkout): persisted in the
    /// sandbox with its backlog, so a save made meanwhile goes first.
    bulk: bool,
    /// The file's size as scanned, and the wave's budget of bytes in flight.
    size: u64,
    budget: ByteBudget,
}

impl RemoteJob<'_> {
    async fn apply(&self, change: &Change) -> Result<Recorded, Skip> {
        match change {
            Change::Move { from, to } => {
                let op = Op::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    overwrite: false,
                };
                match self.handle.request(op).await {
                    Ok(_) => {}
                    Err(ClientError::Remote {
                        code: ErrorCode::NotFound | ErrorCode::AlreadyExists,
                        ..
                    }) => return Err(Skip::RemoteChanged),
                    Err(e) => return Err(e.into()),
                }
                Ok(Recorded {
                    path: to.clone(),
                    node: None,
                    version: None,
                    deferred: None,
                })
            }
            Change::Delete { path, was } => {
                // A file goes only as the version the plan saw: the runner
                // checks it in the same step as the delete, so a sandbox
                // write since is never deleted.
                let base_version = match was {
                    Node::File { .. } => Some(self.version.clone().ok_or(Skip::RemoteChanged)?),
                    _ => None,
                };
                let op = Op::Delete {
                    path: path.clone(),
                    recursive: false,
                    base_version,
                };
                match self.handle.request(op).await {
                    Ok(_) => {}
                    Err(ClientError::Remote {
                        code: ErrorCode::Conflict,
                        ..
                    }) => return Err(Skip::RemoteChanged),
                    Err(ClientError::Remote {
                        code: ErrorCode::DirectoryNotEmpty,
                        ..
                    }) => return Err(because("kept: it holds files the sync ignores")),
                    Err(ClientError::Remote {
                        code: ErrorCode::NotFound,
                        ..
                    }) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(Recorded {
                    path: path.clone(),
                    node: None,
                    version: None,
                    deferred: None,
                })
            }
            Change::Put { path, node, was } => {
                let mut deferred = None;
                let version = match node {
                    Node::Dir => {
                        match self.handle.request(Op::CreateDir { path: path.clone() }).await {
                            Ok(_) => {}
                            Err(ClientError::Remote {
                                code: ErrorCode::AlreadyExists,
                                ..
                            }) => {}
                            Err(e) => return Err(e.into()),
                        }
                        None
                    }
                    Node::Symlink { target } => {
                        let op = Op::Symlink {
                            path: path.clone(),
                            target: target.clone(),
                            overwrite: was.is_some(),
                        };
                        self.handle.request(op).await?;
                        None
                    }
                    Node::File { hash, executable } => {
                        let content_known = matches!(was, Some(Node::File { hash: h, .. }) if h == hash);
                        let version = if content_known {
                            self.version.clone()
                        } else {
                            // Held until answered.
                            let _held = self
                                .budget
                                .hold(self.size)
                                .await
                                .map_err(|_| because("the sync is stopping"))?;
                            let bytes = beneath::read_expecting(self.root, path, self.size).map_err(|e| {
                                match e.raw_os_error() {
                                    Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT) => Skip::LocalChanged,
                                    _ => e.into(),
                                }
                            })?;
                            if &hash_bytes(&bytes) != hash {
                                return Err(Skip::LocalChanged);
                            }
                            let (base_version, create_new) = match was {
                                // Never a blind overwrite: without the version
                                // replaced, look again first.
                                Some(Node::File { .. }) => {
                                    (Some(self.version.clone().ok_or(Skip::RemoteChanged)?), false)
                                }
                                _ => (None, true),
                            };
                            if let Some((tx, seq)) = &self.defer {
                                let options = WriteOptions {
                                    base_version,
                                    create_new,
                                    bulk: self.bulk,
                                };
                                let (handle, path, node, tx, seq) =
                                    (self.handle.clone(), path.clone(), node.clone(), tx.clone(), *seq);
                                tokio::spawn(async move {
                                    let result = handle.write_file_with(&path, &bytes, options).await;
                                    let _ = tx.send(WriteDone {
                                        path,
                                        seq,
                                        node,
                                        result,
                                    });
                                });
                                deferred = Some(seq);
                                None
                            } else {
                                let options = WriteOptions {
                                    base_version,
                                    create_new,
                                    bulk: self.bulk,
                                };
                                match self.handle.write_file_with(path, &bytes, options).await {
                                    Ok(version) => Some(version),
                                    Err(ClientError::Remote {
                                        code: ErrorCode::Conflict | ErrorCode::AlreadyExists,
                                        ..
                                    }) => return Err(Skip::RemoteChanged),
                                    Err(e) => return Err(e.into()),
                                }
                            }
                        };
                        // A write makes a new file without the bit.
                        if *executable || content_known {
                            let op = Op::SetExecutable {
                                path: path.clone(),
                                executable: *executable,
                            };
                            self.handle.request(op).await?;
                        }
                        version
                    }
                };
                Ok(Recorded {
                    path: path.clone(),
                    node: Some(node.clone()),
                    version,
                    deferred,
                })
            }
        }
    }
}

/// One file of a [`BatchJob`].
struct BatchItem<'c> {
    change: &'c Change,
    /// As scanned.
    size: u64,
    /// As hashed.
    identity: Identity,
    /// The version the plan saw.
    version: Option<String>,
}

/// Small uploads of a bulk wave, sent in one `write_many`. Each file is
/// guarded as [`RemoteJob`] guards one: hashed again as read, sent with
/// the version replaced (or as new), refused alone.
struct BatchJob<'a, 'c> {
    root: &'a Path,
    handle: &'a RunnerHandle,
    budget: ByteBudget,
    items: Vec<BatchItem<'c>>,
}

impl<'c> BatchJob<'_, 'c> {
    async fn apply(self) -> Vec<(&'c Change, Result<Recorded, Skip>)> {
        let total = self.items.iter().map(|item| item.size).sum();
        // Held until answered.
        let Ok(_held) = self.budget.hold(total).await else {
            return self
                .items
                .iter()
                .map(|item| (item.change, Err(because("the sync is stopping"))))
                .collect();
        };
        let mut results: Vec<(&'c Change, Option<Result<Recorded, Skip>>)> =
            self.items.iter().map(|item| (item.change, None)).collect();
        let mut sent = Vec::with_capacity(self.items.len());
        let mut contents = Vec::with_capacity(self.items.len());
        // Planned in path order: a directory's files come together.
        let mut parent = None;
        for (i, item) in self.items.iter().enumerate() {
            match self.prepare(item, &mut parent) {
                Ok((file, bytes)) => {
                    sent.push(i);
                    contents.push((file, bytes));
                }
                Err(skip) => results[i].1 = Some(Err(skip)),
            }
        }
        let files: Vec<(BatchedWrite, &[u8])> = contents.iter().map(|(f, b)| (f.clone(), b.as_slice())).collect();
        match self.handle.write_many(&files, true).await {
            Ok(outcomes) => {
                for (i, outcome) in sent.into_iter().zip(outcomes) {
                    results[i].1 = Some(self.recorded(self.items[i].change, outcome).await);
                }
            }
            Err(e) => {
                for i in sent {
                    results[i].1 = Some(Err(Skip::Runner(copy_error(&e))));
                }
            }
        }
        results
            .into_iter()
            .map(|(change, result)| (change, result.unwrap_or_else(|| Err(because("not sent")))))
            .collect()
    }

    /// Reads one file and checks it is still what was planned; `parent` is
    /// the directory the last file was read from.
    fn prepare(
        &self,
        item: &BatchItem,
        parent: &mut Option<(WorkspacePath, beneath::Dir)>,
    ) -> Result<(BatchedWrite, Vec<u8>), Skip> {
        let Change::Put {
            path,
            node: Node::File { .. },
            was,
        } = item.change
        else {
            return Err(because("not a file upload"));
        };
        let gone = |e: std::io::Error| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT) => Skip::LocalChanged,
            _ => e.into(),
        };
        let dir_path = path.parent().unwrap_or_default();
        let dir = match parent.take() {
            Some((at, dir)) if at == dir_path => dir,
            _ => beneath::open(self.root, &dir_path).map_err(gone)?,
        };
        let name = beneath::c_name(path.file_name().unwrap_or_default())?;
        let read = beneath::read_in(&dir, &name, item.size);
        *parent = Some((dir_path, dir));
        let (bytes, meta) = read.map_err(gone)?;
        // The content hashed as `hash` had this identity.
        if Identity::of(&meta) != item.identity || bytes.len() as u64 != item.size {
            return Err(Skip::LocalChanged);
        }
        let (base_version, create_new) = match was {
            // Never a blind overwrite: without the version replaced, look
            // again first.
            Some(Node::File { .. }) => (Some(item.version.clone().ok_or(Skip::RemoteChanged)?), false),
            _ => (None, true),
        };
        let file = BatchedWrite {
            path: path.clone(),
            size: bytes.len() as u64,
            base_version,
            create_new,
        };
        Ok((file, bytes))
    }

    /// What one file's outcome means for the views.
    async fn recorded(&self, change: &Change, outcome: Result<String, ClientError>) -> Result<Recorded, Skip> {
        let Change::Put { path, node, .. } = change else {
            return Err(because("not a file upload"));
        };
        let version = match outcome {
            Ok(version) => version,
            Err(ClientError::Remote {
                code: ErrorCode::Conflict | ErrorCode::AlreadyExists,
                ..
            }) => return Err(Skip::RemoteChanged),
            Err(e) => return Err(e.into()),
        };
        // A write makes a new file without the bit.
        if let Node::File { executable: true, .. } = node {
            let op = Op::SetExecutable {
                path: path.clone(),
                executable: true,
            };
            self.handle.request(op).await?;
        }
        Ok(Recorded {
            path: path.clone(),
            node: Some(node.clone()),
            version: Some(version),
            deferred: None,
        })
    }
}

/// The same failure again, for each file of a batch it ended.
fn copy_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::Connect(why) => ClientError::Connect(why.clone()),
        ClientError::Remote { code, message } => ClientError::Remote {
            code: *code,
            message: message.clone(),
        },
        ClientError::Closed => ClientError::Closed,
        ClientError::Unexpected(reply) => ClientError::Unexpected(reply.clone()),
        ClientError::Malformed(why) => ClientError::Malformed(why.clone()),
    }
}

fn with_exec(mode: u32, executable: bool) -> u32 {
    if executable {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    }
}

/// A name for a temporary entry, one the scan ignores.
fn temporary_name() -> CString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    CString::new(name).unwrap_or_default()
}

/// Writes `bytes` to a temporary file beside `dest` and renames it over, so
/// an editor or a build never sees half a file. Returns the new identity.
fn write_atomically(dest: &Parent, bytes: &[u8], executable: bool, mode: Option<u32>) -> std::io::Result<Identity> {
    use std::io::Write;
    let tmp = temporary_name();
    let result = (|| {
        // Umask applies, as to any new file; the mode is set after.
        let mut file = dest.dir.create_new(&tmp, 0o666)?;
        file.write_all(bytes)?;
        let base = mode.unwrap_or_else(|| file.metadata().map(|m| m.permissions().mode()).unwrap_or(0o644));
        file.set_permissions(std::fs::Permissions::from_mode(with_exec(base & 0o7777, executable)))?;
        drop(file);
        dest.dir.rename(&tmp, &dest.dir, &dest.name)?;
        dest.dir.metadata(&dest.name).map(|m| Identity::of(&m))
    })();
    if result.is_err() {
        let _ = dest.dir.remove_file(&tmp);
    }
    result
}

fn link_atomically(dest: &Parent, target: &str) -> std::io::Result<()> {
    let tmp = temporary_name();
    dest.dir.symlink(target, &tmp)?;
    dest.dir.rename(&tmp, &dest.dir, &dest.name).inspect_err(|_| {
        let _ = dest.dir.remove_file(&tmp);
    })
}

/// `path` (at or below `from`) as it is after `from` moved to `to`.
pub fn rebase(path: &WorkspacePath, from: &WorkspacePath, to: &WorkspacePath) -> Option<WorkspacePath> {
    let rest = path.as_str().strip_prefix(from.as_str())?;
    WorkspacePath::parse(&format!("{to}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn uploads_beyond_the_budget_wait_until_bytes_are_released() {
        let budget = ByteBudget::new(BYTES_IN_FLIGHT);
        let first = budget.hold(40 * MIB).now_or_never().expect("fits").expect("open");
        let small = budget.hold(20 * MIB).now_or_never().expect("still fits").expect("open");
        let mut second = Box::pin(budget.hold(40 * MIB));
        assert!(
            (&mut second).now_or_never().is_none(),
            "100 MiB held out of a 64 MiB budget"
        );
        drop(small);
        assert!(
            (&mut second).now_or_never().is_none(),
            "80 MiB held out of a 64 MiB budget"
        );
        drop(first);
        assert!((&mut second).now_or_never().is_some(), "the bytes were released");
    }

    #[tokio::test]
    async fn a_file_larger_than_the_budget_goes_alone_and_does_not_wait_forever() {
        let budget = ByteBudget::new(BYTES_IN_FLIGHT);
        let huge = budget
            .hold(10 * BYTES_IN_FLIGHT)
            .now_or_never()
            .expect("the whole budget is free");
        let mut next = Box::pin(budget.hold(1));
        assert!(
            (&mut next).now_or_never().is_none(),
            "nothing else while it is in flight"
        );
        drop(huge);
        assert!((&mut next).now_or_never().is_some());
    }

    #[tokio::test]
    async fn empty_files_count_too() {
        let budget = ByteBudget::new(2 * 1024);
        let _a = budget.hold(0).now_or_never().expect("a unit");
        let _b = budget.hold(0).now_or_never().expect("a unit");
        assert!(
            budget.hold(0).now_or_never().is_none(),
            "a wave of empty files is bounded"
        );
    }
}
