//! Persisting a file reads it and changes nothing about it, not even its
//! access time: on a `relatime` mount that update would dirty every new
//! file's inode once more (an `npm install`'s every file). Real local
//! storage, a real directory.
#![cfg(feature = "sync")]

use std::fs::FileTimes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::project::ProjectId;
use cloudcode_proto::storage::local::LocalStore;
use cloudcode_proto::storage::{ObjectStore, layout};
use cloudcode_proto::sync::persister::Persister;

/// Access time before modification time: the next ordinary read on a
/// `relatime` mount moves the access time to now.
fn read_long_ago(path: &std::path::Path) -> SystemTime {
    let accessed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let times = FileTimes::new()
        .set_accessed(accessed)
        .set_modified(accessed + Duration::from_secs(3600));
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(times)
        .unwrap();
    accessed
}

#[tokio::test(flavor = "multi_thread")]
async fn persisting_a_file_leaves_its_access_time_alone() {
    let storage = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(storage.path()).unwrap());
    let workspace = tempfile::tempdir().unwrap();
    let root = workspace.path().canonicalize().unwrap();

    // The file system under test keeps access times as distributions mount
    // them: an ordinary read moves them.
    let control = root.join("control.txt");
    std::fs::write(&control, "read by anyone").unwrap();
    let long_ago = read_long_ago(&control);
    std::fs::read(&control).unwrap();
    assert_ne!(
        std::fs::metadata(&control).unwrap().accessed().unwrap(),
        long_ago,
        "this file system does not update access times on read (noatime?): the test cannot tell"
    );

    let file = root.join("main.py");
    std::fs::write(&file, "print('hi')\n").unwrap();
    let long_ago = read_long_ago(&file);
    let project = ProjectId::parse("alpha").unwrap();
    let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
    let persister = Persister::new(
        store.clone(),
        layout::code(&project),
        dir,
        root.clone(),
        Duration::from_millis(10),
    );
    // As a runner starts: restore (nothing stored yet), then what inotify
    // reported is flushed.
    persister.restore().await.unwrap();
    persister.mark_dirty(WorkspacePath::parse("main.py").unwrap());
    let unsaved = persister.flush(Instant::now() + Duration::from_secs(20)).await;
    assert!(unsaved.is_empty(), "{unsaved:?}");

    let key = layout::code(&project)
        .key_for(&WorkspacePath::parse("main.py").unwrap())
        .unwrap();
    let stored = store.get(&key).await.unwrap();
    assert_eq!(&stored[..], b"print('hi')\n", "persisted");
    assert_eq!(
        std::fs::metadata(&file).unwrap().accessed().unwrap(),
        long_ago,
        "persisting it read the file with its access time updated"
    );
}
