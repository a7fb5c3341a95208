//! Starting, watching and stopping local sandboxes.
//!
//! Every project's state is in one map under a short lock that is never
//! held across an await; each project's lifecycle (start, stop, clean-up
//! after a runner died, forget) is serialised by that project's own async
//! mutex, so one project's slow start (a restore of thousands of files, a
//! network helper) never delays another project's start, stop or status.
//! Each step runs in a task of its own: a caller that goes away (a client
//! that hangs up) never leaves a half-started sandbox behind.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::cgroup::Cgroup;
use super::os::{HostOs, Os, Process};
use super::{LocalConfig, command};
use crate::gateway::Upstream;
use crate::orchestrator::{Endpoints, OrchestratorError, SandboxBackend, SandboxSpec, SandboxState};
use crate::projects::ProjectId;

/// How long a runner may take to flush its files and exit when stopped.
const STOP_GRACE: Duration = Duration::from_secs(40);
/// How long a cgroup whose last processes are exiting is retried for.
const CGROUP_REMOVAL: Duration = Duration::from_secs(1);

pub struct LocalBackend {
    inner: Arc<Inner>,
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
    /// The sandbox's user-mode network stack, with `Network::Outbound`.
    network: Option<Box<dyn Process>>,
    cgroup: Option<Cgroup>,
    mirror: Option<crate::mirror::Mirror>,
    endpoints: Endpoints,
}

impl LocalBackend {
    pub fn new(config: LocalConfig) -> Self {
        let cgroups = super::CgroupVersion::detect();
        tracing::info!(?cgroups, isolation = ?config.isolation, "local sandbox backend");
        let sockets = super::os::socket_base(&config.root);
        let os = Arc::new(HostOs::new(config.clone(), cgroups));
        Self::with_os(os, config, sockets, STOP_GRACE)
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
                projects: Mutex::new(HashMap::new()),
                lifecycles: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    fn lifecycle(&self, project: &ProjectId) -> Arc<tokio::sync::Mutex<()>> {
        self.lifecycles
            .lock()
            .unwrap()
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
                tracing::info!(%project, pid = ?sandbox.process.id(), "sandbox started");
                self.projects().insert(project.clone(), Phase::Running(sandbox));
                Ok(endpoints)
            }
            Err(detail) => {
                self.projects().insert(
                    project.clone(),
                    Phase::Failed {
                        detail: detail.clone(),
                        remains: None,
                    },
                );
                Err(OrchestratorError::Start(detail))
            }
        }
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Sandbox, String> {
        let project = &spec.project;
        let mirror = match &self.mirror_to {
            Some(store) => {
                let dir = self.storage_dir.join("code").join(project.as_str());
                let mirror = crate::mirror::Mirror::start(store.clone(), project, &dir)
                    .await
                    .map_err(|e| e.to_string())?;
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
                return Err(detail);
            }
        };
        let network = match process.id() {
            Some(pid) => self.os.start_network(pid).await,
            None => None,
        };
        Ok(Sandbox {
            process,
            network,
            cgroup,
            mirror,
            endpoints: self.endpoints(project),
        })
    }

    /// Under the project's lifecycle lock.
    async fn stop(self: Arc<Self>, project: ProjectId) {
        let mut sandbox = {
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
        // The runner flushes pending changes to storage on SIGTERM; the
        // sandbox ends when the runner does. A sandbox whose runner is not
        // there (yet, or any more) holds nothing unsaved.
        let runner = sandbox.process.id().and_then(|pid| self.os.runner_pid(pid));
        match runner {
            Some(runner) => {
                self.os.terminate(runner);
                let grace = self.stop_grace;
                if tokio::time::timeout(grace, sandbox.process.wait()).await.is_err() {
                    tracing::warn!(%project, "runner did not stop in {grace:?}: killing the sandbox");
                    sandbox.process.kill().await;
                }
            }
            None => sandbox.process.kill().await,
        }
        self.clean_up(&project, sandbox).await;
        self.projects().remove(&project);
        tracing::info!(%project, "sandbox stopped");
    }

    /// Ends what a sandbox left behind: its network helper, whatever is
    /// still in its cgroup, the cgroup, its mirror's last uploads.
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
            dirs.push(self.storage_dir.join("code").join(project.as_str()));
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
            }
        }
        async fn start_network(&self, _sandbox: u32) -> Option<Box<dyn Process>> {
            None
        }
        fn kill_cgroup(&self, cgroup: &Cgroup) {
            self.note(format!("kill-cgroup {}", cgroup.dirs[0].display()));
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
        LocalBackend::with_os(os, config, "/sockets".into(), Duration::from_millis(50))
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
                "remove-cgroup /fake/alpha"
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
                "kill-cgroup /fake/mule",
                "remove-cgroup /fake/mule"
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
}
