//! Persistence benchmark: a real runner with local storage, a client
//! speaking the protocol, and `rsync -a` of the same trees in the same run.
//!
//! `cargo bench -p cloudcode-runner --bench persistence` prints:
//! - a 9-byte save's acknowledgement latency (p50/p99 over `BENCH_SAVES`,
//!   default 50), idle and while a program in a terminal creates
//!   `BENCH_BURST` (50,000) empty files in the workspace;
//! - the time until `BENCH_FILES` (100,000) new small files, made by a
//!   program in a terminal, are durable in storage, against `rsync -a` of
//!   the same tree;
//! - keystroke echo p50/p99 in a terminal meanwhile, split into while the
//!   program makes them and after it, and beside the same program making
//!   the same tree outside the workspace (nothing to persist: the floor the
//!   user's own program sets on this machine);
//! - a recursive `delete` of those files over the protocol, with the echo
//!   meanwhile;
//! - the restore of those files by a new runner (start until it listens),
//!   against `rsync -a` of the storage directory;
//! - with `--features s3` (and `CLOUDCODE_S3S_FS`), a second column: S3
//!   against the tests' S3 server, `BENCH_S3_FILES` (10,000) files until
//!   durable and their restore.
//!
//! `BENCH_RUNNER=path` measures another build of the runner;
//! `BENCH_ONLY=save` runs only the saves, `BENCH_ONLY=bulk` all but them
//! (and the S3 column), `BENCH_ONLY=s3` only the S3 column;
//! `BENCH_NO_CGROUP=1` leaves the runner in the benchmark's own CPU cgroup
//! (see [`SandboxCgroup`]).
//!
//! The program that makes the files is this benchmark's own executable
//! (`persistence make-tree DIR COUNT SIZE`), run in a terminal of the
//! runner as `npm install` would be: in the terminal's session, not in the
//! process of the client that measures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Op, Reply, TermId};
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::token::{Claims, TokenIssuer, unix_now};

const PROJECT: &str = "bench";
const FILES_PER_DIR: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A CPU control group for the runner, as the local backend gives every
/// sandbox one (and Kubernetes every pod): the runner, its shells and their
/// programs then share one run queue, where the storage threads'
/// `SCHED_IDLE` yields to a waking shell at once. A runner left in the root
/// group would have each terminal in an autogroup of its own, against which
/// the idle class counts for nothing: not the way any user meets it.
/// `None` without the rights to make one (`BENCH_NO_CGROUP` asks for none).
struct SandboxCgroup {
    dir: PathBuf,
}

impl SandboxCgroup {
    fn create() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if std::env::var_os("BENCH_NO_CGROUP").is_some() {
            return None;
        }
        let name = format!(
            "cloudcode-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let parent = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/cpu")
        };
        let dir = parent.join(name);
        std::fs::create_dir(&dir).ok().map(|()| Self { dir })
    }

    fn join(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("moving the runner into its cgroup");
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

struct Runner {
    child: Child,
    _cgroup: Option<SandboxCgroup>,
    url: String,
    token: String,
    started: Instant,
    listening_after: Duration,
}

impl Runner {
    fn start(issuer: &TokenIssuer, workspace: &Path, storage: &Path) -> Self {
        let storage_args = vec![
            "--storage".into(),
            "local".into(),
            "--storage-dir".into(),
            storage.display().to_string(),
        ];
        Self::start_with(issuer, workspace, storage_args, Vec::new())
    }

    fn start_with(
        issuer: &TokenIssuer,
        workspace: &Path,
        storage_args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let started = Instant::now();
        // `BENCH_RUNNER`: another build to measure (before and after a change).
        let exe = std::env::var_os("BENCH_RUNNER").unwrap_or_else(|| env!("CARGO_BIN_EXE_cloudcode-runner").into());
        let mut child = Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--project", PROJECT])
            .args(["--token-public-key", &issuer.verifier().public_base64()])
            .arg("--workspace")
            .arg(workspace)
            .args(storage_args)
            .envs(env)
            .args(["--shell", "/bin/bash --norc --noprofile"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the runner");
        let cgroup = SandboxCgroup::create();
        if let Some(cgroup) = &cgroup {
            cgroup.join(child.id());
        }
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let listening_after = started.elapsed();
        let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
        let token = issuer.issue(&Claims {
            project: PROJECT.into(),
            exp: unix_now() + 3600,
        });
        Self {
            child,
            _cgroup: cgroup,
            url: format!("ws://{addr}/v1/ws"),
            token,
            started,
            listening_after,
        }
    }

    async fn client(&self) -> RunnerClient {
        let mut client = RunnerClient::connect(&self.url, &self.token).await.unwrap();
        let _welcome = client.next_incoming().await;
        client
    }

    fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.started;
    }
}

fn p(s: &str) -> WorkspacePath {
    WorkspacePath::parse(s).unwrap()
}

fn percentile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn stats(samples: &[Duration]) -> String {
    format!(
        "p50 {}, p99 {}, max {} (n={})",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.99)),
        ms(samples.iter().max().copied().unwrap_or_default()),
        samples.len()
    )
}

