//! Folder sync figures against a real runner on this machine:
//!
//! - first sync of 10,000 files / 100 MB, beside `rsync -a` of the same
//!   tree into a local directory in the same run, and meanwhile how long
//!   another client's saves (an editor's, every 20 ms) take to be answered
//!   and keystroke echo in a terminal of the sandbox;
//! - the second run on the unchanged folder;
//! - save to readable in the sandbox, p50 / p99 over 200 saves of a small
//!   file while watching;
//! - a directory renamed in mutagen#100's tree (41,875 files in 3,736
//!   directories), until the sandbox shows it;
//! - CPU while idle watching 100,000 files, and the inotify watches used.
//!
//! "Visible in the sandbox" is taken from an inotify watch on the sandbox's
//! own directory (the runner's workspace, as its processes see it): each
//! event there is checked at once, so the figure is when the runner's
//! rename made it visible, not the next tick of a poll.
//!
//! `cargo build --release -p cloudcode-runner && cargo bench -p cloudcode-tui --bench sync`
//! (the runner binary is taken from beside the TUI's). `BENCH_ONLY=first,saves,rename,idle`
//! runs some of it; `BENCH_RENAME_FILES` and `BENCH_IDLE_FILES` change the
//! trees' sizes. Each figure is printed with the load average: the machine
//! may be shared.

#[path = "../tests/sync_support/mod.rs"]
mod sync_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::path::WorkspacePath;
use notify::Watcher;
use sync_support::{PATIENCE, Setup, read, write};

const FILES: usize = 10_000;
const FILE_BYTES: usize = 10_000;
const SAVES: usize = 200;

fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    if wanted("first") || wanted("saves") {
        first_sync_and_saves(wanted("first"), wanted("saves"));
    }
    if wanted("rename") {
        rename_in_a_large_tree();
    }
    if wanted("idle") {
        idle_watching_a_large_tree();
    }
}

/// The load average over the last minute, and the two others, as `uptime`
/// says them.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let parts: Vec<&str> = avg.split_whitespace().take(3).collect();
    format!("load average {}", parts.join(", "))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Watches one directory of the sandbox; [`Sandbox::wait`] returns as soon
/// as an event there makes `check` hold.
struct Sandbox {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
}

impl Sandbox {
    fn watch(dir: &Path) -> Sandbox {
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        })
        .expect("an inotify watcher");
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .expect("watching the sandbox's directory");
        Sandbox {
            _watcher: watcher,
            events,
        }
    }

    /// Forgets the events so far.
    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    fn wait(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(self.events.recv_timeout(left).is_ok(), "timed out waiting for {what}");
        }
    }
}

/// One first sync beside rsync of the same tree, on a setup of its own.
struct FirstSync {
    sync: Duration,
    rsync: Duration,
    /// rsync's run, then `sync(1)` until its copy is on disk.
    rsync_durable: Duration,
    sync_cpu: f64,
    runner_cpu: f64,
    rsync_cpu: f64,
    second: Duration,
    editor_saves: String,
    echo: String,
}

