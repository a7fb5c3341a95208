//! The orchestrator: starts, stops and watches each project's runner
//! through a [`SandboxBackend`] (local processes here; Kubernetes behind the
//! same trait), remembers which projects should run, issues their tokens
//! and stops idle ones. "Started" means the same for every backend: its
//! `ensure_running` returns once the runner answers. Sandboxes of either
//! backend outlive this server: its shutdown hands them to the next one.

pub mod kubernetes;
pub mod local;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudcode_proto::rest::RunnerHealth;
use cloudcode_proto::token::{Claims, TokenIssuer, unix_now};

use crate::gateway::Upstream;
use crate::projects::ProjectId;

/// Lifetime of the project tokens handed to clients.
pub const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("the sandbox could not be started: {0}")]
    Start(String),
    #[error("the runner did not become ready within {0:?}: {1}")]
    NotReady(Duration, String),
    #[error("stopping the sandbox failed: {0}")]
    Stop(String),
}

/// Where a running project is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub ide: Upstream,
    pub preview: Upstream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxState {
    Running(Endpoints),
    /// Created, not ready yet (a pod being scheduled or pulling its image).
    Starting,
    /// Flushing its files and ending its processes.
    Stopping,
    Stopped,
    /// The sandbox ended without being asked to; `detail` says how.
    Failed {
        detail: String,
    },
}

/// What a backend needs to start one project's runner.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub project: ProjectId,
    pub token_public_key: String,
}

/// A place runners run: local sandboxed processes, or pods.
#[async_trait]
pub trait SandboxBackend: Send + Sync {
    /// Starts the project's runner, or returns the running one's endpoints;
    /// returns once the runner answers.
    async fn ensure_running(&self, spec: &SandboxSpec) -> Result<Endpoints, OrchestratorError>;
    /// Stops the runner (it flushes its files first) and everything it ran.
    async fn stop(&self, project: &ProjectId) -> Result<(), OrchestratorError>;
    async fn state(&self, project: &ProjectId) -> SandboxState;
    async fn running(&self) -> Vec<ProjectId>;
    /// Deletes what this machine keeps of a deleted project (its workspace,
    /// any local copy of its storage), so a new project of the same name
    /// starts clean.
    async fn forget(&self, project: &ProjectId);
    /// This server is going away: sandboxes keep running for the next
    /// server (or another replica), which takes them over; whatever this
    /// process does for them (a local sandbox's S3 mirror) is finished.
    async fn shutdown(&self);
}

pub struct Orchestrator {
    backend: Arc<dyn SandboxBackend>,
    issuer: Arc<TokenIssuer>,
    /// One start or stop at a time per project: concurrent starts share
    /// it. The map's lock is held only to find a project's lock.
    starting: std::sync::Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>,
    /// Projects that should be running: started and not stopped on
    /// purpose. Kept on disk so a restarted server brings them back.
    wanted: Option<Wanted>,
}

/// The projects that should be running, and the file that keeps them. Each
/// change is made and written under one short lock, so two projects
/// starting at once never lose each other's entry.
struct Wanted {
    path: PathBuf,
    projects: std::sync::Mutex<Vec<ProjectId>>,
}

/// A started project, as the API reports it.
#[derive(Debug, Clone)]
pub struct Started {
    pub endpoints: Endpoints,
    pub token: String,
    pub expires: u64,
}

impl Orchestrator {
    pub fn new(backend: Arc<dyn SandboxBackend>, issuer: Arc<TokenIssuer>) -> Self {
        Self {
            backend,
            issuer,
            starting: std::sync::Mutex::new(HashMap::new()),
            wanted: None,
        }
    }

