//! `cloudcode-tui sync`: reconcile once, then keep both sides equal until
//! Ctrl-C. Local events and the runner's `fs_changed` are hints: after a
//! short quiet time the named paths are looked at again (an `lstat` and a
//! hash where the identity changed; a manifest of the path in the sandbox),
//! and a round of reconcile and apply follows.

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use cloudcode_proto::client::{ClientError, Incoming, RunnerClient, RunnerHandle};
use cloudcode_proto::message::{Event, ManifestEntry, Op};
use cloudcode_proto::path::WorkspacePath;
use indicatif::{ProgressBar, ProgressStyle};
use notify::Watcher;
use tokio::sync::mpsc;

use super::apply::{Deferred, Executor, Outcome, WriteDone};
use super::model::{Node, Tree, is_conflict_copy};
use super::reconcile::{Change, Mode, Notice, Plan, Side, advance_base, reconcile};
use super::remote::RemoteView;
use super::rules::Rules;
use super::scan::{LocalIndex, ScanStats, Scanner, tree_of};
use super::state::{StateLock, SyncState, state_dir, state_path};
use crate::remote::{DialError, Dialer};

/// Events are collected until the folder has been quiet this long...
const QUIET: Duration = Duration::from_millis(15);
/// ...but never longer than this after the first one (a build writing for
/// minutes still gets synced as it goes).
const MAX_DELAY: Duration = Duration::from_millis(250);
/// The agreed state is written at most this often while watching.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// Polling interval when inotify cannot watch the folder.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Rounds in a row before giving up on settling (each round's conflict
/// copies and retries need one more).
const MAX_ROUNDS: usize = 5;
/// More changed paths than this are looked at all at once.
const MANY_PATHS: usize = 256;
/// Plans at least this large get a progress bar.
const BAR_AT: usize = 200;
/// A file still being written when looked at is looked at again after this
/// (a long copy: each look reads it whole, so not at every event).
const UNSETTLED_RETRY: Duration = Duration::from_millis(500);

/// Exit code of `--once` when conflicts remain for the user to resolve, or
/// files were still being written and were left as they were.
pub const EXIT_CONFLICTS: i32 = 2;

