//! The gateway: routes `<project>.<ide-domain>` to the project's runner and
//! `<project>.<preview-domain>` to the user's app in the same sandbox, HTTP
//! and WebSocket upgrades alike (hot reload works through it). Everything
//! else is the control-plane API. The two project origins are distinct, and
//! nothing the gateway does authenticates a request to a runner: the IDE
//! presents its own project token, which the runner checks.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use cloudcode_proto::rest::RunnerHealth;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::projects::ProjectId;

/// Where a runner or preview answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Unix(PathBuf),
    /// `host:port`, as a Kubernetes service is reached.
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the sandbox: {0}")]
    Connect(std::io::Error),
    #[error("the sandbox broke the HTTP exchange: {0}")]
    Http(#[from] hyper::Error),
}

/// Which origin a Host header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ide(ProjectId),
    Preview(ProjectId),
    /// A project-shaped host whose label is not a valid id.
    BadProject,
    Api,
}

pub fn route(host: Option<&str>, ide_domain: &str, preview_domain: &str) -> Route {
    let Some(host) = host else { return Route::Api };
    // Strip the port; IPv6 literals are never project hosts.
    let name = if host.starts_with('[') {
        host
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    for (domain, ide) in [(ide_domain, true), (preview_domain, false)] {
        if let Some(label) = name.strip_suffix(domain).and_then(|rest| rest.strip_suffix('.')) {
            return match ProjectId::parse(label) {
                Ok(id) if ide => Route::Ide(id),
                Ok(id) => Route::Preview(id),
                Err(_) => Route::BadProject,
            };
        }
    }
    Route::Api
}

async fn connect(upstream: &Upstream) -> Result<Box<dyn Io>, ProxyError> {
    Ok(match upstream {
        Upstream::Unix(path) => Box::new(connect_unix(path).await.map_err(ProxyError::Connect)?),
        Upstream::Tcp(addr) => {
            let stream = TcpStream::connect(addr).await.map_err(ProxyError::Connect)?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
    })
}

/// Connects to the socket that is at `path`, never to one a symlink there
/// names. A sandbox may write in its socket directory: a link in place of
/// its runner's socket could point this server at any socket of the host
/// (a container engine's, say). The socket is opened as a path first
/// (`O_PATH`, which pins the inode and does not follow a final link), and
/// reached through that descriptor.
async fn connect_unix(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let socket = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !socket.metadata()?.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a socket", path.display()),
        ));
    }
    UnixStream::connect(format!("/proc/self/fd/{}", socket.as_raw_fd())).await
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Forwards one request (and, on 101, the upgraded connection).
pub async fn forward(upstream: &Upstream, mut request: Request<Body>) -> Result<Response<Body>, ProxyError> {
    let io = connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("upstream connection: {e}");
        }
    });
    let client_upgrade = request
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    let mut response = sender.send_request(request).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
                }
                Err(e) => tracing::debug!("upgrade failed: {e}"),
            }
        });
    }
    Ok(response.map(Body::new))
}

/// The runner's authenticated health check: the orchestrator's readiness
/// and the idle reaper's source. Returns the status and, when the body is
/// a runner's health, that.
pub async fn health(upstream: &Upstream, token: &str) -> Result<(u16, Option<RunnerHealth>), ProxyError> {
    let request = Request::get(format!("/v{}/health", cloudcode_proto::PROTOCOL_VERSION))
        .header(header::HOST, "runner")
        .header(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or(HeaderValue::from_static("")),
        )
        .body(Body::empty())
        .unwrap_or_default();
    let response = forward(upstream, request).await?;
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    Ok((status, serde_json::from_slice(&body).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    /// A sandbox that puts a link where its runner's socket belongs never
    /// gets this server to connect to the socket the link names.
    #[tokio::test]
    async fn a_symlink_in_place_of_a_runner_socket_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let host_socket = dir.path().join("host-service.sock");
        let listener = tokio::net::UnixListener::bind(&host_socket).unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        let planted = dir.path().join("ide.sock");
        std::os::unix::fs::symlink(&host_socket, &planted).unwrap();
        let refused = connect(&Upstream::Unix(planted)).await;
        assert!(refused.is_err(), "the gateway followed the link");

        // The real socket itself is reached.
        assert!(connect(&Upstream::Unix(host_socket)).await.is_ok());
        assert!(accepted.await.unwrap());
    }

    /// The Kubernetes gateway mode reaches previews over TCP: a WebSocket
    /// (hot reload) goes through and back.
    #[tokio::test]
    async fn a_websocket_upgrade_crosses_a_tcp_upstream() {
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_addr = app.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = app.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() {
                    let reply = format!("app got {}", message.to_text().unwrap());
                    ws.send(Message::text(reply)).await.unwrap();
                }
            }
        });
        let upstream = Upstream::Tcp(app_addr);
        let gateway = axum::Router::new().fallback(move |request: Request<Body>| {
            let upstream = upstream.clone();
            async move { forward(&upstream, request).await.unwrap() }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, gateway).await.unwrap() });

        let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{gateway_addr}/hmr"))
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        ws.send(Message::text("reload?")).await.unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.to_text().unwrap(), "app got reload?");
    }

    #[test]
    fn routes_by_host() {
        let r = |h| route(Some(h), "ide.localhost", "preview.localhost");
        assert_eq!(
            r("alpha.ide.localhost:8080"),
            Route::Ide(ProjectId::parse("alpha").unwrap())
        );
        assert_eq!(
            r("Alpha.Preview.Localhost."),
            Route::Preview(ProjectId::parse("alpha").unwrap())
        );
        assert_eq!(r("localhost:8080"), Route::Api);
        assert_eq!(r("ide.localhost"), Route::Api);
        assert_eq!(r("a.b.ide.localhost"), Route::BadProject);
        assert_eq!(r("x_y.ide.localhost"), Route::BadProject);
        assert_eq!(r("evilide.localhost"), Route::Api);
        assert_eq!(route(None, "ide.localhost", "preview.localhost"), Route::Api);
    }
}
