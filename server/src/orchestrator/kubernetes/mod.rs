//! The Kubernetes backend: one runner pod per project, with a Service (and
//! in ingress routing an Ingress) owned by it, applied server-side with one
//! field manager. Everything the backend knows it reads from the cluster,
//! so any number of control-plane replicas agree, and a restarted one
//! re-adopts what runs.

mod pod_cache;
pub mod render;
pub mod token;

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};

use self::pod_cache::PodCache;
use self::render::{LABEL_OWNER, LABEL_PROJECT, PREVIEW_PORT, RUNNER_PORT, Routing, RunnerSettings, Template};
use super::{Endpoints, OrchestratorError, SandboxBackend, SandboxSpec, SandboxState};
use crate::gateway::Upstream;
use crate::projects::ProjectId;

/// The field manager of every object the server applies.
pub const FIELD_MANAGER: &str = "cloudcode-server";

/// Container states that will not get better by waiting.
const HOPELESS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

pub struct KubernetesBackend {
    client: Client,
    template: Template,
    settings: RunnerSettings,
    start_timeout: Duration,
    /// What this replica itself just did to each project (started: true,
    /// stopped: false) and when. Within [`DECIDED_FRESH`] it is the answer,
    /// since the watch behind `pods_seen` may not have caught up yet.
    decided: std::sync::Mutex<std::collections::HashMap<ProjectId, (bool, std::time::Instant)>>,
    /// Every runner pod of this installation, kept by one watch.
    pods_seen: PodCache,
}

/// How long this replica's own start or stop outweighs what it reads. A
/// project another replica changes meanwhile is seen that much later.
const DECIDED_FRESH: Duration = Duration::from_secs(2);

impl KubernetesBackend {
    /// Starts watching this installation's runner pods: call it inside a
    /// Tokio runtime.
    pub fn new(client: Client, template: Template, settings: RunnerSettings, start_timeout: Duration) -> Self {
        let pods_seen = PodCache::watch(
            Api::namespaced(client.clone(), &settings.namespace),
            &settings.namespace,
            &render::owner_selector(&settings.owner),
        );
        Self {
            client,
            template,
            settings,
            start_timeout,
            decided: Default::default(),
            pods_seen,
        }
    }

    fn remember(&self, project: &ProjectId, running: bool) {
        let mut decided = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        decided.retain(|_, (_, at)| now.duration_since(*at) < DECIDED_FRESH);
        decided.insert(project.clone(), (running, now));
    }

    fn recently_decided(&self, project: &ProjectId) -> Option<bool> {
        let decided = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        decided
            .get(project)
            .filter(|(_, at)| at.elapsed() < DECIDED_FRESH)
            .map(|(running, _)| *running)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn ingresses(&self) -> Api<Ingress> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    fn endpoints(&self, project: &ProjectId) -> Endpoints {
        let host = format!(
            "{}.{}.svc.{}",
            render::object_name(project),
            self.settings.namespace,
            self.settings.cluster_domain
        );
        Endpoints {
            ide: Upstream::Tcp(format!("{host}:{RUNNER_PORT}")),
            preview: Upstream::Tcp(format!("{host}:{PREVIEW_PORT}")),
        }
    }

    /// The project's pod, if it is this installation's and this project's:
    /// an object of the same name that is not is a conflict, never adopted.
    async fn own_pod(&self, project: &ProjectId) -> Result<Option<Pod>, OrchestratorError> {
        let name = render::object_name(project);
        let pod = self
            .pods()
            .get_opt(&name)
            .await
            .map_err(|e| OrchestratorError::Start(format!("reading pod {name}: {e}")))?;
        match pod {
            Some(pod) if !belongs(&pod.metadata, project, &self.settings.owner) => Err(OrchestratorError::Start(
                format!("pod {name} exists but is not this installation's runner for {project}"),
            )),
            other => Ok(other),
        }
    }

    async fn apply<K>(&self, api: &Api<K>, object: &K) -> Result<K, OrchestratorError>
    where
        K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match api.patch(&name, &params, &Patch::Apply(object)).await {
                Ok(applied) => return Ok(applied),
                // Two replicas applying an object that does not exist yet:
                // one creates it and the other is told it exists; applying
                // again updates it instead.
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => {
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => {
                    let kind = K::kind(&Default::default()).into_owned();
                    return Err(OrchestratorError::Start(format!("applying {kind} {name}: {e}")));
                }
            }
        }
    }

    /// Waits until the pod no longer exists: a watch, not a polling loop.
    fn state_of(&self, project: &ProjectId, pod: Option<&Pod>) -> SandboxState {
        let Some(pod) = pod else { return SandboxState::Stopped };
        match readiness(Some(pod)) {
            _ if pod.metadata.deletion_timestamp.is_some() => SandboxState::Stopping,
            Readiness::Ready => SandboxState::Running(self.endpoints(project)),
            Readiness::Waiting(_) => SandboxState::Starting,
            Readiness::Failed(detail) => SandboxState::Failed { detail },
        }
    }

