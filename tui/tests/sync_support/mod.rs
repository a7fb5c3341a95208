//! Support for the folder-sync tests: a real `cloudcode-runner` on a free
//! port with its own workspace and storage, and the real `cloudcode-tui
//! sync` binary pointed at it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudcode_proto::token::{Claims, TokenIssuer, unix_now};

pub const PROJECT: &str = "alpha";
/// Fail-safe for waits; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_cloudcode-tui")).with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: `cargo build -p cloudcode-runner` first (the README's test command does)",
        path.display()
    );
    path
}

pub struct Runner {
    child: Child,
    pub addr: String,
    issuer: TokenIssuer,
    pub workspace: PathBuf,
    storage: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Runner {
    pub fn start() -> Self {
        let workspace = tempfile::tempdir().unwrap();
        let storage = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::generate().unwrap();
        let (child, addr) = Self::spawn(&issuer, workspace.path(), storage.path(), "127.0.0.1:0");
        Self {
            child,
            addr,
            issuer,
            workspace: workspace.path().canonicalize().unwrap(),
            storage: storage.path().to_path_buf(),
            _dirs: vec![workspace, storage],
        }
    }

    /// The runner process ends (the sandbox restarts, the network drops)
    /// and a new one serves the same workspace on the same address.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn start_again(&mut self) {
        let (child, addr) = Self::spawn(&self.issuer, &self.workspace, &self.storage, &self.addr);
        assert_eq!(addr, self.addr);
        self.child = child;
    }

    fn spawn(issuer: &TokenIssuer, workspace: &Path, storage: &Path, listen: &str) -> (Child, String) {
        let mut child = Command::new(binary("cloudcode-runner"))
            .args(["--listen", listen, "--project", PROJECT])
            .args(["--token-public-key", &issuer.verifier().public_base64()])
            .arg("--workspace")
            .arg(workspace)
            .args(["--shell", "/bin/bash --norc --noprofile"])
            .args(["--sync-debounce-ms", "20"])
            .args(["--storage", "local", "--storage-dir"])
            .arg(storage)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting cloudcode-runner");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("cloudcode-runner listening on ")
            .unwrap_or_else(|| panic!("runner did not start: {line:?}"))
            .to_owned();
        (child, addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the runner's local storage keeps the project.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn token(&self) -> String {
        self.issuer.issue(&Claims {
            project: PROJECT.into(),
            exp: unix_now() + 3600,
        })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// A folder, the sync's state directory, and the runner they sync with.
pub struct Setup {
    pub runner: Runner,
    pub folder: tempfile::TempDir,
    pub state: tempfile::TempDir,
}

pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Setup {
    pub fn new() -> Self {
        Self {
            runner: Runner::start(),
            folder: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    pub fn local(&self) -> PathBuf {
        self.folder.path().canonicalize().unwrap()
    }

    pub fn remote(&self) -> PathBuf {
        self.runner.workspace.clone()
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudcode-tui"));
        cmd.arg("sync")
            .arg(self.folder.path())
            .args(["--project", PROJECT])
            .args(["--runner-url", &self.runner.url()])
            .args(extra)
            .env("CLOUDCODE_RUNNER_TOKEN", self.runner.token())
            .env("CLOUDCODE_SYNC_STATE_DIR", self.state.path())
            .stdin(Stdio::null());
        cmd
    }

    /// `sync --once` (plus `extra`), to its end.
    pub fn once(&self, extra: &[&str]) -> Finished {
        let mut args = vec!["--once"];
        args.extend_from_slice(extra);
        let out = self.command(&args).output().expect("running cloudcode-tui sync");
        let finished = Finished {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "--- sync {extra:?} exit {}\n{}{}",
            finished.code, finished.stdout, finished.stderr
        );
        finished
    }

    /// `sync` watching, until dropped.
    pub fn watch(&self, extra: &[&str]) -> Watching {
        self.watch_with(extra, &[])
    }

    pub fn watch_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Watching {
        let watching = self.start_watching(extra, env);
        watching.wait_line("watching");
        watching
    }

    /// `sync` started, not waited on.
    pub fn start_watching(&self, extra: &[&str], env: &[(&str, &str)]) -> Watching {
        let mut cmd = self.command(extra);
        cmd.envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting cloudcode-tui sync");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    eprintln!("sync| {line}");
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Watching { child, lines }
    }
}

pub struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watching {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn wait_line(&self, text: &str) {
        wait_for(&format!("the sync to print {text:?}"), || self.output().contains(text));
    }

    /// Ctrl-C, as a user stops it.
    pub fn stop(mut self) -> String {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + PATIENCE;
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(Instant::now() < deadline, "the sync did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.output()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// Polls `check` until it holds.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

pub fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// A tree as (path, description) pairs: files by content and executable
/// bit, links by target, directories as such.
pub fn snapshot(root: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        // Read while things change: what vanishes meanwhile (the runner's
        // temporary files, a file being replaced) is simply not there.
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for entry in listing.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(".cloudcode-tmp-") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let what = if meta.file_type().is_symlink() {
                let Ok(target) = std::fs::read_link(&path) else {
                    continue;
                };
                format!("-> {}", target.display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                let x = if meta.permissions().mode() & 0o111 != 0 {
                    " (x)"
                } else {
                    ""
                };
                let Ok(bytes) = std::fs::read(&path) else { continue };
                format!("{}{x}", String::from_utf8_lossy(&bytes))
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}
