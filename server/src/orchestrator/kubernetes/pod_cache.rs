//! This installation's runner pods as one watch keeps them: the gateway asks
//! for a project's state on every request it routes, and the idle reaper for
//! every running project; answering from a reflector costs the API server
//! one watch per control-plane replica instead of a read per question.
//!
//! Until the watch's first listing is complete, and whenever the watch task
//! is gone, the cache says so and callers read the API server instead: an
//! empty cache must never pass for "no pods".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

pub struct PodCache {
    store: Store<Pod>,
    namespace: String,
    /// Set once the first listing is in the store; cleared if the watch
    /// task ends.
    synced: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PodCache {
    /// Starts watching the pods `selector` picks in `pods`' namespace. Must
    /// be called inside a Tokio runtime.
    pub fn watch(pods: Api<Pod>, namespace: &str, selector: &str) -> Self {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let events = watcher(pods, watcher::Config::default().labels(selector)).default_backoff();
        let task = {
            let synced = synced.clone();
            tokio::spawn(async move {
                let events = reflector::reflector(writer, events);
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::InitDone) => synced.store(true, Ordering::Release),
                        Ok(_) => {}
                        // The backoff retries; the store keeps its last view.
                        Err(e) => tracing::debug!("runner pod watch: {e}"),
                    }
                }
                synced.store(false, Ordering::Release);
            })
        };
        Self {
            store,
            namespace: namespace.to_string(),
            synced,
            task,
        }
    }

    /// `None` while the cache cannot answer; otherwise the pod, if any.
    pub fn get(&self, name: &str) -> Option<Option<Arc<Pod>>> {
        self.synced()
            .then(|| self.store.get(&ObjectRef::new(name).within(&self.namespace)))
    }

    /// `None` while the cache cannot answer; otherwise every pod.
    pub fn all(&self) -> Option<Vec<Arc<Pod>>> {
        self.synced().then(|| self.store.state())
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) && !self.task.is_finished()
    }
}

impl Drop for PodCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}