    async fn wait_gone(&self, name: &str, timeout: Duration) -> Result<(), OrchestratorError> {
        let gone = kube::runtime::wait::await_condition(self.pods(), name, |pod: Option<&Pod>| pod.is_none());
        match tokio::time::timeout(timeout, gone).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(OrchestratorError::Stop(format!("watching pod {name}: {e}"))),
            Err(_) => Err(OrchestratorError::Stop(format!(
                "pod {name} still exists after {timeout:?}"
            ))),
        }
    }

    /// Waits until the pod is Ready, or says why it will not be.
    async fn wait_ready(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
        let name = render::object_name(project);
        let decided = kube::runtime::wait::await_condition(self.pods(), &name, |pod: Option<&Pod>| {
            !matches!(readiness(pod), Readiness::Waiting(_))
        });
        match tokio::time::timeout(self.start_timeout, decided).await {
            Ok(Ok(pod)) => match readiness(pod.as_ref()) {
                Readiness::Ready => Ok(()),
                Readiness::Failed(reason) => Err(OrchestratorError::Start(format!("pod {name}: {reason}"))),
                Readiness::Waiting(_) => unreachable!("await_condition returns only once decided"),
            },
            Ok(Err(e)) => Err(OrchestratorError::Start(format!("watching pod {name}: {e}"))),
            Err(_) => {
                let pod = self.pods().get_opt(&name).await.ok().flatten();
                let why = match readiness(pod.as_ref()) {
                    Readiness::Waiting(why) | Readiness::Failed(why) => why,
                    Readiness::Ready => "ready just now".into(),
                };
                Err(OrchestratorError::NotReady(
                    self.start_timeout,
                    format!("pod {name}: {why}"),
                ))
            }
        }
    }
}

/// The projects of the pods that are not on their way out.
fn running_projects<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<ProjectId> {
    pods.filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.labels.as_ref()?.get(LABEL_PROJECT))
        .filter_map(|id| ProjectId::parse(id).ok())
        .collect()
}

