//! The folder sync as the TUI runs it (a task with controls, not Ctrl-C),
//! against a real runner and real directories: its state and conflicts
//! arrive as updates, and each resolution the user picks is carried out in
//! the folder and carried to the sandbox, losing nothing the user kept.

mod sync_support;

use std::time::{Duration, Instant};

use cloudcode_tui::sync::conflicts::{Conflict, Resolution};
use cloudcode_tui::sync::reconcile::Mode;
use cloudcode_tui::sync::report::{Control, Phase};
use cloudcode_tui::sync::run::DirectRunner;
use cloudcode_tui::sync::task::{SyncTask, Update, args};
use sync_support::{PATIENCE, PROJECT, Setup, read, snapshot, wait_for, write};
use tokio::sync::mpsc::UnboundedReceiver;

/// What the sync has said so far.
#[derive(Default)]
struct Seen {
    lines: Vec<(String, bool)>,
    phase: Option<Phase>,
    conflicts: Option<Vec<Conflict>>,
    ended: Option<Result<(), String>>,
}

struct Running {
    task: Option<SyncTask>,
    updates: UnboundedReceiver<Update>,
    seen: Seen,
}

impl Running {
    fn start(s: &Setup) -> Running {
        Self::start_in(s, Mode::TwoWaySafe)
    }

    fn start_in(s: &Setup, mode: Mode) -> Running {
        let dialer = DirectRunner {
            url: s.runner.url(),
            token: s.runner.token(),
        };
        let args = args(
            s.local(),
            PROJECT.into(),
            Some(mode),
            Some(s.state.path().to_path_buf()),
        );
        let (task, updates) = SyncTask::spawn(args, dialer);
        Running {
            task: Some(task),
            updates,
            seen: Seen::default(),
        }
    }

    /// Takes updates until `check` holds.
    async fn until(&mut self, what: &str, check: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            let update = tokio::time::timeout(left, self.updates.recv()).await;
            let update = match update {
                Ok(Some(update)) => update,
                Ok(None) => panic!("the sync ended while waiting for {what}: {:?}", self.seen.lines),
                Err(_) => panic!("timed out waiting for {what}: {:?}", self.seen.lines),
            };
            match update {
                Update::Line { text, warn } => {
                    eprintln!("sync| {text}");
                    self.seen.lines.push((text, warn));
                }
                Update::Status(status) => self.seen.phase = Some(status.phase),
                Update::Conflicts(conflicts) => self.seen.conflicts = Some(conflicts),
                Update::Ended(result) => self.seen.ended = Some(result),
            }
        }
    }

    fn send(&self, control: Control) {
        self.task.as_ref().unwrap().send(control);
    }

    async fn stop(&mut self) {
        self.task.take().unwrap().stop(Duration::from_secs(20)).await;
    }
}

fn conflict_for<'a>(seen: &'a Seen, path: &str) -> &'a Conflict {
    seen.conflicts
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.path.as_str() == path))
        .unwrap_or_else(|| panic!("no conflict for {path}: {:?}", seen.conflicts))
}

