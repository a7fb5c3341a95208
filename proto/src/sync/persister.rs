//! Keeps object storage equal to the workspace.
//!
//! Whatever changes a path (a client's save, a program in a terminal, a
//! `git clone`) marks it dirty. After a short debounce the worker
//! *reconciles* each dirty path: it looks at what is on disk now and makes
//! storage match — uploading files whose size or mtime differ from what was
//! last stored, walking directories, deleting what no longer exists. Because
//! it compares states rather than replaying events, missed, merged or
//! reordered events (inotify overflow, renames of whole trees) cannot leave
//! storage wrong: reconciling the root repairs everything.
//!
//! Two lanes share the work. A change a client waits on
//! ([`Persister::persist`]: its `write`, `rename`, `delete`) goes to the
//! **priority lane**, which runs at once and on its own, so a save never
//! waits behind the backlog of 50,000 files an `npm install` made; those go
//! to the **bulk lane**, which reconciles many paths per round and hands
//! storage whole batches ([`ObjectStore::put_many`],
//! [`ObjectStore::delete_many`]: one group commit per batch in local
//! storage, parallel requests or one batch request elsewhere). Both lanes
//! act on a file only while holding that file's claim, and read the file
//! only once they hold it, so storage never receives an older content after
//! a newer one, whichever lane comes first.
//!
//! A failed storage call puts the path back, marks storage unhealthy (every
//! client is told) and retries with exponential backoff; nothing is dropped.
//! A change that can never be stored (a path whose key storage refuses, a
//! file the runner may not read) is reported once, listed in the status,
//! and skipped: it does not make storage unhealthy nor hold up the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::message::{ChangeKind, FsChange, SkippedChange, StorageStatus};
use crate::path::{RESERVED_PREFIX, WorkspacePath};
use crate::storage::{KeyPrefix, ObjectKey, ObjectStore, PutSource, StorageError};
use bytes::Bytes;
use cap_std::fs::{Dir, Metadata, OpenOptions, OpenOptionsExt};
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// However busy a path is, or however busily programs write elsewhere, the
/// backlog's lane takes it after this long (draining it, or a lane starved of
/// CPU, takes longer: see [`OVERDUE`]).
const MAX_DELAY: Duration = Duration::from_secs(2);
/// The backlog's lane runs only on CPU nothing else of the sandbox wants
/// (`SCHED_IDLE` in a runner): under a build that keeps every CPU busy for
/// minutes it gets none, and what programs wrote would wait, not durable,
/// for the build to end. A change this overdue is taken by the lane of a
/// client's bulk writes, at normal priority...
const OVERDUE: Duration = Duration::from_secs(5);
/// ...a batch at a time, at most this often: a floor for the backlog, not
/// a second lane beside the build.
const OVERDUE_EVERY: Duration = Duration::from_secs(1);
/// Queued changes looked at for that each time, not all of them: this
/// lane shares a thread with terminal bytes, and walking a backlog of
/// 300,000 would stall them for milliseconds every second. A backlog
/// starved of CPU does not move: what is overdue among the first is taken,
/// and each batch taken uncovers more.
const OVERDUE_LOOKED_AT: usize = 4 * BATCH_FILES;
/// Dirty paths one bulk round takes.
const BULK_PATHS: usize = 8192;
/// Files per storage batch: one group commit in local storage.
const BATCH_FILES: usize = 512;
/// Bytes read into memory per batch; larger files stay open and stream.
const BATCH_BYTES: u64 = 32 * 1024 * 1024;
/// Files up to this size are read whole into the batch.
const SMALL_FILE: u64 = 256 * 1024;
/// Open files (the large ones) per batch.
const BATCH_OPEN_FILES: usize = 64;
/// Batches a restore keeps in flight: one being read while one is written
/// out. Nothing else runs in the sandbox yet.
const PARALLEL_RESTORES: usize = 2;
/// Bulk batches in flight once programs have paused (see
/// [`SyncState::programs_paused`]): the CPU the program used is free then,
/// and storage work is CPU-bound on one thread (creating, writing and
/// renaming files). While programs write, one: see
/// [`Persister::reconcile_all`].
const PARALLEL_BULK_WHEN_QUIET: usize = 2;
/// Batches of a client's bulk writes (a folder sync's first reconcile) one
/// round takes, all in flight at once. A round's answers wait for every
/// batch it took, so a round of all that was queued (thousands of files)
/// held the first request's answer behind the last one's: the sync's
/// window of unanswered bytes filled and it stopped sending, and the
/// workspace sat idle. Two at once, since one batch's syncs leave the CPU
/// free for the other's writes. At normal priority, unlike the backlog:
/// the client waits on these.
const CLIENT_BULK_BATCHES: usize = 2;
/// The drain rate is measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Bytes of clients' writes held for storage at once (see
/// [`Persister::persist_written`]); beyond it storage reads them back.
const WRITTEN_HELD: usize = 64 * 1024 * 1024;
/// Skipped changes listed in the status (the count is always complete).
const SKIPPED_LISTED: usize = 100;

/// What was last stored for a file: enough to tell whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    /// `chmod +x` changes neither size nor mtime, and must be stored too.
    executable: bool,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(-1);
        Self {
            size: meta.len(),
            mtime_ns,
            executable: cap_std::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0,
        }
    }
}

pub use crate::storage::layout::MANIFEST_NAME;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Manifest {
    #[serde(default)]
    version: u32,
    /// Files with an executable bit (restored as `chmod +x`).
    #[serde(default)]
    executable: BTreeSet<String>,
    /// Symbolic links: path to target, exactly as `readlink` gives it.
    #[serde(default)]
    symlinks: BTreeMap<String, String>,
    /// Directories with nothing in them.
    #[serde(default)]
    empty_dirs: BTreeSet<String>,
}

