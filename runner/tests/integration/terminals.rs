//! Terminals over a real WebSocket with real PTYs, including the seed's
//! defects: leaked shells, secrets in the shell, no backpressure.

use std::time::Duration;

use cloudcode_proto::client::Incoming;
use cloudcode_proto::message::{Op, Reply};

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
    b.request(Op::TermAttach { term: t1, from_seq: 0 }).await.unwrap();
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
    again.request(Op::TermAttach { term, from_seq: 0 }).await.unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn unknown_terminals_get_a_clear_error() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    let refused = client.request(Op::TermAttach { term: 777, from_seq: 0 }).await;
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
        })
        .await;
    assert!(refused.is_err());
    let refused = client
        .request(Op::TermOpen {
            cols: 80,
            rows: 24,
            command: Some(vec!["/no/such/program".into()]),
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}