/// `count` files of `size` bytes under `root/dir`, `FILES_PER_DIR` per
/// directory, as a package manager lays them out.
fn make_tree(root: &Path, dir: &str, count: usize, size: usize) {
    let body = vec![b'x'; size];
    for i in 0..count {
        let sub = root.join(dir).join(format!("pkg{}", i / FILES_PER_DIR));
        if i % FILES_PER_DIR == 0 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        std::fs::write(sub.join(format!("file{i}.js")), &body).unwrap();
    }
}

/// The maker's line once it is done: `tree made in <ms> ms`.
const MADE_MARKER: &str = "tree made in ";

/// `persistence make-tree DIR COUNT SIZE`: makes the tree under the current
/// directory and says how long it took; what the terminal runs.
fn make_tree_command(args: &[String]) {
    let [dir, count, size] = args else {
        panic!("usage: make-tree DIR COUNT SIZE");
    };
    let started = Instant::now();
    make_tree(Path::new("."), dir, count.parse().unwrap(), size.parse().unwrap());
    println!("{MADE_MARKER}{} ms", started.elapsed().as_millis());
}

/// Runs the maker in a new terminal of `runner`, in the workspace; the task
/// ends once it is done, with the time it says it took.
fn spawn_maker(runner: &Runner, dir: &str, count: usize, size: usize) -> tokio::task::JoinHandle<Duration> {
    let (url, token) = (runner.url.clone(), runner.token.clone());
    let command = format!(
        "'{}' make-tree {dir} {count} {size}\r",
        std::env::current_exe().unwrap().display()
    );
    tokio::spawn(async move {
        let client = RunnerClient::connect(&url, &token).await.unwrap();
        let term = client.term_open(200, 24, None, None).await.unwrap();
        client.send_input(term, command.as_bytes()).unwrap();
        wait_for_maker(client, term).await
    })
}

async fn wait_for_maker(mut client: RunnerClient, term: TermId) -> Duration {
    let mut seen = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(600), client.next_incoming()).await {
            Ok(Some(Incoming::Frame(Frame::TermOutput { term: t, data, .. }))) if t == term => {
                seen.push_str(&String::from_utf8_lossy(&data));
                if let Some(at) = seen.find(MADE_MARKER)
                    && let Some((ms, _)) = seen[at + MADE_MARKER.len()..].split_once(" ms")
                {
                    return Duration::from_millis(ms.trim().parse().unwrap());
                }
            }
            Ok(Some(_)) => {}
            _ => panic!("the maker did not finish: {seen}"),
        }
    }
}

fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with(".cloudcode-") {
                n += 1;
            }
        }
    }
    n
}

/// One save as durable as storage makes it, straight on the file system.
fn bare_durable_write(root: &Path) -> Duration {
    use std::io::Write;
    let started = Instant::now();
    let tmp = root.join(".main.py.tmp");
    let mut file = std::fs::File::create(&tmp).unwrap();
    file.write_all(b"print(1)\n").unwrap();
    file.sync_all().unwrap();
    std::fs::rename(&tmp, root.join("main.py")).unwrap();
    std::fs::File::open(root).unwrap().sync_all().unwrap();
    started.elapsed()
}

/// `sync(1)`: what the benchmark wrote before is on disk, so the next
/// figure is measured from a quiet disk (a user's program does not start
/// right after 300,000 other files were made).
fn write_back_everything() {
    let status = Command::new("sync").status().expect("sync(1)");
    assert!(status.success());
}

