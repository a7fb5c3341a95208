//! The screen as it was at the start of a terminal's scrollback window,
//! kept by a VT100 emulator on a thread of its own.
//!
//! Emulating costs about as much CPU per byte as reading the PTY does; doing
//! it on the PTY reader's thread cut output throughput by a third. Bytes
//! leaving the window are collected here into batches of [`BATCH`] bytes
//! and queued (a bounded queue: if the emulator falls 4 MiB behind, the
//! reader waits, which slows the program rather than growing memory): one
//! wake-up of the emulator's thread per batch rather than per read, and
//! long enough runs for [`FastForward`] to leave most of plain output
//! unemulated. A snapshot hands over the batch begun and waits for the
//! emulator to catch up with everything handed to it before (bytes and
//! resizes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::fast_forward::FastForward;

/// Bytes collected before the emulator's thread is woken for them.
const BATCH: usize = 256 * 1024;
/// Batches queued at most: 4 MiB.
const QUEUE: usize = 16;
/// A snapshot never waits longer than this for the emulator.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);

enum Work {
    Bytes(Vec<u8>),
    Resize { rows: u16, cols: u16 },
}

struct State {
    parser: vt100::Parser,
    fast_forward: FastForward,
    /// Pieces of work applied so far.
    applied: u64,
}

pub struct ScreenTracker {
    shared: Arc<(Mutex<State>, Condvar)>,
    queue: Queue,
    /// Pieces of work handed over so far.
    submitted: AtomicU64,
    /// Bytes not handed over yet.
    batch: Vec<u8>,
}

enum Queue {
    /// No output has left the scrollback yet (most terminals' whole life):
    /// no thread, and resizes are applied at once.
    NotStarted,
    Started(SyncSender<Work>),
    /// The thread could not be started: work is done inline.
    Inline,
}

/// The smallest screen the emulator is given, whatever the terminal's
/// size: vt100 underflows (a panic, which took the terminal's reader down)
/// wrapping a line on a 1-row screen or placing a wide character on a
/// 1-column one. A 1-row terminal's snapshot then draws two rows.
pub const EMULATOR_MIN_SIZE: u16 = 2;

impl ScreenTracker {
    pub fn new(rows: u16, cols: u16) -> Self {
        let state = State {
            parser: vt100::Parser::new(rows.max(EMULATOR_MIN_SIZE), cols.max(EMULATOR_MIN_SIZE), 0),
            fast_forward: FastForward::default(),
            applied: 0,
        };
        Self {
            shared: Arc::new((Mutex::new(state), Condvar::new())),
            queue: Queue::NotStarted,
            submitted: AtomicU64::new(0),
            batch: Vec::new(),
        }
    }

    fn start(&mut self) {
        let (tx, rx) = sync_channel(QUEUE);
        let worker_shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("pty-screen".into())
            .stack_size(256 * 1024)
            .spawn(move || work(rx, worker_shared));
        self.queue = match spawned {
            Ok(_) => Queue::Started(tx),
            Err(e) => {
                tracing::warn!("no screen thread, emulating inline: {e}");
                Queue::Inline
            }
        };
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.batch.is_empty() {
            self.batch.reserve_exact(BATCH.max(data.len()));
        }
        self.batch.extend_from_slice(data);
        if self.batch.len() >= BATCH {
            self.hand_over();
        }
    }

    pub fn resize(&mut self, rows: u16, cols: u16) {
        self.hand_over();
        self.submit(Work::Resize { rows, cols });
    }

    fn hand_over(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.submit(Work::Bytes(batch));
        }
    }

    fn submit(&mut self, work: Work) {
        use std::sync::mpsc::TrySendError;
        if matches!(self.queue, Queue::NotStarted) && matches!(work, Work::Bytes(_)) {
            self.start();
        }
        self.submitted.fetch_add(1, Ordering::AcqRel);
        let work = match &self.queue {
            Queue::Started(queue) => match queue.try_send(work) {
                Ok(()) => return,
                // The emulator is 4 MiB behind: wait for it, off the runtime.
                Err(TrySendError::Full(work)) => {
                    let sent = if tokio::runtime::Handle::try_current().is_ok() {
                        tokio::task::block_in_place(|| queue.send(work))
                    } else {
                        queue.send(work)
                    };
                    match sent {
                        Ok(()) => return,
                        Err(failed) => failed.0,
                    }
                }
                Err(TrySendError::Disconnected(work)) => work,
            },
            Queue::NotStarted | Queue::Inline => work,
        };
        apply(&self.shared, work);
    }

    /// Bytes that redraw the screen, as of everything fed so far, on a
    /// reset terminal.
    pub fn snapshot(&mut self) -> Vec<u8> {
        let mut out = b"\x1bc".to_vec();
        out.extend_from_slice(&self.caught_up(|state| state.parser.screen().state_formatted()));
        out
    }

    /// The screen as of everything fed so far, with what is known of its
    /// parser's state, to emulate further from.
    pub fn screen(&mut self) -> (vt100::Screen, FastForward) {
        self.caught_up(|state| (state.parser.screen().clone(), state.fast_forward.clone()))
    }

    #[cfg(test)]
    pub fn size(&mut self) -> (u16, u16) {
        self.caught_up(|state| state.parser.screen().size())
    }

    /// `f` of the emulator once it has done all work fed before this call.
    /// Counting work, not bytes: a resize handed over after the last bytes
    /// counts too.
    fn caught_up<T>(&mut self, f: impl FnOnce(&State) -> T) -> T {
        self.hand_over();
        let target = self.submitted.load(Ordering::Acquire);
        let (lock, caught_up) = &*self.shared;
        let state = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = caught_up
            .wait_timeout_while(state, CATCH_UP_LIMIT, |s| s.applied < target)
            .unwrap_or_else(|e| e.into_inner());
        f(&state)
    }
}

fn work(rx: Receiver<Work>, shared: Arc<(Mutex<State>, Condvar)>) {
    while let Ok(work) = rx.recv() {
        apply(&shared, work);
    }
}

fn apply(shared: &(Mutex<State>, Condvar), work: Work) {
    let (lock, caught_up) = shared;
    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
    match work {
        Work::Bytes(data) => {
            let State {
                parser, fast_forward, ..
            } = &mut *state;
            fast_forward.process(parser, &data);
        }
        Work::Resize { rows, cols } => state.parser.screen_mut().set_size(rows, cols),
    }
    state.applied += 1;
    drop(state);
    caught_up.notify_all();
}