impl FirstSync {
    /// Returns the setup and rsync's copy with the figures: kept until every
    /// round is done, since deleting them would slow the next round's
    /// creates (see the README on `recently_deleted`).
    fn run() -> (Setup, tempfile::TempDir, FirstSync) {
        let s = Setup::new();
        let local = s.local();
        let payload: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
        for i in 0..FILES {
            let path = local.join(format!("tree/{}/{}/{i}.bin", i % 37, i % 11));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut content = payload.clone();
            content[..8].copy_from_slice(&(i as u64).to_le_bytes());
            std::fs::write(path, content).unwrap();
        }
        // The editor's file, saved by another client during the first sync.
        std::fs::write(local.join(".cloudcodeignore"), "/editor.py\n").unwrap();
        // A user's folder was written long before they sync it: its pages
        // are on disk, not waiting to be, and no sync should pay for
        // writing back the bench's own trees (its syncs of storage write
        // back the whole file system).
        write_back_everything();

        let rsync_dest = tempfile::tempdir().unwrap();
        let rsync_cpu = children_cpu();
        let started = Instant::now();
        let status = std::process::Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", local.display()))
            .arg(rsync_dest.path())
            .status()
            .expect("rsync is needed for the comparison");
        assert!(status.success());
        let rsync = started.elapsed();
        let rsync_cpu = children_cpu() - rsync_cpu;
        // The sync's answer means durable in storage; rsync's does not. The
        // same copy made durable, as a peer that promises as much.
        write_back_everything();
        let rsync_durable = started.elapsed();

        let typist = Typist::start(&s);
        let started = Instant::now();
        let cpu_before = (children_cpu(), cpu_ticks(s.runner.pid()));
        let editor = Editor::start(&s);
        let first_run = s.once(&[]);
        let sync = started.elapsed();
        let editor_saves = editor.stop();
        let echo = typist.stop();
        let ticks = clock_ticks();
        let sync_cpu = children_cpu() - cpu_before.0;
        let runner_cpu = (cpu_ticks(s.runner.pid()) - cpu_before.1) as f64 / ticks;
        assert_eq!(first_run.code, 0, "{}", first_run.stderr);
        let started = Instant::now();
        let second = s.once(&[]);
        let second_time = started.elapsed();
        assert_eq!(second.code, 0);
        let run = FirstSync {
            sync,
            rsync,
            rsync_durable,
            sync_cpu,
            runner_cpu,
            rsync_cpu,
            second: second_time,
            editor_saves,
            echo,
        };
        (s, rsync_dest, run)
    }

    fn ratio(&self) -> f64 {
        self.sync.as_secs_f64() / self.rsync.as_secs_f64()
    }
}

/// The first sync is measured `BENCH_FIRST_ROUNDS` times (3 unless set),
/// each beside its own rsync, on trees of its own: one pair alone is at
/// the mercy of a moment's noise on a shared two-core machine. Nothing is
/// deleted until the last round, so no round creates files where many
/// were just deleted.
fn first_sync_and_saves(first: bool, saves: bool) {
    let rounds = if first {
        env_usize("BENCH_FIRST_ROUNDS", 3).max(1)
    } else {
        1
    };
    println!("tree: {FILES} files, {} MB", FILES * FILE_BYTES / 1_000_000);
    let mut runs = Vec::with_capacity(rounds);
    let mut kept = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (s, rsync_copy, run) = FirstSync::run();
        if first {
            println!(
                "first sync, round {round}: {:.2} s (rsync -a of the same tree: {:.2} s, {:.1}x; then made durable by sync(1), as the sync's answer is: {:.2} s, {:.1}x; \
                 CPU: the sync {:.2} s, the runner {:.2} s, rsync {:.2} s); second run, unchanged: {:.3} s ({})",
                run.sync.as_secs_f64(),
                run.rsync.as_secs_f64(),
                run.ratio(),
                run.rsync_durable.as_secs_f64(),
                run.sync.as_secs_f64() / run.rsync_durable.as_secs_f64(),
                run.sync_cpu,
                run.runner_cpu,
                run.rsync_cpu,
                run.second.as_secs_f64(),
                load()
            );
            println!(
                "  another client's saves meanwhile, until answered: {}",
                run.editor_saves
            );
            println!("  keystroke echo in a terminal of the sandbox meanwhile: {}", run.echo);
        }
        runs.push(run);
        kept.push((s, rsync_copy));
    }
    if first && rounds > 1 {
        let best_sync = runs.iter().map(|r| r.sync).min().unwrap_or_default();
        let best_rsync = runs.iter().map(|r| r.rsync).min().unwrap_or_default();
        let mut ratios: Vec<f64> = runs.iter().map(FirstSync::ratio).collect();
        ratios.sort_by(f64::total_cmp);
        let best_durable = runs.iter().map(|r| r.rsync_durable).min().unwrap_or_default();
        println!(
            "first sync over {rounds} rounds: best {:.2} s against rsync's best {:.2} s, {:.1}x; ratios {}; \
             against rsync's best made durable {:.2} s, {:.1}x",
            best_sync.as_secs_f64(),
            best_rsync.as_secs_f64(),
            best_sync.as_secs_f64() / best_rsync.as_secs_f64(),
            ratios.iter().map(|r| format!("{r:.1}x")).collect::<Vec<_>>().join(", "),
            best_durable.as_secs_f64(),
            best_sync.as_secs_f64() / best_durable.as_secs_f64(),
        );
    }
    let Some((s, _)) = kept.pop() else { return };
    drop(kept);
    let local = s.local();
    if !saves {
        return;
    }

    let watching = s.watch(&[]);
    let remote = s.remote();
    let sandbox = Sandbox::watch(&remote);
    let mut latencies = Vec::with_capacity(SAVES);
    for i in 0..SAVES {
        let content = format!("save {i}\n");
        sandbox.drain();
        let started = Instant::now();
        // An editor's atomic save.
        write(&local, ".note.txt.tmp", &content);
        std::fs::rename(local.join(".note.txt.tmp"), local.join("note.txt")).unwrap();
        sandbox.wait("the save in the sandbox", || {
            read(&remote, "note.txt").as_deref() == Some(&content)
        });
        latencies.push(started.elapsed());
        // A person's saves are apart; the sync's answers settle meanwhile.
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "save to readable in the sandbox over {SAVES} saves: {} ({})",
        percentiles(latencies).unwrap_or_default(),
        load()
    );
    drop(watching);
}

