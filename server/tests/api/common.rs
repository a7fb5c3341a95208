#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Event, Op, Reply, TermId};
use serde_json::Value;

pub const PATIENCE: Duration = Duration::from_secs(30);

/// A server for a test: in this process (most tests: the library
/// `Server`, as an embedder runs it) or as the binary (tests of what only a
/// process has: a SIGKILL, its stderr, its pid).
pub struct TestServer {
    running: Running,
    pub port: u16,
    pub token: String,
    pub data: PathBuf,
    root: PathBuf,
    extra: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

/// The server's settings for S3 storage in the tests' S3 server at
/// `endpoint` (bucket `projects`).
pub fn s3_args(endpoint: &str) -> [&str; 11] {
    [
        "--storage",
        "s3",
        "--s3-bucket",
        "projects",
        "--s3-endpoint",
        endpoint,
        "--s3-path-style",
        "--s3-access-key-id",
        cloudcode_proto::testing::ACCESS_KEY,
        "--s3-secret-access-key",
        cloudcode_proto::testing::SECRET_KEY,
    ]
}

pub fn runner_binary() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_cloudcode-server"));
    let runner = server.with_file_name("cloudcode-runner");
    assert!(
        runner.exists(),
        "{} missing: run the README's test command, which builds it",
        runner.display()
    );
    runner
}

enum Running {
    Binary(Child),
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl TestServer {
    /// A server in this process, on a runtime and thread of its own.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut server = Self::start_in_process(dir.path().to_path_buf(), extra);
        server._dir = Some(dir);
        server
    }

    /// The `cloudcode-server` binary, as a user runs it.
    pub fn binary(extra: &[&str]) -> Self {
        Self::start_with_stderr(extra, Stdio::inherit())
    }

    /// With the server's stderr (and stdin) on `stderr`: a terminal, say.
    pub fn start_with_stderr(extra: &[&str], stderr: impl Into<Stdio>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut server = Self::start_in(dir.path().to_path_buf(), extra, stderr.into());
        server._dir = Some(dir);
        server
    }

    /// A new server on the same data and config directories (the old one
    /// must be gone).
    pub fn restart(old: &TestServer) -> Self {
        match old.running {
            Running::Binary(_) => Self::start_in(old.root.clone(), old.extra.clone(), Stdio::inherit()),
            Running::InProcess { .. } => Self::start_in_process(old.root.clone(), old.extra.clone()),
        }
    }

    /// The binary again on the same directories, with other settings.
    pub fn restart_with(old: &TestServer, extra: &[&str]) -> Self {
        let extra = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(old.root.clone(), extra, Stdio::inherit())
    }