    /// Remembers running projects in `path`, for [`Orchestrator::resume`].
    pub fn remembering(mut self, path: PathBuf) -> Self {
        let projects = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| ProjectId::parse(l.trim()).ok())
            .collect();
        self.wanted = Some(Wanted {
            path,
            projects: std::sync::Mutex::new(projects),
        });
        self
    }

    fn read_wanted(&self) -> Vec<ProjectId> {
        match &self.wanted {
            Some(wanted) => wanted.projects.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    fn set_wanted(&self, project: &ProjectId, running: bool) {
        let Some(Wanted { path, projects }) = &self.wanted else {
            return;
        };
        let mut projects = projects.lock().unwrap_or_else(|p| p.into_inner());
        if projects.contains(project) == running {
            return;
        }
        projects.retain(|p| p != project);
        if running {
            projects.push(project.clone());
        }
        // A few hundred bytes, written and renamed under the lock so the
        // file never goes back to an older set.
        let text: String = projects.iter().map(|p| format!("{p}\n")).collect();
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!("recording running projects in {}: {e}", path.display());
        }
    }

    fn project_lock(&self, project: &ProjectId) -> Arc<tokio::sync::Mutex<()>> {
        self.starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project.clone())
            .or_default()
            .clone()
    }

    /// Starts again, all at once, every project that was running when the
    /// previous server stopped or died (a sandbox the backend took over is
    /// already running: its start is immediate), so a restart leaves users
    /// where they were.
    pub async fn resume(&self) {
        let wanted = self.read_wanted();
        if self.wanted.is_some() {
            // Taken over from the previous server but not wanted: its stop
            // was under way when that server went.
            let unwanted = self.backend.running().await.into_iter().filter(|p| !wanted.contains(p));
            futures_util::future::join_all(unwanted.map(|project| async move {
                let lock = self.project_lock(&project);
                let _held = lock.lock().await;
                if !self.read_wanted().contains(&project)
                    && let Err(e) = self.backend.stop(&project).await
                {
                    tracing::warn!(%project, "stopping a sandbox stopped before the restart: {e}");
                }
            }))
            .await;
        }
        futures_util::future::join_all(wanted.iter().map(|project| async move {
            match self.start(project).await {
                Ok(_) => tracing::info!(%project, "resumed after restart"),
                Err(e) => tracing::warn!(%project, "could not resume after restart: {e}"),
            }
        }))
        .await;
    }

    pub fn issue_token(&self, project: &ProjectId) -> (String, u64) {
        let exp = unix_now() + TOKEN_LIFETIME_SECS;
        (
            self.issuer.issue(&Claims {
                project: project.to_string(),
                exp,
            }),
            exp,
        )
    }

    /// Idempotent: returns once the runner answers, however many callers ask
    /// at once.
    pub async fn start(&self, project: &ProjectId) -> Result<Started, OrchestratorError> {
        let lock = self.project_lock(project);
        let _held = lock.lock().await;
        self.start_held(project).await
    }

    /// Starts the project if `check` passes, run under the project's
    /// lifecycle lock: after a deletion under way (see [`Self::forget`]), so
    /// a start asked while the project is being deleted finds it gone
    /// rather than bringing a sandbox back for it. The outer error is the
    /// check's.
    pub async fn start_if<E>(
        &self,
        project: &ProjectId,
        check: impl Future<Output = Result<(), E>>,
    ) -> Result<Result<Started, OrchestratorError>, E> {
        let lock = self.project_lock(project);
        let _held = lock.lock().await;
        check.await?;
        Ok(self.start_held(project).await)
    }

    /// Under the project's lifecycle lock.
    async fn start_held(&self, project: &ProjectId) -> Result<Started, OrchestratorError> {
        let spec = SandboxSpec {
            project: project.clone(),
            token_public_key: self.issuer.verifier().public_base64(),
        };
        // Wanted from the moment it is asked for: a start whose caller goes
        // away half-way (the local backend completes it regardless) is
        // still resumed after a restart. One that fails is not.
        self.set_wanted(project, true);
        let endpoints = match self.backend.ensure_running(&spec).await {
            Ok(endpoints) => endpoints,
            Err(e) => {
                self.set_wanted(project, false);
                return Err(e);
            }
        };
        let (token, expires) = self.issue_token(project);
        Ok(Started {
            endpoints,
            token,
            expires,
        })
    }

    /// Stops a project on purpose: it stays stopped across restarts.
    pub async fn stop(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
        self.set_wanted(project, false);
        let lock = self.project_lock(project);
        let _held = lock.lock().await;
        // Again under the lock: a start that held it meanwhile marked the
        // project wanted, and the next server would start it again.
        self.set_wanted(project, false);
        self.backend.stop(project).await
    }

    async fn halt(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
        let lock = self.project_lock(project);
        let _held = lock.lock().await;
        self.backend.stop(project).await
    }

    pub async fn state(&self, project: &ProjectId) -> SandboxState {
        self.backend.state(project).await
    }

    /// For a project's deletion: stops it (its runner's last flush lands
    /// first), deletes its local state, then runs `delete` (its storage and
    /// record), all under the project's lifecycle lock, so no start can
    /// bring a sandbox back for it half-way ([`Self::start_if`]).
    pub async fn forget<T>(
        &self,
        project: &ProjectId,
        delete: impl Future<Output = T>,
    ) -> Result<T, OrchestratorError> {
        self.set_wanted(project, false);
        let lock = self.project_lock(project);
        let _held = lock.lock().await;
        self.set_wanted(project, false);
        self.backend.stop(project).await?;
        self.backend.forget(project).await;
        Ok(delete.await)
    }

    pub async fn endpoints(&self, project: &ProjectId) -> Option<Endpoints> {
        match self.backend.state(project).await {
            SandboxState::Running(endpoints) => Some(endpoints),
            _ => None,
        }
    }

    /// Stops every sandbox with no client connected and nothing happening
    /// (no request, no terminal output) for `idle`. The runner flushes its
    /// files on the way out, so the next start finds them all.
    pub async fn reap_idle(&self, idle: Duration) -> Vec<ProjectId> {
        let mut reaped = Vec::new();
        for project in self.backend.running().await {
            let Some(endpoints) = self.endpoints(&project).await else {
                continue;
            };
            let (token, _) = self.issue_token(&project);
            let Ok((200, Some(health))) = crate::gateway::health(&endpoints.ide, &token).await else {
                continue;
            };
            if is_idle(&health, idle) {
                tracing::info!(%project, idle_secs = health.idle_secs, "stopping idle sandbox");
                match self.stop(&project).await {
                    Ok(()) => reaped.push(project),
                    Err(e) => tracing::warn!(%project, "stopping idle sandbox: {e}"),
                }
            }
        }
        reaped
    }

    /// Stops every sandbox (each flushes its files) but keeps them wanted,
    /// so the next server starts them again: `cloudcode-server
    /// --stop-sandboxes`, for a machine that must be left without any.
    pub async fn stop_all(&self) {
        let running = self.backend.running().await;
        futures_util::future::join_all(running.iter().map(|project| async move {
            if let Err(e) = self.halt(project).await {
                tracing::warn!(%project, "stopping: {e}");
            }
        }))
        .await;
    }

    /// Server shutdown: sandboxes keep running, for the next server.
    pub async fn shutdown(&self) {
        self.backend.shutdown().await;
    }
}