/// mutagen#100's tree: 41,875 files in 3,736 directories; one directory
/// renamed, until the sandbox shows it.
fn rename_in_a_large_tree() {
    let files = env_usize("BENCH_RENAME_FILES", 41_875);
    let dirs = (files * 3_736 / 41_875).max(1);
    let s = Setup::new();
    let local = s.local();
    for i in 0..files {
        let d = i % dirs;
        write(&local, &format!("t/{}/{d}/{i}.txt", d % 61), &format!("{i}"));
    }
    let started = Instant::now();
    let first = s.once(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let first_time = started.elapsed();
    let watching = s.watch(&[]);
    let remote = s.remote();
    let mut times = Vec::new();
    for round in 0..5 {
        let from = local.join(format!("t/{round}/{round}"));
        let to = local.join(format!("t/{round}/renamed-{round}"));
        let moved: Vec<_> = std::fs::read_dir(&from)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let sandbox = Sandbox::watch(&remote.join(format!("t/{round}")));
        let started = Instant::now();
        std::fs::rename(&from, &to).unwrap();
        let target = remote.join(format!("t/{round}/renamed-{round}"));
        sandbox.wait("the renamed directory in the sandbox", || {
            moved.iter().all(|name| target.join(name).exists()) && !remote.join(format!("t/{round}/{round}")).exists()
        });
        times.push(started.elapsed());
    }
    println!(
        "{files} files in {dirs} directories: first sync {:.1} s; a directory renamed, visible in the sandbox, 5 in a row: {} ms ({})",
        first_time.as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" / "),
        load()
    );
    drop(watching);
}

/// 100,000 files in 4,000 directories, synced, then nothing changes: the
/// sync's CPU and the runner's over 10 s, and the watches the sync holds.
fn idle_watching_a_large_tree() {
    let files = env_usize("BENCH_IDLE_FILES", 100_000);
    let dirs = (files / 25).max(1);
    let s = Setup::new();
    let local = s.local();
    for i in 0..files {
        let d = i % dirs;
        write(&local, &format!("n/{}/{d}/{i}.js", d % 97), "module.exports = 1;\n");
    }
    let started = Instant::now();
    let first = s.once(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let first_time = started.elapsed();
    let watching = s.watch(&[]);
    // The first look after the watches start, then quiet.
    std::thread::sleep(Duration::from_secs(3));
    let (sync_pid, runner_pid) = (watching.pid(), s.runner.pid());
    let before = (cpu_ticks(sync_pid), cpu_ticks(runner_pid));
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let used = (cpu_ticks(sync_pid) - before.0, cpu_ticks(runner_pid) - before.1);
    let ticks = clock_ticks();
    let percent = |t: u64| t as f64 / ticks / idle.as_secs_f64() * 100.0;
    let entries = files + dirs + 97 + 1;
    println!(
        "idle watching {entries} entries ({files} files; first sync {:.1} s): the sync {:.2}% of a core over {} s, \
         the runner {:.2}%; {} inotify watches ({})",
        first_time.as_secs_f64(),
        percent(used.0),
        idle.as_secs(),
        percent(used.1),
        inotify_watches(sync_pid),
        load()
    );
    drop(watching);
}

/// "p50 …, p99 …, max … ms" of `took`; `None` when nothing was timed.
fn percentiles(mut took: Vec<Duration>) -> Option<String> {
    took.sort();
    let last = took.len().checked_sub(1)?;
    let ms = |p: f64| took[((took.len() as f64 * p) as usize).min(last)].as_secs_f64() * 1000.0;
    Some(format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    ))
}