impl Manifest {
    /// The entries at `path` and below it: executable files, links with
    /// their targets, empty directories.
    fn at_or_below(&self, path: &WorkspacePath) -> (Vec<&str>, Vec<(&str, &str)>, Vec<&str>) {
        if path.is_root() {
            return (
                self.executable.iter().map(String::as_str).collect(),
                self.symlinks.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect(),
                self.empty_dirs.iter().map(String::as_str).collect(),
            );
        }
        let exact = path.as_str();
        // Everything below `a` sorts together, from `a/` on (`a.txt`, which
        // sorts between `a` and `a/`, is not below it).
        let below = format!("{exact}/");
        fn set<'m>(set: &'m BTreeSet<String>, exact: &str, below: &str) -> Vec<&'m str> {
            let own = set.get(exact).map(String::as_str);
            let under = set.range(below.to_owned()..).map(String::as_str);
            own.into_iter()
                .chain(under.take_while(|p| p.starts_with(below)))
                .collect()
        }
        let own = self.symlinks.get_key_value(exact);
        let under = self
            .symlinks
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below));
        let links = own
            .into_iter()
            .chain(under)
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        (
            set(&self.executable, exact, &below),
            links,
            set(&self.empty_dirs, exact, &below),
        )
    }

    /// Forgets `path` and everything below it.
    fn remove_subtree(&mut self, path: &WorkspacePath) {
        if path.is_root() {
            self.executable.clear();
            self.symlinks.clear();
            self.empty_dirs.clear();
            return;
        }
        let start = format!("{}/", path.as_str());
        for set in [&mut self.executable, &mut self.empty_dirs] {
            set.remove(path.as_str());
            let below: Vec<String> = set
                .range(start.clone()..)
                .take_while(|p| p.starts_with(&start))
                .cloned()
                .collect();
            for p in below {
                set.remove(&p);
            }
        }
        self.symlinks.remove(path.as_str());
        let below: Vec<String> = self
            .symlinks
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.symlinks.remove(&p);
        }
    }

    /// Something exists at `path`: its directory is not empty.
    fn note_child(&mut self, path: &WorkspacePath) {
        if let Some(parent) = path.parent()
            && !self.empty_dirs.is_empty()
        {
            self.empty_dirs.remove(parent.as_str());
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Dirty {
    first: Instant,
    last: Instant,
    /// The last change seen was a removal (see [`SyncState::programs_paused`]).
    removed: bool,
    /// A directory here is walked: what is below it may have changed
    /// unseen (it was moved here, or a client asked). Not for a directory
    /// only made: the watch reports each entry made in it by itself, and a
    /// first sync's 10,000 files were walked again through their 445 new
    /// directories.
    whole: bool,
}

/// What a change to a path was, as far as its plan cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Changed, or asked for: planned whole.
    Changed,
    /// Made where nothing was: each entry made in it is marked by itself.
    Created,
    Removed,
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// A client's write held for storage: what the file holds while it is as
/// `stamp` says.
struct Held {
    stamp: Stamp,
    bytes: Bytes,
    /// The last plan of the path found it as written: the bytes are what
    /// it planned to store.
    planned: bool,
}

/// A file a client's write just made.
pub struct Written {
    pub path: WorkspacePath,
    /// The file's metadata once in place and the bytes written, when
    /// nothing touched it between the write and that look.
    pub content: Option<(Metadata, Bytes)>,
}

/// The persister's queues, most urgent first. A path waits in one of them:
/// the most urgent one it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    /// What clients wait on: saves.
    Priority,
    /// What clients wait on but sent as many at once (`bulk` writes: a
    /// folder sync's first reconcile): ahead of programs' backlog and at
    /// the same CPU priority as saves, but in batches of its own, so a save
    /// never waits behind one of them.
    ClientBulk,
    /// What programs made.
    Bulk,
}

const LANES: [Lane; 3] = [Lane::Priority, Lane::ClientBulk, Lane::Bulk];

#[derive(Default)]
struct SyncState {
    /// Paths a client waits on, for the priority lane.
    urgent: BTreeMap<WorkspacePath, Dirty>,
    /// Paths of a client's bulk writes, for their lane.
    client_bulk: BTreeMap<WorkspacePath, Dirty>,
    /// Everything else, for the bulk lane.
    dirty: BTreeMap<WorkspacePath, Dirty>,
    /// When a change was last queued for the bulk lane, or queued there
    /// again: programs writing. (Not the echo of a client's own write that
    /// waits in a client's lane.)
    bulk_marked_at: Option<Instant>,
    /// No path of `dirty` waits [`MAX_DELAY`] before this: a lower bound
    /// (paths taken since may have held it), so a burst's rounds need not
    /// walk the whole backlog each time the watcher hands on a batch.
    bulk_overdue_at: Option<Instant>,
    /// No removal in `dirty` was last marked before this: a lower bound,
    /// like `bulk_overdue_at`.
    bulk_removed_since: Option<Instant>,
    /// What storage holds, by workspace path.
    stored: BTreeMap<String, Stamp>,
    waiters: HashMap<WorkspacePath, Vec<Waiter>>,
    /// Those waiting on a client's bulk writes. Like `waiters`, answered by
    /// whichever lane stores the path.
    bulk_waiters: HashMap<WorkspacePath, Vec<Waiter>>,
    /// Paths being planned plus file actions not yet done.
    in_flight: usize,
    /// Files a lane is acting on; no other lane touches them meanwhile.
    claimed: HashSet<String>,
    /// Paths taken by a round of a lane clients wait on, until it ends
    /// (with how many such rounds): the bulk lane leaves them to it. Taken
    /// from their queue, they no longer say a client waits, and the bulk
    /// lane, seeing them in an inotify event of their own write, would
    /// store them first and make the client wait on the backlog's lane.
    held_for_clients: HashMap<WorkspacePath, usize>,
    /// When the client's bulk lane last took overdue changes of the backlog.
    overdue_taken_at: Option<Instant>,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// Changes that cannot be stored, by path.
    skipped: BTreeMap<String, String>,
    /// What clients' writes just put in files, by path, for storage to take
    /// instead of reading the files back (see [`Persister::persist_written`]).
    written: HashMap<WorkspacePath, Held>,
    /// Their bytes, bounded by [`WRITTEN_HELD`].
    written_bytes: usize,
    /// What the workspace's modes, links and empty directories are, and
    /// what storage last received of them.
    manifest: Manifest,
    manifest_stored: Manifest,
    /// Mirror mode: the manifest file last passed on.
    manifest_file: Option<Stamp>,
}

/// Lowers the bound `bound` to `at`, if that is earlier (or it had none).
fn lower_to(bound: &mut Option<Instant>, at: Instant) {
    *bound = Some(bound.map_or(at, |b| b.min(at)));
}

impl SyncState {
    /// Whether programs have stopped writing for `debounce`: the backlog's
    /// rounds wait for that, not for each path's own quiet time (or until a
    /// path's [`MAX_DELAY`]). A `git checkout`, a `tar x` or an `npm
    /// install` writing at full speed would otherwise have each batch's
    /// `syncfs` write back the files it has just made, in the kernel's
    /// writeback workers: threads at normal priority, which on a
    /// non-preemptible kernel run for milliseconds at a time, beside the
    /// program, while a keystroke's echo waits (p99 5-13 ms during such a
    /// burst of 100,000 files on two cores, 1.2-1.3 ms when the rounds
    /// waited, as without persistence). The burst is then persisted as
    /// one backlog, at the same total time. A removal makes no file data
    /// to write back: it neither counts as writing nor waits for a pause,
    /// so a recursive `rm` is deleted from storage as it goes.
    fn programs_paused(&self, now: Instant, debounce: Duration) -> bool {
        self.bulk_marked_at.is_none_or(|at| now - at >= debounce)
    }

    /// Up to `limit` of the backlog's paths due at `now`: any once programs
    /// paused (or when `everything_due`), else those waiting [`MAX_DELAY`].
    fn bulk_due(&mut self, now: Instant, debounce: Duration, everything_due: bool, limit: usize) -> Vec<WorkspacePath> {
        if everything_due || self.programs_paused(now, debounce) {
            return self.dirty.keys().take(limit).cloned().collect();
        }
        let none_overdue = self.bulk_overdue_at.is_none_or(|at| at > now);
        let no_removal_quiet = self.bulk_removed_since.is_none_or(|since| since + debounce > now);
        if none_overdue && no_removal_quiet {
            return Vec::new();
        }
        let mut due = Vec::new();
        let (mut overdue_at, mut removed_since) = (None, None);
        for (path, d) in &self.dirty {
            let taken = due.len() < limit && (now - d.first >= MAX_DELAY || (d.removed && now - d.last >= debounce));
            if taken {
                due.push(path.clone());
                continue;
            }
            lower_to(&mut overdue_at, d.first + MAX_DELAY);
            if d.removed {
                lower_to(&mut removed_since, d.last);
            }
        }
        self.bulk_overdue_at = overdue_at;
        self.bulk_removed_since = removed_since;
        due
    }

    /// When the backlog's next path falls due, if it holds any.
    fn bulk_next_due(&self, debounce: Duration) -> Option<Instant> {
        if self.dirty.is_empty() {
            return None;
        }
        let paused = self.bulk_marked_at.map(|at| at + debounce);
        let removal_quiet = self.bulk_removed_since.map(|since| since + debounce);
        [self.bulk_overdue_at, paused, removal_quiet]
            .into_iter()
            .flatten()
            .min()
    }

    /// Queues `path` in `lane` as `dirty`.
    fn enqueue(&mut self, lane: Lane, path: WorkspacePath, dirty: Dirty) {
        if lane == Lane::Bulk {
            self.note_in_backlog(&dirty);
        }
        self.queue(lane).insert(path, dirty);
    }

    /// Keeps the backlog's lower bounds true of `dirty`, in it.
    fn note_in_backlog(&mut self, dirty: &Dirty) {
        lower_to(&mut self.bulk_overdue_at, dirty.first + MAX_DELAY);
        if dirty.removed {
            lower_to(&mut self.bulk_removed_since, dirty.last);
        }
    }

    fn queue(&mut self, lane: Lane) -> &mut BTreeMap<WorkspacePath, Dirty> {
        match lane {
            Lane::Priority => &mut self.urgent,
            Lane::ClientBulk => &mut self.client_bulk,
            Lane::Bulk => &mut self.dirty,
        }
    }

    fn queued(&self) -> usize {
        self.urgent.len() + self.client_bulk.len() + self.dirty.len()
    }
}

/// Completed file actions over the last [`RATE_WINDOW`], for the drain
/// rate. Apart from [`SyncState`], so that reading the status never waits
/// for a bulk round that holds the state: the status is read on the runtime
/// that carries terminal bytes. (Taken after the state's lock when both are
/// held, never before.)
#[derive(Default)]
struct Drained(Mutex<VecDeque<(Instant, u64)>>);

impl Drained {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(Instant, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, n: u64) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let mut drained = self.lock();
        drained.push_back((now, n));
        while drained
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            drained.pop_front();
        }
    }

    fn rate(&self) -> u64 {
        let now = Instant::now();
        let total: u64 = self
            .lock()
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
            .map(|(_, n)| n)
            .sum();
        (total as f64 / RATE_WINDOW.as_secs_f64()).round() as u64
    }
}

pub struct Persister {
    store: Arc<dyn ObjectStore>,
    prefix: KeyPrefix,
    dir: Dir,
    root: PathBuf,
    debounce: Duration,
    state: Mutex<SyncState>,
    drained: Drained,
    wake_priority: Notify,
    wake_client_bulk: Notify,
    wake_bulk: Notify,
    /// A claimed file was released.
    released: Notify,
    status: watch::Sender<StorageStatus>,
    /// Keep a manifest of modes, links and empty directories (a runner);
    /// without it (the control plane's mirror of a runner's storage), a
    /// manifest file found at the root is passed on as it is.
    metadata: bool,
    /// One manifest upload at a time, so an older one never lands last.
    manifest_upload: tokio::sync::Mutex<()>,
    /// Paths left out of storage, with everything below them.
    excluded: Vec<WorkspacePath>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotPersisted {
    #[error("the change to {0} did not reach storage before the runner stopped")]
    Stopped(WorkspacePath),
    #[error("the change to {path} cannot be stored: {reason}")]
    Refused { path: WorkspacePath, reason: String },
}

/// One file-level storage action of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Upload,
    Delete,
}

/// What reconciling one dirty path needs.
#[derive(Default)]
struct Plan {
    uploads: Vec<WorkspacePath>,
    deletes: Vec<WorkspacePath>,
}

/// Every path's plan as file actions in storage batches: one action per
/// file, whoever asked for it.
struct Actions {
    /// Which of the planned paths each file is for.
    deletes: Vec<Vec<(WorkspacePath, Vec<usize>)>>,
    uploads: Vec<Vec<(WorkspacePath, Vec<usize>)>>,
    files: usize,
    /// Paths whose plan failed, by index.
    failed: Vec<(usize, StorageError)>,
}

impl Actions {
    fn of(plans: Vec<Result<Plan, StorageError>>) -> Self {
        let mut actions: BTreeMap<WorkspacePath, (Action, Vec<usize>)> = BTreeMap::new();
        let mut failed = Vec::new();
        for (i, plan) in plans.into_iter().enumerate() {
            match plan {
                Ok(plan) => {
                    for (path, action) in plan
                        .deletes
                        .into_iter()
                        .map(|p| (p, Action::Delete))
                        .chain(plan.uploads.into_iter().map(|p| (p, Action::Upload)))
                    {
                        actions.entry(path).or_insert((action, Vec::new())).1.push(i);
                    }
                }
                Err(e) => failed.push((i, e)),
            }
        }
        let files = actions.len();
        let (deletes, uploads): (Vec<_>, Vec<_>) = actions.into_iter().partition(|(_, (a, _))| *a == Action::Delete);
        let in_batches = |group: Vec<(WorkspacePath, (Action, Vec<usize>))>| {
            let mut group = group.into_iter().map(|(path, (_, owners))| (path, owners));
            std::iter::from_fn(|| {
                let batch: Vec<_> = group.by_ref().take(BATCH_FILES).collect();
                (!batch.is_empty()).then_some(batch)
            })
            .collect::<Vec<_>>()
        };
        let (deletes, uploads) = (in_batches(deletes), in_batches(uploads));
        Self {
            deletes,
            uploads,
            files,
            failed,
        }
    }
}

/// How one file action ended.
enum Step {
    /// Done, or nothing to do.
    Done,
    /// Another lane holds the file: try again once it lets go.
    Deferred,
    /// Can never succeed; recorded in `skipped`.
    Skipped,
    Failed(StorageError),
}

/// How a dirty path's reconcile ended, its actions combined.
#[derive(Default)]
enum Outcome {
    #[default]
    Done,
    Deferred,
    Failed(StorageError),
}

