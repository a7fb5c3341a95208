//! The Kubernetes backend against a real API server (see `cluster.rs`).

mod cluster;
mod storage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cloudcode_proto::token::TokenIssuer;
use cloudcode_server::gateway::Upstream;
use cloudcode_server::orchestrator::kubernetes::KubernetesBackend;
use cloudcode_server::orchestrator::kubernetes::render::{
    DEFAULT_TEMPLATE, Resources, Routing, RunnerSettings, RunnerStorage, Template,
};
use cloudcode_server::orchestrator::kubernetes::token::PodTokenAuthenticator;
use cloudcode_server::orchestrator::{Orchestrator, SandboxBackend, SandboxSpec, SandboxState};
use cloudcode_server::projects::ProjectId;
use cloudcode_server::storage_gateway::Authenticator;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// A namespace of the test's own, so listings see only its objects.
async fn namespace(client: &kube::Client) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("t{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    namespaces.create(&PostParams::default(), &object).await.unwrap();
    // The template's runs-as account: pods naming a missing one are refused.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
    let account = serde_json::from_value(json!({
        "metadata": { "name": "cloudcode-runner" },
        "automountServiceAccountToken": false,
    }))
    .unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();
    name
}

fn settings(namespace: &str, routing: Routing) -> RunnerSettings {
    RunnerSettings {
        namespace: namespace.to_string(),
        owner: "test".into(),
        image: Some("registry.example/cloudcode-runner:test".into()),
        resources: Resources::default(),
        storage: RunnerStorage::Gateway {
            url: "http://cloudcode-storage.cloudcode.svc.cluster.local:8081".into(),
        },
        routing,
        cluster_domain: "cluster.local".into(),
    }
}

fn backend(client: kube::Client, settings: RunnerSettings) -> KubernetesBackend {
    KubernetesBackend::new(
        client,
        Template::parse(DEFAULT_TEMPLATE).unwrap(),
        settings,
        Duration::from_secs(30),
    )
}

fn id(s: &str) -> ProjectId {
    ProjectId::parse(s).unwrap()
}

fn spec(project: &str) -> SandboxSpec {
    SandboxSpec {
        project: id(project),
        token_public_key: "PUBLIC-KEY".into(),
    }
}