#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// The local folder to keep equal to the project's sandbox.
    pub dir: PathBuf,
    /// The project to sync with (started if it is not running).
    #[arg(long)]
    pub project: String,
    /// How to sync [default: the mode this folder last synced with this
    /// project in, else two-way-safe].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Reconcile, then exit: 0 when both sides are equal, 2 when conflicts
    /// remain (conflict copies or, one-way, paths left alone).
    #[arg(long)]
    pub once: bool,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A round that would delete more files than this on either side (or
    /// empty a side) stops and asks; without a terminal to ask on, it
    /// refuses.
    #[arg(long, default_value_t = 50)]
    pub max_deletes: usize,
    /// Carry out large deletions without asking.
    #[arg(long)]
    pub allow_deletes: bool,
    /// Poll the folder every 2 s instead of watching it with inotify.
    #[arg(long)]
    pub poll: bool,
    /// Connect straight to a runner's WebSocket (`ws://host:port/v1/ws`)
    /// with a project token, instead of through the server.
    #[arg(long, env = "CLOUDCODE_RUNNER_URL", requires = "runner_token")]
    pub runner_url: Option<String>,
    #[arg(long, env = "CLOUDCODE_RUNNER_TOKEN", hide_env_values = true)]
    pub runner_token: Option<String>,
    /// Where the sync keeps its state (default: the user's data directory).
    #[arg(long, env = "CLOUDCODE_SYNC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// A runner reached directly, without the control plane.
pub struct DirectRunner {
    pub url: String,
    pub token: String,
}

#[async_trait::async_trait]
impl Dialer for DirectRunner {
    async fn dial(&self) -> Result<(RunnerClient, String), DialError> {
        let client = RunnerClient::connect(&self.url, &self.token).await?;
        Ok((client, String::new()))
    }
}

pub use super::report::{Control, Phase, Report, Status, Stdout};

/// A round held back because it would delete a lot (or empty a side), and
/// no one could be asked on a terminal.
#[derive(Debug, thiserror::Error)]
#[error("{why}: stopped, nothing was changed. Run with --dry-run to see the plan, and --allow-deletes if it is right.")]
pub struct Held {
    pub why: String,
}

/// Runs the sync from the command line, until Ctrl-C; returns the process
/// exit code.
pub async fn run(args: SyncArgs, dialer: &dyn Dialer, report: &mut dyn Report) -> anyhow::Result<i32> {
    run_with(args, dialer, report, None).await
}

/// Runs the sync; with `controls` (the TUI) it is stopped and steered
/// through them instead of Ctrl-C and the terminal, and a held round waits
/// for [`Control::AllowDeletions`] instead of ending the sync.
pub async fn run_with(
    args: SyncArgs,
    dialer: &dyn Dialer,
    report: &mut dyn Report,
    mut controls: Option<mpsc::UnboundedReceiver<Control>>,
) -> anyhow::Result<i32> {
    let controlled = controls.is_some();
    let folder = args
        .dir
        .canonicalize()
        .with_context(|| format!("the folder {} cannot be opened", args.dir.display()))?;
    anyhow::ensure!(folder.is_dir(), "{} is not a directory", folder.display());
    let data_dir = state_dir(args.state_dir.as_deref())
        .context("no data directory for the sync's state: set CLOUDCODE_SYNC_STATE_DIR")?;
    let state_file = state_path(&data_dir, &args.project, &folder);
    let _lock = match args.dry_run {
        true => None,
        false => Some(StateLock::acquire(&state_file)?),
    };
    let state = SyncState::load(&state_file, &args.project, &folder)?;
    let rules = Rules::new(&folder);
    let remembered = args.mode.is_none().then_some(state.mode).flatten();
    let mode = args.mode.or(state.mode).unwrap_or_default();
    let mut sync = Sync {
        mode,
        args,
        folder,
        state_file,
        rules,
        index: state.local,
        base: state.base,
        remote: RemoteView::default(),
        report,
        last_conflicts: 0,
        last_copies: Vec::new(),
        state_dirty: false,
        saved_at: Instant::now(),
        saving: None,
        controlled,
        allow_once: false,
        shown_conflicts: None,
        deferred: None,
        in_flight: HashMap::new(),
        first_look: true,
        unsettled: BTreeSet::new(),
        status: Status {
            mode,
            phase: Phase::Starting,
            pending: 0,
            polling: false,
        },
    };
    sync.report.status(&sync.status);
    if let Some(mode) = remembered {
        sync.report.line(&format!(
            "mode: {}, as this folder last synced (--mode changes it)",
            mode.name()
        ));
    }
    let (mut handle, mut incoming) = connect(dialer).await?;
    if !sync.args.once && !sync.args.dry_run {
        handle.request(Op::WatchFs).await?;
    }
    let manifest = ask_manifest(&handle);
    sync.full_scan()?;
    for warning in std::mem::take(&mut sync.rules.warnings) {
        sync.report.line(&format!("warning: {warning}"));
    }
    sync.load_remote(manifest).await?;
    sync.set_phase(Phase::Reconciling);
    // Watched from the first reconcile on (its last look follows the
    // watches), so watching starts without a whole-folder look of its own
    // that the user's first change would wait behind.
    let mut watch = (!sync.args.once && !sync.args.dry_run).then(|| {
        let (events_tx, events) = mpsc::unbounded_channel::<LocalEvent>();
        (LocalWatcher::start(&sync.folder, events_tx, sync.args.poll), events)
    });
    let settled = loop {
        let watched = watch.as_mut().map(|(watcher, events)| (watcher, events));
        match sync.settle(&handle, &mut incoming, watched).await {
            Ok(code) => break code,
            // Under the TUI a held first round waits for the user.
            Err(e) if controlled && e.downcast_ref::<Held>().is_some() => {
                let why = e.downcast_ref::<Held>().map(|h| h.why.clone()).unwrap_or_default();
                sync.set_phase(Phase::Held { why });
                match next_control(&mut controls).await {
                    Control::AllowDeletions => sync.allow_once = true,
                    Control::Resolve { .. } => {}
                    Control::Stop => {
                        sync.set_phase(Phase::Stopped);
                        return Ok(0);
                    }
                }
                sync.set_phase(Phase::Reconciling);
                sync.full_scan()?;
                sync.remote.load(&handle, &WorkspacePath::root()).await?;
            }
            Err(e) => {
                // What was agreed before it failed is kept.
                let _ = sync.finish_saving();
                return Err(e);
            }
        }
    };
    sync.report_conflicts();
    if sync.args.dry_run || sync.args.once {
        sync.finish_saving()?;
        return Ok(settled);
    }

    // Watching.
    let Some((mut watcher, mut events)) = watch else {
        sync.finish_saving()?;
        return Ok(settled);
    };
    let (writes_tx, mut writes) = mpsc::unbounded_channel::<WriteDone>();
    sync.deferred = Some(Deferred { tx: writes_tx, next: 0 });
    if let Err(message) = watcher.watch_dirs(&sync.folder, sync.index.iter().filter(|(_, e)| e.node.is_dir())) {
        sync.report.line(&message);
    }
    // Unless the last look came after the watches: what changed between
    // it and them, looked at now.
    let mut rescan_all = sync.first_look;
    let mut first_event: Option<Instant> = rescan_all.then(Instant::now);
    sync.report.line(&format!(
        "watching {} ({} entries{}){}",
        sync.folder.display(),
        sync.index.len(),
        if watcher.polling() { ", polling every 2 s" } else { "" },
        if controlled { "" } else { "; Ctrl-C to stop" }
    ));
    sync.status.polling = watcher.polling();
    sync.set_phase(Phase::Watching);
    let mut events_open = true;
    let mut dirty_local: BTreeSet<WorkspacePath> = BTreeSet::new();
    let mut dirty_remote: BTreeSet<WorkspacePath> = BTreeSet::new();
    let mut last_event = Instant::now();
    let mut retry_unsettled: Option<tokio::time::Instant> = None;
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if retry_unsettled.is_none() && !sync.unsettled.is_empty() {
            retry_unsettled = Some(tokio::time::Instant::now() + UNSETTLED_RETRY);
        }
        let deadline = first_event.map(|first| {
            let quiet = last_event + QUIET;
            let latest = first + MAX_DELAY;
            tokio::time::Instant::from_std(quiet.min(latest))
        });
        // A change in the folder waits only for the folder to be quiet (an
        // editor's save is a burst of events), not for the runner: the
        // previous save's answer, or the sandbox's echo of it, arriving
        // meanwhile held a save back by a second quiet time. The sandbox's
        // own bursts are still taken together.
        let mut from_folder = false;
        tokio::select! {
            _ = &mut ctrl_c, if !controlled => {
                sync.finish_uploads(&mut writes).await?;
                sync.stop()?;
                return Ok(0);
            }
            control = next_control(&mut controls), if controlled => match control {
                Control::Stop => {
                    sync.finish_uploads(&mut writes).await?;
                    sync.stop()?;
                    return Ok(0);
                }
                Control::AllowDeletions => {
                    sync.allow_once = true;
                    rescan_all = true;
                    dirty_remote.insert(WorkspacePath::root());
                }
                Control::Resolve { conflict, resolution } => {
                    match super::conflicts::resolve(&sync.folder, &conflict, resolution) {
                        Ok(resolved) => {
                            sync.report.line(&format!("resolved {}", resolved.message));
                            dirty_local.extend(resolved.touched);
                        }
                        Err(e) => {
                            sync.report.warn(&format!("not resolved: {e}"));
                            // What changed is looked at again, and shown anew.
                            dirty_local.insert(conflict.copy.clone());
                            dirty_local.insert(conflict.path.clone());
                            sync.shown_conflicts = None;
                        }
                    }
                }
            },
            event = events.recv(), if events_open => match event {
                Some(LocalEvent::Paths(paths)) => {
                    from_folder = true;
                    for path in paths {
                        // A file still being written is looked at when
                        // the retry comes, not at each of its writes.
                        if let Some(p) = sync.relative(&path).filter(|p| !sync.unsettled.contains(p)) {
                            dirty_local.insert(p);
                        }
                    }
                }
                Some(LocalEvent::Rescan) => rescan_all = true,
                Some(LocalEvent::LimitReached) => {
                    sync.report.warn(&watch_limit_message());
                    watcher.fall_back_to_polling();
                    sync.status.polling = true;
                }
                // The watcher is gone (polling now): nothing more comes.
                None => {
                    watcher.fall_back_to_polling();
                    events_open = false;
                    continue;
                }
            },
            Some(done) = writes.recv() => {
                if !sync.write_done(done, &mut dirty_remote) {
                    continue;
                }
            }
            message = incoming.recv() => match message {
                Some(Incoming::Event(Event::FsChanged { changes })) => {
                    dirty_remote.extend(changes.into_iter().map(|c| c.path));
                }
                Some(Incoming::Closed(_)) | None => {
                    sync.report.warn("the connection to the sandbox dropped; reconnecting");
                    sync.set_phase(Phase::Reconnecting);
                    (handle, incoming) = reconnect(dialer, sync.report).await;
                    sync.set_phase(Phase::Watching);
                    handle.request(Op::WatchFs).await?;
                    dirty_remote.insert(WorkspacePath::root());
                    rescan_all = true;
                }
                Some(_) => continue,
            },
            _ = poll.tick() => {
                sync.save()?;
                if !watcher.polling() {
                    continue;
                }
                rescan_all = true;
            }
            _ = sleep_until(retry_unsettled) => {
                retry_unsettled = None;
                dirty_local.extend(sync.unsettled.iter().cloned());
                from_folder = true;
            }
            _ = sleep_until(deadline) => {
                first_event = None;
                let pending = dirty_local.len() + dirty_remote.len();
                sync.set_pending(pending.max(1));
                let result = sync
                    .catch_up(&handle, &mut dirty_local, &mut dirty_remote, &mut rescan_all, &mut watcher, &mut writes)
                    .await;
                match result {
                    Ok(()) => sync.set_phase(Phase::Watching),
                    Err(e) => match e.downcast_ref::<Held>() {
                        Some(held) if controlled => sync.set_phase(Phase::Held { why: held.why.clone() }),
                        _ => sync.report.warn(&format!("error: {e:#}")),
                    },
                }
                sync.set_pending(0);
                sync.report_conflicts();
                // Answers that came during the round may ask for a look.
                if !dirty_local.is_empty() || !dirty_remote.is_empty() {
                    last_event = Instant::now();
                    first_event = Some(last_event);
                }
                continue;
            }
        }
        let now = Instant::now();
        if from_folder || first_event.is_none() || dirty_local.is_empty() {
            last_event = now;
        }
        first_event.get_or_insert(now);
        if sync.status.pending == 0 {
            sync.set_pending(dirty_local.len() + dirty_remote.len() + rescan_all as usize);
        }
    }
}

