//! The control plane as a library: [`Server::build`] turns settings into a
//! bound listener with its storage, orchestrator and background tasks;
//! [`Server::serve`] answers until a shutdown future completes, then stops
//! what must stop. `main.rs` only parses settings and waits for a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use cloudcode_proto::storage::ObjectStore;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::s3::S3Store;

use crate::api::{AppState, router};
use crate::config::{BackendKind, Config, K8sRouting, K8sStorage, SandboxNetwork, StorageKind};
use crate::credentials::Credentials;
use crate::orchestrator::kubernetes::KubernetesBackend;
use crate::orchestrator::kubernetes::render::{Resources, Routing, RunnerSettings, RunnerStorage, Template};
use crate::orchestrator::kubernetes::token::PodTokenAuthenticator;
use crate::orchestrator::local::{Isolation, LocalBackend, LocalConfig};
use crate::orchestrator::{Orchestrator, SandboxBackend};
use crate::projects::Projects;
use crate::storage_gateway;

/// A control plane, built and bound, not yet serving.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    public_scheme: &'static str,
    public_port: u16,
    api_token: String,
    storage_gateway: Option<(tokio::net::TcpListener, Arc<storage_gateway::GatewayState>)>,
    /// The local sandboxes a previous server left, being taken over.
    adoption: Option<crate::orchestrator::local::Adoption>,
    idle_timeout: std::time::Duration,
}

impl Server {
    /// Opens storage, seeds templates, prepares the sandbox backend and binds
    /// the listener(s). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (data_dir, config_dir) = directories_of(&config)?;
        let credentials = Credentials::load_or_create(&config_dir)?;
        let (store, mirror_to) = open_storage(&config, &data_dir).await?;
        let projects = Projects::new(store.clone());
        if let Err(e) = projects.seed_templates().await {
            tracing::warn!("seeding templates failed (retried at the next create): {e}");
        }
        let kubernetes = config.backend == BackendKind::Kubernetes;
        let mut storage_gateway = None;
        let mut adoption = None;
        let backend: Arc<dyn SandboxBackend> = if kubernetes {
            let (backend, gateway) = kubernetes_backend(&config, store, &data_dir).await?;
            storage_gateway = gateway;
            backend
        } else {
            let backend = local_backend(&config, &data_dir, mirror_to)?;
            // Finished while serving: a sandbox slow to answer (or an S3
            // mirror catching up) never delays the API.
            adoption = Some(
                backend
                    .begin_adoption(&credentials.issuer.verifier().public_base64())
                    .await,
            );
            Arc::new(backend)
        };
        let mut orchestrator = Orchestrator::new(backend, Arc::new(credentials.issuer));
        // Pods are their own record of what runs; local sandboxes need one.
        if !kubernetes {
            orchestrator = orchestrator.remembering(crate::orchestrator::wanted_list(&data_dir));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let public_port = config.public_port.unwrap_or(addr.port());
        let state = Arc::new(AppState::new(
            projects,
            orchestrator,
            credentials.api_token.clone(),
            config.ide_domain.to_ascii_lowercase(),
            config.preview_domain.to_ascii_lowercase(),
            config.public_scheme.as_str().to_owned(),
            Some(public_port),
        ));
        Ok(Self {
            state,
            listener,
            addr,
            public_scheme: config.public_scheme.as_str(),
            public_port,
            api_token: credentials.api_token.clone(),
            storage_gateway,
            adoption,
            idle_timeout: std::time::Duration::from_secs(config.idle_timeout_secs),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The browser IDE's URL that logs a browser in. The token travels in
    /// the fragment, which browsers never send: the page trades it for a
    /// session cookie and removes it from the address bar and history.
    pub fn login_url(&self) -> String {
        format!(
            "{}://localhost:{}/#token={}",
            self.public_scheme, self.public_port, self.api_token
        )
    }

    /// Serves until `shutdown` completes; then hands its sandboxes over to
    /// the next server (they keep running: see [`stop_sandboxes`] to end
    /// them). The one place shutdown happens.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.state;
        let reaper = {
            let state = state.clone();
            let idle = self.idle_timeout;
            let period = (idle / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    state.orchestrator.reap_idle(idle).await;
                }
            })
        };
        {
            // Resumed once the adoptions are done: what was running is then
            // known (a sandbox whose stop was under way is stopped), and what
            // is wanted but was not adopted is started.
            let state = state.clone();
            let adoption = self.adoption;
            tokio::spawn(async move {
                if let Some(adoption) = adoption {
                    let adopted = adoption.finish().await;
                    if !adopted.is_empty() {
                        tracing::info!(
                            count = adopted.len(),
                            "took over the sandboxes the previous server left running"
                        );
                    }
                }
                state.orchestrator.resume().await
            });
        }
        if let Some((listener, gateway)) = self.storage_gateway {
            tracing::info!(addr = ?listener.local_addr().ok(), "storage gateway for runner pods");
            tokio::spawn(async move {
                if let Err(e) = storage_gateway::serve(listener, gateway).await {
                    tracing::error!("the storage gateway stopped: {e}");
                }
            });
        }
        let shutdown_state = state.clone();
        axum::serve(self.listener.tap_io(no_delay), router(state))
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: sandboxes keep running for the next server");
            })
            .await?;
        reaper.abort();
        shutdown_state.orchestrator.shutdown().await;
        Ok(())
    }
}

