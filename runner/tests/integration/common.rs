//! Test harness: starts the real `cloudcode-runner` binary on a free port
//! with a fresh workspace and storage, and talks to it over a real
//! WebSocket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Event, Op, Reply, TermId};
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::token::{Claims, TokenIssuer, unix_now};

pub const PROJECT: &str = "alpha";
/// Fail-safe for waits; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct TestRunner {
    pub child: Child,
    pub addr: String,
    pub issuer: TokenIssuer,
    pub workspace: PathBuf,
    pub storage: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

pub struct Options {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Reuse storage (and optionally a workspace) from an earlier runner.
    pub storage: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    pub issuer: Option<TokenIssuer>,
    pub local_storage: bool,
    /// The address to listen on (a restarted runner's own); a free port
    /// when unset.
    pub listen: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            storage: None,
            workspace: None,
            issuer: None,
            local_storage: true,
            listen: None,
        }
    }
}

pub fn p(s: &str) -> WorkspacePath {
    WorkspacePath::parse(s).unwrap()
}

impl TestRunner {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        let mut dirs = Vec::new();
        let mut dir_or = |given: Option<PathBuf>| {
            given.unwrap_or_else(|| {
                let d = tempfile::tempdir().unwrap();
                let path = d.path().to_path_buf();
                dirs.push(d);
                path
            })
        };
        let workspace = dir_or(options.workspace);
        let storage = dir_or(options.storage);
        let issuer = options.issuer.unwrap_or_else(|| TokenIssuer::generate().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudcode-runner"));
        let listen = options.listen.as_deref().unwrap_or("127.0.0.1:0");
        cmd.args(["--listen", listen, "--project", PROJECT])
            .args(["--token-public-key", &issuer.verifier().public_base64()])
            .arg("--workspace")
            .arg(&workspace)
            .args(["--shell", "/bin/bash --norc --noprofile"]);
        if !options.args.iter().any(|a| a == "--sync-debounce-ms") {
            cmd.args(["--sync-debounce-ms", "20"]);
        }
        if options.local_storage {
            cmd.args(["--storage", "local", "--storage-dir"]).arg(&storage);
        }
        cmd.args(&options.args)
            .envs(options.env)
            .env("RUST_LOG", "cloudcode_runner=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("starting cloudcode-runner");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("cloudcode-runner listening on ")
            .unwrap_or_else(|| panic!("runner did not start: {line:?}"))
            .to_owned();
        Self {
            child,
            addr,
            issuer,
            workspace,
            storage,
            _dirs: dirs,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn token(&self) -> String {
        self.issuer.issue(&Claims {
            project: PROJECT.into(),
            exp: unix_now() + 600,
        })
    }

    /// A connected client, past the welcome message.
    pub async fn client(&self) -> RunnerClient {
        let mut client = RunnerClient::connect(&self.url(), &self.token()).await.unwrap();
        match next_incoming(&mut client).await {
            Incoming::Event(Event::Welcome { project, .. }) => assert_eq!(project, PROJECT),
            other => panic!("expected welcome, got {other:?}"),
        }
        client
    }

    pub fn stored(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.storage.join("code").join(PROJECT).join(path)).ok()
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "runner did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for TestRunner {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// An argument for `sleep` that no other test or earlier run shares, to
/// find exactly that process in /proc.
pub fn unique_sleep_arg() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("9{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed) + 1)
}

pub use cloudcode_proto::testing::process_running;

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub async fn next_incoming(client: &mut RunnerClient) -> Incoming {
    tokio::time::timeout(PATIENCE, client.next_incoming())
        .await
        .expect("timed out waiting for the runner")
        .expect("connection gone")
}

/// Polls `check` until it holds.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn open_terminal(client: &RunnerClient) -> TermId {
    match client
        .request(Op::TermOpen {
            cols: 120,
            rows: 40,
            command: None,
            flow_window: None,
            purpose: None,
        })
        .await
        .unwrap()
    {
        Reply::TermOpened { term } => term,
        other => panic!("{other:?}"),
    }
}

/// Terminal output as it arrives, with the next expected sequence number.
#[derive(Default)]
pub struct Screen {
    pub bytes: Vec<u8>,
    pub next_seq: u64,
    pub snapshots: usize,
    pub exited: Option<Option<u32>>,
}

impl Screen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The last bytes only: checking a marker must not rescan megabytes.
    pub fn tail_text(&self) -> String {
        let from = self.bytes.len().saturating_sub(128 * 1024);
        String::from_utf8_lossy(&self.bytes[from..]).into_owned()
    }
}

/// Reads `term`'s output into `screen` until `done` holds on it.
pub async fn read_until(client: &mut RunnerClient, term: TermId, screen: &mut Screen, done: impl Fn(&Screen) -> bool) {
    while !done(screen) {
        let incoming = tokio::time::timeout(PATIENCE, client.next_incoming()).await;
        let Ok(Some(incoming)) = incoming else {
            panic!(
                "timed out waiting for terminal output; screen so far:\n{}",
                screen.tail_text()
            );
        };
        match incoming {
            Incoming::Frame(Frame::TermOutput { term: t, seq, data }) if t == term => {
                assert_eq!(seq, screen.next_seq, "gap or overlap in terminal output");
                screen.next_seq = seq + data.len() as u64;
                screen.bytes.extend_from_slice(&data);
            }
            Incoming::Frame(Frame::TermSnapshot { term: t, seq, data }) if t == term => {
                screen.snapshots += 1;
                screen.next_seq = seq;
                screen.bytes.extend_from_slice(&data);
            }
            Incoming::Event(Event::TermExited { term: t, code }) if t == term => screen.exited = Some(code),
            Incoming::Closed(frame) => panic!("connection closed: {frame:?}"),
            _ => {}
        }
    }
}

pub async fn run_in_terminal(
    client: &mut RunnerClient,
    term: TermId,
    screen: &mut Screen,
    command: &str,
    marker: &str,
) {
    client
        .send_input(term, format!("{command}; echo {marker}-$((40+2))\r").as_bytes())
        .unwrap();
    let needle = format!("{marker}-42");
    read_until(client, term, screen, |s| s.tail_text().contains(&needle)).await;
}

pub fn list_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