/// The idle reaper's decision from a runner's health answer: no client
/// connected and nothing happening for `idle`. (An answer that is not a
/// runner's health never gets here: it never counts as idle.)
fn is_idle(health: &RunnerHealth, idle: Duration) -> bool {
    health.clients == 0 && health.idle_secs >= idle.as_secs()
}

/// Where the local backend keeps its per-project state.
pub fn sandbox_root(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("sandboxes")
}

/// The list of the projects that should run (local backend), beside the
/// sandboxes' own directories under a name no project id can take (ids
/// have no dot). It was `running` once, which a project may be called: an
/// old list is moved.
pub fn wanted_list(data_dir: &std::path::Path) -> PathBuf {
    let root = sandbox_root(data_dir);
    let path = root.join("wanted.list");
    let old = root.join("running");
    if !path.exists()
        && old.is_file()
        && let Err(e) = std::fs::rename(&old, &path)
    {
        tracing::warn!("moving the wanted list {} to {}: {e}", old.display(), path.display());
    }
    path
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Starts answer at once (after a yield, so starts interleave); runners
    /// count as ready.
    #[derive(Default)]
    struct Instant {
        started: Mutex<Vec<ProjectId>>,
        /// Starts take this long.
        delay: Duration,
        /// Starts fail.
        broken: bool,
        /// Running from the start (taken over from a previous server).
        adopted: Mutex<Vec<ProjectId>>,
        stopped: Mutex<Vec<ProjectId>>,
    }

    #[async_trait]
    impl SandboxBackend for Instant {
        async fn ensure_running(&self, spec: &SandboxSpec) -> Result<Endpoints, OrchestratorError> {
            tokio::task::yield_now().await;
            tokio::time::sleep(self.delay).await;
            if self.broken {
                return Err(OrchestratorError::Start("broken".into()));
            }
            self.started.lock().unwrap().push(spec.project.clone());
            let upstream = Upstream::Unix(PathBuf::from(format!("/fake/{}", spec.project)));
            Ok(Endpoints {
                ide: upstream.clone(),
                preview: upstream,
            })
        }
        async fn stop(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
            self.adopted.lock().unwrap().retain(|p| p != project);
            self.stopped.lock().unwrap().push(project.clone());
            Ok(())
        }
        async fn state(&self, _: &ProjectId) -> SandboxState {
            SandboxState::Stopped
        }
        async fn running(&self) -> Vec<ProjectId> {
            self.adopted.lock().unwrap().clone()
        }
        async fn forget(&self, _: &ProjectId) {}
        async fn shutdown(&self) {}
    }

    fn orchestrator(backend: Arc<Instant>, file: &std::path::Path) -> Orchestrator {
        Orchestrator::new(backend, Arc::new(TokenIssuer::generate().unwrap())).remembering(file.to_path_buf())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twenty_starts_at_once_are_all_remembered_and_all_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("running");
        let ids: Vec<ProjectId> = (0..20)
            .map(|i| ProjectId::parse(&format!("crowd-{i:02}")).unwrap())
            .collect();
        let first = orchestrator(Arc::default(), &file);
        let starts = futures_util::future::join_all(ids.iter().map(|id| first.start(id))).await;
        assert!(starts.iter().all(Result::is_ok));
        first.stop(&ids[3]).await.unwrap();
        let expected: Vec<&ProjectId> = ids.iter().filter(|id| **id != ids[3]).collect();

        let backend = Arc::new(Instant::default());
        let second = orchestrator(backend.clone(), &file);
        second.resume().await;
        let mut resumed = backend.started.lock().unwrap().clone();
        resumed.sort();
        assert_eq!(resumed.iter().collect::<Vec<_>>(), expected);
    }

    #[tokio::test]
    async fn a_start_is_remembered_even_if_its_caller_goes_away_but_not_if_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("running");
        let slow = ProjectId::parse("slow").unwrap();
        let patient = Arc::new(Instant {
            delay: Duration::from_secs(60),
            ..Default::default()
        });
        let first = orchestrator(patient, &file);
        let abandoned = tokio::time::timeout(Duration::from_millis(20), first.start(&slow)).await;
        assert!(abandoned.is_err());

        let broken = ProjectId::parse("broken").unwrap();
        let failing = Arc::new(Instant {
            broken: true,
            ..Default::default()
        });
        let second = orchestrator(failing, &file);
        assert!(second.start(&broken).await.is_err());

        let backend = Arc::new(Instant::default());
        orchestrator(backend.clone(), &file).resume().await;
        assert_eq!(*backend.started.lock().unwrap(), vec![slow]);
    }

    #[tokio::test]
    async fn a_sandbox_taken_over_but_stopped_before_the_restart_is_stopped_the_rest_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("running");
        let (kept, stopping) = (ProjectId::parse("kept").unwrap(), ProjectId::parse("stopping").unwrap());
        let first = orchestrator(Arc::default(), &file);
        first.start(&kept).await.unwrap();
        first.start(&stopping).await.unwrap();
        // The server went while this stop was under way: its sandbox ran on.
        first.set_wanted(&stopping, false);

        let backend = Arc::new(Instant::default());
        *backend.adopted.lock().unwrap() = vec![kept.clone(), stopping.clone()];
        orchestrator(backend.clone(), &file).resume().await;
        assert_eq!(*backend.stopped.lock().unwrap(), vec![stopping]);
        assert_eq!(backend.running().await, vec![kept]);
    }

    #[test]
    fn only_a_runner_with_no_client_and_nothing_happening_is_idle() {
        let idle = Duration::from_secs(60);
        let health = |clients, idle_secs| RunnerHealth {
            project: "p".into(),
            protocol: 1,
            terminals: 0,
            clients,
            idle_secs,
            storage: Default::default(),
        };
        assert!(is_idle(&health(0, 60), idle));
        assert!(!is_idle(&health(1, 600), idle));
        assert!(!is_idle(&health(0, 59), idle));
    }
}