/// `cloudcode-server --stop-sandboxes`: stops every local sandbox of this
/// data directory (each runner flushes its files first; an S3 mirror
/// uploads the rest), with no server running on it. They stay wanted: the
/// next server starts them afresh. Returns how many were running.
pub async fn stop_sandboxes(config: Config) -> anyhow::Result<usize> {
    anyhow::ensure!(
        config.backend == BackendKind::Local,
        "--stop-sandboxes stops local sandboxes; runner pods are the cluster's (kubectl delete pods -l ...)"
    );
    let (data_dir, config_dir) = directories_of(&config)?;
    let credentials = Credentials::load_or_create(&config_dir)?;
    let (_, mirror_to) = open_storage(&config, &data_dir).await?;
    let backend = local_backend(&config, &data_dir, mirror_to)?;
    // Sandboxes that cannot be adopted are ended by the adoption itself.
    let adopted = backend.adopt(&credentials.issuer.verifier().public_base64()).await;
    let orchestrator = Orchestrator::new(Arc::new(backend), Arc::new(credentials.issuer));
    orchestrator.stop_all().await;
    Ok(adopted.len())
}

/// The data and config directories: the settings', or the user's.
fn directories_of(config: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dirs = directories::ProjectDirs::from("dev", "cloudcode", "cloudcode");
    let data_dir = config
        .data_dir
        .clone()
        .or_else(|| dirs.as_ref().map(|d| d.data_dir().to_path_buf()))
        .context("no data directory: pass --data-dir")?;
    let config_dir = config
        .config_dir
        .clone()
        .or_else(|| dirs.as_ref().map(|d| d.config_dir().to_path_buf()))
        .context("no config directory: pass --config-dir")?;
    Ok((data_dir, config_dir))
}

/// The project store and, with S3, the store local sandboxes' storage is
/// mirrored to.
async fn open_storage(
    config: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Arc<dyn ObjectStore>, Option<Arc<dyn ObjectStore>>)> {
    let storage_dir: PathBuf = data_dir.join("storage");
    Ok(if config.storage == StorageKind::S3 {
        let s3 = S3Store::connect(config.s3.config())
            .await
            .context("configuring S3 storage")?;
        if let Err(e) = s3.ensure_bucket().await {
            tracing::warn!("checking the S3 bucket failed (retried as projects are used): {e}");
        }
        let s3: Arc<dyn ObjectStore> = Arc::new(s3);
        (s3.clone(), Some(s3))
    } else {
        (
            Arc::new(LocalStore::open(&storage_dir).context("opening local storage")?),
            None,
        )
    })
}

