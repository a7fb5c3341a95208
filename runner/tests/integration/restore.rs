//! A restored workspace is the workspace, not only its file bytes: the
//! executable bit, symbolic links (as links) and empty directories come
//! back, in local storage and in S3, after a real restore by a new runner.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cloudcode_proto::message::{Op, Reply};

use crate::common::*;

/// What a user does in a terminal before the sandbox goes away.
const SETUP: &str = "git init -q && printf '#!/bin/sh\\necho ran-$((20+1))\\n' > run.sh && chmod +x run.sh \
    && echo 'print(6*7)' > main.py && ln -s main.py link.py && mkdir emptydir && printf '.venv\\n.bash_history\\n' > .gitignore \
    && git add -A && git -c user.email=u@example.com -c user.name=u commit -qm init \
    && python3 -m venv .venv";

async fn set_up_and_stop(options: Options) {
    let mut runner = TestRunner::start_with(options);
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, SETUP, "setup").await;
    // Settled: nothing pending for a while.
    let deadline = Instant::now() + PATIENCE;
    let mut quiet_since = Instant::now();
    loop {
        let Reply::Storage { status } = client.request(Op::StorageStatus).await.unwrap() else {
            panic!()
        };
        if status.pending != 0 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    runner.signal(libc::SIGTERM);
    assert!(runner.wait_exit().success());
}

async fn check_restored(runner: &TestRunner) {
    let ws = &runner.workspace;
    let mode = std::fs::metadata(ws.join("run.sh")).unwrap().permissions().mode();
    assert_ne!(mode & 0o111, 0, "run.sh lost its executable bit: {mode:o}");
    assert_eq!(
        std::fs::read_link(ws.join("link.py")).unwrap(),
        std::path::Path::new("main.py")
    );
    assert!(ws.join("emptydir").is_dir(), "the empty directory is gone");
    let python = std::fs::symlink_metadata(ws.join(".venv/bin/python")).unwrap();
    assert!(python.file_type().is_symlink(), "the venv's python is not a link");
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "./run.sh && .venv/bin/python link.py && echo status=$(git status --porcelain | wc -l) && git status --porcelain",
        "checked",
    )
    .await;
    let text = screen.tail_text();
    assert!(text.contains("ran-21"), "./run.sh did not run:\n{text}");
    assert!(text.contains("\n42"), "the venv's python did not run link.py:\n{text}");
    assert!(text.contains("status=0"), "git sees changes after the restore:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_storage_restores_modes_links_and_empty_directories() {
    let storage = tempfile::tempdir().unwrap();
    set_up_and_stop(Options {
        storage: Some(storage.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    // A new sandbox: an empty workspace, restored from storage.
    let runner = TestRunner::start_with(Options {
        storage: Some(storage.path().to_path_buf()),
        ..Default::default()
    });
    check_restored(&runner).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "s3"),
    ignore = "the runner's S3 storage needs --features s3 (the README's test command has --all-features)"
)]
async fn s3_restores_modes_links_and_empty_directories() {
    use cloudcode_proto::storage::ObjectStore;
    let server = cloudcode_proto::testing::S3Server::start();
    let store = cloudcode_proto::storage::s3::S3Store::connect(server.config("fidelity"))
        .await
        .unwrap();
    store.ensure_bucket().await.unwrap();
    let options = || Options {
        args: server.runner_args("fidelity"),
        env: server.runner_env(),
        local_storage: false,
        ..Default::default()
    };
    set_up_and_stop(options()).await;
    let listed = store
        .list(&cloudcode_proto::storage::KeyPrefix::parse("code/alpha").unwrap())
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|o| o.key.as_str().ends_with("cloudcode-manifest.json"))
    );
    let runner = TestRunner::start_with(options());
    check_restored(&runner).await;
}
