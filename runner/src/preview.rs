//! The preview relay: connections to the preview socket are spliced, byte
//! for byte, to the user's app on loopback inside the sandbox. Being a plain
//! byte relay, it carries HTTP, WebSocket upgrades (hot reload) and anything
//! else the app speaks. The socket is reachable only by the gateway, which
//! routes the preview origin here and nothing that authenticates the IDE.

use tokio::net::{TcpStream, UnixListener};
use tokio_util::sync::CancellationToken;

pub async fn relay(listener: UnixListener, port: u16, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((mut client, _)) = accepted else { continue };
        tokio::spawn(async move {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(mut app) => {
                    let _ = app.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                }
                Err(_) => {
                    use tokio::io::AsyncWriteExt;
                    let body = format!(
                        "Nothing is listening on port {port} in this project yet. Run your app, then reload.\n"
                    );
                    let response = format!(
                        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(response.as_bytes()).await;
                }
            }
        });
    }
}
