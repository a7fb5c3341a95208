//! The backlog's lane runs on a runtime of its own, whose threads a runner
//! gives CPU only when nothing else wants it: under a build that keeps every
//! CPU busy, it gets none. What programs wrote meanwhile must still become
//! durable, not wait for the build to end. Here that runtime's only worker
//! is held outright, the way a saturating build holds an idle-class thread.
#![cfg(feature = "sync")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectMeta, ObjectStore, StorageError, layout};
use cloudcode_proto::sync::persister::Persister;
use tokio_util::sync::CancellationToken;

fn p(raw: &str) -> WorkspacePath {
    WorkspacePath::parse(raw).unwrap()
}

/// A persister whose lanes clients wait on run on `clients`, and whose
/// backlog lane runs on `backlog`: each runtime with one worker, as in a
/// runner under a build that takes every CPU.
struct Lanes {
    clients: tokio::runtime::Runtime,
    backlog: tokio::runtime::Runtime,
    _workspace: tempfile::TempDir,
    root: std::path::PathBuf,
    persister: Arc<Persister>,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

impl Lanes {
    fn start(store: Arc<dyn ObjectStore>, project: &ProjectId) -> Self {
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        };
        let (clients, backlog) = (runtime(), runtime());
        let workspace = tempfile::tempdir().unwrap();
        let root = workspace.path().canonicalize().unwrap();
        let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
        let persister = Persister::new(
            store,
            layout::code(project),
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
        Self {
            clients,
            backlog,
            _workspace: workspace,
            root,
            persister,
            stop,
            running,
        }
    }

    /// Holds the backlog runtime's only worker until the sender is dropped,
    /// the way a saturating build holds an idle-class thread.
    fn starve_backlog(&self) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        self.backlog.spawn(async move {
            let _ = held.recv();
        });
        release
    }

    fn stop(self) {
        self.stop.cancel();
        self.clients.block_on(self.running).unwrap();
    }
}

#[test]
fn a_starved_backlog_is_still_stored() {
    let storage = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(storage.path()).unwrap());
    let project = ProjectId::parse("alpha").unwrap();
    let lanes = Lanes::start(store.clone(), &project);
    let (clients, root, persister) = (&lanes.clients, &lanes.root, &lanes.persister);
    // A save goes through once the lanes run.
    std::fs::write(root.join("saved.txt"), "saved").unwrap();
    clients.block_on(persister.persist(p("saved.txt"))).unwrap();

    let release = lanes.starve_backlog();
    std::fs::write(root.join("made.txt"), "made by a program").unwrap();
    std::fs::set_permissions(
        root.join("made.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
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
    // Its mode too, which only the manifest keeps.
    let manifest_key = layout::manifest(&layout::code(&project)).unwrap();
    let executable = loop {
        let manifest = clients.block_on(store.get(&manifest_key)).ok();
        let listed = manifest
            .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
            .is_some_and(|m| {
                m["executable"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|p| p == "made.txt"))
            });
        if listed || Instant::now() >= deadline {
            break listed;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    };
    drop(release);
    lanes.stop();
    assert_eq!(
        stored.as_deref(),
        Some(&b"made by a program"[..]),
        "a program's file was not stored while the backlog's lane got no CPU"
    );
    assert!(
        executable,
        "a program's chmod +x was not stored while the backlog's lane got no CPU"
    );
}

/// Local storage whose manifest uploads wait at a gate once it is armed,
/// saying so: a test can starve a lane at the moment it is uploading one.
#[derive(Debug)]
struct GatedManifest {
    inner: LocalStore,
    manifest: ObjectKey,
    armed: std::sync::atomic::AtomicBool,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl ObjectStore for GatedManifest {
    async fn put(&self, key: &ObjectKey, body: Bytes) -> Result<(), StorageError> {
        if *key == self.manifest && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.entered.lock().unwrap().send(());
            drop(self.gate.acquire().await.unwrap());
        }
        self.inner.put(key, body).await
    }
    async fn put_file(&self, key: &ObjectKey, source: tokio::fs::File) -> Result<(), StorageError> {
        self.inner.put_file(key, source).await
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

/// The bulk lane stores the manifest (modes, links, empty directories) at
/// the end of its rounds. Starved right then, it must not keep the
/// one-upload-at-a-time lock to itself: the lane of saves stores the
/// manifest too, and would wait behind it until the build ended.
#[test]
fn saves_go_on_while_the_bulk_lane_is_starved_in_a_manifest_upload() {
    let storage = tempfile::tempdir().unwrap();
    let project = ProjectId::parse("alpha").unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let store = Arc::new(GatedManifest {
        inner: LocalStore::open(storage.path()).unwrap(),
        manifest: layout::manifest(&layout::code(&project)).unwrap(),
        armed: std::sync::atomic::AtomicBool::new(false),
        entered: std::sync::Mutex::new(entered_tx),
        gate: tokio::sync::Semaphore::new(0),
    });
    let lanes = Lanes::start(store.clone(), &project);
    let (clients, root, persister) = (&lanes.clients, &lanes.root, &lanes.persister);

    // A program makes an empty directory: the bulk lane's round ends with
    // a manifest upload, held at the gate; then its runtime gets no CPU.
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::create_dir(root.join("empty")).unwrap();
    persister.mark_dirty(p("empty"));
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the bulk lane uploads the manifest");
    let release = lanes.starve_backlog();
    store.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    store.gate.add_permits(1);

    for i in 0..3 {
        let name = format!("saved-{i}.txt");
        std::fs::write(root.join(&name), format!("save {i}")).unwrap();
        let answered = clients
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), persister.persist(p(&name))).await });
        assert!(
            matches!(answered, Ok(Ok(()))),
            "save {i} waited on the starved bulk lane: {answered:?}"
        );
    }
    drop(release);
    lanes.stop();
}
