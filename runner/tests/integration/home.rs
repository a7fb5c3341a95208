//! Terminals have a HOME of their own, apart from the workspace: a shell's
//! files (`~/.bashrc`, `~/.bash_history`) are kept in storage under the
//! project's home prefix, never in the project's tree, and come back in a
//! new sandbox (a new, empty home directory); caches stay out of storage.

use std::os::unix::fs::PermissionsExt;

use cloudcode_proto::message::{Op, Reply};

use crate::common::*;

fn stored_home(storage: &std::path::Path, path: &str) -> Option<String> {
    std::fs::read_to_string(storage.join("home").join(PROJECT).join(path)).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shells_own_files_are_kept_in_its_home_not_in_the_project() {
    let storage = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().join("user");
    let mut runner = TestRunner::start_with(Options {
        args: vec!["--home".into(), home_dir.display().to_string()],
        storage: Some(storage.path().to_path_buf()),
        ..Options::default()
    });
    let home_dir = home_dir.canonicalize().unwrap();
    let mode = std::fs::metadata(&home_dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a home others may enter: {mode:o}");
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    // The shell starts in the workspace; `cd` goes home.
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "pwd > started-in.txt; (cd && pwd) > cd-goes-to.txt; echo \"$HOME\" > home-is.txt",
        "where",
    )
    .await;
    let workspace = runner.workspace.canonicalize().unwrap();
    let read = |name: &str| std::fs::read_to_string(workspace.join(name)).unwrap().trim().to_owned();
    assert_eq!(read("started-in.txt"), workspace.display().to_string());
    assert_eq!(read("cd-goes-to.txt"), home_dir.display().to_string());
    assert_eq!(read("home-is.txt"), home_dir.display().to_string());

    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "echo \"alias hi='echo hello-from-$((6*7))'\" >> ~/.bashrc; echo typed-by-hand; history -w; \
         mkdir -p ~/.cache/pip ~/.npm/_cacache && head -c 100000 /dev/zero > ~/.cache/pip/wheel && echo x > ~/.npm/_cacache/i",
        "shell",
    )
    .await;
    eventually("the home's files in storage", || {
        stored_home(storage.path(), ".bashrc").is_some_and(|b| b.contains("alias hi="))
            && stored_home(storage.path(), ".bash_history").is_some_and(|h| h.contains("echo typed-by-hand"))
    })
    .await;
    eventually("the workspace's files in storage", || {
        runner.stored("home-is.txt").is_some()
    })
    .await;
    // Nothing of the shell's is in the project: not in storage, not in the
    // workspace, not in the tree clients see.
    for name in [".bashrc", ".bash_history", ".cache", ".npm"] {
        assert!(runner.stored(name).is_none(), "{name} is in the project's storage");
        assert!(!workspace.join(name).exists(), "{name} is in the workspace");
    }
    let Reply::Entries { entries } = client.request(Op::List { path: p("") }).await.unwrap() else {
        panic!()
    };
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert!(names.iter().all(|n| !n.starts_with(".bash")), "{names:?}");
    drop(client);
    runner.signal(libc::SIGTERM);
    assert!(runner.wait_exit().success());
    // Everything is in storage once the runner exited cleanly, but the
    // caches.
    let stored_home = storage.path().join("home").join(PROJECT);
    assert!(stored_home.join(".bashrc").exists());
    for cache in [".cache", ".npm"] {
        assert!(!stored_home.join(cache).exists(), "{cache} went to storage");
    }

    // A new sandbox: an empty home and workspace, the same storage.
    let fresh = tempfile::tempdir().unwrap();
    let runner = TestRunner::start_with(Options {
        args: vec!["--home".into(), fresh.path().join("user").display().to_string()],
        storage: Some(storage.path().to_path_buf()),
        ..Options::default()
    });
    let restored = fresh.path().join("user");
    assert!(
        std::fs::read_to_string(restored.join(".bashrc"))
            .unwrap()
            .contains("alias hi=")
    );
    assert!(
        std::fs::read_to_string(restored.join(".bash_history"))
            .unwrap()
            .contains("echo typed-by-hand")
    );
    assert!(!restored.join(".cache").exists());
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    // The harness's shell reads no rc file: source it as bash would.
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "shopt -s expand_aliases; . ~/.bashrc",
        "sourced",
    )
    .await;
    run_in_terminal(&mut client, term, &mut screen, "hi", "alias").await;
    assert!(screen.tail_text().contains("hello-from-42"), "{}", screen.tail_text());
    assert!(!runner.workspace.join(".bash_history").exists());
}
