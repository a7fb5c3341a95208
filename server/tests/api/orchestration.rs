//! The orchestrator under load and odd input: ids as long as the API
//! accepts under a long data directory, one project's slow start beside
//! another's, many starts at once and a restart after them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudcode_proto::client::{Incoming, RunnerClient};
use cloudcode_proto::message::Event;

use crate::common::*;

/// A server on a data directory of our choosing (`TestServer` picks a short
/// temporary one).
struct ServerAt {
    child: Child,
    port: u16,
    token: String,
    root: std::path::PathBuf,
}

impl ServerAt {
    fn start(root: &Path, extra: &[&str]) -> Self {
        let server = std::path::PathBuf::from(env!("CARGO_BIN_EXE_cloudcode-server"));
        let mut child = Command::new(&server)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(root.join("data"))
            .arg("--config-dir")
            .arg(root.join("config"))
            .arg("--runner-binary")
            .arg(server.with_file_name("cloudcode-runner"))
            .args(extra)
            .env("RUST_LOG", "cloudcode_server=info,cloudcode_runner=info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting cloudcode-server");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let (mut first, mut second) = (String::new(), String::new());
        reader.read_line(&mut first).unwrap();
        reader.read_line(&mut second).unwrap();
        let port = first
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not start: {first:?}"));
        let token = second.trim().rsplit("token=").next().unwrap().to_owned();
        Self {
            child,
            port,
            token,
            root: root.to_path_buf(),
        }
    }

    async fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        raw_request(self.port, method, path, None, body, Some(&self.token)).await
    }
}

impl Drop for ServerAt {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(60));
        // Sandboxes outlive their server.
        let _ = Command::new(env!("CARGO_BIN_EXE_cloudcode-server"))
            .arg("--stop-sandboxes")
            .arg("--data-dir")
            .arg(self.root.join("data"))
            .arg("--config-dir")
            .arg(self.root.join("config"))
            .arg("--runner-binary")
            .arg(runner_binary())
            .output();
    }
}

