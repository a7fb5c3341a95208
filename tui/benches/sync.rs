//! Folder sync figures against a real runner on this machine:
//!
//! - first sync of 10,000 files / 100 MB, beside `rsync -a` of the same
//!   tree into a local directory in the same run;
//! - the second run on the unchanged folder;
//! - save to readable in the sandbox, p50 / p99 over 200 saves of a small
//!   file while watching;
//! - CPU while idle watching, and the inotify watches used.
//!
//! `cargo build --release -p cloudcode-runner && cargo bench -p cloudcode-tui --bench sync`
//! (the runner binary is taken from beside the TUI's).

#[path = "../tests/sync_support/mod.rs"]
mod sync_support;

use std::time::{Duration, Instant};

use sync_support::{Setup, read, wait_for, write};

const FILES: usize = 10_000;
const FILE_BYTES: usize = 10_000;
const SAVES: usize = 200;

fn main() {
    let s = Setup::new();
    let local = s.local();
    let payload: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
    for i in 0..FILES {
        let path = local.join(format!("tree/{}/{}/{i}.bin", i % 37, i % 11));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut content = payload.clone();
        content[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(path, content).unwrap();
    }
    println!("tree: {FILES} files, {} MB", FILES * FILE_BYTES / 1_000_000);

    let rsync_dest = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", local.display()))
        .arg(rsync_dest.path())
        .status()
        .expect("rsync is needed for the comparison");
    assert!(status.success());
    let rsync = started.elapsed();

    let started = Instant::now();
    let first = s.once(&[]);
    let first_time = started.elapsed();
    assert_eq!(first.code, 0, "{}", first.stderr);
    let started = Instant::now();
    let second = s.once(&[]);
    let second_time = started.elapsed();
    assert_eq!(second.code, 0);
    println!(
        "first sync: {:.2} s (rsync -a of the same tree: {:.2} s, {:.1}x); second run, unchanged: {:.3} s",
        first_time.as_secs_f64(),
        rsync.as_secs_f64(),
        first_time.as_secs_f64() / rsync.as_secs_f64(),
        second_time.as_secs_f64()
    );

    let watching = s.watch(&[]);
    let remote = s.remote();
    let mut latencies = Vec::with_capacity(SAVES);
    for i in 0..SAVES {
        let content = format!("save {i}\n");
        let started = Instant::now();
        // An editor's atomic save.
        write(&local, ".note.txt.tmp", &content);
        std::fs::rename(local.join(".note.txt.tmp"), local.join("note.txt")).unwrap();
        wait_for("the save in the sandbox", || {
            read(&remote, "note.txt").as_deref() == Some(&content)
        });
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "save to readable in the sandbox over {SAVES} saves: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0
    );

    // Idle: nothing changes for 10 s.
    std::thread::sleep(Duration::from_secs(1));
    let pid = watching.pid();
    let before = cpu_ticks(pid);
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let used = cpu_ticks(pid) - before;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "idle watching {} entries: {:.2}% of a core over {} s, {} inotify watches",
        FILES + 37 * 12 + 2,
        used as f64 / ticks / idle.as_secs_f64() * 100.0,
        idle.as_secs(),
        inotify_watches(pid)
    );
    drop(watching);
    rename_in_a_large_tree();
}

/// mutagen#100's tree: 41,875 files in 3,736 directories; one directory
/// renamed, until the sandbox shows it.
fn rename_in_a_large_tree() {
    let files: usize = std::env::var("BENCH_RENAME_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(41_875);
    let dirs = (files * 3_736 / 41_875).max(1);
    let s = Setup::new();
    let local = s.local();
    for i in 0..files {
        let d = i % dirs;
        write(&local, &format!("t/{}/{d}/{i}.txt", d % 61), &format!("{i}"));
    }
    let started = Instant::now();
    let first = s.once(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let first_time = started.elapsed();
    let watching = s.watch(&[]);
    let remote = s.remote();
    let mut times = Vec::new();
    for round in 0..5 {
        let from = local.join(format!("t/{round}/{round}"));
        let to = local.join(format!("t/{round}/renamed-{round}"));
        let moved: Vec<_> = std::fs::read_dir(&from)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        let started = Instant::now();
        std::fs::rename(&from, &to).unwrap();
        let target = remote.join(format!("t/{round}/renamed-{round}"));
        wait_for("the renamed directory in the sandbox", || {
            moved.iter().all(|name| target.join(name).exists()) && !remote.join(format!("t/{round}/{round}")).exists()
        });
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{files} files in {dirs} directories: first sync {:.1} s; a directory renamed, visible in the sandbox: median {:.0} ms, max {:.0} ms of 5",
        first_time.as_secs_f64(),
        times[2].as_secs_f64() * 1000.0,
        times[4].as_secs_f64() * 1000.0
    );
    drop(watching);
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn inotify_watches(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .map(|fd| {
            std::fs::read_to_string(fd.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}
