//! The init service: language templates in storage and projects made from
//! them.
//!
//! Storage layout (one bucket or directory):
//! - `base/<language>/...`: the template files, and `base/<language>/.cloudcode-template`
//!   holding the template's content hash, so an outdated copy is replaced;
//! - `code/<project>/...`: each project's files (what its runner syncs);
//! - `projects/<project>.json`: the project's record, written last, so a
//!   project exists only once all its files do.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectStore, StorageError};
use serde::Serialize;
use tokio::sync::Mutex;

const TEMPLATE_MARKER: &str = ".cloudcode-template";

/// A project id: a DNS label (it becomes `<id>.<domain>`), 3 to 63 of
/// lowercase letters, digits and inner dashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProjectId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid project id {0:?}: use 3 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit"
)]
pub struct InvalidProjectId(pub String);

impl ProjectId {
    pub fn parse(raw: &str) -> Result<Self, InvalidProjectId> {
        let ok = (3..=63).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            // Never echo back more than a prefix of an absurd id.
            Err(InvalidProjectId(raw.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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
            let marker = key(&format!("base/{}/{TEMPLATE_MARKER}", language.name()))?;
            let current = template_version(language);
            match self.store.get(&marker).await {
                Ok(stored) if stored.as_ref() == current.as_bytes() => continue,
                Ok(_) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let prefix = KeyPrefix::parse(&format!("base/{}", language.name()))?;
            for old in self.store.list(&prefix).await? {
                self.store.delete(&old.key).await?;
            }
            for (name, content) in template(language) {
                let k = key(&format!("base/{}/{name}", language.name()))?;
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
        let base = KeyPrefix::parse(&format!("base/{}", language.name()))?;
        let dest = KeyPrefix::parse(&format!("code/{id}"))?;
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
            self.store.put(&record_key(&id)?, Bytes::from(json)).await?;
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
        match self.store.get(&record_key(id)?).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self) -> Result<Vec<ProjectRecord>, StorageError> {
        let prefix = KeyPrefix::parse("projects")?;
        let mut out = Vec::new();
        for object in self.store.list(&prefix).await? {
            if let Ok(bytes) = self.store.get(&object.key).await
                && let Ok(record) = serde_json::from_slice::<ProjectRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes the project's files, then its record.
    pub async fn delete(&self, id: &ProjectId) -> Result<(), ProjectError> {
        let lock = self.lock_for(id).await;
        let _held = lock.lock().await;
        if self.get(id).await?.is_none() {
            return Err(ProjectError::NotFound(id.to_string()));
        }
        let prefix = KeyPrefix::parse(&format!("code/{id}"))?;
        for object in self.store.list(&prefix).await? {
            self.store.delete(&object.key).await?;
        }
        self.store.delete(&record_key(id)?).await?;
        Ok(())
    }
}

fn record_key(id: &ProjectId) -> Result<ObjectKey, StorageError> {
    key(&format!("projects/{id}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_dns_labels() {
        for ok in ["abc", "my-project-1", &"a".repeat(63)] {
            assert!(ProjectId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "victim #",
            "../x",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "émoji",
            &"a".repeat(64),
            &"x".repeat(300),
        ] {
            assert!(ProjectId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_versions_are_stable_and_distinct() {
        assert_eq!(template_version(Language::NodeJs), template_version(Language::NodeJs));
        assert_ne!(template_version(Language::NodeJs), template_version(Language::Python));
    }
}
