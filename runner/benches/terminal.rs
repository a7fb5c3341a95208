//! Terminal and save benchmark: cloudcode-runner against ttyd (when
//! installed), measured by the same client in the same run, interleaved.
//!
//! `cargo bench -p cloudcode-runner --bench terminal` prints, per target:
//! keystroke echo round trip p50/p99 (300 single characters at a bash
//! prompt), output throughput (20 MB of base64), connect to first prompt
//! byte, idle RSS (and private memory), RSS with one terminal, RSS growth
//! while a client stops
//! reading for 10 s; for the runner also the save-to-durable latency of a
//! 10 KB file in local storage; and a bare PTY read loop for reference.
//!
//! Both serve the same shell the way a user meets it: bash, interactive,
//! reading the `~/.bashrc` (and `.profile`) Debian gives a new user; the
//! client is a plain WebSocket client that parses frames and nothing more,
//! as a browser's would. Server CPU (user + system time of the server
//! process, not of the shell) is read from `/proc` around the output
//! phase and the stalled-client phase, and reported per MB.
//!
//! ttyd is looked up in `CLOUDCODE_TTYD`, then
//! `/var/cache/cloudcode-ci/ttyd/ttyd.x86_64`, then PATH. Set
//! `BENCH_ROUNDS` (default 3) and `BENCH_STALL_SECS` (default 10) to change
//! the run, `BENCH_ONLY=connect` to measure connect to first prompt alone
//! (4 × as many connections a round), `BENCH_ONLY=echo` the echo alone (4 ×
//! 300 keystrokes a round), `BENCH_ONLY=output` the output alone (4 × 20 MB
//! a round), `BENCH_ONLY=upgrade` the WebSocket upgrade alone (200
//! connections a round, no terminal), `BENCH_TRACE=1` to print when each
//! connection was upgraded, had its terminal and got its first output.
//! `BENCH_BASELINE=path` adds another build of the runner to every round
//! (before and after a change, in the same run).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudcode_proto::client::RunnerClient;
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Reply, ServerMessage};
use cloudcode_proto::path::WorkspacePath;
use cloudcode_proto::token::{Claims, TokenIssuer, unix_now};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Interactive bash; its rc files come from the home each server gets.
const SHELL: &[&str] = &["/bin/bash"];
const ECHO_KEYS: usize = 300;
const CONNECTS_PER_ROUND: usize = 15;
/// WebSocket upgrades a round with `BENCH_ONLY=upgrade`.
const UPGRADES_PER_ROUND: usize = 200;
const OUTPUT_SOURCE_BYTES: usize = 15 * 1024 * 1024; // base64: 20.2 MB of output

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Runner,
    Ttyd,
}