/// The longest id the API accepts starts, and its terminal works through the
/// gateway, under a data directory whose path alone is longer than a Unix
/// socket path may be (108 bytes).
#[tokio::test(flavor = "multi_thread")]
async fn the_longest_id_starts_under_a_long_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a-data-directory-whose-path-is-long".repeat(3));
    assert!(root.join("data").as_os_str().len() > 110);
    let server = ServerAt::start(&root, &[]);
    let id = format!("long-{}", "x".repeat(58));
    assert_eq!(id.len(), 63);
    let (status, body) = server
        .api(
            "POST",
            "/api/projects",
            Some(&format!(r#"{{"id":"{id}","language":"python"}}"#)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = server.api("POST", &format!("/api/projects/{id}/start"), None).await;
    assert_eq!(status, 200, "{started}");
    let mut client = RunnerClient::connect_with_host(
        &format!("ws://127.0.0.1:{}/v1/ws", server.port),
        Some(&format!("{id}.ide.localhost:{}", server.port)),
        started["token"].as_str().unwrap(),
    )
    .await
    .expect("connecting through the gateway");
    match next(&mut client).await {
        Incoming::Event(Event::Welcome { project, .. }) => assert_eq!(project, id),
        other => panic!("{other:?}"),
    }
    let term = open_terminal(&client).await;
    let out = run(&mut client, term, "echo $((6*7))-inside; hostname").await;
    assert!(out.contains("42-inside\r\n"), "{out}");
    let (_, status) = server.api("GET", &format!("/api/projects/{id}/status"), None).await;
    assert_eq!(status["state"], "running", "{status}");
}

/// B's start, status and stop, timed.
async fn exercise(server: &TestServer, id: &str) -> [Duration; 3] {
    let t = Instant::now();
    server.start_project(id).await;
    let start = t.elapsed();
    let t = Instant::now();
    let (_, body) = server.api("GET", &format!("/api/projects/{id}/status"), None).await;
    assert_eq!(body["state"], "running", "{body}");
    let status = t.elapsed();
    let t = Instant::now();
    let (code, body) = server.api("POST", &format!("/api/projects/{id}/stop"), None).await;
    assert_eq!(code, 200, "{body}");
    [start, status, t.elapsed()]
}

/// While project A restores 10,000 files from storage, project B starts,
/// answers its status and stops as if A were idle: B's three operations are
/// all done while A's restore is still under way, so before A's start is.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_restore_never_blocks_another_project() {
    let s3 = cloudcode_proto::testing::S3Server::start();
    let endpoint = s3.endpoint();
    let server = TestServer::start(&s3_args(&endpoint));
    server.create("slow-a", "python").await;
    server.create("quick-b", "python").await;
    // The bucket is a directory (s3s-fs): fill A's part of it directly.
    let many = s3.dir.path().join("projects/code/slow-a/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..10_000 {
        std::fs::write(many.join(format!("f{i:05}.txt")), format!("file {i}\n")).unwrap();
    }

    let idle = exercise(&server, "quick-b").await;

    let a_done = async {
        // The answer may outlast the client's patience on a busy machine;
        // the start goes on regardless.
        let (status, body) = server.api("POST", "/api/projects/slow-a/start", None).await;
        assert!(status == 200 || status == 0, "{body}");
        let deadline = Instant::now() + 4 * PATIENCE;
        while server.api("GET", "/api/projects/slow-a/status", None).await.1["state"] != "running" {
            assert!(Instant::now() < deadline, "A never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Instant::now()
    };
    let b_done = async {
        // Once A's restore is under way.
        let local = server.data.join("storage/code/slow-a/many");
        let deadline = Instant::now() + PATIENCE;
        while std::fs::read_dir(&local).map(|d| d.count()).unwrap_or(0) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let busy = exercise(&server, "quick-b").await;
        let restored = std::fs::read_dir(&local).map(|d| d.count()).unwrap_or(0);
        (busy, Instant::now(), restored)
    };
    let t = Instant::now();
    let (a_done, (busy, b_done, restored)) = tokio::join!(a_done, b_done);
    eprintln!(
        "B idle: start {:?} status {:?} stop {:?}; B while A restores: start {:?} status {:?} stop {:?}; A's start {:?}",
        idle[0],
        idle[1],
        idle[2],
        busy[0],
        busy[1],
        busy[2],
        a_done - t
    );
    assert!(
        restored < 10_000,
        "B's start, status and stop waited for A's restore to finish"
    );
    assert!(
        b_done < a_done,
        "B's start, status and stop waited for A's restore: B done after {:?}, A after {:?}",
        b_done - t,
        a_done - t
    );
    let (_, listed) = server.api("GET", "/api/projects/slow-a/status", None).await;
    assert_eq!(listed["state"], "running", "{listed}");
}

fn running_ids(list: &serde_json::Value) -> Vec<String> {
    list["projects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "running")
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A project may take any name the API accepts, even one the server once
/// used for a file of its own beside the sandboxes (`running`, its list of
/// the projects to run), and an old server's list is still read.
#[tokio::test(flavor = "multi_thread")]
async fn a_project_named_running_starts_and_comes_back_after_a_restart() {
    let mut server = TestServer::start(&[]);
    for id in ["alpha", "running"] {
        server.create(id, "python").await;
        server.start_project(id).await;
    }
    let (_, list) = server.api("GET", "/api/projects", None).await;
    let mut running = running_ids(&list);
    running.sort();
    assert_eq!(running, ["alpha", "running"], "{list}");
    server.terminate();
    assert!(server.data.join("sandboxes/running").is_dir());
    let again = TestServer::restart(&server);
    // Taken over in the background.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, list) = again.api("GET", "/api/projects", None).await;
        let mut running = running_ids(&list);
        running.sort();
        if running == ["alpha", "running"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not both running after the restart: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An old server's list of the projects to run, in the file `running`, is
/// moved beside the sandboxes under its new name and read.
#[test]
fn an_old_wanted_list_is_moved_and_read() {
    let data = tempfile::tempdir().unwrap();
    let root = cloudcode_server::orchestrator::sandbox_root(data.path());
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("running"), "alpha\nbeta\n").unwrap();
    let path = cloudcode_server::orchestrator::wanted_list(data.path());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "alpha\nbeta\n");
    assert!(!root.join("running").exists());
}

/// Twenty projects started at once all run, and a restarted server brings
/// all twenty back.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_starts_at_once_all_run_and_all_come_back_after_a_restart() {
    let mut server = TestServer::start(&[]);
    let ids: Vec<String> = (0..20).map(|i| format!("crowd-{i:02}")).collect();
    for id in &ids {
        server.create(id, "python").await;
    }
    futures_util::future::join_all(ids.iter().map(|id| server.start_project(id))).await;
    let (_, list) = server.api("GET", "/api/projects", None).await;
    let mut running = running_ids(&list);
    running.sort();
    assert_eq!(running, ids, "{list}");

    server.terminate();
    let again = TestServer::restart(&server);
    let deadline = Instant::now() + 2 * PATIENCE;
    loop {
        let (_, list) = again.api("GET", "/api/projects", None).await;
        let mut running = running_ids(&list);
        running.sort();
        if running == ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every project came back after the restart: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
