//! The S3 backend against a real S3-compatible server (s3s-fs, which checks
//! SigV4 signatures), started by the test itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudcode_proto::storage::s3::S3Store;
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectStore, StorageError};
use cloudcode_proto::testing::S3Server;

use crate::common::*;

fn key(k: &str) -> ObjectKey {
    ObjectKey::parse(k).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_store_contract() {
    let server = S3Server::start();
    let store = S3Store::connect(server.config("contract")).await.unwrap();
    store.ensure_bucket().await.unwrap();
    store.ensure_bucket().await.unwrap();

    store
        .put(&key("code/a/x.txt"), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(&store.get(&key("code/a/x.txt")).await.unwrap()[..], b"hello");
    assert!(matches!(
        store.get(&key("code/a/missing")).await,
        Err(StorageError::NotFound(_))
    ));
    store.delete(&key("code/a/missing")).await.unwrap();

    // Names with spaces, Unicode and URL-special characters, and a copy.
    let odd = key("code/a/dir with space/ünï #?&+.txt");
    store.put(&odd, Bytes::from_static(b"odd")).await.unwrap();
    store.copy(&odd, &key("code/b/ünï copy.txt")).await.unwrap();
    assert_eq!(&store.get(&key("code/b/ünï copy.txt")).await.unwrap()[..], b"odd");

    // Multipart: 20 MB from a file, streamed back to a file.
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let file = tokio::fs::File::open(dir.path().join("big")).await.unwrap();
    store.put_file(&key("code/a/big.bin"), file).await.unwrap();
    let n = store
        .get_to_file(&key("code/a/big.bin"), &dir.path().join("back"))
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert!(std::fs::read(dir.path().join("back")).unwrap() == big);
    // ...and as a stream, its length told first.
    let streamed = store.get_stream(&key("code/a/big.bin")).await.unwrap();
    assert_eq!(streamed.size, Some(big.len() as u64));
    let chunks: Vec<Bytes> = futures_util::TryStreamExt::try_collect(streamed.body).await.unwrap();
    assert!(chunks.len() > 1, "not streamed");
    assert!(chunks.concat() == big);
    assert!(matches!(
        store.get_stream(&key("code/a/missing")).await.map(drop),
        Err(StorageError::NotFound(_))
    ));

    // More than 1000 objects: every page, no loop, prefix on a boundary.
    let many = KeyPrefix::parse("code/many").unwrap();
    futures_util::future::try_join_all((0..1105).map(|i| {
        let store = store.clone();
        async move {
            store
                .put(&key(&format!("code/many/f{i:05}")), Bytes::from_static(b"m"))
                .await
        }
    }))
    .await
    .unwrap();
    store
        .put(&key("code/many-other/x"), Bytes::from_static(b"other"))
        .await
        .unwrap();
    let listed = store.list(&many).await.unwrap();
    assert_eq!(listed.len(), 1105);
    assert!(listed.iter().all(|m| m.key.as_str().starts_with("code/many/")));

    store.delete(&key("code/a/x.txt")).await.unwrap();
    assert!(matches!(
        store.get(&key("code/a/x.txt")).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_down_is_reported_as_retryable() {
    let mut server = S3Server::start();
    let store = S3Store::connect(server.config("down")).await.unwrap();
    store.ensure_bucket().await.unwrap();
    server.stop();
    let err = store.put(&key("code/a/x"), Bytes::from_static(b"x")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "s3"),
    ignore = "the runner's S3 storage needs --features s3 (the README's test command has --all-features)"
)]
async fn the_runner_persists_to_s3_and_survives_an_outage() {
    let mut server = S3Server::start();
    let store = S3Store::connect(server.config("projects")).await.unwrap();
    store.ensure_bucket().await.unwrap();
    store
        .put(&key("code/alpha/seeded.txt"), Bytes::from_static(b"from storage"))
        .await
        .unwrap();

    let runner = TestRunner::start_with(Options {
        args: server.runner_args("projects"),
        env: server.runner_env(),
        local_storage: false,
        ..Default::default()
    });
    let mut client = runner.client().await;
    assert_eq!(client.read_file(&p("seeded.txt")).await.unwrap().0, b"from storage");
    client.write_file(&p("saved.txt"), b"saved", None).await.unwrap();
    assert_eq!(&store.get(&key("code/alpha/saved.txt")).await.unwrap()[..], b"saved");

    let term = open_terminal(&client).await;
    let mut screen = Screen::default();
    run_in_terminal(&mut client, term, &mut screen, "echo from-shell > shell.txt", "made").await;
    let deadline = Instant::now() + PATIENCE;
    while store.get(&key("code/alpha/shell.txt")).await.is_err() {
        assert!(Instant::now() < deadline, "terminal-made file never reached S3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The server goes away; a save waits, then lands when it is back.
    server.stop();
    let writer = runner.client().await;
    let save = tokio::spawn(async move { writer.write_file(&p("outage.txt"), b"kept", None).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!save.is_finished(), "acknowledged while S3 was down");
    server.restart();
    tokio::time::timeout(PATIENCE, save).await.unwrap().unwrap().unwrap();
    let store = S3Store::connect(server.config("projects")).await.unwrap();
    assert_eq!(&store.get(&key("code/alpha/outage.txt")).await.unwrap()[..], b"kept");
}
