//! A persister's excluded paths (a home directory's caches): never
//! uploaded, never restored, and what storage already holds there is left
//! as it is. Real local storage, real directories.
#![cfg(feature = "sync")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{ObjectStore, layout};
use cloudcode_proto::sync::persister::{NotPersisted, Persister};

fn p(raw: &str) -> WorkspacePath {
    WorkspacePath::parse(raw).unwrap()
}

fn home_persister(store: Arc<dyn ObjectStore>, dir: &std::path::Path) -> Arc<Persister> {
    let root = dir.canonicalize().unwrap();
    let handle = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
    let unsaved = layout::HOME_UNSAVED.iter().map(|raw| p(raw)).collect();
    let project = ProjectId::parse("alpha").unwrap();
    Persister::excluding(
        store,
        layout::home(&project),
        handle,
        root,
        Duration::from_millis(10),
        unsaved,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn excluded_paths_are_neither_stored_nor_restored() {
    let storage = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(storage.path()).unwrap());
    let home = layout::home(&ProjectId::parse("alpha").unwrap());
    // Left by an older runner that kept everything: stays in storage, but
    // does not come back.
    let old_cache = home.key_for(&p(".cache/pip/old.whl")).unwrap();
    store.put(&old_cache, Bytes::from_static(b"old")).await.unwrap();

    let first = tempfile::tempdir().unwrap();
    let dir = first.path();
    std::fs::create_dir_all(dir.join(".cache/pip")).unwrap();
    std::fs::create_dir_all(dir.join(".cargo/registry/index")).unwrap();
    std::fs::create_dir_all(dir.join(".cargo/bin")).unwrap();
    std::fs::create_dir_all(dir.join(".npm/_cacache")).unwrap();
    std::fs::write(dir.join(".bashrc"), "alias ll='ls -l'\n").unwrap();
    std::fs::write(dir.join(".cache/pip/new.whl"), "wheel").unwrap();
    std::fs::write(dir.join(".cargo/registry/index/x"), "index").unwrap();
    std::fs::write(dir.join(".cargo/bin/tool"), "a tool").unwrap();
    std::fs::write(dir.join(".npm/_cacache/y"), "tarball").unwrap();
    let persister = home_persister(store.clone(), dir);
    assert_eq!(persister.restore().await.unwrap(), 0, "a cache was restored");
    assert!(!dir.join(".cache/pip/old.whl").exists());
    assert!(matches!(
        persister.persist(p(".cache/pip/new.whl")).await,
        Err(NotPersisted::Refused { .. })
    ));
    persister.mark_dirty(p(".cache/pip/new.whl"));
    persister.mark_dirty(WorkspacePath::root());
    let unsaved = persister.flush(Instant::now() + Duration::from_secs(20)).await;
    assert!(unsaved.is_empty(), "{unsaved:?}");

    let mut keys: Vec<String> = store
        .list(&home)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "home/alpha/.bashrc",
            "home/alpha/.cache/pip/old.whl",
            "home/alpha/.cargo/bin/tool",
        ]
    );

    // A new home restores what was kept, and no cache.
    let second = tempfile::tempdir().unwrap();
    let restored = home_persister(store, second.path());
    restored.restore().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(second.path().join(".bashrc")).unwrap(),
        "alias ll='ls -l'\n"
    );
    assert!(second.path().join(".cargo/bin/tool").exists());
    assert!(!second.path().join(".cache").exists());
    assert!(!second.path().join(".npm").exists());
}
