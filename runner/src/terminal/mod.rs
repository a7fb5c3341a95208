//! Terminals: PTY processes whose output outlives the clients watching it.
//!
//! Each terminal has a reader thread that moves PTY output into its
//! [`Scrollback`] and never waits for clients (so a stalled client cannot stall
//! the program, nor grow memory), input written straight to the PTY, and a
//! `watch` channel that wakes the per-client pumps (see
//! `connection.rs`) when output arrives or the process exits.

pub mod fast_forward;
pub mod flow;
pub mod live;
pub mod pty;
pub mod screen;
pub mod scrollback;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cloudcode_proto::message::{TermId, TermInfo, TermPurpose};
use portable_pty::ChildKiller;
use tokio::sync::watch;

use self::flow::Window;
use self::live::LiveScreen;
use self::scrollback::{Next, Scrollback};

/// Largest read from a PTY, and so the largest output frame.
pub const READ_CHUNK: usize = 64 * 1024;
/// A take of this many bytes (a read and those that follow it at once) is
/// of a stream of output written a little at a time (not an echo, not a
/// prompt): after one, the reader lets the
/// program write on for [`STREAM_GATHER`] before it reads again. A PTY
/// hands over at most 4 KiB a read, and each read wakes a kernel worker to
/// refill it; a reader that read as soon as anything was there got 1-2 KiB
/// a read from `base64` (some 900 context switches per MB, and each read
/// woke the pumps and made a frame). Gathering delays what follows such a
/// read by at most that long, and neither an echo nor the first output
/// after a pause, which are read at once. A take of 4 KiB or more found
/// the PTY full: the program writes faster than it is read, a pause would
/// stop it (the PTY holds some 12 KiB of a program writing large blocks),
/// and the reader reads on. (With 32 KiB as the bound, `cat urandom |
/// base64 -w 0` ran at half its speed.)
const STREAM_READS: std::ops::Range<usize> = 1024..4 * 1024;
const STREAM_GATHER: Duration = Duration::from_micros(300);
/// Between the hangup and SIGKILL when a terminal is closed: what ignores
/// SIGHUP is killed then.
const HANGUP_GRACE: Duration = Duration::from_secs(1);
/// How often the hangup is repeated meanwhile while the shell lives. Bash
/// misses a SIGHUP that comes as it goes back to its prompt (its handler
/// only sets a flag, and readline then waits for input), and was killed
/// at the grace's end without writing its history: about one close in
/// five under load. Another SIGHUP makes it handle the first at once.
const HANGUP_REPEAT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct TerminalConfig {
    /// Program and arguments of the default shell.
    pub shell: Vec<String>,
    pub cwd: PathBuf,
    /// The terminal's whole environment.
    pub env: Vec<(String, String)>,
    /// Bytes of output kept per terminal for clients that reconnect.
    pub scrollback_bytes: usize,
    /// A terminal with no client attached for this long is closed.
    pub idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("could not start {program:?}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("the terminal size must be at least 1x1 and at most 1000x1000")]
    BadSize,
    #[error("the command is empty")]
    EmptyCommand,
}

struct TermState {
    scrollback: Scrollback,
    cols: u16,
    rows: u16,
    /// `Some(code)` once the process has exited; `code` is `None` for a
    /// signal.
    exited: Option<Option<u32>>,
    clients: u32,
    idle_since: Instant,
}

pub struct Terminal {
    pub id: TermId,
    state: Mutex<TermState>,
    /// Bumped on every output and on exit; pumps wait on it.
    changed: watch::Sender<u64>,
    writer: Mutex<Box<dyn Write + Send>>,
    master: Mutex<pty::Master>,
    killer: Mutex<Box<dyn ChildKiller + Send + Sync>>,
    pid: Option<u32>,
    /// The master side's descriptor, to ask whether a write would block.
    master_fd: std::os::fd::RawFd,
    /// Bytes of output read so far, published without a lock so that
    /// [`Terminal::write_input`] can watch for a keystroke's echo.
    output_total: AtomicU64,
    /// `output_total` when a keystroke last went unanswered, plus one (0:
    /// the last one was answered). A program that does not echo (a game
    /// in raw mode, a paste into `stty -echo`) then costs one wait, not one
    /// per keystroke, until it prints again.
    unanswered_at: AtomicU64,
    /// The screen at the end of the output when a windowed client last
    /// skipped to it; locked while one is made, before the state.
    live: Mutex<Option<LiveScreen>>,
    purpose: TermPurpose,
}

/// Input up to this size is written on the runtime's own thread when the
/// terminal has room for it: a keystroke should not pay for a thread
/// hand-off.
const INLINE_WRITE_MAX: usize = 256;

/// How long the runtime thread stays awake after a keystroke, waiting for
/// the program's echo. Without it the thread goes to sleep and the echo costs
/// a second wake-up (reader thread, then runtime thread) on top of the
/// reader's own; a shell echoes within tens of microseconds, so this catches
/// nearly every echo, and a program that does not answer costs at most this
/// much of one core per keystroke.
const ECHO_WAIT: Duration = Duration::from_micros(250);

/// What a client reads next from a terminal.
pub struct Output {
    pub next: Next,
    /// Set once the process has exited (and only then).
    pub exited: Option<Option<u32>>,
}

impl Terminal {
    fn lock(&self) -> MutexGuard<'_, TermState> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn read(&self, seq: u64, max: usize) -> Output {
        let mut state = self.lock();
        Output {
            next: state.scrollback.next_for(seq, max),
            exited: state.exited,
        }
    }

    /// What a client with a flow window reads next: [`Terminal::read`], or,
    /// when it is too far behind ([`Window::skips_to_live`]), a snapshot of
    /// the screen as it was [`flow::SKIP_KEEP`] bytes ago (then those bytes
    /// follow: the client's scrollback gets the end of what it skipped).
    pub fn read_windowed(&self, seq: u64, max: usize, window: &Window) -> Output {
        let mut state = self.lock();
        if !window.skips_to_live(seq, state.scrollback.end_seq()) {
            return Output {
                next: state.scrollback.next_for(seq, max),
                exited: state.exited,
            };
        }
        drop(state);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let (work, exited) = {
            let mut state = self.lock();
            let to = state.scrollback.end_seq().saturating_sub(flow::SKIP_KEEP);
            (state.scrollback.catch_up(live.take(), to.max(seq)), state.exited)
        };
        // Up to a scrollback's worth of emulation: off the runtime's worker.
        let screen = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| work.apply())
        } else {
            work.apply()
        };
        let next = Next::Snapshot {
            seq: screen.seq(),
            data: screen.snapshot(),
        };
        *live = Some(screen);
        Output { next, exited }
    }

    /// Writes input to the PTY. A keystroke goes straight in from the
    /// calling task (a thread hop would double the echo latency); the write
    /// only blocks when the program stops reading its input, and then
    /// `block_in_place` keeps the runtime's other tasks going.
    pub fn write_input(&self, data: &[u8]) {
        let write = || {
            let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            // A program that exited no longer reads: input is dropped.
            let _ = writer.write_all(data).and_then(|()| writer.flush());
        };
        if data.len() <= INLINE_WRITE_MAX && self.has_room() {
            let before = self.output_total.load(Ordering::Acquire);
            write();
            self.wait_for_echo(before);
        } else {
            tokio::task::block_in_place(write);
        }
    }

    /// Yields the CPU in a loop until output beyond `before` arrives, for at
    /// most [`ECHO_WAIT`]: while this thread is awake, the reader thread's
    /// notification schedules the pump without waking a sleeping thread.
    fn wait_for_echo(&self, before: u64) {
        if self.unanswered_at.load(Ordering::Relaxed) == before + 1 {
            return;
        }
        let deadline = Instant::now() + ECHO_WAIT;
        while self.output_total.load(Ordering::Acquire) == before {
            if Instant::now() >= deadline {
                self.unanswered_at.store(before + 1, Ordering::Relaxed);
                return;
            }
            std::thread::yield_now();
        }
        self.unanswered_at.store(0, Ordering::Relaxed);
    }

    /// Whether the terminal's input queue has room now. A program that stops
    /// reading its input fills it; then a write blocks.
    fn has_room(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.master_fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout; the descriptor stays open
        // while `self.master` holds it.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1 && poll.revents & libc::POLLOUT != 0
    }

    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), TerminalError> {
        check_size(cols, rows)?;
        let mut state = self.lock();
        if (state.cols, state.rows) == (cols, rows) {
            return Ok(());
        }
        state.cols = cols;
        state.rows = rows;
        state.scrollback.resize(rows, cols);
        drop(state);
        let master = self.master.lock().unwrap_or_else(|e| e.into_inner());
        // The process may have exited; the size no longer matters then.
        let _ = master.resize(cols, rows);
        Ok(())
    }

    pub fn size(&self) -> (u16, u16) {
        let state = self.lock();
        (state.cols, state.rows)
    }

    /// Registers a watching client until the guard drops.
    pub fn attach(self: &Arc<Self>) -> AttachGuard {
        self.lock().clients += 1;
        AttachGuard { terminal: self.clone() }
    }

    pub fn info(&self) -> TermInfo {
        let state = self.lock();
        TermInfo {
            term: self.id,
            cols: state.cols,
            rows: state.rows,
            seq: state.scrollback.end_seq(),
            attached_clients: state.clients,
            exited: state.exited,
            purpose: self.purpose,
        }
    }

    /// Hangs up the terminal (again every [`HANGUP_REPEAT`] until its
    /// process is gone), then kills whatever in its session ignored the
    /// hangup.
    fn close(self: &Arc<Self>) {
        let Some(pid) = self.pid else {
            let _ = self.killer.lock().unwrap_or_else(|e| e.into_inner()).kill();
            return;
        };
        pty::signal_group(pid, libc::SIGHUP);
        let terminal = self.clone();
        let hangup = move || {
            let deadline = Instant::now() + HANGUP_GRACE;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(HANGUP_REPEAT));
                // Until it is reaped the pid is the shell's, not another
                // process's.
                if terminal.lock().exited.is_none() && Instant::now() < deadline {
                    pty::signal_group(pid, libc::SIGHUP);
                }
            }
            pty::kill_session(pid);
        };
        let spawned = std::thread::Builder::new()
            .name(format!("pty-hangup-{}", self.id))
            .stack_size(64 * 1024)
            .spawn(hangup);
        if let Err(e) = spawned {
            tracing::error!(term = self.id, "could not start the hangup thread: {e}");
            pty::kill_session(pid);
        }
    }

    /// Waits, after [`Terminal::close`], until every process of the
    /// session is gone.
    fn wait_gone(&self) {
        let Some(pid) = self.pid else { return };
        let deadline = Instant::now() + HANGUP_GRACE + Duration::from_secs(2);
        while Instant::now() < deadline && !pty::session_members(pid).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub struct AttachGuard {
    terminal: Arc<Terminal>,
}

impl Drop for AttachGuard {
    fn drop(&mut self) {
        let mut state = self.terminal.lock();
        state.clients = state.clients.saturating_sub(1);
        state.idle_since = Instant::now();
    }
}

fn check_size(cols: u16, rows: u16) -> Result<(), TerminalError> {
    if (1..=1000).contains(&cols) && (1..=1000).contains(&rows) {
        Ok(())
    } else {
        Err(TerminalError::BadSize)
    }
}

/// Every terminal of the project.
pub struct Terminals {
    config: TerminalConfig,
    activity: Arc<crate::activity::Activity>,
    next_id: AtomicU32,
    map: Mutex<HashMap<TermId, Arc<Terminal>>>,
    /// Held while a run terminal replaces the live ones: two clients
    /// pressing Run at the same instant end with one run, not two.
    runs: Mutex<()>,
}

impl Terminals {
    pub fn new(config: TerminalConfig, activity: Arc<crate::activity::Activity>) -> Self {
        Self {
            config,
            activity,
            next_id: AtomicU32::new(1),
            runs: Mutex::new(()),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<TermId, Arc<Terminal>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open(
        &self,
        cols: u16,
        rows: u16,
        command: Option<Vec<String>>,
        purpose: TermPurpose,
    ) -> Result<Arc<Terminal>, TerminalError> {
        check_size(cols, rows)?;
        // A new run ends every live one first (whichever client started
        // it): two servers on one port would fight.
        let _one_run = (purpose == TermPurpose::Run).then(|| self.runs.lock().unwrap_or_else(|e| e.into_inner()));
        if purpose == TermPurpose::Run {
            let live: Vec<TermId> = self
                .map()
                .values()
                .filter(|t| t.purpose == TermPurpose::Run && t.lock().exited.is_none())
                .map(|t| t.id)
                .collect();
            for id in live {
                tracing::info!(term = id, "a new run ends this one");
                self.close(id);
            }
        }
        let interactive_shell = command.is_none();
        let mut argv = command.unwrap_or_else(|| self.config.shell.clone());
        if argv.is_empty() {
            return Err(TerminalError::EmptyCommand);
        }
        let program = argv.remove(0);
        let spec = pty::SpawnSpec {
            program: program.clone(),
            args: argv,
            cwd: self.config.cwd.clone(),
            env: self.config.env.clone(),
            cols,
            rows,
        };
        let spawned = pty::spawn(&spec).map_err(|source| TerminalError::Spawn { program, source })?;
        if interactive_shell && let Some(pid) = spawned.pid {
            // The shell echoes every key typed at its prompt: on a keystroke's
            // way like the runner's own threads. It wakes after a kworker
            // hands it the key, and with the default slice it then waits for
            // whatever runs (an `npm install` in another terminal) to use up
            // its slice, up to a tick: 5 ms of the echo's p99 under load. The
            // programs it starts get the default (`sched::shorten_slice`
            // does not pass it on), so a build is not cut into 0.1 ms slices;
            // a command given instead of the shell is such a program.
            crate::sched::shorten_slice(pid as libc::pid_t);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (changed, _) = watch::channel(0);
        let master_fd = spawned.master.as_raw_fd();
        let terminal = Arc::new(Terminal {
            id,
            state: Mutex::new(TermState {
                scrollback: Scrollback::new(self.config.scrollback_bytes, rows, cols),
                cols,
                rows,
                exited: None,
                clients: 0,
                idle_since: Instant::now(),
            }),
            changed,
            writer: Mutex::new(spawned.writer),
            master: Mutex::new(spawned.master),
            killer: Mutex::new(spawned.killer),
            pid: spawned.pid,
            master_fd,
            output_total: AtomicU64::new(0),
            unanswered_at: AtomicU64::new(0),
            live: Mutex::new(None),
            purpose,
        });
        spawn_reader(terminal.clone(), spawned.reader, spawned.child, self.activity.clone());
        self.map().insert(id, terminal.clone());
        tracing::info!(term = id, pid = ?spawned.pid, "terminal opened");
        Ok(terminal)
    }

    pub fn get(&self, id: TermId) -> Option<Arc<Terminal>> {
        self.map().get(&id).cloned()
    }

    pub fn list(&self) -> Vec<TermInfo> {
        let mut terms: Vec<_> = self.map().values().map(|t| t.info()).collect();
        terms.sort_by_key(|t| t.term);
        terms
    }

    pub fn close(&self, id: TermId) -> bool {
        let removed = self.map().remove(&id);
        match removed {
            Some(terminal) => {
                terminal.close();
                true
            }
            None => false,
        }
    }

    /// Closes every terminal and waits for their processes to be gone.
    pub fn close_all(&self) {
        let all: Vec<_> = self.map().drain().map(|(_, t)| t).collect();
        // One hangup each (closing twice hung every shell up twice at once).
        for t in &all {
            t.close();
        }
        for t in &all {
            t.wait_gone();
        }
    }

    /// Closes terminals nobody has watched for the idle timeout.
    pub fn reap_idle(&self) -> Vec<TermId> {
        let timeout = self.config.idle_timeout;
        let idle: Vec<TermId> = self
            .map()
            .values()
            .filter(|t| {
                let state = t.lock();
                state.clients == 0 && state.idle_since.elapsed() >= timeout
            })
            .map(|t| t.id)
            .collect();
        for id in &idle {
            tracing::info!(term = id, "closing terminal idle for {timeout:?}");
            self.close(*id);
        }
        idle
    }

    /// How many terminals are open (for the health endpoint).
    pub fn count(&self) -> usize {
        self.map().len()
    }
}

/// Whether a read of `fd` would return at once.
fn readable_now(fd: std::os::fd::RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the descriptor stays open
    // while the terminal holds its master.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready == 1 && poll.revents & libc::POLLIN != 0
}

fn spawn_reader(
    terminal: Arc<Terminal>,
    mut reader: Box<dyn Read + Send>,
    mut child: Box<dyn portable_pty::Child + Send + Sync>,
    activity: Arc<crate::activity::Activity>,
) {
    let id = terminal.id;
    let spawned = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .name(format!("pty-read-{id}"))
        .spawn(move || {
            // The first thread on the way of every output byte, a keystroke's
            // echo included: with the default slice a kworker or the program
            // itself preempts it at the end of a read, and once woken it
            // waits out whatever runs. (Not passed on: it starts nothing.)
            crate::sched::shorten_slice(0);
            let mut buf = vec![0u8; READ_CHUNK];
            // Set after a read of a stream of output (see STREAM_READS).
            let mut streaming = false;
            loop {
                if streaming {
                    std::thread::sleep(STREAM_GATHER);
                }
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(mut n) => {
                        // What the program wrote meanwhile goes with it: one
                        // push, one wake-up of the pumps and one frame for
                        // all of it, not one per write (the program keeps
                        // writing while the pump sends). Only what is there
                        // already: an echo waits for nothing.
                        while n < buf.len() && readable_now(terminal.master_fd) {
                            match reader.read(&mut buf[n..]) {
                                Ok(0) | Err(_) => break,
                                Ok(more) => n += more,
                            }
                        }
                        streaming = STREAM_READS.contains(&n);
                        let mut state = terminal.lock();
                        state.scrollback.push(&buf[..n]);
                        let seq = state.scrollback.end_seq();
                        drop(state);
                        terminal.changed.send_replace(seq);
                        // After the notification: an echo seen here has its
                        // pump already scheduled.
                        terminal.output_total.store(seq, Ordering::Release);
                        activity.touch();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // EIO: the last process holding the slave side is gone.
                    Err(_) => break,
                }
            }
            let code = match child.wait() {
                Ok(status) if status.signal().is_none() => Some(status.exit_code()),
                _ => None,
            };
            tracing::info!(term = id, ?code, "terminal process exited");
            let mut state = terminal.lock();
            state.exited = Some(code);
            let seq = state.scrollback.end_seq();
            drop(state);
            terminal.changed.send_replace(seq);
        });
    if let Err(e) = spawned {
        tracing::error!(term = id, "could not start the PTY reader thread: {e}");
    }
}
