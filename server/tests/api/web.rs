//! The browser IDE's side of the API origin: the embedded page and its
//! headers, the session that replaces the token in a browser, CSRF, and the
//! gateway refusing runner connections from pages that are not the IDE's.

use crate::common::*;

struct Answer {
    status: u16,
    /// Lowercased header lines.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One request with exactly these header lines.
async fn exchange(port: u16, method: &str, path: &str, headers: &[String], body: &str) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        request.push_str(&format!("Host: localhost:{port}\r\n"));
    }
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_served_with_a_strict_policy() {
    let server = TestServer::start(&[]);
    for path in ["/", "/p/alpha"] {
        let page = exchange(server.port, "GET", path, &[], "").await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
        let html = String::from_utf8_lossy(&page.body).to_string();
        assert!(html.contains("<script type=\"module\""), "{html}");
        let csp = page.header("content-security-policy").unwrap();
        assert!(
            csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            csp.contains(&format!("frame-src http://*.preview.localhost:{}", server.port)),
            "{csp}"
        );
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        // Every script the page names is embedded, compressed for those who
        // accept it, and cached for good (its name is its content's hash).
        let script = html.split("src=\"").nth(1).unwrap().split('"').next().unwrap();
        let asset = exchange(server.port, "GET", script, &["Accept-Encoding: gzip, br".into()], "").await;
        assert_eq!(asset.status, 200, "{script}");
        assert_eq!(asset.header("content-encoding"), Some("gzip"));
        assert!(asset.header("cache-control").unwrap().contains("immutable"));
        assert!(asset.header("content-type").unwrap().starts_with("text/javascript"));
    }
    // The API stays behind its credential, whatever the page does.
    assert_eq!(exchange(server.port, "GET", "/api/projects", &[], "").await.status, 401);
    assert_eq!(
        exchange(server.port, "GET", "/assets/none.js", &[], "").await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_session_replaces_the_token_and_needs_csrf_to_change_state() {
    let mut server = TestServer::start(&[]);
    let bearer = format!("Authorization: Bearer {}", server.token);
    let refused = exchange(
        server.port,
        "POST",
        "/api/session",
        &["Authorization: Bearer wrong".into()],
        "",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert!(refused.header("set-cookie").is_none());

    let login = exchange(server.port, "POST", "/api/session", std::slice::from_ref(&bearer), "").await;
    assert_eq!(login.status, 200);
    let set_cookie = login.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain="),
        "host-only: {set_cookie}"
    );
    let cookie = format!("Cookie: {}", set_cookie.split(';').next().unwrap());
    assert!(!cookie.contains(&server.token), "the cookie is not the token");
    let csrf: serde_json::Value = serde_json::from_slice(&login.body).unwrap();
    let csrf = csrf["csrf"].as_str().unwrap().to_owned();

    let info = exchange(server.port, "GET", "/api/session", std::slice::from_ref(&cookie), "").await;
    assert_eq!(info.status, 200);
    let again: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(again["csrf"], csrf.as_str());
    assert_eq!(
        exchange(server.port, "GET", "/api/projects", std::slice::from_ref(&cookie), "")
            .await
            .status,
        200
    );

    let create = r#"{"id":"from-browser","language":"python"}"#;
    let json = "Content-Type: application/json".to_owned();
    let without = exchange(
        server.port,
        "POST",
        "/api/projects",
        &[cookie.clone(), json.clone()],
        create,
    )
    .await;
    assert_eq!(without.status, 403, "a cookie alone cannot change state");
    let wrong = format!("x-cloudcode-csrf: {}x", csrf);
    let wrong = exchange(
        server.port,
        "POST",
        "/api/projects",
        &[cookie.clone(), json.clone(), wrong],
        create,
    )
    .await;
    assert_eq!(wrong.status, 403);
    let right = format!("x-cloudcode-csrf: {csrf}");
    let made = exchange(
        server.port,
        "POST",
        "/api/projects",
        &[cookie.clone(), json, right.clone()],
        create,
    )
    .await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));

    let forged = "Cookie: cloudcode_session=s1.99999999999.bm9uY2U.forged".to_owned();
    assert_eq!(
        exchange(server.port, "GET", "/api/projects", &[forged], "")
            .await
            .status,
        401
    );

    // A restarted server still knows the session: it is derived from the
    // token, not kept in memory.
    server.terminate();
    let server = TestServer::restart(&server);
    assert_eq!(
        exchange(server.port, "GET", "/api/projects", std::slice::from_ref(&cookie), "")
            .await
            .status,
        200
    );
    let out = exchange(server.port, "DELETE", "/api/session", &[cookie, right], "").await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn runners_refuse_pages_other_than_the_ide() {
    let server = TestServer::start(&[]);
    server.create("origin-check", "python").await;
    let port = server.port;
    let ws = |origin: &str| {
        vec![
            format!("Host: origin-check.ide.localhost:{port}"),
            format!("Origin: {origin}"),
            "Upgrade: websocket".into(),
            "Connection: Upgrade".into(),
            "Sec-WebSocket-Version: 13".into(),
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
        ]
    };
    for hostile in [
        format!("http://origin-check.preview.localhost:{port}"),
        format!("http://other.preview.localhost:{port}"),
        format!("http://other.ide.localhost:{port}"),
        "null".to_owned(),
    ] {
        let answer = exchange(port, "GET", "/v1/ws", &ws(&hostile), "").await;
        assert_eq!(answer.status, 403, "from {hostile}");
    }
    // The IDE's own page gets as far as the project (not started here).
    let answer = exchange(port, "GET", "/v1/ws", &ws(&format!("http://localhost:{port}")), "").await;
    assert_eq!(answer.status, 503);
}
