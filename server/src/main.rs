use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use cloudcode_proto::storage::ObjectStore;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::s3::S3Store;
use cloudcode_server::api::{AppState, router};
use cloudcode_server::config::Config;
use cloudcode_server::credentials::Credentials;
use cloudcode_server::orchestrator::Orchestrator;
use cloudcode_server::orchestrator::local::{Isolation, LocalBackend, LocalConfig};
use cloudcode_server::projects::Projects;

fn main() -> anyhow::Result<()> {
    let file = cloudcode_server::config::config_file_path(std::env::args());
    if let Some(path) = &file {
        let settings = cloudcode_server::config::read_config_file(path)?;
        for (key, value) in settings {
            // Flags and the environment win over the file.
            if std::env::var_os(&key).is_none() {
                // SAFETY: no other thread exists yet; the runtime starts below.
                unsafe { std::env::set_var(key, value) };
            }
        }
    }
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "cloudcode_server=info".into()),
        )
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
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

async fn run(config: Config) -> anyhow::Result<()> {
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
    let credentials = Credentials::load_or_create(&config_dir)?;

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

    raise_inotify_instances();
    let storage_dir: PathBuf = data_dir.join("storage");
    let (store, mirror_to): (Arc<dyn ObjectStore>, Option<Arc<dyn ObjectStore>>) = if config.storage == "s3" {
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
    };
    let projects = Projects::new(store);
    if let Err(e) = projects.seed_templates().await {
        tracing::warn!("seeding templates failed (retried at the next create): {e}");
    }
    let backend = Arc::new(LocalBackend::new(LocalConfig {
        runner_binary,
        root: cloudcode_server::orchestrator::sandbox_root(&data_dir),
        storage_dir,
        isolation,
        network: if config.sandbox_network == "outbound" {
            anyhow::ensure!(
                std::process::Command::new("slirp4netns")
                    .arg("--version")
                    .output()
                    .is_ok(),
                "--sandbox-network outbound needs slirp4netns (apt-get install slirp4netns)"
            );
            cloudcode_server::orchestrator::local::Network::Outbound
        } else {
            cloudcode_server::orchestrator::local::Network::None
        },
        limits: cloudcode_server::orchestrator::local::Limits {
            memory_bytes: config.sandbox_memory_mib * 1024 * 1024,
            max_pids: config.sandbox_pids,
            cpu_percent: config.sandbox_cpu_percent,
        },
        runner_args: config.runner_args.iter().filter(|a| !a.is_empty()).cloned().collect(),
        mirror_to,
    }));
    let orchestrator = Orchestrator::new(backend, Arc::new(credentials.issuer))
        .remembering(cloudcode_server::orchestrator::sandbox_root(&data_dir).join("running"));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        projects,
        orchestrator,
        api_token: credentials.api_token.clone(),
        ide_domain: config.ide_domain.to_ascii_lowercase(),
        preview_domain: config.preview_domain.to_ascii_lowercase(),
        public_scheme: config.public_scheme.clone(),
        public_port: Some(config.public_port.unwrap_or(addr.port())),
    });
    let reaper = {
        let state = state.clone();
        let idle = std::time::Duration::from_secs(config.idle_timeout_secs);
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
        let state = state.clone();
        tokio::spawn(async move { state.orchestrator.resume().await });
    }
    println!("cloudcode-server listening on {addr}");
    println!(
        "  API: http://localhost:{}/?token={}",
        addr.port(),
        credentials.api_token
    );
    let shutdown_state = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
            tracing::info!("shutting down: stopping sandboxes (they flush their files)");
        })
        .await?;
    reaper.abort();
    shutdown_state.orchestrator.stop_all().await;
    Ok(())
}