    fn start_in_process(root: PathBuf, extra: Vec<String>) -> Self {
        use clap::Parser;
        become_subreaper();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let data = root.join("data");
        let mut args: Vec<std::ffi::OsString> = ["cloudcode-server", "--listen", "127.0.0.1:0", "--data-dir"]
            .map(Into::into)
            .into();
        args.push(data.clone().into());
        args.push("--config-dir".into());
        args.push(root.join("config").into());
        args.push("--runner-binary".into());
        args.push(runner_binary().into());
        args.extend(extra.iter().map(Into::into));
        let config = cloudcode_server::config::Config::try_parse_from(args).expect("the test's settings");
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = match cloudcode_server::server::Server::build(config).await {
                    Ok(server) => server,
                    Err(e) => return ready.send(Err(format!("{e:#}"))).unwrap(),
                };
                ready
                    .send(Ok((server.local_addr().port(), server.login_url())))
                    .unwrap();
                server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serving");
            });
        });
        let (port, url) = started
            .recv()
            .expect("the server thread ended")
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        let token = url.rsplit("token=").next().unwrap().to_owned();
        Self {
            running: Running::InProcess {
                stop: Some(stop),
                thread: Some(thread),
            },
            port,
            token,
            data,
            root,
            extra,
            _dir: None,
        }
    }

    fn start_in(root: PathBuf, extra: Vec<String>, stderr: Stdio) -> Self {
        become_subreaper();
        let data = root.join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudcode-server"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config-dir")
            .arg(root.join("config"))
            .arg("--runner-binary")
            .arg(runner_binary())
            .args(&extra)
            .env("RUST_LOG", "cloudcode_server=info,cloudcode_runner=info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting cloudcode-server");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let port: u16 = first
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not start: {first:?}"));
        let mut second = String::new();
        reader.read_line(&mut second).unwrap();
        let token = second.trim().rsplit("token=").next().unwrap().to_owned();
        Self {
            running: Running::Binary(child),
            port,
            token,
            data,
            root,
            extra,
            _dir: None,
        }
    }

    /// The server's process: this one for a server in process.
    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Binary(child) => child.id(),
            Running::InProcess { .. } => std::process::id(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
        raw_request(self.port, method, path, None, body, token).await
    }

    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.request(method, path, body, Some(&self.token.clone())).await
    }

    pub async fn create(&self, id: &str, language: &str) {
        let (status, body) = self
            .api(
                "POST",
                "/api/projects",
                Some(&format!(r#"{{"id":"{id}","language":"{language}"}}"#)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Starts a project; returns the start response.
    pub async fn start_project(&self, id: &str) -> Value {
        let (status, body) = self.api("POST", &format!("/api/projects/{id}/start"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A runner client through the gateway, on the project's IDE origin.
    pub async fn ide_client(&self, id: &str, started: &Value) -> RunnerClient {
        let token = started["token"].as_str().unwrap();
        let mut client = RunnerClient::connect_with_host(
            &format!("ws://127.0.0.1:{}/v1/ws", self.port),
            Some(&format!("{id}.ide.localhost:{}", self.port)),
            token,
        )
        .await
        .expect("connecting through the gateway");
        match next(&mut client).await {
            Incoming::Event(Event::Welcome { project, .. }) => assert_eq!(project, id),
            other => panic!("{other:?}"),
        }
        client
    }
}

impl TestServer {
    /// SIGKILLs the server, as a crash would; its sandboxes live on.
    pub fn kill(&mut self) {
        let Running::Binary(child) = &mut self.running else {
            panic!("only a TestServer::binary can be killed");
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Ends the server with SIGTERM, as a service manager does (in
    /// process: the shutdown future it was served with); its sandboxes
    /// live on.
    pub fn terminate(&mut self) {
        match &mut self.running {
            Running::Binary(child) => cloudcode_proto::testing::terminate(child, Duration::from_secs(60)),
            Running::InProcess { stop, thread } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }

    /// `cloudcode-server --stop-sandboxes` on this server's directories
    /// (refused while a server runs on them): sandboxes outlive servers,
    /// so every test ends with this to leave none behind.
    pub fn stop_sandboxes(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_cloudcode-server"))
            .arg("--stop-sandboxes")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--config-dir")
            .arg(self.root.join("config"))
            .arg("--runner-binary")
            .arg(runner_binary())
            .args(&self.extra)
            .env("RUST_LOG", "cloudcode_server=warn")
            .stdin(Stdio::null())
            .output()
            .expect("running cloudcode-server --stop-sandboxes")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.terminate();
        // A server restarted on the same directories may still run: it is
        // then its own drop that stops the sandboxes.
        let _ = self.stop_sandboxes();
        reap_orphaned_sandboxes();
    }
}

/// Sandboxes outlive their server: a killed or stopped test server's
/// sandboxes become this process's children rather than those of pid 1,
/// which on some machines (this CI's) never reaps the ones that end.
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    });
}

/// Reaps the ended sandboxes (bwrap, slirp4netns) that were handed to this
/// process; no other child's exit status is taken.
fn reap_orphaned_sandboxes() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 2..].split(' ');
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<i32>().ok()));
        if state == Some("Z") && ppid == Some(me) && matches!(comm, "bwrap" | "slirp4netns" | "cloudcode-runne") {
            // SAFETY: waitpid on one pid, not blocking.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

/// A minimal HTTP/1.1 client, so tests choose every header (Host included).
pub async fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    host: Option<&str>,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let host = host.map(str::to_owned).unwrap_or_else(|| format!("127.0.0.1:{port}"));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A server refusing a huge body may answer and close before it is all
    // sent: the answer still counts.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: take the JSON between the first `{` and the last `}`.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::String(body.to_owned())),
        _ => Value::String(body.to_owned()),
    };
    (status, json)
}

pub async fn next(client: &mut RunnerClient) -> Incoming {
    tokio::time::timeout(PATIENCE, client.next_incoming())
        .await
        .expect("timed out")
        .expect("connection gone")
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

/// Runs `command` in the terminal and returns what it printed up to a marker.
pub async fn run(client: &mut RunnerClient, term: TermId, command: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    client
        .send_input(term, format!("{command}; echo END{n}-$((40+2))\r").as_bytes())
        .unwrap();
    let needle = format!("END{n}-42");
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(&needle) {
        if let Incoming::Frame(Frame::TermOutput { term: t, data, .. }) = next(client).await
            && t == term
        {
            out.extend_from_slice(&data);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub use cloudcode_proto::testing::process_running;

pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runners of `id` on this machine.
pub fn runners_of(id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let parts: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                parts.first().is_some_and(|p| p.ends_with(b"cloudcode-runner")) && parts.contains(&id.as_bytes())
            })
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Waits until the project's status is `state` (a restarted server takes
/// sandboxes over in the background), without starting it.
pub async fn wait_for_state(server: &TestServer, id: &str, state: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = server.api("GET", &format!("/api/projects/{id}/status"), None).await;
        if body["state"] == state {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id} never {state}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