impl Outcome {
    fn merge(&mut self, step: Step) {
        match step {
            Step::Done | Step::Skipped => {}
            Step::Deferred => {
                if matches!(self, Outcome::Done) {
                    *self = Outcome::Deferred;
                }
            }
            Step::Failed(e) => {
                if !matches!(self, Outcome::Failed(_)) {
                    *self = Outcome::Failed(e);
                }
            }
        }
    }
}

impl Persister {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: KeyPrefix,
        dir: Dir,
        root: PathBuf,
        debounce: Duration,
    ) -> Arc<Self> {
        Self::with_metadata(store, prefix, dir, root, debounce, true, Vec::new())
    }

    /// A persister that leaves `excluded`, and everything below them, out
    /// of storage (a home directory's caches): never uploaded nor restored;
    /// whatever storage already holds there stays untouched.
    pub fn excluding(
        store: Arc<dyn ObjectStore>,
        prefix: KeyPrefix,
        dir: Dir,
        root: PathBuf,
        debounce: Duration,
        excluded: Vec<WorkspacePath>,
    ) -> Arc<Self> {
        Self::with_metadata(store, prefix, dir, root, debounce, true, excluded)
    }

    /// A persister for a directory that is itself a runner's storage (the
    /// control plane's mirror of it to S3): it keeps no manifest of its
    /// own but passes the runner's on.
    pub fn mirror(
        store: Arc<dyn ObjectStore>,
        prefix: KeyPrefix,
        dir: Dir,
        root: PathBuf,
        debounce: Duration,
    ) -> Arc<Self> {
        Self::with_metadata(store, prefix, dir, root, debounce, false, Vec::new())
    }

    fn with_metadata(
        store: Arc<dyn ObjectStore>,
        prefix: KeyPrefix,
        dir: Dir,
        root: PathBuf,
        debounce: Duration,
        metadata: bool,
        excluded: Vec<WorkspacePath>,
    ) -> Arc<Self> {
        let (status, _) = watch::channel(StorageStatus {
            healthy: true,
            ..Default::default()
        });
        Arc::new(Self {
            store,
            prefix,
            dir,
            root,
            debounce,
            state: Mutex::new(SyncState::default()),
            drained: Drained::default(),
            wake_priority: Notify::new(),
            wake_client_bulk: Notify::new(),
            wake_bulk: Notify::new(),
            released: Notify::new(),
            status,
            metadata,
            manifest_upload: tokio::sync::Mutex::new(()),
            excluded,
        })
    }

    fn is_excluded(&self, path: &WorkspacePath) -> bool {
        self.excluded.iter().any(|e| path.starts_with(e))
    }

    fn manifest_key(&self) -> Result<ObjectKey, StorageError> {
        crate::storage::layout::manifest(&self.prefix)
    }

    /// Sends storage the manifest if it changed since it last did.
    async fn store_manifest(&self) -> Result<(), StorageError> {
        let one_at_a_time = self.manifest_upload.lock().await;
        self.upload_manifest(one_at_a_time).await
    }

    /// [`Persister::store_manifest`], unless an upload is under way: what
    /// an empty round of a lane clients wait on does. That upload may be
    /// the bulk lane's, whose idle-class threads a build can starve in the
    /// middle of it; waiting for it there held up every save after.
    async fn store_manifest_unless_busy(&self) -> Result<(), StorageError> {
        match self.manifest_upload.try_lock() {
            Ok(one_at_a_time) => self.upload_manifest(one_at_a_time).await,
            Err(_) => Ok(()),
        }
    }

    async fn upload_manifest(&self, _one_at_a_time: tokio::sync::MutexGuard<'_, ()>) -> Result<(), StorageError> {
        let key = self.manifest_key()?;
        if !self.metadata {
            // Mirror mode: pass the runner's manifest file on.
            let stamp = match self.dir.metadata(MANIFEST_NAME) {
                Ok(meta) if meta.is_file() => Stamp::of(&meta),
                _ => return Ok(()),
            };
            if self.lock().manifest_file == Some(stamp) {
                return Ok(());
            }
            let body = match self.dir.read(MANIFEST_NAME) {
                Ok(body) => body,
                Err(_) => return Ok(()),
            };
            self.store.put(&key, body.into()).await?;
            self.lock().manifest_file = Some(stamp);
            return Ok(());
        }
        let current = {
            let state = self.lock();
            if state.manifest == state.manifest_stored {
                return Ok(());
            }
            state.manifest.clone()
        };
        let body = serde_json::to_vec(&current).unwrap_or_default();
        self.store.put(&key, body.into()).await?;
        self.lock().manifest_stored = current;
        Ok(())
    }

    /// Whether storage's manifest lags behind for any of `paths`: what the
    /// manifest says at or below one of them, or whether its directory is
    /// empty (the last file moved or deleted), differs from what storage
    /// last received. A save of a file whose mode did not change does not
    /// wait for the rest of the manifest (an `npm install`'s links).
    fn touch_manifest<'a>(&self, paths: impl ExactSizeIterator<Item = &'a WorkspacePath>) -> Vec<bool> {
        let state = self.lock();
        let (now, stored) = (&state.manifest, &state.manifest_stored);
        if !self.metadata || now == stored {
            return vec![false; paths.len()];
        }
        paths
            .map(|p| {
                now.at_or_below(p) != stored.at_or_below(p)
                    || p.parent().is_some_and(|parent| {
                        now.empty_dirs.contains(parent.as_str()) != stored.empty_dirs.contains(parent.as_str())
                    })
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> watch::Receiver<StorageStatus> {
        self.status.subscribe()
    }

    pub fn current_status(&self) -> StorageStatus {
        let mut status = self.status.borrow().clone();
        // The rate decays while nothing drains; recompute it on request.
        status.drain_rate = self.drained.rate();
        status
    }

    /// The key `path` is stored under; refuses paths storage cannot take
    /// (a key over 1024 bytes), so a client's write can be refused before
    /// anything is written.
    pub fn check_storable(&self, path: &WorkspacePath) -> Result<(), StorageError> {
        self.prefix.key_for(path).map(drop)
    }

    /// Notes that `path` may differ from storage.
    pub fn mark_dirty(&self, path: WorkspacePath) {
        self.mark_all_dirty([path]);
    }

    pub fn mark_all_dirty(&self, paths: impl IntoIterator<Item = WorkspacePath>) {
        self.mark_changed(paths.into_iter().map(|path| (path, Mark::Changed)));
    }

    /// Queues what a watcher saw change, telling removals (which do not wait
    /// for programs to pause) from the rest.
    pub fn mark_changes(&self, changes: &[FsChange]) {
        self.mark_changed(changes.iter().map(|change| {
            let mark = match change.kind {
                ChangeKind::Removed => Mark::Removed,
                ChangeKind::Created => Mark::Created,
                ChangeKind::Modified => Mark::Changed,
            };
            (change.path.clone(), mark)
        }));
    }

    fn mark_changed(&self, changes: impl IntoIterator<Item = (WorkspacePath, Mark)>) {
        let backlog_began = {
            let now = Instant::now();
            let mut state = self.lock();
            let was_empty = state.dirty.is_empty();
            for (path, mark) in changes.into_iter().filter(|(p, _)| !self.is_excluded(p)) {
                Self::mark_locked(&mut state, path, Lane::Bulk, now, mark);
            }
            was_empty && !state.dirty.is_empty()
        };
        self.wake_bulk.notify_one();
        if backlog_began {
            // It watches for the backlog falling overdue from now on.
            self.wake_client_bulk.notify_one();
        }
    }

    /// Queues `path` for `lane`, or keeps it in a more urgent lane's queue
    /// where it already waits.
    fn mark_locked(state: &mut SyncState, path: WorkspacePath, lane: Lane, now: Instant, mark: Mark) {
        let removed = mark == Mark::Removed;
        let mut whole = mark != Mark::Created;
        let mut first = now;
        for queued in LANES {
            if let Some(entry) = state.queue(queued).get_mut(&path) {
                if queued <= lane {
                    entry.last = now;
                    entry.removed = removed;
                    entry.whole |= whole;
                    let entry = *entry;
                    if queued == Lane::Bulk {
                        state.note_in_backlog(&entry);
                        if !removed {
                            state.bulk_marked_at = Some(now);
                        }
                    }
                    return;
                }
                first = entry.first;
                whole |= entry.whole;
                state.queue(queued).remove(&path);
                break;
            }
        }
        if lane == Lane::Bulk && !removed {
            state.bulk_marked_at = Some(now);
        }
        state.enqueue(
            lane,
            path,
            Dirty {
                first,
                last: now,
                removed,
                whole,
            },
        );
    }

    /// Puts back a path a round took but could not finish, keeping when it
    /// first changed, in `lane`'s queue or a more urgent one it waits in.
    fn requeue(state: &mut SyncState, path: WorkspacePath, lane: Lane, taken: Dirty) {
        for queued in LANES {
            if let Some(entry) = state.queue(queued).get_mut(&path) {
                entry.first = entry.first.min(taken.first);
                entry.whole |= taken.whole;
                let entry = *entry;
                if queued > lane {
                    state.queue(queued).remove(&path);
                    state.enqueue(lane, path, entry);
                } else if queued == Lane::Bulk {
                    state.note_in_backlog(&entry);
                }
                return;
            }
        }
        state.enqueue(lane, path, taken);
    }

    /// Resolves once `path` as it is now is in storage, ahead of the
    /// backlog (a client's save). Fails if the runner stops first, or if
    /// storage can never take the change.
    pub async fn persist(&self, path: WorkspacePath) -> Result<(), NotPersisted> {
        self.wait_durable(path, Lane::Priority).await
    }

    /// [`Persister::persist`] for one of a client's many writes (a first
    /// sync, a folder upload): ahead of programs' backlog, in batches of
    /// their own, so that a save made meanwhile does not wait behind them.
    pub async fn persist_bulk(&self, path: WorkspacePath) -> Result<(), NotPersisted> {
        self.wait_durable(path, Lane::ClientBulk).await
    }

    /// [`Persister::persist_many`] of files a client's write just made,
    /// whose bytes are still in memory: storage takes them from there, not
    /// from the files again (an open, a read and a close each, for every
    /// file of a first sync), as long as each file is found as written when
    /// it is planned.
    pub async fn persist_written(&self, files: Vec<Written>, bulk: bool) -> Vec<Result<(), NotPersisted>> {
        let paths = {
            let mut state = self.lock();
            files
                .into_iter()
                .map(|Written { path, content }| {
                    if let Some((meta, bytes)) = content
                        && state.written_bytes + bytes.len() <= WRITTEN_HELD
                    {
                        state.written_bytes += bytes.len();
                        let held = Held {
                            stamp: Stamp::of(&meta),
                            bytes,
                            planned: false,
                        };
                        if let Some(old) = state.written.insert(path.clone(), held) {
                            state.written_bytes -= old.bytes.len();
                        }
                    }
                    path
                })
                .collect()
        };
        self.persist_many(paths, bulk).await
    }

    /// [`Persister::persist`] (or, with `bulk`, [`Persister::persist_bulk`])
    /// for many paths at once, as one request's files: queued together, so
    /// the lane takes them in as few rounds as its batches allow. One result
    /// per path, in their order.
    pub async fn persist_many(&self, paths: Vec<WorkspacePath>, bulk: bool) -> Vec<Result<(), NotPersisted>> {
        let lane = if bulk { Lane::ClientBulk } else { Lane::Priority };
        let waits = self.queue_waiters(paths, lane);
        futures_util::future::join_all(waits.into_iter().map(|(path, wait)| async move {
            match wait {
                Err(reason) => Err(NotPersisted::Refused { path, reason }),
                Ok(rx) => Self::outcome(path, rx.await),
            }
        }))
        .await
    }

    async fn wait_durable(&self, path: WorkspacePath, lane: Lane) -> Result<(), NotPersisted> {
        let Some((path, wait)) = self.queue_waiters(vec![path], lane).pop() else {
            return Ok(()); // One path in, one out.
        };
        match wait {
            Err(reason) => Err(NotPersisted::Refused { path, reason }),
            Ok(rx) => Self::outcome(path, rx.await),
        }
    }

    /// Queues `paths` in `lane` with a waiter each, under one lock and with
    /// one wake-up; a path storage never takes is refused at once.
    #[allow(clippy::type_complexity)]
    fn queue_waiters(
        &self,
        paths: Vec<WorkspacePath>,
        lane: Lane,
    ) -> Vec<(WorkspacePath, Result<oneshot::Receiver<Result<(), String>>, String>)> {
        let now = Instant::now();
        let waits: Vec<_> = {
            let mut state = self.lock();
            paths
                .into_iter()
                .map(|path| {
                    if self.is_excluded(&path) {
                        return (path, Err("excluded from storage".to_owned()));
                    }
                    let (tx, rx) = oneshot::channel();
                    let waiters = match lane {
                        Lane::Priority => &mut state.waiters,
                        Lane::ClientBulk | Lane::Bulk => &mut state.bulk_waiters,
                    };
                    waiters.entry(path.clone()).or_default().push(tx);
                    Self::mark_locked(&mut state, path.clone(), lane, now, Mark::Changed);
                    (path, Ok(rx))
                })
                .collect()
        };
        self.wake(lane).notify_one();
        waits
    }

    fn outcome(
        path: WorkspacePath,
        answer: Result<Result<(), String>, oneshot::error::RecvError>,
    ) -> Result<(), NotPersisted> {
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(NotPersisted::Refused { path, reason }),
            Err(_) => Err(NotPersisted::Stopped(path)),
        }
    }

    /// Downloads the project's files into the workspace. Files already in
    /// the workspace win: they are newer than storage (a runner restarted
    /// over its old workspace) and are uploaded instead.
    pub async fn restore(self: &Arc<Self>) -> Result<usize, StorageError> {
        let objects = self.store.list(&self.prefix).await?;
        let manifest_key = self.manifest_key()?;
        let has_manifest = objects.iter().any(|o| o.key == manifest_key);
        if has_manifest && !self.metadata {
            // Mirror mode: the runner's manifest is a file like the others.
            if self.dir.symlink_metadata(MANIFEST_NAME).is_err() {
                let dest = self.root.join(MANIFEST_NAME);
                self.store.get_to_file(&manifest_key, &dest).await?;
            }
        }
        let manifest: Manifest = if has_manifest && self.metadata {
            let body = self.store.get(&manifest_key).await?;
            serde_json::from_slice(&body).unwrap_or_else(|e| {
                tracing::warn!("the stored manifest is not valid, ignored: {e}");
                Manifest::default()
            })
        } else {
            Manifest::default()
        };
        let downloads: Vec<(ObjectKey, WorkspacePath)> = objects
            .into_iter()
            .filter_map(|object| {
                let path = self.prefix.path_of(&object.key).filter(|p| !self.is_excluded(p))?;
                Some((object.key, path))
            })
            .collect();
        let mut restored = 0;
        let mut chunks = futures_util::stream::iter(downloads.chunks(BATCH_FILES).map(<[_]>::to_vec))
            .map(|chunk| {
                let this = self.clone();
                async move { this.restore_batch(chunk).await }
            })
            .buffered(PARALLEL_RESTORES);
        while let Some(result) = chunks.next().await {
            let stamps = result?;
            restored += stamps.len();
            let mut state = self.lock();
            for (path, stamp) in stamps {
                state.stored.insert(path.as_str().to_owned(), stamp);
            }
        }
        drop(chunks);
        if self.metadata {
            let this = self.clone();
            let applied = manifest.clone();
            let stamps = blocking(move || this.apply_manifest(&applied)).await?;
            let mut state = self.lock();
            for (path, stamp) in stamps {
                state.stored.insert(path, stamp);
            }
            state.manifest = manifest.clone();
            state.manifest_stored = manifest;
        }
        // Anything in the workspace that storage lacks (or has older) goes up.
        self.mark_dirty(WorkspacePath::root());
        Ok(restored)
    }

    /// Gives restored files their executable bit back and recreates empty
    /// directories and symbolic links (where nothing is in the way: local
    /// files win). Returns the new stamps of the files it changed.
    fn apply_manifest(&self, manifest: &Manifest) -> Vec<(String, Stamp)> {
        let mut stamps = Vec::new();
        for dir in &manifest.empty_dirs {
            if let Ok(path) = WorkspacePath::parse(dir)
                && !path.is_root()
                && let Err(e) = self.dir.create_dir_all(path.as_relative_fs_path())
            {
                tracing::warn!(%path, "cannot restore the empty directory: {e}");
            }
        }
        for file in &manifest.executable {
            let Ok(path) = WorkspacePath::parse(file) else { continue };
            let rel = path.as_relative_fs_path();
            let Ok(meta) = self.dir.symlink_metadata(rel) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mode = cap_std::fs::PermissionsExt::mode(&meta.permissions());
            let exec = mode | ((mode & 0o444) >> 2);
            let perm = cap_std::fs::Permissions::from_std(std::os::unix::fs::PermissionsExt::from_mode(exec));
            match self.dir.set_permissions(rel, perm) {
                Ok(()) => {
                    if let Ok(meta) = self.dir.symlink_metadata(rel) {
                        stamps.push((file.clone(), Stamp::of(&meta)));
                    }
                }
                Err(e) => tracing::warn!(%path, "cannot restore the executable bit: {e}"),
            }
        }
        for (link, target) in &manifest.symlinks {
            let Ok(path) = WorkspacePath::parse(link) else { continue };
            let rel = path.as_relative_fs_path();
            if self.dir.symlink_metadata(rel).is_ok() {
                continue;
            }
            if let Some(parent) = path.parent()
                && !parent.is_root()
            {
                let _ = self.dir.create_dir_all(parent.as_relative_fs_path());
            }
            // As a link: the target is not resolved, inside the workspace
            // or out of it (a venv's `bin/python -> /usr/bin/python3`).
            if let Err(e) = self.dir.symlink_contents(target, rel) {
                tracing::warn!(%path, "cannot restore the symbolic link: {e}");
            }
        }
        stamps
    }

    /// Downloads one batch: temporary files beside their destinations, then
    /// renamed into place, so a restore cut short leaves no torn file that
    /// would later win over storage's whole one.
    async fn restore_batch(
        self: Arc<Self>,
        chunk: Vec<(ObjectKey, WorkspacePath)>,
    ) -> Result<Vec<(WorkspacePath, Stamp)>, StorageError> {
        let this = self.clone();
        let prepared = blocking(move || {
            let mut made = HashSet::new();
            let mut out = Vec::with_capacity(chunk.len());
            for (key, path) in chunk {
                // Local files win.
                if this.dir.symlink_metadata(path.as_relative_fs_path()).is_ok() {
                    continue;
                }
                let parent = path.parent().unwrap_or_default();
                if !parent.is_root() && made.insert(parent.clone()) {
                    this.dir
                        .create_dir_all(parent.as_relative_fs_path())
                        .map_err(|source| StorageError::LocalIo {
                            path: path.to_string(),
                            source,
                        })?;
                }
                let tmp_name = format!("{RESERVED_PREFIX}restore-{}", unique());
                let tmp_rel = if parent.is_root() {
                    PathBuf::from(&tmp_name)
                } else {
                    PathBuf::from(parent.as_str()).join(&tmp_name)
                };
                out.push((key, path, tmp_rel));
            }
            Ok::<_, StorageError>(out)
        })
        .await??;
        // Nothing runs in the workspace yet, so absolute paths are safe here.
        let items = prepared
            .iter()
            .map(|(key, _, tmp_rel)| (key.clone(), self.root.join(tmp_rel)))
            .collect();
        let results = self.store.get_many_to_files(items).await;
        let this = self.clone();
        blocking(move || {
            let mut stamps = Vec::with_capacity(prepared.len());
            let mut first_error = None;
            for ((_, path, tmp_rel), result) in prepared.into_iter().zip(results) {
                let local_err = |source| StorageError::LocalIo {
                    path: path.to_string(),
                    source,
                };
                let placed = result.and_then(|_| {
                    this.dir
                        .rename(&tmp_rel, &this.dir, path.as_relative_fs_path())
                        .map_err(local_err)?;
                    this.dir.symlink_metadata(path.as_relative_fs_path()).map_err(local_err)
                });
                match placed {
                    Ok(meta) => stamps.push((path, Stamp::of(&meta))),
                    Err(e) => {
                        let _ = this.dir.remove_file(&tmp_rel);
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(stamps),
            }
        })
        .await?
    }

    /// The worker: runs until `stop` and then returns; call
    /// [`Persister::flush`] afterwards to drain what is left.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.run_with_priority_on(tokio::runtime::Handle::current(), stop).await;
    }

    /// [`Persister::run`], with the lanes of what clients wait on (saves, and
    /// a client's bulk writes) on `priority`'s runtime and the bulk lane on
    /// this task's: a runner keeps the bulk lane on threads of lower CPU
    /// priority, so an `npm install`'s backlog yields to keystrokes, and
    /// what its clients wait on does not.
    pub async fn run_with_priority_on(self: Arc<Self>, priority: tokio::runtime::Handle, stop: CancellationToken) {
        let saves = priority.spawn(self.clone().lane(Lane::Priority, stop.clone()));
        let clients_bulk = priority.spawn(self.clone().lane(Lane::ClientBulk, stop.clone()));
        self.lane(Lane::Bulk, stop).await;
        let _ = saves.await;
        let _ = clients_bulk.await;
    }

    fn wake(&self, lane: Lane) -> &Notify {
        match lane {
            Lane::Priority => &self.wake_priority,
            Lane::ClientBulk => &self.wake_client_bulk,
            Lane::Bulk => &self.wake_bulk,
        }
    }

    async fn lane(self: Arc<Self>, lane: Lane, stop: CancellationToken) {
        let wake = self.wake(lane);
        loop {
            let wait = self.round(lane, false).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = self.released.notified(), if lane == Lane::Priority => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Takes the lane's due paths and reconciles them; returns how long
    /// until the next is due.
    async fn round(self: &Arc<Self>, lane: Lane, everything_due: bool) -> Duration {
        let now = Instant::now();
        let (taken, waiters, took_overdue) = {
            let mut state = self.lock();
            if let Some(retry_at) = state.retry_at
                && retry_at > now
                && !everything_due
            {
                return retry_at - now;
            }
            let debounce = self.debounce;
            let due: Vec<WorkspacePath> = match lane {
                Lane::Priority => state.urgent.keys().cloned().collect(),
                // Whole writes: no quiet time to wait for.
                Lane::ClientBulk => state
                    .client_bulk
                    .keys()
                    .take(CLIENT_BULK_BATCHES * BATCH_FILES)
                    .cloned()
                    .collect(),
                Lane::Bulk => state.bulk_due(now, debounce, everything_due, BULK_PATHS),
            };
            let overdue: Vec<WorkspacePath> =
                if lane == Lane::ClientBulk && state.overdue_taken_at.is_none_or(|at| now - at >= OVERDUE_EVERY) {
                    state
                        .dirty
                        .iter()
                        .take(OVERDUE_LOOKED_AT)
                        .filter(|(_, d)| now - d.first >= OVERDUE)
                        .take(BATCH_FILES)
                        .map(|(p, _)| p.clone())
                        .collect()
                } else {
                    Vec::new()
                };
            let took_overdue = !overdue.is_empty();
            if took_overdue {
                state.overdue_taken_at = Some(now);
            }
            let mut taken = Vec::with_capacity(due.len() + overdue.len());
            for (path, from) in due
                .into_iter()
                .map(|p| (p, lane))
                .chain(overdue.into_iter().map(|p| (p, Lane::Bulk)))
            {
                let entry = state.queue(from).remove(&path);
                if let Some(d) = entry {
                    taken.push((path, d));
                }
            }
            let waiters: Vec<(Vec<Waiter>, Vec<Waiter>)> = taken
                .iter()
                .map(|(p, _)| {
                    let saves = state.waiters.remove(p).unwrap_or_default();
                    let bulk = state.bulk_waiters.remove(p).unwrap_or_default();
                    (saves, bulk)
                })
                .collect();
            state.in_flight += taken.len();
            if lane != Lane::Bulk {
                for (path, _) in &taken {
                    *state.held_for_clients.entry(path.clone()).or_default() += 1;
                }
            }
            (taken, waiters, took_overdue)
        };
        if taken.is_empty() {
            // The saves' lane wakes after every batch any lane ends: storing
            // the manifest there, at normal priority, through a backlog, cost
            // a fifth of its throughput. What clients change it stores in
            // its own rounds; the rest is the bulk lane's, or this lane's
            // once overdue.
            let stored = match lane {
                Lane::Bulk => self.store_manifest().await,
                Lane::ClientBulk => self.store_manifest_unless_busy().await,
                Lane::Priority => Ok(()),
            };
            if let Err(e) = stored {
                tracing::warn!("storing the manifest failed, will retry: {e}");
            }
            self.publish(&self.lock());
            return self.next_due(lane);
        }
        let outcomes = self
            .reconcile_all(lane, taken.iter().map(|(p, d)| (p.clone(), d.whole)).collect())
            .await;
        // Modes, links and empty directories go with the bulk lane's
        // rounds, so a save does not wait for them; unless the round's own
        // paths are what the manifest keeps (a `chmod +x`, a link made,
        // renamed or deleted): a client told "done" finds that in storage
        // after a kill -9 too.
        let needs_manifest = match lane {
            Lane::Priority => self.touch_manifest(taken.iter().map(|(p, _)| p)),
            Lane::ClientBulk | Lane::Bulk => vec![false; taken.len()],
        };
        let manifest = if lane == Lane::Bulk || needs_manifest.contains(&true) {
            self.store_manifest().await
        } else if took_overdue {
            // The backlog's changes, overdue because its lane is starved:
            // their modes and links too.
            self.store_manifest_unless_busy().await
        } else {
            self.wake_bulk.notify_one();
            Ok(())
        };
        let manifest_stored = manifest.is_ok();
        let mut state = self.lock();
        if lane != Lane::Bulk {
            for (path, _) in &taken {
                if let Some(rounds) = state.held_for_clients.get_mut(path) {
                    *rounds -= 1;
                    if *rounds == 0 {
                        state.held_for_clients.remove(path);
                    }
                }
            }
        }
        let mut failed = false;
        if let Err(e) = manifest {
            tracing::warn!("storing the manifest failed, will retry: {e}");
            failed = true;
            state.last_error = Some(e.to_string());
        }
        let mut deferred = false;
        for ((((path, dirty), outcome), (waiters, bulk)), needs_manifest) in
            taken.into_iter().zip(outcomes).zip(waiters).zip(needs_manifest)
        {
            let put_back = |state: &mut SyncState, path: WorkspacePath, waiters: Vec<Waiter>, bulk: Vec<Waiter>| {
                // Back in the queue of the most urgent one waiting on it.
                let mut back = lane;
                if !bulk.is_empty() {
                    back = back.min(Lane::ClientBulk);
                    state.bulk_waiters.entry(path.clone()).or_default().extend(bulk);
                }
                if !waiters.is_empty() {
                    back = Lane::Priority;
                    state.waiters.entry(path.clone()).or_default().extend(waiters);
                }
                Self::requeue(state, path, back, dirty);
            };
            match outcome {
                // Retried with the manifest: not "done" before it is stored.
                Outcome::Done if needs_manifest && !manifest_stored => put_back(&mut state, path, waiters, bulk),
                Outcome::Done => {
                    for w in waiters.into_iter().chain(bulk) {
                        let _ = w.send(Ok(()));
                    }
                }
                Outcome::Deferred => {
                    deferred = true;
                    put_back(&mut state, path, waiters, bulk);
                }
                Outcome::Failed(e) => {
                    tracing::warn!(%path, "storage sync failed, will retry: {e}");
                    failed = true;
                    state.last_error = Some(e.to_string());
                    put_back(&mut state, path, waiters, bulk);
                }
            }
        }
        if failed {
            // Once per wave of retries: both lanes fail at each retry while
            // storage is down, and doubling for each would make a save wait
            // far longer than the outage once storage is back.
            let due = state.retry_at.is_none_or(|at| at <= Instant::now());
            if due {
                let backoff = state.backoff.map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
                state.backoff = Some(backoff);
                state.retry_at = Some(Instant::now() + backoff);
            }
        } else if state.backoff.is_some() {
            tracing::info!("storage reachable again");
            state.backoff = None;
            state.retry_at = None;
            state.last_error = None;
        }
        self.publish(&state);
        drop(state);
        if deferred && lane == Lane::Bulk {
            // What the priority lane held is free by now or soon.
            return Duration::from_millis(10);
        }
        self.next_due(lane)
    }

    fn next_due(&self, lane: Lane) -> Duration {
        let state = self.lock();
        if let Some(retry_at) = state.retry_at {
            return retry_at.saturating_duration_since(Instant::now());
        }
        let now = Instant::now();
        match lane {
            // Woken by `persist` and by released claims.
            Lane::Priority if state.urgent.is_empty() => Duration::from_secs(3600),
            // Unless the backlog may fall overdue meanwhile.
            Lane::ClientBulk if state.client_bulk.is_empty() && state.dirty.is_empty() => Duration::from_secs(3600),
            Lane::ClientBulk if state.client_bulk.is_empty() => OVERDUE_EVERY,
            Lane::Priority | Lane::ClientBulk => Duration::from_millis(5),
            Lane::Bulk => state
                .bulk_next_due(self.debounce)
                .map_or(Duration::from_secs(3600), |due| due.saturating_duration_since(now)),
        }
    }

    fn publish(&self, state: &SyncState) {
        let status = StorageStatus {
            healthy: state.backoff.is_none(),
            pending: (state.queued() + state.in_flight) as u64,
            saves_pending: state.urgent.len() as u64 + state.waiters.values().map(|w| w.len() as u64).sum::<u64>(),
            drain_rate: self.drained.rate(),
            skipped: state.skipped.len() as u64,
            skipped_changes: state
                .skipped
                .iter()
                .take(SKIPPED_LISTED)
                .map(|(path, error)| SkippedChange {
                    path: path.clone(),
                    error: error.clone(),
                })
                .collect(),
            last_error: state.last_error.clone(),
        };
        self.status.send_if_modified(|current| {
            if *current != status {
                *current = status;
                true
            } else {
                false
            }
        });
    }

    /// Drains every pending change, retrying storage until `deadline`.
    /// Returns the paths that could not be stored.
    pub async fn flush(self: &Arc<Self>, deadline: Instant) -> Vec<WorkspacePath> {
        loop {
            let drained = {
                let state = self.lock();
                state.queued() == 0 && state.in_flight == 0
            };
            if drained {
                match self.store_manifest().await {
                    Ok(()) => return Vec::new(),
                    Err(_) if Instant::now() >= deadline => return vec![WorkspacePath::root()],
                    Err(_) => {
                        tokio::time::sleep(MIN_BACKOFF).await;
                        continue;
                    }
                }
            }
            if Instant::now() >= deadline {
                let state = self.lock();
                return state
                    .urgent
                    .keys()
                    .chain(state.client_bulk.keys())
                    .chain(state.dirty.keys())
                    .cloned()
                    .collect();
            }
            let mut wait = Duration::MAX;
            for lane in LANES {
                wait = wait.min(self.round(lane, true).await);
            }
            let has_failed = self.lock().retry_at.is_some();
            if has_failed {
                let pause = wait.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Plans every path (on the blocking pool), then carries out the file
    /// actions in batches: deletes first (a directory that became a file
    /// must be gone from storage before the file can take its name), then
    /// uploads.
    /// Plans and carries out `paths`, each with whether to plan it whole
    /// (see [`Dirty::whole`]).
    async fn reconcile_all(self: &Arc<Self>, lane: Lane, paths: Vec<(WorkspacePath, bool)>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = paths.iter().map(|_| Outcome::Done).collect();
        let this = self.clone();
        let planned = paths.len();
        // Planning a directory of 100,000 files, and grouping the result,
        // is tens of milliseconds of CPU: not on the thread of a lane that
        // shares its runtime with terminal bytes.
        let grouped = match blocking(move || {
            let mut links = HashMap::new();
            let plans: Vec<Result<Plan, StorageError>> = paths
                .iter()
                .map(|(p, whole)| {
                    if this.through_symlink(p, &mut links) {
                        // Seen through a link to a directory (inotify follows
                        // them): the link itself is what is kept.
                        Ok(Plan::default())
                    } else {
                        this.plan(p, *whole)
                    }
                })
                .collect();
            Actions::of(plans)
        })
        .await
        {
            Ok(grouped) => grouped,
            Err(e) => {
                self.lock().in_flight -= planned;
                return outcomes.into_iter().map(|_| Outcome::Failed(clone_error(&e))).collect();
            }
        };
        for (i, e) in grouped.failed {
            outcomes[i].merge(Step::Failed(e));
        }
        {
            // Pending counts files from here on, not the paths they came from.
            let mut state = self.lock();
            state.in_flight = state.in_flight - planned + grouped.files;
        }
        for (batches, action) in [(grouped.deletes, Action::Delete), (grouped.uploads, Action::Upload)] {
            // One batch at a time in the backlog's lane while programs
            // write. Creating a file in storage is one syscall the kernel
            // does not preempt (ext4's inode allocation can run for
            // milliseconds, SCHED_IDLE or not, on the usual non-preemptible
            // server kernels), so two bulk batches at once, beside the
            // program, could hold both CPUs of a small sandbox while a
            // keystroke waited for either. Once they have stopped, their
            // CPU is free. A client's bulk writes are what that client
            // waits on: see [`CLIENT_BULK_BATCHES`].
            let programs_quiet = self.lock().programs_paused(Instant::now(), self.debounce);
            let parallel = match lane {
                Lane::Bulk if programs_quiet => PARALLEL_BULK_WHEN_QUIET,
                Lane::ClientBulk => CLIENT_BULK_BATCHES,
                _ => 1,
            };
            let batches = futures_util::stream::iter(batches).map(|batch| {
                let this = self.clone();
                async move {
                    let paths: Vec<WorkspacePath> = batch.iter().map(|(p, _)| p.clone()).collect();
                    let steps = match action {
                        Action::Delete => this.delete_batch(lane, paths).await,
                        Action::Upload => this.upload_batch(lane, paths).await,
                    };
                    (batch, steps)
                }
            });
            let mut results = std::pin::pin!(batches.buffered(parallel));
            while let Some((batch, steps)) = results.next().await {
                let done = steps.iter().filter(|s| matches!(s, Step::Done)).count() as u64;
                {
                    let mut state = self.lock();
                    state.in_flight -= batch.len();
                    self.drained.record(done);
                    self.publish(&state);
                }
                for ((_, owners), step) in batch.into_iter().zip(steps) {
                    for owner in owners {
                        outcomes[owner].merge(match &step {
                            Step::Done => Step::Done,
                            Step::Deferred => Step::Deferred,
                            Step::Skipped => Step::Skipped,
                            Step::Failed(e) => Step::Failed(clone_error(e)),
                        });
                    }
                }
            }
        }
        outcomes
    }

    /// What storage needs for it to match the workspace at and below `path`
    /// (a directory not `whole`: at `path` only); notes modes, links and
    /// empty directories in the manifest meanwhile.
    fn plan(&self, path: &WorkspacePath, whole: bool) -> Result<Plan, StorageError> {
        let meta = if path.is_root() {
            self.dir.dir_metadata()
        } else {
            self.dir.symlink_metadata(path.as_relative_fs_path())
        };
        let mut plan = Plan::default();
        if !meta.as_ref().is_ok_and(Metadata::is_file) {
            Self::forget_written(&mut self.lock(), path);
        }
        match meta {
            Ok(meta) if meta.is_file() => {
                plan.deletes = self.stored_below(path);
                let stamp = Stamp::of(&meta);
                let mut state = self.lock();
                if state.stored.get(path.as_str()) != Some(&stamp) {
                    plan.uploads.push(path.clone());
                }
                if let Some(held) = state.written.get_mut(path) {
                    held.planned = held.stamp == stamp;
                    if !held.planned {
                        Self::forget_written(&mut state, path);
                    }
                }
                if self.metadata {
                    let m = &mut state.manifest;
                    m.remove_subtree(path);
                    if stamp.executable {
                        m.executable.insert(path.as_str().to_owned());
                    }
                    m.note_child(path);
                }
            }
            Ok(meta) if meta.is_dir() && !whole => {
                if self.is_stored(path) {
                    plan.deletes.push(path.clone());
                }
                if self.metadata {
                    let empty = self
                        .dir
                        .read_dir(path.as_relative_fs_path())
                        .is_ok_and(|mut entries| entries.next().is_none());
                    let m = &mut self.lock().manifest;
                    m.executable.remove(path.as_str());
                    m.symlinks.remove(path.as_str());
                    if empty {
                        m.empty_dirs.insert(path.as_str().to_owned());
                    } else {
                        m.empty_dirs.remove(path.as_str());
                    }
                    m.note_child(path);
                }
            }
            Ok(meta) if meta.is_dir() => {
                if self.is_stored(path) {
                    plan.deletes.push(path.clone());
                }
                let walked = self.walk(path)?;
                let mut state = self.lock();
                let present: HashSet<&str> = walked.files.iter().map(|(p, _)| p.as_str()).collect();
                plan.deletes.extend(
                    stored_below(&state.stored, path)
                        .filter(|p| !present.contains(p.as_str()))
                        .filter_map(|p| WorkspacePath::parse(p).ok())
                        .filter(|p| !walked.unreadable.iter().any(|u| p.starts_with(u))),
                );
                plan.uploads = walked
                    .files
                    .iter()
                    .filter(|(p, stamp)| state.stored.get(p.as_str()) != Some(stamp))
                    .map(|(p, _)| p.clone())
                    .collect();
                if self.metadata {
                    let m = &mut state.manifest;
                    m.remove_subtree(path);
                    m.executable.extend(
                        walked
                            .files
                            .iter()
                            .filter(|(_, s)| s.executable)
                            .map(|(p, _)| p.as_str().to_owned()),
                    );
                    m.symlinks
                        .extend(walked.links.into_iter().map(|(p, t)| (p.as_str().to_owned(), t)));
                    m.empty_dirs
                        .extend(walked.empty.into_iter().map(|p| p.as_str().to_owned()));
                    if !path.is_root() {
                        m.note_child(path);
                    }
                }
            }
            // Symlinks are kept as links, in the manifest; sockets and the
            // like are not stored. Neither has an object: treat as absent.
            Ok(meta) => {
                if self.is_stored(path) {
                    plan.deletes.push(path.clone());
                }
                plan.deletes.extend(self.stored_below(path));
                if self.metadata {
                    let target = meta
                        .file_type()
                        .is_symlink()
                        .then(|| self.dir.read_link_contents(path.as_relative_fs_path()).ok())
                        .flatten()
                        .and_then(|t| t.to_str().map(str::to_owned));
                    let m = &mut self.lock().manifest;
                    m.remove_subtree(path);
                    if let Some(target) = target {
                        m.symlinks.insert(path.as_str().to_owned(), target);
                        m.note_child(path);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                if self.is_stored(path) {
                    plan.deletes.push(path.clone());
                }
                plan.deletes.extend(self.stored_below(path));
                if self.metadata {
                    // Its directory may be empty now.
                    let parent = path.parent().filter(|p| !p.is_root());
                    let emptied = parent.as_ref().is_some_and(|parent| {
                        self.dir
                            .read_dir(parent.as_relative_fs_path())
                            .is_ok_and(|mut entries| entries.next().is_none())
                    });
                    let m = &mut self.lock().manifest;
                    m.remove_subtree(path);
                    if let (true, Some(parent)) = (emptied, parent) {
                        m.empty_dirs.insert(parent.as_str().to_owned());
                    }
                }
            }
            Err(e) => {
                // Unreadable (permissions changed by user code): nothing to
                // store until it is readable again; keep what storage has.
                tracing::warn!(%path, "cannot read for sync: {e}");
            }
        }
        Ok(plan)
    }

    /// True when a directory on the way to `path` is a symbolic link;
    /// `cache` remembers the answers of one round.
    /// Drops what a client's write left for storage at `path`.
    fn forget_written(state: &mut SyncState, path: &WorkspacePath) -> Option<Held> {
        let held = state.written.remove(path)?;
        state.written_bytes -= held.bytes.len();
        Some(held)
    }

    fn through_symlink(&self, path: &WorkspacePath, cache: &mut HashMap<WorkspacePath, bool>) -> bool {
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.is_root()) {
            let is_link = *cache.entry(d.clone()).or_insert_with(|| {
                self.dir
                    .symlink_metadata(d.as_relative_fs_path())
                    .is_ok_and(|m| m.file_type().is_symlink())
            });
            if is_link {
                return true;
            }
            dir = d.parent();
        }
        false
    }

    fn is_stored(&self, path: &WorkspacePath) -> bool {
        !path.is_root() && self.lock().stored.contains_key(path.as_str())
    }

    fn stored_below(&self, path: &WorkspacePath) -> Vec<WorkspacePath> {
        let state = self.lock();
        stored_below(&state.stored, path)
            .filter_map(|p| WorkspacePath::parse(p).ok())
            .collect()
    }

    /// Claims every path no other lane holds; returns which were claimed.
    /// A lane leaves alone what a more urgent lane is about to take.
    fn claim(&self, lane: Lane, paths: &[WorkspacePath]) -> Vec<bool> {
        let mut state = self.lock();
        paths
            .iter()
            .map(|p| {
                let saved = state.urgent.contains_key(p) || state.waiters.contains_key(p);
                let bulk_written = state.client_bulk.contains_key(p) || state.bulk_waiters.contains_key(p);
                let taken_first = match lane {
                    Lane::Priority => false,
                    Lane::ClientBulk => saved,
                    Lane::Bulk => saved || bulk_written || state.held_for_clients.contains_key(p),
                };
                if taken_first {
                    return false;
                }
                state.claimed.insert(p.as_str().to_owned())
            })
            .collect()
    }

    fn release(&self, paths: &[WorkspacePath], claimed: &[bool]) {
        {
            let mut state = self.lock();
            for (p, &mine) in paths.iter().zip(claimed) {
                if mine {
                    state.claimed.remove(p.as_str());
                }
            }
        }
        self.released.notify_one();
    }

    fn skip(&self, path: &WorkspacePath, reason: String) -> Step {
        skip_locked(&mut self.lock(), path, reason)
    }

    fn unskip(state: &mut SyncState, path: &WorkspacePath) {
        if !state.skipped.is_empty() {
            state.skipped.remove(path.as_str());
        }
    }

    async fn upload_batch(self: Arc<Self>, lane: Lane, paths: Vec<WorkspacePath>) -> Vec<Step> {
        let claimed = self.claim(lane, &paths);
        let this = self.clone();
        let (paths_b, claimed_b) = (paths.clone(), claimed.clone());
        let prepared = blocking(move || this.prepare_uploads(&paths_b, &claimed_b)).await;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.release(&paths, &claimed);
                return paths.iter().map(|_| Step::Failed(clone_error(&e))).collect();
            }
        };
        let mut steps: Vec<Step> = Vec::with_capacity(paths.len());
        let mut items = Vec::new();
        let mut sent = Vec::new();
        let mut idle = vec![false; paths.len()];
        for (i, prep) in prepared.into_iter().enumerate() {
            match prep {
                Prepared::Ready { key, source, stamp } => {
                    steps.push(Step::Done);
                    items.push((key, source));
                    sent.push((i, stamp));
                }
                Prepared::Step(step) => {
                    idle[i] = claimed[i];
                    steps.push(step);
                }
            }
        }
        // Files with nothing to upload are free for the other lane now.
        self.release(&paths, &idle);
        if !items.is_empty() {
            let results = self.store.put_many(items).await;
            let mut state = self.lock();
            for ((i, stamp), result) in sent.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        state.stored.insert(paths[i].as_str().to_owned(), stamp);
                        Self::unskip(&mut state, &paths[i]);
                    }
                    Err(e) if e.is_permanent() => steps[i] = skip_locked(&mut state, &paths[i], e.to_string()),
                    Err(e) => steps[i] = Step::Failed(e),
                }
            }
        }
        let busy: Vec<bool> = claimed.iter().zip(&idle).map(|(c, i)| *c && !*i).collect();
        self.release(&paths, &busy);
        steps
    }

    /// Opens (and reads, when small) the claimed files; on the blocking pool.
    fn prepare_uploads(&self, paths: &[WorkspacePath], claimed: &[bool]) -> Vec<Prepared> {
        let mut bytes = 0u64;
        let mut open = 0usize;
        paths
            .iter()
            .zip(claimed)
            .map(|(path, &mine)| {
                if !mine {
                    return Prepared::Step(Step::Deferred);
                }
                let key = match self.prefix.key_for(path) {
                    Ok(key) => key,
                    Err(e) => return Prepared::Step(self.skip(path, e.to_string())),
                };
                {
                    let mut state = self.lock();
                    if state.written.get(path).is_some_and(|held| held.planned)
                        && let Some(held) = Self::forget_written(&mut state, path)
                    {
                        bytes += held.bytes.len() as u64;
                        let stamp = held.stamp;
                        return Prepared::Ready {
                            key,
                            source: PutSource::Bytes(held.bytes),
                            stamp,
                        };
                    }
                }
                let file = match open_to_persist(&self.dir, path) {
                    Ok(file) => file,
                    // Gone meanwhile: the event for that reconciles it.
                    Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
                        return Prepared::Step(Step::Done);
                    }
                    Err(e) => return Prepared::Step(self.skip(path, format!("cannot read it: {e}"))),
                };
                let meta = match file.metadata() {
                    Ok(meta) if meta.is_file() => meta,
                    Ok(_) => return Prepared::Step(Step::Done),
                    Err(e) => return Prepared::Step(self.skip(path, format!("cannot read it: {e}"))),
                };
                // Stamp of what we are about to read, so a change during the
                // upload is seen as a change next time.
                let stamp = Stamp::of(&meta);
                if self.lock().stored.get(path.as_str()) == Some(&stamp) {
                    return Prepared::Step(Step::Done);
                }
                let mut file = file.into_std();
                let source = if meta.len() <= SMALL_FILE && bytes + meta.len() <= BATCH_BYTES {
                    let mut body = Vec::with_capacity(meta.len() as usize);
                    // Through `take`: a File's own read_to_end asks the
                    // kernel for the size (an fstat and an lseek) that
                    // `meta` already says, for every small file of a batch.
                    if let Err(e) = std::io::Read::by_ref(&mut file).take(u64::MAX).read_to_end(&mut body) {
                        return Prepared::Step(self.skip(path, format!("cannot read it: {e}")));
                    }
                    bytes += body.len() as u64;
                    PutSource::Bytes(body.into())
                } else if open < BATCH_OPEN_FILES {
                    open += 1;
                    PutSource::File(file)
                } else {
                    // Too many open files in this batch: the next takes it.
                    return Prepared::Step(Step::Deferred);
                };
                Prepared::Ready { key, source, stamp }
            })
            .collect()
    }

    async fn delete_batch(self: Arc<Self>, lane: Lane, paths: Vec<WorkspacePath>) -> Vec<Step> {
        let claimed = self.claim(lane, &paths);
        let this = self.clone();
        let paths_b = paths.clone();
        // A file back at the path since the plan: its own change uploads
        // it; deleting now could remove what a save just stored.
        let checked = blocking(move || {
            paths_b
                .iter()
                .map(|p| {
                    this.dir
                        .symlink_metadata(p.as_relative_fs_path())
                        .is_ok_and(|m| m.is_file())
                })
                .collect::<Vec<bool>>()
        })
        .await;
        let present = match checked {
            Ok(present) => present,
            Err(e) => {
                self.release(&paths, &claimed);
                return paths.iter().map(|_| Step::Failed(clone_error(&e))).collect();
            }
        };
        let mut steps = Vec::with_capacity(paths.len());
        let mut keys = Vec::new();
        let mut sent = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            if !claimed[i] {
                steps.push(Step::Deferred);
            } else if present[i] {
                steps.push(Step::Done);
            } else {
                match self.prefix.key_for(path) {
                    Ok(key) => {
                        steps.push(Step::Done);
                        keys.push(key);
                        sent.push(i);
                    }
                    Err(_) => {
                        // Never stored under an invalid key: nothing to delete.
                        let mut state = self.lock();
                        state.stored.remove(path.as_str());
                        Self::unskip(&mut state, path);
                        steps.push(Step::Done);
                    }
                }
            }
        }
        if !keys.is_empty() {
            let results = self.store.delete_many(keys).await;
            let mut state = self.lock();
            for (i, result) in sent.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        state.stored.remove(paths[i].as_str());
                        Self::unskip(&mut state, &paths[i]);
                    }
                    Err(e) if e.is_permanent() => {
                        state.stored.remove(paths[i].as_str());
                    }
                    Err(e) => steps[i] = Step::Failed(e),
                }
            }
        }
        self.release(&paths, &claimed);
        steps
    }

    /// Every regular file, symbolic link and empty directory at or below
    /// the directory `path`. Links are not followed.
    fn walk(&self, path: &WorkspacePath) -> Result<Walk, StorageError> {
        let mut out = Walk::default();
        let mut stack = vec![path.clone()];
        while let Some(dir) = stack.pop() {
            let entries = if dir.is_root() {
                self.dir.entries()
            } else {
                self.dir.read_dir(dir.as_relative_fs_path())
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => continue,
                Err(e) => {
                    // Unreadable (user code changed its permissions): retrying
                    // cannot help; keep what storage has of it.
                    self.skip(&dir, format!("cannot read the directory: {e}"));
                    out.unreadable.push(dir);
                    continue;
                }
            };
            let mut children = 0;
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(child) = dir.join(&name) else { continue };
                if self.is_excluded(&child) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                children += 1;
                if meta.is_dir() {
                    stack.push(child);
                } else if meta.is_file() {
                    out.files.push((child, Stamp::of(&meta)));
                } else if meta.file_type().is_symlink()
                    && let Ok(target) = self.dir.read_link_contents(child.as_relative_fs_path())
                    && let Some(target) = target.to_str()
                {
                    out.links.push((child, target.to_owned()));
                }
            }
            if children == 0 && !dir.is_root() {
                out.empty.push(dir);
            }
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Walk {
    /// Directories that could not be read: what storage has below them
    /// stays.
    unreadable: Vec<WorkspacePath>,
    files: Vec<(WorkspacePath, Stamp)>,
    links: Vec<(WorkspacePath, String)>,
    empty: Vec<WorkspacePath>,
}

/// Records a change that can never be stored; logs it once.
fn skip_locked(state: &mut SyncState, path: &WorkspacePath, reason: String) -> Step {
    if state.skipped.get(path.as_str()) != Some(&reason) {
        tracing::warn!(%path, "cannot be stored, skipped: {reason}");
        state.skipped.insert(path.as_str().to_owned(), reason);
    }
    Step::Skipped
}

enum Prepared {
    Ready {
        key: ObjectKey,
        source: PutSource,
        stamp: Stamp,
    },
    Step(Step),
}

/// The stored paths strictly below `path`, in order: a range of the map,
/// not a scan of it.
fn stored_below<'a>(stored: &'a BTreeMap<String, Stamp>, path: &WorkspacePath) -> impl Iterator<Item = &'a String> {
    let start = if path.is_root() {
        String::new()
    } else {
        format!("{}/", path.as_str())
    };
    let root = path.is_root();
    stored
        .range(start.clone()..)
        .map(|(p, _)| p)
        .take_while(move |p| root || p.starts_with(&start))
        .filter(|p| !p.is_empty())
}

