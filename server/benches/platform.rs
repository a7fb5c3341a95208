//! Control-plane benchmark: `cargo bench -p cloudcode-server --bench platform`.
//!
//! Prints, against a real server with real bubblewrap sandboxes:
//! - create + start + first shell prompt byte through the gateway, p50/p99
//!   over `BENCH_PROJECTS` (default 50) projects;
//! - memory per idle sandbox (runner + shell: RSS, and private memory, which
//!   is what each additional sandbox costs since code pages are shared);
//! - keystroke echo p50/p99 with all those sandboxes running;
//! - resume of a stopped 10,000-file / 100 MB project to the first prompt.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Op, Reply};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    child: Child,
    port: u16,
    token: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(120));
        // Sandboxes outlive their server: end them before the directory goes.
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_cloudcode-server"));
        let _ = Command::new(&exe)
            .arg("--stop-sandboxes")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--config-dir")
            .arg(self._dir.path().join("config"))
            .arg("--runner-binary")
            .arg(exe.with_file_name("cloudcode-runner"))
            .env("RUST_LOG", "warn")
            .output();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_cloudcode-server"));
    let runner = exe.with_file_name("cloudcode-runner");
    assert!(
        runner.exists(),
        "build the runner first: cargo build --release -p cloudcode-runner"
    );
    let data = dir.path().join("data");
    let mut child = Command::new(&exe)
        .args(["--listen", "127.0.0.1:0", "--sandbox-memory-mib", "512"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--config-dir")
        .arg(dir.path().join("config"))
        .arg("--runner-binary")
        .arg(&runner)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let port = first.trim().rsplit(':').next().unwrap().parse().unwrap();
    let token = second.trim().rsplit("token=").next().unwrap().to_owned();
    Server {
        child,
        port,
        token,
        data,
        _dir: dir,
    }
}

async fn api(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.token,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, json)
}

/// Start (already created) -> connected through the gateway -> first byte
/// of the shell's prompt.
async fn start_to_prompt(server: &Server, id: &str) -> (RunnerClient, u32) {
    let (status, started) = api(server, "POST", &format!("/api/projects/{id}/start"), "").await;
    assert_eq!(status, 200, "{started}");
    let mut client = RunnerClient::connect_with_host(
        &format!("ws://127.0.0.1:{}/v1/ws", server.port),
        Some(&format!("{id}.ide.localhost:{}", server.port)),
        started["token"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let Reply::TermOpened { term } = client
        .request(Op::TermOpen {
            cols: 80,
            rows: 24,
            command: None,
            flow_window: None,
            purpose: None,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    loop {
        match client.next_incoming().await {
            Some(Incoming::Frame(Frame::TermOutput { term: t, .. })) if t == term => return (client, term),
            Some(_) => {}
            None => panic!("connection closed before the prompt"),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Every process of the sandboxes: runners and their shells.
fn sandbox_processes(data: &Path) -> Vec<u32> {
    let marker = data.display().to_string();
    let runners: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.starts_with(b"/opt/cloudcode/cloudcode-runner"))
                .unwrap_or(false)
        })
        .collect();
    let _ = marker;
    let mut all = runners.clone();
    for runner in runners {
        let children = std::fs::read_to_string(format!("/proc/{runner}/task/{runner}/children")).unwrap_or_default();
        all.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    all
}

#[tokio::main]
async fn main() {
    let projects: usize = std::env::var("BENCH_PROJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let server = start_server();

    // 1. create + start + first prompt, one project after another.
    let mut samples = Vec::new();
    let mut clients = Vec::new();
    for i in 0..projects {
        let id = format!("bench-{i:03}");
        let started = Instant::now();
        let (status, body) = api(
            &server,
            "POST",
            "/api/projects",
            &format!(r#"{{"id":"{id}","language":"python"}}"#),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        clients.push(start_to_prompt(&server, &id).await);
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "create + start + first prompt through the gateway, {projects} projects: p50 {:.1} ms  p99 {:.1} ms",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    );

    // 2. memory of the idle sandboxes (each with one shell).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = sandbox_processes(&server.data);
    let rss: u64 = pids.iter().map(|p| kib(*p, "status", "VmRSS:")).sum();
    let private: u64 = pids
        .iter()
        .map(|p| kib(*p, "smaps_rollup", "Private_Dirty:") + kib(*p, "smaps_rollup", "Private_Clean:"))
        .sum();
    let per_rss = rss as f64 / projects as f64 / 1024.0;
    let per_private = private as f64 / projects as f64 / 1024.0;
    println!(
        "idle sandbox (runner + shell), {projects} running: RSS {per_rss:.1} MiB each, private (unshared) {per_private:.1} MiB each"
    );
    // 3. keystroke echo with all of them running: 10 keys on each of up to
    // 100 sandboxes spread over the set.
    let mut echo = Vec::new();
    let step = (clients.len() / 100).max(1);
    for (client, term) in clients.iter_mut().step_by(step) {
        // Drain whatever is pending first.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(5), client.next_incoming()).await {}
        for i in 0..10u8 {
            let key = b'a' + i;
            let started = Instant::now();
            client.send_input(*term, &[key]).unwrap();
            loop {
                match client.next_incoming().await {
                    Some(Incoming::Frame(Frame::TermOutput { data, .. })) if data.contains(&key) => break,
                    Some(_) => {}
                    None => panic!("connection closed"),
                }
            }
            echo.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        client.send_input(*term, b"\x15").unwrap();
    }
    echo.sort_by(|a, b| a.total_cmp(b));
    println!(
        "keystroke echo with {projects} sandboxes running ({} samples): p50 {:.3} ms  p99 {:.3} ms",
        echo.len(),
        percentile(&echo, 50.0),
        percentile(&echo, 99.0)
    );
    drop(clients);

    // 4. resume a stopped 10,000-file / 100 MB project.
    let id = "bench-big";
    let (status, body) = api(
        &server,
        "POST",
        "/api/projects",
        &format!(r#"{{"id":"{id}","language":"node-js"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let code = server.data.join("storage/code").join(id);
    for i in 0..10_000 {
        let dir = code.join(format!("pkg{:02}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("file{i:05}.bin")), vec![(i % 251) as u8; 10 * 1024]).unwrap();
    }
    std::fs::remove_dir_all(server.data.join("sandboxes").join(id)).ok();
    let started = Instant::now();
    let _resumed = start_to_prompt(&server, id).await;
    println!(
        "resume of a stopped 10,000-file / 100 MB project to the first prompt: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
