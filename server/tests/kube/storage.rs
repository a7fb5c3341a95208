//! The storage gateway against the real API server: runner pods' bound
//! tokens, TokenReview, and a real runner syncing through it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudcode_proto::storage::gateway::GatewayStore;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectStore, StorageError};
use cloudcode_server::orchestrator::SandboxBackend;
use cloudcode_server::orchestrator::kubernetes::token::PodTokenAuthenticator;
use cloudcode_server::storage_gateway::{self, GatewayState};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster::pod_token;
use super::{backend, cluster, id, kubelet_ready, namespace, settings, spec, wait_for_pod};
use cloudcode_server::orchestrator::kubernetes::render::Routing;

/// Starts a project's pod, playing the kubelet.
async fn running_pod(
    backend: &Arc<cloudcode_server::orchestrator::kubernetes::KubernetesBackend>,
    pods: &Api<Pod>,
    project: &'static str,
) -> Pod {
    let mut start = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.ensure_running(&spec(project)).await })
    };
    let name = format!("p-{project}");
    wait_for_pod(pods, &name, &mut start).await;
    kubelet_ready(pods, &name).await;
    start.await.unwrap().unwrap();
    pods.get(&name).await.unwrap()
}

/// Serves the gateway on a free loopback port over `store`.
async fn serve_gateway(admin: &kube::Client, ns: &str, store: Arc<dyn ObjectStore>, spool: &Path) -> String {
    let auth = PodTokenAuthenticator::new(admin.clone(), ns, "test", Duration::ZERO);
    let gateway = Arc::new(GatewayState::new(
        store,
        Arc::new(auth),
        64 * 1024 * 1024,
        spool.to_path_buf(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { storage_gateway::serve(listener, gateway).await.unwrap() });
    url
}

/// One raw request: the status code the gateway answers.
async fn status_of(url: &str, method: &str, path_and_query: &str, token: Option<&str>, body: &[u8]) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

fn write_token(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, token).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_storage_gateway_confines_each_runner_pod_to_its_own_project() {
    let cluster = cluster::get();
    let admin = cluster.admin().await;
    let ns = namespace(&admin).await;
    let backend = Arc::new(backend(admin.clone(), settings(&ns, Routing::Gateway)));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let alpha = running_pod(&backend, &pods, "gw-alpha").await;
    let beta = running_pod(&backend, &pods, "gw-beta").await;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
    store
        .put(&key("code/gw-beta/secret.txt"), Bytes::from_static(b"beta's"))
        .await
        .unwrap();
    let url = serve_gateway(&admin, &ns, store.clone(), &dir.path().join("spool")).await;

    // Alpha's own token does everything inside code/gw-alpha/.
    let alpha_token = pod_token(&admin, &ns, &alpha, "cloudcode-storage").await;
    let alpha_store = GatewayStore::new(&url, &write_token(dir.path(), "alpha", &alpha_token)).unwrap();
    alpha_store
        .put(&key("code/gw-alpha/main.py"), Bytes::from_static(b"print(1)\n"))
        .await
        .unwrap();
    assert_eq!(
        store.get(&key("code/gw-alpha/main.py")).await.unwrap(),
        &b"print(1)\n"[..]
    );
    assert_eq!(
        alpha_store.get(&key("code/gw-alpha/main.py")).await.unwrap(),
        &b"print(1)\n"[..]
    );
    // A large object streams through a spool file both ways.
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let source = dir.path().join("big.bin");
    std::fs::write(&source, &big).unwrap();
    alpha_store
        .put_file(
            &key("code/gw-alpha/big bin/ü.dat"),
            tokio::fs::File::open(&source).await.unwrap(),
        )
        .await
        .unwrap();
    let back = dir.path().join("back.bin");
    let n = alpha_store
        .get_to_file(&key("code/gw-alpha/big bin/ü.dat"), &back)
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert!(
        std::fs::read(&back).unwrap() == big,
        "the large object came back changed"
    );
    alpha_store
        .copy(&key("code/gw-alpha/main.py"), &key("code/gw-alpha/copy.py"))
        .await
        .unwrap();
    let mut listed: Vec<String> = alpha_store
        .list(&KeyPrefix::parse("code/gw-alpha").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "code/gw-alpha/big bin/ü.dat",
            "code/gw-alpha/copy.py",
            "code/gw-alpha/main.py"
        ]
    );
    alpha_store.delete(&key("code/gw-alpha/copy.py")).await.unwrap();
    assert!(matches!(
        alpha_store.get(&key("code/gw-alpha/copy.py")).await,
        Err(StorageError::NotFound(_))
    ));
    alpha_store.delete(&key("code/gw-alpha/never-was")).await.unwrap();

    // Nothing of another project, nor the whole store.
    let refused = |r: Result<(), StorageError>| match r {
        Err(e @ StorageError::Unavailable { .. }) => assert!(e.to_string().contains("403"), "{e}"),
        other => panic!("should be refused: {other:?}"),
    };
    refused(alpha_store.get(&key("code/gw-beta/secret.txt")).await.map(drop));
    refused(
        alpha_store
            .put(&key("code/gw-beta/secret.txt"), Bytes::from_static(b"x"))
            .await,
    );
    refused(alpha_store.delete(&key("code/gw-beta/secret.txt")).await);
    refused(alpha_store.list(&KeyPrefix::parse("code").unwrap()).await.map(drop));
    refused(alpha_store.list(&KeyPrefix::parse("").unwrap()).await.map(drop));
    refused(
        alpha_store
            .copy(&key("code/gw-beta/secret.txt"), &key("code/gw-alpha/stolen.txt"))
            .await,
    );
    refused(
        alpha_store
            .put(&key("base/python/main.py"), Bytes::from_static(b"x"))
            .await,
    );
    // Its home is its own too (`home/gw-alpha/`, where its terminals'
    // HOME is kept); another project's home, or every home, is not.
    alpha_store
        .put(&key("home/gw-alpha/.bashrc"), Bytes::from_static(b"alias ll='ls -l'\n"))
        .await
        .unwrap();
    assert_eq!(
        alpha_store.get(&key("home/gw-alpha/.bashrc")).await.unwrap(),
        &b"alias ll='ls -l'\n"[..]
    );
    store
        .put(&key("home/gw-beta/.bash_history"), Bytes::from_static(b"beta's"))
        .await
        .unwrap();
    refused(alpha_store.get(&key("home/gw-beta/.bash_history")).await.map(drop));
    refused(
        alpha_store
            .put(&key("home/gw-beta/.bashrc"), Bytes::from_static(b"x"))
            .await,
    );
    refused(alpha_store.list(&KeyPrefix::parse("home").unwrap()).await.map(drop));
    refused(
        alpha_store
            .list(&KeyPrefix::parse("home/gw-beta").unwrap())
            .await
            .map(drop),
    );
    assert!(store.get(&key("home/gw-beta/.bashrc")).await.is_err());
    // The prefix is a whole component: gw-alpha is not gw-alphabet.
    refused(
        alpha_store
            .put(&key("code/gw-alphabet/x"), Bytes::from_static(b"x"))
            .await,
    );
    assert_eq!(
        store.get(&key("code/gw-beta/secret.txt")).await.unwrap(),
        &b"beta's"[..]
    );
    let q = |k: &str| {
        format!(
            "/v1/storage/object?key={}",
            cloudcode_proto::storage::gateway::percent_encode(k)
        )
    };
    assert_eq!(
        status_of(
            &url,
            "GET",
            &q("code/gw-alpha/../gw-beta/secret.txt"),
            Some(&alpha_token),
            b""
        )
        .await,
        400
    );
    assert_eq!(
        status_of(&url, "GET", &q("/etc/passwd"), Some(&alpha_token), b"").await,
        400
    );
    assert_eq!(
        status_of(&url, "POST", "/v1/storage/copy", Some(&alpha_token), b"{not json").await,
        400
    );
    let no_key = status_of(&url, "GET", "/v1/storage/object", Some(&alpha_token), b"").await;
    assert_eq!(no_key, 400);
    assert_eq!(
        status_of(&url, "PUT", &q("code/gw-alpha/a"), Some(&alpha_token), &[0u8; 100]).await,
        204
    );
    // Over the limit: refused before a byte is stored.
    let huge = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alpha_token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        q("code/gw-alpha/huge"),
        65 * 1024 * 1024
    );
    let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(huge.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // An upload cut short stores nothing.
    let cut = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alpha_token}\r\nContent-Length: 20000000\r\n\r\n",
        q("code/gw-alpha/main.py"),
    );
    let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(cut.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'x'; 9 * 1024 * 1024]).await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.get(&key("code/gw-alpha/main.py")).await.unwrap(),
        &b"print(1)\n"[..]
    );
    let spooled = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
    assert_eq!(spooled, 0, "spool files are removed");

    // Beta's token reaches beta's objects only.
    let beta_token = pod_token(&admin, &ns, &beta, "cloudcode-storage").await;
    let beta_store = GatewayStore::new(&url, &write_token(dir.path(), "beta", &beta_token)).unwrap();
    assert_eq!(
        beta_store.get(&key("code/gw-beta/secret.txt")).await.unwrap(),
        &b"beta's"[..]
    );
    refused(beta_store.get(&key("code/gw-alpha/main.py")).await.map(drop));

    // No token, a forged one, one for another audience (the API server's),
    // one of a pod of another installation: all 401.
    let object = q("code/gw-alpha/main.py");
    assert_eq!(status_of(&url, "GET", &object, None, b"").await, 401);
    assert_eq!(
        status_of(&url, "GET", &object, Some("forged.token.value"), b"").await,
        401
    );
    let api_token = pod_token(&admin, &ns, &alpha, "https://kubernetes.default.svc").await;
    assert_eq!(status_of(&url, "GET", &object, Some(&api_token), b"").await, 401);
    let foreign = Arc::new(super::backend(
        admin.clone(),
        cloudcode_server::orchestrator::kubernetes::render::RunnerSettings {
            owner: "someone-else".into(),
            ..settings(&ns, Routing::Gateway)
        },
    ));
    let intruder = running_pod(&foreign, &pods, "gw-intruder").await;
    let intruder_token = pod_token(&admin, &ns, &intruder, "cloudcode-storage").await;
    assert_eq!(
        status_of(&url, "GET", &q("code/gw-intruder/x"), Some(&intruder_token), b"").await,
        401
    );

    // Once the pod is gone, so is its token's power.
    backend.stop(&id("gw-alpha")).await.unwrap();
    for _ in 0..100 {
        if pods.get_opt("p-gw-alpha").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_of(&url, "GET", &object, Some(&alpha_token), b"").await, 401);
    assert!(matches!(
        alpha_store.get(&key("code/gw-alpha/main.py")).await,
        Err(StorageError::Unavailable { .. })
    ));
}

