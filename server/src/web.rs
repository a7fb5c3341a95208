//! The browser IDE, embedded at build time (`build.rs`), served from the API
//! origin with the headers that keep a hostile preview and other sites out
//! of it.
//!
//! The page and its assets hold nothing secret (the IDE is open source), so
//! they are served without credentials; everything they show comes from the
//! API, which requires the session.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
    pub gzip: Option<&'static [u8]>,
}

mod generated {
    use super::Asset;
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

use generated::ASSETS;

/// The single page's routes: every one answers with `index.html`.
pub fn is_page(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.strip_prefix("/p/").is_some_and(|rest| !rest.is_empty())
}

pub fn find(path: &str) -> Option<&'static Asset> {
    let name = path.strip_prefix('/')?;
    ASSETS.iter().find(|a| a.path == name)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("ttf") => "font/ttf",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// What the page may load and talk to: its own origin, the runners' IDE
/// hosts (WebSockets) and, in a frame only, the preview hosts.
#[derive(Debug, Clone)]
pub struct Policy {
    csp: HeaderValue,
}

impl Policy {
    pub fn new(scheme: &str, port: Option<u16>, ide_domain: &str, preview_domain: &str) -> Self {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let ws = if scheme == "https" { "wss" } else { "ws" };
        // Monaco and xterm.js set styles from script (CSSOM and style
        // elements), hence 'unsafe-inline' for styles only; no script runs
        // that did not come from this origin.
        let csp = format!(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; \
             connect-src 'self' {ws}://*.{ide_domain}{port}; \
             frame-src {scheme}://*.{preview_domain}{port}; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        );
        Self {
            csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
        }
    }

    pub fn csp(&self) -> &HeaderValue {
        &self.csp
    }
}

/// Headers every answer of the API origin carries.
pub fn harden(headers: &mut HeaderMap, policy: &Policy) {
    headers.insert(header::CONTENT_SECURITY_POLICY, policy.csp.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
}

/// Answers a GET for the page or one of its assets; `None` when the path is
/// neither (the API handles it).
pub fn serve(path: &str, request_headers: &HeaderMap) -> Option<Response> {
    let (asset, immutable) = if is_page(path) {
        (find("/index.html")?, false)
    } else {
        // Vite names what it builds under assets/ by content hash.
        (find(path)?, path.starts_with("/assets/"))
    };
    let accepts_gzip = request_headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));
    let mut response = match asset.gzip {
        Some(gz) if accepts_gzip => {
            let mut r = Response::new(Body::from(gz));
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => Response::new(Body::from(asset.bytes)),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(asset.path)));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    Some(response)
}

pub fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_page_is_embedded() {
        let index = find("/index.html").expect("index.html is embedded");
        let html = std::str::from_utf8(index.bytes).unwrap();
        assert!(html.contains("<script"), "{html}");
        assert!(is_page("/p/alpha"));
        assert!(!is_page("/p/"));
        assert!(!is_page("/api/projects"));
    }

    #[test]
    fn the_policy_names_only_our_hosts() {
        let policy = Policy::new("http", Some(8080), "ide.localhost", "preview.localhost");
        let csp = policy.csp().to_str().unwrap();
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("connect-src 'self' ws://*.ide.localhost:8080;"));
        assert!(csp.contains("frame-src http://*.preview.localhost:8080;"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-eval"));
    }
}