fn rsync(from: &Path, to: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", from.display()))
        .arg(to)
        .status()
        .expect("running rsync");
    assert!(status.success());
    started.elapsed()
}

async fn pending(client: &RunnerClient) -> u64 {
    match client.request(Op::StorageStatus).await {
        Ok(Reply::Storage { status }) => status.pending,
        _ => u64::MAX,
    }
}

/// One keystroke's round trip, and when it was typed.
#[derive(Clone, Copy)]
struct Echo {
    typed: Instant,
    took: Duration,
}

/// Types a key and waits for its echo, over and over, until `stop`;
/// returns the round trips. A second key erases it again (not timed).
async fn echo_loop(mut client: RunnerClient, term: TermId, stop: Arc<AtomicBool>) -> Vec<Echo> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for (key, timed) in [(&b"x"[..], true), (&b"\x7f"[..], false)] {
            let typed = Instant::now();
            client.send_input(term, key).unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(30), client.next_incoming()).await {
                    Ok(Some(Incoming::Frame(Frame::TermOutput { term: t, .. }))) if t == term => break,
                    Ok(Some(_)) => {}
                    _ => panic!("no echo within 30 s"),
                }
            }
            if timed {
                samples.push(Echo {
                    typed,
                    took: typed.elapsed(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

/// The round trips of the keystrokes typed before `at`, and of those after.
fn split_at(samples: &[Echo], at: Instant) -> (Vec<Duration>, Vec<Duration>) {
    let (before, after): (Vec<&Echo>, Vec<&Echo>) = samples.iter().partition(|e| e.typed < at);
    let took = |v: Vec<&Echo>| v.into_iter().map(|e| e.took).collect();
    (took(before), took(after))
}

async fn open_echo_terminal(runner: &Runner) -> (RunnerClient, TermId) {
    let mut client = runner.client().await;
    let term = client.term_open(80, 24, None, None).await.unwrap();
    // Wait for the prompt.
    loop {
        if let Some(Incoming::Frame(Frame::TermOutput { .. })) = client.next_incoming().await {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), client.next_incoming()).await {}
    (client, term)
}

async fn saves(client: &RunnerClient, n: usize, pause: Duration) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        client
            .write_file(&p("main.py"), format!("print({i:02})\n").as_bytes(), None)
            .await
            .unwrap();
        samples.push(started.elapsed());
        tokio::time::sleep(pause).await;
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("make-tree") {
        return make_tree_command(&args[1..]);
    }
    let only = std::env::var("BENCH_ONLY").ok();
    let n_saves = env_usize("BENCH_SAVES", 50);
    let burst = env_usize("BENCH_BURST", 50_000);
    let files = env_usize("BENCH_FILES", 100_000);
    let scratch = tempfile::tempdir().unwrap();
    let dir = &|name: &str| -> PathBuf {
        let d = scratch.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let issuer = TokenIssuer::generate().unwrap();
    println!("persistence benchmark: local storage; rsync -a of the same trees in the same run");
    println!(
        "the runner runs in a CPU cgroup of its own, as a sandbox does: {}",
        if let Some(cgroup) = SandboxCgroup::create() {
            format!("yes ({})", cgroup.dir.display())
        } else {
            "no (BENCH_NO_CGROUP, or no rights to make one): each terminal is an autogroup".into()
        }
    );

    // 1. A save, idle and during a burst of empty files.
    if only.as_deref().is_none_or(|o| o == "save") {
        let (workspace, storage) = (dir("ws1"), dir("st1"));
        let runner = Runner::start(&issuer, &workspace, &storage);
        let client = runner.client().await;
        let idle = saves(&client, n_saves, Duration::from_millis(20)).await;
        println!("save of 9 bytes, idle:                        {}", stats(&idle));
        let burst_started = Instant::now();
        let maker = spawn_maker(&runner, "node_modules", burst, 0);
        let mut busy = Vec::new();
        let mut max_pending = 0;
        while busy.len() < n_saves {
            busy.extend(saves(&client, 1, Duration::from_millis(50)).await);
            if busy.len() % 5 == 0 {
                max_pending = max_pending.max(pending(&client).await);
            }
        }
        let made_in = maker.await.unwrap();
        println!(
            "save of 9 bytes, while {burst} empty files are made: {} (pending up to {max_pending})",
            stats(&busy)
        );
        loop {
            let left = pending(&client).await;
            if left == 0 && count_files(&storage) > burst {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "  the {burst} files: made in {}, durable after {}",
            ms(made_in),
            ms(burst_started.elapsed())
        );
        drop(client);
        runner.stop();
        // The disk's own floor for a durable save under the same burst: write a
        // temporary file, fsync it, rename it over the file, fsync the
        // directory (what the runner and local storage do), with no runner.
        let floor = {
            let (root, done) = (dir("floor"), Arc::new(AtomicBool::new(false)));
            let maker = {
                let (root, done) = (root.clone(), done.clone());
                std::thread::spawn(move || {
                    make_tree(&root, "node_modules", burst, 0);
                    done.store(true, Ordering::Relaxed);
                })
            };
            let mut samples = Vec::new();
            while samples.len() < n_saves {
                samples.push(bare_durable_write(&root));
                std::thread::sleep(Duration::from_millis(50));
            }
            maker.join().unwrap();
            samples
        };
        println!("  bare write+fsync+rename+fsync, same burst: {}", stats(&floor));
    }
    if only.as_deref() == Some("save") {
        return;
    }
    if only.as_deref() == Some("s3") {
        #[cfg(feature = "s3")]
        s3_column(&issuer, dir).await;
        #[cfg(not(feature = "s3"))]
        println!("BENCH_ONLY=s3 measures nothing without --features s3");
        return;
    }

    // 2. Bulk: 100,000 small files until durable, echo meanwhile; rsync of
    // the same tree for reference.
    let reference = dir("reference");
    make_tree(&reference, "bulk", files, 200);
    write_back_everything();
    let rsync_bulk = rsync(&reference, &dir("rsync-copy"));
    let (workspace, storage) = (dir("ws2"), dir("st2"));
    let runner = Runner::start(&issuer, &workspace, &storage);
    let client = runner.client().await;
    let (echo_client, term) = open_echo_terminal(&runner).await;
    let stop = Arc::new(AtomicBool::new(false));
    let echo_idle: Vec<Duration> = {
        let stop2 = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(echo_loop(echo_client, term, stop2.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop2.store(true, Ordering::Relaxed);
        task.await.unwrap().iter().map(|e| e.took).collect()
    };
    println!("keystroke echo, idle:                         {}", stats(&echo_idle));
    // The floor: the same program making the same tree outside the
    // workspace, so nothing is persisted; what a user's own program costs
    // the echo on this machine.
    let (echo_client, term) = open_echo_terminal(&runner).await;
    let floor_stop = Arc::new(AtomicBool::new(false));
    let echo = tokio::spawn(echo_loop(echo_client, term, floor_stop.clone()));
    let outside = dir("outside");
    spawn_maker(&runner, &outside.join("bulk").display().to_string(), files, 200)
        .await
        .unwrap();
    floor_stop.store(true, Ordering::Relaxed);
    let echo_floor: Vec<Duration> = echo.await.unwrap().iter().map(|e| e.took).collect();
    println!(
        "keystroke echo, while they are made outside the workspace (no persistence): {}",
        stats(&echo_floor)
    );
    // Storage's group commit writes back the whole file system: it should
    // not pay for the trees this benchmark made for reference.
    write_back_everything();
    let (echo_client, term) = open_echo_terminal(&runner).await;
    let echo = tokio::spawn(echo_loop(echo_client, term, stop.clone()));
    let started = Instant::now();
    let made_in = spawn_maker(&runner, "bulk", files, 200).await.unwrap();
    let made_at = Instant::now();
    loop {
        if pending(&client).await == 0 && count_files(&storage) >= files {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let durable_in = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let echo_bulk = echo.await.unwrap();
    println!(
        "{files} files of 200 B durable in storage:     {} (made in {}); rsync -a: {} ({:.1}x)",
        ms(durable_in),
        ms(made_in),
        ms(rsync_bulk),
        durable_in.as_secs_f64() / rsync_bulk.as_secs_f64()
    );
    let all: Vec<Duration> = echo_bulk.iter().map(|e| e.took).collect();
    let (while_made, after_made) = split_at(&echo_bulk, made_at);
    println!("keystroke echo, while they are persisted:     {}", stats(&all));
    println!("  while the program makes them:               {}", stats(&while_made));
    println!("  after it, until storage has them all:       {}", stats(&after_made));
    drop(client);

    // 3. A restore of the same tree by a new runner (from a copy of the
    // storage, as another project's sandbox starting on this machine), with
    // the echo meanwhile in the first runner's terminal: a restore runs
    // before its own runner listens, so it is felt in the others.
    let rsync_restore = rsync(&storage, &dir("rsync-restore"));
    let copy = dir("st3");
    rsync(&storage, &copy);
    write_back_everything();
    let (echo_client, term) = open_echo_terminal(&runner).await;
    let restore_stop = Arc::new(AtomicBool::new(false));
    let echo = tokio::spawn(echo_loop(echo_client, term, restore_stop.clone()));
    let workspace = dir("ws3");
    // The echo goes on on the runtime's other worker.
    let restorer = tokio::task::block_in_place(|| Runner::start(&issuer, &workspace, &copy));
    restore_stop.store(true, Ordering::Relaxed);
    let echo_restore: Vec<Duration> = echo.await.unwrap().iter().map(|e| e.took).collect();
    runner.stop();
    let runner = restorer;
    let restored = count_files(&workspace);
    println!(
        "restore of {files} files (start to listening): {} ({restored} files); rsync -a: {} ({:.1}x)",
        ms(runner.listening_after),
        ms(rsync_restore),
        runner.listening_after.as_secs_f64() / rsync_restore.as_secs_f64()
    );
    println!("keystroke echo, in another runner meanwhile:  {}", stats(&echo_restore));

    // 4. A recursive delete of them over the protocol, echo meanwhile.
    let client = runner.client().await;
    let (echo_client, term) = open_echo_terminal(&runner).await;
    let stop = Arc::new(AtomicBool::new(false));
    let echo = tokio::spawn(echo_loop(echo_client, term, stop.clone()));
    let started = Instant::now();
    let deleted = client
        .request(Op::Delete {
            path: p("bulk"),
            recursive: true,
            base_version: None,
        })
        .await;
    let delete_in = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let echo_delete: Vec<Duration> = echo.await.unwrap().iter().map(|e| e.took).collect();
    println!(
        "recursive delete of {files} files, until durable: {} ({})",
        ms(delete_in),
        if deleted.is_ok() {
            "ok".to_owned()
        } else {
            format!("{deleted:?}")
        }
    );
    println!("keystroke echo, during that delete:           {}", stats(&echo_delete));
    drop(client);
    runner.stop();

    #[cfg(feature = "s3")]
    if only.is_none() {
        s3_column(&issuer, dir).await;
    }
}

/// The S3 backend against the tests' S3 server (s3s-fs, `CLOUDCODE_S3S_FS`):
/// `BENCH_S3_FILES` (default 10,000) small files until durable, then their
/// restore by a new runner. Needs `--features s3`.
#[cfg(feature = "s3")]
async fn s3_column(issuer: &TokenIssuer, dir: &dyn Fn(&str) -> PathBuf) {
    use cloudcode_proto::storage::ObjectStore;
    let files = env_usize("BENCH_S3_FILES", 10_000);
    let server = cloudcode_proto::testing::S3Server::start();
    let store = cloudcode_proto::storage::s3::S3Store::connect(server.config("bench"))
        .await
        .unwrap();
    store.ensure_bucket().await.unwrap();
    let prefix = cloudcode_proto::storage::KeyPrefix::parse(&format!("code/{PROJECT}/bulk")).unwrap();
    let workspace = dir("s3-ws1");
    let runner = Runner::start_with(issuer, &workspace, server.runner_args("bench"), server.runner_env());
    let client = runner.client().await;
    let started = Instant::now();
    make_tree(&workspace, "bulk", files, 200);
    let made_in = started.elapsed();
    loop {
        if pending(&client).await == 0 && store.list(&prefix).await.map(|l| l.len()).unwrap_or(0) >= files {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let durable_in = started.elapsed();
    println!(
        "S3 (s3s-fs): {files} files of 200 B durable:   {} (made in {})",
        ms(durable_in),
        ms(made_in)
    );
    drop(client);
    runner.stop();
    let runner = Runner::start_with(issuer, &dir("s3-ws2"), server.runner_args("bench"), server.runner_env());
    println!(
        "S3 (s3s-fs): restore of {files} files:          {}",
        ms(runner.listening_after)
    );
    runner.stop();
}