/// The local sandbox backend from the settings (nothing adopted yet).
fn local_backend(
    config: &Config,
    data_dir: &std::path::Path,
    mirror_to: Option<Arc<dyn ObjectStore>>,
) -> anyhow::Result<LocalBackend> {
    let isolation = if bubblewrap_available() {
        Isolation::Bubblewrap
    } else if config.insecure_no_sandbox {
        tracing::error!(
            "!!! bubblewrap is missing and --insecure-no-sandbox is set: users' code runs UNSANDBOXED with this server's privileges !!!"
        );
        Isolation::Insecure
    } else {
        anyhow::bail!(
            "bubblewrap (bwrap) is required to sandbox runners: install it (apt-get install bubblewrap), or pass --insecure-no-sandbox for development only"
        );
    };
    let runner_binary = match &config.runner_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("cloudcode-runner"),
    };
    anyhow::ensure!(
        runner_binary.exists(),
        "runner binary {} not found (--runner-binary)",
        runner_binary.display()
    );
    let network = if config.sandbox_network == SandboxNetwork::Outbound {
        anyhow::ensure!(
            std::process::Command::new("slirp4netns")
                .arg("--version")
                .output()
                .is_ok(),
            "--sandbox-network outbound needs slirp4netns (apt-get install slirp4netns)"
        );
        crate::orchestrator::local::Network::Outbound
    } else {
        crate::orchestrator::local::Network::None
    };
    raise_inotify_instances();
    Ok(LocalBackend::new(LocalConfig {
        runner_binary,
        root: crate::orchestrator::sandbox_root(data_dir),
        storage_dir: data_dir.join("storage"),
        isolation,
        network,
        limits: crate::orchestrator::local::Limits {
            memory_bytes: config.sandbox_memory_mib * 1024 * 1024,
            max_pids: config.sandbox_pids,
            cpu_percent: config.sandbox_cpu_percent,
        },
        runner_args: config.runner_args.iter().filter(|a| !a.is_empty()).cloned().collect(),
        mirror_to,
    })?)
}

/// Every runner watches its workspace with one inotify instance, and every
/// sandbox's instances count against one user on the host: the common
/// default of 128 would cap the machine at about 128 running projects.
fn raise_inotify_instances() {
    const PATH: &str = "/proc/sys/fs/inotify/max_user_instances";
    const WANTED: u64 = 8192;
    let current: u64 = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if current >= WANTED {
        return;
    }
    match std::fs::write(PATH, WANTED.to_string()) {
        Ok(()) => tracing::info!("raised fs.inotify.max_user_instances from {current} to {WANTED}"),
        Err(e) => tracing::warn!(
            "fs.inotify.max_user_instances is {current} and cannot be raised ({e}): at most about {current} projects can run at once"
        ),
    }
}

fn bubblewrap_available() -> bool {
    std::process::Command::new("bwrap")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Terminal frames and small answers go out at once, not after the
/// client's delayed ACK (Nagle's algorithm).
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
}

