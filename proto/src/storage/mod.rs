//! Object storage: one trait, two real backends ([`local::LocalStore`], a
//! directory; [`s3::S3Store`], any S3-compatible service).
//!
//! Keys are validated [`ObjectKey`]s. Every write is all-or-nothing: a reader
//! sees the old object or the new one, never a torn one, even when the writer
//! is killed mid-write.

pub mod gateway;
pub mod layout;
pub mod local;
#[cfg(feature = "s3")]
pub mod s3;

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::path::WorkspacePath;

/// Longest key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Requests a backend without a batch operation of its own keeps in flight
/// at once for [`ObjectStore::put_many`] and friends.
pub const PARALLEL_REQUESTS: usize = 32;

/// The content of one object of a [`ObjectStore::put_many`] batch: small
/// files are read whole (so a batch of thousands holds no descriptors),
/// larger ones stay open files and are streamed.
pub enum PutSource {
    Bytes(Bytes),
    File(std::fs::File),
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} does not exist")]
    NotFound(String),
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// Worth retrying: the service is down, slow or refusing for now.
    #[error("storage {op} of {key:?} failed: {message}")]
    Unavailable {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("local I/O on {path} failed: {source}")]
    LocalIo { path: String, source: std::io::Error },
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }

    /// An error that retrying cannot cure: the key itself is refused.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StorageError::InvalidKey { .. })
    }
}

/// A validated object key: `/`-separated non-empty components, none of them
/// `.` or `..`, no control characters, at most [`MAX_KEY_BYTES`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(raw: &str) -> Result<Self, StorageError> {
        let invalid = |reason| StorageError::InvalidKey {
            key: raw.to_owned(),
            reason,
        };
        if raw.is_empty() {
            return Err(invalid("empty"));
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(invalid("longer than 1024 bytes"));
        }
        for component in raw.split('/') {
            match component {
                "" => return Err(invalid("empty component")),
                "." | ".." => return Err(invalid("`.` or `..` component")),
                c if c.starts_with(crate::path::RESERVED_PREFIX) => return Err(invalid("reserved name")),
                c if c.chars().any(|ch| ch.is_control()) => return Err(invalid("control character")),
                _ => {}
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key prefix that always ends at a component boundary (`code/alpha/`), so
/// project `alpha` never matches `alphabet`'s objects. The empty prefix is
/// the whole store.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn parse(raw: &str) -> Result<Self, StorageError> {
        let trimmed = raw.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(Self(String::new()));
        }
        ObjectKey::parse(trimmed)?;
        Ok(Self(format!("{trimmed}/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a workspace path under this prefix. Workspace paths obey
    /// stricter rules than keys, so this cannot fail except on length.
    pub fn key_for(&self, path: &WorkspacePath) -> Result<ObjectKey, StorageError> {
        ObjectKey::parse(&format!("{}{}", self.0, path.as_str()))
    }

    /// The workspace path a key under this prefix stands for, or `None` for
    /// keys outside it or that no workspace path can name.
    pub fn path_of(&self, key: &ObjectKey) -> Option<WorkspacePath> {
        let rest = key.as_str().strip_prefix(&self.0)?;
        WorkspacePath::parse(rest).ok().filter(|p| !p.is_root())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
}

/// An object being read: see [`ObjectStore::get_stream`].
pub struct ObjectStream {
    /// The length, when storage tells it before the bytes.
    pub size: Option<u64>,
    pub body: futures_util::stream::BoxStream<'static, Result<Bytes, StorageError>>,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores `body` under `key`, replacing any object there.
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), StorageError>;

    /// Stores the content of an open file, streaming it (multipart for large
    /// files) rather than loading it whole. Taking an open file rather than a
    /// path lets callers open it beneath a confined directory handle.
    async fn put_file(&self, key: &ObjectKey, source: tokio::fs::File) -> Result<(), StorageError>;

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError>;

    /// The object's length and its bytes as they arrive: for passing an
    /// object on without holding it whole. An error mid-stream ends it.
    async fn get_stream(&self, key: &ObjectKey) -> Result<ObjectStream, StorageError> {
        let body = self.get(key).await?;
        Ok(ObjectStream {
            size: Some(body.len() as u64),
            body: Box::pin(futures_util::stream::once(async move { Ok(body) })),
        })
    }

    /// Streams the object into `dest`, creating or truncating it; returns
    /// the byte count.
    async fn get_to_file(&self, key: &ObjectKey, dest: &Path) -> Result<u64, StorageError>;

    /// Removes `key`; removing a missing key succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Every object under `prefix`, all pages, in key order.
    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>, StorageError>;

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StorageError>;

    /// Stores many objects; one result per item, in order. An `Ok` means
    /// durable, as for [`ObjectStore::put`]. Backends override it to commit
    /// a batch at once (local storage: one sync for the whole batch; the
    /// gateway: one request); the default keeps [`PARALLEL_REQUESTS`]
    /// uploads in flight.
    async fn put_many(&self, items: Vec<(ObjectKey, PutSource)>) -> Vec<Result<(), StorageError>> {
        use futures_util::StreamExt;
        futures_util::stream::iter(items)
            .map(|(key, source)| async move {
                match source {
                    PutSource::Bytes(body) => self.put(&key, body).await,
                    PutSource::File(file) => self.put_file(&key, tokio::fs::File::from_std(file)).await,
                }
            })
            .buffered(PARALLEL_REQUESTS)
            .collect()
            .await
    }

    /// Removes many keys (missing ones succeed); one result per key, in
    /// order. S3 overrides it with `DeleteObjects`.
    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Vec<Result<(), StorageError>> {
        use futures_util::StreamExt;
        futures_util::stream::iter(keys)
            .map(|key| async move { self.delete(&key).await })
            .buffered(PARALLEL_REQUESTS)
            .collect()
            .await
    }

    /// Downloads many objects, each into its own new file; one result (the
    /// byte count) per item, in order.
    async fn get_many_to_files(&self, items: Vec<(ObjectKey, PathBuf)>) -> Vec<Result<u64, StorageError>> {
        use futures_util::StreamExt;
        futures_util::stream::iter(items)
            .map(|(key, dest)| async move { self.get_to_file(&key, &dest).await })
            .buffered(PARALLEL_REQUESTS)
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        assert!(ObjectKey::parse("code/a/b.txt").is_ok());
        for bad in ["", "/a", "a//b", "a/../b", "a/\0", "a/.cloudcode-tmp-x"] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
        let prefix = KeyPrefix::parse("code/alpha").unwrap();
        assert_eq!(prefix.as_str(), "code/alpha/");
        let key = prefix.key_for(&WorkspacePath::parse("src/x.py").unwrap()).unwrap();
        assert_eq!(key.as_str(), "code/alpha/src/x.py");
        assert_eq!(prefix.path_of(&key).unwrap().as_str(), "src/x.py");
        assert_eq!(prefix.path_of(&ObjectKey::parse("code/alphabet/x").unwrap()), None);
        assert_eq!(KeyPrefix::parse("").unwrap().as_str(), "");
    }
}