/// Waits for the pod a start creates; fails with the start's own error if
/// it ends first.
async fn wait_for_pod<T: std::fmt::Debug>(pods: &Api<Pod>, name: &str, start: &mut tokio::task::JoinHandle<T>) -> Pod {
    for _ in 0..600 {
        if let Some(pod) = pods.get_opt(name).await.unwrap() {
            return pod;
        }
        if start.is_finished() {
            panic!("the start ended before pod {name} existed: {:?}", start.await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pod {name} never appeared");
}

/// Plays the kubelet: the pod runs and its readiness probe passes.
async fn kubelet_ready(pods: &Api<Pod>, name: &str) {
    let status = json!({ "status": {
        "phase": "Running",
        "podIP": "10.244.0.7",
        "conditions": [
            { "type": "PodScheduled", "status": "True" },
            { "type": "Ready", "status": "True" },
        ],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn kubelet_waiting(pods: &Api<Pod>, name: &str, reason: &str, message: &str) {
    let status = json!({ "status": {
        "phase": "Pending",
        "containerStatuses": [{
            "name": "runner",
            "image": "registry.example/cloudcode-runner:test",
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": { "waiting": { "reason": reason, "message": message } },
        }],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn by_label<K>(client: &kube::Client, namespace: &str, project: &str) -> usize
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let selector = format!("cloudcode.dev/project={project}");
    api.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn start_creates_a_restricted_runner_and_returns_only_once_it_is_ready() {
    let cluster = cluster::get();
    let client = cluster.admin().await;
    let ns = namespace(&client).await;
    let issuer = Arc::new(TokenIssuer::generate().unwrap());
    let public_key = issuer.verifier().public_base64();
    let orchestrator = Arc::new(Orchestrator::new(
        Arc::new(backend(client.clone(), settings(&ns, Routing::Gateway))),
        issuer,
    ));
    let mut start = {
        let orchestrator = orchestrator.clone();
        tokio::spawn(async move { orchestrator.start(&id("alpha")).await })
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = wait_for_pod(&pods, "p-alpha", &mut start).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!start.is_finished(), "start returned before the pod was ready");
    assert_eq!(orchestrator.state(&id("alpha")).await, SandboxState::Starting);

    // The pod as specified.
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["cloudcode.dev/project"], "alpha");
    assert_eq!(labels["cloudcode.dev/owner"], "test");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "cloudcode");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.service_account_name.as_deref(), Some("cloudcode-runner"));
    let pod_security = spec.security_context.clone().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let runner = &spec.containers[0];
    assert_eq!(runner.image.as_deref(), Some("registry.example/cloudcode-runner:test"));
    let args = runner.args.clone().unwrap();
    assert_eq!(
        args[..4],
        ["--project", "alpha", "--token-public-key", public_key.as_str()]
    );
    let security = runner.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    let resources = runner.resources.clone().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "50m");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "1Gi");
    let probe = runner.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.path.as_deref(), Some("/v1/ready"));
    // Storage through the gateway with the pod's own bound token, as the
    // API server stored it.
    assert!(runner.env_from.is_none(), "no Secret in the pod");
    let volumes = pod.spec.clone().unwrap().volumes.unwrap();
    let token = volumes
        .iter()
        .find_map(|v| v.projected.as_ref()?.sources.as_ref()?[0].service_account_token.clone())
        .expect("a projected service-account token");
    assert_eq!(token.audience.as_deref(), Some("cloudcode-storage"));
    assert!(
        runner
            .env
            .iter()
            .flatten()
            .all(|e| e.value_from.is_none() && !e.name.contains("SECRET")),
        "no credential in the pod spec"
    );

    // Its Service, owned by the pod so it can never outlive it.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let service = services.get("p-alpha").await.unwrap();
    let owner = &service.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Pod", "p-alpha"));
    assert_eq!(owner.uid, pod.metadata.uid.clone().unwrap());
    let service_spec = service.spec.unwrap();
    assert_eq!(service_spec.selector.unwrap()["cloudcode.dev/project"], "alpha");
    let ports: Vec<i32> = service_spec.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [3001, 3000]);
    // Applied server-side by one field manager.
    let managers: Vec<String> = service
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert!(managers.contains(&"cloudcode-server".to_string()), "{managers:?}");

    kubelet_ready(&pods, "p-alpha").await;
    let started = start.await.unwrap().unwrap();
    assert_eq!(
        started.endpoints.ide,
        Upstream::Tcp(format!("p-alpha.{ns}.svc.cluster.local:3001"))
    );
    assert_eq!(
        started.endpoints.preview,
        Upstream::Tcp(format!("p-alpha.{ns}.svc.cluster.local:3000"))
    );
    assert!(started.token.starts_with("cc1."));
    assert!(matches!(
        orchestrator.state(&id("alpha")).await,
        SandboxState::Running(_)
    ));

    // Starting again adopts the running pod.
    let again = orchestrator.start(&id("alpha")).await.unwrap();
    assert_eq!(again.endpoints, started.endpoints);

    // Deleting the project leaves nothing of it in the cluster.
    orchestrator.forget(&id("alpha"), async {}).await.unwrap();
    assert_eq!(by_label::<Pod>(&client, &ns, "alpha").await, 0);
    assert_eq!(by_label::<Service>(&client, &ns, "alpha").await, 0);
    assert_eq!(orchestrator.state(&id("alpha")).await, SandboxState::Stopped);
}

/// The gateway asks a project's state for every request it routes, and the
/// reaper for every running project: a watch answers, not the API server.
#[tokio::test(flavor = "multi_thread")]
async fn state_comes_from_a_watch_not_a_read_per_question() {
    let cluster = cluster::get();
    let admin = cluster.admin().await;
    let ns = namespace(&admin).await;
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = cluster.counting_admin(calls.clone()).await;
    let backend = Arc::new(backend(counted, settings(&ns, Routing::Gateway)));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let mut start = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.ensure_running(&spec("watched")).await })
    };
    wait_for_pod(&pods, "p-watched", &mut start).await;
    kubelet_ready(&pods, "p-watched").await;
    start.await.unwrap().unwrap();
    // Past the window in which this replica's own start is the answer.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let before = calls.load(Ordering::Relaxed);
    for _ in 0..200 {
        assert!(matches!(backend.state(&id("watched")).await, SandboxState::Running(_)));
    }
    assert_eq!(backend.running().await, vec![id("watched")]);
    assert_eq!(backend.state(&id("never-started")).await, SandboxState::Stopped);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        before,
        "state and running read the API server"
    );

    // Another replica stops it: this one sees that from its watch.
    pods.delete("p-watched", &Default::default()).await.unwrap();
    let mut stopped = false;
    for _ in 0..100 {
        if backend.state(&id("watched")).await == SandboxState::Stopped {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "a pod deleted elsewhere still looks running");
    assert!(backend.running().await.is_empty());
    assert_eq!(
        calls.load(Ordering::Relaxed),
        before,
        "state and running read the API server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ingress_routing_gives_each_project_an_ingress_and_stop_removes_all() {
    let cluster = cluster::get();
    let client = cluster.admin().await;
    let ns = namespace(&client).await;
    let routing = Routing::Ingress {
        class: Some("nginx".into()),
        ide_domain: "ide.example.com".into(),
        preview_domain: "preview.example.com".into(),
    };
    let backend = Arc::new(backend(client.clone(), settings(&ns, routing)));
    let mut start = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.ensure_running(&spec("beta")).await })
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for_pod(&pods, "p-beta", &mut start).await;
    kubelet_ready(&pods, "p-beta").await;
    start.await.unwrap().unwrap();

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let ingress = ingresses.get("p-beta").await.unwrap();
    assert_eq!(ingress.metadata.owner_references.unwrap()[0].name, "p-beta");
    let spec = ingress.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let hosts: Vec<(String, i32)> = spec
        .rules
        .unwrap()
        .into_iter()
        .map(|r| {
            let backend = r.http.unwrap().paths[0].backend.service.clone().unwrap();
            (r.host.unwrap(), backend.port.unwrap().number.unwrap())
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("beta.ide.example.com".to_string(), 3001),
            ("beta.preview.example.com".to_string(), 3000)
        ]
    );

    backend.stop(&id("beta")).await.unwrap();
    assert_eq!(by_label::<Pod>(&client, &ns, "beta").await, 0);
    assert_eq!(by_label::<Service>(&client, &ns, "beta").await, 0);
    assert_eq!(by_label::<Ingress>(&client, &ns, "beta").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_pull_failure_is_reported_with_the_pods_reason() {
    let cluster = cluster::get();
    let client = cluster.admin().await;
    let ns = namespace(&client).await;
    let backend = Arc::new(backend(client.clone(), settings(&ns, Routing::Gateway)));
    let mut start = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.ensure_running(&spec("gamma")).await })
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for_pod(&pods, "p-gamma", &mut start).await;
    kubelet_waiting(&pods, "p-gamma", "ContainerCreating", "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!start.is_finished(), "creating a container is no failure");
    kubelet_waiting(
        &pods,
        "p-gamma",
        "ErrImagePull",
        "rpc error: pull access denied for registry.example/cloudcode-runner",
    )
    .await;
    let error = start.await.unwrap().unwrap_err().to_string();
    assert!(error.contains("ErrImagePull"), "{error}");
    assert!(error.contains("pull access denied"), "{error}");
    // Nothing is left half-started: the next start begins afresh.
    assert_eq!(by_label::<Pod>(&client, &ns, "gamma").await, 0);
    assert_eq!(by_label::<Service>(&client, &ns, "gamma").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_control_plane_readopts_and_concurrent_starts_make_one_pod() {
    let cluster = cluster::get();
    let client = cluster.admin().await;
    let ns = namespace(&client).await;
    // Two replicas of the control plane, each with its own client.
    let first = Arc::new(backend(client.clone(), settings(&ns, Routing::Gateway)));
    let second = Arc::new(backend(cluster.admin().await, settings(&ns, Routing::Gateway)));
    let mut starts: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|b| tokio::spawn(async move { b.ensure_running(&spec("delta")).await }))
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait_for_pod(&pods, "p-delta", &mut starts[0]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet_ready(&pods, "p-delta").await;
    for start in starts {
        start.await.unwrap().unwrap();
    }
    assert_eq!(
        by_label::<Pod>(&client, &ns, "delta").await,
        1,
        "one pod for two starts"
    );

    // A control plane started afterwards knows nothing but the cluster, and
    // finds the project running there.
    let third = backend(cluster.admin().await, settings(&ns, Routing::Gateway));
    assert_eq!(third.running().await, vec![id("delta")]);
    assert!(matches!(third.state(&id("delta")).await, SandboxState::Running(_)));
    // Another installation sharing the namespace sees none of it.
    let mut other = settings(&ns, Routing::Gateway);
    other.owner = "other".into();
    let foreign = backend(cluster.admin().await, other);
    assert!(foreign.running().await.is_empty());
    assert!(
        foreign.ensure_running(&spec("delta")).await.is_err(),
        "never adopts another's pod"
    );
    third.stop(&id("delta")).await.unwrap();
    assert_eq!(by_label::<Pod>(&client, &ns, "delta").await, 0);
}

/// The manifests in k8s/ against the API server: the kustomize base passes a
/// server-side dry run, and the server's service account can do what the
/// backend needs and nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn the_k8s_manifests_apply_and_the_servers_account_has_least_privilege() {
    let cluster = cluster::get();
    let k8s = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s");
    // A dry run cannot create the namespaces the rest goes in: create them.
    let output = cluster.kubectl(&["apply", "-f", &format!("{k8s}/namespaces.yaml")]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = cluster.kubectl(&["apply", "--dry-run=server", "-k", k8s]);
    assert!(
        output.status.success(),
        "kubectl apply --dry-run=server -k k8s/: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let applied = String::from_utf8_lossy(&output.stdout);
    for object in [
        "deployment.apps/cloudcode-server",
        "role.rbac.authorization.k8s.io/cloudcode-server",
        "networkpolicy.networking.k8s.io/runners",
        "ingress.networking.k8s.io/cloudcode",
        "configmap/cloudcode-runner-template",
        "service/cloudcode-storage",
        "clusterrolebinding.rbac.authorization.k8s.io/cloudcode-server-token-review",
    ] {
        assert!(applied.contains(object), "{object} missing from:\n{applied}");
    }

    // The real service account and its Role, as k8s/ defines them.
    for file in ["server-rbac.yaml", "runner-serviceaccount.yaml"] {
        let output = cluster.kubectl(&["apply", "-f", &format!("{k8s}/{file}")]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let admin = cluster.admin().await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "cloudcode");
    let mut token = None;
    for _ in 0..300 {
        let list = secrets.list(&ListParams::default()).await.unwrap();
        token = list.items.into_iter().find_map(|s| {
            let annotations = s.metadata.annotations?;
            (annotations.get("kubernetes.io/service-account.name")? == "cloudcode-server")
                .then(|| s.data?.get("token").cloned())
                .flatten()
        });
        if token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = String::from_utf8(token.expect("the token controller made no token").0).unwrap();
    let server = cluster.client(&token).await;

    // What the backend does works with that account...
    let backend = Arc::new(backend(
        server.clone(),
        settings("cloudcode-projects", Routing::Gateway),
    ));
    let mut start = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.ensure_running(&spec("rbac-check")).await })
    };
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "cloudcode-projects");
    wait_for_pod(&pods, "p-rbac-check", &mut start).await;
    kubelet_ready(&pods, "p-rbac-check").await;
    start.await.unwrap().unwrap();
    assert_eq!(backend.running().await, vec![id("rbac-check")]);
    // ...and so does the storage gateway's token review.
    let pod = pods.get("p-rbac-check").await.unwrap();
    let runner_token = cluster::pod_token(&admin, "cloudcode-projects", &pod, "cloudcode-storage").await;
    let reviewer = PodTokenAuthenticator::new(server.clone(), "cloudcode-projects", "test", Duration::ZERO);
    assert_eq!(reviewer.project_of(&runner_token).await.unwrap(), id("rbac-check"));
    backend.stop(&id("rbac-check")).await.unwrap();

    // ...and nothing more: no Secrets, no other namespace, no status writes.
    let forbidden = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what} should be forbidden: {other:?}"),
    };
    let their_secrets: Api<Secret> = Api::namespaced(server.clone(), "cloudcode-projects");
    forbidden(
        their_secrets.list(&ListParams::default()).await.map(drop),
        "listing secrets",
    );
    let elsewhere: Api<Pod> = Api::namespaced(server.clone(), "default");
    forbidden(
        elsewhere.list(&ListParams::default()).await.map(drop),
        "pods in another namespace",
    );
    let namespaces: Api<Namespace> = Api::all(server.clone());
    forbidden(
        namespaces
            .delete("cloudcode-projects", &Default::default())
            .await
            .map(drop),
        "deleting a namespace",
    );
}
