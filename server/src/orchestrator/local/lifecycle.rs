//! Starting, watching, stopping and adopting local sandboxes.
//!
//! Every project's state is in one map under a short lock that is never
//! held across an await; each project's lifecycle (start, stop, clean-up
//! after a runner died, adoption, forget) is serialised by that project's
//! own async mutex, so one project's slow start (a restore of thousands of
//! files, a network helper) never delays another project's start, stop or
//! status. Each step runs in a task of its own: a caller that goes away (a
//! client that hangs up) never leaves a half-started sandbox behind.
//!
//! Sandboxes outlive this server, as pods outlive a Kubernetes control
//! plane: each running sandbox has a [`Record`] on disk, and the next
//! server [adopts](LocalBackend::adopt) every sandbox whose processes are
//! still the recorded ones and whose runner answers, and cleans up after
//! the others. Only a stop (asked for, or by the idle reaper) ends one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::cgroup::Cgroup;
use super::os::{HostOs, Os, Process};
use super::record::{Pid, Record};
use super::{LocalConfig, command};
use crate::gateway::Upstream;
use crate::orchestrator::{Endpoints, OrchestratorError, SandboxBackend, SandboxSpec, SandboxState};
use crate::projects::ProjectId;

/// How long a runner may take to flush its files and exit when stopped.
const STOP_GRACE: Duration = Duration::from_secs(40);
/// How long a cgroup whose last processes are exiting is retried for.
const CGROUP_REMOVAL: Duration = Duration::from_secs(1);
/// How long a runner may take to answer its first readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sandbox taken over from a previous server may take to answer:
/// its runner was ready before, so one that does not answer by then is hung
/// (or speaks another protocol version). Until then its project says
/// `starting`, and a start of it waits.
const ADOPTED_READY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct LocalBackend {
    inner: Arc<Inner>,
    /// Held for this backend's life: one server per sandboxes' root, so two
    /// never adopt (and stop) each other's sandboxes.
    _lock: Option<std::fs::File>,
}

/// Why the local backend cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LocalBackendError {
    #[error(
        "another cloudcode-server is using {0} (its sandboxes are its own): stop it first, or give this one another --data-dir"
    )]
    InUse(PathBuf),
    #[error("locking {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
}

struct Inner {
    os: Arc<dyn Os>,
    /// The sandboxes' root, as this process reaches runner sockets under it
    /// (short whatever the data directory: see `os::socket_base`).
    sockets: PathBuf,
    root: PathBuf,
    storage_dir: PathBuf,
    mirror_to: Option<Arc<dyn cloudcode_proto::storage::ObjectStore>>,
    stop_grace: Duration,
    isolation: super::Isolation,
    ready_timeout: Duration,
    /// Every project's state. Short critical sections only, never across
    /// an await.
    projects: Mutex<HashMap<ProjectId, Phase>>,
    /// One lifecycle lock per project, never removed: two tasks never hold
    /// different locks for one project.
    lifecycles: Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>,
}

enum Phase {
    Starting,
    Running(Sandbox),
    Stopping,
    /// Ended without being asked to; `remains` are cleaned up under the
    /// project's lifecycle lock (by the next start, or a task of their own).
    Failed {
        detail: String,
        remains: Option<Sandbox>,
    },
}

struct Sandbox {
    process: Box<dyn Process>,
    /// Known once the runner runs.
    runner: Option<Pid>,
    /// The init of the sandbox's pid namespace, known with the runner.
    init: Option<Pid>,
    /// The sandbox's user-mode network stack, with `Network::Outbound`.
    network: Option<Box<dyn Process>>,
    cgroup: Option<Cgroup>,
    mirror: Option<crate::mirror::Mirror>,
    endpoints: Endpoints,
}

/// The sandbox process of a record whose sandbox is gone (or whose pid now
/// names another process): nothing to wait for or kill.
struct Gone;

#[async_trait]
impl Process for Gone {
    fn id(&self) -> Option<u32> {
        None
    }
    fn try_wait(&mut self) -> std::io::Result<Option<String>> {
        Ok(Some("gone".into()))
    }
    async fn wait(&mut self) {}
    async fn kill(&mut self) {}
}

impl LocalBackend {
    /// The backend for this machine. Sandboxes a previous server left
    /// running are taken over by [`LocalBackend::adopt`].
    pub fn new(config: LocalConfig) -> Result<Self, LocalBackendError> {
        let lock = lock_root(&config.root)?;
        let cgroups = super::CgroupVersion::detect();
        tracing::info!(?cgroups, isolation = ?config.isolation, "local sandbox backend");
        let sockets = super::os::socket_base(&config.root);
        let os = Arc::new(HostOs::new(config.clone(), cgroups));
        let mut backend = Self::with_os(os, config, sockets, STOP_GRACE);
        backend._lock = Some(lock);
        Ok(backend)
    }

    fn with_os(os: Arc<dyn Os>, config: LocalConfig, sockets: PathBuf, stop_grace: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                os,
                sockets,
                root: config.root,
                storage_dir: config.storage_dir,
                mirror_to: config.mirror_to,
                stop_grace,
                isolation: config.isolation,
                ready_timeout: READY_TIMEOUT,
                projects: Mutex::new(HashMap::new()),
                lifecycles: Mutex::new(HashMap::new()),
            }),
            _lock: None,
        }
    }

    /// Takes over every sandbox a previous server of this root left running
    /// whose processes are still the recorded ones (same pid, same start
    /// time), whose runner answers and checks tokens with
    /// `token_public_key`: it is running here from now on (the gateway
    /// routes to it, the idle reaper watches it, its S3 mirror resumes).
    /// Everything else a record names is cleaned up as a stop would (its
    /// runner asked to flush first if it still runs). Returns the adopted
    /// projects.
    pub async fn adopt(&self, token_public_key: &str) -> Vec<ProjectId> {
        self.begin_adoption(token_public_key).await.finish().await
    }

    /// Reserves every recorded project for its adoption (each one's
    /// lifecycle lock taken, its state `starting`) and returns; the
    /// adoptions themselves (a runner's readiness, an S3 mirror's catching
    /// up) go on in the background, so the server can listen at once. A
    /// start, stop or status of a project meanwhile waits for its adoption
    /// (or sees it starting), and never launches a second sandbox beside
    /// the one being adopted.
    pub async fn begin_adoption(&self, token_public_key: &str) -> Adoption {
        let records = {
            let os = self.inner.os.clone();
            tokio::task::spawn_blocking(move || os.load_records())
                .await
                .unwrap_or_default()
        };
        let mut tasks = Vec::with_capacity(records.len());
        for record in records {
            let project = record.project.clone();
            let held = self.inner.lifecycle(&project).lock_owned().await;
            self.inner.projects().entry(project.clone()).or_insert(Phase::Starting);
            let (inner, key) = (self.inner.clone(), token_public_key.to_owned());
            tasks.push(tokio::spawn(async move {
                let _held = held;
                inner.adopt_one(record, key).await.then_some(project)
            }));
        }
        Adoption(tasks)
    }
}

/// Adoptions under way: [`Adoption::finish`] says which were adopted.
pub struct Adoption(Vec<tokio::task::JoinHandle<Option<ProjectId>>>);

impl Adoption {
    pub async fn finish(self) -> Vec<ProjectId> {
        futures_util::future::join_all(self.0)
            .await
            .into_iter()
            .filter_map(|adopted| {
                adopted
                    .inspect_err(|e| tracing::error!("a sandbox's adoption failed: {e}"))
                    .ok()
                    .flatten()
            })
            .collect()
    }
}

