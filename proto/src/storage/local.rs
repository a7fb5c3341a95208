//! Object storage in a local directory: the embedded default.
//!
//! An object is a file at `root/<key>`. Writes go to a temporary file in the
//! destination's directory, are fsynced, then renamed over the destination,
//! so a crash at any point leaves the old object or the new one. Temporary
//! names use [`crate::path::RESERVED_PREFIX`], which no key may contain, and
//! listings skip them.
//!
//! Batches ([`ObjectStore::put_many`], [`ObjectStore::delete_many`]) are
//! group-committed, as databases do: every object of the batch is written
//! to its temporary file, then one `syncfs` makes them all durable, then
//! they are renamed into place and a second `syncfs` makes the renames
//! durable. A batch is acknowledged only after that second sync, so an `Ok`
//! still means durable, at two syncs per batch instead of two per object.
//! Deletes change only directories: each directory whose entry went is
//! fsynced, and nothing else is written back.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{KeyPrefix, ObjectKey, ObjectMeta, ObjectStore, ObjectStream, PutSource, StorageError};
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
        let tmp = dir.join(TemporaryNames::fresh().next());
        let result = async {
            let file = tokio::fs::File::create_new(&tmp).await?;
            let mut file = fill(file).await?;
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &dest).await?;
            // The rename is durable only once the directory entry is.
            tokio::fs::File::open(&dir).await?.sync_all().await
        }
        .await;
        // A name another writer holds is theirs to remove.
        if result.as_ref().is_err_and(|e| e.kind() != ErrorKind::AlreadyExists) {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map_err(fail)
    }
}

/// Batches this small are committed object by object (fsync of the file
/// and its directory): a single save must not pay for a whole-filesystem
/// sync.
const GROUP_COMMIT_MIN: usize = 4;

