//! The storage gateway: runner pods reach object storage through the control
//! plane, each confined to its own project's prefix, so a runner (and the
//! user code beside it) holds no storage credential at all.
//!
//! It listens on its own port, apart from the API: the one port of the
//! control plane a sandbox may reach, serving nothing but its own project's
//! objects. Who is calling is an [`Authenticator`]'s answer; on Kubernetes,
//! the pod's projected service-account token (see
//! `orchestrator::kubernetes::token`). The wire format is in
//! `cloudcode_proto::storage::gateway`.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use bytes::Bytes;
use cloudcode_proto::storage::gateway::{CopyRequest, ListedObject};
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectStore, StorageError};
use futures_util::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::projects::ProjectId;

/// Bodies up to this size are kept in memory; larger ones are spooled to a
/// file so a 100 MB upload never sits in the server's memory.
const IN_MEMORY_MAX: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is missing, forged, expired, or its pod is gone.
    #[error("{0}")]
    Refused(String),
    /// The authority that checks tokens could not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// Maps a caller's bearer token to the one project it may touch.
#[async_trait]
pub trait Authenticator: Send + Sync {
    async fn project_of(&self, token: &str) -> Result<ProjectId, AuthError>;
}

pub struct GatewayState {
    store: Arc<dyn ObjectStore>,
    auth: Arc<dyn Authenticator>,
    /// Largest object accepted, in bytes.
    max_object_size: u64,
    /// Where large uploads are spooled before they are stored.
    spool_dir: PathBuf,
    refusals: RefusalLimiter,
}

impl GatewayState {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        auth: Arc<dyn Authenticator>,
        max_object_size: u64,
        spool_dir: PathBuf,
    ) -> Self {
        Self {
            store,
            auth,
            max_object_size,
            spool_dir,
            refusals: RefusalLimiter::default(),
        }
    }
}

/// Refused tokens a caller may present per [`REFUSAL_WINDOW`] before it is
/// answered 429 without its token being checked: checking costs the API
/// server a TokenReview, and made-up tokens must not buy an unlimited
/// number of them.
const REFUSALS_ALLOWED: u32 = 30;
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Counts refused tokens per caller address.
#[derive(Default)]
struct RefusalLimiter {
    by_peer: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl RefusalLimiter {
    fn exhausted(&self, peer: IpAddr) -> bool {
        let by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        by_peer
            .get(&peer)
            .is_some_and(|(count, since)| since.elapsed() < REFUSAL_WINDOW && *count >= REFUSALS_ALLOWED)
    }

    fn record(&self, peer: IpAddr) {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        by_peer.retain(|_, (_, since)| since.elapsed() < REFUSAL_WINDOW);
        by_peer.entry(peer).or_insert((0, Instant::now())).0 += 1;
    }
}

/// Serves the gateway on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<GatewayState>) -> std::io::Result<()> {
    // Answers come in several segments; with Nagle's algorithm each small
    // object waited for the client's delayed ACK (about 40 ms).
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    // The caller's address, for the refusal limit.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}

pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(
            "/v1/storage/object",
            get(get_object).put(put_object).delete(delete_object),
        )
        .route("/v1/storage/list", get(list))
        .route("/v1/storage/copy", post(copy))
        // Uploads are limited by `max_object_size`, checked as they stream.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A request's refusal: its status and a message for the runner's log.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

fn storage_error(e: StorageError) -> Refusal {
    match e {
        StorageError::NotFound(key) => error(StatusCode::NOT_FOUND, format!("no object {key}")),
        StorageError::InvalidKey { .. } => error(StatusCode::BAD_REQUEST, e.to_string()),
        other => {
            tracing::warn!("storage gateway: {other}");
            error(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
        }
    }
}

type Answer = Result<Response, Refusal>;

/// The caller's project prefix (`code/<project>/`), once its token is
/// accepted.
struct CallerPrefix(KeyPrefix);

impl FromRequestParts<Arc<GatewayState>> for CallerPrefix {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<GatewayState>) -> Result<Self, Refusal> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        authorize(state, &parts.headers, peer).await.map(Self)
    }
}

async fn authorize(state: &GatewayState, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<KeyPrefix, Refusal> {
    if let Some(peer) = peer
        && state.refusals.exhausted(peer)
    {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{REFUSALS_ALLOWED} refused tokens within {REFUSAL_WINDOW:?}: wait"),
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
    let project = state.auth.project_of(token).await.map_err(|e| match e {
        AuthError::Refused(why) => {
            if let Some(peer) = peer {
                state.refusals.record(peer);
            }
            error(StatusCode::UNAUTHORIZED, format!("token refused: {why}"))
        }
        AuthError::Unavailable(why) => error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot check tokens: {why}")),
    })?;
    KeyPrefix::parse(&format!("code/{project}")).map_err(storage_error)
}

/// `raw` as a key inside `prefix`, or 400/403.
fn key_within(raw: &str, prefix: &KeyPrefix) -> Result<ObjectKey, Refusal> {
    let key = ObjectKey::parse(raw).map_err(storage_error)?;
    if !key.as_str().starts_with(prefix.as_str()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("{raw:?} is outside this project's storage ({})", prefix.as_str()),
        ));
    }
    Ok(key)
}

