//! A client's write hands its bytes to storage: the file is not read back
//! (an open, a read and a close for each file of a first sync), unless it
//! changed since it was written. Real local storage, a real directory.
#![cfg(feature = "sync")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{ObjectStore, layout};
use cloudcode_proto::sync::persister::{Persister, Written};
use tokio_util::sync::CancellationToken;

struct Setup {
    _storage: tempfile::TempDir,
    _workspace: tempfile::TempDir,
    root: std::path::PathBuf,
    store: Arc<dyn ObjectStore>,
    persister: Arc<Persister>,
    project: ProjectId,
    stop: CancellationToken,
}

impl Setup {
    async fn new() -> Self {
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
        persister.restore().await.unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(persister.clone().run(stop.clone()));
        Self {
            _storage: storage,
            _workspace: workspace,
            root,
            store,
            persister,
            project,
            stop,
        }
    }

    /// `name` written with `on_disk`; what the write hands on says `held`.
    fn written(&self, name: &str, on_disk: &[u8], held: &[u8]) -> Written {
        let path = self.root.join(name);
        std::fs::write(&path, on_disk).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let meta = cap_std::fs::Metadata::from_file(&file).unwrap();
        Written {
            path: WorkspacePath::parse(name).unwrap(),
            content: Some((meta, Bytes::copy_from_slice(held))),
        }
    }

    async fn stored(&self, name: &str) -> Vec<u8> {
        let key = layout::code(&self.project)
            .key_for(&WorkspacePath::parse(name).unwrap())
            .unwrap();
        self.store.get(&key).await.unwrap().to_vec()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_takes_a_writes_bytes_without_reading_the_file_back() {
    let s = Setup::new().await;
    // The bytes handed on differ from the file's (same size, so the file
    // looks as written): what is stored shows which were taken.
    let written = s.written("a.txt", b"on disk", b"in hand");
    let results = s.persister.persist_written(vec![written], true).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(s.stored("a.txt").await, b"in hand");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_since_its_write_is_read_again() {
    let s = Setup::new().await;
    let written = s.written("b.txt", b"as written", b"as written");
    // A program rewrote it before storage planned it.
    std::fs::write(s.root.join("b.txt"), b"rewritten by a program").unwrap();
    let none = Written {
        path: WorkspacePath::parse("c.txt").unwrap(),
        content: None,
    };
    std::fs::write(s.root.join("c.txt"), b"no bytes handed on").unwrap();
    let results = s.persister.persist_written(vec![written, none], false).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(s.stored("b.txt").await, b"rewritten by a program");
    assert_eq!(s.stored("c.txt").await, b"no bytes handed on");
}
