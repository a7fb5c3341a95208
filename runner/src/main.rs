use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
#[cfg(feature = "s3")]
use cloudcode_proto::storage::s3::S3Store;
use cloudcode_proto::storage::{KeyPrefix, ObjectStore, layout};
use cloudcode_proto::sync::persister::Persister;
use cloudcode_proto::token::TokenVerifier;
use cloudcode_runner::config::{Config, SECRET_ENV, StorageKind};
use cloudcode_runner::files::Workspace;
use cloudcode_runner::sched;
use cloudcode_runner::shutdown::Shutdown;
use cloudcode_runner::state::{Limits, RunnerState};
use cloudcode_runner::terminal::{TerminalConfig, Terminals};

/// Binds a Unix socket, replacing a stale one left by an earlier runner.
fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // User code runs as our uid: non-dumpable makes /proc/<runner>/environ,
    // /mem and ptrace off-limits to it. (Children reset this on exec.)
    // SAFETY: prctl with these arguments has no memory-safety preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    for var in SECRET_ENV {
        // SAFETY: no other thread exists yet; the runtime starts below.
        unsafe { std::env::remove_var(var) };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "cloudcode_runner=info".into()),
        )
        .init();
    #[cfg(any(feature = "s3", feature = "gateway"))]
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // One worker: a runner serves a handful of clients of one project, and a
    // keystroke's echo then never crosses workers (PTY reader thread -> pump
    // -> socket writer stay on one). Blocking work uses block_in_place, the
    // blocking pool (which a multi-thread runtime keeps available) and each
    // connection's workspace thread (`workspace_queue`).
    //
    // Persistence has a runtime of its own, so the bookkeeping of an
    // `npm install`'s 100,000 files (inotify batches, the persister's maps,
    // storage calls) never runs on the worker that carries keystrokes.
    let storage = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("storage")
        // Background storage work only: it yields to the rest at once.
        .on_thread_start(|| sched::make_idle(0))
        .enable_all()
        .build()
        .context("starting the storage runtime")?;
    // This thread and the main runtime's carry terminal bytes and clients'
    // requests: they preempt whatever runs when they wake.
    sched::shorten_slice(0);
    let served = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| sched::shorten_slice(0))
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config, storage.handle().clone()));
    // Dropped here, outside any runtime, once `run` has flushed.
    drop(storage);
    served
}

/// Runs the accept loop on the runtime's worker, not on the thread that
/// `block_on` runs `run` on: there every new connection cost two wake-ups
/// of sleeping threads before its first byte was read (the worker's poll
/// woke this thread, which accepted and handed the connection back to the
/// worker), most of a WebSocket upgrade's time on an idle runner.
async fn serve_on_worker(
    serve: impl std::future::IntoFuture<Output = std::io::Result<()>, IntoFuture: Send + 'static>,
) -> anyhow::Result<()> {
    tokio::spawn(serve.into_future())
        .await
        .context("the server task failed")?
        .context("serving")
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match config.storage {
        StorageKind::Local => {
            let dir = config
                .storage_dir
                .clone()
                .context("--storage-dir is required with --storage local")?;
            Arc::new(LocalStore::open(&dir).with_context(|| format!("opening local storage at {}", dir.display()))?)
        }
        #[cfg(feature = "gateway")]
        StorageKind::Gateway => {
            let (Some(url), Some(token_file)) = (&config.storage_gateway_url, &config.storage_token_file) else {
                anyhow::bail!("--storage gateway needs --storage-gateway-url and --storage-token-file");
            };
            Arc::new(
                cloudcode_proto::storage::gateway::GatewayStore::new(url, token_file)
                    .context("configuring the storage gateway")?,
            )
        }
        #[cfg(feature = "s3")]
        StorageKind::S3 => Arc::new(
            S3Store::connect(config.s3.config())
                .await
                .context("configuring S3 storage")?,
        ),
    })
}

