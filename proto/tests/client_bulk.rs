//! A client's bulk writes (a folder sync's first reconcile, a browser's
//! folder upload) are committed two batches at a time, and each request is
//! answered once its own files are durable, not once everything queued
//! behind it is. Real local storage behind a store that holds batches.
#![cfg(feature = "sync")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectMeta, ObjectStore, PutSource, StorageError, layout};
use cloudcode_proto::sync::persister::Persister;
use tokio::sync::{Barrier, Semaphore};
use tokio_util::sync::CancellationToken;

/// Files per request: two of the persister's storage batches.
const FILES: usize = 1024;
const PATIENCE: Duration = Duration::from_secs(20);

/// Local storage whose batches of `first/` wait until two of them are in
/// `put_many` at once, and whose batches of `second/` wait for the test.
#[derive(Debug)]
struct HeldBatches {
    inner: LocalStore,
    both_first_batches: Barrier,
    second: Semaphore,
}

#[async_trait::async_trait]
impl ObjectStore for HeldBatches {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), StorageError> {
        self.inner.put(key, body).await
    }
    async fn put_file(&self, key: &ObjectKey, source: tokio::fs::File) -> Result<(), StorageError> {
        self.inner.put_file(key, source).await
    }
    async fn put_many(&self, items: Vec<(ObjectKey, PutSource)>) -> Vec<Result<(), StorageError>> {
        if items.iter().any(|(key, _)| key.as_str().contains("/first/")) {
            self.both_first_batches.wait().await;
        }
        if items.iter().any(|(key, _)| key.as_str().contains("/second/")) {
            drop(self.second.acquire().await);
        }
        self.inner.put_many(items).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        self.inner.get(key).await
    }
    async fn get_to_file(&self, key: &ObjectKey, dest: &std::path::Path) -> Result<u64, StorageError> {
        self.inner.get_to_file(key, dest).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix).await
    }
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StorageError> {
        self.inner.copy(from, to).await
    }
}

fn made(root: &std::path::Path, dir: &str) -> Vec<WorkspacePath> {
    std::fs::create_dir(root.join(dir)).unwrap();
    (0..FILES)
        .map(|i| {
            let name = format!("{dir}/{i:04}.js");
            std::fs::write(root.join(&name), format!("module.exports = {i};\n")).unwrap();
            WorkspacePath::parse(&name).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_bulk_request_is_answered_in_two_batches_at_once_without_waiting_for_the_next() {
    let storage = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let root = workspace.path().canonicalize().unwrap();
    let project = ProjectId::parse("alpha").unwrap();
    let store = Arc::new(HeldBatches {
        inner: LocalStore::open(storage.path()).unwrap(),
        both_first_batches: Barrier::new(2),
        second: Semaphore::new(0),
    });
    let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
    let persister = Persister::new(
        store.clone(),
        layout::code(&project),
        dir,
        root.clone(),
        Duration::from_millis(10),
    );
    persister.restore().await.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(persister.clone().run(stop.clone()));

    let first = made(&root, "first");
    let second = made(&root, "second");
    // Queued right behind the first request, before the lane's round.
    let later = persister.clone();
    let second_answered = tokio::spawn(async move { later.persist_many(second, true).await });
    let answered = tokio::time::timeout(PATIENCE, persister.persist_many(first, true))
        .await
        .expect("the first request's two batches were not in storage at once, or its answer waited for the second's");
    assert!(answered.iter().all(Result::is_ok), "{answered:?}");
    assert!(
        !second_answered.is_finished(),
        "the second request was answered before its batches were stored"
    );
    let key = layout::code(&project)
        .key_for(&WorkspacePath::parse("first/1023.js").unwrap())
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), "module.exports = 1023;\n");

    store.second.add_permits(FILES);
    let answered = tokio::time::timeout(PATIENCE, second_answered)
        .await
        .expect("the second request once storage took it")
        .unwrap();
    assert!(answered.iter().all(Result::is_ok), "{answered:?}");
    stop.cancel();
}
