//! Test support: a real S3-compatible server (s3s-fs, which checks SigV4
//! signatures) on a free loopback port, for the tests of every crate.
//! Behind the `testing` feature; never part of a product binary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::storage::s3::S3Config;

const STARTUP_PATIENCE: Duration = Duration::from_secs(20);

pub const ACCESS_KEY: &str = "cloudcode-test";
pub const SECRET_KEY: &str = "cloudcode-test-secret";

/// s3s-fs from `CLOUDCODE_S3S_FS`, `.ci/run`'s cache, or PATH. A missing
/// server is a failure, not a skip: `.ci/run` installs it.
pub fn s3s_fs_binary() -> PathBuf {
    if let Ok(path) = std::env::var("CLOUDCODE_S3S_FS") {
        return PathBuf::from(path);
    }
    let cached = PathBuf::from("/var/cache/cloudcode-ci/s3s-fs/bin/s3s-fs");
    if cached.exists() {
        return cached;
    }
    let on_path = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| PathBuf::from(d).join("s3s-fs"))
        .find(|p| p.exists());
    on_path.expect("s3s-fs not found: run .ci/run or `cargo install s3s-fs@0.14.1 --features binary --locked`")
}

pub struct S3Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Self {
            child: Self::spawn(port, dir.path()),
            port,
            dir,
        };
        server.wait_ready();
        server
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, self.dir.path());
        self.wait_ready();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            session_token: None,
        }
    }

    pub fn runner_args(&self, bucket: &str) -> Vec<String> {
        [
            "--storage",
            "s3",
            "--s3-bucket",
            bucket,
            "--s3-endpoint",
            &self.endpoint(),
            "--s3-path-style",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn runner_env(&self) -> Vec<(String, String)> {
        vec![
            ("CLOUDCODE_S3_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("CLOUDCODE_S3_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True while a process whose command line has `arg` as one of its words
/// is alive: finds a test's `sleep <unique number>` in /proc.
pub fn process_running(arg: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|part| part == arg.as_bytes()))
            .unwrap_or(false)
    })
}

/// Ends a child process the way an operator would: SIGTERM, up to `grace`
/// for it to finish (a runner flushes its files and ends its terminals; a
/// server stops its sandboxes), then SIGKILL. Reaps it either way.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