fn belongs(metadata: &kube::api::ObjectMeta, project: &ProjectId, owner: &str) -> bool {
    let labels = metadata.labels.as_ref();
    labels.and_then(|l| l.get(LABEL_PROJECT)).map(String::as_str) == Some(project.as_str())
        && labels.and_then(|l| l.get(LABEL_OWNER)).map(String::as_str) == Some(owner)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Readiness {
    Ready,
    /// Still coming up, and what it is waiting for.
    Waiting(String),
    Failed(String),
}

/// Reads a pod's state as the kubelet reports it, with the pod's own reason
/// for anything that went wrong.
fn readiness(pod: Option<&Pod>) -> Readiness {
    let Some(pod) = pod else {
        return Readiness::Failed("the pod was deleted while starting".into());
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Readiness::Failed("the pod is being deleted".into());
    }
    let Some(status) = &pod.status else {
        return Readiness::Waiting("no status yet".into());
    };
    if status.phase.as_deref() == Some("Failed") || status.phase.as_deref() == Some("Succeeded") {
        let reason = status.reason.clone().unwrap_or_else(|| "the runner exited".into());
        return Readiness::Failed(format!("{reason}: {}", status.message.clone().unwrap_or_default()));
    }
    for container in status.container_statuses.iter().flatten() {
        if let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            if HOPELESS.contains(&reason.as_str()) {
                return Readiness::Failed(format!("{reason}: {}", waiting.message.clone().unwrap_or_default()));
            }
        }
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(unschedulable) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
    {
        return Readiness::Failed(format!(
            "Unschedulable: {}",
            unschedulable.message.clone().unwrap_or_default()
        ));
    }
    let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    if ready && status.pod_ip.is_some() {
        return Readiness::Ready;
    }
    Readiness::Waiting(format!(
        "phase {}",
        status.phase.clone().unwrap_or_else(|| "unknown".into())
    ))
}

#[async_trait]
impl SandboxBackend for KubernetesBackend {
    async fn ensure_running(&self, spec: &SandboxSpec) -> Result<Endpoints, OrchestratorError> {
        let name = render::object_name(&spec.project);
        let rendered = self
            .template
            .render(&spec.project, &spec.token_public_key, &self.settings);
        let mut pod = self.own_pod(&spec.project).await?;
        if let Some(existing) = &pod {
            // A pod on its way out, or one whose runner ended, is replaced.
            let finished = matches!(
                existing.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            );
            if finished && existing.metadata.deletion_timestamp.is_none() {
                let _ = self.pods().delete(&name, &DeleteParams::default()).await;
            }
            if finished || existing.metadata.deletion_timestamp.is_some() {
                self.wait_gone(&name, Duration::from_secs(60)).await?;
                pod = None;
            }
        }
        // Pods are immutable: a running one is adopted as it is. Two
        // concurrent applies of the same pod name make one pod.
        let pod = match pod {
            Some(pod) => pod,
            None => self.apply(&self.pods(), &rendered.pod).await?,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut service = rendered.service;
        render::owned_by(&mut service.metadata, &name, &uid);
        self.apply(&self.services(), &service).await?;
        if let Some(mut ingress) = rendered.ingress {
            render::owned_by(&mut ingress.metadata, &name, &uid);
            self.apply(&self.ingresses(), &ingress).await?;
        }
        if let Err(e) = self.wait_ready(&spec.project).await {
            // Leave nothing half-started: the next start begins afresh (with
            // a fixed image, say).
            let _ = self.stop(&spec.project).await;
            return Err(e);
        }
        self.remember(&spec.project, true);
        Ok(self.endpoints(&spec.project))
    }

    async fn stop(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
        self.remember(project, false);
        let name = render::object_name(project);
        if self
            .own_pod(project)
            .await
            .map_err(|e| OrchestratorError::Stop(e.to_string()))?
            .is_some()
        {
            // The runner gets SIGTERM and its grace period to flush files.
            match self.pods().delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(OrchestratorError::Stop(format!("deleting pod {name}: {e}"))),
            }
        }
        // Owned objects go with the pod through garbage collection; delete
        // them now too, so nothing lingers if the collector is slow.
        for result in [
            self.services().delete(&name, &DeleteParams::default()).await.map(drop),
            if self.settings.routing == Routing::Gateway {
                Ok(())
            } else {
                self.ingresses().delete(&name, &DeleteParams::default()).await.map(drop)
            },
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(OrchestratorError::Stop(format!("deleting {name}: {e}"))),
            }
        }
        self.wait_gone(&name, Duration::from_secs(90)).await
    }

    async fn state(&self, project: &ProjectId) -> SandboxState {
        match self.recently_decided(project) {
            Some(true) => return SandboxState::Running(self.endpoints(project)),
            Some(false) => return SandboxState::Stopped,
            None => {}
        }
        let name = render::object_name(project);
        match self.pods_seen.get(&name) {
            // The watch selects this installation's pods; the name could
            // still be another project's in a hash collision.
            Some(seen) => {
                let pod = seen.filter(|pod| belongs(&pod.metadata, project, &self.settings.owner));
                self.state_of(project, pod.as_deref())
            }
            None => match self.own_pod(project).await {
                Ok(pod) => self.state_of(project, pod.as_ref()),
                Err(e) => SandboxState::Failed { detail: e.to_string() },
            },
        }
    }

    async fn running(&self) -> Vec<ProjectId> {
        if let Some(seen) = self.pods_seen.all() {
            return running_projects(seen.iter().map(|pod| &**pod));
        }
        let selector = render::owner_selector(&self.settings.owner);
        match self.pods().list(&ListParams::default().labels(&selector)).await {
            Ok(list) => running_projects(list.items.iter()),
            Err(e) => {
                tracing::warn!("listing runner pods: {e}");
                Vec::new()
            }
        }
    }

    async fn forget(&self, _project: &ProjectId) {
        // Nothing of a project lives in the cluster once its pod is gone:
        // its files are in storage, which the project service deletes.
    }

    async fn shutdown(&self) {
        // Pods run without this server: the next server or another replica
        // finds them by their labels.
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus};

    use super::*;

    fn pod(status: PodStatus) -> Pod {
        Pod {
            status: Some(status),
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> PodStatus {
        PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "runner".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn readiness_reads_the_pods_own_reasons() {
        assert_eq!(
            readiness(Some(&pod(PodStatus::default()))),
            Readiness::Waiting("phase unknown".into())
        );
        assert_eq!(
            readiness(Some(&pod(waiting("ContainerCreating", "")))),
            Readiness::Waiting("phase Pending".into())
        );
        assert_eq!(
            readiness(Some(&pod(waiting("ImagePullBackOff", "Back-off pulling image \"x\"")))),
            Readiness::Failed("ImagePullBackOff: Back-off pulling image \"x\"".into())
        );
        let unschedulable = PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available: 3 Insufficient memory.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(
            matches!(readiness(Some(&pod(unschedulable))), Readiness::Failed(m) if m.contains("Insufficient memory"))
        );
        let ready = PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(readiness(Some(&pod(ready))), Readiness::Ready);
        assert!(matches!(readiness(None), Readiness::Failed(_)));
    }
}