/// `sync(1)`: everything dirty written back, so what follows is measured
/// from a quiet disk.
fn write_back_everything() {
    let status = std::process::Command::new("sync").status().expect("sync(1)");
    assert!(status.success());
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// CPU seconds (user and system) of this process's children that ended.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn inotify_watches(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .map(|fd| {
            std::fs::read_to_string(fd.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// Another client (the TUI's editor, the browser's) saving one file every
/// 20 ms, over a connection of its own, as a user editing while a first
/// sync runs; each save timed until the runner answers (durable).
struct Editor {
    stop: Arc<AtomicBool>,
    saving: std::thread::JoinHandle<Vec<Duration>>,
}

impl Editor {
    fn start(s: &Setup) -> Editor {
        let (url, token) = (s.runner.url(), s.runner.token());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let saving = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let client = RunnerClient::connect(&url, &token)
                    .await
                    .expect("connecting the editor");
                let path = WorkspacePath::parse("editor.py").expect("a path");
                let mut took = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    let content = format!("print({})\n", took.len());
                    let started = Instant::now();
                    client
                        .write_file(&path, content.as_bytes(), None)
                        .await
                        .expect("a save");
                    took.push(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                took
            })
        });
        Editor { stop, saving }
    }

    fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let took = self.saving.join().expect("the editor's thread");
        let n = took.len();
        percentiles(took).map_or_else(|| "none made".into(), |p| format!("{p} over {n} saves"))
    }
}

/// A user typing in a terminal of the sandbox while the first sync runs,
/// over a connection of its own: each key timed until its echo is back.
struct Typist {
    stop: Arc<AtomicBool>,
    typing: std::thread::JoinHandle<Vec<Duration>>,
}

impl Typist {
    /// Returns once the terminal's shell has shown its prompt and fallen
    /// quiet, so the first sync is not timed with the shell starting.
    fn start(s: &Setup) -> Typist {
        let (url, token) = (s.runner.url(), s.runner.token());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (ready_tx, ready) = mpsc::channel();
        let typing = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut client = RunnerClient::connect(&url, &token)
                    .await
                    .expect("connecting the terminal");
                let term = client.term_open(80, 24, None, None).await.expect("a terminal");
                // The prompt, then quiet: anything the shell still prints
                // would be taken for an echo.
                let quiet = Duration::from_millis(200);
                let mut prompted = false;
                loop {
                    match tokio::time::timeout(quiet, client.next_incoming()).await {
                        Ok(Some(Incoming::Frame(Frame::TermOutput { .. }))) => prompted = true,
                        Ok(Some(_)) => {}
                        Ok(None) => panic!("the runner closed the terminal's connection"),
                        Err(_) if prompted => break,
                        Err(_) => {}
                    }
                }
                let _ = ready_tx.send(());
                let mut took = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    // A key, timed until its echo; then one erasing it.
                    for (key, timed) in [(&b"x"[..], true), (&b"\x7f"[..], false)] {
                        let typed = Instant::now();
                        client.send_input(term, key).expect("typing");
                        loop {
                            match tokio::time::timeout(PATIENCE, client.next_incoming()).await {
                                Ok(Some(Incoming::Frame(Frame::TermOutput { term: t, .. }))) if t == term => break,
                                Ok(Some(_)) => {}
                                _ => panic!("no echo within {PATIENCE:?}"),
                            }
                        }
                        if timed {
                            took.push(typed.elapsed());
                        }
                    }
                    // A person types apart.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                took
            })
        });
        ready.recv().expect("the terminal's prompt");
        Typist { stop, typing }
    }

    fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let took = self.typing.join().expect("the terminal's thread");
        let n = took.len();
        percentiles(took).map_or_else(|| "no key typed".into(), |p| format!("{p} over {n} keys"))
    }
}
