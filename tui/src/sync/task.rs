//! The folder sync run as a task beside the TUI (as gitui's asyncgit keeps
//! I/O off its UI loop): its lines, state and conflicts arrive as
//! [`Update`]s, and the user's resolutions go in as [`Control`]s. The
//! engine is the command line's, run with controls instead of Ctrl-C.

use std::path::PathBuf;

use tokio::sync::mpsc;

use super::conflicts::Conflict;
use super::reconcile::Mode;
use super::report::{Control, Report, Status};
use super::run::{SyncArgs, run_with};
use crate::remote::Dialer;

#[derive(Debug)]
pub enum Update {
    Line {
        text: String,
        warn: bool,
    },
    Status(Status),
    Conflicts(Vec<Conflict>),
    /// The sync ended: stopped, or failed with this message.
    Ended(Result<(), String>),
}

/// The settings the TUI syncs with: the command line's defaults in the
/// mode the user chose (`None`: the folder's last one).
pub fn args(dir: PathBuf, project: String, mode: Option<Mode>, state_dir: Option<PathBuf>) -> SyncArgs {
    SyncArgs {
        dir,
        project,
        mode,
        once: false,
        dry_run: false,
        max_deletes: 50,
        allow_deletes: false,
        poll: false,
        runner_url: None,
        runner_token: None,
        state_dir,
    }
}

pub struct SyncTask {
    controls: mpsc::UnboundedSender<Control>,
    join: tokio::task::JoinHandle<()>,
}

impl SyncTask {
    /// Starts the sync; its updates arrive on the returned receiver, the
    /// last one [`Update::Ended`].
    pub fn spawn(args: SyncArgs, dialer: impl Dialer) -> (SyncTask, mpsc::UnboundedReceiver<Update>) {
        let (controls, controls_rx) = mpsc::unbounded_channel();
        let (updates, updates_rx) = mpsc::unbounded_channel();
        let join = tokio::spawn(async move {
            let mut report = Channel(updates.clone());
            let result = run_with(args, &dialer, &mut report, Some(controls_rx)).await;
            let _ = updates.send(Update::Ended(result.map(drop).map_err(|e| format!("{e:#}"))));
        });
        (SyncTask { controls, join }, updates_rx)
    }

    pub fn send(&self, control: Control) {
        // Refused only once the sync has ended, which it has said.
        let _ = self.controls.send(control);
    }

    /// Asks the sync to write its state and end, and waits for it up to
    /// `patience`; past that it is ended where it is (its state then is
    /// the last one written: nothing both sides hold is lost, it is
    /// agreed again on the next start).
    pub async fn stop(self, patience: std::time::Duration) {
        self.send(Control::Stop);
        let abort = self.join.abort_handle();
        if tokio::time::timeout(patience, self.join).await.is_err() {
            abort.abort();
        }
    }
}

struct Channel(mpsc::UnboundedSender<Update>);

impl Report for Channel {
    fn line(&mut self, text: &str) {
        let _ = self.0.send(Update::Line {
            text: text.to_owned(),
            warn: false,
        });
    }

    fn warn(&mut self, text: &str) {
        let _ = self.0.send(Update::Line {
            text: text.to_owned(),
            warn: true,
        });
    }

    fn status(&mut self, status: &Status) {
        let _ = self.0.send(Update::Status(status.clone()));
    }

    fn conflicts(&mut self, conflicts: &[Conflict]) {
        let _ = self.0.send(Update::Conflicts(conflicts.to_vec()));
    }

    fn owns_terminal(&self) -> bool {
        false
    }
}