struct Server {
    kind: Kind,
    /// How the figures name it: runner, baseline or ttyd.
    name: &'static str,
    child: Child,
    url: String,
    token: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Server {
    fn start_runner() -> Self {
        Self::start_runner_binary(Path::new(env!("CARGO_BIN_EXE_cloudcode-runner")), "runner")
    }

    fn start_runner_binary(exe: &Path, name: &'static str) -> Self {
        let workspace = tempfile::tempdir().unwrap();
        let storage = tempfile::tempdir().unwrap();
        let home = user_home();
        let issuer = TokenIssuer::generate().unwrap();
        let mut child = Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--project", "bench"])
            .args(["--token-public-key", &issuer.verifier().public_base64()])
            .arg("--workspace")
            .arg(workspace.path())
            .args(["--storage", "local", "--storage-dir"])
            .arg(storage.path())
            .arg("--home")
            .arg(home.path())
            .args(["--shell", &SHELL.join(" ")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the runner");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
        let token = issuer.issue(&Claims {
            project: "bench".into(),
            exp: unix_now() + 3600,
        });
        Self {
            kind: Kind::Runner,
            name,
            child,
            url: format!("ws://{addr}/v1/ws"),
            token,
            _dirs: vec![workspace, storage, home],
        }
    }

    fn start_ttyd(binary: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let home = user_home();
        let child = Command::new(binary)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-W"])
            .args(SHELL)
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ttyd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ttyd did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            kind: Kind::Ttyd,
            name: "ttyd",
            child,
            url: format!("ws://127.0.0.1:{port}/ws"),
            token: String::new(),
            _dirs: vec![home],
        }
    }

    /// User and system CPU seconds the server process has used so far.
    fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Memory the process does not share with others (private pages, file
    /// or anonymous): what each additional instance costs. RSS also counts
    /// the binary's code pages, which every runner on a host shares.
    fn private_kib(&self) -> u64 {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id())).unwrap_or_default();
        let field = |name: &str| -> u64 {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        field("Private_Dirty:") + field("Private_Clean:")
    }

    /// A new WebSocket connection, as each server's own page opens it.
    async fn upgrade(&self) -> Socket {
        let mut request = self.url.as_str().into_client_request().unwrap();
        match self.kind {
            Kind::Runner => {
                request
                    .headers_mut()
                    .insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
            }
            Kind::Ttyd => {
                request
                    .headers_mut()
                    .insert("sec-websocket-protocol", "tty".parse().unwrap());
            }
        }
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .expect("connect");
        socket
    }

    /// Connects and opens a terminal; returns the socket once the first
    /// output byte (the prompt) arrived, and when each step was done.
    async fn open_terminal(&self) -> (Terminal, Opened) {
        let started = Instant::now();
        let mut socket = self.upgrade().await;
        let t_ws = started.elapsed();
        match self.kind {
            Kind::Runner => {
                let open = r#"{"id":1,"op":"term_open","cols":80,"rows":24}"#;
                socket.send(Message::Text(open.into())).await.unwrap();
            }
            Kind::Ttyd => {
                let hello = r#"{"AuthToken":"","columns":80,"rows":24}"#;
                socket
                    .send(Message::Binary(Bytes::from_static(hello.as_bytes())))
                    .await
                    .unwrap();
            }
        }
        let mut term = 0;
        if self.kind == Kind::Runner {
            // The answer names the terminal; it precedes any output.
            while term == 0 {
                if let Some(Ok(Message::Text(text))) = socket.next().await
                    && let Ok(ServerMessage::Response {
                        result: Reply::TermOpened { term: id },
                        ..
                    }) = serde_json::from_str(text.as_str())
                {
                    term = id;
                }
            }
        }
        let t_opened = started.elapsed();
        let mut terminal = Terminal {
            kind: self.kind,
            socket,
            term,
        };
        let first = terminal.next_output().await;
        let took = started.elapsed();
        assert!(!first.is_empty());
        if std::env::var("BENCH_TRACE").is_ok() {
            eprintln!(
                "{}: upgraded {t_ws:?}, terminal {t_opened:?}, first output {took:?}",
                self.name
            );
        }
        let opened = Opened {
            upgraded: t_ws,
            answered: t_opened,
            first_output: took,
        };
        (terminal, opened)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        cloudcode_proto::testing::terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// Since the connection began: the WebSocket upgrade done, the terminal
/// open answered (ttyd answers nothing: its hello sent), its first output
/// received.
#[derive(Clone, Copy)]
struct Opened {
    upgraded: Duration,
    answered: Duration,
    first_output: Duration,
}

struct Terminal {
    kind: Kind,
    socket: Socket,
    term: u32,
}

impl Terminal {
    async fn send(&mut self, data: &[u8]) {
        let message = match self.kind {
            Kind::Runner => Message::Binary(
                Frame::TermInput {
                    term: self.term,
                    data: Bytes::copy_from_slice(data),
                }
                .encode(),
            ),
            Kind::Ttyd => {
                let mut framed = Vec::with_capacity(data.len() + 1);
                framed.push(b'0');
                framed.extend_from_slice(data);
                Message::Binary(Bytes::from(framed))
            }
        };
        self.socket.send(message).await.unwrap();
    }

    /// For the stalled-client phase, where ttyd drops the connection.
    async fn send_lenient(&mut self, data: &[u8]) {
        let framed = match self.kind {
            Kind::Runner => Frame::TermInput {
                term: self.term,
                data: Bytes::copy_from_slice(data),
            }
            .encode(),
            Kind::Ttyd => Bytes::from([&b"0"[..], data].concat()),
        };
        let _ = self.socket.send(Message::Binary(framed)).await;
    }

    /// The next chunk of terminal output, skipping control messages.
    async fn next_output(&mut self) -> Vec<u8> {
        loop {
            let message = self
                .socket
                .next()
                .await
                .expect("connection closed")
                .expect("read error");
            let Message::Binary(data) = message else { continue };
            match self.kind {
                Kind::Runner => {
                    if let Ok(Frame::TermOutput { data, .. }) = Frame::decode(data) {
                        return data.to_vec();
                    }
                }
                Kind::Ttyd => {
                    if data.first() == Some(&b'0') {
                        return data[1..].to_vec();
                    }
                }
            }
        }
    }

    /// Reads output until `needle` appears; returns the bytes read.
    async fn read_until(&mut self, needle: &[u8]) -> usize {
        let mut total = 0;
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let chunk = self.next_output().await;
            if std::env::var("BENCH_DEBUG").is_ok() {
                eprintln!("{:?}", String::from_utf8_lossy(&chunk[..chunk.len().min(200)]));
            }
            total += chunk.len();
            tail.extend_from_slice(&chunk);
            if tail.windows(needle.len()).any(|w| w == needle) {
                return total;
            }
            let keep = tail.len().saturating_sub(needle.len());
            tail.drain(..keep);
        }
    }

    async fn ready(&mut self, tag: &str) {
        self.send(format!("echo READY-{tag}-$((6*7))\r").as_bytes()).await;
        self.read_until(format!("READY-{tag}-42").as_bytes()).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    percentile(values, 50.0)
}

/// A new user's home: Debian's skeleton rc files (or, where there is none,
/// one like it: a coloured prompt, history settings, aliases).
fn user_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let mut copied = false;
    for name in [".bashrc", ".profile"] {
        if std::fs::copy(Path::new("/etc/skel").join(name), home.path().join(name)).is_ok() {
            copied = true;
        }
    }
    if !copied {
        std::fs::write(
            home.path().join(".bashrc"),
            "HISTCONTROL=ignoreboth\nshopt -s histappend checkwinsize\nHISTSIZE=1000\n\
             PS1='\\[\\033[01;32m\\]\\u@\\h\\[\\033[00m\\]:\\[\\033[01;34m\\]\\w\\[\\033[00m\\]\\$ '\n\
             alias ls='ls --color=auto'\nalias grep='grep --color=auto'\n",
        )
        .unwrap();
    }
    home
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else { return 0.0 };
    // Fields from the third (state) on: utime is the 14th, stime the 15th.
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / per_sec
}

/// Bytes written so far by the `base64` processes among `ancestor`'s
/// descendants: what the shell produced, read or not.
fn base64_bytes_written(ancestor: u32) -> u64 {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
    };
    let descends = |mut pid: u32| {
        while let Some(up) = parent(pid).filter(|p| *p > 1) {
            if up == ancestor {
                return true;
            }
            pid = up;
        }
        false
    };
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let is_base64 = std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "base64");
        if is_base64 && descends(pid) {
            let io = std::fs::read_to_string(entry.path().join("io")).unwrap_or_default();
            total += io
                .lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

#[derive(Default, Clone)]
struct Figures {
    echo_p50_ms: Vec<f64>,
    echo_p99_ms: Vec<f64>,
    output_mb_s: Vec<f64>,
    /// Server CPU milliseconds per MB of output delivered to the client.
    output_cpu_ms_per_mb: Vec<f64>,
    /// Server CPU seconds during the stall, and per MB the shell produced.
    stall_cpu_s: Vec<f64>,
    stall_cpu_ms_per_mb: Vec<f64>,
    connect_ms: Vec<f64>,
    upgraded_ms: Vec<f64>,
    answered_ms: Vec<f64>,
    idle_rss_mib: Vec<f64>,
    idle_private_mib: Vec<f64>,
    one_terminal_rss_mib: Vec<f64>,
    stalled_growth_mib: Vec<f64>,
}

impl Figures {
    fn record_connect(&mut self, opened: Opened) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.connect_ms.push(ms(opened.first_output));
        self.upgraded_ms.push(ms(opened.upgraded));
        self.answered_ms.push(ms(opened.answered));
    }
}

async fn echo_round_trips(terminal: &mut Terminal) -> (f64, f64) {
    let mut samples = Vec::with_capacity(ECHO_KEYS);
    for i in 0..ECHO_KEYS {
        let key = [b'a' + (i % 26) as u8];
        let started = Instant::now();
        terminal.send(&key).await;
        loop {
            let out = terminal.next_output().await;
            if out.contains(&key[0]) {
                break;
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // Clear the typed line.
    terminal.send(b"\x15").await;
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

/// MB/s, and the server's CPU milliseconds per MB.
async fn output_throughput(server: &Server, terminal: &mut Terminal, source: &Path) -> (f64, f64) {
    terminal.ready("out").await;
    let cpu = server.cpu_secs();
    let started = Instant::now();
    terminal
        .send(format!("base64 {}; echo DONE-$((6*7))\r", source.display()).as_bytes())
        .await;
    let bytes = terminal.read_until(b"DONE-42").await;
    let mb = bytes as f64 / 1e6;
    let cpu = server.cpu_secs() - cpu;
    (mb / started.elapsed().as_secs_f64(), cpu * 1000.0 / mb)
}

/// Peak RSS growth (MiB), server CPU seconds during the stall, and those
/// per MB the shell produced meanwhile.
async fn stalled_client(server: &Server, stall: Duration) -> (f64, f64, f64) {
    let (mut terminal, _) = server.open_terminal().await;
    terminal.ready("stall").await;
    let before = server.rss_kib();
    let cpu = server.cpu_secs();
    terminal
        .send(b"while :; do cat /dev/urandom | base64 -w 0; done\r")
        .await;
    let mut peak = before;
    let until = Instant::now() + stall;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.rss_kib());
    }
    let produced_mb = base64_bytes_written(server.child.id()) as f64 / 1e6;
    let cpu = server.cpu_secs() - cpu;
    // Interrupt and drain, so the next measurement starts clean.
    terminal.send_lenient(b"\x03").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    terminal.send_lenient(b"\x03").await;
    drop(terminal);
    (
        peak.saturating_sub(before) as f64 / 1024.0,
        cpu,
        // A server that pauses the program (ttyd does) produced next to
        // nothing: no per-MB figure then.
        if produced_mb < 1.0 {
            f64::NAN
        } else {
            cpu * 1000.0 / produced_mb
        },
    )
}

fn only(phase: &str) -> bool {
    std::env::var("BENCH_ONLY").is_ok_and(|v| v == phase)
}

fn only_connect() -> bool {
    only("connect")
}

/// Connections, each to a new shell, so the connect figure is a median of
/// many rather than of one per round.
async fn connects(server: &Server, count: usize, figures: &mut Figures) {
    for _ in 0..count {
        let (mut terminal, opened) = server.open_terminal().await;
        figures.record_connect(opened);
        terminal.send(b"exit\r").await;
        drop(terminal);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure(server: &Server, source: &Path, stall: Duration, figures: &mut Figures) {
    if only("upgrade") {
        for _ in 0..UPGRADES_PER_ROUND {
            let started = Instant::now();
            let socket = server.upgrade().await;
            figures.upgraded_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            drop(socket);
        }
        return;
    }
    if only_connect() {
        connects(server, 4 * (CONNECTS_PER_ROUND + 1), figures).await;
        return;
    }
    if only("output") {
        let (mut terminal, _) = server.open_terminal().await;
        for _ in 0..4 {
            let (mb_s, cpu_per_mb) = output_throughput(server, &mut terminal, source).await;
            figures.output_mb_s.push(mb_s);
            figures.output_cpu_ms_per_mb.push(cpu_per_mb);
        }
        return;
    }
    if only("echo") {
        let (mut terminal, _) = server.open_terminal().await;
        terminal.ready("echo").await;
        for _ in 0..4 {
            let (p50, p99) = echo_round_trips(&mut terminal).await;
            figures.echo_p50_ms.push(p50);
            figures.echo_p99_ms.push(p99);
        }
        return;
    }
    figures.idle_rss_mib.push(server.rss_kib() as f64 / 1024.0);
    figures.idle_private_mib.push(server.private_kib() as f64 / 1024.0);
    eprintln!("  {}: connect", server.name);
    let (mut terminal, opened) = server.open_terminal().await;
    figures.record_connect(opened);
    terminal.ready("echo").await;
    figures.one_terminal_rss_mib.push(server.rss_kib() as f64 / 1024.0);
    eprintln!("  {}: echo", server.name);
    let (p50, p99) = echo_round_trips(&mut terminal).await;
    eprintln!("  {}: output", server.name);
    figures.echo_p50_ms.push(p50);
    figures.echo_p99_ms.push(p99);
    let (mb_s, cpu_per_mb) = output_throughput(server, &mut terminal, source).await;
    figures.output_mb_s.push(mb_s);
    figures.output_cpu_ms_per_mb.push(cpu_per_mb);
    terminal.send(b"exit\r").await;
    drop(terminal);
    eprintln!("  {}: connects", server.name);
    connects(server, CONNECTS_PER_ROUND, figures).await;
    eprintln!("  {}: stalled client", server.name);
    let (growth, cpu, cpu_per_mb) = stalled_client(server, stall).await;
    figures.stalled_growth_mib.push(growth);
    figures.stall_cpu_s.push(cpu);
    figures.stall_cpu_ms_per_mb.push(cpu_per_mb);
}

/// The PTY itself, read in 64 KiB chunks: the ceiling for any server.
fn bare_pty_mb_s(source: &Path) -> f64 {
    use portable_pty::{CommandBuilder, PtySize, native_pty_system};
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new("base64");
    cmd.arg(source);
    let started = Instant::now();
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    let _ = child.wait();
    total as f64 / 1e6 / started.elapsed().as_secs_f64()
}

async fn save_to_durable(server: &Server) -> (f64, f64) {
    let client = RunnerClient::connect(&server.url, &server.token).await.unwrap();
    let data = vec![b'x'; 10 * 1024];
    let path = WorkspacePath::parse("bench-save.txt").unwrap();
    let mut samples = Vec::new();
    for i in 0..200 {
        let mut body = data.clone();
        body[0] = b'a' + (i % 26) as u8;
        let started = Instant::now();
        client.write_file(&path, &body, None).await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

fn find_ttyd() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CLOUDCODE_TTYD") {
        return Some(PathBuf::from(path));
    }
    let cached = PathBuf::from("/var/cache/cloudcode-ci/ttyd/ttyd.x86_64");
    if cached.exists() {
        return Some(cached);
    }
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| PathBuf::from(d).join("ttyd"))
        .find(|p| p.exists())
}

fn report(name: &str, figures: &Figures) {
    let m = |v: &Vec<f64>| median(&mut v.clone());
    println!(
        "{name:<8} echo p50 {:>6.3} ms  p99 {:>6.3} ms | output {:>6.1} MB/s, CPU {:>5.1} ms/MB | connect->prompt {:>6.2} ms | idle RSS {:>6.1} MiB (private {:.1}) | one terminal {:>6.1} MiB | stalled client +{:.1} MiB, CPU {:.2} s = {:.1} ms/MB produced",
        m(&figures.echo_p50_ms),
        m(&figures.echo_p99_ms),
        m(&figures.output_mb_s),
        m(&figures.output_cpu_ms_per_mb),
        m(&figures.connect_ms),
        m(&figures.idle_rss_mib),
        m(&figures.idle_private_mib),
        m(&figures.one_terminal_rss_mib),
        m(&figures.stalled_growth_mib),
        m(&figures.stall_cpu_s),
        m(&figures.stall_cpu_ms_per_mb),
    );
    let all = |v: &Vec<f64>| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ");
    println!(
        "{:<8} per round: output {} MB/s, CPU {} ms/MB",
        "",
        all(&figures.output_mb_s),
        all(&figures.output_cpu_ms_per_mb),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let stall = Duration::from_secs(
        std::env::var("BENCH_STALL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    let mut random = vec![0u8; OUTPUT_SOURCE_BYTES];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    std::fs::write(&source, &random).unwrap();

    let ttyd = find_ttyd();
    if ttyd.is_none() {
        println!("ttyd not found (see README): measuring the runner alone");
    }
    let baseline = std::env::var_os("BENCH_BASELINE").map(PathBuf::from);
    let mut runner_figures = Figures::default();
    let mut baseline_figures = Figures::default();
    let mut ttyd_figures = Figures::default();
    let mut bare = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        {
            let server = Server::start_runner();
            tokio::time::sleep(Duration::from_millis(300)).await;
            measure(&server, &source, stall, &mut runner_figures).await;
        }
        if let Some(exe) = &baseline {
            let server = Server::start_runner_binary(exe, "baseline");
            tokio::time::sleep(Duration::from_millis(300)).await;
            measure(&server, &source, stall, &mut baseline_figures).await;
        }
        if let Some(binary) = &ttyd {
            let server = Server::start_ttyd(binary);
            tokio::time::sleep(Duration::from_millis(300)).await;
            measure(&server, &source, stall, &mut ttyd_figures).await;
        }
        if only_connect() || only("echo") || only("output") || only("upgrade") {
            continue;
        }
        bare.push(
            tokio::task::spawn_blocking({
                let source = source.clone();
                move || bare_pty_mb_s(&source)
            })
            .await
            .unwrap(),
        );
    }
    if only_connect() || only("echo") || only("output") || only("upgrade") {
        let (what, pick): (&str, fn(&mut Figures) -> String) = if only("upgrade") {
            ("WebSocket upgrade of 200 connections", |f| {
                format!(
                    "{:.3} ms (p90 {:.3})",
                    median(&mut f.upgraded_ms),
                    percentile(&f.upgraded_ms, 90.0)
                )
            })
        } else if only_connect() {
            ("connect to first prompt (upgraded, terminal answered)", |f| {
                format!(
                    "{:.2} ms ({:.3}, {:.3})",
                    median(&mut f.connect_ms),
                    median(&mut f.upgraded_ms),
                    median(&mut f.answered_ms)
                )
            })
        } else if only("output") {
            ("output of 4 x 20 MB", |f| {
                let all = f.output_mb_s.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>();
                format!(
                    "{:.1} MB/s, CPU {:.1} ms/MB (per run: {} MB/s)",
                    median(&mut f.output_mb_s),
                    median(&mut f.output_cpu_ms_per_mb),
                    all.join(" / ")
                )
            })
        } else {
            ("echo p50 / p99 of 4 x 300 keystrokes", |f| {
                format!(
                    "{:.3} / {:.3} ms",
                    median(&mut f.echo_p50_ms),
                    median(&mut f.echo_p99_ms)
                )
            })
        };
        println!("\n{rounds} interleaved rounds, {what}, medians:");
        println!("runner {}", pick(&mut runner_figures));
        if baseline.is_some() {
            println!("baseline {}", pick(&mut baseline_figures));
        }
        if ttyd.is_some() {
            println!("ttyd   {}", pick(&mut ttyd_figures));
        }
        return;
    }
    let server = Server::start_runner();
    let (save_p50, save_p99) = save_to_durable(&server).await;
    drop(server);

    println!(
        "\n{rounds} interleaved rounds, medians; 300 keystrokes, {:.1} MB of base64 output",
        OUTPUT_SOURCE_BYTES as f64 * 4.0 / 3.0 / 1e6
    );
    report("runner", &runner_figures);
    if baseline.is_some() {
        report("baseline", &baseline_figures);
    }
    if ttyd.is_some() {
        report("ttyd", &ttyd_figures);
    }
    println!("bare pty read loop {:.1} MB/s", median(&mut bare));
    println!("runner save of 10 KB durable in local storage: p50 {save_p50:.3} ms  p99 {save_p99:.3} ms");
}