/// Runs `f` on the blocking pool, never on the async worker.
/// Opens a workspace file to copy it to storage without touching its access
/// time (`O_NOATIME`). On a `relatime` mount the first read of a new file
/// updates its atime, dirtying its inode once more for the journal and for
/// the batch's `syncfs`: an `npm install`'s every file, about 3% of the
/// storage thread. The kernel refuses the flag on a file owned by someone
/// else (without `CAP_FOWNER`); such a file is opened as usual.
fn open_to_persist(dir: &Dir, path: &WorkspacePath) -> std::io::Result<cap_std::fs::File> {
    let rel = path.as_relative_fs_path();
    match dir.open_with(rel, OpenOptions::new().read(true).custom_flags(libc::O_NOATIME)) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => dir.open(rel),
        other => other,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Unavailable {
            op: "sync",
            key: String::new(),
            message: e.to_string(),
        })
}

fn clone_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::NotFound(key) => StorageError::NotFound(key.clone()),
        StorageError::InvalidKey { key, reason } => StorageError::InvalidKey {
            key: key.clone(),
            reason,
        },
        other => StorageError::Unavailable {
            op: "sync",
            key: String::new(),
            message: other.to_string(),
        },
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    (std::process::id() as u64) << 32 | N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WorkspacePath {
        WorkspacePath::parse(s).expect("a valid path")
    }

    /// The backlog's state on a clock of milliseconds from `t0`, with the
    /// runner's default debounce.
    struct Backlog {
        state: SyncState,
        t0: Instant,
    }

    impl Backlog {
        const DEBOUNCE: Duration = Duration::from_millis(100);

        fn new() -> Self {
            Self {
                state: SyncState::default(),
                t0: Instant::now(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// The watcher's event for `path` at `ms`: a removal or a write.
        fn mark(&mut self, path: &str, lane: Lane, ms: u64, removed: bool) {
            let now = self.at(ms);
            let mark = if removed { Mark::Removed } else { Mark::Changed };
            Persister::mark_locked(&mut self.state, p(path), lane, now, mark);
        }

        fn write(&mut self, path: &str, ms: u64) {
            self.mark(path, Lane::Bulk, ms, false);
        }

        fn remove(&mut self, path: &str, ms: u64) {
            self.mark(path, Lane::Bulk, ms, true);
        }

        fn due(&mut self, ms: u64, flush: bool) -> Vec<String> {
            let now = self.at(ms);
            let paths = self.state.bulk_due(now, Self::DEBOUNCE, flush, BULK_PATHS);
            paths.iter().map(|p| p.as_str().to_owned()).collect()
        }

        fn next_due(&self) -> Option<Instant> {
            self.state.bulk_next_due(Self::DEBOUNCE)
        }
    }

    /// A burst of programs' writes is left alone until they pause, each of
    /// its paths at most [`MAX_DELAY`]; a flush takes everything at once.
    #[test]
    fn the_backlog_waits_for_programs_to_pause_or_for_its_oldest_to_fall_due() {
        let mut backlog = Backlog::new();
        assert_eq!(backlog.next_due(), None, "nothing queued");
        // A program writes a.txt, then b.txt 1.5 s later, and writes b.txt
        // again at 1.95 s: still writing.
        backlog.write("a.txt", 0);
        backlog.write("b.txt", 1500);
        backlog.write("b.txt", 1950);
        // a.txt has been quiet for far longer than the debounce, but the
        // program is still writing.
        assert!(backlog.due(1990, false).is_empty());
        assert_eq!(backlog.due(1990, true), ["a.txt", "b.txt"], "a flush waits for nothing");
        assert_eq!(
            backlog.next_due(),
            Some(backlog.at(2000)),
            "a.txt's MAX_DELAY comes first"
        );
        assert_eq!(backlog.due(2000, false), ["a.txt"], "never later than MAX_DELAY");
        backlog.state.dirty.remove(&p("a.txt"));
        // The program pauses: the whole burst is due a debounce later.
        assert_eq!(backlog.next_due(), Some(backlog.at(2050)));
        assert!(backlog.due(2049, false).is_empty());
        assert_eq!(backlog.due(2050, false), ["b.txt"]);
        // A client's write waiting in its own lane is not a program
        // writing: its watcher event leaves the backlog due.
        backlog.mark("saved.txt", Lane::Priority, 2060, false);
        backlog.write("saved.txt", 2070);
        assert_eq!(backlog.due(2080, false), ["b.txt"]);
    }

    /// While programs write, a round looks at the backlog only once one of
    /// its paths may be overdue, and a path put back keeps its age.
    #[test]
    fn a_burst_is_not_walked_until_a_path_may_be_overdue() {
        let mut backlog = Backlog::new();
        backlog.write("a.txt", 0);
        backlog.write("b.txt", 1000);
        backlog.write("c.txt", 1990);
        assert_eq!(backlog.state.bulk_overdue_at, Some(backlog.at(2000)));
        assert_eq!(backlog.due(2000, false), ["a.txt"]);
        assert_eq!(backlog.state.bulk_overdue_at, Some(backlog.at(3000)), "b.txt is next");
        let entry = backlog.state.dirty.remove(&p("a.txt")).expect("queued");
        // Still writing (c.txt 60 ms ago), and b.txt not overdue yet.
        assert!(backlog.due(2050, false).is_empty());
        // A round that could not store a.txt puts it back: due at once.
        Persister::requeue(&mut backlog.state, p("a.txt"), Lane::Bulk, entry);
        assert_eq!(backlog.state.bulk_overdue_at, Some(backlog.at(2000)));
        assert_eq!(backlog.due(2050, false), ["a.txt"]);
    }

    /// A removal makes no data to write back: it is due after the debounce
    /// while programs go on writing, and does not hold the rest back.
    #[test]
    fn removals_do_not_wait_for_programs_to_pause() {
        let mut backlog = Backlog::new();
        backlog.write("made.txt", 0);
        backlog.remove("gone.txt", 10);
        // Written, then removed: a removal now.
        backlog.write("brief.txt", 0);
        backlog.remove("brief.txt", 20);
        // A program still writing at 150 ms.
        backlog.write("more.txt", 150);
        assert_eq!(backlog.next_due(), Some(backlog.at(110)), "gone.txt's debounce");
        assert!(backlog.due(100, false).is_empty());
        let due = backlog.due(200, false);
        assert_eq!(due, ["brief.txt", "gone.txt"], "only the removals");
        for path in &due {
            backlog.state.dirty.remove(&p(path));
        }
        // Removals going on (a recursive `rm`) are not writing: the rest is
        // due once the writing has paused.
        backlog.remove("gone2.txt", 240);
        let at = backlog.at(260);
        assert!(
            backlog.state.programs_paused(at, Backlog::DEBOUNCE),
            "removals are not writing"
        );
        assert_eq!(backlog.due(260, false), ["gone2.txt", "made.txt", "more.txt"]);
    }

    #[test]
    fn actions_are_one_per_file_in_storage_batches_and_keep_who_asked() {
        let files: Vec<WorkspacePath> = (0..BATCH_FILES + 3).map(|i| p(&format!("d/{i:05}"))).collect();
        let plans = vec![
            // A directory deleted: every file below it.
            Ok(Plan {
                uploads: Vec::new(),
                deletes: files.clone(),
            }),
            Ok(Plan {
                uploads: vec![p("a.txt")],
                deletes: vec![files[0].clone()],
            }),
            Err(StorageError::Unavailable {
                op: "list",
                key: "d".into(),
                message: "down".into(),
            }),
        ];
        let actions = Actions::of(plans);
        assert_eq!(actions.files, BATCH_FILES + 3 + 1, "one action per file");
        let sizes: Vec<usize> = actions.deletes.iter().map(Vec::len).collect();
        assert_eq!(sizes, [BATCH_FILES, 3], "deletes in batches of a storage commit");
        assert_eq!(
            actions.deletes[0][0],
            (files[0].clone(), vec![0, 1]),
            "both paths wait on it"
        );
        assert_eq!(actions.uploads, [vec![(p("a.txt"), vec![1])]]);
        assert_eq!(actions.failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_manifest_lists_what_it_keeps_at_and_below_a_path() {
        let manifest = Manifest {
            version: 0,
            executable: ["bin/run.sh".to_owned(), "bin.sh".to_owned()].into(),
            symlinks: [("venv/bin/python".to_owned(), "/usr/bin/python3".to_owned())].into(),
            empty_dirs: ["logs".to_owned(), "bin/empty".to_owned()].into(),
        };
        let at = |path: &str| manifest.at_or_below(&p(path));
        assert_eq!(at("bin"), (vec!["bin/run.sh"], vec![], vec!["bin/empty"]));
        assert_eq!(at("bin/run.sh"), (vec!["bin/run.sh"], vec![], vec![]));
        assert_eq!(
            at("venv"),
            (vec![], vec![("venv/bin/python", "/usr/bin/python3")], vec![])
        );
        assert_eq!(at("logs"), (vec![], vec![], vec!["logs"]));
        assert_eq!(at("").0, vec!["bin.sh", "bin/run.sh"]);
        // Names that sort beside those, without being them or above them.
        for free in ["bi", "bin/run", "venv0", "venv-x", "log", "logs2", "main.py"] {
            assert_eq!(at(free), (vec![], vec![], vec![]), "{free:?}");
        }
    }

    #[test]
    fn no_actions_no_batches() {
        let actions = Actions::of(vec![Ok(Plan::default())]);
        assert!(actions.deletes.is_empty() && actions.uploads.is_empty() && actions.failed.is_empty());
        assert_eq!(actions.files, 0);
    }
}
