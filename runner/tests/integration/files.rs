//! File operations over the protocol, including the seed's defects: path
//! traversal, crashes on a missing file, corrupted binary files and saves
//! over 1 MB that dropped the connection.

use cloudcode_proto::client::{ClientError, Incoming};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{BatchedWrite, ChangeKind, EntryKind, ErrorCode, Event, Op, Reply};

use crate::common::*;

fn code_of(result: Result<Reply, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Remote { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_list_read_rename_delete() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    client.request(Op::CreateDir { path: p("src") }).await.unwrap();
    let v1 = client
        .write_file(&p("src/main.py"), b"print('hi')\n", None)
        .await
        .unwrap();
    let Reply::Entries { entries } = client.request(Op::List { path: p("") }).await.unwrap() else {
        panic!()
    };
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].name.as_str(), entries[0].kind), ("src", EntryKind::Dir));
    let Reply::Entries { entries } = client.request(Op::List { path: p("src") }).await.unwrap() else {
        panic!()
    };
    assert_eq!(entries[0].path, p("src/main.py"));
    assert_eq!(entries[0].size, 12);
    assert_eq!(entries[0].version.as_deref(), Some(v1.as_str()));

    let (data, version) = client.read_file(&p("src/main.py")).await.unwrap();
    assert_eq!(
        (data.as_slice(), version.as_str()),
        (&b"print('hi')\n"[..], v1.as_str())
    );

    client
        .request(Op::Rename {
            from: p("src"),
            to: p("lib"),
            overwrite: false,
        })
        .await
        .unwrap();
    assert!(runner.workspace.join("lib/main.py").exists());
    assert_eq!(runner.stored("lib/main.py").as_deref(), Some(&b"print('hi')\n"[..]));
    assert_eq!(runner.stored("src/main.py"), None, "rename left the old key in storage");

    // A delete naming a version deletes only that version: a write since
    // (another client's, or the sandbox's own) is refused, not lost.
    let seen = client.write_file(&p("lib/other.txt"), b"x", None).await.unwrap();
    std::fs::write(runner.workspace.join("lib/other.txt"), b"written in the sandbox since").unwrap();
    let stale = client
        .request(Op::Delete {
            path: p("lib/other.txt"),
            recursive: false,
            base_version: Some(seen),
        })
        .await;
    assert_eq!(code_of(stale), ErrorCode::Conflict);
    assert!(runner.workspace.join("lib/other.txt").exists());
    let refused_dir = client
        .request(Op::Delete {
            path: p("lib"),
            recursive: true,
            base_version: Some("1-1".into()),
        })
        .await;
    assert_eq!(code_of(refused_dir), ErrorCode::Conflict, "a directory has no version");
    let Reply::Entry { entry } = client
        .request(Op::Stat {
            path: p("lib/other.txt"),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    client
        .request(Op::Delete {
            path: p("lib/other.txt"),
            recursive: false,
            base_version: entry.version,
        })
        .await
        .unwrap();
    assert!(!runner.workspace.join("lib/other.txt").exists());

    client.write_file(&p("lib/other.txt"), b"x", None).await.unwrap();
    let refused = client
        .request(Op::Delete {
            path: p("lib"),
            recursive: false,
            base_version: None,
        })
        .await;
    assert_eq!(code_of(refused), ErrorCode::DirectoryNotEmpty);
    client
        .request(Op::Delete {
            path: p("lib"),
            recursive: true,
            base_version: None,
        })
        .await
        .unwrap();
    assert!(!runner.workspace.join("lib").exists());
    assert_eq!(runner.stored("lib/other.txt"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_and_odd_paths_are_refused_and_touch_nothing() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), runner.workspace.join("link-out")).unwrap();

    // Raw JSON, as an attacker would send it: the typed client cannot even
    // express these paths.
    let attempts = [
        r#"{"id":1,"op":"read","path":"../../../../etc/hostname"}"#,
        r#"{"id":2,"op":"list","path":"/"}"#,
        r#"{"id":3,"op":"write","path":"../x","size":1}"#,
        r#"{"id":4,"op":"read","path":"a\u0000b"}"#,
        r#"{"id":5,"op":"create_dir","path":"evil\u202Etxt.exe"}"#,
        r#"{"id":6,"op":"delete","path":"a/../../..","recursive":true}"#,
    ];
    for attempt in attempts {
        client.send_text(attempt).unwrap();
        match next_incoming(&mut client).await {
            Incoming::Error { id: Some(_), code, .. } => assert_eq!(code, ErrorCode::InvalidPath, "{attempt}"),
            other => panic!("{attempt}: expected an invalid_path error, got {other:?}"),
        }
    }
    // Symlinks out: refused with a clear code, the target untouched.
    let through_link = client.read_file(&p("link-out/secret")).await;
    assert!(matches!(
        through_link,
        Err(ClientError::Remote {
            code: ErrorCode::OutsideWorkspace,
            ..
        })
    ));
    let write_through = client.write_file(&p("link-out/new"), b"x", None).await;
    assert!(matches!(
        write_through,
        Err(ClientError::Remote {
            code: ErrorCode::OutsideWorkspace,
            ..
        })
    ));
    assert!(!outside.path().join("new").exists());
    let Reply::Entry { entry } = client.request(Op::Stat { path: p("link-out") }).await.unwrap() else {
        panic!()
    };
    assert_eq!(entry.kind, EntryKind::Symlink);
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "secret"
    );
    // Nothing of this reached storage either.
    assert!(
        list_tree(&runner.storage).iter().all(|k| !k.contains("..")),
        "{:?}",
        list_tree(&runner.storage)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_is_an_error_not_a_crash() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    assert_eq!(
        code_of(client.request(Op::Read { path: p("nope.txt") }).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(client.request(Op::List { path: p("nope") }).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(
            client
                .request(Op::Rename {
                    from: p("nope"),
                    to: p("b"),
                    overwrite: false
                })
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code_of(
            client
                .request(Op::Delete {
                    path: p("nope"),
                    recursive: false,
                    base_version: None,
                })
                .await
        ),
        ErrorCode::NotFound
    );
    // Still serving.
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_files_round_trip_byte_for_byte() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    let data: Vec<u8> = (0..=255u8)
        .cycle()
        .take(70_000)
        .chain([0xff, 0xfe, 0x00, 0xc3])
        .collect();
    client.write_file(&p("blob.bin"), &data, None).await.unwrap();
    assert_eq!(std::fs::read(runner.workspace.join("blob.bin")).unwrap(), data);
    assert_eq!(runner.stored("blob.bin").unwrap(), data, "storage copy differs");
    assert_eq!(client.read_file(&p("blob.bin")).await.unwrap().0, data);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_saves_are_chunked_durable_and_limited() {
    let runner = TestRunner::start_with(Options {
        args: vec!["--max-file-size".into(), "8000000".into()],
        ..Default::default()
    });
    let client = runner.client().await;
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client
        .write_file(&p("big.bin"), &data, None)
        .await
        .expect("a 5 MB save");
    // Acknowledged means durable: no waiting needed.
    assert_eq!(runner.stored("big.bin").unwrap(), data);
    let too_big = client
        .request(Op::Write {
            path: p("huge.bin"),
            size: 8_000_001,
            base_version: None,
            create_new: false,
            bulk: false,
        })
        .await;
    assert_eq!(code_of(too_big), ErrorCode::TooLarge);
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_transfer_does_not_stall_the_terminal() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "true", "ready").await;

    let size = 100 * 1024 * 1024 + 3;
    std::fs::write(runner.workspace.join("big.dat"), vec![b'z'; size]).unwrap();
    let uploader = runner.client().await;
    let upload = tokio::spawn(async move {
        let data = vec![7u8; size];
        uploader.write_file(&p("up.dat"), &data, None).await.map(|_| ())
    });
    let downloader = runner.client().await;
    let download = tokio::spawn(async move { downloader.read_file(&p("big.dat")).await.map(|(d, _)| d.len()) });
    // Keystrokes keep being echoed while both transfers run.
    for i in 0..5 {
        run_in_terminal(
            &mut client,
            term,
            &mut screen,
            &format!("echo during-{i}"),
            &format!("m{i}"),
        )
        .await;
    }
    assert_eq!(download.await.unwrap().unwrap(), size);
    upload.await.unwrap().unwrap();
    assert_eq!(
        std::fs::metadata(runner.workspace.join("up.dat")).unwrap().len(),
        size as u64
    );
    assert_eq!(
        std::fs::metadata(runner.storage.join("code/alpha/up.dat"))
            .unwrap()
            .len(),
        size as u64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_writes_get_a_conflict() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    let v1 = client.write_file(&p("a.txt"), b"one", None).await.unwrap();
    let v2 = client.write_file(&p("a.txt"), b"two", Some(v1.clone())).await.unwrap();
    assert_ne!(v1, v2);
    let stale = client.write_file(&p("a.txt"), b"three", Some(v1)).await;
    assert!(
        matches!(
            stale,
            Err(ClientError::Remote {
                code: ErrorCode::Conflict,
                ..
            })
        ),
        "{stale:?}"
    );
    assert_eq!(std::fs::read(runner.workspace.join("a.txt")).unwrap(), b"two");
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_made_in_a_terminal_are_pushed_to_watchers() {
    let runner = TestRunner::start();
    let mut watcher = runner.client().await;
    watcher.request(Op::WatchFs).await.unwrap();
    let mut shell = runner.client().await;
    let term = open_terminal(&shell).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut shell, term, &mut screen, "mkdir -p d", "dir").await;
    wait_for_created(&mut watcher, "d").await;
    run_in_terminal(&mut shell, term, &mut screen, "touch d/made-in-shell.txt", "file").await;
    wait_for_created(&mut watcher, "d/made-in-shell.txt").await;
    // Made before the runner can watch the new directories: reported by the
    // walk that adds their watches.
    run_in_terminal(
        &mut shell,
        term,
        &mut screen,
        "mkdir -p e/f/g && touch e/f/g/deep.txt",
        "deep",
    )
    .await;
    wait_for_created(&mut watcher, "e/f/g/deep.txt").await;
}

/// Reads `fs_changed` events until one says `path` was created.
async fn wait_for_created(watcher: &mut cloudcode_proto::client::RunnerClient, path: &str) {
    loop {
        if let Incoming::Event(Event::FsChanged { changes }) = next_incoming(watcher).await
            && changes
                .iter()
                .any(|c| c.path.as_str() == path && c.kind == ChangeKind::Created)
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_vanishing_mid_write_leaves_the_old_file_intact() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    client.write_file(&p("doc.txt"), b"original", None).await.unwrap();
    drop(client);

    let client = runner.client().await;
    client
        .send_text(r#"{"id":99,"op":"write","path":"doc.txt","size":1000000}"#)
        .unwrap();
    let half = Frame::FileChunk {
        transfer: 99,
        offset: 0,
        data: vec![b'N'; 500_000].into(),
    };
    client.send_binary(half.encode()).unwrap();
    client.request(Op::Ping).await.unwrap();
    client.close();
    drop(client);

    let again = runner.client().await;
    again.request(Op::Ping).await.unwrap();
    eventually("temporary file removed", || list_tree(&runner.workspace) == ["doc.txt"]).await;
    assert_eq!(std::fs::read(runner.workspace.join("doc.txt")).unwrap(), b"original");
    assert_eq!(runner.stored("doc.txt").unwrap(), b"original");
}

/// A client may send its next request before the last is answered (a sync
/// uploads hundreds at once): the runner carries them out in the order
/// sent, so a rename right behind a write finds the file written.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_pipelined_requests_happen_in_the_order_sent() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    let pairs = (0..50).map(|i| {
        let client = &client;
        async move {
            let (from, to) = (p(&format!("new-{i}.txt")), p(&format!("kept-{i}.txt")));
            let content = format!("file {i}\n");
            // `join` polls the write first: its request and chunk are on
            // the wire before the rename's request.
            let (written, renamed) = tokio::join!(
                client.write_file(&from, content.as_bytes(), None),
                client.request(Op::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    overwrite: false,
                })
            );
            written.unwrap();
            renamed.unwrap_or_else(|e| panic!("the rename of {from} overtook its write: {e}"));
            (to, content)
        }
    });
    for (to, content) in futures_util::future::join_all(pairs).await {
        assert_eq!(
            std::fs::read_to_string(runner.workspace.join(to.as_str())).unwrap(),
            content
        );
    }
}

/// A `create_new` write creates the file or nothing: a file a program
/// made at that path while the write's bytes were arriving is kept, and the
/// write is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_file_never_replaces_one_made_meanwhile() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    client
        .send_text(r#"{"id":41,"op":"write","path":"new.txt","size":10,"create_new":true}"#)
        .unwrap();
    let first = Frame::FileChunk {
        transfer: 41,
        offset: 0,
        data: b"from the ".to_vec().into(),
    };
    client.send_binary(first.encode()).unwrap();
    // Behind the write's start on the connection's workspace thread: once
    // answered, the write has begun (nothing was at new.txt then).
    let _ = client.request(Op::Stat { path: p("new.txt") }).await;
    std::fs::write(runner.workspace.join("new.txt"), "a program's file").unwrap();
    let rest = Frame::FileChunk {
        transfer: 41,
        offset: 9,
        data: b"c".to_vec().into(),
    };
    client.send_binary(rest.encode()).unwrap();
    // A refusal is an error for id 41; a success would be answered to no
    // one (the write was sent raw), so it is waited for a while only.
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match client.next_incoming().await {
                Some(Incoming::Event(_)) => {}
                Some(Incoming::Error { id: Some(41), code, .. }) => return Some(code),
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    // Sent after the write was refused, so answered after it: the write
    // is done with, either way.
    client.request(Op::Ping).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(runner.workspace.join("new.txt")).unwrap(),
        "a program's file",
        "the program's file was replaced"
    );
    assert_eq!(refused, Some(ErrorCode::AlreadyExists));
    eventually("no temporary file left", || list_tree(&runner.workspace) == ["new.txt"]).await;
}

/// A save over a file keeps its mode: a script stays executable, a private
/// file stays private, whoever saves it (the browser IDE, the TUI, a sync).
#[tokio::test(flavor = "multi_thread")]
async fn a_save_keeps_the_files_mode() {
    use std::os::unix::fs::PermissionsExt;
    let runner = TestRunner::start();
    let client = runner.client().await;
    for (name, mode) in [("run.sh", 0o755), ("secret.env", 0o600)] {
        let file = runner.workspace.join(name);
        std::fs::write(&file, "before\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        client.write_file(&p(name), b"after\n", None).await.unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"after\n");
        let now = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(now, mode, "{name} lost its mode on save");
    }
}

fn batched(path: &str, size: usize) -> BatchedWrite {
    BatchedWrite {
        path: p(path),
        size: size as u64,
        base_version: None,
        create_new: false,
    }
}

/// A first sync sends small files many to a request: each is written as
/// its own `write` would be, refusals are per file, and the answer means
/// every file written is durable.
#[tokio::test(flavor = "multi_thread")]
async fn many_files_in_one_request_are_written_checked_and_durable_each() {
    let runner = TestRunner::start();
    let client = runner.client().await;
    let v1 = client.write_file(&p("kept.txt"), b"one", None).await.unwrap();
    client.write_file(&p("taken.txt"), b"mine", None).await.unwrap();
    client.write_file(&p("saved.txt"), b"old", None).await.unwrap();
    client
        .write_file(&p("kept.txt"), b"two", Some(v1.clone()))
        .await
        .unwrap();
    client.request(Op::CreateDir { path: p("src") }).await.unwrap();
    // Larger than a chunk, so chunks and files do not line up.
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let saved = client.request(Op::Stat { path: p("saved.txt") }).await.unwrap();
    let Reply::Entry { entry } = saved else {
        panic!("{saved:?}")
    };
    let files: Vec<(BatchedWrite, &[u8])> = vec![
        (
            BatchedWrite {
                create_new: true,
                ..batched("src/a.py", 6)
            },
            b"print\n",
        ),
        (batched("big.bin", big.len()), &big),
        (batched("empty", 0), b""),
        (
            BatchedWrite {
                base_version: Some(v1),
                ..batched("kept.txt", 5)
            },
            b"stale",
        ),
        (
            BatchedWrite {
                create_new: true,
                ..batched("taken.txt", 6)
            },
            b"theirs",
        ),
        (batched("missing/dir/x", 1), b"x"),
        (
            BatchedWrite {
                base_version: entry.version,
                ..batched("saved.txt", 3)
            },
            b"new",
        ),
    ];
    let outcomes = client.write_many(&files, true).await.unwrap();
    let codes: Vec<Option<ErrorCode>> = outcomes
        .iter()
        .map(|o| match o {
            Ok(_) => None,
            Err(ClientError::Remote { code, .. }) => Some(*code),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            Some(ErrorCode::Conflict),
            Some(ErrorCode::AlreadyExists),
            Some(ErrorCode::NotFound),
            None
        ]
    );
    // Answered means durable: no waiting.
    assert_eq!(runner.stored("src/a.py").unwrap(), b"print\n");
    assert_eq!(runner.stored("big.bin").unwrap(), big);
    assert_eq!(runner.stored("empty").unwrap(), b"");
    assert_eq!(runner.stored("saved.txt").unwrap(), b"new");
    // What was refused is untouched.
    assert_eq!(std::fs::read(runner.workspace.join("kept.txt")).unwrap(), b"two");
    assert_eq!(std::fs::read(runner.workspace.join("taken.txt")).unwrap(), b"mine");
    assert!(!runner.workspace.join("missing").exists());
    // The versions are the files' own: a write based on one goes through.
    let Ok(version) = &outcomes[0] else { unreachable!() };
    client
        .write_file(&p("src/a.py"), b"print()\n", Some(version.clone()))
        .await
        .unwrap();
    assert_eq!(client.write_many(&[], false).await.unwrap().len(), 0);
}

/// A request the runner cannot take whole is refused before any byte is
/// written; bytes that do not fit abort the batch; a client leaving
/// mid-batch leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_of_many_files_that_breaks_the_rules_writes_nothing() {
    use cloudcode_proto::message::{WRITE_MANY_MAX_BYTES, WRITE_MANY_MAX_FILES};
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    client.write_file(&p("doc.txt"), b"original", None).await.unwrap();
    let too_many = (0..=WRITE_MANY_MAX_FILES)
        .map(|i| batched(&format!("f{i}"), 0))
        .collect();
    let refusals = [
        (too_many, ErrorCode::BadRequest),
        (
            vec![batched("a", WRITE_MANY_MAX_BYTES as usize), batched("b", 1)],
            ErrorCode::TooLarge,
        ),
        (vec![batched("a", 0), batched("a", 0)], ErrorCode::BadRequest),
        // Sizes whose sum overflows.
        (
            vec![batched("a", usize::MAX), batched("b", usize::MAX)],
            ErrorCode::TooLarge,
        ),
    ];
    for (files, code) in refusals {
        let refused = client.request(Op::WriteMany { files, bulk: true }).await;
        assert_eq!(code_of(refused), code);
    }

    // A chunk past the sizes' sum ends the batch; nothing of it is written.
    client
        .send_text(r#"{"id":70,"op":"write_many","files":[{"path":"doc.txt","size":2},{"path":"n.txt","size":2}]}"#)
        .unwrap();
    let chunk = Frame::FileChunk {
        transfer: 70,
        offset: 0,
        data: b"NNNNN".to_vec().into(),
    };
    client.send_binary(chunk.encode()).unwrap();
    match next_incoming(&mut client).await {
        Incoming::Error {
            id: Some(70),
            code: ErrorCode::BadRequest,
            ..
        } => {}
        other => panic!("expected the batch refused, got {other:?}"),
    }
    // One batch's bytes at a time: a second before the first's bytes is
    // refused, and the first is left for its bytes.
    client
        .send_text(r#"{"id":71,"op":"write_many","files":[{"path":"doc.txt","size":4}]}"#)
        .unwrap();
    let second = client
        .request(Op::WriteMany {
            files: vec![batched("other", 0)],
            bulk: false,
        })
        .await;
    assert_eq!(code_of(second), ErrorCode::BadRequest);
    let half = Frame::FileChunk {
        transfer: 71,
        offset: 0,
        data: b"NE".to_vec().into(),
    };
    client.send_binary(half.encode()).unwrap();
    client.request(Op::Ping).await.unwrap();
    client.close();
    drop(client);

    let again = runner.client().await;
    again.request(Op::Ping).await.unwrap();
    assert_eq!(list_tree(&runner.workspace), ["doc.txt"]);
    assert_eq!(std::fs::read(runner.workspace.join("doc.txt")).unwrap(), b"original");
    assert_eq!(runner.stored("doc.txt").unwrap(), b"original");
}