/// The terminals' home: its own directory, kept in storage under the
/// layout's `home/<project>/` by a persister of its own, without the caches
/// of [`layout::HOME_UNSAVED`]. Not part of the workspace: no client's file
/// operation reaches it.
struct Home {
    root: std::path::PathBuf,
    persister: Arc<Persister>,
}

fn open_home(
    store: &Arc<dyn ObjectStore>,
    project: &ProjectId,
    dir: &std::path::Path,
    config: &Config,
) -> anyhow::Result<Home> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dir).with_context(|| format!("creating the home directory {}", dir.display()))?;
    let root = dir
        .canonicalize()
        .with_context(|| format!("opening the home directory {}", dir.display()))?;
    let meta = std::fs::metadata(&root)?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() == unsafe { libc::geteuid() } {
        // Whoever may write into a home may plant a `.bashrc` in it.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", root.display()))?;
    } else if meta.mode() & 0o022 != 0 {
        tracing::warn!(
            "the home directory {} is not ours and others may write to it",
            root.display()
        );
    }
    let handle = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority())
        .with_context(|| format!("opening the home directory {}", root.display()))?;
    let unsaved = layout::HOME_UNSAVED
        .iter()
        .map(|p| WorkspacePath::parse(p).context("an unsaved home path"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let persister = Persister::excluding(
        store.clone(),
        layout::home(project),
        handle,
        root.clone(),
        Duration::from_millis(config.sync_debounce_ms),
        unsaved,
    );
    Ok(Home { root, persister })
}

/// Restores from storage, retrying until it works: serving an empty
/// workspace while storage is down would let a client believe its project
/// is empty. False when the runner is told to stop first.
async fn restore(persister: &Arc<Persister>, what: &str, shutdown: &Shutdown) -> bool {
    let mut backoff = Duration::from_millis(200);
    let stop = shutdown.token();
    loop {
        let started = Instant::now();
        match persister.restore().await {
            Ok(n) => {
                tracing::info!("restored {n} files of the {what} in {:?}", started.elapsed());
                return true;
            }
            Err(e) => {
                tracing::warn!("restoring the {what} from storage failed, retrying in {backoff:?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn run(config: Config, storage: tokio::runtime::Handle) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let verifier = TokenVerifier::from_public_base64(&config.token_public_key).context("--token-public-key")?;
    let store = open_store(&config).await?;
    let project = ProjectId::parse(&config.project).context("--project")?;
    let prefix = match config.storage_prefix.as_deref() {
        Some(raw) => KeyPrefix::parse(raw).context("--storage-prefix")?,
        None => layout::code(&project),
    };
    let workspace = Arc::new(
        Workspace::open(&config.workspace)
            .with_context(|| format!("opening workspace {}", config.workspace.display()))?
            .limit_stored_paths(cloudcode_proto::storage::MAX_KEY_BYTES.saturating_sub(prefix.as_str().len())),
    );
    let home = match &config.home {
        Some(dir) => Some(open_home(&store, &project, dir, &config)?),
        None => None,
    };
    let persister = Persister::new(
        store,
        prefix,
        workspace
            .dir()
            .try_clone()
            .context("duplicating the workspace handle")?,
        workspace.root().to_path_buf(),
        Duration::from_millis(config.sync_debounce_ms),
    );

    // Serving an empty workspace while storage is down would let a client
    // believe its project is empty: restore first, however long it takes.
    let signals = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = signals.wait_for_signal().await {
            tracing::error!("cannot listen for signals: {e}");
        }
    });
    if !restore(&persister, "workspace", &shutdown).await {
        return Ok(());
    }
    if let Some(home) = &home
        && !restore(&home.persister, "home", &shutdown).await
    {
        return Ok(());
    }

    let (fs_events, _) = tokio::sync::broadcast::channel(256);
    // The watchers' and persisters' tasks go to the storage runtime, all but
    // the lane of clients' saves, which stays here at normal priority.
    let here = tokio::runtime::Handle::current();
    let on_storage = storage.enter();
    // The watchers' inotify readers are threads of their own: lowered like
    // the storage runtime's, as they turn an `npm install`'s hundreds of
    // thousands of events into storage work.
    let _watcher = cloudcode_proto::sync::watch::start(workspace.root(), persister.clone(), fs_events.clone(), || {
        sched::make_idle(0)
    })
    .context("watching the workspace")?;
    let worker = tokio::spawn(persister.clone().run_with_priority_on(here, shutdown.token()));
    // The home's changes are no client's business: its events go nowhere.
    let home_sync = match &home {
        Some(home) => {
            let (events, _) = tokio::sync::broadcast::channel(16);
            let watcher =
                cloudcode_proto::sync::watch::start(&home.root, home.persister.clone(), events, || sched::make_idle(0))
                    .context("watching the home directory")?;
            Some((watcher, tokio::spawn(home.persister.clone().run(shutdown.token()))))
        }
        None => None,
    };
    drop(on_storage);

    let activity = Arc::new(cloudcode_runner::activity::Activity::default());
    let terminals = Arc::new(Terminals::new(
        TerminalConfig {
            shell: config.shell_argv(),
            cwd: workspace.root().to_path_buf(),
            env: config.terminal_env(workspace.root())?,
            scrollback_bytes: config.scrollback_bytes,
            idle_timeout: Duration::from_secs(config.terminal_idle_secs),
        },
        activity.clone(),
    ));
    let reaper = {
        let period = (Duration::from_secs(config.terminal_idle_secs) / 2)
            .clamp(Duration::from_millis(200), Duration::from_secs(10));
        let terminals = terminals.clone();
        let stop = shutdown.token();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => { terminals.reap_idle(); }
                    _ = stop.cancelled() => return,
                }
            }
        })
    };

    let state = Arc::new(RunnerState {
        project: config.project.clone(),
        verifier,
        workspace: workspace.clone(),
        terminals: terminals.clone(),
        persister: persister.clone(),
        fs_events,
        limits: Limits {
            max_file_size: config.max_file_size,
            max_frame_size: config.max_frame_size,
        },
        activity,
        shutdown: shutdown.token(),
    });
    let router = cloudcode_runner::server::router(state);
    let stop = shutdown.token();
    if let Some(path) = &config.preview_unix {
        let listener = bind_unix(path)?;
        tokio::spawn(cloudcode_runner::preview::relay(
            listener,
            config.preview_port,
            shutdown.token(),
        ));
    }
    if let Some(path) = &config.listen_unix {
        let listener = bind_unix(path)?;
        println!("cloudcode-runner listening on unix:{}", path.display());
        tracing::info!(project = %config.project, "listening on {}", path.display());
        serve_on_worker(axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }))
            .await?;
    } else {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        // Machine-readable readiness line for whoever started us.
        println!("cloudcode-runner listening on {addr}");
        tracing::info!(project = %config.project, "listening on {addr}");
        // Keystroke echoes are tiny writes: without NODELAY, Nagle's algorithm
        // and the peer's delayed ACK hold them back for up to 40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        });
        serve_on_worker(axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }))
            .await?;
    }

    // Programs get their hangup first, so what they write on the way out is
    // part of the final flush.
    tracing::info!("closing terminals");
    tokio::task::spawn_blocking(move || terminals.close_all()).await.ok();
    let _ = reaper.await;
    let _ = worker.await;
    if let Some((_watcher, home_worker)) = home_sync {
        let _ = home_worker.await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deadline = Instant::now() + Duration::from_secs(config.flush_timeout_secs);
    persister.mark_dirty(WorkspacePath::root());
    let mut unsaved: Vec<String> = persister
        .flush(deadline)
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(home) = &home {
        home.persister.mark_dirty(WorkspacePath::root());
        let left = home.persister.flush(deadline).await;
        unsaved.extend(left.iter().map(|p| format!("~/{p}")));
    }
    if unsaved.is_empty() {
        tracing::info!("all changes are in storage; exiting");
        Ok(())
    } else {
        anyhow::bail!("storage unreachable: {} changes not saved: {unsaved:?}", unsaved.len())
    }
}
