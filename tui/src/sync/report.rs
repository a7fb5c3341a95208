//! How a running sync talks to whoever runs it: lines, its state and its
//! conflicts out through [`Report`]; [`Control`]s in. The command line
//! prints the lines; the TUI shows the state in its status bar and the
//! conflicts in a view, and sends the user's resolutions back.

use std::io::Write;

use super::conflicts::{Conflict, Resolution};
use super::reconcile::Mode;

/// Where the sync is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reading the folder and the sandbox's manifest.
    Starting,
    /// The first reconcile is being carried out.
    Reconciling,
    /// Keeping both sides equal: changes are carried as they come.
    Watching,
    /// A round would delete a lot, or empty a side: nothing is done until
    /// the user allows it ([`Control::AllowDeletions`]).
    Held {
        why: String,
    },
    Reconnecting,
    /// Ended (the user stopped it, or it failed: the last line says why).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The mode the sync runs in (`--mode`, else the folder's last one).
    pub mode: Mode,
    pub phase: Phase,
    /// Changed paths noticed and not yet carried over.
    pub pending: usize,
    /// inotify could not watch the folder: it is polled.
    pub polling: bool,
}

/// What a sync can be told while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Resolve a conflict as shown; refused when either file changed since.
    Resolve {
        conflict: Box<Conflict>,
        resolution: Resolution,
    },
    /// Carry out the held round's deletions (once).
    AllowDeletions,
    /// Write the agreed state and end.
    Stop,
}

/// Where the sync's output goes: standard output, the TUI, or a test.
pub trait Report: Send {
    fn line(&mut self, text: &str);
    /// A line the user must not miss (a conflict, an error); a line too.
    fn warn(&mut self, text: &str) {
        self.line(text)
    }
    /// The state changed.
    fn status(&mut self, _status: &Status) {}
    /// The conflicts left for the user, whenever they change.
    fn conflicts(&mut self, _conflicts: &[Conflict]) {}
    /// Whether progress bars and questions may use the terminal: not under
    /// a TUI, which owns it.
    fn owns_terminal(&self) -> bool {
        true
    }
}

pub struct Stdout;

impl Report for Stdout {
    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}
