//! Kubernetes backend benchmark: `cargo bench -p cloudcode-server --bench kubernetes`.
//!
//! Against the real API server the tests use (etcd + kube-apiserver +
//! kube-controller-manager, see `tests/kube/cluster.rs`), with this process
//! playing the kubelet (a watch that marks each new pod Ready), prints:
//! - the orchestrator's own overhead from `start` to the pod existing, and
//!   from the pod turning Ready to `start` returning, p50/p99;
//! - creating then deleting `BENCH_K8S_PROJECTS` (default 1,000) projects,
//!   16 at a time: wall time, the orchestrator's API calls per project
//!   (counted on its own client), and the API server's own request count
//!   over the run (from its `/metrics`, which includes the kubelet's part);
//! - a 10,000-file / 100 MB project restored through the storage gateway,
//!   against the same restore straight from the same (local) storage.

// The tests' cluster, of which the benchmark uses a part.
#[allow(dead_code)]
#[path = "../tests/kube/cluster.rs"]
mod cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::storage::gateway::GatewayStore;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{ObjectStore, layout};
use cloudcode_proto::sync::persister::Persister;
use cloudcode_proto::token::TokenIssuer;
use cloudcode_server::orchestrator::Orchestrator;
use cloudcode_server::orchestrator::kubernetes::KubernetesBackend;
use cloudcode_server::orchestrator::kubernetes::render::{
    DEFAULT_TEMPLATE, Resources, Routing, RunnerSettings, RunnerStorage, Template,
};
use cloudcode_server::orchestrator::kubernetes::token::PodTokenAuthenticator;
use cloudcode_server::projects::ProjectId;
use cloudcode_server::storage_gateway::{self, GatewayState};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const NAMESPACE: &str = "bench";
const CONCURRENCY: usize = 16;