/// How long a server waits for another to release the sandboxes' root.
const LOCK_GRACE: Duration = Duration::from_secs(3);

/// An exclusive `flock` on `<root>/server.lock`, released by the kernel
/// when this process ends however it ends (never inherited: the file is
/// close-on-exec).
fn lock_root(root: &std::path::Path) -> Result<std::fs::File, LocalBackendError> {
    use std::os::fd::AsRawFd;
    let path = root.join("server.lock");
    let lock_error = |source| LocalBackendError::Lock {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(root).map_err(lock_error)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_error)?;
    // A previous server may still be on its way out (a supervisor restarts
    // at once), and a process forked elsewhere in this one holds a copy of
    // the descriptor until it execs: a moment's grace before refusing.
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(lock_error(e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(LocalBackendError::InUse(root.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Inner {
    fn lifecycle(&self, project: &ProjectId) -> Arc<tokio::sync::Mutex<()>> {
        self.lifecycles
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(project.clone())
            .or_default()
            .clone()
    }

    fn projects(&self) -> std::sync::MutexGuard<'_, HashMap<ProjectId, Phase>> {
        // A panic elsewhere never makes every project unreachable.
        self.projects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn endpoints(&self, project: &ProjectId) -> Endpoints {
        let sockets = self.sockets.join(command::socket_dir(project));
        Endpoints {
            ide: Upstream::Unix(sockets.join("ide.sock")),
            preview: Upstream::Unix(sockets.join("preview.sock")),
        }
    }

    /// Under the project's lifecycle lock.
    async fn ensure_running(self: Arc<Self>, spec: SandboxSpec) -> Result<Endpoints, OrchestratorError> {
        let project = &spec.project;
        let remains = {
            let mut projects = self.projects();
            match projects.get_mut(project) {
                Some(Phase::Running(sandbox)) => match sandbox.process.try_wait() {
                    Ok(None) => return Ok(sandbox.endpoints.clone()),
                    Ok(Some(how)) => {
                        tracing::warn!(%project, "the runner exited unexpectedly ({how}); restarted");
                        match projects.insert(project.clone(), Phase::Starting) {
                            Some(Phase::Running(dead)) => Some(dead),
                            _ => None,
                        }
                    }
                    Err(e) => return Err(OrchestratorError::Start(e.to_string())),
                },
                _ => match projects.insert(project.clone(), Phase::Starting) {
                    Some(Phase::Failed { remains, .. }) => remains,
                    _ => None,
                },
            }
        };
        if let Some(dead) = remains {
            self.clean_up(project, dead).await;
        }
        match self.launch(&spec).await {
            Ok(sandbox) => {
                let endpoints = sandbox.endpoints.clone();
                tracing::info!(
                    %project,
                    pid = ?sandbox.process.id(),
                    log = %command::log_file(&self.root, project).display(),
                    "sandbox started"
                );
                self.projects().insert(project.clone(), Phase::Running(sandbox));
                Ok(endpoints)
            }
            Err(e) => {
                self.projects().insert(
                    project.clone(),
                    Phase::Failed {
                        detail: e.to_string(),
                        remains: None,
                    },
                );
                Err(e)
            }
        }
    }

    /// Starts the sandbox and returns once its runner answers. Its record
    /// is written as soon as it runs, and again as its network helper and
    /// runner appear: a server that dies half-way through a start leaves
    /// the next one all it needs to adopt or end it.
    async fn launch(&self, spec: &SandboxSpec) -> Result<Sandbox, OrchestratorError> {
        let project = &spec.project;
        let mirror = match &self.mirror_to {
            Some(store) => {
                let mirror = crate::mirror::Mirror::start(store.clone(), project, &self.storage_dir)
                    .await
                    .map_err(|e| OrchestratorError::Start(e.to_string()))?;
                Some(mirror)
            }
            None => None,
        };
        let cgroup = self.os.create_cgroup(project);
        let process = match self.os.spawn(spec, cgroup.as_ref()).await {
            Ok(process) => process,
            Err(detail) => {
                if let Some(cgroup) = &cgroup {
                    self.remove_cgroup(project, cgroup).await;
                }
                if let Some(mirror) = mirror {
                    finish_mirror(project, mirror).await;
                }
                return Err(OrchestratorError::Start(detail));
            }
        };
        let pid = process.id();
        let mut record = pid
            .and_then(|pid| {
                Some(Pid {
                    pid,
                    start: self.os.start_time(pid)?,
                })
            })
            .map(|sandbox| {
                Record::new(
                    project.clone(),
                    sandbox,
                    cgroup.as_ref().map(|c| c.dirs.clone()).unwrap_or_default(),
                    spec.token_public_key.clone(),
                    self.isolation,
                )
            });
        if let Some(record) = &record {
            self.os.save_record(record);
        }
        let network = match pid {
            Some(pid) => self.os.start_network(pid).await,
            None => None,
        };
        let mut sandbox = Sandbox {
            process,
            runner: None,
            init: None,
            network,
            cgroup,
            mirror,
            endpoints: self.endpoints(project),
        };
        if let Some(record) = &mut record {
            record.network = self.recorded(sandbox.network.as_deref());
            self.os.save_record(record);
        }
        if let Err(e) = self.wait_ready(project, &mut sandbox, self.ready_timeout).await {
            self.kill(&mut sandbox).await;
            self.clean_up(project, sandbox).await;
            return Err(e);
        }
        sandbox.runner = pid.and_then(|pid| self.os.runner_pid(pid)).and_then(|runner| {
            Some(Pid {
                pid: runner,
                start: self.os.start_time(runner)?,
            })
        });
        sandbox.init = sandbox.runner.and_then(|runner| self.os.namespace_init(runner));
        if let Some(record) = &mut record {
            record.runner = sandbox.runner;
            record.init = sandbox.init;
            self.os.save_record(record);
        }
        Ok(sandbox)
    }

    fn recorded(&self, process: Option<&dyn Process>) -> Option<Pid> {
        let pid = process?.id()?;
        Some(Pid {
            pid,
            start: self.os.start_time(pid)?,
        })
    }

    /// Probes the runner until it answers; fails at once if the sandbox
    /// ends meanwhile.
    async fn wait_ready(
        &self,
        project: &ProjectId,
        sandbox: &mut Sandbox,
        timeout: Duration,
    ) -> Result<(), OrchestratorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if self.os.runner_ready(&sandbox.endpoints.ide).await {
                return Ok(());
            }
            match sandbox.process.try_wait() {
                Ok(None) => {}
                Ok(Some(how)) => {
                    return Err(OrchestratorError::Start(format!(
                        "the runner exited before it was ready ({how}); its log is {}",
                        command::log_file(&self.root, project).display()
                    )));
                }
                Err(e) => return Err(OrchestratorError::Start(e.to_string())),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OrchestratorError::NotReady(
                    timeout,
                    format!(
                        "no answer on its socket; its log is {}",
                        command::log_file(&self.root, project).display()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Under the project's lifecycle lock: takes over a previous server's
    /// sandbox if it is whole, ends what is left of it otherwise. True
    /// when adopted.
    async fn adopt_one(self: Arc<Self>, mut record: Record, token_public_key: String) -> bool {
        let project = record.project.clone();
        // Reserved as starting by `begin_adoption`; anything else means the
        // project is already this server's.
        if !matches!(self.projects().get(&project), None | Some(Phase::Starting)) {
            return false;
        }
        // Held even when the record is not this version's: the sandbox is
        // then ended as a stop ends one (its runner flushes first), which
        // needs it.
        let process: Box<dyn Process> = match self.os.adopt(record.sandbox) {
            Some(process) => process,
            None => Box::new(Gone),
        };
        let network = record.network.and_then(|pid| self.os.adopt(pid));
        // A record written before the runner was found: look for it now.
        let runner = record
            .runner
            .or_else(|| {
                let pid = self.os.runner_pid(process.id()?)?;
                Some(Pid {
                    pid,
                    start: self.os.start_time(pid)?,
                })
            })
            .filter(|runner| self.os.start_time(runner.pid) == Some(runner.start));
        // The storage changes made while no server watched go up now, and
        // on the way out if the sandbox is not adopted.
        let mirror = match &self.mirror_to {
            Some(store) => match crate::mirror::Mirror::adopt(store.clone(), &project, &self.storage_dir).await {
                Ok(mirror) => Some(mirror),
                Err(e) => {
                    tracing::error!(%project, "resuming the S3 mirror of an adopted sandbox: {e}");
                    None
                }
            },
            None => None,
        };
        let init = record
            .init
            .or_else(|| runner.and_then(|runner| self.os.namespace_init(runner)));
        let mut sandbox = Sandbox {
            process,
            runner,
            init,
            network,
            cgroup: (!record.cgroup.is_empty()).then(|| Cgroup {
                dirs: record.cgroup.clone(),
            }),
            mirror,
            endpoints: self.endpoints(&project),
        };
        let refused = if !record.is_current() {
            Some("it was recorded by another version of the server".to_string())
        } else if record.isolation().is_some_and(|isolation| isolation != self.isolation) {
            Some(format!(
                "it runs with isolation {:?}, this server's is {:?}",
                record.isolation(),
                self.isolation
            ))
        } else if sandbox.process.id().is_none() {
            Some("its sandbox is gone".to_string())
        } else if sandbox.runner.is_none() {
            Some("its runner is gone".to_string())
        } else if record.network.is_some() && !self.os.gives_network() {
            Some("it has outbound network, which this server's settings no longer give".to_string())
        } else if record.token_public_key != token_public_key {
            Some("its runner checks tokens with another signing key".to_string())
        } else if self.mirror_to.is_some() && sandbox.mirror.is_none() {
            Some("its storage cannot be mirrored".to_string())
        } else {
            self.wait_ready(&project, &mut sandbox, self.ready_timeout.min(ADOPTED_READY_TIMEOUT))
                .await
                .err()
                .map(|e| e.to_string())
        };
        if let Some(why) = refused {
            tracing::warn!(%project, "not adopting the sandbox a previous server left ({why}): ending it");
            self.end(&project, sandbox).await;
            self.projects().remove(&project);
            return false;
        }
        // A network helper that ended while no server ran is started again:
        // the sandbox keeps the network it was started with.
        if record.network.is_some()
            && sandbox.network.is_none()
            && let Some(pid) = sandbox.process.id()
        {
            tracing::warn!(%project, "the sandbox's network helper had ended: started again");
            sandbox.network = self.os.start_network(pid).await;
        }
        if let Some(cgroup) = &sandbox.cgroup {
            self.os.apply_limits(cgroup);
        }
        record.runner = sandbox.runner;
        record.init = sandbox.init;
        record.isolation = Some(self.isolation);
        record.network = self.recorded(sandbox.network.as_deref());
        self.os.save_record(&record);
        tracing::info!(%project, pid = ?sandbox.process.id(), "adopted the sandbox a previous server left running");
        self.projects().insert(project, Phase::Running(sandbox));
        true
    }

    /// Under the project's lifecycle lock.
    async fn stop(self: Arc<Self>, project: ProjectId) {
        let sandbox = {
            let mut projects = self.projects();
            match projects.remove(&project) {
                Some(Phase::Running(sandbox)) => {
                    projects.insert(project.clone(), Phase::Stopping);
                    sandbox
                }
                Some(other) => {
                    projects.insert(project.clone(), other);
                    return;
                }
                None => return,
            }
        };
        self.end(&project, sandbox).await;
        self.projects().remove(&project);
        tracing::info!(%project, "sandbox stopped");
    }

    /// Ends a sandbox and everything it left. The runner flushes pending
    /// changes to storage on SIGTERM; the sandbox ends when the runner
    /// does. A sandbox whose runner is not there (yet, or any more) holds
    /// nothing unsaved.
    async fn end(&self, project: &ProjectId, mut sandbox: Sandbox) {
        let runner = match sandbox.runner {
            // Still the recorded process, not one that reuses its pid.
            Some(runner) => (self.os.start_time(runner.pid) == Some(runner.start)).then_some(runner),
            None => sandbox
                .process
                .id()
                .and_then(|pid| self.os.runner_pid(pid))
                .and_then(|pid| {
                    Some(Pid {
                        pid,
                        start: self.os.start_time(pid)?,
                    })
                }),
        };
        // Taken while the runner lives: bwrap's reaper outlives bwrap and
        // the runner while anything in the sandbox runs (a `setsid` daemon),
        // and only ending it ends those where there are no cgroups.
        let init = sandbox
            .init
            .or_else(|| runner.and_then(|runner| self.os.namespace_init(runner)))
            .and_then(|init| self.os.adopt(init));
        match runner {
            Some(runner) if sandbox.process.id().is_some() => {
                self.os.terminate(runner.pid);
                let grace = self.stop_grace;
                if tokio::time::timeout(grace, sandbox.process.wait()).await.is_err() {
                    tracing::warn!(%project, "runner did not stop in {grace:?}: killing the sandbox");
                    self.kill(&mut sandbox).await;
                }
            }
            Some(runner) => self.end_orphan(project, runner).await,
            None => self.kill(&mut sandbox).await,
        }
        if let Some(mut init) = init {
            init.kill().await;
        }
        self.clean_up(project, sandbox).await;
    }

    /// bwrap is gone (killed while no server watched) but its runner is
    /// not: it still flushes first (the sandbox's init is ended after).
    async fn end_orphan(&self, project: &ProjectId, runner: Pid) {
        let Some(mut process) = self.os.adopt(runner) else {
            return;
        };
        self.os.terminate(runner.pid);
        let grace = self.stop_grace;
        if tokio::time::timeout(grace, process.wait()).await.is_err() {
            tracing::warn!(%project, "runner did not stop in {grace:?}: killing it");
            process.kill().await;
        }
    }

    /// Kills the sandbox and everything in it. bwrap's own death no longer
    /// takes its sandbox along (no `--die-with-parent`, so that it outlives
    /// this server), so the sandbox's pid namespace is ended first: where
    /// there are no cgroups to sweep, nothing would be left running.
    async fn kill(&self, sandbox: &mut Sandbox) {
        // Only while it runs: the pid of a process that has ended may
        // already name another.
        if let (Some(pid), Ok(None)) = (sandbox.process.id(), sandbox.process.try_wait()) {
            self.os.kill_sandbox(pid);
        }
        sandbox.process.kill().await;
    }

    /// Ends what a sandbox left behind: its network helper, whatever is
    /// still in its cgroup, the cgroup, its mirror's last uploads, its
    /// record.
    async fn clean_up(&self, project: &ProjectId, mut sandbox: Sandbox) {
        if let Some(network) = sandbox.network.as_mut() {
            network.kill().await;
        }
        if let Some(cgroup) = &sandbox.cgroup {
            self.os.kill_cgroup(cgroup);
            self.remove_cgroup(project, cgroup).await;
        }
        if let Some(mirror) = sandbox.mirror {
            finish_mirror(project, mirror).await;
        }
        self.os.remove_record(project);
    }

    /// Retries without holding a thread: a cgroup's last processes may
    /// still be exiting.
    async fn remove_cgroup(&self, project: &ProjectId, cgroup: &Cgroup) {
        let deadline = tokio::time::Instant::now() + CGROUP_REMOVAL;
        while !self.os.remove_cgroup(cgroup) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(%project, "cgroup {cgroup:?} still busy; left in place");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Under the project's lifecycle lock, as this server shuts down: the
    /// sandbox keeps running for the next server, but its S3 mirror lives
    /// in this process, so it uploads what is pending now.
    async fn release(self: Arc<Self>, project: ProjectId) {
        let mirror = match self.projects().get_mut(&project) {
            Some(Phase::Running(sandbox)) => sandbox.mirror.take(),
            _ => None,
        };
        if let Some(mirror) = mirror {
            finish_mirror(&project, mirror).await;
        }
    }

    fn state(self: &Arc<Self>, project: &ProjectId) -> SandboxState {
        let mut projects = self.projects();
        let Some(phase) = projects.get_mut(project) else {
            return SandboxState::Stopped;
        };
        match phase {
            Phase::Starting => SandboxState::Starting,
            Phase::Stopping => SandboxState::Stopping,
            Phase::Failed { detail, .. } => SandboxState::Failed { detail: detail.clone() },
            Phase::Running(sandbox) => match sandbox.process.try_wait() {
                Ok(None) => SandboxState::Running(sandbox.endpoints.clone()),
                Err(e) => SandboxState::Failed { detail: e.to_string() },
                Ok(Some(how)) => {
                    let detail = format!("the runner exited unexpectedly ({how})");
                    tracing::warn!(%project, "{detail}");
                    let failed = Phase::Failed {
                        detail: detail.clone(),
                        remains: None,
                    };
                    if let Some(Phase::Running(dead)) = projects.insert(project.clone(), failed) {
                        if let Some(Phase::Failed { remains, .. }) = projects.get_mut(project) {
                            *remains = Some(dead);
                        }
                        self.clean_up_later(project.clone());
                    }
                    SandboxState::Failed { detail }
                }
            },
        }
    }

    /// Cleans up after a dead runner under its lifecycle lock, unless a
    /// start has done so first.
    fn clean_up_later(self: &Arc<Self>, project: ProjectId) {
        let inner = self.clone();
        tokio::spawn(async move {
            let lifecycle = inner.lifecycle(&project);
            let _held = lifecycle.lock().await;
            let remains = match inner.projects().get_mut(&project) {
                Some(Phase::Failed { remains, .. }) => remains.take(),
                _ => None,
            };
            if let Some(dead) = remains {
                inner.clean_up(&project, dead).await;
            }
        });
    }

    /// Under the project's lifecycle lock.
    async fn forget(&self, project: &ProjectId) {
        let remains = {
            let mut projects = self.projects();
            match projects.remove(project) {
                Some(Phase::Failed { remains, .. }) => remains,
                Some(other) => {
                    projects.insert(project.clone(), other);
                    None
                }
                None => None,
            }
        };
        if let Some(dead) = remains {
            self.clean_up(project, dead).await;
        }
        let mut dirs = vec![command::project_dir(&self.root, project)];
        if self.mirror_to.is_some() {
            // The local copies of every prefix the mirror kept.
            dirs.extend(
                cloudcode_proto::storage::layout::project_prefixes(project)
                    .map(|prefix| cloudcode_proto::storage::layout::local_dir(&self.storage_dir, &prefix)),
            );
        }
        let _ = tokio::task::spawn_blocking(move || {
            for dir in dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
        .await;
    }
}

async fn finish_mirror(project: &ProjectId, mirror: crate::mirror::Mirror) {
    let unsaved = mirror.finish().await;
    if !unsaved.is_empty() {
        tracing::error!(%project, "S3 unreachable: {} paths not mirrored yet: {unsaved:?}", unsaved.len());
    }
}

impl LocalBackend {
    /// Runs `step` under `project`'s lifecycle lock in a task of its own,
    /// so that it completes even if the caller goes away.
    async fn serialised<T, F>(&self, project: &ProjectId, step: impl FnOnce(Arc<Inner>) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let lifecycle = self.inner.lifecycle(project).lock_owned();
        let work = step(self.inner.clone());
        tokio::spawn(async move {
            let _held = lifecycle.await;
            work.await
        })
        .await
        .map_err(|e| format!("the sandbox's lifecycle task failed: {e}"))
    }
}

#[async_trait]
impl SandboxBackend for LocalBackend {
    async fn ensure_running(&self, spec: &SandboxSpec) -> Result<Endpoints, OrchestratorError> {
        let spec = spec.clone();
        self.serialised(&spec.project.clone(), move |inner| inner.ensure_running(spec))
            .await
            .map_err(OrchestratorError::Start)?
    }

    async fn stop(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
        let owned = project.clone();
        self.serialised(project, move |inner| inner.stop(owned))
            .await
            .map_err(OrchestratorError::Stop)
    }

    async fn state(&self, project: &ProjectId) -> SandboxState {
        self.inner.state(project)
    }

    async fn running(&self) -> Vec<ProjectId> {
        self.inner
            .projects()
            .iter()
            .filter(|(_, phase)| matches!(phase, Phase::Running(_)))
            .map(|(project, _)| project.clone())
            .collect()
    }

    async fn forget(&self, project: &ProjectId) {
        let owned = project.clone();
        let _ = self
            .serialised(project, move |inner| async move { inner.forget(&owned).await })
            .await;
    }

    /// Leaves every sandbox running for the next server (which adopts it),
    /// after the starts and stops under way have finished and every S3
    /// mirror has uploaded what is pending.
    async fn shutdown(&self) {
        let projects: Vec<ProjectId> = self.inner.projects().keys().cloned().collect();
        futures_util::future::join_all(projects.into_iter().map(|project| {
            let owned = project.clone();
            async move {
                let _ = self.serialised(&project, move |inner| inner.release(owned)).await;
            }
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::watch;
    use tokio::time::timeout;

    use super::*;
    use crate::orchestrator::local::{Isolation, Limits, Network};

    /// A machine where sandboxes are entries in a table: a runner is
    /// "sandbox pid + 1000", SIGTERM ends its sandbox unless it is stubborn.
    #[derive(Default)]
    struct FakeOs {
        next_pid: AtomicU32,
        sandboxes: Mutex<Vec<(ProjectId, u32, Exit)>>,
        log: Mutex<Vec<String>>,
        /// Spawns of these projects wait until `gate` opens.
        slow: Mutex<Vec<ProjectId>>,
        gate: Option<watch::Sender<bool>>,
        stubborn: Mutex<Vec<ProjectId>>,
        /// Removal attempts that find the cgroup still busy.
        busy_cgroup: AtomicU32,
        /// Sandboxes (by pid) whose runner has died while bwrap lives on.
        dead_runners: Mutex<Vec<u32>>,
        /// Projects whose runner runs but never answers.
        deaf: Mutex<Vec<ProjectId>>,
        /// Projects whose runner answers only once `gate` opens.
        slow_ready: Mutex<Vec<ProjectId>>,
        /// Sandboxes (by pid) whose bwrap was killed while their runner and
        /// their namespace's init live on: how each of those two ended.
        orphans: Mutex<HashMap<u32, (Exit, Exit)>>,
        records: Mutex<HashMap<ProjectId, Record>>,
        /// Sandboxes get a network helper (pids from 5000).
        networked: std::sync::atomic::AtomicBool,
        helpers: Mutex<Vec<(u32, Exit)>>,
    }

    /// How a fake sandbox ended, once it has.
    type Exit = Arc<watch::Sender<Option<String>>>;

    struct FakeProcess {
        pid: u32,
        exit: Exit,
    }

    #[async_trait]
    impl Process for FakeProcess {
        fn id(&self) -> Option<u32> {
            Some(self.pid)
        }
        fn try_wait(&mut self) -> std::io::Result<Option<String>> {
            Ok(self.exit.borrow().clone())
        }
        async fn wait(&mut self) {
            let _ = self.exit.subscribe().wait_for(|e| e.is_some()).await;
        }
        async fn kill(&mut self) {
            self.exit.send_if_modified(|e| {
                e.get_or_insert_with(|| "signal: 9 (SIGKILL)".into());
                true
            });
        }
    }

    impl FakeOs {
        fn note(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
        fn count(&self, what: &str) -> usize {
            self.log().iter().filter(|l| *l == what).count()
        }
        fn project_of(&self, pid: u32) -> Option<(ProjectId, Exit)> {
            self.sandboxes
                .lock()
                .unwrap()
                .iter()
                .find(|(_, p, _)| *p == pid)
                .map(|(project, _, exit)| (project.clone(), exit.clone()))
        }
        fn helper(&self, pid: u32) -> Option<Exit> {
            let helpers = self.helpers.lock().unwrap();
            helpers.iter().find(|(p, _)| *p == pid).map(|(_, exit)| exit.clone())
        }
        fn alive(&self, pid: u32) -> bool {
            self.project_of(pid).is_some_and(|(_, exit)| exit.borrow().is_none())
        }
        fn record(&self, project: &str) -> Option<Record> {
            self.records.lock().unwrap().get(&id(project)).cloned()
        }
        /// Gives the sandbox `bwrap` (a pid) a runner and a namespace init
        /// whose ends are tracked apart from bwrap's: how each ended.
        fn with_init(&self, bwrap: u32) -> (Exit, Exit) {
            let (runner, init) = (Arc::new(watch::channel(None).0), Arc::new(watch::channel(None).0));
            self.orphans
                .lock()
                .unwrap()
                .insert(bwrap, (runner.clone(), init.clone()));
            (runner, init)
        }
        /// bwrap itself is killed; what it started is not.
        fn kill_bwrap(&self, bwrap: u32) {
            self.project_of(bwrap)
                .unwrap()
                .1
                .send_replace(Some("signal: 9 (SIGKILL)".into()));
        }
        /// The newest sandbox of `project` dies by itself.
        fn crash(&self, project: &str) {
            let sandboxes = self.sandboxes.lock().unwrap();
            let (_, _, exit) = sandboxes.iter().rev().find(|(p, _, _)| p.as_str() == project).unwrap();
            exit.send_replace(Some("signal: 11 (SIGSEGV)".into()));
        }
    }

    #[async_trait]
    impl Os for FakeOs {
        fn create_cgroup(&self, project: &ProjectId) -> Option<Cgroup> {
            Some(Cgroup {
                dirs: vec![PathBuf::from(format!("/fake/{project}"))],
            })
        }
        async fn spawn(&self, spec: &SandboxSpec, cgroup: Option<&Cgroup>) -> Result<Box<dyn Process>, String> {
            assert!(cgroup.is_some());
            self.note(format!("spawn {}", spec.project));
            if self.slow.lock().unwrap().contains(&spec.project) {
                let mut open = self.gate.as_ref().unwrap().subscribe();
                let _ = open.wait_for(|open| *open).await;
            }
            let pid = 100 + self.next_pid.fetch_add(1, Ordering::Relaxed);
            let exit = Arc::new(watch::channel(None).0);
            self.sandboxes
                .lock()
                .unwrap()
                .push((spec.project.clone(), pid, exit.clone()));
            Ok(Box::new(FakeProcess { pid, exit }))
        }
        fn runner_pid(&self, sandbox: u32) -> Option<u32> {
            Some(sandbox + 1000)
        }
        fn terminate(&self, pid: u32) {
            let (project, exit) = self.project_of(pid - 1000).unwrap();
            self.note(format!("terminate {project}"));
            if !self.stubborn.lock().unwrap().contains(&project) {
                exit.send_replace(Some("exit status: 0".into()));
                if let Some((runner, _)) = self.orphans.lock().unwrap().get(&(pid - 1000)) {
                    runner.send_replace(Some("exit status: 0".into()));
                }
            }
        }
        /// Orphans' inits are "sandbox pid + 2000"; other sandboxes have
        /// none (their bwrap ends them).
        fn namespace_init(&self, runner: Pid) -> Option<Pid> {
            if self.start_time(runner.pid) != Some(runner.start) {
                return None;
            }
            let pid = runner.pid + 1000;
            Some(Pid {
                pid,
                start: self.start_time(pid)?,
            })
        }
        fn gives_network(&self) -> bool {
            self.networked.load(Ordering::Relaxed)
        }
        async fn start_network(&self, sandbox: u32) -> Option<Box<dyn Process>> {
            if !self.gives_network() {
                return None;
            }
            let (project, _) = self.project_of(sandbox)?;
            self.note(format!("network {project}"));
            let pid = 5000 + self.next_pid.fetch_add(1, Ordering::Relaxed);
            let exit = Arc::new(watch::channel(None).0);
            self.helpers.lock().unwrap().push((pid, exit.clone()));
            Some(Box::new(FakeProcess { pid, exit }))
        }
        fn kill_cgroup(&self, cgroup: &Cgroup) {
            self.note(format!("kill-cgroup {}", cgroup.dirs[0].display()));
        }
        fn apply_limits(&self, cgroup: &Cgroup) {
            self.note(format!("limits {}", cgroup.dirs[0].display()));
        }
        fn remove_cgroup(&self, cgroup: &Cgroup) -> bool {
            if self
                .busy_cgroup
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                self.note("cgroup busy".into());
                return false;
            }
            self.note(format!("remove-cgroup {}", cgroup.dirs[0].display()));
            true
        }
        /// A sandbox's start time is 7 × its pid, its runner's one more.
        fn start_time(&self, pid: u32) -> Option<u64> {
            if self.alive(pid) || self.helper(pid).is_some_and(|exit| exit.borrow().is_none()) {
                return Some(u64::from(pid) * 7);
            }
            if let Some((_, init)) = pid
                .checked_sub(2000)
                .and_then(|s| self.orphans.lock().unwrap().get(&s).cloned())
            {
                return init.borrow().is_none().then_some(u64::from(pid) * 7);
            }
            let sandbox = pid.checked_sub(1000)?;
            if let Some((runner, _)) = self.orphans.lock().unwrap().get(&sandbox) {
                return runner.borrow().is_none().then_some(u64::from(sandbox) * 7 + 1);
            }
            (self.alive(sandbox) && !self.dead_runners.lock().unwrap().contains(&sandbox))
                .then_some(u64::from(sandbox) * 7 + 1)
        }
        fn adopt(&self, pid: Pid) -> Option<Box<dyn Process>> {
            if self.start_time(pid.pid) != Some(pid.start) {
                return None;
            }
            let orphan = {
                let orphans = self.orphans.lock().unwrap();
                let runner = pid
                    .pid
                    .checked_sub(1000)
                    .and_then(|s| orphans.get(&s))
                    .map(|(r, _)| r.clone());
                let init = pid
                    .pid
                    .checked_sub(2000)
                    .and_then(|s| orphans.get(&s))
                    .map(|(_, i)| i.clone());
                runner.or(init)
            };
            let exit = match (self.project_of(pid.pid), orphan) {
                (Some((_, exit)), _) | (None, Some(exit)) => exit,
                (None, None) => self.helper(pid.pid)?,
            };
            Some(Box::new(FakeProcess { pid: pid.pid, exit }))
        }
        async fn runner_ready(&self, ide: &Upstream) -> bool {
            let slow = self.slow_ready.lock().unwrap().clone();
            if slow
                .iter()
                .any(|project| *ide == Upstream::Unix(format!("/sockets/{project}/run/ide.sock").into()))
            {
                let mut open = self.gate.as_ref().unwrap().subscribe();
                let _ = open.wait_for(|open| *open).await;
            }
            let sandboxes = self.sandboxes.lock().unwrap().clone();
            sandboxes.iter().rev().any(|(project, pid, exit)| {
                *ide == Upstream::Unix(format!("/sockets/{project}/run/ide.sock").into())
                    && exit.borrow().is_none()
                    && !self.dead_runners.lock().unwrap().contains(pid)
                    && !self.deaf.lock().unwrap().contains(project)
            })
        }
        fn save_record(&self, record: &Record) {
            self.records
                .lock()
                .unwrap()
                .insert(record.project.clone(), record.clone());
        }
        fn load_records(&self) -> Vec<Record> {
            self.records.lock().unwrap().values().cloned().collect()
        }
        fn kill_sandbox(&self, sandbox: u32) {
            let (project, _) = self.project_of(sandbox).unwrap();
            self.note(format!("kill-sandbox {project}"));
        }
        fn remove_record(&self, project: &ProjectId) {
            self.note(format!("remove-record {project}"));
            self.records.lock().unwrap().remove(project);
        }
    }

    fn backend(os: Arc<FakeOs>) -> LocalBackend {
        let config = LocalConfig {
            runner_binary: "/fake/runner".into(),
            root: "/nonexistent/cloudcode-sandboxes".into(),
            storage_dir: "/nonexistent/cloudcode-storage".into(),
            isolation: Isolation::Bubblewrap,
            network: Network::None,
            limits: Limits {
                memory_bytes: 1 << 30,
                max_pids: 100,
                cpu_percent: 100,
            },
            runner_args: Vec::new(),
            mirror_to: None,
        };
        let mut backend = LocalBackend::with_os(os, config, "/sockets".into(), Duration::from_millis(50));
        Arc::get_mut(&mut backend.inner).unwrap().ready_timeout = Duration::from_millis(100);
        backend
    }

    fn spec(project: &str) -> SandboxSpec {
        SandboxSpec {
            project: id(project),
            token_public_key: "key".into(),
        }
    }

    fn id(project: &str) -> ProjectId {
        ProjectId::parse(project).unwrap()
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("never happened: {what}");
    }

    #[tokio::test]
    async fn a_start_runs_one_sandbox_and_a_stop_ends_the_runner_then_cleans_up() {
        let os = Arc::new(FakeOs::default());
        let backend = backend(os.clone());
        let alpha = spec("alpha");
        let (a, b) = tokio::join!(backend.ensure_running(&alpha), backend.ensure_running(&alpha));
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(os.count("spawn alpha"), 1);
        let SandboxState::Running(endpoints) = backend.state(&id("alpha")).await else {
            panic!("not running");
        };
        assert_eq!(endpoints.ide, Upstream::Unix("/sockets/alpha/run/ide.sock".into()));
        assert_eq!(
            endpoints.preview,
            Upstream::Unix("/sockets/alpha/run/preview.sock".into())
        );
        assert_eq!(backend.running().await, vec![id("alpha")]);

        backend.stop(&id("alpha")).await.unwrap();
        assert_eq!(
            os.log(),
            [
                "spawn alpha",
                "terminate alpha",
                "kill-cgroup /fake/alpha",
                "remove-cgroup /fake/alpha",
                "remove-record alpha"
            ]
        );
        assert_eq!(backend.state(&id("alpha")).await, SandboxState::Stopped);
        assert!(backend.running().await.is_empty());
        // Stopping what is stopped is nothing.
        backend.stop(&id("alpha")).await.unwrap();
        assert_eq!(os.count("terminate alpha"), 1);
    }

    #[tokio::test]
    async fn a_dead_runner_is_reported_cleaned_up_once_and_restarted_on_the_next_start() {
        let os = Arc::new(FakeOs::default());
        let backend = backend(os.clone());
        backend.ensure_running(&spec("alpha")).await.unwrap();
        os.crash("alpha");
        let SandboxState::Failed { detail } = backend.state(&id("alpha")).await else {
            panic!("a dead runner not reported");
        };
        assert!(detail.contains("SIGSEGV"), "{detail}");
        assert!(backend.running().await.is_empty());
        eventually("the dead sandbox's cgroup removed", || {
            os.count("remove-cgroup /fake/alpha") == 1
        })
        .await;
        // Asking again neither cleans up twice nor forgets the failure.
        assert!(matches!(backend.state(&id("alpha")).await, SandboxState::Failed { .. }));

        backend.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 2);
        assert!(matches!(backend.state(&id("alpha")).await, SandboxState::Running(_)));

        // Dead and restarted before anyone looked: the start cleans up.
        os.crash("alpha");
        backend.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 3);
        assert_eq!(os.count("remove-cgroup /fake/alpha"), 2);
        assert!(matches!(backend.state(&id("alpha")).await, SandboxState::Running(_)));
    }

    #[tokio::test]
    async fn a_runner_that_ignores_sigterm_is_killed_after_the_grace() {
        let os = Arc::new(FakeOs::default());
        os.stubborn.lock().unwrap().push(id("mule"));
        let backend = backend(os.clone());
        backend.ensure_running(&spec("mule")).await.unwrap();
        timeout(Duration::from_secs(5), backend.stop(&id("mule")))
            .await
            .expect("the stop waited past its grace")
            .unwrap();
        assert_eq!(
            os.log(),
            [
                "spawn mule",
                "terminate mule",
                "kill-sandbox mule",
                "kill-cgroup /fake/mule",
                "remove-cgroup /fake/mule",
                "remove-record mule"
            ]
        );
        assert_eq!(backend.state(&id("mule")).await, SandboxState::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_projects_slow_start_never_blocks_anothers() {
        let (gate, _) = watch::channel(false);
        let os = Arc::new(FakeOs {
            gate: Some(gate),
            ..Default::default()
        });
        os.slow.lock().unwrap().push(id("slow"));
        let backend = Arc::new(backend(os.clone()));
        let slow = {
            let backend = backend.clone();
            tokio::spawn(async move { backend.ensure_running(&spec("slow")).await })
        };
        eventually("the slow start under way", || os.count("spawn slow") == 1).await;
        assert_eq!(backend.state(&id("slow")).await, SandboxState::Starting);

        let quick = async {
            backend.ensure_running(&spec("quick")).await.unwrap();
            assert!(matches!(backend.state(&id("quick")).await, SandboxState::Running(_)));
            assert_eq!(backend.running().await, vec![id("quick")]);
            backend.stop(&id("quick")).await.unwrap();
            assert_eq!(backend.state(&id("quick")).await, SandboxState::Stopped);
        };
        timeout(Duration::from_secs(5), quick)
            .await
            .expect("another project's start, status or stop waited for the slow one");
        assert!(!slow.is_finished());
        assert_eq!(backend.state(&id("slow")).await, SandboxState::Starting);

        os.gate.as_ref().unwrap().send_replace(true);
        slow.await.unwrap().unwrap();
        assert!(matches!(backend.state(&id("slow")).await, SandboxState::Running(_)));
    }

    #[tokio::test]
    async fn a_start_whose_caller_goes_away_still_completes() {
        let (gate, _) = watch::channel(false);
        let os = Arc::new(FakeOs {
            gate: Some(gate),
            ..Default::default()
        });
        os.slow.lock().unwrap().push(id("alpha"));
        let backend = backend(os.clone());
        let gone = timeout(Duration::from_millis(20), backend.ensure_running(&spec("alpha"))).await;
        assert!(gone.is_err());
        os.gate.as_ref().unwrap().send_replace(true);
        eventually("the abandoned start completed", || {
            backend
                .inner
                .projects()
                .get(&id("alpha"))
                .is_some_and(|p| matches!(p, Phase::Running(_)))
        })
        .await;
        backend.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 1);
    }

    /// On a single-threaded runtime: a blocking sleep in the retries would
    /// stop the ticker.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_cgroup_is_retried_without_blocking_the_runtime() {
        let os = Arc::new(FakeOs::default());
        let backend = backend(os.clone());
        backend.ensure_running(&spec("alpha")).await.unwrap();
        os.busy_cgroup.store(3, Ordering::Relaxed);
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        backend.stop(&id("alpha")).await.unwrap();
        ticker.abort();
        assert_eq!(os.count("cgroup busy"), 3);
        assert_eq!(os.count("remove-cgroup /fake/alpha"), 1);
        assert!(
            ticks.load(Ordering::Relaxed) >= 3,
            "the runtime was blocked while retrying"
        );
    }

    /// A new server's backend on the same machine: the sandboxes, their
    /// records and their cgroups outlive the old one.
    fn restarted(os: &Arc<FakeOs>) -> LocalBackend {
        os.log.lock().unwrap().clear();
        backend(os.clone())
    }

    #[tokio::test]
    async fn a_shutdown_leaves_sandboxes_running_and_the_next_server_adopts_them() {
        let os = Arc::new(FakeOs::default());
        let first = backend(os.clone());
        first.ensure_running(&spec("alpha")).await.unwrap();
        let record = os.record("alpha").expect("a running sandbox is recorded");
        assert_eq!(record.runner, Some(Pid { pid: 1100, start: 701 }));
        assert_eq!(record.cgroup, vec![PathBuf::from("/fake/alpha")]);
        first.shutdown().await;
        drop(first);

        let second = restarted(&os);
        assert_eq!(second.adopt("key").await, vec![id("alpha")]);
        assert_eq!(
            os.log(),
            ["limits /fake/alpha"],
            "adoption did more than set this server's limits"
        );
        os.log.lock().unwrap().clear();
        assert!(matches!(second.state(&id("alpha")).await, SandboxState::Running(_)));
        assert_eq!(second.running().await, vec![id("alpha")]);
        // A start finds it running.
        second.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 0);

        // A stop of an adopted sandbox ends it and everything it had.
        second.stop(&id("alpha")).await.unwrap();
        assert_eq!(
            os.log(),
            [
                "terminate alpha",
                "kill-cgroup /fake/alpha",
                "remove-cgroup /fake/alpha",
                "remove-record alpha"
            ]
        );
        assert!(os.record("alpha").is_none());
        assert_eq!(second.state(&id("alpha")).await, SandboxState::Stopped);
    }

    /// The server listens while it adopts: a runner slow to answer delays
    /// nobody, and a start of that project meanwhile waits for the adoption
    /// instead of launching a second sandbox beside it.
    #[tokio::test]
    async fn adoption_goes_on_in_the_background_and_a_start_meanwhile_waits_for_it() {
        let os = Arc::new(FakeOs {
            gate: Some(watch::channel(false).0),
            ..Default::default()
        });
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        os.slow_ready.lock().unwrap().push(id("alpha"));
        let second = Arc::new(restarted(&os));
        let adoption = second.begin_adoption("key").await;
        assert_eq!(second.state(&id("alpha")).await, SandboxState::Starting);
        let mut start = tokio::spawn({
            let second = second.clone();
            async move { second.ensure_running(&spec("alpha")).await }
        });
        assert!(
            timeout(Duration::from_millis(50), &mut start).await.is_err(),
            "the start did not wait for the adoption under way"
        );
        os.gate.as_ref().unwrap().send_replace(true);
        start.await.unwrap().unwrap();
        assert_eq!(adoption.finish().await, vec![id("alpha")]);
        assert_eq!(os.count("spawn alpha"), 0, "a second sandbox was launched");
    }

    #[tokio::test]
    async fn an_adopted_sandbox_whose_runner_dies_later_is_cleaned_up_and_restarted() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let second = restarted(&os);
        second.adopt("key").await;
        os.crash("alpha");
        assert!(matches!(second.state(&id("alpha")).await, SandboxState::Failed { .. }));
        eventually("the dead sandbox's record removed", || os.record("alpha").is_none()).await;
        assert_eq!(os.count("remove-cgroup /fake/alpha"), 1);
        second.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 1);
    }

    #[tokio::test]
    async fn a_sandbox_whose_bwrap_was_killed_is_flushed_then_ended_whole_not_left_running() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let bwrap = os.record("alpha").unwrap().sandbox.pid;
        // While no server runs, bwrap is killed; the runner and the users'
        // processes under the namespace's init are not.
        let (runner, init) = os.with_init(bwrap);
        os.kill_bwrap(bwrap);

        let second = restarted(&os);
        assert!(second.adopt("key").await.is_empty());
        assert_eq!(os.count("terminate alpha"), 1, "the runner is asked to flush first");
        assert!(runner.borrow().is_some(), "the runner was left running");
        assert!(init.borrow().is_some(), "the sandbox's processes were left running");
        assert!(os.record("alpha").is_none());
        assert_eq!(second.state(&id("alpha")).await, SandboxState::Stopped);
    }

    /// bwrap's reaper outlives bwrap and the runner while anything in the
    /// sandbox runs (a `setsid` daemon): a stop ends it too, found at the
    /// start and recorded, so nothing is left where there are no cgroups.
    #[tokio::test]
    async fn a_stop_ends_the_sandboxs_namespace_init_and_what_it_still_holds() {
        let os = Arc::new(FakeOs::default());
        // The first sandbox's pid is 100.
        let (_, init) = os.with_init(100);
        let backend = backend(os.clone());
        backend.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(
            os.record("alpha").unwrap().init.map(|i| i.pid),
            Some(2100),
            "the init is not recorded"
        );
        backend.stop(&id("alpha")).await.unwrap();
        assert!(init.borrow().is_some(), "the sandbox's init was left running");
    }

    /// bwrap and the runner both gone while no server ran, the users'
    /// processes not: the recorded init ends them.
    #[tokio::test]
    async fn a_sandbox_whose_bwrap_and_runner_died_is_ended_through_its_recorded_init() {
        let os = Arc::new(FakeOs::default());
        let (runner, init) = os.with_init(100);
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        runner.send_replace(Some("signal: 9 (SIGKILL)".into()));
        os.kill_bwrap(100);

        assert!(restarted(&os).adopt("key").await.is_empty());
        assert!(init.borrow().is_some(), "the users' processes were left running");
        assert!(os.record("alpha").is_none());
    }

    #[tokio::test]
    async fn a_stubborn_runner_whose_bwrap_was_killed_is_killed_after_the_grace() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        os.stubborn.lock().unwrap().push(id("alpha"));
        let bwrap = os.record("alpha").unwrap().sandbox.pid;
        let (runner, init) = os.with_init(bwrap);
        os.kill_bwrap(bwrap);

        assert!(restarted(&os).adopt("key").await.is_empty());
        assert_eq!(runner.borrow().as_deref(), Some("signal: 9 (SIGKILL)"));
        assert!(init.borrow().is_some());
    }

    #[tokio::test]
    async fn a_sandbox_whose_runner_died_while_no_server_ran_is_ended_not_adopted() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let bwrap = os.record("alpha").unwrap().sandbox.pid;
        os.dead_runners.lock().unwrap().push(bwrap);

        let second = restarted(&os);
        assert!(second.adopt("key").await.is_empty());
        assert!(!os.alive(bwrap), "the runnerless sandbox was left running");
        assert_eq!(
            os.log(),
            [
                "kill-sandbox alpha",
                "kill-cgroup /fake/alpha",
                "remove-cgroup /fake/alpha",
                "remove-record alpha"
            ]
        );
        assert_eq!(second.state(&id("alpha")).await, SandboxState::Stopped);
        second.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 1);
    }

    #[tokio::test]
    async fn a_record_whose_pid_now_names_another_process_is_never_adopted_nor_that_process_killed() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let mut record = os.record("alpha").unwrap();
        // The sandbox is gone and its pid reused: same pid, later start.
        let stranger = record.sandbox.pid;
        record.sandbox.start += 1;
        record.runner.as_mut().unwrap().start += 1;
        os.save_record(&record);

        let second = restarted(&os);
        assert!(second.adopt("key").await.is_empty());
        assert!(os.alive(stranger), "a process that merely reuses the pid was killed");
        assert_eq!(os.count("terminate alpha"), 0);
        assert!(os.record("alpha").is_none());
        assert_eq!(second.state(&id("alpha")).await, SandboxState::Stopped);
    }

    #[tokio::test]
    async fn a_runner_that_checks_another_key_or_never_answers_is_stopped_gracefully_not_adopted() {
        let os = Arc::new(FakeOs::default());
        let first = backend(os.clone());
        first.ensure_running(&spec("alpha")).await.unwrap();
        first.ensure_running(&spec("beta")).await.unwrap();
        os.deaf.lock().unwrap().push(id("beta"));
        let second = restarted(&os);
        // Signed with another key: alpha's runner would refuse our tokens.
        let adopted = second.adopt("rotated").await;
        assert!(adopted.is_empty(), "{adopted:?}");
        // Each asked to flush and stop, not killed outright.
        assert_eq!(os.count("terminate alpha"), 1);
        assert_eq!(os.count("terminate beta"), 1);
        assert!(os.records.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_sandbox_with_network_is_not_adopted_by_a_server_that_gives_none() {
        let os = Arc::new(FakeOs {
            networked: true.into(),
            ..Default::default()
        });
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let helper = os.record("alpha").unwrap().network.expect("no helper recorded");
        // The operator turns outbound network off and restarts the server.
        os.networked.store(false, Ordering::Relaxed);
        let second = restarted(&os);
        assert!(second.adopt("key").await.is_empty());
        assert_eq!(os.count("terminate alpha"), 1, "not stopped gracefully");
        assert!(
            os.helper(helper.pid).is_some_and(|exit| exit.borrow().is_some()),
            "its network helper lives on"
        );
        // Wanted still: the next start gives it the settings of now.
        second.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.record("alpha").unwrap().network, None);
    }

    #[tokio::test]
    async fn a_sandbox_recorded_by_another_version_is_stopped_gracefully_not_adopted() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let mut record = os.record("alpha").unwrap();
        record.version += 1;
        let bwrap = record.sandbox.pid;
        os.save_record(&record);

        let second = restarted(&os);
        assert!(second.adopt("key").await.is_empty());
        // Asked to flush and stop, then whatever is left goes: never left
        // running beside the sandbox the next start makes.
        assert_eq!(os.count("terminate alpha"), 1);
        assert!(!os.alive(bwrap), "the sandbox was left running");
        assert!(os.record("alpha").is_none());
        second.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 1);
    }

    /// A runner started without a sandbox (`--insecure-no-sandbox`) is
    /// never taken over by a server that sandboxes: it would go on running
    /// users' code unconfined.
    #[tokio::test]
    async fn an_unsandboxed_runner_is_not_adopted_by_a_server_that_sandboxes() {
        let os = Arc::new(FakeOs::default());
        backend(os.clone()).ensure_running(&spec("alpha")).await.unwrap();
        let mut record = os.record("alpha").unwrap();
        assert_eq!(record.isolation, Some(Isolation::Bubblewrap));
        record.isolation = Some(Isolation::Insecure);
        let bwrap = record.sandbox.pid;
        os.save_record(&record);

        let second = restarted(&os);
        assert!(second.adopt("key").await.is_empty());
        assert_eq!(os.count("terminate alpha"), 1, "not asked to flush first");
        assert!(!os.alive(bwrap), "the unsandboxed runner was left running");
        second.ensure_running(&spec("alpha")).await.unwrap();
        assert_eq!(os.count("spawn alpha"), 1);
    }

    #[tokio::test]
    async fn a_runner_that_exits_before_it_is_ready_fails_the_start_and_leaves_nothing() {
        let os = Arc::new(FakeOs::default());
        os.deaf.lock().unwrap().push(id("alpha"));
        let backend = backend(os.clone());
        let Err(OrchestratorError::NotReady(..)) = backend.ensure_running(&spec("alpha")).await else {
            panic!("a runner that never answers counted as started");
        };
        assert!(matches!(backend.state(&id("alpha")).await, SandboxState::Failed { .. }));
        assert!(os.record("alpha").is_none());
        assert_eq!(os.count("remove-cgroup /fake/alpha"), 1);
    }

    #[tokio::test]
    async fn an_adopted_sandbox_keeps_its_network_helper_or_gets_a_new_one_and_a_stop_ends_it() {
        let os = Arc::new(FakeOs {
            networked: true.into(),
            ..Default::default()
        });
        let first = backend(os.clone());
        first.ensure_running(&spec("alpha")).await.unwrap();
        first.ensure_running(&spec("beta")).await.unwrap();
        let alpha_helper = os.record("alpha").unwrap().network.expect("no helper recorded");
        let beta_helper = os.record("beta").unwrap().network.unwrap();
        // beta's helper ends while no server runs.
        os.helper(beta_helper.pid).unwrap().send_replace(Some("killed".into()));
        drop(first);

        let second = restarted(&os);
        let mut adopted = second.adopt("key").await;
        adopted.sort();
        assert_eq!(adopted, vec![id("alpha"), id("beta")]);
        assert_eq!(
            os.record("alpha").unwrap().network,
            Some(alpha_helper),
            "alpha's helper replaced"
        );
        let started: Vec<String> = os.log().into_iter().filter(|l| l.starts_with("network")).collect();
        assert_eq!(started, ["network beta"], "only beta's ended helper is started again");
        let new = os.record("beta").unwrap().network.expect("beta left without network");
        assert_ne!(new, beta_helper);

        second.stop(&id("alpha")).await.unwrap();
        assert!(
            os.helper(alpha_helper.pid).unwrap().borrow().is_some(),
            "the stop left the helper"
        );
    }
}
