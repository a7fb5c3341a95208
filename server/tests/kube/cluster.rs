//! A real Kubernetes control plane for the tests: etcd, kube-apiserver and
//! kube-controller-manager (built from Debian's source by
//! `.ci/kube-apiserver`), started once per test binary on free loopback
//! ports. There is no scheduler and no kubelet: tests play the kubelet by
//! patching pod status.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

pub struct Cluster {
    pub url: String,
    pub admin_kubeconfig: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kube_bin() -> PathBuf {
    let dir = std::env::var_os("CLOUDCODE_KUBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/cloudcode-ci/kubernetes/bin"));
    assert!(
        dir.join("kube-apiserver").exists(),
        "kube-apiserver not found in {}: run .ci/kube-apiserver (or set CLOUDCODE_KUBE_BIN)",
        dir.display()
    );
    dir
}

/// Processes of the cluster die with the test process: they are spawned
/// from a thread that lives as long as it, with PR_SET_PDEATHSIG.
fn spawn(mut command: Command, log: &Path) {
    let log = std::fs::File::create(log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()));
    std::mem::forget(child);
}

pub fn kubeconfig(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\ncurrent-context: test\n"
    )
}

pub fn get() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The thread that spawns the cluster never ends before the process.
        std::thread::spawn(move || {
            tx.send(start()).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    })
}

fn start() -> Cluster {
    let bin = kube_bin();
    let dir = std::env::temp_dir().join(format!("cloudcode-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&["genrsa", "-out", "sa.key", "2048"]);
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    std::fs::write(dir.join("tokens.csv"), "admintoken,admin,admin,\"system:masters\"\n").unwrap();

    let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let mut etcd = Command::new("etcd");
    etcd.arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--name", "default"])
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"));
    spawn(etcd, &dir.join("etcd.log"));

    let d = dir.display();
    let mut apiserver = Command::new(bin.join("kube-apiserver"));
    apiserver.args([
        format!("--etcd-servers=http://127.0.0.1:{client_port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={api_port}"),
        "--insecure-port=0".into(),
        format!("--cert-dir={d}/certs"),
        format!("--token-auth-file={d}/tokens.csv"),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-key-file={d}/sa.pub"),
        format!("--service-account-signing-key-file={d}/sa.key"),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        "--api-audiences=https://kubernetes.default.svc".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--endpoint-reconciler-type=none".into(),
    ]);
    spawn(apiserver, &dir.join("apiserver.log"));

    let url = format!("https://127.0.0.1:{api_port}");
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    std::fs::write(&admin_kubeconfig, kubeconfig(&url, "admintoken")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&admin_kubeconfig)
            .args(["get", "--raw", "/readyz"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver not ready; its log:\n{}",
            std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Garbage collection (owner references) and service-account tokens.
    let mut controllers = Command::new(bin.join("kube-controller-manager"));
    controllers.arg(format!("--kubeconfig={}", admin_kubeconfig.display())).args([
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        "--port=0".into(),
        format!("--service-account-private-key-file={d}/sa.key"),
        format!("--root-ca-file={d}/certs/apiserver.crt"),
        "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-ttl,-csrsigning,-csrapproving,-bootstrapsigner,-tokencleaner".into(),
    ]);
    spawn(controllers, &dir.join("controller-manager.log"));
    Cluster { url, admin_kubeconfig }
}

impl Cluster {
    pub async fn client(&self, token: &str) -> kube::Client {
        let kubeconfig: kube::config::Kubeconfig = serde_yaml::from_str(&kubeconfig(&self.url, token)).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// An admin client that counts every request it sends in `count`.
    pub async fn counting_admin(&self, count: std::sync::Arc<std::sync::atomic::AtomicU64>) -> kube::Client {
        let kubeconfig: kube::config::Kubeconfig = serde_yaml::from_str(&kubeconfig(&self.url, "admintoken")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        let layer = tower::util::MapRequestLayer::new(move |request| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            request
        });
        kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(&layer)
            .build()
    }

    pub async fn admin(&self) -> kube::Client {
        self.client("admintoken").await
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .output()
            .unwrap()
    }
}

/// What the kubelet does for a projected volume: a token of the pod's
/// service account, bound to the pod, for `audience`.
pub async fn pod_token(admin: &kube::Client, ns: &str, pod: &Pod, audience: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.to_string()],
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(3600),
        },
        ..Default::default()
    };
    let answer = accounts
        .create_token_request("cloudcode-runner", &PostParams::default(), &request)
        .await
        .unwrap();
    answer.status.unwrap().token
}
