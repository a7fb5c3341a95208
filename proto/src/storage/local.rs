//! Object storage in a local directory: the embedded default.
//!
//! An object is a file at `root/<key>`. Writes go to a temporary file in the
//! destination's directory, are fsynced, then renamed over the destination,
//! so a crash at any point leaves the old object or the new one. Temporary
//! names use [`crate::path::RESERVED_PREFIX`], which no key may contain, and
//! listings skip them.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{KeyPrefix, ObjectKey, ObjectMeta, ObjectStore, ObjectStream, StorageError};
use crate::path::RESERVED_PREFIX;

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Creates `root` if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StorageError::LocalIo {
            path: root.display().to_string(),
            source,
        })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Writes through a temporary file so the object appears whole or not at
    /// all. `fill` writes the content into the temporary file.
    async fn put_atomically<F, Fut>(&self, key: &ObjectKey, op: &'static str, fill: F) -> Result<(), StorageError>
    where
        F: FnOnce(tokio::fs::File) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<tokio::fs::File>>,
    {
        let dest = self.path_of(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let fail = |e: std::io::Error| unavailable(op, key, e);
        tokio::fs::create_dir_all(&dir).await.map_err(fail)?;
        let tmp = dir.join(format!("{RESERVED_PREFIX}{}", random_suffix()));
        let result = async {
            let file = tokio::fs::File::create(&tmp).await?;
            let mut file = fill(file).await?;
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &dest).await?;
            // The rename is durable only once the directory entry is.
            tokio::fs::File::open(&dir).await?.sync_all().await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map_err(fail)
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // A clash only makes one write fail; fall back to the time on a failing RNG.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos as u64).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unavailable(op: &'static str, key: &ObjectKey, e: std::io::Error) -> StorageError {
    if e.kind() == ErrorKind::NotFound && matches!(op, "get") {
        return StorageError::NotFound(key.to_string());
    }
    StorageError::Unavailable {
        op,
        key: key.to_string(),
        message: e.to_string(),
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), StorageError> {
        self.put_atomically(key, "put", |mut file| async move {
            file.write_all(&body).await?;
            Ok(file)
        })
        .await
    }

    async fn put_file(&self, key: &ObjectKey, mut input: tokio::fs::File) -> Result<(), StorageError> {
        self.put_atomically(key, "put", |mut file| async move {
            tokio::io::copy(&mut input, &mut file).await?;
            Ok(file)
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        match tokio::fs::read(self.path_of(key)).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::IsADirectory => {
                Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => Err(unavailable("get", key, e)),
        }
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<ObjectStream, StorageError> {
        let file = match tokio::fs::File::open(self.path_of(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::NotFound(key.to_string())),
            Err(e) => return Err(unavailable("get", key, e)),
        };
        let size = match file.metadata().await {
            Ok(m) if m.is_dir() => return Err(StorageError::NotFound(key.to_string())),
            Ok(m) => m.len(),
            Err(e) => return Err(unavailable("get", key, e)),
        };
        let key = key.clone();
        // try_unfold ends the stream after its first error.
        let chunks = futures_util::stream::try_unfold(file, move |mut file| {
            let key = key.clone();
            async move {
                let mut chunk = vec![0u8; STREAM_CHUNK];
                match file.read(&mut chunk).await {
                    Ok(0) => Ok(None),
                    Ok(n) => {
                        chunk.truncate(n);
                        Ok(Some((Bytes::from(chunk), file)))
                    }
                    Err(e) => Err(unavailable("get", &key, e)),
                }
            }
        });
        Ok(ObjectStream {
            size: Some(size),
            body: Box::pin(chunks),
        })
    }

    async fn get_to_file(&self, key: &ObjectKey, dest: &Path) -> Result<u64, StorageError> {
        let mut input = match tokio::fs::File::open(self.path_of(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::NotFound(key.to_string())),
            Err(e) => return Err(unavailable("get", key, e)),
        };
        let local = |source| StorageError::LocalIo {
            path: dest.display().to_string(),
            source,
        };
        let mut output = tokio::fs::File::create(dest).await.map_err(local)?;
        let n = tokio::io::copy(&mut input, &mut output).await.map_err(local)?;
        output.flush().await.map_err(local)?;
        Ok(n)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(unavailable("delete", key, e)),
        }
        // Drop directories the delete left empty, so a later object may take
        // their name. `remove_dir` refuses non-empty ones, which ends the walk.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.clone();
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
            .await
            .map_err(|e| StorageError::Unavailable {
                op: "list",
                key: String::new(),
                message: e.to_string(),
            })?
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StorageError> {
        let source = match tokio::fs::File::open(self.path_of(from)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::NotFound(from.to_string())),
            Err(e) => return Err(unavailable("copy", from, e)),
        };
        self.put_file(to, source).await
    }
}

/// Largest chunk a streamed read yields.
const STREAM_CHUNK: usize = 256 * 1024;

/// A temporary file older than this was left by a writer that died (a
/// kill -9 mid-write); no live write takes that long to land.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

fn remove_if_stale(path: &Path) {
    let stale = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_TEMPORARY);
    if stale {
        let _ = std::fs::remove_file(path);
    }
}

fn list_blocking(root: &Path, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>, StorageError> {
    let start = root.join(prefix.as_str());
    let mut out = Vec::new();
    let mut stack = vec![(start, prefix.as_str().to_owned())];
    while let Some((dir, key_prefix)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(StorageError::Unavailable {
                    op: "list",
                    key: key_prefix,
                    message: e.to_string(),
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::Unavailable {
                op: "list",
                key: key_prefix.clone(),
                message: e.to_string(),
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(RESERVED_PREFIX) {
                remove_if_stale(&entry.path());
                continue;
            }
            if name.starts_with(".bucket-") {
                continue;
            }
            let meta = entry.metadata().map_err(|e| StorageError::Unavailable {
                op: "list",
                key: key_prefix.clone(),
                message: e.to_string(),
            })?;
            let key = format!("{key_prefix}{name}");
            if meta.is_dir() {
                stack.push((entry.path(), format!("{key}/")));
            } else if meta.is_file()
                && let Ok(key) = ObjectKey::parse(&key)
            {
                out.push(ObjectMeta { key, size: meta.len() });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_tells_the_length_then_yields_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3 * STREAM_CHUNK as u32 + 7).map(|i| (i % 251) as u8).collect();
        let key = ObjectKey::parse("code/a/big.bin").unwrap();
        store.put(&key, Bytes::from(data.clone())).await.unwrap();
        let object = store.get_stream(&key).await.unwrap();
        assert_eq!(object.size, Some(data.len() as u64));
        let chunks: Vec<Bytes> = futures_util::TryStreamExt::try_collect(object.body).await.unwrap();
        assert_eq!(chunks.len(), 4, "read in chunks, not whole");
        assert!(chunks.concat() == data);
        let missing = ObjectKey::parse("code/a/missing").unwrap();
        assert!(matches!(
            store.get_stream(&missing).await.map(drop),
            Err(StorageError::NotFound(_))
        ));
        let a_dir = ObjectKey::parse("code/a").unwrap();
        assert!(matches!(
            store.get_stream(&a_dir).await.map(drop),
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn listing_sweeps_temporaries_of_dead_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("code/a")).unwrap();
        let dead = dir.path().join(format!("code/a/{RESERVED_PREFIX}dead"));
        let live = dir.path().join(format!("code/a/{RESERVED_PREFIX}live"));
        std::fs::write(&dead, "half").unwrap();
        std::fs::write(&live, "in progress").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert!(store.list(&KeyPrefix::parse("code").unwrap()).await.unwrap().is_empty());
        assert!(!dead.exists(), "a dead writer's temporary file was kept");
        assert!(live.exists(), "a live write's temporary file was removed");
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let key = |k: &str| ObjectKey::parse(k).unwrap();
        store
            .put(&key("code/a/x.txt"), Bytes::from_static(b"hello"))
            .await
            .unwrap();
        store
            .put(&key("code/a/sub/y.bin"), Bytes::from(vec![0u8, 255]))
            .await
            .unwrap();
        store
            .put(&key("code/ab/z"), Bytes::from_static(b"other project"))
            .await
            .unwrap();
        assert_eq!(&store.get(&key("code/a/x.txt")).await.unwrap()[..], b"hello");
        let listed = store.list(&KeyPrefix::parse("code/a").unwrap()).await.unwrap();
        let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["code/a/sub/y.bin", "code/a/x.txt"]);
        store.delete(&key("code/a/sub/y.bin")).await.unwrap();
        store.delete(&key("code/a/sub/y.bin")).await.unwrap();
        assert!(!dir.path().join("code/a/sub").exists(), "empty directory left behind");
        assert!(matches!(
            store.get(&key("code/a/nope")).await,
            Err(StorageError::NotFound(_))
        ));
        store.copy(&key("code/a/x.txt"), &key("code/b/x.txt")).await.unwrap();
        assert_eq!(&store.get(&key("code/b/x.txt")).await.unwrap()[..], b"hello");
    }
}