/// The real runner, as its pod runs it: restores and syncs through the
/// gateway with a token it re-reads, so a token the kubelet replaces (here:
/// a refused one replaced by a good one) is picked up without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_restores_and_saves_through_the_gateway_with_a_renewed_token() {
    let cluster = cluster::get();
    let admin = cluster.admin().await;
    let ns = namespace(&admin).await;
    let backend = Arc::new(backend(admin.clone(), settings(&ns, Routing::Gateway)));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let pod = running_pod(&backend, &pods, "gw-runner").await;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
    store
        .put(&key("code/gw-runner/hello.txt"), Bytes::from_static(b"from storage\n"))
        .await
        .unwrap();
    store
        .put(
            &key("home/gw-runner/.bashrc"),
            Bytes::from_static(b"alias ll='ls -l'\n"),
        )
        .await
        .unwrap();
    let url = serve_gateway(&admin, &ns, store.clone(), &dir.path().join("spool")).await;
    let token_file = write_token(dir.path(), "token", "not-a-valid-token");
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    // The pod's home volume.
    let home = dir.path().join("home");

    let server = PathBuf::from(env!("CARGO_BIN_EXE_cloudcode-server"));
    let runner_binary = server.with_file_name("cloudcode-runner");
    assert!(
        runner_binary.exists(),
        "{} missing: run the README's test command",
        runner_binary.display()
    );
    let issuer = cloudcode_proto::token::TokenIssuer::generate().unwrap();
    let mut runner = std::process::Command::new(&runner_binary)
        .args([
            "--project",
            "gw-runner",
            "--listen",
            "127.0.0.1:0",
            "--storage",
            "gateway",
        ])
        .arg("--token-public-key")
        .arg(issuer.verifier().public_base64())
        .arg("--workspace")
        .arg(&workspace)
        .arg("--home")
        .arg(&home)
        .arg("--storage-gateway-url")
        .arg(&url)
        .arg("--storage-token-file")
        .arg(&token_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let restored = workspace.join("hello.txt");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        runner.try_wait().unwrap().is_none(),
        "the runner gave up on a refused token"
    );
    assert!(!restored.exists(), "restored with a refused token?");

    // The kubelet writes the pod's token: the runner restores without restarting.
    let token = pod_token(&admin, &ns, &pod, "cloudcode-storage").await;
    std::fs::write(&token_file, token).unwrap();
    let mut ok = false;
    for _ in 0..200 {
        // The workspace first, then its home.
        if std::fs::read(&restored).ok().as_deref() == Some(&b"from storage\n"[..])
            && std::fs::read(home.join(".bashrc")).ok().as_deref() == Some(&b"alias ll='ls -l'\n"[..])
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the project and its home were not restored through the gateway");

    // A file a program makes in the workspace reaches storage.
    std::fs::write(workspace.join("made.txt"), b"made in a terminal\n").unwrap();
    let made = key("code/gw-runner/made.txt");
    let mut stored = None;
    for _ in 0..200 {
        if let Ok(bytes) = store.get(&made).await {
            stored = Some(bytes);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored.as_deref(), Some(&b"made in a terminal\n"[..]));

    // SIGTERM flushes what is pending, then the runner exits cleanly.
    std::fs::write(workspace.join("last.txt"), b"written just before SIGTERM\n").unwrap();
    std::fs::write(home.join(".bash_history"), b"ls\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(runner.id() as i32, libc::SIGTERM) };
    let mut runner = Kill(runner);
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = runner.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.expect("the runner did not exit on SIGTERM").success());
    assert_eq!(
        store.get(&key("code/gw-runner/last.txt")).await.unwrap(),
        &b"written just before SIGTERM\n"[..]
    );
    assert_eq!(
        store.get(&key("home/gw-runner/.bash_history")).await.unwrap(),
        &b"ls\n"[..]
    );
}

/// Made-up tokens cost the API server a TokenReview each: a caller gets 30
/// a minute, then 429 without a review.
#[tokio::test(flavor = "multi_thread")]
async fn refused_tokens_are_limited_per_caller() {
    let cluster = cluster::get();
    let admin = cluster.admin().await;
    let ns = namespace(&admin).await;
    let reviews = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = cluster.counting_admin(reviews.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
    let url = serve_gateway(&counted, &ns, store, &dir.path().join("spool")).await;
    let object = "/v1/storage/object?key=code/p/x";
    for attempt in 0..30 {
        let status = status_of(&url, "GET", object, Some(&format!("made.up.{attempt}")), b"").await;
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let reviewed = reviews.load(std::sync::atomic::Ordering::Relaxed);
    assert!(reviewed >= 30, "each refusal was a review: {reviewed}");
    for attempt in 30..40 {
        let status = status_of(&url, "GET", object, Some(&format!("made.up.{attempt}")), b"").await;
        assert_eq!(status, 429, "attempt {attempt}");
    }
    assert_eq!(
        reviews.load(std::sync::atomic::Ordering::Relaxed),
        reviewed,
        "no review once the limit is reached"
    );
}
