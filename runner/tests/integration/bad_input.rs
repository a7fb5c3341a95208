//! Malformed and oversized input gets an error; the runner keeps serving
//! that client where it can, and always its other clients.

use cloudcode_proto::client::Incoming;
use cloudcode_proto::message::{ErrorCode, Op, Reply};

use crate::common::*;

async fn expect_error(client: &mut cloudcode_proto::client::RunnerClient) -> (Option<u64>, ErrorCode) {
    match next_incoming(client).await {
        Incoming::Error { id, code, .. } => (id, code),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_json_unknown_ops_and_bad_frames_get_errors() {
    let runner = TestRunner::start();
    let mut client = runner.client().await;
    client.send_text("{not json").unwrap();
    assert_eq!(expect_error(&mut client).await, (None, ErrorCode::BadRequest));
    client.send_text(r#"{"id":5,"op":"format_disk"}"#).unwrap();
    assert_eq!(expect_error(&mut client).await, (Some(5), ErrorCode::BadRequest));
    client.send_text(r#"{"id":6,"op":"write","path":"x"}"#).unwrap();
    assert_eq!(expect_error(&mut client).await, (Some(6), ErrorCode::BadRequest));
    client
        .send_text(r#"{"id":7,"op":"term_open","cols":-5,"rows":10}"#)
        .unwrap();
    assert_eq!(expect_error(&mut client).await, (Some(7), ErrorCode::BadRequest));
    client.send_binary(bytes::Bytes::from_static(b"\x7fjunk")).unwrap();
    assert_eq!(expect_error(&mut client).await.1, ErrorCode::BadRequest);
    client.send_binary(bytes::Bytes::from_static(b"\x04\x00")).unwrap();
    assert_eq!(expect_error(&mut client).await.1, ErrorCode::BadRequest);
    // A chunk for a write that was never started.
    let stray = cloudcode_proto::frame::Frame::FileChunk {
        transfer: 12345,
        offset: 0,
        data: bytes::Bytes::from_static(b"x"),
    };
    client.send_binary(stray.encode()).unwrap();
    assert_eq!(expect_error(&mut client).await, (Some(12345), ErrorCode::BadRequest));
    // A chunk at the wrong offset aborts that write, nothing else.
    client
        .send_text(r#"{"id":8,"op":"write","path":"w.txt","size":4}"#)
        .unwrap();
    let skip = cloudcode_proto::frame::Frame::FileChunk {
        transfer: 8,
        offset: 2,
        data: bytes::Bytes::from_static(b"xx"),
    };
    client.send_binary(skip.encode()).unwrap();
    assert_eq!(expect_error(&mut client).await, (Some(8), ErrorCode::BadRequest));
    assert!(!runner.workspace.join("w.txt").exists());
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_closes_that_connection_only() {
    let runner = TestRunner::start_with(Options {
        args: vec!["--max-frame-size".into(), "65536".into()],
        ..Default::default()
    });
    let bystander = runner.client().await;
    let mut offender = runner.client().await;
    offender
        .send_text(format!(r#"{{"id":1,"op":"ping","pad":"{}"}}"#, "x".repeat(200_000)))
        .unwrap();
    loop {
        match next_incoming(&mut offender).await {
            Incoming::Closed(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
                break;
            }
            Incoming::Closed(None) => panic!("closed without saying why"),
            _ => {}
        }
    }
    assert_eq!(bystander.request(Op::Ping).await.unwrap(), Reply::Pong);
    let newcomer = runner.client().await;
    assert_eq!(newcomer.request(Op::Ping).await.unwrap(), Reply::Pong);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_requests_in_flight_all_get_answers() {
    let runner = TestRunner::start();
    let client = std::sync::Arc::new(runner.client().await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let path = p(&format!("many/f{i}.txt"));
            if i == 0 {
                client.request(Op::CreateDir { path: p("many") }).await.ok();
            }
            client.request(Op::Stat { path }).await
        }));
    }
    for task in tasks {
        // Either the file is missing or the dir is: an answer either way.
        let _ = task.await.unwrap();
    }
    assert_eq!(client.request(Op::Ping).await.unwrap(), Reply::Pong);
}
