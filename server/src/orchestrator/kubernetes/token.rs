//! Who is calling the storage gateway, on Kubernetes: a runner pod presents
//! the service-account token the kubelet projects into it for the audience
//! [`STORAGE_AUDIENCE`]. Such a token is bound to its pod: the API server
//! stops accepting it once the pod is gone, and the kubelet rotates it
//! before it expires, so nothing is minted, stored or revoked here.
//!
//! A TokenReview says which pod the token is bound to; the pod must be one
//! of this installation's runners (owner label) with the same UID, and its
//! project label names the one project the caller may touch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

use super::render::{LABEL_MANAGED_BY, LABEL_OWNER, LABEL_PROJECT};
use crate::projects::ProjectId;
use crate::storage_gateway::{AuthError, Authenticator};

/// The audience of runner pods' storage tokens: a token made for the API
/// server (or anything else) is not accepted here, nor this one there.
pub const STORAGE_AUDIENCE: &str = "cloudcode-storage";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Entries kept at most; expired ones are dropped first.
const CACHE_MAX: usize = 10_000;

pub struct PodTokenAuthenticator {
    client: kube::Client,
    /// The projects namespace: only its service accounts' tokens count.
    namespace: String,
    owner: String,
    /// How long an accepted token is trusted without asking again. A sync
    /// makes many requests a second; each need not cost two API calls.
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (ProjectId, Instant)>>,
}

impl PodTokenAuthenticator {
    pub fn new(client: kube::Client, namespace: &str, owner: &str, cache_ttl: Duration) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            owner: owner.to_string(),
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, token: &str) -> Option<ProjectId> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(token)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(project, _)| project.clone())
    }

    fn remember(&self, token: &str, project: &ProjectId) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), (project.clone(), now + self.cache_ttl));
    }

    async fn review(&self, token: &str) -> Result<ProjectId, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![STORAGE_AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(AuthError::Refused(why));
        }
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == STORAGE_AUDIENCE))
        {
            return Err(AuthError::Refused(format!("not a token for {STORAGE_AUDIENCE}")));
        }
        let user = status.user.unwrap_or_default();
        let account_prefix = format!("system:serviceaccount:{}:", self.namespace);
        if !user.username.as_deref().is_some_and(|u| u.starts_with(&account_prefix)) {
            return Err(AuthError::Refused(format!(
                "{:?} is not a service account of namespace {}",
                user.username.unwrap_or_default(),
                self.namespace
            )));
        }
        let extra = user.extra.unwrap_or_default();
        let claim = |name: &str| extra.get(name).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (claim(POD_NAME), claim(POD_UID)) else {
            return Err(AuthError::Refused("the token is not bound to a pod".into()));
        };
        let pod = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&pod_name)
            .await
            .map_err(|e| AuthError::Unavailable(format!("reading pod {pod_name}: {e}")))?
            .ok_or_else(|| AuthError::Refused(format!("pod {pod_name} is gone")))?;
        if pod.metadata.uid.as_deref() != Some(pod_uid.as_str()) {
            return Err(AuthError::Refused(format!("pod {pod_name} was replaced")));
        }
        let labels = pod.metadata.labels.unwrap_or_default();
        let label = |name: &str| labels.get(name).map(String::as_str);
        if label(LABEL_MANAGED_BY) != Some("cloudcode") || label(LABEL_OWNER) != Some(self.owner.as_str()) {
            return Err(AuthError::Refused(format!(
                "pod {pod_name} is not a runner of this installation"
            )));
        }
        let project = label(LABEL_PROJECT).unwrap_or_default();
        ProjectId::parse(project)
            .map_err(|e| AuthError::Refused(format!("pod {pod_name} has no valid project label: {e}")))
    }
}

#[async_trait]
impl Authenticator for PodTokenAuthenticator {
    async fn project_of(&self, token: &str) -> Result<ProjectId, AuthError> {
        if let Some(project) = self.cached(token) {
            return Ok(project);
        }
        let project = self.review(token).await?;
        self.remember(token, &project);
        Ok(project)
    }
}