/// The API server's `apiserver_request_total`, summed over every label.
async fn server_requests(admin: &kube::Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Plays the kubelet: every new pod in the namespace is marked Running and
/// Ready, and the moment each became Ready (its status patch answered) and
/// each was first seen are recorded.
struct Kubelet {
    seen: Mutex<HashMap<String, Instant>>,
    ready: Mutex<HashMap<String, Instant>>,
}

async fn run_kubelet(admin: kube::Client, kubelet: Arc<Kubelet>) {
    let pods: Api<Pod> = Api::namespaced(admin, NAMESPACE);
    let events = watcher::watcher(pods.clone(), watcher::Config::default()).applied_objects();
    let mut events = std::pin::pin!(events);
    while let Ok(Some(pod)) = events.try_next().await {
        let Some(name) = pod.metadata.name.clone() else {
            continue;
        };
        let has_status = pod.status.as_ref().is_some_and(|s| s.pod_ip.is_some());
        if has_status || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        kubelet
            .seen
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_insert_with(Instant::now);
        let pods = pods.clone();
        let kubelet = kubelet.clone();
        tokio::spawn(async move {
            let status = json!({ "status": {
                "phase": "Running",
                "podIP": "10.244.0.9",
                "conditions": [
                    { "type": "PodScheduled", "status": "True" },
                    { "type": "Ready", "status": "True" },
                ],
            }});
            if pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .is_ok()
            {
                kubelet.ready.lock().unwrap().insert(name, Instant::now());
            }
        });
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let projects: usize = std::env::var("BENCH_K8S_PROJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cluster = cluster::get();
    let admin = cluster.admin().await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": NAMESPACE } })).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    let account = serde_json::from_value(json!({ "metadata": { "name": "cloudcode-runner" } })).unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();

    let kubelet = Arc::new(Kubelet {
        seen: Mutex::default(),
        ready: Mutex::default(),
    });
    tokio::spawn(run_kubelet(admin.clone(), kubelet.clone()));

    let calls = Arc::new(AtomicU64::new(0));
    let client = cluster.counting_admin(calls.clone()).await;
    let settings = RunnerSettings {
        namespace: NAMESPACE.into(),
        owner: "bench".into(),
        image: Some("registry.example/cloudcode-runner:bench".into()),
        resources: Resources::default(),
        storage: RunnerStorage::Gateway {
            url: "http://cloudcode-storage.cloudcode.svc.cluster.local:8081".into(),
        },
        routing: Routing::Gateway,
        cluster_domain: "cluster.local".into(),
    };
    let backend = KubernetesBackend::new(
        client,
        Template::parse(DEFAULT_TEMPLATE).unwrap(),
        settings,
        Duration::from_secs(60),
    );
    let orchestrator = Arc::new(Orchestrator::new(
        Arc::new(backend),
        Arc::new(TokenIssuer::generate().unwrap()),
    ));
    let id = |name: String| ProjectId::parse(&name).unwrap();

    // 1. Overheads, one start at a time, after one that opens the
    // connections (printed apart: a server does it once).
    let warm = id("warm-up".into());
    let started = Instant::now();
    orchestrator.start(&warm).await.unwrap();
    println!(
        "first start of the process (connection set-up included): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    orchestrator.stop(&warm).await.unwrap();
    let (mut to_pod, mut from_ready) = (Vec::new(), Vec::new());
    for i in 0..50 {
        let project = id(format!("lat-{i}"));
        let started = Instant::now();
        orchestrator.start(&project).await.unwrap();
        let returned = Instant::now();
        let name = format!("p-{project}");
        let seen = kubelet.seen.lock().unwrap()[&name];
        // `start` may return before the kubelet's task has recorded the
        // answer to its patch: the overhead is then zero.
        let ready = loop {
            if let Some(at) = kubelet.ready.lock().unwrap().get(&name) {
                break *at;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        to_pod.push(seen.saturating_duration_since(started).as_secs_f64() * 1000.0);
        from_ready.push(returned.saturating_duration_since(ready).as_secs_f64() * 1000.0);
        orchestrator.stop(&project).await.unwrap();
    }
    to_pod.sort_by(f64::total_cmp);
    from_ready.sort_by(f64::total_cmp);
    println!(
        "start to pod created (seen by a watch): p50 {:.1} ms  p99 {:.1} ms",
        percentile(&to_pod, 50.0),
        percentile(&to_pod, 99.0)
    );
    println!(
        "pod ready (status written) to start returning: p50 {:.1} ms  p99 {:.1} ms",
        percentile(&from_ready, 50.0),
        percentile(&from_ready, 99.0)
    );

    // 2. Many projects created, then deleted.
    let before_calls = calls.load(Ordering::Relaxed);
    let before_server = server_requests(&admin).await;
    let started = Instant::now();
    futures_util::stream::iter(0..projects)
        .map(|i| {
            let orchestrator = orchestrator.clone();
            async move { orchestrator.start(&id(format!("many-{i}"))).await.unwrap() }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let created = started.elapsed();
    let start_calls = calls.load(Ordering::Relaxed) - before_calls;
    let stopping = Instant::now();
    futures_util::stream::iter(0..projects)
        .map(|i| {
            let orchestrator = orchestrator.clone();
            async move { orchestrator.stop(&id(format!("many-{i}"))).await.unwrap() }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let deleted = stopping.elapsed();
    let all_calls = calls.load(Ordering::Relaxed) - before_calls;
    let server = server_requests(&admin).await - before_server;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let left = pods.list(&Default::default()).await.unwrap().items.len();
    println!(
        "{projects} projects, {CONCURRENCY} at a time: created and ready in {:.1} s, deleted in {:.1} s ({left} pods left)",
        created.as_secs_f64(),
        deleted.as_secs_f64()
    );
    println!(
        "orchestrator API calls per project: {:.1} to start, {:.1} to stop",
        start_calls as f64 / projects as f64,
        (all_calls - start_calls) as f64 / projects as f64
    );
    println!(
        "API server requests over the run: {server:.0} ({:.1} per project, the kubelet's status patch and this count's reads included)",
        server / projects as f64
    );

    // 3. A project restored through the storage gateway, against the same
    // restore straight from the same storage.
    let project = id("restore-bench".into());
    orchestrator.start(&project).await.unwrap();
    let pod = pods.get("p-restore-bench").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
    let file = bytes::Bytes::from(vec![b'x'; 10 * 1024]);
    futures_util::stream::iter(0..10_000)
        .map(|i| {
            let (store, file, code) = (store.clone(), file.clone(), layout::code(&project));
            async move {
                let path = WorkspacePath::parse(&format!("d{}/f{i}.txt", i % 100)).unwrap();
                let key = code.key_for(&path).unwrap();
                store.put(&key, file).await.unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let auth = PodTokenAuthenticator::new(admin.clone(), NAMESPACE, "bench", Duration::from_secs(30));
    let gateway = Arc::new(GatewayState::new(
        store.clone(),
        Arc::new(auth),
        1 << 30,
        dir.path().join("spool"),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { storage_gateway::serve(listener, gateway).await.unwrap() });
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        cluster::pod_token(&admin, NAMESPACE, &pod, "cloudcode-storage").await,
    )
    .unwrap();
    let through_gateway: Arc<dyn ObjectStore> = Arc::new(GatewayStore::new(&url, &token_file).unwrap());
    for (name, store) in [
        ("straight from storage", store),
        ("through the storage gateway", through_gateway),
    ] {
        let workspace = tempfile::tempdir().unwrap();
        let handle = cap_std::fs::Dir::open_ambient_dir(workspace.path(), cap_std::ambient_authority()).unwrap();
        let persister = Persister::new(
            store,
            layout::code(&project),
            handle,
            workspace.path().to_path_buf(),
            Duration::from_millis(100),
        );
        let started = Instant::now();
        let restored = persister.restore().await.unwrap();
        println!(
            "restore of {restored} files / 100 MB {name}: {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}
