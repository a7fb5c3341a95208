//! Seed defect: no authentication anywhere, and the project taken from the
//! Host header. Every way in needs a valid token for this runner's project.

use cloudcode_proto::client::RunnerClient;
use cloudcode_proto::token::{Claims, TokenIssuer, unix_now};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

async fn refused_status(url: &str, token: Option<&str>) -> u16 {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_requires_a_valid_token_for_this_project() {
    let runner = TestRunner::start();
    let url = runner.url();
    assert_eq!(refused_status(&url, None).await, 401, "no token");
    assert_eq!(refused_status(&url, Some("cc1.garbage.token")).await, 401, "malformed");
    let forged = TokenIssuer::generate().unwrap().issue(&Claims {
        project: PROJECT.into(),
        exp: unix_now() + 60,
    });
    assert_eq!(refused_status(&url, Some(&forged)).await, 401, "forged");
    let expired = runner.issuer.issue(&Claims {
        project: PROJECT.into(),
        exp: unix_now() - 1,
    });
    assert_eq!(refused_status(&url, Some(&expired)).await, 401, "expired");
    let other = runner.issuer.issue(&Claims {
        project: "victim".into(),
        exp: unix_now() + 60,
    });
    assert_eq!(refused_status(&url, Some(&other)).await, 403, "other project");
    assert_eq!(refused_status(&url, Some(&runner.token())).await, 101, "valid");
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_can_present_the_token_as_a_subprotocol() {
    let runner = TestRunner::start();
    let mut request = runner.url().into_client_request().unwrap();
    let protocols = format!("cloudcode.v1, cloudcode-token.{}", runner.token());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    let (_, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("subprotocol token accepted");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "cloudcode.v1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_header_does_not_choose_the_project() {
    let runner = TestRunner::start();
    let mut request = runner.url().into_client_request().unwrap();
    let victim = runner.issuer.issue(&Claims {
        project: "victim".into(),
        exp: unix_now() + 60,
    });
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {victim}").parse().unwrap());
    request
        .headers_mut()
        .insert("host", "victim.cloudcode.localhost".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn http_endpoints_need_the_token_too() {
    let runner = TestRunner::start();
    let get = |path: &str, token: Option<String>| {
        let addr = runner.addr.clone();
        let path = path.to_owned();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    assert!(get("/v1/health", None).await.starts_with("HTTP/1.1 401"));
    let ok = get("/v1/health", Some(runner.token())).await;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains("\"project\":\"alpha\""),
        "{ok}"
    );
    assert!(get("/anything", None).await.starts_with("HTTP/1.1 404"));
    // The probe endpoint alone answers without a token, and tells one bit:
    // the same constant answer with a token or without, a status, a fixed
    // body and nothing else (no project, version or state).
    let without_date = |response: String| -> String {
        let response = response.to_ascii_lowercase();
        response
            .lines()
            .filter(|l| !l.starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ready = without_date(get("/v1/ready", None).await);
    assert_eq!(
        ready,
        "http/1.1 200 ok\ncontent-type: text/plain; charset=utf-8\ncontent-length: 6\nconnection: close\n\nready",
        "{ready}"
    );
    assert_eq!(without_date(get("/v1/ready", Some(runner.token())).await), ready);
    // A valid client still works afterwards.
    let client: RunnerClient = runner.client().await;
    client.request(cloudcode_proto::message::Op::Ping).await.unwrap();
}