fn conflicts(seen: &Seen) -> usize {
    seen.conflicts.as_ref().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resolution_is_carried_to_both_sides_and_keep_both_loses_nothing() {
    let s = Setup::new();
    for name in ["a", "b", "c"] {
        write(&s.local(), &format!("{name}.txt"), &format!("base {name}\n"));
    }
    assert_eq!(s.once(&[]).code, 0);
    // Both sides change every file while no sync runs.
    for name in ["a", "b", "c"] {
        write(&s.local(), &format!("{name}.txt"), &format!("mine {name}\n"));
        write(&s.remote(), &format!("{name}.txt"), &format!("theirs {name}\n"));
    }

    let mut sync = Running::start(&s);
    sync.until("three conflicts while watching", |seen| {
        seen.phase == Some(Phase::Watching) && conflicts(seen) == 3
    })
    .await;
    let a = conflict_for(&sync.seen, "a.txt").clone();
    assert!(a.copy.as_str().starts_with("a.conflict-remote-"), "{a:?}");
    assert!(
        a.diff.iter().any(|l| l.text == "mine a") && a.diff.iter().any(|l| l.text == "theirs a"),
        "{:?}",
        a.diff
    );
    assert!(
        sync.seen
            .lines
            .iter()
            .any(|(l, warn)| *warn && l.contains("conflict: a.txt")),
        "a conflict is a warning: {:?}",
        sync.seen.lines
    );

    // Changed since it was shown: refused, nothing deleted.
    let b = conflict_for(&sync.seen, "b.txt").clone();
    write(&s.local(), b.copy.as_str(), "theirs b, edited since\n");
    sync.send(Control::Resolve {
        conflict: Box::new(b.clone()),
        resolution: Resolution::KeepLocal,
    });
    sync.until("the refusal", |seen| {
        seen.lines.iter().any(|(l, warn)| *warn && l.contains("not resolved"))
    })
    .await;
    assert_eq!(
        read(&s.local(), b.copy.as_str()).as_deref(),
        Some("theirs b, edited since\n")
    );
    sync.until("the edited copy shown anew", |seen| {
        seen.conflicts
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.path.as_str() == "b.txt"))
            .is_some_and(|c| c.in_copy != b.in_copy)
    })
    .await;
    let b = conflict_for(&sync.seen, "b.txt").clone();
    let c = conflict_for(&sync.seen, "c.txt").clone();

    for (conflict, resolution) in [
        (a, Resolution::KeepLocal),
        (b, Resolution::KeepRemote),
        (c, Resolution::KeepBoth),
    ] {
        sync.send(Control::Resolve {
            conflict: Box::new(conflict),
            resolution,
        });
    }
    sync.until("no conflicts left", |seen| conflicts(seen) == 0).await;
    let expected = [
        ("a.txt", "mine a\n"),
        ("b.txt", "theirs b, edited since\n"),
        ("c.from-sandbox.txt", "theirs c\n"),
        ("c.txt", "mine c\n"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(p, c)| (p.to_string(), c.to_string())).collect();
    wait_for("the sandbox to follow the folder", || snapshot(&s.remote()) == expected);
    assert_eq!(snapshot(&s.local()), expected);

    sync.stop().await;
    // Stopped cleanly: its state was written, so the next start agrees at
    // once and finds nothing to do.
    let again = s.once(&[]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert!(!again.stdout.contains("synced:"), "{}", again.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_deletion_waits_for_the_user_instead_of_ending_the_sync() {
    let s = Setup::new();
    for i in 0..60 {
        write(&s.local(), &format!("f{i}.txt"), "x");
    }
    assert_eq!(s.once(&[]).code, 0);
    for i in 0..55 {
        std::fs::remove_file(s.local().join(format!("f{i}.txt"))).unwrap();
    }
    let mut sync = Running::start(&s);
    sync.until("the round held", |seen| matches!(seen.phase, Some(Phase::Held { .. })))
        .await;
    let Some(Phase::Held { why }) = &sync.seen.phase else {
        unreachable!()
    };
    assert!(why.contains("delete 55 of 60 files in the sandbox"), "{why}");
    assert!(s.remote().join("f0.txt").exists(), "nothing deleted while held");
    sync.send(Control::AllowDeletions);
    sync.until("watching", |seen| seen.phase == Some(Phase::Watching)).await;
    wait_for("the deletions in the sandbox", || snapshot(&s.remote()).len() == 5);
    sync.stop().await;
    sync.until("the end", |seen| seen.ended.is_some()).await;
    assert_eq!(sync.seen.ended, Some(Ok(())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_chosen_in_the_tui_is_the_one_synced() {
    let s = Setup::new();
    write(&s.local(), "app.py", "mine\n");
    write(&s.remote(), "theirs.txt", "only in the sandbox\n");

    // One-way-safe: the folder goes up, nothing comes down.
    let mut sync = Running::start_in(&s, Mode::OneWaySafe);
    sync.until("watching", |seen| seen.phase == Some(Phase::Watching)).await;
    assert_eq!(read(&s.remote(), "app.py").as_deref(), Some("mine\n"));
    assert!(
        !s.local().join("theirs.txt").exists(),
        "one-way never writes the folder"
    );
    sync.stop().await;
    // What the sandbox changed meanwhile is left as it is, both ways.
    write(&s.remote(), "app.py", "changed in the sandbox\n");
    let mut sync = Running::start_in(&s, Mode::OneWaySafe);
    sync.until("watching", |seen| seen.phase == Some(Phase::Watching)).await;
    assert_eq!(read(&s.local(), "app.py").as_deref(), Some("mine\n"));
    assert_eq!(read(&s.remote(), "app.py").as_deref(), Some("changed in the sandbox\n"));
    assert!(!s.local().join("theirs.txt").exists());
    assert!(s.remote().join("theirs.txt").exists());
    // Saves go up while watching.
    write(&s.local(), "second.py", "2\n");
    wait_for("a save in the sandbox", || {
        read(&s.remote(), "second.py").as_deref() == Some("2\n")
    });
    sync.stop().await;

    // One-way-replica: the sandbox becomes the folder's copy.
    let mut sync = Running::start_in(&s, Mode::OneWayReplica);
    sync.until("watching", |seen| seen.phase == Some(Phase::Watching)).await;
    let expected: Vec<(String, String)> = [("app.py", "mine\n"), ("second.py", "2\n")]
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    assert_eq!(snapshot(&s.remote()), expected);
    assert_eq!(snapshot(&s.local()), expected);
    sync.stop().await;
}
