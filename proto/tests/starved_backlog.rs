//! The backlog's lane runs on a runtime of its own, whose threads a runner
//! gives CPU only when nothing else wants it: under a build that keeps every
//! CPU busy, it gets none. What programs wrote meanwhile must still become
//! durable, not wait for the build to end. Here that runtime's only worker
//! is held outright, the way a saturating build holds an idle-class thread.
#![cfg(feature = "sync")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{ObjectStore, layout};
use cloudcode_proto::sync::persister::Persister;
use tokio_util::sync::CancellationToken;

fn p(raw: &str) -> WorkspacePath {
    WorkspacePath::parse(raw).unwrap()
}

#[test]
fn a_starved_backlog_is_still_stored() {
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backlog = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let storage = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(storage.path()).unwrap());
    let workspace = tempfile::tempdir().unwrap();
    let root = workspace.path().canonicalize().unwrap();
    let project = ProjectId::parse("alpha").unwrap();
    let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
    let persister = Persister::new(
        store.clone(),
        layout::code(&project),
        dir,
        root.clone(),
        Duration::from_millis(10),
    );
    let stop = CancellationToken::new();
    let running = backlog.spawn(
        persister
            .clone()
            .run_with_priority_on(clients.handle().clone(), stop.clone()),
    );
    // A save goes through once the lanes run.
    std::fs::write(root.join("saved.txt"), "saved").unwrap();
    clients.block_on(persister.persist(p("saved.txt"))).unwrap();

    let (release, held) = std::sync::mpsc::channel::<()>();
    backlog.spawn(async move {
        // Blocks the backlog runtime's worker until released.
        let _ = held.recv();
    });
    std::fs::write(root.join("made.txt"), "made by a program").unwrap();
    persister.mark_dirty(p("made.txt"));

    let key = layout::code(&project).key_for(&p("made.txt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        match clients.block_on(store.get(&key)) {
            Ok(body) => break Some(body),
            Err(_) if Instant::now() < deadline => {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            Err(_) => break None,
        }
    };
    drop(release);
    stop.cancel();
    clients.block_on(running).unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(&b"made by a program"[..]),
        "a program's file was not stored while the backlog's lane got no CPU"
    );
}
