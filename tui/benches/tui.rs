//! cloudcode-tui's figures: launch to first frame, the render time of a
//! 200x60 IDE frame with a busy terminal pane, and keystroke-to-screen in the
//! editor and in a terminal pane (targets 100 ms, 2 ms, 16 ms).
//!
//! The launch and keystroke figures run the release binary in a real PTY
//! against a real server with sandboxes, and read its output through a
//! vt100 emulator, as the user's terminal would. Needs
//! `cargo build --release -p cloudcode-server -p cloudcode-runner` first.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudcode_proto::message::{Entry, EntryKind};
use cloudcode_proto::path::WorkspacePath;
use cloudcode_tui::api::{ApiClient, Project};
use cloudcode_tui::app::{App, Input};
use cloudcode_tui::remote::{Connection, TermPurpose, Update};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, samples: &mut [f64], target: &str) {
    let p50 = percentile(samples, 0.5);
    let p99 = percentile(samples, 0.99);
    println!(
        "{name:<44} p50 {p50:>8.3} ms   p99 {p99:>8.3} ms   (n={}, target {target})",
        samples.len()
    );
}

/// The IDE with a file open and a terminal pane that keeps receiving
/// coloured output, drawn to a real crossterm backend writing to nowhere:
/// layout, widgets, diffing and escape encoding, without a terminal's own
/// speed in the figure.
fn render_figures() {
    let mut app = App::new("http://127.0.0.1:8080".into());
    app.handle(Input::Projects(Ok(vec![Project {
        id: "bench".into(),
        language: "node-js".into(),
    }])));
    app.handle(Input::Terminal(crossterm::event::Event::Key(
        crossterm::event::KeyEvent::new(crossterm::event::KeyCode::Enter, crossterm::event::KeyModifiers::NONE),
    )));
    let session = |app: &mut App, update| app.handle(Input::Session(update));
    session(
        &mut app,
        Update::Connection(Connection::Connected {
            preview_url: "http://bench.preview.localhost:8080/".into(),
        }),
    );
    let entries: Vec<Entry> = (0..60)
        .map(|i| {
            let path = WorkspacePath::parse(&format!("file-{i:02}.js")).unwrap();
            Entry {
                name: path.as_str().to_string(),
                path,
                kind: EntryKind::File,
                size: 10,
                mtime_ms: 0,
                target: None,
                version: Some("v".into()),
            }
        })
        .collect();
    session(
        &mut app,
        Update::Listed {
            path: WorkspacePath::root(),
            result: Ok(entries),
        },
    );
    let source: String = (0..2000)
        .map(|i| format!("const value{i} = compute(\"text {i}\", {i}); // comment {i}\n"))
        .collect();
    session(
        &mut app,
        Update::Read {
            path: WorkspacePath::parse("index.js").unwrap(),
            result: Ok((source.into_bytes(), "v1".into())),
        },
    );
    session(
        &mut app,
        Update::TermOpened {
            term: 1,
            purpose: TermPurpose::Shell,
            cols: 170,
            rows: 22,
        },
    );
    // A fixed viewport: asking a sink for its size would make crossterm
    // run `tput` on every frame.
    let options = ratatui::TerminalOptions {
        viewport: ratatui::Viewport::Fixed(ratatui::layout::Rect::new(0, 0, 200, 60)),
    };
    let mut terminal = Terminal::with_options(CrosstermBackend::new(std::io::sink()), options).unwrap();
    let mut samples = Vec::new();
    for frame in 0..3000u32 {
        // A busy pane: two lines of coloured output between frames.
        let line = format!(
            "\x1b[3{}mline {frame} of output\x1b[0m with some more text to fill the row {}\r\n\x1b[1mbold {frame}\x1b[0m\r\n",
            frame % 8,
            "x".repeat((frame % 90) as usize)
        );
        session(
            &mut app,
            Update::TermOutput {
                term: 1,
                data: Bytes::from(line),
            },
        );
        let started = Instant::now();
        terminal.draw(|f| cloudcode_tui::view::draw(&mut app, f)).unwrap();
        if frame >= 100 {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    report("render 200x60 IDE frame, busy terminal", &mut samples, "<= 2 ms");
}

fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_cloudcode-tui")).with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: cargo build --release -p cloudcode-server -p cloudcode-runner",
        path.display()
    );
    path
}

