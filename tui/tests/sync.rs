//! `cloudcode-tui sync` against a real runner, with real directories on
//! both sides: the sandbox's workspace is changed directly, as programs in
//! its terminals change it.

mod sync_support;

use std::os::unix::fs::PermissionsExt;

use sync_support::{Setup, read, snapshot, wait_for, write};

#[test]
fn a_first_sync_merges_both_sides_and_a_second_changes_nothing() {
    let s = Setup::new();
    write(&s.local(), "src/main.rs", "fn main() {}\n");
    write(&s.local(), ".env", "SECRET=1\n");
    write(&s.remote(), "README.md", "# hi\n");
    write(&s.remote(), "src/lib.rs", "pub fn f() {}\n");
    let first = s.once(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(snapshot(&s.local()), snapshot(&s.remote()));
    assert_eq!(
        read(&s.remote(), ".env").as_deref(),
        Some("SECRET=1\n"),
        "hidden files are synced"
    );
    let second = s.once(&[]);
    assert_eq!(second.code, 0);
    assert!(
        !second.stdout.contains("synced:"),
        "an unchanged folder did something: {}",
        second.stdout
    );
    assert!(second.stdout.contains("in sync"));
}

#[test]
fn both_sides_changed_while_stopped_is_a_conflict_that_loses_nothing() {
    let s = Setup::new();
    write(&s.local(), "notes.txt", "original\n");
    assert_eq!(s.once(&[]).code, 0);
    write(&s.local(), "notes.txt", "mine\n");
    write(&s.remote(), "notes.txt", "theirs\n");
    let run = s.once(&[]);
    assert_eq!(run.code, 2, "conflicts remain: exit code 2\n{}", run.stdout);
    assert!(run.stdout.contains("conflict: notes.txt"), "{}", run.stdout);
    for side in [s.local(), s.remote()] {
        let tree = snapshot(&side);
        let contents: Vec<&str> = tree.iter().map(|(_, c)| c.as_str()).collect();
        assert!(contents.contains(&"mine\n"), "{tree:?}");
        assert!(contents.contains(&"theirs\n"), "{tree:?}");
    }
    assert_eq!(snapshot(&s.local()), snapshot(&s.remote()));
    // Resolved: the copy deleted, the next run is clean.
    let copy = snapshot(&s.local())
        .into_iter()
        .find(|(p, _)| p.contains(".conflict-remote-"))
        .unwrap()
        .0;
    std::fs::remove_file(s.local().join(&copy)).unwrap();
    let run = s.once(&[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(!s.remote().join(&copy).exists());
}

#[test]
fn a_modification_beats_a_deletion_and_the_user_is_told() {
    let s = Setup::new();
    write(&s.local(), "a.txt", "a\n");
    write(&s.local(), "b.txt", "b\n");
    assert_eq!(s.once(&[]).code, 0);
    std::fs::remove_file(s.local().join("a.txt")).unwrap();
    write(&s.remote(), "a.txt", "a changed in the sandbox\n");
    std::fs::remove_file(s.remote().join("b.txt")).unwrap();
    write(&s.local(), "b.txt", "b changed here\n");
    let run = s.once(&[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("a.txt: deleted in the folder but changed in the sandbox")
    );
    assert!(
        run.stdout
            .contains("b.txt: deleted in the sandbox but changed in the folder")
    );
    assert_eq!(read(&s.local(), "a.txt").as_deref(), Some("a changed in the sandbox\n"));
    assert_eq!(read(&s.remote(), "b.txt").as_deref(), Some("b changed here\n"));
}

#[test]
fn a_directory_replaced_by_a_file_and_back() {
    let s = Setup::new();
    write(&s.local(), "d/a", "1");
    write(&s.local(), "d/sub/b", "2");
    assert_eq!(s.once(&[]).code, 0);
    std::fs::remove_dir_all(s.local().join("d")).unwrap();
    write(&s.local(), "d", "now a file");
    assert_eq!(s.once(&[]).code, 0);
    assert_eq!(read(&s.remote(), "d").as_deref(), Some("now a file"));
    std::fs::remove_file(s.remote().join("d")).unwrap();
    write(&s.remote(), "d/again", "3");
    assert_eq!(s.once(&[]).code, 0);
    assert_eq!(read(&s.local(), "d/again").as_deref(), Some("3"));
    assert_eq!(snapshot(&s.local()), snapshot(&s.remote()));
}

#[test]
fn ignored_paths_are_never_synced_and_newly_ignoring_one_deletes_nothing() {
    let s = Setup::new();
    write(&s.local(), ".gitignore", "*.log\nnode_modules/\n");
    write(&s.local(), "app.log", "local log");
    write(&s.local(), "node_modules/x/index.js", "x");
    write(&s.local(), "sub/.gitignore", "build/\n");
    write(&s.local(), "sub/build/out.o", "o");
    write(&s.local(), ".git/HEAD", "ref: refs/heads/main\n");
    write(&s.local(), ".a.swp", "vim swap");
    write(&s.local(), "kept.txt", "kept");
    write(&s.local(), ".cloudcodeignore", "private/\n");
    write(&s.local(), "private/key", "k");
    write(&s.remote(), "server.log", "sandbox log");
    assert_eq!(s.once(&[]).code, 0);
    for ignored in ["app.log", "node_modules", "sub/build", ".git", ".a.swp", "private"] {
        assert!(!s.remote().join(ignored).exists(), "{ignored} was synced");
    }
    assert!(
        !s.local().join("server.log").exists(),
        "an ignored sandbox file came down"
    );
    assert_eq!(read(&s.remote(), "kept.txt").as_deref(), Some("kept"));
    assert_eq!(read(&s.remote(), "sub/.gitignore").as_deref(), Some("build/\n"));

    // Now ignore kept.txt and delete it locally: the sandbox keeps its copy.
    write(&s.local(), ".gitignore", "*.log\nnode_modules/\nkept.txt\n");
    std::fs::remove_file(s.local().join("kept.txt")).unwrap();
    assert_eq!(s.once(&[]).code, 0);
    assert_eq!(read(&s.remote(), "kept.txt").as_deref(), Some("kept"));
}

#[test]
fn a_large_deletion_stops_unless_allowed() {
    let s = Setup::new();
    for i in 0..60 {
        write(&s.local(), &format!("files/{i}.txt"), &i.to_string());
    }
    write(&s.local(), "stay.txt", "stay");
    assert_eq!(s.once(&[]).code, 0);
    std::fs::remove_dir_all(s.local().join("files")).unwrap();
    let dry = s.once(&["--dry-run"]);
    assert!(
        dry.stdout.contains("sandbox: delete file files/0.txt"),
        "{}",
        dry.stdout
    );
    let run = s.once(&[]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("would delete 60 of 61 files in the sandbox"),
        "{}",
        run.stderr
    );
    assert!(s.remote().join("files/59.txt").exists(), "deleted despite stopping");
    let run = s.once(&["--allow-deletes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!s.remote().join("files").exists());
    assert!(s.remote().join("stay.txt").exists());
}

#[test]
fn an_emptied_folder_never_empties_the_sandbox_silently() {
    let s = Setup::new();
    write(&s.local(), "a", "1");
    write(&s.local(), "b", "2");
    assert_eq!(s.once(&[]).code, 0);
    std::fs::remove_file(s.local().join("a")).unwrap();
    std::fs::remove_file(s.local().join("b")).unwrap();
    let run = s.once(&[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("emptying it"), "{}", run.stderr);
    assert!(s.remote().join("a").exists());
}

#[test]
fn symlinks_stay_links_and_the_executable_bit_travels() {
    let s = Setup::new();
    write(&s.local(), "run.sh", "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(s.local().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("run.sh", s.local().join("start")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", s.local().join("python")).unwrap();
    std::os::unix::fs::symlink("/etc", s.local().join("etc-link")).unwrap();
    write(&s.remote(), "tool", "#!/bin/sh\n");
    std::fs::set_permissions(s.remote().join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(s.once(&[]).code, 0);
    let mode = std::fs::metadata(s.remote().join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "the executable bit did not travel up");
    let mode = std::fs::metadata(s.local().join("tool")).unwrap().permissions().mode();
    assert_ne!(mode & 0o111, 0, "the executable bit did not travel down");
    assert_eq!(
        std::fs::read_link(s.remote().join("python")).unwrap().to_str(),
        Some("/usr/bin/python3")
    );
    assert!(
        std::fs::symlink_metadata(s.remote().join("etc-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!s.local().join("etc-link/passwd").is_symlink(), "a link was followed");
    // Only the bit changes: it travels alone.
    std::fs::set_permissions(s.local().join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(s.once(&[]).code, 0);
    let mode = std::fs::metadata(s.remote().join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0);
    assert_eq!(snapshot(&s.local()), snapshot(&s.remote()));
}

/// A folder synced one way stays one way: the next run without `--mode`
/// keeps the mode it last ran in (as mutagen's sessions do), says so, and
/// never pulls the sandbox's files into the folder.
#[test]
fn the_mode_is_remembered_for_the_folder() {
    let s = Setup::new();
    write(&s.local(), "a", "1");
    assert_eq!(s.once(&["--mode", "one-way-safe"]).code, 0);
    write(&s.remote(), "theirs", "t");
    let run = s.once(&[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("mode: one-way-safe, as this folder last synced"),
        "{}",
        run.stdout
    );
    assert!(!s.local().join("theirs").exists(), "the remembered mode was not used");
    // `--mode` changes it, and the change is remembered in turn.
    assert_eq!(s.once(&["--mode", "two-way-safe"]).code, 0);
    assert_eq!(read(&s.local(), "theirs").as_deref(), Some("t"));
    let run = s.once(&[]);
    assert!(run.stdout.contains("mode: two-way-safe"), "{}", run.stdout);
}

#[test]
fn one_way_modes_never_touch_the_folder() {
    let s = Setup::new();
    write(&s.local(), "a", "1");
    write(&s.remote(), "theirs", "t");
    let run = s.once(&["--mode", "one-way-safe"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(read(&s.remote(), "a").as_deref(), Some("1"));
    assert!(
        s.remote().join("theirs").exists(),
        "one-way-safe deleted the sandbox's own file"
    );
    assert!(!s.local().join("theirs").exists());
    let run = s.once(&["--mode", "one-way-replica", "--allow-deletes"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(!s.remote().join("theirs").exists());
    assert_eq!(snapshot(&s.local()), snapshot(&s.remote()));
}

#[test]
fn editor_saves_reach_the_sandbox_while_watching() {
    let s = Setup::new();
    write(&s.local(), "a.txt", "v0");
    write(&s.local(), "b.txt", "v0");
    write(&s.local(), "c.txt", "v0");
    let watching = s.watch(&[]);
    wait_for("the first sync", || read(&s.remote(), "c.txt").as_deref() == Some("v0"));

    // Write to a temporary file, rename over (most editors, atomic saves).
    write(&s.local(), ".a.txt.tmp123", "v1");
    std::fs::rename(s.local().join(".a.txt.tmp123"), s.local().join("a.txt")).unwrap();
    // Truncate and write in place (nano, many tools).
    std::fs::write(s.local().join("b.txt"), "v1").unwrap();
    // vim: rename to a backup, write anew, delete the backup; it also
    // probes the directory with a file named 4913.
    std::fs::rename(s.local().join("c.txt"), s.local().join("c.txt~")).unwrap();
    write(&s.local(), "4913", "");
    std::fs::remove_file(s.local().join("4913")).unwrap();
    write(&s.local(), "c.txt", "v1");
    std::fs::remove_file(s.local().join("c.txt~")).unwrap();

    wait_for("the saves in the sandbox", || {
        ["a.txt", "b.txt", "c.txt"]
            .iter()
            .all(|f| read(&s.remote(), f).as_deref() == Some("v1"))
    });
    wait_for("the temporary names gone from the sandbox", || {
        !s.remote().join(".a.txt.tmp123").exists() && !s.remote().join("c.txt~").exists()
    });
    assert!(!s.remote().join("4913").exists());

    // A change in the sandbox comes down; our own writes do not echo back.
    write(&s.remote(), "from-sandbox.txt", "hello");
    wait_for("the sandbox's file in the folder", || {
        read(&s.local(), "from-sandbox.txt").as_deref() == Some("hello")
    });
    // A directory moved with its contents.
    write(&s.local(), "pkg/mod/x.py", "x");
    write(&s.local(), "pkg/mod/y.py", "y");
    wait_for("the package in the sandbox", || {
        s.remote().join("pkg/mod/y.py").exists()
    });
    std::fs::rename(s.local().join("pkg"), s.local().join("lib")).unwrap();
    wait_for("the move in the sandbox", || {
        s.remote().join("lib/mod/y.py").exists() && !s.remote().join("pkg").exists()
    });
    wait_for("both sides equal", || snapshot(&s.local()) == snapshot(&s.remote()));
    let output = watching.stop();
    assert!(!output.contains("conflict"), "{output}");
    // Stopped cleanly: the state resumes without work.
    let again = s.once(&[]);
    assert_eq!(again.code, 0);
    assert!(!again.stdout.contains("synced:"), "{}", again.stdout);
}

#[test]
fn a_burst_of_ten_thousand_creates_all_arrive() {
    let s = Setup::new();
    let watching = s.watch(&["--allow-deletes"]);
    for d in 0..100 {
        for f in 0..100 {
            write(&s.local(), &format!("burst/{d}/{f}.txt"), &format!("{d}-{f}"));
        }
    }
    wait_for("10,000 files in the sandbox", || {
        (0..100).all(|d| {
            // Files only: a save in flight is a temporary entry beside them.
            std::fs::read_dir(s.remote().join(format!("burst/{d}")))
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".txt"))
                        .count()
                        == 100
                })
                .unwrap_or(false)
        })
    });
    assert_eq!(read(&s.remote(), "burst/99/99.txt").as_deref(), Some("99-99"));
    drop(watching);
}

#[test]
fn changes_made_while_the_first_sync_runs_all_arrive() {
    let s = Setup::new();
    for i in 0..3_000 {
        write(&s.local(), &format!("tree/{}/{i}.txt", i % 30), "x");
    }
    let watching = s.start_watching(&[], &[]);
    // New files in new directories and edits, while the first reconcile
    // scans, uploads and looks again, until it watches, and once after.
    let mut n = 0;
    while !watching.output().contains("watching") {
        write(&s.local(), &format!("during/{}/{n}.txt", n % 7), &format!("{n}"));
        write(&s.local(), "tree/0/0.txt", &format!("edit {n}"));
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    write(&s.local(), &format!("during/{}/{n}.txt", n % 7), &format!("{n}"));
    write(&s.local(), "tree/0/0.txt", &format!("edit {n}"));
    wait_for("every change in the sandbox", || {
        read(&s.remote(), "tree/0/0.txt").as_deref() == Some(&format!("edit {n}"))
            && (0..=n)
                .all(|i| read(&s.remote(), &format!("during/{}/{i}.txt", i % 7)).as_deref() == Some(&format!("{i}")))
    });
    wait_for("both sides equal", || snapshot(&s.local()) == snapshot(&s.remote()));
    drop(watching);
}

#[test]
fn at_the_watch_limit_it_says_how_to_raise_it_and_polls() {
    let s = Setup::new();
    write(&s.local(), "d1/a", "1");
    write(&s.local(), "d2/b", "2");
    let watching = s.watch_with(&[], &[("CLOUDCODE_SYNC_WATCH_LIMIT", "1")]);
    watching.wait_line("fs.inotify.max_user_watches");
    assert!(watching.output().contains("sudo sysctl fs.inotify.max_user_watches="));
    write(&s.local(), "d2/c", "3");
    wait_for("a change found by polling", || {
        read(&s.remote(), "d2/c").as_deref() == Some("3")
    });
}

/// Seeded random operations on both sides while the sync is stopped, then
/// a sync: both sides end equal, and no content either side held last is
/// lost (it is at its path or in a conflict copy).
#[test]
fn random_operations_on_both_sides_settle_without_loss() {
    let s = Setup::new();
    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let names = ["a", "b", "d/c", "d/e", "f/g/h"];
    let mut counter = 0;
    for round in 0..6 {
        for side in [s.local(), s.remote()] {
            for _ in 0..6 {
                let name = names[(next() % names.len() as u64) as usize];
                let path = side.join(name);
                counter += 1;
                match next() % 4 {
                    0 | 1 => {
                        if path.is_dir() {
                            let _ = std::fs::remove_dir_all(&path);
                        }
                        if let Some(parent) = path.parent() {
                            // A file where a directory must be: replace it.
                            let mut a = parent.to_path_buf();
                            while a != side {
                                if a.is_file() {
                                    std::fs::remove_file(&a).unwrap();
                                }
                                a.pop();
                            }
                            std::fs::create_dir_all(parent).unwrap();
                        }
                        std::fs::write(&path, format!("r{round}-{counter}")).unwrap();
                    }
                    2 => {
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => {
                        let to = side.join(names[(next() % names.len() as u64) as usize]);
                        if path.is_file() && to.parent().is_some_and(|p| p.is_dir()) && !to.is_dir() {
                            std::fs::rename(&path, &to).unwrap();
                        }
                    }
                }
            }
        }
        let held: Vec<String> = [s.local(), s.remote()]
            .iter()
            .flat_map(|side| snapshot(side).into_iter().map(|(_, c)| c))
            .filter(|c| c.starts_with('r'))
            .collect();
        let run = s.once(&["--allow-deletes"]);
        assert!(run.code == 0 || run.code == 2, "round {round}: {}", run.stderr);
        assert_eq!(snapshot(&s.local()), snapshot(&s.remote()), "round {round}");
        let now: Vec<String> = snapshot(&s.local()).into_iter().map(|(_, c)| c).collect();
        for content in held {
            // A side that did not change a path since the last agreement
            // may see it replaced by the other side's change: only what
            // was changed since is guaranteed; it carries this round's tag.
            if content.starts_with(&format!("r{round}-")) {
                assert!(now.contains(&content), "round {round}: {content} lost");
            }
        }
        // Conflicts resolved between rounds, as a user would.
        for (path, _) in snapshot(&s.local()) {
            if path.contains(".conflict-") {
                let _ = std::fs::remove_file(s.local().join(&path));
            }
        }
        let run = s.once(&["--allow-deletes"]);
        assert_eq!(run.code, 0, "round {round}: {}", run.stdout);
    }
}

#[test]
fn moves_into_and_out_of_ignored_paths_are_a_delete_and_a_create() {
    let s = Setup::new();
    write(&s.local(), ".gitignore", "scratch/\n");
    write(&s.local(), "src/a.txt", "a");
    write(&s.local(), "scratch/.keep", "");
    let watching = s.watch(&[]);
    wait_for("the first sync", || s.remote().join("src/a.txt").exists());
    std::fs::rename(s.local().join("src/a.txt"), s.local().join("scratch/a.txt")).unwrap();
    wait_for("a.txt gone from the sandbox", || !s.remote().join("src/a.txt").exists());
    assert!(!s.remote().join("scratch").exists(), "an ignored directory was synced");
    std::fs::rename(s.local().join("scratch/a.txt"), s.local().join("src/b.txt")).unwrap();
    wait_for("b.txt in the sandbox", || {
        read(&s.remote(), "src/b.txt").as_deref() == Some("a")
    });
    // Case-only renames are renames (both file systems tell case apart).
    std::fs::rename(s.local().join("src/b.txt"), s.local().join("src/B.txt")).unwrap();
    wait_for("the case-only rename", || {
        s.remote().join("src/B.txt").exists() && !s.remote().join("src/b.txt").exists()
    });
    write(&s.local(), "src/b.txt", "lower");
    wait_for("two names differing by case", || {
        read(&s.remote(), "src/b.txt").as_deref() == Some("lower")
    });
    assert_eq!(read(&s.remote(), "src/B.txt").as_deref(), Some("a"));
    drop(watching);
}

#[test]
fn a_branch_switch_of_five_thousand_files_arrives_without_conflicts() {
    let s = Setup::new();
    for i in 0..5000 {
        write(&s.local(), &format!("src/{}/{i}.js", i % 50), "main");
    }
    assert_eq!(s.once(&[]).code, 0);
    let watching = s.watch(&[]);
    // What `git checkout other` does: rewrite, delete a few, add a few.
    for i in 0..5000 {
        let path = format!("src/{}/{i}.js", i % 50);
        if i % 200 == 0 {
            std::fs::remove_file(s.local().join(&path)).unwrap();
        } else {
            write(&s.local(), &path, "other");
        }
    }
    for i in 0..25 {
        write(&s.local(), &format!("src/new/{i}.js"), "other");
    }
    wait_for("the branch in the sandbox", || {
        snapshot(&s.local()) == snapshot(&s.remote())
    });
    let output = watching.stop();
    assert!(!output.contains("conflict"), "{output}");
}

#[test]
fn a_dropped_connection_is_resumed_and_changes_meanwhile_arrive() {
    let mut s = Setup::new();
    write(&s.local(), "a.txt", "1");
    let watching = s.watch(&[]);
    wait_for("the first sync", || read(&s.remote(), "a.txt").as_deref() == Some("1"));
    s.runner.kill();
    watching.wait_line("reconnecting");
    write(&s.local(), "a.txt", "2");
    write(&s.local(), "b.txt", "new while away");
    s.runner.start_again();
    watching.wait_line("reconnected");
    wait_for("the changes made while away", || {
        read(&s.remote(), "a.txt").as_deref() == Some("2")
            && read(&s.remote(), "b.txt").as_deref() == Some("new while away")
    });
    drop(watching);
}

/// A long copy in progress: the file grows for a while; whatever the sync
/// uploads meanwhile, the sandbox ends with the whole file, once.
#[test]
fn a_file_written_for_a_while_arrives_whole() {
    use std::io::Write;
    let s = Setup::new();
    let watching = s.watch(&[]);
    let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i % 253) as u8).collect();
    let mut file = std::fs::File::create(s.local().join("big.bin")).unwrap();
    for _ in 0..40 {
        file.write_all(&chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(file);
    let expected = std::fs::read(s.local().join("big.bin")).unwrap();
    wait_for("the whole file in the sandbox", || {
        std::fs::read(s.remote().join("big.bin")).is_ok_and(|b| b == expected)
    });
    let output = watching.stop();
    assert!(!output.contains("conflict"), "{output}");
}

/// A synced file rewritten for longer than the sync's reads of it (a long
/// copy over it, a log being written) is never taken for deleted: the
/// sandbox keeps the last agreed content until the file holds still, then
/// gets the new one.
#[test]
fn a_file_that_never_holds_still_is_not_deleted_in_the_sandbox() {
    use std::io::Write;
    let s = Setup::new();
    let base: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.local().join("data.bin"), &base).unwrap();
    // Other files, so one deletion is not "emptying the sandbox", which
    // stops the sync for its own reasons.
    for i in 0..20 {
        write(&s.local(), &format!("src/{i}.txt"), &i.to_string());
    }
    assert_eq!(s.once(&[]).code, 0);
    let watching = s.watch(&[]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(s.local().join("data.bin"))
        .unwrap();
    // Appends every half millisecond: every read of the 16 MiB file sees
    // it change, until the sync says so (then a while longer).
    let mut appended = 0usize;
    let mut said_at: Option<usize> = None;
    while said_at.is_none_or(|at| appended < at + 2000) {
        file.write_all(&[b'x'; 4096]).unwrap();
        appended += 1;
        assert!(
            s.remote().join("data.bin").exists(),
            "the sandbox's copy went while the file was being written: {}",
            watching.output()
        );
        if said_at.is_none() && watching.output().contains("data.bin: still being written") {
            said_at = Some(appended);
        }
        assert!(
            appended < 20_000,
            "the sync never found the file changing: {}",
            watching.output()
        );
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    drop(file);
    let expected = std::fs::read(s.local().join("data.bin")).unwrap();
    wait_for("the settled file in the sandbox", || {
        std::fs::read(s.remote().join("data.bin")).is_ok_and(|b| b == expected)
    });
    let output = watching.stop();
    assert!(!output.contains("deleted in the sandbox"), "{output}");
    assert!(!output.contains("conflict"), "{output}");
    assert!(!output.contains("error"), "{output}");
}

/// A renamed directory is one rename in the sandbox: no re-upload, and no
/// deletion threshold to trip.
#[test]
fn a_renamed_directory_is_moved_not_deleted_and_copied() {
    let s = Setup::new();
    for i in 0..60 {
        write(&s.local(), &format!("old/sub/{i}.txt"), &i.to_string());
    }
    assert_eq!(s.once(&[]).code, 0);
    std::fs::rename(s.local().join("old"), s.local().join("new")).unwrap();
    let run = s.once(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("1 moved"), "{}", run.stdout);
    assert!(!run.stdout.contains(" up"), "{}", run.stdout);
    assert!(!s.remote().join("old").exists());
    assert_eq!(snapshot(&s.local()), snapshot(&s.remote()));
}

/// Two syncs of one folder with one project (two terminals, or the TUI's
/// `--sync` beside the command) would race each other: the second is
/// refused, and can run once the first has stopped.
#[test]
fn a_second_sync_of_the_same_folder_is_refused() {
    let s = Setup::new();
    write(&s.local(), "a.txt", "a");
    let watching = s.watch(&[]);
    let second = s.once(&[]);
    assert_eq!(second.code, 1, "{}", second.stdout);
    assert!(
        second
            .stderr
            .contains("another sync of this folder with this project is running"),
        "{}",
        second.stderr
    );
    let dry = s.once(&["--dry-run"]);
    assert_eq!(dry.code, 0, "a dry run changes nothing and may look: {}", dry.stderr);
    watching.stop();
    assert_eq!(s.once(&[]).code, 0);
}

/// A save reaches the sandbox (its terminals, Run, preview) at once, even
/// while the runner cannot store it yet: the sync does not wait for the
/// previous save's storage before carrying the next. Once storage is back
/// both are stored and agreed, with no conflict.
#[test]
fn saves_reach_the_sandbox_while_storage_is_down() {
    let s = Setup::new();
    write(&s.local(), "notes.txt", "v0\n");
    assert_eq!(s.once(&[]).code, 0);
    let watching = s.watch(&[]);
    // Storage down: where the project's objects go is a file now.
    let code = s.runner.storage().join("code");
    let away = s.runner.storage().join("code.away");
    std::fs::rename(&code, &away).unwrap();
    std::fs::write(&code, "not a directory").unwrap();

    for v in ["v1\n", "v2\n", "v3\n"] {
        write(&s.local(), "notes.txt", v);
        wait_for(&format!("{v:?} in the sandbox while storage is down"), || {
            read(&s.remote(), "notes.txt").as_deref() == Some(v)
        });
    }
    std::fs::remove_file(&code).unwrap();
    std::fs::rename(&away, &code).unwrap();
    wait_for("the last save in storage", || {
        std::fs::read_to_string(code.join("alpha/notes.txt")).ok().as_deref() == Some("v3\n")
    });
    let output = watching.stop();
    assert!(!output.contains("conflict"), "{output}");
    let again = s.once(&[]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert!(
        !again.stdout.contains("synced:"),
        "agreed once answered: {}",
        again.stdout
    );
}