/// The next control; a closed channel (the TUI gone) means stop.
/// A manifest asked for and not yet taken.
type AskedManifest<'a> = futures_util::future::BoxFuture<'a, Result<Vec<ManifestEntry>, ClientError>>;

/// Asks the runner for the whole manifest at once, to be awaited after
/// the folder is looked at: the runner walks its tree while the sync walks
/// the folder, where one waited for the other (a tenth of a second each for
/// 10,000 files). The answer's chunks wait in the connection's queue.
fn ask_manifest(handle: &RunnerHandle) -> AskedManifest<'_> {
    use futures_util::FutureExt;
    let mut asked = async move { super::remote::fetch(handle, &WorkspacePath::root()).await }.boxed();
    // The first poll sends the request; it cannot have its answer yet
    // unless the connection is gone, which the await says again.
    match (&mut asked).now_or_never() {
        Some(done) => futures_util::future::ready(done).boxed(),
        None => asked,
    }
}

async fn next_control(controls: &mut Option<mpsc::UnboundedReceiver<Control>>) -> Control {
    match controls {
        Some(controls) => controls.recv().await.unwrap_or(Control::Stop),
        None => std::future::pending().await,
    }
}

/// Drops the `fs_changed` events already received; a closed connection is
/// an error, as the next request would be.
fn drain_changes(incoming: &mut mpsc::UnboundedReceiver<Incoming>) -> anyhow::Result<()> {
    loop {
        match incoming.try_recv() {
            Ok(Incoming::Closed(_)) | Err(mpsc::error::TryRecvError::Disconnected) => {
                anyhow::bail!("the connection to the sandbox dropped")
            }
            Ok(_) => {}
            Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn connect(dialer: &dyn Dialer) -> anyhow::Result<(RunnerHandle, mpsc::UnboundedReceiver<Incoming>)> {
    let (client, _) = dialer
        .dial()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the project's sandbox: {e}"))?;
    let (handle, mut incoming) = client.into_split();
    match tokio::time::timeout(Duration::from_secs(30), incoming.recv()).await {
        Ok(Some(Incoming::Event(Event::Welcome { .. }))) => Ok((handle, incoming)),
        other => anyhow::bail!("the runner did not greet: {other:?}"),
    }
}

async fn reconnect(dialer: &dyn Dialer, report: &mut dyn Report) -> (RunnerHandle, mpsc::UnboundedReceiver<Incoming>) {
    let mut wait = Duration::from_millis(250);
    loop {
        match connect(dialer).await {
            Ok(connected) => {
                report.line("reconnected");
                return connected;
            }
            Err(e) => {
                report.line(&format!("{e:#}; retrying in {} s", wait.as_secs_f32()));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

pub fn watch_limit_message() -> String {
    let current = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    format!(
        "warning: the inotify watch limit is reached (fs.inotify.max_user_watches = {current}); \
         raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (and a line in /etc/sysctl.d/ to keep it). \
         Polling the folder every 2 s meanwhile."
    )
}

struct Sync<'r> {
    args: SyncArgs,
    /// `--mode`, else the one the folder last synced in.
    mode: Mode,
    folder: PathBuf,
    state_file: PathBuf,
    rules: Rules,
    index: LocalIndex,
    base: Tree,
    remote: RemoteView,
    report: &'r mut dyn Report,
    /// Conflicts reported by the last round.
    last_conflicts: usize,
    /// Conflict copies the last round made.
    last_copies: Vec<WorkspacePath>,
    /// The agreed state changed since it was last written.
    state_dirty: bool,
    saved_at: Instant,
    saving: Option<std::thread::JoinHandle<Result<(), super::state::StateError>>>,
    /// Run by the TUI: no questions on the terminal, no progress bars.
    controlled: bool,
    /// The user allowed the held round's deletions.
    allow_once: bool,
    /// The conflicts last reported, as (copy, its node, the path's node).
    shown_conflicts: Option<Vec<(WorkspacePath, Node, Option<Node>)>>,
    status: Status,
    /// While watching, where small uploads' answers go (see [`Deferred`]).
    deferred: Option<Deferred>,
    /// Uploads whose answer has not come: their number and content.
    in_flight: HashMap<WorkspacePath, (u64, Node)>,
    /// No look at the whole folder has followed the watches yet: the next
    /// full rescan is the first that does.
    first_look: bool,
    /// Files that were still being written at the last look: left as they
    /// were on both sides until they hold still.
    unsettled: BTreeSet<WorkspacePath>,
}

impl Sync<'_> {
    /// An upload's answer came. Returns whether the sync must look again.
    fn write_done(&mut self, done: WriteDone, dirty_remote: &mut BTreeSet<WorkspacePath>) -> bool {
        let current = self.in_flight.get(&done.path).is_some_and(|(seq, _)| *seq == done.seq);
        match done.result {
            Ok(version) if current => {
                self.in_flight.remove(&done.path);
                // Both sides held it when the runner took it: agreed (a
                // newer local save since is a change against it).
                self.base.insert(done.path.clone(), done.node.clone());
                self.state_dirty = true;
                self.remote.record(&done.path, Some(done.node), Some(version));
                // Looked at again: a sandbox change after the commit may
                // have been seen before this answer.
                dirty_remote.insert(done.path);
                true
            }
            // A later upload of the path is in flight.
            Ok(_) => false,
            Err(e) => {
                if current {
                    self.in_flight.remove(&done.path);
                }
                // A conflict (the sandbox changed first) is decided again:
                // the agreed state never counted this upload.
                self.report
                    .line(&format!("{}: not uploaded ({e}); looking again", done.path));
                dirty_remote.insert(done.path);
                true
            }
        }
    }

    /// Before a round changes a path whose upload is in flight, its
    /// version must be known (the next upload or deletion names it): from
    /// a manifest when the runner has the file already, else from the
    /// upload's answer. Returns whether the views changed.
    async fn await_in_flight(
        &mut self,
        handle: &RunnerHandle,
        plan: &Plan,
        writes: &mut mpsc::UnboundedReceiver<WriteDone>,
        dirty_remote: &mut BTreeSet<WorkspacePath>,
    ) -> anyhow::Result<bool> {
        if self.in_flight.is_empty() {
            return Ok(false);
        }
        let mut touched: Vec<&WorkspacePath> = Vec::new();
        for change in plan.local.iter().chain(&plan.remote) {
            if let Change::Move { from, .. } = change {
                touched.push(from);
            }
            touched.push(change.path());
        }
        let waiting: BTreeSet<WorkspacePath> = self
            .in_flight
            .keys()
            .filter(|p| touched.iter().any(|t| p.starts_with(t)))
            .cloned()
            .collect();
        if waiting.is_empty() {
            return Ok(false);
        }
        self.remote.refresh(handle, &waiting).await?;
        let unknown = |s: &Self, p: &WorkspacePath| {
            s.in_flight
                .get(p)
                .is_some_and(|(_, node)| s.remote.tree.get(p) != Some(node))
        };
        while waiting.iter().any(|p| unknown(self, p)) {
            match writes.recv().await {
                Some(done) => {
                    self.write_done(done, dirty_remote);
                }
                None => break,
            }
        }
        Ok(true)
    }

    /// Waits (a while) for the uploads in flight, and records them.
    async fn finish_uploads(&mut self, writes: &mut mpsc::UnboundedReceiver<WriteDone>) -> anyhow::Result<()> {
        let mut answered = BTreeSet::new();
        let patience = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(patience);
        while !self.in_flight.is_empty() {
            tokio::select! {
                Some(done) = writes.recv() => {
                    self.write_done(done, &mut answered);
                }
                _ = &mut patience => break,
            }
        }
        if !answered.is_empty() {
            self.advance(Some(&answered))?;
        }
        Ok(())
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.report.status(&self.status);
        }
    }

    fn set_pending(&mut self, pending: usize) {
        if self.status.pending != pending {
            self.status.pending = pending;
            self.report.status(&self.status);
        }
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        self.state_dirty = true;
        self.save()?;
        self.finish_saving()?;
        self.report.line("stopped; the next run resumes from here");
        self.set_phase(Phase::Stopped);
        Ok(())
    }

    /// Tells the conflicts, when they are not the ones told last.
    fn report_conflicts(&mut self) {
        let now: Vec<(WorkspacePath, Node, Option<Node>)> = self
            .index
            .iter()
            .filter(|(p, _)| is_conflict_copy(p))
            .map(|(copy, entry)| {
                let at_path = super::conflicts::original_of(copy)
                    .and_then(|(path, _)| self.index.get(&path))
                    .map(|e| e.node.clone());
                (copy.clone(), entry.node.clone(), at_path)
            })
            .collect();
        if self.shown_conflicts.as_ref() == Some(&now) {
            return;
        }
        let conflicts = super::conflicts::find(&self.folder, &self.index);
        self.report.conflicts(&conflicts);
        self.shown_conflicts = Some(now);
    }

    fn bar(&self, bar: ProgressBar) -> ProgressBar {
        if self.report.owns_terminal() {
            bar
        } else {
            ProgressBar::hidden()
        }
    }

    fn relative(&self, abs: &Path) -> Option<WorkspacePath> {
        let rel = abs.strip_prefix(&self.folder).ok()?;
        WorkspacePath::parse(rel.to_str()?).ok()
    }

    fn scan(&mut self, top: &WorkspacePath) -> anyhow::Result<ScanStats> {
        let bar = if top.is_root() && self.index.is_empty() {
            let bar = self.bar(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} reading the folder: {binary_bytes} hashed ({binary_bytes_per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            Some(bar)
        } else {
            None
        };
        let mut on_hashed = |bytes: u64| {
            if let Some(bar) = &bar {
                bar.inc(bytes);
            }
        };
        let stats = Scanner {
            root: &self.folder,
            rules: &mut self.rules,
            on_hashed: &mut on_hashed,
        }
        .scan(top, &mut self.index)
        .with_context(|| format!("reading {}", self.folder.display()))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for skipped in &stats.skipped {
            self.report.line(&format!("skipped: {skipped}"));
        }
        for path in stats.unsettled.iter().filter(|p| !self.unsettled.contains(*p)) {
            self.report
                .line(&format!("{path}: still being written; synced once it holds still"));
        }
        self.unsettled.retain(|p| !p.starts_with(top));
        self.unsettled.extend(stats.unsettled.iter().cloned());
        Ok(stats)
    }

    fn full_scan(&mut self) -> anyhow::Result<ScanStats> {
        self.scan(&WorkspacePath::root())
    }

    /// Takes the whole manifest asked for with [`ask_manifest`].
    async fn load_remote(&mut self, manifest: AskedManifest<'_>) -> anyhow::Result<()> {
        let spinner = self.bar(ProgressBar::new_spinner());
        spinner.set_message("reading the sandbox's manifest");
        spinner.enable_steady_tick(Duration::from_millis(100));
        let loaded = manifest.await;
        spinner.finish_and_clear();
        let entries = loaded.context("reading the sandbox's manifest")?;
        self.remote.apply(&WorkspacePath::root(), entries);
        Ok(())
    }

    /// The three trees as the reconcile sees them: ignored paths and paths
    /// whose content cannot be known are out of all three.
    fn views(&self) -> (Tree, Tree, Tree) {
        self.views_in(None)
    }

    /// [`Sync::views`] of only the paths in `scope`, their ancestors and
    /// everything below them: what a round after a few events looks at,
    /// so a save costs the same in a 100,000-file folder as in an empty one.
    fn views_in(&self, scope: Option<&BTreeSet<WorkspacePath>>) -> (Tree, Tree, Tree) {
        let verdicts = self.rules.verdicts();
        let keep = |p: &WorkspacePath, n: &Node| {
            !verdicts.is_ignored(p, n.is_dir()) && !self.remote.unknown.iter().any(|u| p.starts_with(u))
        };
        let filter = |t: &Tree| -> Tree {
            t.iter()
                .filter(|(p, n)| keep(p, n))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect()
        };
        // A tree made here is filtered as it is, not copied once more.
        let filter_made = |t: Tree| -> Tree { t.into_iter().filter(|(p, n)| keep(p, n)).collect() };
        match scope {
            None => (
                filter_made(tree_of(&self.index)),
                filter(&self.remote.tree),
                filter(&self.base),
            ),
            Some(scope) => (
                filter_made(tree_of(&restrict(&self.index, scope))),
                filter_made(restrict(&self.remote.tree, scope)),
                filter_made(restrict(&self.base, scope)),
            ),
        }
    }

    fn plan_in(&self, scope: Option<&BTreeSet<WorkspacePath>>) -> Plan {
        let (local, remote, mut base) = self.views_in(scope);
        // An upload in flight is decided on as agreed (a newer save of the
        // file is a plain upload, not a conflict with our own content); it
        // is recorded as agreed only once answered.
        for (path, (_, node)) in &self.in_flight {
            if local.contains_key(path) || remote.contains_key(path) {
                base.insert(path.clone(), node.clone());
            }
        }
        reconcile(&local, &remote, &base, self.mode)
    }

    /// Records what both sides now agree on (within `scope`), and writes it
    /// down: always when reconciling once, at most every couple of seconds
    /// while watching. Losing the last seconds of it to a crash costs
    /// nothing: paths both sides hold equally are agreed again on sight.
    fn advance(&mut self, scope: Option<&BTreeSet<WorkspacePath>>) -> anyhow::Result<()> {
        let (local, remote, base) = self.views_in(scope);
        // Ignored paths leave the agreed state: when they come back, both
        // sides are compared afresh (never a deletion).
        let next = advance_base(&local, &remote, &base);
        // An upload in flight is not agreed on until its answer.
        let unanswered: Vec<(WorkspacePath, Option<Node>)> = self
            .in_flight
            .keys()
            .map(|p| (p.clone(), self.base.get(p).cloned()))
            .collect();
        match scope {
            None => self.base = next,
            Some(scope) => {
                for path in restrict(&self.base, scope).into_keys() {
                    self.base.remove(&path);
                }
                self.base.extend(next);
            }
        }
        for (path, was) in unanswered {
            match was {
                Some(node) => self.base.insert(path, node),
                None => self.base.remove(&path),
            };
        }
        self.state_dirty = true;
        if self.args.once || self.saved_at.elapsed() >= SAVE_EVERY {
            self.save()?;
        }
        Ok(())
    }

    fn save(&mut self) -> anyhow::Result<()> {
        if !self.state_dirty {
            return Ok(());
        }
        let state = SyncState {
            format: 1,
            project: self.args.project.clone(),
            folder: self.folder.clone(),
            instance: String::new(),
            mode: Some(self.mode),
            base: self.base.clone(),
            local: self.index.clone(),
        };
        // The previous write first: states land in order.
        self.finish_saving()?;
        self.state_dirty = false;
        self.saved_at = Instant::now();
        // Serialising 100,000 entries takes a while: not on the loop that
        // answers the next save, nor before the next round's look (a sync
        // that ends waits for it, in `finish_saving`).
        let path = self.state_file.clone();
        self.saving = Some(std::thread::spawn(move || state.save(&path)));
        Ok(())
    }

    /// Waits for a state write in progress.
    fn finish_saving(&mut self) -> anyhow::Result<()> {
        if let Some(writing) = self.saving.take() {
            match writing.join() {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("writing the sync state failed"),
            }
        }
        Ok(())
    }

    /// Rounds until nothing is left to do; returns the exit code `--once`
    /// means.
    ///
    /// With `watch` (the sync goes on watching), every look at the folder
    /// comes after the watches of what it holds: when nothing is left to
    /// do, whatever changes next sends an event.
    async fn settle(
        &mut self,
        handle: &RunnerHandle,
        incoming: &mut mpsc::UnboundedReceiver<Incoming>,
        mut watch: Option<(&mut LocalWatcher, &mut mpsc::UnboundedReceiver<LocalEvent>)>,
    ) -> anyhow::Result<i32> {
        self.first_look = true;
        for round in 0..MAX_ROUNDS {
            let mut manifest = None;
            if round > 0 {
                // What the sandbox said changed so far (mostly the echoes
                // of this reconcile's own uploads: tens of thousands after a
                // first sync) happened before the manifest asked for next,
                // which sees it all: not looked at again while watching.
                drain_changes(incoming)?;
                manifest = Some(ask_manifest(handle));
            }
            if let Some((watcher, events)) = watch.as_mut() {
                self.watch_then_look(watcher, events)?;
            } else if round > 0 {
                self.full_scan()?;
            }
            if let Some(manifest) = manifest {
                self.remote.apply(&WorkspacePath::root(), manifest.await?);
            }
            let plan = self.plan_in(None);
            if self.args.dry_run {
                self.print_plan(&plan);
                return Ok(if plan.conflicts() > 0 { EXIT_CONFLICTS } else { 0 });
            }
            let ran = self.round(handle, plan, None).await?;
            match ran {
                Ran::Nothing => {
                    // Agreed as of a look the watches cover.
                    self.first_look = watch.is_none();
                    break;
                }
                // `--once` is one reconcile: what changes while it runs is
                // the next run's, as it would be a moment after it ended.
                // A round that only put the folder's content in the sandbox,
                // all of it, agreed; looking again at 10,000 files, and the
                // sandbox's manifest of them, was a sixth of a first sync.
                Ran::Settled if watch.is_none() => break,
                Ran::Settled | Ran::Again => {}
            }
        }
        if !self.unsettled.is_empty() {
            let names: Vec<&str> = self.unsettled.iter().take(3).map(WorkspacePath::as_str).collect();
            self.report.line(&format!(
                "{} file(s) still being written, left as they were on both sides: {}{}",
                self.unsettled.len(),
                names.join(", "),
                if self.unsettled.len() > names.len() {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
        let remaining = self.conflicts_remaining();
        if remaining > 0 {
            let how = if self.controlled {
                "F4 shows them"
            } else {
                "resolve them and delete the conflict copies"
            };
            self.report.line(&format!("{remaining} conflict(s) remain: {how}"));
            Ok(EXIT_CONFLICTS)
        } else if !self.unsettled.is_empty() {
            Ok(EXIT_CONFLICTS)
        } else {
            self.report.line("in sync");
            Ok(0)
        }
    }

    fn conflicts_remaining(&self) -> usize {
        let copies = self.index.keys().filter(|p| is_conflict_copy(p)).count();
        copies
            + if self.mode == Mode::OneWaySafe {
                self.last_conflicts
            } else {
                0
            }
    }

    /// One plan carried out.
    async fn round(
        &mut self,
        handle: &RunnerHandle,
        plan: Plan,
        scope: Option<&BTreeSet<WorkspacePath>>,
    ) -> anyhow::Result<Ran> {
        self.last_conflicts = plan.conflicts();
        for notice in &plan.notices {
            self.report.warn(&describe_notice(notice));
        }
        if plan.is_empty() {
            self.advance(scope)?;
            return Ok(Ran::Nothing);
        }
        self.check_deletions(&plan)?;
        let total = plan.local.len() + plan.remote.len() + plan.copies.len();
        let bar = (total >= BAR_AT).then(|| {
            let bar = self.bar(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} changes ({per_sec}, {eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let mut on_done = || {
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        };
        let outcome = Executor {
            root: &self.folder,
            handle,
            index: &mut self.index,
            remote: &mut self.remote,
            on_done: &mut on_done,
            defer: self.deferred.as_mut(),
        }
        .run(&plan)
        .await
        .context("the connection to the sandbox dropped")?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        self.report.line(&describe_outcome(&plan, &outcome));
        for skipped in &outcome.skipped {
            self.report.line(&format!("  not done: {skipped}"));
        }
        for copy in &outcome.copies {
            // Made in the folder: the next look brings them in.
            self.scan(copy)?;
        }
        self.last_copies = outcome.copies.clone();
        for (path, seq, node) in &outcome.deferred {
            self.in_flight.insert(path.clone(), (*seq, node.clone()));
        }
        // What turned out to have changed is looked at again now, so the
        // next round decides with what is there (an event for it may have
        // been merged into one already handled).
        for path in &outcome.stale_local {
            self.scan(path)?;
        }
        let stale_remote: BTreeSet<WorkspacePath> = outcome.stale_remote.iter().cloned().collect();
        self.remote.refresh(handle, &stale_remote).await?;
        self.last_copies.extend(outcome.stale_local.iter().cloned());
        self.last_copies.extend(stale_remote);
        let stale = !outcome.stale_local.is_empty() || !outcome.stale_remote.is_empty();
        self.advance(scope)?;
        let did = outcome.done > 0 || !outcome.copies.is_empty() || stale;
        let only_sandbox = plan.local.is_empty() && plan.copies.is_empty() && plan.conflicts() == 0;
        let all_of_it = outcome.skipped.is_empty() && !stale && outcome.deferred.is_empty();
        Ok(match (did, only_sandbox && all_of_it) {
            (false, _) => Ran::Nothing,
            (true, true) => Ran::Settled,
            (true, false) => Ran::Again,
        })
    }

    /// Stops a round that would delete a lot, or empty a side.
    fn check_deletions(&mut self, plan: &Plan) -> anyhow::Result<()> {
        if self.args.allow_deletes || plan.deletions(Side::Local) + plan.deletions(Side::Remote) == 0 {
            return Ok(());
        }
        if std::mem::take(&mut self.allow_once) {
            self.report.line("deleting as allowed");
            return Ok(());
        }
        let (local, remote, _) = self.views();
        for (side, tree) in [(Side::Local, &local), (Side::Remote, &remote)] {
            let deletions = plan.deletions(side);
            let files = tree.values().filter(|n| !n.is_dir()).count();
            let adds = plan
                .changes(side)
                .iter()
                .any(|c| matches!(c, super::reconcile::Change::Put { node, .. } if !node.is_dir()));
            let empties = files > 0 && deletions >= files && !adds;
            if deletions <= self.args.max_deletes && !empties {
                continue;
            }
            let place = match side {
                Side::Local => "in the folder",
                Side::Remote => "in the sandbox",
            };
            let why = format!(
                "this sync would delete {deletions} of {files} files {place}{}",
                if empties { ", emptying it" } else { "" }
            );
            if !self.controlled && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
                eprint!("{why}. Go ahead? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim().eq_ignore_ascii_case("y") {
                    continue;
                }
            }
            return Err(Held { why }.into());
        }
        Ok(())
    }

    fn print_plan(&mut self, plan: &Plan) {
        if plan.is_empty() {
            self.report.line("nothing to do: in sync");
            return;
        }
        for copy in &plan.copies {
            self.report.line(&format!(
                "conflict copy {} (the {} side's {})",
                copy.copy,
                copy.from.name(),
                copy.path
            ));
        }
        for (side, arrow) in [(Side::Remote, "sandbox"), (Side::Local, "folder")] {
            for change in plan.changes(side) {
                let text = match change {
                    super::reconcile::Change::Delete { path, was } => {
                        format!("{arrow}: delete {} {path}", was.describe())
                    }
                    super::reconcile::Change::Put { path, node, was } => {
                        let verb = if was.is_some() { "update" } else { "create" };
                        format!("{arrow}: {verb} {} {path}", node.describe())
                    }
                    super::reconcile::Change::Move { from, to } => format!("{arrow}: move {from} to {to}"),
                };
                self.report.line(&text);
            }
        }
        self.report.line(&format!(
            "{} change(s) in the sandbox, {} in the folder, {} conflict(s); nothing was done (--dry-run)",
            plan.remote.len(),
            plan.local.len(),
            plan.conflicts()
        ));
    }

    /// Watches every directory the folder is known to hold, then looks at
    /// all of it (and watches what is new): what changed before is in the
    /// look, what changes after sends an event. The events so far are
    /// dropped, the look sees all they name.
    fn watch_then_look(
        &mut self,
        watcher: &mut LocalWatcher,
        events: &mut mpsc::UnboundedReceiver<LocalEvent>,
    ) -> anyhow::Result<()> {
        let dirs: Vec<WorkspacePath> = std::iter::once(WorkspacePath::root())
            .chain(
                self.index
                    .iter()
                    .filter(|(_, e)| e.node.is_dir())
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        let fresh = watcher.unwatched(&dirs);
        if let Err(message) = watcher.watch_paths(&self.folder, &fresh) {
            self.report.line(&message);
        }
        loop {
            match events.try_recv() {
                Ok(LocalEvent::LimitReached) => {
                    self.report.warn(&watch_limit_message());
                    watcher.fall_back_to_polling();
                }
                // A directory an event names may be a new one at an old
                // name (`rm -rf build && mkdir build` while the first sync
                // ran): the look below watches it afresh, as the watching
                // loop does.
                Ok(LocalEvent::Paths(paths)) => {
                    for path in paths {
                        if let Some(path) = self.relative(&path) {
                            watcher.forget_below(&path);
                        }
                    }
                }
                Ok(LocalEvent::Rescan) => {}
                Err(mpsc::error::TryRecvError::Empty) => break,
                // The watcher is gone: the loop polls.
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        self.scan_and_watch(&WorkspacePath::root(), watcher)?;
        Ok(())
    }

    /// Scans `top`, watches the directories found that are not watched
    /// yet, and looks at those once more: what was created in them before
    /// their watch existed sends no event and would be missed.
    /// Returns the paths found changed.
    fn scan_and_watch(
        &mut self,
        top: &WorkspacePath,
        watcher: &mut LocalWatcher,
    ) -> anyhow::Result<Vec<WorkspacePath>> {
        let mut stats = self.scan(top)?;
        let mut changed = std::mem::take(&mut stats.changed);
        for _ in 0..MAX_ROUNDS {
            let fresh = watcher.unwatched(&stats.dirs);
            if fresh.is_empty() {
                break;
            }
            if let Err(message) = watcher.watch_paths(&self.folder, &fresh) {
                self.report.line(&message);
            }
            stats = ScanStats::default();
            for dir in fresh {
                let more = self.scan(&dir)?;
                stats.dirs.extend(more.dirs);
                changed.extend(more.changed);
            }
        }
        if top.is_root() {
            watcher.keep_only(|d| self.index.get(d).is_some_and(|e| e.node.is_dir()));
        }
        Ok(changed)
    }

    /// Looks again at what events named, then reconciles until quiet.
    async fn catch_up(
        &mut self,
        handle: &RunnerHandle,
        dirty_local: &mut BTreeSet<WorkspacePath>,
        dirty_remote: &mut BTreeSet<WorkspacePath>,
        rescan_all: &mut bool,
        watcher: &mut LocalWatcher,
        writes: &mut mpsc::UnboundedReceiver<WriteDone>,
    ) -> anyhow::Result<()> {
        let local = std::mem::take(dirty_local);
        // The sandbox's changes below ignored paths (an `npm install` in
        // node_modules) are not looked at; a path not known yet may be a
        // directory.
        let mut remote: BTreeSet<WorkspacePath> = std::mem::take(dirty_remote)
            .into_iter()
            .filter(|p| {
                let dir = self.remote.tree.get(p).is_none_or(Node::is_dir);
                p.is_root() || !self.rules.is_ignored(p, dir)
            })
            .collect();
        // Past a few hundred paths one manifest is cheaper than one each.
        if remote.len() > MANY_PATHS {
            remote = BTreeSet::from([WorkspacePath::root()]);
        }
        if local.len() > MANY_PATHS * 4 {
            *rescan_all = true;
        }
        let mut full = std::mem::take(rescan_all);
        let mut scanned: Vec<WorkspacePath> = Vec::new();
        // The first look after the watches exist is for what changed
        // between the first reconcile and them: only what it finds changed
        // on either side is reconciled (the first sync's own writes come
        // back from the sandbox as a flood of events that change nothing),
        // so the first save after starting does not wait for a whole-tree
        // round.
        let first_look = full && std::mem::take(&mut self.first_look);
        if full {
            let changed = self.scan_and_watch(&WorkspacePath::root(), watcher)?;
            if first_look {
                full = false;
                scanned = changed;
            }
        } else {
            let done = &mut scanned;
            for path in local {
                // A changed ignore file changes what its directory holds.
                let top = if Rules::is_rule_file(&path) {
                    if path.as_str() == ".git/info/exclude" {
                        WorkspacePath::root()
                    } else {
                        path.parent().unwrap_or_default()
                    }
                } else {
                    path
                };
                if done.iter().any(|d| top.starts_with(d)) {
                    continue;
                }
                if top.is_root() {
                    self.scan_and_watch(&WorkspacePath::root(), watcher)?;
                    full = true;
                    break;
                }
                // A directory an event names may be a new one at an old
                // name: watched afresh.
                watcher.forget_below(&top);
                self.scan_and_watch(&top, watcher)?;
                done.push(top);
            }
        }
        let remote_changed = self.remote.refresh(handle, &remote).await?;
        let mut scope: Option<BTreeSet<WorkspacePath>> = if first_look {
            Some(scanned.into_iter().chain(remote_changed).collect())
        } else if full || remote.contains(&WorkspacePath::root()) {
            None
        } else {
            Some(scanned.into_iter().chain(remote).collect())
        };
        for _ in 0..MAX_ROUNDS {
            let mut plan = self.plan_in(scope.as_ref());
            if self.await_in_flight(handle, &plan, writes, dirty_remote).await? {
                plan = self.plan_in(scope.as_ref());
            }
            let more = !matches!(self.round(handle, plan, scope.as_ref()).await?, Ran::Nothing);
            if !more {
                break;
            }
            // The executor kept both views current; only conflict copies
            // are new to look at.
            if let Some(scope) = &mut scope {
                scope.extend(std::mem::take(&mut self.last_copies));
            }
        }
        Ok(())
    }
}

fn describe_notice(notice: &Notice) -> String {
    match notice {
        Notice::Conflict {
            path,
            kept,
            copy: Some(copy),
        } => format!(
            "conflict: {path} changed on both sides; kept the {} version, the other is in {copy}",
            kept.name()
        ),
        Notice::Conflict { path, copy: None, .. } => {
            format!("conflict: {path} changed in the sandbox and in the folder; left both as they are")
        }
        Notice::DeleteLostToModify { path, deleted_on } => match deleted_on {
            Side::Local => {
                format!("{path}: deleted in the folder but changed in the sandbox: kept the sandbox's version")
            }
            Side::Remote => format!("{path}: deleted in the sandbox but changed in the folder: kept yours"),
        },
    }
}

fn describe_outcome(plan: &Plan, outcome: &Outcome) -> String {
    let mut parts = Vec::new();
    if outcome.uploaded > 0 {
        parts.push(format!("{} up", outcome.uploaded));
    }
    if outcome.downloaded > 0 {
        parts.push(format!("{} down", outcome.downloaded));
    }
    if outcome.deleted_remote > 0 {
        parts.push(format!("{} deleted in the sandbox", outcome.deleted_remote));
    }
    if outcome.moved > 0 {
        parts.push(format!("{} moved", outcome.moved));
    }
    if outcome.deleted_local > 0 {
        parts.push(format!("{} deleted in the folder", outcome.deleted_local));
    }
    if !outcome.copies.is_empty() {
        parts.push(format!("{} conflict copies", outcome.copies.len()));
    }
    let others = outcome.done.saturating_sub(
        outcome.uploaded + outcome.downloaded + outcome.deleted_remote + outcome.deleted_local + outcome.moved,
    );
    if others > 0 {
        parts.push(format!("{others} other"));
    }
    let mut names: Vec<&str> = plan
        .remote
        .iter()
        .chain(&plan.local)
        .map(|c| c.path().as_str())
        .collect();
    names.dedup();
    let shown: Vec<&str> = names.iter().take(3).copied().collect();
    let more = names.len().saturating_sub(shown.len());
    let mut line = format!(
        "synced: {}",
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    );
    if !shown.is_empty() {
        line.push_str(&format!(
            " ({}{})",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    line
}

/// How a round ended.
enum Ran {
    /// Nothing was left to do.
    Nothing,
    /// It put the folder's content in the sandbox, every change of its
    /// plan: the sides agree as of the looks it planned from.
    Settled,
    /// Something may be left: changes in the folder (a download can bring
    /// an ignore file), conflict copies, refusals, changes seen meanwhile.
    Again,
}

enum LocalEvent {
    Paths(Vec<PathBuf>),
    /// The watcher lost events (queue overflow): look at everything.
    Rescan,
    LimitReached,
}

/// inotify watches, one per directory the sync keeps (an ignored
/// `node_modules` costs none), or polling when inotify cannot.
struct LocalWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    /// A test's stand-in for the kernel's limit.
    fake_limit: Option<usize>,
    watched: std::collections::HashSet<WorkspacePath>,
}

impl LocalWatcher {
    fn start(_folder: &Path, events: mpsc::UnboundedSender<LocalEvent>, poll: bool) -> Self {
        let fake_limit = std::env::var("CLOUDCODE_SYNC_WATCH_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok());
        let watcher = if poll {
            None
        } else {
            let config = notify::Config::default().with_follow_symlinks(false);
            notify::RecommendedWatcher::new(
                move |event: notify::Result<notify::Event>| {
                    use notify::event::{AccessKind, AccessMode, EventKind};
                    let message = match event {
                        // Reads are not changes, and the sync's own reads
                        // (a directory listed, a file hashed) would wake it
                        // again forever. A close after writing is a change.
                        Ok(event)
                            if matches!(event.kind, EventKind::Access(kind)
                                if kind != AccessKind::Close(AccessMode::Write)) =>
                        {
                            return;
                        }
                        Ok(event) if event.need_rescan() => LocalEvent::Rescan,
                        Ok(event) => LocalEvent::Paths(event.paths),
                        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => LocalEvent::LimitReached,
                        Err(_) => LocalEvent::Rescan,
                    };
                    let _ = events.send(message);
                },
                config,
            )
            .ok()
        };
        Self {
            watcher,
            fake_limit,
            watched: std::collections::HashSet::new(),
        }
    }

    /// Of `dirs`, those without a watch yet (none while polling).
    fn unwatched(&self, dirs: &[WorkspacePath]) -> Vec<WorkspacePath> {
        if self.watcher.is_none() {
            return Vec::new();
        }
        let root = WorkspacePath::root();
        let mut out: Vec<WorkspacePath> = dirs.iter().filter(|d| !self.watched.contains(*d)).cloned().collect();
        if !self.watched.contains(&root) && dirs.contains(&root) {
            out.push(root);
        }
        out.sort();
        out.dedup();
        out
    }

    fn forget_below(&mut self, top: &WorkspacePath) {
        if !top.is_root() {
            self.watched.retain(|d| !d.starts_with(top));
        }
    }

    fn keep_only(&mut self, mut keep: impl FnMut(&WorkspacePath) -> bool) {
        self.watched.retain(|d| d.is_root() || keep(d));
    }

    fn polling(&self) -> bool {
        self.watcher.is_none()
    }

    fn fall_back_to_polling(&mut self) {
        self.watcher = None;
    }

    fn watch_dirs<'a>(
        &mut self,
        folder: &Path,
        dirs: impl Iterator<Item = (&'a WorkspacePath, &'a super::scan::LocalEntry)>,
    ) -> Result<(), String> {
        let mut all = vec![WorkspacePath::root()];
        all.extend(dirs.map(|(p, _)| p.clone()));
        self.watch_paths(folder, &all)
    }

    /// Adds a watch per directory; at the limit, says so and polls.
    fn watch_paths(&mut self, folder: &Path, dirs: &[WorkspacePath]) -> Result<(), String> {
        let Some(watcher) = &mut self.watcher else {
            return Ok(());
        };
        for dir in dirs {
            let at_limit = self.fake_limit.is_some_and(|limit| self.watched.len() >= limit);
            let result = if at_limit {
                Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
            } else {
                watcher.watch(
                    &folder.join(dir.as_relative_fs_path()),
                    notify::RecursiveMode::NonRecursive,
                )
            };
            match result {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    self.watcher = None;
                    return Err(watch_limit_message());
                }
                // Gone before we could watch it: its parent's event brings
                // it in or out.
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// The entries of `map` at, above or below the paths of `scope`.
fn restrict<V: Clone>(
    map: &std::collections::BTreeMap<WorkspacePath, V>,
    scope: &BTreeSet<WorkspacePath>,
) -> std::collections::BTreeMap<WorkspacePath, V> {
    let mut out = std::collections::BTreeMap::new();
    for top in scope {
        if top.is_root() {
            return map.clone();
        }
        for a in super::model::ancestors(top) {
            if let Some(v) = map.get(&a) {
                out.insert(a, v.clone());
            }
        }
        // Everything below `top` sorts after it and before `top0` ('/' is
        // just below '0'), among `top-x` and `top.x`, which are skipped.
        let end = format!("{}0", top.as_str());
        for (path, v) in map.range(top.clone()..) {
            if path.as_str() >= end.as_str() {
                break;
            }
            if path.starts_with(top) {
                out.insert(path.clone(), v.clone());
            }
        }
    }
    out
}
