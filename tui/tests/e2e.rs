//! cloudcode-tui end to end, as a user runs it: in a real terminal (tmux),
//! against a real server with real sandboxes, keys sent one by one and the
//! screen read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudcode_proto::testing::terminate;
use cloudcode_tui::api::ApiClient;

const PATIENCE: Duration = Duration::from_secs(40);

fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_cloudcode-tui")).with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: run the README's test command, which builds it",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tmux server of its own, with one window the size of a terminal.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!("cc-e2e-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let tmux = Tmux { socket };
        let status = tmux
            .command()
            .args([
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .status()
            .expect("tmux is needed for these tests (apt-get install tmux)");
        assert!(status.success());
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "main"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        assert!(
            self.command()
                .args(["send-keys", "-t", "main", "-l", text])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Presses keys by tmux name: Enter, C-s, F5, M-3.
    fn press(&self, keys: &[&str]) {
        for key in keys {
            assert!(
                self.command()
                    .args(["send-keys", "-t", "main", key])
                    .status()
                    .unwrap()
                    .success()
            );
            // One key at a time, as fingers do: an Esc-prefixed Alt chord
            // must not merge with the next key.
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn resize(&self, width: u16, height: u16) {
        let status = self
            .command()
            .args([
                "resize-window",
                "-t",
                "main",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_for(text, |screen| screen.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

fn pid_of_server(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("server.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sandboxes outlive their server: once it is gone, `--stop-sandboxes` on
/// `root`'s `data` and `config` ends them.
fn stop_sandboxes(root: &Path) {
    let _ = Command::new(binary("cloudcode-server"))
        .arg("--stop-sandboxes")
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--config-dir")
        .arg(root.join("config"))
        .output();
}

/// Ends the server the TUI started, then its sandboxes.
struct Detached(PathBuf);

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(pid) = pid_of_server(&self.0) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while cloudcode_tui::settings::alive(pid as u32) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(root) = self.0.parent() {
            stop_sandboxes(root);
        }
    }
}

#[test]
fn with_no_configuration_a_user_creates_edits_runs_and_uses_vim() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = (dir.path().join("config"), dir.path().join("data"));
    let _server = Detached(data.clone());
    let port = free_port();
    // A shell in the window, so what the terminal looks like after the TUI
    // exits can be checked too.
    let tmux = Tmux::start(120, 36, "bash --norc --noprofile");
    tmux.type_text(&format!(
        "PS1='$ ' CLOUDCODE_CONFIG_DIR={} CLOUDCODE_DATA_DIR={} CLOUDCODE_SERVER_LISTEN=127.0.0.1:{port} {}",
        config.display(),
        data.display(),
        binary("cloudcode-tui").display()
    ));
    tmux.press(&["Enter"]);
    tmux.wait_text("No projects yet. Press n to create one.");
    assert!(pid_of_server(&data).is_some(), "the TUI started a local server");

    // Create a Python project: it opens with a shell and main.py.
    tmux.press(&["n"]);
    tmux.type_text("e2e-py");
    tmux.press(&["Enter"]);
    tmux.wait_text("Language for e2e-py");
    tmux.press(&["Enter"]);
    let screen = tmux.wait_for("the IDE with main.py and a shell", |s| {
        s.contains("● connected") && s.contains("main.py saved") && s.contains("user@e2e-py")
    });
    // The shell leads its session on the terminal: job control works.
    assert!(!screen.contains("no job control"), "{screen}");

    // Edit and save: the status says saved only once it is durable.
    tmux.type_text("print(\"e2e-marker\", 6 * 7)");
    tmux.press(&["Enter"]);
    tmux.wait_text("main.py modified");
    tmux.press(&["C-s"]);
    tmux.wait_text("main.py saved");
    let stored = std::fs::read_to_string(data.join("storage/code/e2e-py/main.py")).unwrap();
    assert!(stored.starts_with("print(\"e2e-marker\", 6 * 7)\n"), "{stored}");

    // Run it: its output appears in a terminal pane of its own.
    tmux.press(&["F5"]);
    tmux.wait_for("the program's output", |s| {
        s.contains("2 run") && s.contains("e2e-marker 42") && s.contains("Listening on")
    });

    // vim in the shell: its screen, then back to the prompt.
    tmux.press(&["M-3", "M-,"]);
    tmux.wait_text("1 shell");
    tmux.type_text("vim -u NONE README.md");
    tmux.press(&["Enter"]);
    tmux.wait_for("vim's screen", |s| {
        s.contains("# Python starter") && s.contains("\"README.md\"")
    });
    tmux.type_text(":q");
    tmux.press(&["Enter"]);
    tmux.wait_for("vim gone", |s| !s.contains("\"README.md\""));

    // A file made in the terminal shows up in the tree.
    tmux.type_text("touch made-in-shell.txt");
    tmux.press(&["Enter"]);
    tmux.wait_text("made-in-shell.txt");

    // The terminal follows the window: at 160x48 (the tree keeps the 24
    // columns it got at 120) the pane is 134x16 inside.
    tmux.resize(160, 48);
    tmux.wait_for("the larger layout", |s| s.lines().count() >= 48);
    tmux.type_text("clear; stty size");
    tmux.press(&["Enter"]);
    tmux.wait_text("16 134");

    // Quit: the user's terminal is back to normal, not in raw mode.
    tmux.press(&["C-q"]);
    tmux.wait_for("the TUI gone and its screen with it", |s| {
        !s.contains("F1 help") && !s.contains("user@e2e-py")
    });
    tmux.type_text("stty -a | grep -o ' icanon' | sed s/^/mode:/");
    tmux.press(&["Enter"]);
    tmux.wait_text("mode: icanon");
}

/// A TCP proxy whose connections the test can cut, and which can refuse
/// new ones for a while: a network outage on demand.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (down_a, live_a) = (down.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down_a.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                live_a
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, down, live }
    }

    fn outage(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for stream in self.live.lock().unwrap().drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// A server the test started on `root`; ended, then its sandboxes, however
/// the test ends.
struct ServerProcess(Child, PathBuf);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(20));
        stop_sandboxes(&self.1);
    }
}

fn start_server(root: &Path) -> (ServerProcess, u16, String) {
    let port = free_port();
    let child = Command::new(binary("cloudcode-server"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--config-dir")
        .arg(root.join("config"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(root.join("config/api-token"))
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            break token.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    (ServerProcess(child, root.to_path_buf()), port, token)
}

#[test]
fn after_a_network_outage_the_terminal_resumes_and_unsaved_edits_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port, token) = start_server(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), &token).unwrap();
    runtime.block_on(api.create("e2e-net", "python")).unwrap();
    let proxy = Proxy::start(port);

    // A remote server, as a user configures one: URL and token.
    let tmux = Tmux::start(120, 36, "bash --norc --noprofile");
    tmux.type_text(&format!(
        "PS1='$ ' {} --server http://127.0.0.1:{} --token {token} --project e2e-net",
        binary("cloudcode-tui").display(),
        proxy.port
    ));
    tmux.press(&["Enter"]);
    tmux.wait_for("the project open", |s| {
        s.contains("● connected") && s.contains("user@e2e-net")
    });

    // Output that is produced while the client is away is shown once, in
    // order, when it comes back.
    tmux.press(&["M-3"]);
    tmux.wait_text("┏ 1 shell");
    // Each tick is also counted in a file, so the test can tell when the
    // loop has finished while the client was away.
    tmux.type_text("for i in 1 2 3 4 5 6; do echo tick-$i; echo $i > .ticks; sleep 0.5; done");
    tmux.press(&["Enter"]);
    tmux.wait_text("tick-1");
    proxy.outage(true);
    tmux.wait_for("the outage shown", |s| {
        s.contains("disconnected") || s.contains("reconnecting")
    });

    // Edits made offline stay in the buffer; saving says it cannot yet.
    tmux.press(&["M-2"]);
    tmux.wait_text("┏ main.py");
    tmux.type_text("# typed offline");
    tmux.press(&["C-s"]);
    tmux.wait_text("NOT SAVED");
    let ticks = dir.path().join("data/sandboxes/e2e-net/workspace/.ticks");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&ticks).ok().as_deref() != Some("6\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop never finished in the sandbox"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.outage(false);

    let screen = tmux.wait_for("reconnected with every tick", |s| {
        s.contains("● connected") && s.contains("tick-6")
    });
    for i in 1..=6 {
        assert_eq!(
            screen.matches(&format!("tick-{i}\n")).count() + screen.matches(&format!("tick-{i} ")).count(),
            1,
            "tick-{i} exactly once:\n{screen}"
        );
    }
    assert!(screen.contains("# typed offline"), "{screen}");
    tmux.press(&["C-s"]);
    tmux.wait_text("main.py saved");
    let stored = std::fs::read_to_string(dir.path().join("data/storage/code/e2e-net/main.py")).unwrap();
    assert!(stored.starts_with("# typed offline"), "{stored}");

    // Ended by a signal (a closed window, a logout), the TUI still puts the
    // terminal back as it found it.
    let status = Command::new("pkill")
        .args([
            "-TERM",
            "-f",
            &format!("cloudcode-tui --server http://127.0.0.1:{} ", proxy.port),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "the TUI process was found");
    tmux.wait_for("the TUI gone", |s| !s.contains("F1 help"));
    tmux.type_text("stty -a | grep -o ' icanon' | sed s/^/mode:/");
    tmux.press(&["Enter"]);
    tmux.wait_text("mode: icanon");

    drop(tmux);
    drop(server);
}

/// Stops a project's sandbox through the REST API, as `POST
/// /api/projects/{id}/stop` does for any client.
fn stop_project(port: u16, token: &str, id: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "POST /api/projects/{id}/stop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 2"), "stopping {id}: {response}");
}

#[test]
fn after_a_sandbox_restart_the_terminal_shows_it_ended_and_a_new_shell_works() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port, token) = start_server(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), &token).unwrap();
    runtime.block_on(api.create("e2e-restart", "python")).unwrap();

    let tmux = Tmux::start(120, 36, "bash --norc --noprofile");
    tmux.type_text(&format!(
        "PS1='$ ' {} --server http://127.0.0.1:{port} --token {token} --project e2e-restart",
        binary("cloudcode-tui").display(),
    ));
    tmux.press(&["Enter"]);
    tmux.wait_for("the project open", |s| {
        s.contains("● connected") && s.contains("user@e2e-restart")
    });
    tmux.press(&["M-3"]);
    tmux.wait_text("┏ 1 shell");
    tmux.type_text("echo before-$((40+2))");
    tmux.press(&["Enter"]);
    tmux.wait_text("before-42");

    // The sandbox restarts under the TUI: stopped, then started again by
    // the TUI's own reconnection. Its new runner numbers terminals from 1
    // again, so the old shell's id names the new shell.
    stop_project(port, &token, "e2e-restart");
    tmux.wait_for("the old terminal ended and a new shell open", |s| {
        s.contains("● connected") && s.contains("1 shell [ended]") && s.contains("2 shell")
    });
    tmux.type_text("echo after-$((40+2))");
    tmux.press(&["Enter"]);
    let screen = tmux.wait_text("after-42");
    assert!(!screen.contains("before-42"), "the new shell is drawn alone:\n{screen}");
    assert!(!screen.contains("reconnecting (try"), "no endless retries:\n{screen}");

    // The old one keeps its last screen and says why it ended.
    tmux.press(&["M-,"]);
    let screen = tmux.wait_text("this terminal ended: the sandbox restarted. F6 opens a new one");
    assert!(screen.contains("before-42"), "{screen}");
    assert!(!screen.contains("after-42"), "{screen}");

    tmux.press(&["C-q"]);
    tmux.wait_for("the TUI gone", |s| !s.contains("F1 help"));
    drop(tmux);
    drop(server);
}

/// Reads a file in a project's sandbox workspace, as its terminals see it.
fn in_sandbox(root: &Path, project: &str, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join("data/sandboxes").join(project).join("workspace").join(rel)).ok()
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_tui_syncs_a_folder_and_resolves_a_conflict_keeping_both() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port, token) = start_server(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), &token).unwrap();
    runtime.block_on(api.create("e2e-sync", "python")).unwrap();
    let folder = dir.path().join("work");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("notes.txt"), "first\n").unwrap();
    let state = dir.path().join("sync-state");

    let tmux = Tmux::start(120, 36, "bash --norc --noprofile");
    let launch = format!(
        "PS1='$ ' CLOUDCODE_SYNC_STATE_DIR={} {} --server http://127.0.0.1:{port} --token {token} --project e2e-sync --sync {}",
        state.display(),
        binary("cloudcode-tui").display(),
        folder.display()
    );
    tmux.type_text(&launch);
    tmux.press(&["Enter"]);
    tmux.wait_for("the project open and the folder watched", |s| {
        s.contains("● connected") && s.contains("⇅ watching")
    });
    // The first sync merged both: the starter came down, notes.txt went up.
    assert!(folder.join("main.py").exists());
    assert_eq!(
        in_sandbox(dir.path(), "e2e-sync", "notes.txt").as_deref(),
        Some("first\n")
    );

    // A save in the folder (by another editor) shows in the sandbox, and in
    // the IDE's tree.
    std::fs::write(folder.join("saved-here.txt"), "saved locally\n").unwrap();
    wait_until("the save in the sandbox", || {
        in_sandbox(dir.path(), "e2e-sync", "saved-here.txt").as_deref() == Some("saved locally\n")
    });
    tmux.wait_text("saved-here.txt");

    // Quit; both sides change notes.txt while no sync runs.
    tmux.press(&["C-q"]);
    tmux.wait_for("the TUI gone", |s| !s.contains("F1 help"));
    std::fs::write(folder.join("notes.txt"), "first\nmine\n").unwrap();
    let sandbox_notes = dir.path().join("data/sandboxes/e2e-sync/workspace/notes.txt");
    std::fs::write(&sandbox_notes, "first\ntheirs\n").unwrap();

    // Back: the restart reconciles against the agreed state, and finds
    // the conflict.
    tmux.type_text("clear");
    tmux.press(&["Enter"]);
    tmux.type_text(&launch);
    tmux.press(&["Enter"]);
    tmux.wait_for("the conflict in the status bar", |s| {
        s.contains("● connected") && s.contains("⚠ 1 conflict (F4)")
    });
    tmux.press(&["F4"]);
    let screen = tmux.wait_for("the conflicts view with the diff", |s| {
        s.contains("1 conflict: changed in the folder and in the sandbox") && s.contains("+ mine")
    });
    for needle in [
        "notes.txt",
        "the sandbox's version is in notes.conflict-remote-",
        "--- sandbox  notes.conflict-remote-",
        "+++ folder   notes.txt",
        "  first",
        "- theirs",
        "+ mine",
    ] {
        assert!(screen.contains(needle), "{needle} missing:\n{screen}");
    }

    // Keep both: nothing pending, both contents on both sides.
    tmux.press(&["b"]);
    tmux.wait_for("the conflict resolved", |s| {
        s.contains("No conflicts: both sides agree.") && s.contains("⇅ watching") && !s.contains("⚠")
    });
    for (path, content) in [
        ("notes.txt", "first\nmine\n"),
        ("notes.from-sandbox.txt", "first\ntheirs\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(folder.join(path)).unwrap(),
            content,
            "{path} in the folder"
        );
        wait_until(&format!("{path} in the sandbox"), || {
            in_sandbox(dir.path(), "e2e-sync", path).as_deref() == Some(content)
        });
    }
    let leftovers: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("conflict"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    tmux.press(&["Escape"]);
    tmux.wait_for("the view closed", |s| !s.contains("No conflicts"));

    tmux.press(&["C-q"]);
    tmux.wait_for("the TUI gone", |s| !s.contains("F1 help"));
    drop(tmux);
    drop(server);
}