#[derive(serde::Deserialize)]
struct KeyQuery {
    key: String,
}

/// The object a request names (`?key=`), once its caller is authorized for
/// it: every object route starts here.
struct AuthorizedKey(ObjectKey);

impl FromRequestParts<Arc<GatewayState>> for AuthorizedKey {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<GatewayState>) -> Result<Self, Refusal> {
        let CallerPrefix(prefix) = CallerPrefix::from_request_parts(parts, state).await?;
        let Query(query) = Query::<KeyQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        key_within(&query.key, &prefix).map(Self)
    }
}

#[derive(serde::Deserialize)]
struct PrefixQuery {
    prefix: String,
}

async fn get_object(State(state): State<Arc<GatewayState>>, AuthorizedKey(key): AuthorizedKey) -> Answer {
    // Streamed as storage delivers it: the object is never whole in memory.
    // A storage error mid-way cuts the body short of its Content-Length, so
    // the caller sees a failed read, never a short object.
    let object = state.store.get_stream(&key).await.map_err(storage_error)?;
    let mut response = Body::from_stream(object.body).into_response();
    if let Some(size) = object.size {
        response.headers_mut().insert(header::CONTENT_LENGTH, size.into());
    }
    Ok(response)
}

async fn put_object(
    State(state): State<Arc<GatewayState>>,
    AuthorizedKey(key): AuthorizedKey,
    headers: HeaderMap,
    request: Request,
) -> Answer {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| error(StatusCode::LENGTH_REQUIRED, "a Content-Length is required"))?;
    if length > state.max_object_size {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{length} bytes is over the limit of {}", state.max_object_size),
        ));
    }
    let mut stream = request.into_body().into_data_stream();
    // A caller that vanishes mid-upload leaves the stored object as it was:
    // nothing is stored until every byte has arrived.
    let incomplete = |received: u64| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the upload ended after {received} of {length} bytes"),
        )
    };
    let too_long = || error(StatusCode::BAD_REQUEST, "the body is longer than its Content-Length");
    if length <= IN_MEMORY_MAX {
        let mut body = Vec::with_capacity(length as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| incomplete(body.len() as u64))?;
            if body.len() as u64 + chunk.len() as u64 > length {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        if body.len() as u64 != length {
            return Err(incomplete(body.len() as u64));
        }
        state.store.put(&key, Bytes::from(body)).await.map_err(storage_error)?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let spool = spool_file(&state).await?;
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&spool.path)
        .await
        .map_err(spool_error)?;
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| incomplete(received))?;
        received += chunk.len() as u64;
        if received > length {
            return Err(too_long());
        }
        file.write_all(&chunk).await.map_err(spool_error)?;
    }
    if received != length {
        return Err(incomplete(received));
    }
    file.flush().await.map_err(spool_error)?;
    file.seek(SeekFrom::Start(0)).await.map_err(spool_error)?;
    state.store.put_file(&key, file).await.map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_object(State(state): State<Arc<GatewayState>>, AuthorizedKey(key): AuthorizedKey) -> Answer {
    state.store.delete(&key).await.map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list(
    State(state): State<Arc<GatewayState>>,
    CallerPrefix(project): CallerPrefix,
    Query(query): Query<PrefixQuery>,
) -> Answer {
    let prefix = KeyPrefix::parse(&query.prefix).map_err(storage_error)?;
    if !prefix.as_str().starts_with(project.as_str()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "{:?} is outside this project's storage ({})",
                query.prefix,
                project.as_str()
            ),
        ));
    }
    let objects = state.store.list(&prefix).await.map_err(storage_error)?;
    let listed: Vec<ListedObject> = objects
        .into_iter()
        .map(|o| ListedObject {
            key: o.key.to_string(),
            size: o.size,
        })
        .collect();
    Ok(Json(listed).into_response())
}

async fn copy(State(state): State<Arc<GatewayState>>, CallerPrefix(prefix): CallerPrefix, body: Bytes) -> Answer {
    let request: CopyRequest = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("the body is not a copy request: {e}")))?;
    let from = key_within(&request.from, &prefix)?;
    let to = key_within(&request.to, &prefix)?;
    state.store.copy(&from, &to).await.map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn spool_error(e: std::io::Error) -> Refusal {
    error(StatusCode::INSUFFICIENT_STORAGE, format!("the gateway's spool: {e}"))
}

/// A spool file's path, removed when dropped (an open handle keeps reading).
struct Spool {
    path: PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn spool_file(state: &GatewayState) -> Result<Spool, Refusal> {
    let unique = {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("no randomness: {e}")))?;
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    tokio::fs::create_dir_all(&state.spool_dir)
        .await
        .map_err(|e| error(StatusCode::INSUFFICIENT_STORAGE, format!("spool: {e}")))?;
    Ok(Spool {
        path: state.spool_dir.join(format!("gateway-{unique}")),
    })
}
