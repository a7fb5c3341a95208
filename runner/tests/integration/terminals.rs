//! Terminals over a real WebSocket with real PTYs, including the seed's
//! defects: leaked shells, secrets in the shell, no backpressure.

use std::time::Duration;

use cloudcode_proto::client::{ClientError, Incoming, RunnerClient};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{ErrorCode, Op, Reply, TermId, TermPurpose};
use futures_util::FutureExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn echo_resize_and_exit_status() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "pwd", "cwd").await;
    assert!(
        screen
            .text()
            .contains(runner.workspace.canonicalize().unwrap().to_str().unwrap()),
        "{}",
        screen.text()
    );
    run_in_terminal(&mut client, term, &mut screen, "echo $TERM", "term").await;
    assert!(screen.text().contains("xterm-256color"));

    client
        .request(Op::TermResize {
            term,
            cols: 91,
            rows: 17,
        })
        .await
        .unwrap();
    run_in_terminal(&mut client, term, &mut screen, "stty size", "size").await;
    assert!(screen.text().contains("17 91"), "{}", screen.text());

    client.send_input(term, b"exit 3\r").unwrap();
    read_until(&mut client, term, &mut screen, |s| s.exited.is_some()).await;
    assert_eq!(screen.exited, Some(Some(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shell_leads_its_terminal_so_ctrl_c_stops_the_foreground_job() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    // A controlling terminal: `tty` names it and the shell owns its
    // foreground process group.
    run_in_terminal(&mut client, term, &mut screen, "tty; ps -o tpgid= -p $$", "tty").await;
    assert!(screen.text().contains("/dev/pts/"), "{}", screen.text());
    assert!(!screen.text().contains("no job control"), "{}", screen.text());
    let sleep = unique_sleep_arg();
    client.send_input(term, format!("sleep {sleep}\r").as_bytes()).unwrap();
    eventually("the foreground job started", || process_running(&sleep)).await;
    client.send_input(term, b"\x03").unwrap();
    eventually("^C ended the job", || !process_running(&sleep)).await;
    // The job, not the shell: it takes the next command.
    run_in_terminal(&mut client, term, &mut screen, "echo alive", "alive").await;
    assert_eq!(screen.exited, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shell_environment_holds_no_secrets() {
    let runner = TestRunner::start_with(Options {
        env: vec![
            ("AWS_SECRET_ACCESS_KEY".into(), "aws-secret-value".into()),
            ("CLOUDCODE_S3_SECRET_ACCESS_KEY".into(), "s3-secret-value".into()),
            ("SOME_HOST_VARIABLE".into(), "host-only-value".into()),
        ],
        args: vec!["--env".into(), "PROJECT_VAR=visible-value".into()],
        ..Default::default()
    });
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "env", "env").await;
    let text = screen.text();
    assert!(text.contains("PROJECT_VAR=visible-value"), "{text}");
    assert!(text.contains("TERM=xterm-256color"));
    for secret in [
        "aws-secret-value",
        "s3-secret-value",
        "host-only-value",
        "TOKEN_PUBLIC_KEY",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the shell");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_terminals_and_several_clients_on_one() {
    let runner = TestRunner::start();
    let mut a = runner.client().await;
    let t1 = open_terminal(&a).await;
    let t2 = open_terminal(&a).await;
    assert_ne!(t1, t2);
    let mut b = runner.client().await;
    b.request(Op::TermAttach {
        term: t1,
        from_seq: 0,
        flow_window: None,
    })
    .await
    .unwrap();
    let (mut sa, mut sb) = (Screen::default(), Screen::default());
    run_in_terminal(&mut a, t1, &mut sa, "echo shared", "one").await;
    // The second client sees the same output, from the start.
    read_until(&mut b, t1, &mut sb, |s| s.text().contains("one-42")).await;
    // Input from either client reaches the terminal.
    run_in_terminal(&mut b, t1, &mut sb, "echo from-b", "two").await;
    read_until(&mut a, t1, &mut sa, |s| s.text().contains("two-42")).await;
    let Reply::Terms { terms } = a.request(Op::TermList).await.unwrap() else {
        panic!()
    };
    assert_eq!(terms.len(), 2);
    assert_eq!(terms.iter().find(|t| t.term == t1).unwrap().attached_clients, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnecting_client_gets_exactly_what_it_missed() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "echo before", "first").await;
    let resume_at = screen.next_seq;
    client
        .send_input(term, b"for i in $(seq 1 200); do echo missed-$i; done\r")
        .unwrap();
    client.close();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut again = runner.client().await;
    again
        .request(Op::TermAttach {
            term,
            from_seq: resume_at,
            flow_window: None,
        })
        .await
        .unwrap();
    let mut resumed = Screen {
        next_seq: resume_at,
        ..Default::default()
    };
    run_in_terminal(&mut again, term, &mut resumed, "echo after", "second").await;
    let text = resumed.text();
    assert_eq!(resumed.snapshots, 0);
    assert!(!text.contains("first-42"), "replayed bytes it already had");
    for i in [1, 100, 200] {
        assert!(text.contains(&format!("missed-{i}\r\n")), "lost missed-{i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_too_far_behind_gets_a_screen_snapshot() {
    let runner = TestRunner::start_with(Options {
        args: vec!["--scrollback-bytes".into(), "4096".into()],
        ..Default::default()
    });
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "seq 1 5000 > /dev/null", "quiet").await;
    client
        .send_input(term, b"clear; echo TOP-LINE; seq 1 3000; echo last-line\r")
        .unwrap();
    client.close();
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut again = runner.client().await;
    again.term_attach(term, 0, None).await.unwrap();
    let mut resumed = Screen::default();
    read_until(&mut again, term, &mut resumed, |s| {
        s.snapshots == 1 && s.text().contains("last-line")
    })
    .await;
    let mut parser = vt100::Parser::new(40, 120, 0);
    parser.process(&resumed.bytes);
    let contents = parser.screen().contents();
    assert!(
        contents.contains("last-line") && contents.contains("2999"),
        "{contents}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn terminals_outlive_clients_but_closing_leaves_no_process_behind() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    // A background job in its own process group, as job control makes it.
    let sleep = unique_sleep_arg();
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        &format!("set -m; sleep {sleep} & disown"),
        "bg",
    )
    .await;
    eventually("the background job started", || process_running(&sleep)).await;
    client.close();
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process_running(&sleep), "the terminal should outlive its client");

    let client = runner.client().await;
    let Reply::Terms { terms } = client.request(Op::TermList).await.unwrap() else {
        panic!()
    };
    assert_eq!(terms.len(), 1);
    client.request(Op::TermClose { term }).await.unwrap();
    eventually("every process of the terminal gone", || !process_running(&sleep)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_terminals_are_reaped() {
    let runner = TestRunner::start_with(Options {
        args: vec!["--terminal-idle-secs".into(), "1".into()],
        ..Default::default()
    });
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    let sleep = unique_sleep_arg();
    run_in_terminal(&mut client, term, &mut screen, &format!("sleep {sleep} & disown"), "bg").await;
    drop(client);
    let client = runner.client().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let Reply::Terms { terms } = client.request(Op::TermList).await.unwrap() else {
            panic!()
        };
        if terms.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "idle terminal never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("reaped terminal's processes gone", || !process_running(&sleep)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_cannot_grow_memory() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "true", "ready").await;

    // A raw socket that attaches and then never reads again.
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = runner.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", runner.token()).parse().unwrap());
    let (mut stalled, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let attach = format!(r#"{{"id":1,"op":"term_attach","term":{term},"from_seq":0}}"#);
    stalled
        .send(tokio_tungstenite::tungstenite::Message::Text(attach.into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = runner.rss_kib();

    // 20 MB of output while one client reads and the other does not.
    run_in_terminal(
        &mut client,
        term,
        &mut screen,
        "head -c 15000000 /dev/zero | base64 -w 200",
        "flood",
    )
    .await;
    let after = runner.rss_kib();
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    assert!(
        growth_mib < 16.0,
        "runner grew {growth_mib:.1} MiB with a stalled client"
    );
    // The reading client is still served.
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
    drop(stalled);
}

/// The Run terminal is one terminal for every client: its purpose, given by
/// the client that opened it, is in every client's `term_list`.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_s_purpose_is_told_to_every_client() {
    let runner = TestRunner::start();
    let opener = runner.client().await;
    let Reply::TermOpened { term: run } = opener
        .request(Op::TermOpen {
            cols: 80,
            rows: 24,
            command: Some(vec!["sleep".into(), unique_sleep_arg()]),
            flow_window: None,
            purpose: Some(TermPurpose::Run),
        })
        .await
        .unwrap()
    else {
        panic!("expected term_opened")
    };
    let shell = open_terminal(&opener).await;
    let other = runner.client().await;
    let Reply::Terms { terms } = other.request(Op::TermList).await.unwrap() else {
        panic!("expected terms")
    };
    let purpose = |term| terms.iter().find(|t| t.term == term).map(|t| t.purpose);
    assert_eq!(purpose(run), Some(TermPurpose::Run));
    assert_eq!(purpose(shell), Some(TermPurpose::Shell), "absent in term_open: a shell");
}

/// A run ends every live run, whichever client started it, and two runs
/// started at the same instant end as one: two servers on one port would
/// fight.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_run_ends_the_live_ones_even_two_at_once() {
    let runner = TestRunner::start();
    let (first, second) = (runner.client().await, runner.client().await);
    fn run_op(arg: String) -> Op {
        Op::TermOpen {
            cols: 80,
            rows: 24,
            command: Some(vec!["sleep".into(), arg]),
            flow_window: None,
            purpose: Some(TermPurpose::Run),
        }
    }
    let (a, b) = (unique_sleep_arg(), unique_sleep_arg());
    let (one, two) = tokio::join!(first.request(run_op(a.clone())), second.request(run_op(b.clone())));
    assert!(matches!(one, Ok(Reply::TermOpened { .. })) && matches!(two, Ok(Reply::TermOpened { .. })));
    let shell = open_terminal(&first).await;
    let Reply::Terms { terms } = first.request(Op::TermList).await.unwrap() else {
        panic!("expected terms")
    };
    let runs: Vec<_> = terms.iter().filter(|t| t.purpose == TermPurpose::Run).collect();
    assert_eq!(runs.len(), 1, "{terms:?}");
    assert!(terms.iter().any(|t| t.term == shell), "a shell is no run: {terms:?}");
    eventually("one of the two runs ended", || {
        process_running(&a) != process_running(&b)
    })
    .await;

    // A later run ends that one too.
    let c = unique_sleep_arg();
    second.request(run_op(c.clone())).await.unwrap();
    eventually("the earlier runs ended", || {
        !process_running(&a) && !process_running(&b)
    })
    .await;
    // Opened means spawned; its exec may be a moment behind.
    eventually("the new run running", || process_running(&c)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_terminals_get_a_clear_error() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let refused = client.term_attach(777, 0, None).await;
    assert!(format!("{refused:?}").contains("UnknownTerminal"));
    client.send_input(777, b"ls\r").unwrap();
    match next_incoming(&mut client).await {
        Incoming::Error { code, .. } => assert_eq!(code, cloudcode_proto::message::ErrorCode::UnknownTerminal),
        other => panic!("{other:?}"),
    }
    let refused = client
        .request(Op::TermOpen {
            cols: 0,
            rows: 10,
            command: None,
            flow_window: None,
            purpose: None,
        })
        .await;
    assert!(refused.is_err());
    let refused = client
        .request(Op::TermOpen {
            cols: 80,
            rows: 24,
            command: Some(vec!["/no/such/program".into()]),
            flow_window: None,
            purpose: None,
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}

// Flow control (`flow_window`, `TermAck`): a client that reads its socket
// whatever its emulator manages (a browser) is held to a window instead.

/// A client attached to one terminal with a flow window, counting what it
/// receives the way PROTOCOL.md says the runner does, and failing the test
/// the moment the runner sends past the window.
struct Windowed {
    client: RunnerClient,
    term: TermId,
    window: u64,
    /// The last ack sent.
    acked: u64,
    /// Frames with bytes not yet acknowledged: (seq, len, is a snapshot).
    unacked: Vec<(u64, u64, bool)>,
    /// Bytes of every frame, snapshots included.
    received: u64,
    next_seq: u64,
    /// Output, one run per stretch between snapshots: (first seq, bytes).
    runs: Vec<(u64, Vec<u8>)>,
    /// Snapshot frames: (seq, bytes).
    snapshots: Vec<(u64, Vec<u8>)>,
    /// The last few KiB of what arrived, to look for markers in.
    tail: Vec<u8>,
    errors: Vec<(Option<u64>, ErrorCode)>,
    /// When set, every frame is parsed here as it arrives, as a browser's
    /// emulator would before acknowledging it.
    emulator: Option<vt100::Parser>,
}

impl Windowed {
    fn new(client: RunnerClient, term: TermId, window: u32, from_seq: u64) -> Self {
        Self {
            client,
            term,
            window: u64::from(window),
            acked: from_seq,
            unacked: Vec::new(),
            received: 0,
            next_seq: from_seq,
            runs: vec![(from_seq, Vec::new())],
            snapshots: Vec::new(),
            tail: Vec::new(),
            errors: Vec::new(),
            emulator: None,
        }
    }

    /// Bytes sent to us and not acknowledged, by the protocol's rule: output
    /// at or after the ack, snapshots current after it.
    fn in_flight(&self) -> u64 {
        self.unacked
            .iter()
            .map(|&(seq, len, snapshot)| match snapshot {
                true if seq > self.acked => len,
                true => 0,
                false => (seq + len).saturating_sub(seq.max(self.acked)),
            })
            .sum()
    }

    fn take(&mut self, incoming: Incoming) {
        let (seq, data, snapshot) = match incoming {
            Incoming::Frame(Frame::TermOutput { term, seq, data }) if term == self.term => (seq, data, false),
            Incoming::Frame(Frame::TermSnapshot { term, seq, data }) if term == self.term => (seq, data, true),
            Incoming::Error { id, code, .. } => return self.errors.push((id, code)),
            Incoming::Closed(frame) => panic!("connection closed: {frame:?}"),
            _ => return,
        };
        let before = self.in_flight();
        let len = data.len() as u64;
        if snapshot {
            self.next_seq = seq;
            self.snapshots.push((seq, data.to_vec()));
            self.runs.push((seq, Vec::new()));
        } else {
            assert_eq!(seq, self.next_seq, "gap or overlap in terminal output");
            self.next_seq = seq + len;
            if let Some((_, run)) = self.runs.last_mut() {
                run.extend_from_slice(&data);
            }
        }
        self.unacked.push((seq, len, snapshot));
        self.received += len;
        let after = self.in_flight();
        // A snapshot cannot be split: one that does not fit may go once at
        // most half the window is unacknowledged.
        assert!(
            after <= self.window || (snapshot && before <= self.window / 2),
            "the runner sent {after} bytes beyond the last ack ({}), window {}",
            self.acked,
            self.window
        );
        if let Some(emulator) = &mut self.emulator {
            emulator.process(&data);
        }
        self.tail.extend_from_slice(&data);
        let excess = self.tail.len().saturating_sub(4096);
        self.tail.drain(..excess);
    }

    /// Waits for the next message of any kind.
    async fn next(&mut self) {
        let incoming = next_incoming(&mut self.client).await;
        self.take(incoming);
    }

    /// Takes whatever has already arrived, without waiting.
    fn drain(&mut self) {
        while let Some(Some(incoming)) = self.client.next_incoming().now_or_never() {
            self.take(incoming);
        }
    }

    fn ack(&mut self, seq: u64) {
        self.client.send_ack(self.term, seq).unwrap();
        self.acked = self.acked.max(seq);
        let acked = self.acked;
        self.unacked.retain(|&(s, len, snapshot)| match snapshot {
            true => s > acked,
            false => s + len > acked,
        });
    }

    fn ack_all(&mut self) {
        self.ack(self.next_seq);
    }

    /// Reads until `done`, acknowledging everything after every frame when
    /// `ack` is set.
    async fn read_until(&mut self, ack: bool, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            self.next().await;
            if ack && self.next_seq > self.acked {
                self.ack_all();
            }
        }
    }

    fn tail_contains(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.tail).contains(needle)
    }

    /// A ping's answer comes after anything the runner said about what we
    /// sent before it: errors it raised are here by then.
    async fn errors_after_round_trip(&mut self) -> Vec<(Option<u64>, ErrorCode)> {
        assert_eq!(self.client.request(Op::Ping).await.unwrap(), Reply::Pong);
        self.drain();
        std::mem::take(&mut self.errors)
    }
}

/// The prompt after a marker may still be on its way: reads until `client`
/// holds every byte the terminal has printed, once the shell is quiet.
async fn catch_up(client: &mut RunnerClient, term: TermId, screen: &mut Screen) {
    loop {
        let printed = terminal_seq(client, term).await;
        if printed == screen.next_seq {
            return;
        }
        read_until(client, term, screen, |s| s.next_seq >= printed).await;
    }
}

/// The terminal's sequence number now: everything it has printed.
async fn terminal_seq(client: &RunnerClient, term: TermId) -> u64 {
    let Reply::Terms { terms } = client.request(Op::TermList).await.unwrap() else {
        panic!("expected terms")
    };
    terms.iter().find(|t| t.term == term).expect("terminal listed").seq
}

/// Replays what a client received on a fresh emulator.
fn rendered(chunks: &[&[u8]]) -> String {
    let mut parser = vt100::Parser::new(40, 120, 0);
    for chunk in chunks {
        parser.process(chunk);
    }
    parser.screen().contents()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_client_gets_its_window_and_the_terminal_goes_on_for_the_others() {
    const WINDOW: u32 = 16 * 1024;
    let runner = TestRunner::start();
    let slow = runner.client().await;
    let term = slow.term_open(120, 40, None, Some(WINDOW)).await.unwrap();
    let mut slow = Windowed::new(slow, term, WINDOW, 0);
    let mut fast = runner.client().await;
    fast.term_attach(term, 0, None).await.unwrap();
    let mut everything = Screen::default();
    // 5 MB, five times the default scrollback: the slow client falls out.
    // In 100 kB steps the reading client takes in before the next one, so
    // that only the slow client can fall behind however loaded the machine
    // (in one go, a loaded machine's reader fell out too, and the slow
    // client, not yet at its window, skipped ahead while it filled).
    for step in 0..50 {
        run_in_terminal(
            &mut fast,
            term,
            &mut everything,
            "base64 -w 100 /dev/urandom | head -c 100000",
            &format!("step{step}"),
        )
        .await;
    }
    catch_up(&mut fast, term, &mut everything).await;
    assert_eq!(everything.snapshots, 0, "the reading client must not fall behind");
    assert!(everything.next_seq > 5_000_000);

    // Meanwhile the client that never acknowledged got exactly its window.
    slow.read_until(false, |s| s.received >= u64::from(WINDOW)).await;
    slow.drain();
    assert_eq!(slow.received, u64::from(WINDOW));
    assert!(slow.errors.is_empty(), "{:?}", slow.errors);

    // Acknowledging lets the rest through: it is megabytes behind, so a
    // snapshot of the screen as it is now, then output to the end.
    slow.ack_all();
    let end = everything.next_seq;
    slow.read_until(true, |s| s.next_seq == end).await;
    assert_eq!(slow.snapshots.len(), 1);
    let (before, after) = (&slow.runs[0], &slow.runs[1]);
    assert_eq!(before.0, 0);
    assert!(
        before.1 == everything.bytes[..WINDOW as usize],
        "bytes before the snapshot differ"
    );
    let (snapshot_seq, snapshot) = &slow.snapshots[0];
    assert_eq!(after.0, *snapshot_seq);
    assert!(
        after.1 == everything.bytes[*snapshot_seq as usize..],
        "bytes after the snapshot differ"
    );
    assert_eq!(
        rendered(&[snapshot, &after.1]),
        rendered(&[&everything.bytes]),
        "the snapshot and what followed draw another screen"
    );
    assert!(slow.errors.is_empty(), "{:?}", slow.errors);
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_release_exactly_what_they_acknowledge_and_the_stream_stays_byte_exact() {
    const WINDOW: u32 = 4096;
    let runner = TestRunner::start();
    let mut fast = runner.client().await;
    let term = open_terminal(&fast).await;
    let slow = runner.client().await;
    slow.term_attach(term, 0, Some(WINDOW)).await.unwrap();
    let mut slow = Windowed::new(slow, term, WINDOW, 0);
    let mut everything = Screen::default();
    // About 170 KB: well inside the scrollback, so no snapshot.
    run_in_terminal(&mut fast, term, &mut everything, "seq 1 30000", "count").await;

    slow.read_until(false, |s| s.received >= 4096).await;
    // A partial ack releases exactly the bytes it covers.
    slow.ack(1000);
    slow.read_until(false, |s| s.received >= 5096).await;
    assert_eq!(slow.received, 5096);
    assert_eq!(slow.in_flight(), 4096);
    slow.ack(3000);
    slow.read_until(false, |s| s.received >= 7096).await;
    assert_eq!(slow.received, 7096);

    catch_up(&mut fast, term, &mut everything).await;
    let end = everything.next_seq;
    slow.ack_all();
    slow.read_until(true, |s| s.next_seq == end).await;
    assert!(slow.snapshots.is_empty());
    assert_eq!(slow.runs.len(), 1);
    assert!(slow.runs[0].1 == everything.bytes, "the windowed stream differs");
    assert!(slow.errors.is_empty(), "{:?}", slow.errors);
}

#[tokio::test(flavor = "multi_thread")]
async fn yes_then_ctrl_c_stops_within_the_window_and_the_scrollback() {
    const WINDOW: u32 = 32 * 1024;
    const SCROLLBACK: u64 = 64 * 1024;
    let runner = TestRunner::start_with(Options {
        args: vec!["--scrollback-bytes".into(), SCROLLBACK.to_string()],
        ..Default::default()
    });
    let client = runner.client().await;
    let term = client.term_open(120, 40, None, Some(WINDOW)).await.unwrap();
    let mut c = Windowed::new(client, term, WINDOW, 0);
    // A client as a browser is: it parses every frame, then acknowledges it.
    c.emulator = Some(vt100::Parser::new(40, 120, 0));
    // The prompt, with a marker only the prompt (not the echoed command
    // line) contains.
    c.client.send_input(term, b"PS1='prompt-$((40+2))> '; yes\r").unwrap();
    c.read_until(true, |c| c.received >= 1_000_000).await;
    let at_ctrl_c = c.received;
    c.client.send_input(term, b"\x03").unwrap();
    c.read_until(true, |c| c.tail_contains("prompt-42> ")).await;
    // Output stopped: the client has everything the terminal printed.
    loop {
        let seq = terminal_seq(&c.client, term).await;
        if seq == c.next_seq {
            break;
        }
        c.read_until(true, |c| c.next_seq >= seq).await;
    }
    let screen = c.emulator.as_ref().map(|e| e.screen().contents()).unwrap_or_default();
    assert!(screen.contains("prompt-42>"), "{screen}");
    let after = c.received - at_ctrl_c;
    // What was in flight (the window), what the scrollback still owed this
    // client (byte-exact resume; past it, a snapshot of a few KiB), and the
    // last output before `yes` died: not the megabytes `yes` printed.
    let bound = u64::from(WINDOW) + 2 * SCROLLBACK + 64 * 1024;
    let printed = terminal_seq(&c.client, term).await;
    assert!(
        after <= bound,
        "{after} bytes arrived after ^C (bound {bound}); the terminal printed {printed}"
    );
    assert!(printed > 4 * bound, "yes printed only {printed} bytes");
    assert!(c.errors.is_empty(), "{:?}", c.errors);
}

/// The browser's case: a windowed client that cannot keep up with `yes`
/// falls further behind than its window; after Ctrl-C it gets a snapshot of
/// the screen as it is and the prompt, not the MiB of scrollback it is owed
/// (PROTOCOL.md, "Falling behind"). A client reading as fast as `yes`
/// prints, on the same terminal, still gets every byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_client_far_behind_skips_to_the_live_screen_and_a_reading_client_gets_every_byte() {
    const WINDOW: u32 = 32 * 1024;
    // The default scrollback: 1 MiB, four times SKIP_LAG_MIN.
    let runner = TestRunner::start();
    let client = runner.client().await;
    let term = client.term_open(120, 40, None, Some(WINDOW)).await.unwrap();
    let mut slow = Windowed::new(client, term, WINDOW, 0);
    slow.emulator = Some(vt100::Parser::new(40, 120, 0));
    let mut fast = runner.client().await;
    fast.term_attach(term, 0, None).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut everything = Screen::default();
        read_until(&mut fast, term, &mut everything, |s| {
            s.tail_text().contains("prompt-42> ")
        })
        .await;
        (fast, everything)
    });

    slow.client
        .send_input(term, b"PS1='prompt-$((40+2))> '; yes\r")
        .unwrap();
    slow.read_until(true, |c| c.received >= 100_000).await;
    // A client busy elsewhere (a background tab, a slow emulator): it reads
    // what it was sent and acknowledges nothing while `yes` prints 2 MiB,
    // twice the scrollback.
    slow.read_until(false, |c| c.in_flight() >= u64::from(WINDOW)).await;
    let behind_from = slow.next_seq;
    let deadline = std::time::Instant::now() + PATIENCE;
    while terminal_seq(&slow.client, term).await <= behind_from + 2 * 1024 * 1024 {
        assert!(std::time::Instant::now() < deadline, "yes did not print 2 MiB");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_ctrl_c = slow.received;
    slow.client.send_input(term, b"\x03").unwrap();
    slow.ack_all();
    slow.read_until(true, |c| c.tail_contains("prompt-42> ")).await;
    loop {
        let seq = terminal_seq(&slow.client, term).await;
        if seq == slow.next_seq {
            break;
        }
        slow.read_until(true, |c| c.next_seq >= seq).await;
    }
    let screen = slow
        .emulator
        .as_ref()
        .map(|e| e.screen().contents())
        .unwrap_or_default();
    assert!(screen.contains("prompt-42>"), "{screen}");
    assert!(!slow.snapshots.is_empty(), "the client behind never skipped");
    let after = slow.received - at_ctrl_c;
    // What it had in flight (a window), one snapshot of a 120x40 screen,
    // the output kept after it (SKIP_KEEP) and what `yes` printed between
    // the skip and its death: far from the scrollback the runner holds
    // (1 MiB) or what it was behind (2 MiB).
    use cloudcode_runner::terminal::flow::{SKIP_KEEP, SKIP_LAG_MIN};
    let bound = u64::from(WINDOW) + SKIP_KEEP + SKIP_LAG_MIN;
    assert!(after <= bound, "{after} bytes arrived after ^C (bound {bound})");
    assert!(slow.errors.is_empty(), "{:?}", slow.errors);

    // The snapshots drew the real screen: what followed the last one, on
    // top of it, is what the reading client shows.
    let (mut fast, mut everything) = reader.await.unwrap();
    catch_up(&mut fast, term, &mut everything).await;
    assert_eq!(everything.snapshots, 0, "the reading client was held back");
    assert_eq!(everything.next_seq, slow.next_seq);
    let (last_seq, last) = slow.snapshots.last().unwrap();
    let followed = &slow.runs.last().unwrap().1;
    assert!(
        followed[..] == everything.bytes[*last_seq as usize..],
        "bytes after the last snapshot differ"
    );
    assert_eq!(
        rendered(&[last, followed]),
        rendered(&[&everything.bytes]),
        "the snapshot and what followed draw another screen"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_acks_do_what_the_protocol_says() {
    const WINDOW: u32 = 4096;
    let runner = TestRunner::start();
    let client = runner.client().await;
    // The wire shape a browser sends.
    client
        .send_text(r#"{"id":900,"op":"term_open","cols":120,"rows":40,"flow_window":4096}"#)
        .unwrap();
    let Reply::Terms { terms } = client.request(Op::TermList).await.unwrap() else {
        panic!("expected terms")
    };
    let term = terms[0].term;
    let plain = client.term_open(80, 24, None, None).await.unwrap();
    let mut c = Windowed::new(client, term, WINDOW, 0);
    c.client
        .send_input(term, b"seq 1 20000; echo done-$((40+2))\r")
        .unwrap();
    c.read_until(false, |s| s.received >= 4096).await;
    c.ack(2000);
    c.read_until(false, |s| s.received >= 6096).await;

    // Backwards and repeated acks are ignored.
    c.client.send_ack(term, 1000).unwrap();
    c.client.send_ack(term, 2000).unwrap();
    assert_eq!(c.errors_after_round_trip().await, vec![]);

    // Beyond what was sent: an error without id, the connection stays, and
    // the ack is dropped, not clamped: the window did not move.
    let sent = c.next_seq;
    c.client.send_ack(term, sent + 1000).unwrap();
    assert_eq!(c.errors_after_round_trip().await, vec![(None, ErrorCode::BadRequest)]);
    c.ack(2100);
    c.read_until(false, |s| s.received >= 6196).await;
    assert_eq!(c.errors_after_round_trip().await, vec![]);
    assert_eq!(c.received, 6196, "a dropped ack released bytes");

    // For a terminal not attached here, attached without a window, or
    // detached: ignored.
    c.client.send_ack(777, 5).unwrap();
    c.client.send_ack(plain, 5).unwrap();
    c.client.request(Op::TermDetach { term: plain }).await.unwrap();
    c.client.send_ack(plain, 10).unwrap();
    assert_eq!(c.errors_after_round_trip().await, vec![]);

    // Malformed: a payload after the header, a window of 0.
    let mut with_payload = Frame::TermAck { term, seq: 6196 }.encode().to_vec();
    with_payload.push(b'x');
    c.client.send_binary(with_payload.into()).unwrap();
    assert_eq!(c.errors_after_round_trip().await, vec![(None, ErrorCode::BadRequest)]);
    let refused = c.client.term_attach(plain, 0, Some(0)).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Remote {
                code: ErrorCode::BadRequest,
                ..
            })
        ),
        "{refused:?}"
    );

    // And the window still works.
    c.ack_all();
    c.read_until(true, |s| s.tail_contains("done-42")).await;
    assert!(c.runs[0].1.windows(8).any(|w| w == b"\r\n20000\r"));
    assert!(c.errors.is_empty(), "{:?}", c.errors);
}

/// Reads `term`'s output from `client` until `term_exited`, acknowledging
/// every frame when the client has a window, and returns what arrived before
/// the event.
async fn output_until_exited(client: &mut RunnerClient, term: TermId, windowed: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        match next_incoming(client).await {
            Incoming::Frame(Frame::TermOutput { term: t, seq, data }) if t == term => {
                assert_eq!(seq, bytes.len() as u64, "gap or overlap in terminal output");
                bytes.extend_from_slice(&data);
                if windowed {
                    client.send_ack(term, bytes.len() as u64).unwrap();
                }
            }
            Incoming::Frame(Frame::TermSnapshot { term: t, .. }) if t == term => {
                panic!("a snapshot for output well inside the scrollback")
            }
            Incoming::Event(cloudcode_proto::message::Event::TermExited { term: t, code }) if t == term => {
                assert_eq!(code, Some(0));
                return bytes;
            }
            Incoming::Error { code, message, .. } => panic!("{code:?}: {message}"),
            Incoming::Closed(frame) => panic!("connection closed: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn term_exited_comes_after_every_output_byte_with_and_without_a_window() {
    const WINDOW: u32 = 4096;
    const RUNS: usize = 30;
    let runner = TestRunner::start();
    let mut plain = runner.client().await;
    let mut windowed = runner.client().await;
    let command = || Some(vec!["bash".into(), "-c".into(), "seq 1 3000; echo END".into()]);
    let expected: String = (1..=3000).map(|i| format!("{i}\r\n")).collect::<String>() + "END\r\n";
    let mut early = Vec::new();
    for run in 0..RUNS {
        let a = plain.term_open(120, 40, command(), None).await.unwrap();
        let b = windowed.term_open(120, 40, command(), Some(WINDOW)).await.unwrap();
        let (got_a, got_b) = tokio::join!(
            output_until_exited(&mut plain, a, false),
            output_until_exited(&mut windowed, b, true),
        );
        for (who, got) in [("unwindowed", got_a), ("windowed", got_b)] {
            if got != expected.as_bytes() {
                assert!(
                    expected.as_bytes().starts_with(&got),
                    "run {run}: the {who} client got other bytes"
                );
                early.push(format!(
                    "run {run}: {who} after {} of {} bytes",
                    got.len(),
                    expected.len()
                ));
            }
        }
        plain.request(Op::TermClose { term: a }).await.unwrap();
        windowed.request(Op::TermClose { term: b }).await.unwrap();
    }
    assert!(early.is_empty(), "term_exited came before the last output: {early:#?}");
}

/// A connection and the `instance` its welcome named.
async fn connect_with_instance(runner: &TestRunner) -> (RunnerClient, String) {
    let mut client = RunnerClient::connect(&runner.url(), &runner.token()).await.unwrap();
    match next_incoming(&mut client).await {
        Incoming::Event(cloudcode_proto::message::Event::Welcome { instance, .. }) => (client, instance),
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_runner_names_a_new_instance_and_the_old_terminal_ids_are_not_its_terminals() {
    let (workspace, storage) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = cloudcode_proto::token::TokenIssuer::generate().unwrap().secret_base64();
    let options = |listen: Option<String>| Options {
        workspace: Some(workspace.path().to_path_buf()),
        storage: Some(storage.path().to_path_buf()),
        issuer: Some(cloudcode_proto::token::TokenIssuer::from_secret_base64(&key).unwrap()),
        listen,
        ..Default::default()
    };
    let first = TestRunner::start_with(options(None));
    let (mut client, instance) = connect_with_instance(&first).await;
    assert!(
        instance.len() == 32 && instance.bytes().all(|b| b.is_ascii_hexdigit()),
        "128 bits as hex: {instance:?}"
    );
    // Every connection to one runner process names the same instance.
    let (_, same) = connect_with_instance(&first).await;
    assert_eq!(same, instance);
    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "echo old", "old").await;

    // The runner restarts at the same address, with the same workspace.
    let addr = first.addr.clone();
    drop(first);
    loop {
        if let Incoming::Closed(_) = next_incoming(&mut client).await {
            break;
        }
    }
    let second = TestRunner::start_with(options(Some(addr.clone())));
    assert_eq!(second.addr, addr);
    let (client, restarted) = connect_with_instance(&second).await;
    assert_ne!(restarted, instance, "a restarted runner must be recognisable");
    // The old terminal is gone...
    let refused = client.term_attach(term, screen.next_seq, None).await;
    assert!(
        matches!(
            refused,
            Err(ClientError::Remote {
                code: ErrorCode::UnknownTerminal,
                ..
            })
        ),
        "{refused:?}"
    );
    // ...and ids start again at 1: its id now names someone else's new
    // terminal, which only the instance tells apart from the old one. The
    // reconnected client attached to nothing by itself.
    let other = second.client().await;
    assert_eq!(open_terminal(&other).await, term);
    let Reply::Terms { terms } = client.request(Op::TermList).await.unwrap() else {
        panic!("expected terms")
    };
    assert_eq!(terms.len(), 1);
    assert_eq!((terms[0].term, terms[0].attached_clients), (term, 1));
}

/// What the shell's history file holds (empty if there is none).
fn history(home: &std::path::Path) -> String {
    std::fs::read_to_string(home.join(".bash_history")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_or_stopped_shell_has_written_its_history() {
    // Closing a terminal hangs its shell up, as closing a terminal window
    // does, and bash writes its history then; so does stopping the runner.
    // A SIGHUP that came as bash went back to its prompt was missed, and
    // bash was killed at the grace's end with its history unwritten (about
    // one close in five under load, so many closes here).
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().join("user");
    let mut runner = TestRunner::start_with(Options {
        args: vec!["--home".into(), home_dir.display().to_string()],
        ..Options::default()
    });
    let mut client = runner.client().await;
    for round in 0..24 {
        let term = open_terminal(&client).await;
        let mut screen = Screen::default();
        run_in_terminal(&mut client, term, &mut screen, &format!("echo closed-{round}"), "typed").await;
        client.request(Op::TermClose { term }).await.unwrap();
        eventually("the closed shell's history", || {
            history(&home_dir).contains(&format!("echo closed-{round}"))
        })
        .await;
    }
    // Stopping: the runner exits once its terminals' processes are gone.
    // These shells write their history at the same moment: appending, as
    // Debian's ~/.bashrc has them do (without it the last one's list wins).
    let open = 4;
    for i in 0..open {
        let term = open_terminal(&client).await;
        let mut screen = Screen::default();
        let command = format!("shopt -s histappend; echo stopped-{i}");
        run_in_terminal(&mut client, term, &mut screen, &command, "typed").await;
    }
    drop(client);
    runner.signal(libc::SIGTERM);
    assert!(runner.wait_exit().success());
    let written = history(&home_dir);
    for i in 0..open {
        assert!(
            written.contains(&format!("echo stopped-{i}")),
            "stopped-{i} missing: {written:?}"
        );
    }
}
