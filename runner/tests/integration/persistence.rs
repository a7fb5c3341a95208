//! Storage sync: the seed lost every file made in a terminal, crashed when
//! storage failed, and had nothing to say about SIGTERM or kill -9.

use std::time::Duration;

use cloudcode_proto::client::Incoming;
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Event, Op, Reply, WriteOptions};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn files_made_by_terminal_programs_reach_storage() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "mkdir -p pkg/sub && printf 'made by shell' > pkg/sub/a.txt && head -c 3000000 /dev/urandom > pkg/blob && echo x > 'name with spaces ü.txt'",
        "made",
    )
    .await;
    eventually("terminal-made files in storage", || {
        runner.stored("pkg/sub/a.txt").as_deref() == Some(b"made by shell")
            && runner.stored("pkg/blob").map(|b| b.len()) == Some(3_000_000)
            && runner.stored("name with spaces ü.txt").is_some()
    })
    .await;
    assert_eq!(
        runner.stored("pkg/blob").unwrap(),
        std::fs::read(runner.workspace.join("pkg/blob")).unwrap()
    );

    // Renames and deletes of whole trees too.
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "mv pkg moved && rm 'name with spaces ü.txt' && d=$(mktemp -d) && mkdir -p $d/in/deep && echo brought > $d/in/deep/f.txt && mv $d/in arrived",
        "moved",
    )
    .await;
    // A directory moved in from outside brings files no event names.
    eventually("rename, delete and move-in reflected", || {
        runner.stored("moved/sub/a.txt").is_some()
            && runner.stored("pkg/sub/a.txt").is_none()
            && runner.stored("name with spaces ü.txt").is_none()
            && runner.stored("arrived/deep/f.txt").as_deref() == Some(b"brought\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_runner_restores_the_project_from_storage() {
    let storage = tempfile::tempdir().unwrap();
    let project = storage.path().join("code").join(PROJECT);
    std::fs::create_dir_all(project.join("src/deep")).unwrap();
    for i in 0..300 {
        std::fs::write(project.join(format!("src/deep/f{i}.txt")), format!("file {i}")).unwrap();
    }
    std::fs::write(project.join("bin.dat"), [0u8, 159, 146, 150]).unwrap();
    // Another project's files must not appear.
    std::fs::create_dir_all(storage.path().join("code/alphabet")).unwrap();
    std::fs::write(storage.path().join("code/alphabet/other.txt"), "not yours").unwrap();

    let runner = TestRunner::start_with(Options {
        storage: Some(storage.path().to_path_buf()),
        ..Default::default()
    });
    let client = runner.client().await;
    let (data, _) = client.read_file(&p("src/deep/f299.txt")).await.unwrap();
    assert_eq!(data, b"file 299");
    assert_eq!(
        std::fs::read(runner.workspace.join("bin.dat")).unwrap(),
        [0u8, 159, 146, 150]
    );
    assert_eq!(list_tree(&runner.workspace).len(), 301);
    assert!(!runner.workspace.join("other.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_pending_changes_and_ends_every_shell() {
    let storage = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::start_with(Options {
        storage: Some(storage.path().to_path_buf()),
        // A long debounce: the change is certainly still pending at SIGTERM.
        args: vec!["--sync-debounce-ms".into(), "60000".into()],
        ..Default::default()
    });
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    let sleep = unique_sleep_arg();
    let command = format!("echo last words > final.txt; sleep {sleep} & disown");
    run_in_terminal(&mut client, term, &mut screen, &command, "wrote").await;
    // Otherwise the check below could pass only because the job never started.
    eventually("the background job started", || process_running(&sleep)).await;
    runner.signal(libc::SIGTERM);
    let status = runner.wait_exit();
    assert!(status.success(), "{status:?}");
    assert_eq!(runner.stored("final.txt").as_deref(), Some(&b"last words\n"[..]));
    eventually("every shell's job ended with the runner", || !process_running(&sleep)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn while_storage_is_down_saves_wait_clients_are_told_and_nothing_is_lost() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    client.write_file(&p("ok.txt"), b"stored", None).await.unwrap();
    // Break local storage: the project's prefix becomes a plain file, so
    // every write under it fails (root ignores permissions, not this).
    let prefix = runner.storage.join("code").join(PROJECT);
    let parked = runner.storage.join("parked");
    std::fs::rename(&prefix, &parked).unwrap();
    std::fs::write(&prefix, "not a directory").unwrap();

    let save = {
        let writer = runner.client().await;
        tokio::spawn(async move { writer.write_file(&p("during-outage.txt"), b"must survive", None).await })
    };
    // Clients hear that storage is down; the save is not acknowledged.
    loop {
        if let Incoming::Event(Event::Storage { status }) = next_incoming(&mut client).await
            && !status.healthy
        {
            assert!(status.pending >= 1);
            assert!(status.last_error.is_some());
            break;
        }
    }
    assert!(!save.is_finished(), "a save was acknowledged while storage was down");
    let Reply::Storage { status } = client.request(Op::StorageStatus).await.unwrap() else {
        panic!()
    };
    assert!(!status.healthy);

    // Storage comes back: the save completes and everything is there.
    std::fs::remove_file(&prefix).unwrap();
    std::fs::rename(&parked, &prefix).unwrap();
    tokio::time::timeout(PATIENCE, save)
        .await
        .expect("save after recovery")
        .unwrap()
        .unwrap();
    assert_eq!(
        runner.stored("during-outage.txt").as_deref(),
        Some(&b"must survive"[..])
    );
    assert_eq!(runner.stored("ok.txt").as_deref(), Some(&b"stored"[..]));
    loop {
        if let Incoming::Event(Event::Storage { status }) = next_incoming(&mut client).await
            && status.healthy
        {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_saves_never_leaves_a_torn_file_in_storage() {
    let storage = tempfile::tempdir().unwrap();
    let old = vec![b'o'; 30_000_000];
    let new = vec![b'n'; 30_000_000];
    for delay_ms in [0u64, 40, 120, 400] {
        let mut runner = TestRunner::start_with(Options {
            storage: Some(storage.path().to_path_buf()),
            ..Default::default()
        });
        let client = runner.client().await;
        client.write_file(&p("doc.bin"), &old, None).await.unwrap();
        let writer = runner.client().await;
        let new_copy = new.clone();
        let _save = tokio::spawn(async move { writer.write_file(&p("doc.bin"), &new_copy, None).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        runner.signal(libc::SIGKILL);
        runner.wait_exit();
        let stored = runner.stored("doc.bin").expect("object vanished");
        assert!(
            stored == old || stored == new,
            "torn object after kill -9 at {delay_ms} ms: {} bytes",
            stored.len()
        );
        let keys = list_tree(&storage.path().join("code").join(PROJECT));
        assert!(
            keys.iter().all(|k| k == "doc.bin" || k.contains(".cloudcode-tmp-")),
            "{keys:?}"
        );
    }
    // A new runner restores a whole file and lists no temporaries.
    let runner = TestRunner::start_with(Options {
        storage: Some(storage.path().to_path_buf()),
        ..Default::default()
    });
    let client = runner.client().await;
    let (data, _) = client.read_file(&p("doc.bin")).await.unwrap();
    assert!(data == old || data == new);
    let Reply::Entries { entries } = client.request(Op::List { path: p("") }).await.unwrap() else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_atomic_for_readers_of_the_workspace() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    client.write_file(&p("a.txt"), b"old", None).await.unwrap();
    client
        .send_text(r#"{"id":50,"op":"write","path":"a.txt","size":6}"#)
        .unwrap();
    client
        .send_binary(
            Frame::FileChunk {
                transfer: 50,
                offset: 0,
                data: b"new".to_vec().into(),
            }
            .encode(),
        )
        .unwrap();
    client.request(Op::Ping).await.unwrap();
    assert_eq!(
        std::fs::read(runner.workspace.join("a.txt")).unwrap(),
        b"old",
        "half a write is visible"
    );
}

/// `count` empty files under `root/dir`, 100 per directory, as a package
/// manager lays them out; written straight to disk, as a program would.
fn make_files(root: &std::path::Path, dir: &str, count: usize) {
    for i in 0..count {
        let sub = root.join(dir).join(format!("pkg{}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        std::fs::write(sub.join(format!("f{i}.js")), b"").unwrap();
    }
}

fn count_stored(runner: &TestRunner, dir: &str) -> usize {
    list_tree(&runner.storage.join("code").join(PROJECT).join(dir))
        .iter()
        .filter(|k| !k.contains(".cloudcode-tmp-"))
        .count()
}

async fn storage_status(client: &cloudcode_proto::client::RunnerClient) -> cloudcode_proto::message::StorageStatus {
    match client.request(Op::StorageStatus).await.unwrap() {
        Reply::Storage { status } => status,
        other => panic!("{other:?}"),
    }
}

/// A client's many writes marked `bulk` (a folder sync's first reconcile)
/// are not saves: each is answered once durable, the status counts them as
/// pending but not as saves pending, and a save goes ahead of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_bulk_writes_are_durable_when_answered_and_a_save_goes_first() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    const WRITES: usize = 5_000;
    client.request(Op::CreateDir { path: p("synced") }).await.unwrap();
    for d in 0..WRITES / 100 {
        let path = p(&format!("synced/d{d}"));
        client.request(Op::CreateDir { path }).await.unwrap();
    }
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writes: Vec<_> = (0..WRITES)
        .map(|i| {
            let handle = (*client).clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let path = p(&format!("synced/d{}/f{i}.txt", i / 100));
                let options = WriteOptions {
                    create_new: true,
                    bulk: true,
                    ..WriteOptions::default()
                };
                handle
                    .write_file_with(&path, format!("{i}").as_bytes(), options)
                    .await
                    .unwrap();
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (i, path)
            })
        })
        .collect();
    // The user's editor, on a connection of its own.
    let editor = runner.client().await;
    // Wait until the runner holds them as its backlog.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let status = storage_status(&editor).await;
        eprintln!(
            "{} answered, {status:?}",
            answered.load(std::sync::atomic::Ordering::SeqCst)
        );
        if status.pending > 0 {
            assert_eq!(status.saves_pending, 0, "bulk writes counted as saves: {status:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no backlog formed: {status:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    editor.write_file(&p("main.py"), b"print(1)\n", None).await.unwrap();
    let after_save = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(runner.stored("main.py").as_deref(), Some(&b"print(1)\n"[..]));
    assert!(after_save < WRITES, "the save waited for all the bulk writes");
    for write in writes {
        let (i, path) = write.await.unwrap();
        // Answered means durable.
        assert_eq!(
            runner.stored(path.as_str()),
            Some(format!("{i}").into_bytes()),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_save_goes_ahead_of_a_backlog_of_program_made_files() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let root = runner.workspace.clone();
    let maker = std::thread::spawn(move || make_files(&root, "node_modules", 30_000));
    // Wait until the backlog is there.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let status = storage_status(&client).await;
        if status.pending > 2_000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no backlog formed: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    client.write_file(&p("main.py"), b"print(1)\n", None).await.unwrap();
    let took = started.elapsed();
    let status = storage_status(&client).await;
    // Durable when acknowledged, and acknowledged before the backlog drained.
    assert_eq!(runner.stored("main.py").as_deref(), Some(&b"print(1)\n"[..]));
    assert!(
        status.pending > 0,
        "the save waited for the whole backlog ({took:?}): {status:?}"
    );
    assert_eq!(status.saves_pending, 0, "{status:?}");
    assert!(status.healthy);
    maker.join().unwrap();
    // The backlog drains, and the status says how fast meanwhile.
    let mut saw_rate = false;
    let deadline = std::time::Instant::now() + PATIENCE * 3;
    while count_stored(&runner, "node_modules") < 30_000 {
        saw_rate |= storage_status(&client).await.drain_rate > 0;
        assert!(std::time::Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_rate || storage_status(&client).await.drain_rate > 0,
        "no drain rate reported"
    );
    // Clients were told the progress, and when the backlog was gone.
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while events
        .last()
        .is_none_or(|s: &cloudcode_proto::message::StorageStatus| s.pending != 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no final progress event: {events:?}"
        );
        if let Ok(Some(Incoming::Event(Event::Storage { status }))) =
            tokio::time::timeout(Duration::from_millis(200), client.next_incoming()).await
        {
            events.push(status);
        }
    }
    assert!(events.iter().any(|s| s.pending >= 100), "no progress event: {events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_storage_cannot_keep_are_refused_or_skipped_not_retried_forever() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    // code/alpha/ + 5 components of 250 bytes: over S3's 1024-byte keys,
    // within the workspace's 4096-byte paths.
    let long = ["a", "b", "c", "d", "e"].map(|c| c.repeat(250)).join("/");
    let err = client.write_file(&p(&long), b"x", None).await.unwrap_err();
    assert!(
        matches!(&err, cloudcode_proto::client::ClientError::Remote { code, .. } if *code == cloudcode_proto::message::ErrorCode::InvalidPath),
        "{err:?}"
    );
    // A program makes one anyway: reported, skipped, storage stays healthy
    // and everything else is still stored.
    std::fs::create_dir_all(runner.workspace.join(&long).parent().unwrap()).unwrap();
    std::fs::write(runner.workspace.join(&long), "made by a program").unwrap();
    let mut status = storage_status(&client).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while status.skipped == 0 {
        assert!(std::time::Instant::now() < deadline, "never reported: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = storage_status(&client).await;
    }
    assert_eq!(status.skipped_changes[0].path, long);
    assert!(status.healthy, "{status:?}");
    client.write_file(&p("after.txt"), b"still saved", None).await.unwrap();
    assert_eq!(runner.stored("after.txt").as_deref(), Some(&b"still saved"[..]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = storage_status(&client).await;
    assert!(status.healthy && status.last_error.is_none(), "{status:?}");
    assert_eq!(status.pending, 0, "retried forever: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_acknowledged_is_lost_with_100000_changes_in_flight() {
    const FILES: usize = 100_000;
    let storage = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let options = || Options {
        storage: Some(storage.path().to_path_buf()),
        workspace: Some(workspace.path().to_path_buf()),
        ..Default::default()
    };
    let mut runner = TestRunner::start_with(options());
    let client = runner.client().await;
    make_files(workspace.path(), "bulk", FILES);
    // Some stored, most not: the storage threads yield to every other
    // thread, so on a busy machine nothing may be stored yet when the
    // files are made (and there is no directory to take away).
    eventually("a backlog in flight", || {
        let stored = count_stored(&runner, "bulk");
        stored > 0 && stored < FILES
    })
    .await;

    // Storage down with the backlog in flight: the save waits, then lands.
    let prefix = runner.storage.join("code").join(PROJECT);
    let parked = runner.storage.join("parked");
    std::fs::rename(&prefix, &parked).unwrap();
    std::fs::write(&prefix, "not a directory").unwrap();
    let save = {
        let writer = runner.client().await;
        tokio::spawn(async move { writer.write_file(&p("during-outage.txt"), b"must survive", None).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!save.is_finished(), "a save was acknowledged while storage was down");
    assert!(!storage_status(&client).await.healthy);
    // Back in one step: between a remove and a rename, the runner's retry
    // could make the directory anew.
    swap(&parked, &prefix);
    std::fs::remove_file(&parked).unwrap();
    tokio::time::timeout(PATIENCE, save)
        .await
        .expect("save after recovery")
        .unwrap()
        .unwrap();
    assert_eq!(
        runner.stored("during-outage.txt").as_deref(),
        Some(&b"must survive"[..])
    );

    // kill -9 right after acknowledgements, backlog still in flight: a
    // save, and what only the manifest keeps (a mode, a link, a directory
    // emptied).
    client.write_file(&p("acked.txt"), b"acknowledged", None).await.unwrap();
    client.write_file(&p("acked.sh"), b"#!/bin/sh\n", None).await.unwrap();
    let made_executable = Op::SetExecutable {
        path: p("acked.sh"),
        executable: true,
    };
    client.request(made_executable).await.unwrap();
    let linked = Op::Symlink {
        path: p("acked-link"),
        target: "acked.txt".into(),
        overwrite: false,
    };
    client.request(linked).await.unwrap();
    // A directory's last file deleted: the directory is kept, empty.
    client.request(Op::CreateDir { path: p("emptied") }).await.unwrap();
    client.write_file(&p("emptied/last.txt"), b"x", None).await.unwrap();
    let deleted = Op::Delete {
        path: p("emptied/last.txt"),
        recursive: false,
        base_version: None,
    };
    client.request(deleted).await.unwrap();
    runner.signal(libc::SIGKILL);
    runner.wait_exit();
    assert_eq!(runner.stored("acked.txt").as_deref(), Some(&b"acknowledged"[..]));
    let manifest: serde_json::Value = runner
        .stored(cloudcode_proto::storage::layout::MANIFEST_NAME)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .expect("a manifest in storage");
    assert!(
        manifest["executable"]
            .as_array()
            .is_some_and(|paths| paths.iter().any(|p| p == "acked.sh")),
        "an acknowledged chmod +x is not in storage: {manifest}"
    );
    assert_eq!(
        manifest["symlinks"]["acked-link"], "acked.txt",
        "an acknowledged link is not in storage: {manifest}"
    );
    assert!(
        manifest["empty_dirs"]
            .as_array()
            .is_some_and(|dirs| dirs.iter().any(|d| d == "emptied")),
        "a directory emptied by an acknowledged delete is not in storage: {manifest}"
    );

    // A new runner over the same workspace finishes the job.
    let runner = TestRunner::start_with(options());
    let client = runner.client().await;
    let deadline = std::time::Instant::now() + PATIENCE * 6;
    while count_stored(&runner, "bulk") < FILES {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog was not finished after a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = storage_status(&client).await;
    assert!(status.healthy, "{status:?}");
    assert_eq!(runner.stored("acked.txt").as_deref(), Some(&b"acknowledged"[..]));
}

/// The storage runtime's threads (watcher batches, the bulk lane, storage
/// calls) and the watchers' inotify readers run only when nothing else of
/// the runner wants the CPU (`SCHED_IDLE`), so an `npm install`'s backlog
/// yields at once to the threads that carry keystrokes; those ask for a
/// short slice, so that they preempt whatever runs when they wake; so does
/// the shell, which echoes every key at its prompt; neither is passed on to
/// the programs the shell starts.
#[tokio::test(flavor = "multi_thread")]
async fn storage_threads_yield_the_cpu_to_the_terminal_threads() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    // Work for both runtimes: a terminal, and files for storage.
    run_in_terminal(&mut client, term, &mut screen, "seq 1 200 | xargs touch", "touched").await;
    eventually("the files in storage", || runner.stored("200").is_some()).await;

    let pid = runner.child.id();
    let custom_slices = kernel_grants_custom_slices();
    let mut storage = 0;
    let mut watchers = 0;
    let mut main_runtime = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name().into_string().unwrap();
        let task = format!("/proc/{pid}/task/{tid}");
        let name = std::fs::read_to_string(format!("{task}/comm")).unwrap();
        let (policy, slice) = scheduling_of(&task);
        let watcher = name.trim() == cloudcode_proto::sync::tree_watch::THREAD_NAME;
        watchers += usize::from(watcher);
        if name.trim() == "storage" || watcher {
            storage += 1;
            assert_eq!(
                policy,
                libc::SCHED_IDLE as u64,
                "storage thread {tid} ({})",
                name.trim()
            );
        } else {
            assert_eq!(
                policy,
                libc::SCHED_OTHER as u64,
                "thread {tid} ({}) lowered",
                name.trim()
            );
        }
        if custom_slices && name.trim() == "tokio-rt-worker" {
            main_runtime += 1;
            assert_eq!(slice, Some(100_000), "main runtime thread {tid}");
        }
    }
    assert!(storage > 0, "no storage thread found");
    assert!(watchers > 0, "no watcher thread found");
    assert!(!custom_slices || main_runtime > 0, "no main runtime thread found");
    // The shell asks for the short slice too; a program it starts (here a
    // `sleep` it leaves running) gets the defaults.
    run_in_terminal(&mut client, term, &mut screen, "sleep 600 & true", "started").await;
    let children_of = |pid: String| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|t| std::fs::read_to_string(t.unwrap().path().join("children")).unwrap_or_default())
            .flat_map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    let shells = children_of(pid.to_string());
    assert_eq!(shells.len(), 1, "one shell: {shells:?}");
    let shell = shells[0].clone();
    let (policy, slice) = scheduling_of(&format!("/proc/{shell}"));
    assert_eq!(policy, libc::SCHED_OTHER as u64, "the shell {shell}");
    if custom_slices {
        assert_eq!(slice, Some(100_000), "the shell {shell}");
    }
    let programs = children_of(shell.clone());
    assert_eq!(programs.len(), 1, "the shell's one program: {programs:?}");
    let (policy, slice) = scheduling_of(&format!("/proc/{}", programs[0]));
    assert_eq!(policy, libc::SCHED_OTHER as u64, "the shell's program");
    assert_ne!(slice, Some(100_000), "the shell's program inherited the short slice");
    run_in_terminal(&mut client, term, &mut screen, "kill %1", "killed").await;
    // A terminal opened with a command runs a program, not a shell: the
    // defaults, though a short-slice thread of the runner started it.
    let command = vec!["sleep".to_owned(), "600".to_owned()];
    let program_term = client.term_open(80, 24, Some(command), None).await.unwrap();
    let program = children_of(pid.to_string())
        .into_iter()
        .find(|child| *child != shell)
        .expect("the command's process");
    let (_, slice) = scheduling_of(&format!("/proc/{program}"));
    assert_ne!(
        slice,
        Some(100_000),
        "a terminal's command {program} got the short slice"
    );
    client.request(Op::TermClose { term: program_term }).await.unwrap();
}

/// A thread's policy and, where the kernel says, its slice in nanoseconds.
fn scheduling_of(task: &str) -> (u64, Option<u64>) {
    let sched = std::fs::read_to_string(format!("{task}/sched")).unwrap();
    let field = |name: &str| {
        sched.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().parse::<u64>().ok())?
        })
    };
    (field("policy").unwrap(), field("se.slice"))
}

/// Whether this kernel lets a normal thread choose its slice (Linux 6.12+).
fn kernel_grants_custom_slices() -> bool {
    std::thread::spawn(|| {
        // SAFETY: sched_attr is plain data; all zeroes is a valid value.
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
        attr.sched_runtime = 100_000;
        // SAFETY: a valid sched_attr; pid 0 is this short-lived thread.
        unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) == 0 }
    })
    .join()
    .unwrap()
}

/// Exchanges two paths atomically (`renameat2(RENAME_EXCHANGE)`).
fn swap(a: &std::path::Path, b: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
}