/// The Kubernetes backend from the settings: the cluster of KUBECONFIG, or
/// of the pod's own service account when the server runs in one; and, with
/// gateway storage, the storage gateway's listener and routes.
async fn kubernetes_backend(
    config: &Config,
    store: Arc<dyn ObjectStore>,
    data_dir: &std::path::Path,
) -> anyhow::Result<(
    Arc<dyn SandboxBackend>,
    Option<(tokio::net::TcpListener, Arc<storage_gateway::GatewayState>)>,
)> {
    let k8s = &config.kubernetes;
    let gateway = k8s.k8s_storage == K8sStorage::Gateway;
    anyhow::ensure!(
        gateway || config.storage == StorageKind::S3,
        "--k8s-storage direct needs --storage s3: runner pods then reach object storage themselves"
    );
    if config.storage != StorageKind::S3 {
        // Replicas share nothing but the cluster and storage: with a local
        // directory each would see different projects.
        tracing::warn!(
            "the Kubernetes backend with local storage keeps projects on this server's disk: run a single replica, or use --storage s3"
        );
    }
    let template_text = match &k8s.k8s_template {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => crate::orchestrator::kubernetes::render::DEFAULT_TEMPLATE.to_string(),
    };
    let template = Template::parse(&template_text)?;
    let storage = if gateway {
        RunnerStorage::Gateway {
            url: k8s.k8s_storage_gateway_url.clone().unwrap_or_else(|| {
                format!(
                    "http://cloudcode-storage.cloudcode.svc.{}:{}",
                    k8s.k8s_cluster_domain,
                    k8s.k8s_storage_gateway_listen.port()
                )
            }),
        }
    } else {
        let mut env = vec![("CLOUDCODE_STORAGE".to_string(), "s3".to_string())];
        let s3 = &config.s3;
        for (name, value) in [
            ("CLOUDCODE_S3_BUCKET", s3.s3_bucket.clone()),
            ("CLOUDCODE_S3_ENDPOINT", s3.s3_endpoint.clone()),
            ("CLOUDCODE_S3_REGION", s3.s3_region.clone()),
            ("CLOUDCODE_S3_PATH_STYLE", s3.s3_path_style.then(|| "true".to_string())),
        ] {
            if let Some(value) = value {
                env.push((name.to_string(), value));
            }
        }
        RunnerStorage::Direct {
            env,
            secret_prefix: Some(k8s.k8s_storage_secret_prefix.clone()).filter(|p| !p.is_empty()),
        }
    };
    let routing = match k8s.k8s_routing {
        K8sRouting::Ingress => Routing::Ingress {
            class: k8s.k8s_ingress_class.clone(),
            ide_domain: config.ide_domain.to_ascii_lowercase(),
            preview_domain: config.preview_domain.to_ascii_lowercase(),
        },
        K8sRouting::Gateway => Routing::Gateway,
    };
    let settings = RunnerSettings {
        namespace: k8s.k8s_namespace.clone(),
        owner: k8s.k8s_owner.clone(),
        image: k8s.k8s_runner_image.clone(),
        resources: Resources {
            cpu_request: k8s.k8s_cpu_request.clone(),
            memory_request: k8s.k8s_memory_request.clone(),
            cpu_limit: k8s.k8s_cpu_limit.clone(),
            memory_limit: k8s.k8s_memory_limit.clone(),
        },
        storage,
        routing,
        cluster_domain: k8s.k8s_cluster_domain.clone(),
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, or the in-cluster service account)")?;
    tracing::info!(namespace = %settings.namespace, owner = %settings.owner, "kubernetes sandbox backend");
    let storage_gateway = if gateway {
        let auth = PodTokenAuthenticator::new(
            client.clone(),
            &settings.namespace,
            &settings.owner,
            std::time::Duration::from_secs(k8s.k8s_storage_token_cache_secs),
        );
        let state = Arc::new(storage_gateway::GatewayState::new(
            store,
            Arc::new(auth),
            k8s.k8s_storage_max_object_bytes,
            data_dir.join("spool"),
        ));
        let listener = tokio::net::TcpListener::bind(k8s.k8s_storage_gateway_listen)
            .await
            .with_context(|| format!("binding the storage gateway to {}", k8s.k8s_storage_gateway_listen))?;
        Some((listener, state))
    } else {
        None
    };
    let backend = KubernetesBackend::new(
        client,
        template,
        settings,
        std::time::Duration::from_secs(k8s.k8s_start_timeout_secs),
    );
    Ok((Arc::new(backend), storage_gateway))
}
