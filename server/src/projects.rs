//! The init service: language templates in storage and projects made from
//! them.
//!
//! Where each thing is in storage is `cloudcode_proto::storage::layout`;
//! a template's `.cloudcode-template` holds its content hash, so an
//! outdated copy is replaced.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cloudcode_proto::storage::{ObjectKey, ObjectStore, StorageError, layout};
use tokio::sync::Mutex;

const TEMPLATE_MARKER: &str = ".cloudcode-template";

pub use cloudcode_proto::project::{InvalidProjectId, ProjectId};
pub use cloudcode_proto::rest::{Language, ProjectRecord};

/// A template's files, compiled into the server.
pub fn template(language: Language) -> &'static [(&'static str, &'static str)] {
    match language {
        Language::NodeJs => &[
            ("index.js", include_str!("../templates/node-js/index.js")),
            ("package.json", include_str!("../templates/node-js/package.json")),
            ("README.md", include_str!("../templates/node-js/README.md")),
        ],
        Language::Python => &[
            ("main.py", include_str!("../templates/python/main.py")),
            ("requirements.txt", include_str!("../templates/python/requirements.txt")),
            ("README.md", include_str!("../templates/python/README.md")),
        ],
    }
}

/// FNV-1a over a template's names and contents: stable across builds and
/// Rust versions, unlike `DefaultHasher`.
pub fn template_version(language: Language) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for (name, content) in template(language) {
        for byte in name.bytes().chain([0]).chain(content.bytes()).chain([0]) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    format!("{hash:016x}")
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    InvalidId(#[from] InvalidProjectId),
    #[error("unknown language {0:?}; use node-js or python")]
    UnknownLanguage(String),
    #[error("project {0} already exists")]
    Exists(ProjectId),
    #[error("no project {0}")]
    NotFound(String),
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
}

pub struct Projects {
    store: Arc<dyn ObjectStore>,
    /// Serialises creates and deletes of one id.
    locks: Mutex<HashMap<ProjectId, Arc<Mutex<()>>>>,
}

fn key(raw: &str) -> Result<ObjectKey, StorageError> {
    ObjectKey::parse(raw)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Projects {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    async fn lock_for(&self, id: &ProjectId) -> Arc<Mutex<()>> {
        self.locks.lock().await.entry(id.clone()).or_default().clone()
    }

    /// Writes every template whose stored copy is missing or outdated.
    pub async fn seed_templates(&self) -> Result<(), StorageError> {
        for language in Language::ALL {
            let prefix = layout::template(language);
            let marker = key(&format!("{}{TEMPLATE_MARKER}", prefix.as_str()))?;
            let current = template_version(language);
            match self.store.get(&marker).await {
                Ok(stored) if stored.as_ref() == current.as_bytes() => continue,
                Ok(_) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            for old in self.store.list(&prefix).await? {
                self.store.delete(&old.key).await?;
            }
            for (name, content) in template(language) {
                let k = key(&format!("{}{name}", prefix.as_str()))?;
                self.store.put(&k, Bytes::from_static(content.as_bytes())).await?;
            }
            self.store.put(&marker, Bytes::from(current)).await?;
            tracing::info!(language = language.name(), "template seeded");
        }
        Ok(())
    }

    pub async fn create(&self, raw_id: &str, raw_language: &str) -> Result<ProjectRecord, ProjectError> {
        let id = ProjectId::parse(raw_id)?;
        let language = Language::parse(raw_language)
            .ok_or_else(|| ProjectError::UnknownLanguage(raw_language.chars().take(40).collect()))?;
        let lock = self.lock_for(&id).await;
        let _held = lock.lock().await;
        if self.get(&id).await?.is_some() {
            return Err(ProjectError::Exists(id));
        }
        self.seed_templates().await?;
        let base = layout::template(language);
        let dest = layout::code(&id);
        let mut copied = Vec::new();
        let result = async {
            for object in self.store.list(&base).await? {
                let rest = &object.key.as_str()[base.as_str().len()..];
                if rest == TEMPLATE_MARKER {
                    continue;
                }
                let to = key(&format!("{}{rest}", dest.as_str()))?;
                self.store.copy(&object.key, &to).await?;
                copied.push(to);
            }
            let record = ProjectRecord {
                id: id.to_string(),
                language,
                created_ms: now_ms(),
            };
            let json = serde_json::to_vec(&record).map_err(|e| StorageError::Unavailable {
                op: "encode",
                key: id.to_string(),
                message: e.to_string(),
            })?;
            self.store.put(&layout::record(&id), Bytes::from(json)).await?;
            Ok::<_, StorageError>(record)
        }
        .await;
        match result {
            Ok(record) => Ok(record),
            Err(e) => {
                // Leave nothing half-made behind.
                for k in copied {
                    let _ = self.store.delete(&k).await;
                }
                Err(e.into())
            }
        }
    }

    pub async fn get(&self, id: &ProjectId) -> Result<Option<ProjectRecord>, StorageError> {
        match self.store.get(&layout::record(id)).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self) -> Result<Vec<ProjectRecord>, StorageError> {
        let mut out = Vec::new();
        for object in self.store.list(&layout::records()).await? {
            if let Ok(bytes) = self.store.get(&object.key).await
                && let Ok(record) = serde_json::from_slice::<ProjectRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes the project's files and its home, then its record: a
    /// failure half-way leaves the record, so the delete can be retried.
    pub async fn delete(&self, id: &ProjectId) -> Result<(), ProjectError> {
        let lock = self.lock_for(id).await;
        let _held = lock.lock().await;
        if self.get(id).await?.is_none() {
            return Err(ProjectError::NotFound(id.to_string()));
        }
        for prefix in layout::project_prefixes(id) {
            let keys = self.store.list(&prefix).await?.into_iter().map(|o| o.key).collect();
            for result in self.store.delete_many(keys).await {
                result?;
            }
        }
        self.store.delete(&layout::record(id)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_versions_are_stable_and_distinct() {
        assert_eq!(template_version(Language::NodeJs), template_version(Language::NodeJs));
        assert_ne!(template_version(Language::NodeJs), template_version(Language::Python));
    }
}
