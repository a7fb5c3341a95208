//! The server as a library: built from settings, served in this process,
//! shut down through the future it was given.

use clap::Parser;
use cloudcode_server::config::Config;
use cloudcode_server::server::Server;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_server_built_in_process_serves_and_shuts_down_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let conf = dir.path().join("conf");
    let config = Config::parse_from([
        "cloudcode-server".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--config-dir".as_ref(),
        conf.as_os_str(),
        "--runner-binary".as_ref(),
        runner_binary().as_os_str(),
    ]);
    let server = Server::build(config).await.unwrap();
    let port = server.local_addr().port();
    let url = server.login_url();
    assert!(url.starts_with(&format!("http://localhost:{port}/#token=")), "{url}");
    let token = url.rsplit("token=").next().unwrap().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let (status, body) = raw_request(port, "GET", "/api", None, None, Some(&token)).await;
    assert_eq!((status, body["service"].as_str()), (200, Some("cloudcode-server")));
    let (status, _) = raw_request(port, "GET", "/api/projects", None, None, None).await;
    assert_eq!(status, 401);

    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, serving).await.unwrap().unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err());
}