struct Server {
    child: Child,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(20));
        // Sandboxes outlive their server: end them before the directory goes.
        let _ = Command::new(binary("cloudcode-server"))
            .arg("--stop-sandboxes")
            .arg("--data-dir")
            .arg(self._dir.path().join("data"))
            .arg("--config-dir")
            .arg(self._dir.path().join("config"))
            .output();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary("cloudcode-server"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config-dir")
        .arg(dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(dir.path().join("config/api-token"))
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            break token.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        token,
        _dir: dir,
    }
}

/// The TUI in a PTY, its output read into a vt100 screen.
struct Tui {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    output: mpsc::Receiver<Vec<u8>>,
    screen: vt100::Parser,
}

impl Tui {
    fn launch(server: &Server, project: Option<&str>) -> (Tui, Instant) {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 140,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(binary("cloudcode-tui"));
        command.args(["--server", &server.url, "--token", &server.token]);
        if let Some(project) = project {
            command.args(["--project", project]);
        }
        command.env("TERM", "xterm-256color");
        let started = Instant::now();
        let child = pty.slave.spawn_command(command).unwrap();
        let mut reader = pty.master.try_clone_reader().unwrap();
        let writer = pty.master.take_writer().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        // Keep the master alive as long as the reader and writer are.
        std::mem::forget(pty.master);
        let tui = Tui {
            child,
            writer,
            output,
            screen: vt100::Parser::new(40, 140, 0),
        };
        (tui, started)
    }

    fn wait_for(&mut self, what: &str, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if check(&self.screen.screen().contents()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.screen.process(&bytes),
                Err(_) => panic!("timed out waiting for {what}:\n{}", self.screen.screen().contents()),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Types `text` one key at a time; the time from each key to the screen
    /// showing it.
    fn keystrokes(&mut self, text: &str, shown: impl Fn(&str, &str) -> bool) -> Vec<f64> {
        let mut samples = Vec::new();
        let mut typed = String::new();
        for c in text.chars() {
            typed.push(c);
            let started = Instant::now();
            self.send(c.to_string().as_bytes());
            let typed_now = typed.clone();
            self.wait_for("the key on screen", |screen| shown(screen, &typed_now));
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    render_figures();
    // For profiling the drawing alone.
    if std::env::args().any(|a| a == "--render-only") {
        return;
    }

    let server = start_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = ApiClient::new(&server.url, &server.token).unwrap();
    runtime.block_on(api.create("bench-keys", "python")).unwrap();

    let mut launch = Vec::new();
    for _ in 0..20 {
        let (mut tui, started) = Tui::launch(&server, None);
        tui.wait_for("the first frame", |s| s.contains("projects on"));
        launch.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    report("launch to first frame (server running)", &mut launch, "<= 100 ms");

    let (mut tui, _) = Tui::launch(&server, Some("bench-keys"));
    tui.wait_for("the project open", |s| {
        s.contains("● connected") && s.contains("main.py saved") && s.contains("user@bench-keys")
    });
    // The editor has the focus with the cursor at the start of main.py.
    let text = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut editor = tui.keystrokes(text, |screen, typed| {
        screen.lines().any(|l| l.contains(&format!("1 {typed}\"\"\"")))
    });
    report("keystroke to screen, editor", &mut editor, "<= 16 ms");

    // Alt-3: the shell; the key travels to the sandbox and its echo back.
    tui.send(b"\x1b3");
    std::thread::sleep(Duration::from_millis(200));
    let mut terminal = tui.keystrokes(text, |screen, typed| screen.contains(&format!("$ {typed}")));
    report(
        "keystroke to screen, terminal pane (via runner)",
        &mut terminal,
        "<= 16 ms",
    );
}
