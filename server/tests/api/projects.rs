//! The init service's API and the seed's control-plane defects: no auth,
//! false 200s, unvalidated ids and languages.

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_needs_the_api_token() {
    let server = TestServer::start(&[]);
    for (method, path) in [
        ("GET", "/api/projects"),
        ("POST", "/api/projects"),
        ("POST", "/project"),
        ("POST", "/start"),
        ("GET", "/api/projects/alpha"),
        ("DELETE", "/api/projects/alpha"),
        ("POST", "/api/projects/alpha/start"),
        ("GET", "/nothing-here"),
    ] {
        let (status, body) = server.request(method, path, Some("{}"), None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        let (status, _) = server.request(method, path, Some("{}"), Some("wrong-token")).await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }
    let (status, _) = server
        .request("GET", &format!("/api/projects?token={}", server.token), None, None)
        .await;
    assert_eq!(status, 200, "the token in the printed URL works");
    // The probe endpoint alone answers without a token, and lists nothing.
    let (status, body) = server.request("GET", "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, Some("ok\n")));
    // The API's index shows where things are.
    let (status, body) = server.request("GET", "/api", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = server.api("GET", "/api", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["service"], "cloudcode-server");
    assert!(body["api"]["start"].as_str().unwrap().contains("/start"));
}

#[tokio::test(flavor = "multi_thread")]
async fn create_list_get_delete() {
    let server = TestServer::start(&[]);
    let (status, body) = server
        .api("POST", "/project", Some(r#"{"replId":"my-app","language":"node-js"}"#))
        .await;
    assert_eq!(status, 201, "{body}");
    server.create("py-app", "python").await;
    let (status, body) = server.api("GET", "/api/projects", None).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["my-app", "py-app"]);
    // The template's files are the project's.
    let code = server.data.join("storage/code/my-app");
    assert!(code.join("index.js").exists() && code.join("package.json").exists() && code.join("README.md").exists());
    assert!(server.data.join("storage/code/py-app/main.py").exists());
    assert!(!code.join(".cloudcode-template").exists());

    let (status, body) = server.api("GET", "/api/projects/py-app", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["project"]["language"], "python");
    assert_eq!(body["sandbox"]["state"], "stopped");

    let (status, _) = server.api("DELETE", "/api/projects/py-app", None).await;
    assert_eq!(status, 204);
    assert!(!server.data.join("storage/code/py-app").join("main.py").exists());
    let (status, _) = server.api("GET", "/api/projects/py-app", None).await;
    assert_eq!(status, 404);
    let (status, _) = server.api("DELETE", "/api/projects/py-app", None).await;
    assert_eq!(status, 404);
}

/// A start asked while the project is being deleted (an IDE reconnecting,
/// say) never brings a sandbox back for it: it waits for the deletion and
/// finds no project, and nothing of the project is left running or stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_during_a_delete_finds_no_project_and_brings_nothing_back() {
    let server = std::sync::Arc::new(TestServer::start(&[]));
    server.create("doomed", "python").await;
    server.start_project("doomed").await;
    let deleting = tokio::spawn({
        let server = server.clone();
        async move { server.api("DELETE", "/api/projects/doomed", None).await }
    });
    // Once the deletion's stop is under way (the runner's flush takes a
    // good 100 ms; a status takes one).
    loop {
        let (code, body) = server.api("GET", "/api/projects/doomed/status", None).await;
        assert_ne!(
            code, 404,
            "the deletion was over before its stop was seen: the test proves nothing"
        );
        if body["state"] == "stopping" {
            break;
        }
        tokio::task::yield_now().await;
    }
    let (code, body) = server.api("POST", "/api/projects/doomed/start", None).await;
    assert_eq!((code, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (code, body) = deleting.await.unwrap();
    assert_eq!(code, 204, "{body}");
    assert!(
        runners_of("doomed").is_empty(),
        "a sandbox runs for the deleted project"
    );
    let code_dir = server.data.join("storage/code/doomed");
    let left: Vec<_> = std::fs::read_dir(&code_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files of the deleted project came back: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_clearly() {
    let server = TestServer::start(&[]);
    let long = "a".repeat(300);
    for (body, code) in [
        (r#"{"replId":"victim #","language":"python"}"#.to_owned(), "invalid_id"),
        (r#"{"replId":"../x","language":"python"}"#.to_owned(), "invalid_id"),
        (format!(r#"{{"replId":"{long}","language":"python"}}"#), "invalid_id"),
        (
            r#"{"replId":"ok-id","language":"cobol"}"#.to_owned(),
            "unknown_language",
        ),
        (r#"{"replId":"ok-id"}"#.to_owned(), "bad_request"),
        (r#"{"replId":"ok-id","#.to_owned(), "bad_request"),
        (r#"[1,2,3]"#.to_owned(), "bad_request"),
    ] {
        let (status, response) = server.api("POST", "/project", Some(&body)).await;
        assert!(status == 400 || status == 422, "{body}: {status} {response}");
        assert_eq!(response["code"], code, "{body}: {response}");
    }
    let huge = format!(
        r#"{{"replId":"ok-id","language":"python","pad":"{}"}}"#,
        "x".repeat(1_000_000)
    );
    let (status, response) = server.api("POST", "/project", Some(&huge)).await;
    assert_eq!(status, 413, "{response}");
    let (status, _) = server.api("GET", "/api/projects/UPPER", None).await;
    assert_eq!(status, 400);
    let (status, _) = server
        .api("POST", "/start", Some(r#"{"replId":"no-such-project"}"#))
        .await;
    assert_eq!(status, 404);
    // Nothing was created by any of it.
    let (_, body) = server.api("GET", "/api/projects", None).await;
    assert_eq!(body["projects"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_an_existing_project_is_a_conflict() {
    let server = TestServer::start(&[]);
    server.create("twice", "python").await;
    std::fs::write(server.data.join("storage/code/twice/main.py"), "user's work").unwrap();
    let (status, body) = server
        .api("POST", "/api/projects", Some(r#"{"id":"twice","language":"node-js"}"#))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        std::fs::read_to_string(server.data.join("storage/code/twice/main.py")).unwrap(),
        "user's work"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_failure_is_reported_never_a_false_success() {
    let server = TestServer::start(&[]);
    // Records cannot be written: `projects` is a file, not a directory.
    let records = server.data.join("storage/projects");
    let _ = std::fs::remove_dir_all(&records);
    std::fs::write(&records, "in the way").unwrap();
    let (status, body) = server
        .api("POST", "/api/projects", Some(r#"{"id":"doomed","language":"python"}"#))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "storage_unavailable");
    // Nothing half-made is left behind.
    let leftovers = std::fs::read_dir(server.data.join("storage/code/doomed"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_come_from_the_config_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.env");
    std::fs::write(&file, "# domains for this deployment\nCLOUDCODE_IDE_DOMAIN=code.example.test\nCLOUDCODE_PREVIEW_DOMAIN=app.example.test\n").unwrap();
    // The binary: the file is read where the binary starts.
    let server = TestServer::binary(&["--config", file.to_str().unwrap()]);
    server.create("configured", "python").await;
    let started = server.start_project("configured").await;
    assert_eq!(
        started["ideUrl"],
        format!("http://configured.code.example.test:{}/", server.port)
    );
    assert_eq!(
        started["previewUrl"],
        format!("http://configured.app.example.test:{}/", server.port)
    );
}

/// Without bubblewrap the server refuses to run users' code unsandboxed,
/// unless told so explicitly, and then says so loudly.
#[test]
fn without_bubblewrap_sandboxes_are_refused_unless_explicitly_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudcode-server"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config-dir")
            .arg(dir.path().join("config"))
            .args(extra)
            // No bwrap on this PATH.
            .env("PATH", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(5) && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("bubblewrap"), "{stderr}");
    let insecure = run(&["--insecure-no-sandbox"]);
    let stdout = String::from_utf8_lossy(&insecure.stdout);
    let stderr = String::from_utf8_lossy(&insecure.stderr);
    assert!(stdout.contains("listening on"), "{stdout}{stderr}");
    assert!(stderr.contains("UNSANDBOXED"), "{stderr}");
}

/// Seed defect: `Access-Control-Allow-Origin: *` let any web page drive the
/// API. No response here grants another origin anything.
#[tokio::test(flavor = "multi_thread")]
async fn no_cross_origin_access_is_granted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[]);
    for request in [
        format!("GET /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", server.token),
        "OPTIONS /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(!response.to_ascii_lowercase().contains("access-control-allow-origin"), "{response}");
    }
}