/// Makes everything written under `root` durable: `syncfs` where available,
/// else each file and directory in `fallback` one by one.
fn sync_all(root: &Path, fallback: &mut dyn Iterator<Item = PathBuf>) -> std::io::Result<()> {
    #[cfg(any(feature = "sync", feature = "testing"))]
    {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(root)?;
        // SAFETY: a valid descriptor, owned by `dir` for the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    let _ = root;
    for path in fallback {
        std::fs::File::open(&path)?.sync_all()?;
    }
    Ok(())
}

/// Makes the entries of `dirs` durable, one directory at a time; one gone
/// since (emptied by a later delete) has nothing left to sync. A delete
/// changes only its directories, so unlike a batch of writes it has no
/// file contents to commit: a whole-filesystem `syncfs` would also write
/// back every file the sandbox's programs have dirtied (an `npm install`'s
/// tree), which made a recursive delete of 100,000 files take 14 s instead
/// of 3, and held a terminal's echo up to 100 ms meanwhile.
fn sync_dirs(dirs: impl IntoIterator<Item = PathBuf>) -> std::io::Result<()> {
    for dir in dirs {
        match std::fs::File::open(&dir) {
            Ok(handle) => handle.sync_all()?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_source(tmp: &Path, source: PutSource, durable: bool) -> std::io::Result<()> {
    use std::io::Write;
    // Never an existing file: a clash of names fails this write alone.
    let mut file = std::fs::File::create_new(tmp)?;
    match source {
        PutSource::Bytes(body) => file.write_all(&body)?,
        PutSource::File(mut input) => {
            std::io::copy(&mut input, &mut file)?;
        }
    }
    if durable {
        file.sync_all()?;
    }
    Ok(())
}

impl LocalStore {
    fn put_many_blocking(&self, items: Vec<(ObjectKey, PutSource)>) -> Vec<Result<(), StorageError>> {
        let group = items.len() >= GROUP_COMMIT_MIN;
        let mut results: Vec<Result<(), StorageError>> = Vec::with_capacity(items.len());
        let mut staged: Vec<(usize, PathBuf, PathBuf)> = Vec::with_capacity(items.len());
        let mut made_dirs = std::collections::HashSet::new();
        let names = TemporaryNames::fresh();
        for (i, (key, source)) in items.into_iter().enumerate() {
            let dest = self.path_of(&key);
            let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
            let tmp = dir.join(names.next());
            let written: std::io::Result<()> = (|| {
                if !made_dirs.contains(&dir) {
                    std::fs::create_dir_all(&dir)?;
                    made_dirs.insert(dir.clone());
                }
                write_source(&tmp, source, !group)?;
                if !group {
                    std::fs::rename(&tmp, &dest)?;
                    std::fs::File::open(&dir)?.sync_all()?;
                }
                Ok(())
            })();
            match written {
                Ok(()) => {
                    results.push(Ok(()));
                    if group {
                        staged.push((i, tmp, dest));
                    }
                }
                Err(e) => {
                    // A name another writer holds is theirs to remove.
                    if e.kind() != ErrorKind::AlreadyExists {
                        let _ = std::fs::remove_file(&tmp);
                    }
                    results.push(Err(unavailable("put", &key, e)));
                }
            }
        }
        if staged.is_empty() {
            return results;
        }
        let fail_all =
            |results: &mut Vec<Result<(), StorageError>>, staged: &[(usize, PathBuf, PathBuf)], e: &std::io::Error| {
                for (i, tmp, dest) in staged {
                    let _ = std::fs::remove_file(tmp);
                    results[*i] = Err(StorageError::Unavailable {
                        op: "put",
                        key: dest.display().to_string(),
                        message: e.to_string(),
                    });
                }
            };
        // 1. Every object's bytes durable, before any rename can be.
        if let Err(e) = sync_all(&self.root, &mut staged.iter().map(|(_, tmp, _)| tmp.clone())) {
            fail_all(&mut results, &staged, &e);
            return results;
        }
        // 2. Into place, 3. the renames durable.
        let mut renamed = Vec::with_capacity(staged.len());
        for (i, tmp, dest) in staged {
            match std::fs::rename(&tmp, &dest) {
                Ok(()) => renamed.push((i, tmp, dest)),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    results[i] = Err(StorageError::Unavailable {
                        op: "put",
                        key: dest.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let dirs: std::collections::BTreeSet<PathBuf> = renamed
            .iter()
            .filter_map(|(_, _, dest)| dest.parent().map(Path::to_path_buf))
            .collect();
        if let Err(e) = sync_all(&self.root, &mut dirs.into_iter()) {
            fail_all(&mut results, &renamed, &e);
        }
        results
    }

    fn delete_blocking(&self, key: &ObjectKey) -> Result<Option<PathBuf>, StorageError> {
        let path = self.path_of(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable("delete", key, e)),
        }
        // Drop directories the delete left empty, so a later object may take
        // their name. `remove_dir` refuses non-empty ones, which ends the
        // walk; the directory it ends at is the one whose entry changed.
        let mut dir = path.parent();
        let mut last = dir.map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
            last = dir.map(Path::to_path_buf);
        }
        Ok(last)
    }

    fn delete_many_blocking(&self, keys: Vec<ObjectKey>) -> Vec<Result<(), StorageError>> {
        let mut dirs = std::collections::BTreeSet::new();
        let mut results: Vec<Result<(), StorageError>> = keys
            .iter()
            .map(|key| {
                self.delete_blocking(key).map(|dir| {
                    dirs.extend(dir);
                })
            })
            .collect();
        if let Err(e) = sync_dirs(dirs) {
            for (result, key) in results.iter_mut().zip(&keys) {
                if result.is_ok() {
                    *result = Err(unavailable("delete", key, std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
        results
    }

    fn get_many_blocking(&self, items: Vec<(ObjectKey, PathBuf)>) -> Vec<Result<u64, StorageError>> {
        items
            .into_iter()
            .map(|(key, dest)| match std::fs::File::open(self.path_of(&key)) {
                Ok(mut input) => {
                    let mut output = std::fs::File::create(&dest).map_err(|source| StorageError::LocalIo {
                        path: dest.display().to_string(),
                        source,
                    })?;
                    std::io::copy(&mut input, &mut output).map_err(|source| StorageError::LocalIo {
                        path: dest.display().to_string(),
                        source,
                    })
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound(key.to_string())),
                Err(e) => Err(unavailable("get", &key, e)),
            })
            .collect()
    }
}

/// Runs `f` on the blocking pool; a panic there is an unavailable store.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Unavailable {
            op,
            key: String::new(),
            message: e.to_string(),
        })
}

/// Names of temporary files no other writer's have: 64 random bits drawn
/// for each put or batch (not for each of a batch's 512 objects), then a
/// counter. Drawn afresh each time, they differ in two machines cloned
/// from one snapshot, which share nothing else.
struct TemporaryNames {
    seed: u64,
}

impl TemporaryNames {
    fn fresh() -> Self {
        let mut bytes = [0u8; 8];
        // A clash only makes one write fail; fall back to the time and pid
        // on a failing RNG.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            bytes = (nanos as u64 ^ u64::from(std::process::id()) << 40).to_be_bytes();
        }
        Self {
            seed: u64::from_be_bytes(bytes),
        }
    }

    fn next(&self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{RESERVED_PREFIX}{:016x}{n:x}", self.seed)
    }
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
        let key = key.clone();
        let this = self.clone();
        blocking("delete", move || this.delete_many_blocking(vec![key]))
            .await?
            .pop()
            .unwrap_or(Ok(()))
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

    async fn put_many(&self, items: Vec<(ObjectKey, PutSource)>) -> Vec<Result<(), StorageError>> {
        let n = items.len();
        let this = self.clone();
        blocking("put", move || this.put_many_blocking(items))
            .await
            .unwrap_or_else(|e| (0..n).map(|_| Err(clone_error(&e))).collect())
    }

    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Vec<Result<(), StorageError>> {
        let n = keys.len();
        let this = self.clone();
        blocking("delete", move || this.delete_many_blocking(keys))
            .await
            .unwrap_or_else(|e| (0..n).map(|_| Err(clone_error(&e))).collect())
    }

    async fn get_many_to_files(&self, items: Vec<(ObjectKey, PathBuf)>) -> Vec<Result<u64, StorageError>> {
        let n = items.len();
        let this = self.clone();
        blocking("get", move || this.get_many_blocking(items))
            .await
            .unwrap_or_else(|e| (0..n).map(|_| Err(clone_error(&e))).collect())
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

fn clone_error(e: &StorageError) -> StorageError {
    StorageError::Unavailable {
        op: "batch",
        key: String::new(),
        message: e.to_string(),
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

    #[tokio::test]
    async fn batches_are_group_committed_and_answered_per_item() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let key = |k: &str| ObjectKey::parse(k).unwrap();
        let items: Vec<(ObjectKey, PutSource)> = (0..50)
            .map(|i| {
                (
                    key(&format!("code/a/d{}/f{i}", i % 5)),
                    PutSource::Bytes(Bytes::from(format!("content {i}"))),
                )
            })
            .collect();
        let results = store.put_many(items).await;
        assert_eq!(results.len(), 50);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(&store.get(&key("code/a/d3/f8")).await.unwrap()[..], b"content 8");
        // One item cannot be stored (its name is a directory): only it fails.
        std::fs::create_dir_all(dir.path().join("code/a/taken/x")).unwrap();
        let mut items: Vec<(ObjectKey, PutSource)> = (0..5)
            .map(|i| (key(&format!("code/a/g{i}")), PutSource::Bytes(Bytes::from_static(b"g"))))
            .collect();
        items.insert(2, (key("code/a/taken"), PutSource::Bytes(Bytes::from_static(b"no"))));
        let results = store.put_many(items).await;
        assert!(results[2].is_err() && results[2].as_ref().unwrap_err().is_retryable());
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
        let listed = store.list(&KeyPrefix::parse("code/a").unwrap()).await.unwrap();
        assert_eq!(listed.len(), 55, "temporaries left or objects missing");
        let keys: Vec<ObjectKey> = (0..50).map(|i| key(&format!("code/a/d{}/f{i}", i % 5))).collect();
        assert!(store.delete_many(keys).await.iter().all(Result::is_ok));
        assert!(!dir.path().join("code/a/d0").exists(), "empty directories left behind");
        let restored = dir.path().join("restored");
        std::fs::create_dir_all(&restored).unwrap();
        let got = store
            .get_many_to_files(vec![
                (key("code/a/g0"), restored.join("g0")),
                (key("code/a/missing"), restored.join("m")),
            ])
            .await;
        assert_eq!(got[0].as_ref().unwrap(), &1);
        assert!(matches!(got[1], Err(StorageError::NotFound(_))));
    }
}
