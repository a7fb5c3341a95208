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
use cloudcode_proto::storage::gateway::{
    BATCH_GET_MAX_OBJECT, BATCH_MAX_BYTES, BATCH_MAX_RECORDS, BatchGetRequest, BatchGot, BatchOp, BatchResult,
    CopyRequest, ListedObject, decode_batch, encode_got,
};
use cloudcode_proto::storage::{KeyPrefix, ObjectKey, ObjectStore, PutSource, StorageError, layout};
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
        .route("/v1/storage/batch", post(batch))
        .route("/v1/storage/batch-get", post(batch_get))
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

/// What the caller may reach once its token is accepted: its own project's
/// prefixes ([`layout::project_prefixes`]: its files and its home), nothing
/// else.
#[derive(Clone)]
struct Scope([KeyPrefix; 2]);

impl Scope {
    fn of(project: &ProjectId) -> Self {
        Self(layout::project_prefixes(project))
    }

    fn admits(&self, key: &str) -> bool {
        self.0.iter().any(|prefix| key.starts_with(prefix.as_str()))
    }

    fn refusal(&self, raw: &str) -> Refusal {
        let mine: Vec<&str> = self.0.iter().map(KeyPrefix::as_str).collect();
        error(
            StatusCode::FORBIDDEN,
            format!("{raw:?} is outside this project's storage ({})", mine.join(", ")),
        )
    }
}

struct CallerPrefix(Scope);

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

async fn authorize(state: &GatewayState, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Scope, Refusal> {
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
    Ok(Scope::of(&project))
}

/// `raw` as a key inside `scope`, or 400/403.
fn key_within(raw: &str, scope: &Scope) -> Result<ObjectKey, Refusal> {
    let key = ObjectKey::parse(raw).map_err(storage_error)?;
    if !scope.admits(key.as_str()) {
        return Err(scope.refusal(raw));
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
    CallerPrefix(scope): CallerPrefix,
    Query(query): Query<PrefixQuery>,
) -> Answer {
    let prefix = KeyPrefix::parse(&query.prefix).map_err(storage_error)?;
    if !scope.admits(prefix.as_str()) {
        return Err(scope.refusal(&query.prefix));
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

/// Many small puts and deletes in one request: each record is authorized
/// and answered on its own, and the answer comes once every put of the
/// batch is durable (storage's own batch operations: one group commit,
/// parallel uploads, `DeleteObjects`).
async fn batch(
    State(state): State<Arc<GatewayState>>,
    CallerPrefix(prefix): CallerPrefix,
    headers: HeaderMap,
    request: Request,
) -> Answer {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| error(StatusCode::LENGTH_REQUIRED, "a Content-Length is required"))?;
    if length > BATCH_MAX_BYTES {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{length} bytes is over the batch limit of {BATCH_MAX_BYTES}"),
        ));
    }
    let mut stream = request.into_body().into_data_stream();
    let mut body = Vec::with_capacity(length as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| error(StatusCode::BAD_REQUEST, "the batch was cut short"))?;
        if body.len() as u64 + chunk.len() as u64 > length {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the body is longer than its Content-Length",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if body.len() as u64 != length {
        return Err(error(StatusCode::BAD_REQUEST, "the batch was cut short"));
    }
    let records = decode_batch(Bytes::from(body)).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let mut results: Vec<Option<BatchResult>> = (0..records.len()).map(|_| None).collect();
    let (mut puts, mut put_at, mut deletes, mut delete_at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (header, content)) in records.into_iter().enumerate() {
        let key = match key_within(&header.key, &prefix) {
            Ok(key) => key,
            Err(refusal) => {
                results[i] = Some(BatchResult {
                    status: refusal.status.as_u16(),
                    message: Some(refusal.message),
                });
                continue;
            }
        };
        match header.op {
            BatchOp::Put if content.len() as u64 > state.max_object_size => {
                results[i] = Some(BatchResult {
                    status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
                    message: Some(format!("over the limit of {}", state.max_object_size)),
                });
            }
            BatchOp::Put => {
                puts.push((key, PutSource::Bytes(content)));
                put_at.push(i);
            }
            BatchOp::Delete => {
                deletes.push(key);
                delete_at.push(i);
            }
        }
    }
    let answer = |result: Result<(), StorageError>| match result {
        Ok(()) => BatchResult {
            status: StatusCode::NO_CONTENT.as_u16(),
            message: None,
        },
        Err(e) => {
            let refusal = storage_error(e);
            BatchResult {
                status: refusal.status.as_u16(),
                message: Some(refusal.message),
            }
        }
    };
    if !deletes.is_empty() {
        for (i, result) in delete_at.into_iter().zip(state.store.delete_many(deletes).await) {
            results[i] = Some(answer(result));
        }
    }
    if !puts.is_empty() {
        for (i, result) in put_at.into_iter().zip(state.store.put_many(puts).await) {
            results[i] = Some(answer(result));
        }
    }
    let results: Vec<BatchResult> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or(BatchResult {
                status: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
                message: None,
            })
        })
        .collect();
    Ok(Json(results).into_response())
}

/// Many small objects in one answer (a restore of 10,000 files is 40
/// requests, not 10,000): each key authorized and answered on its own;
/// objects over [`BATCH_GET_MAX_OBJECT`] are answered 413, for the caller
/// to fetch alone, streamed.
async fn batch_get(State(state): State<Arc<GatewayState>>, CallerPrefix(prefix): CallerPrefix, body: Bytes) -> Answer {
    let request: BatchGetRequest = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not a batch-get request: {e}"),
        )
    })?;
    if request.keys.len() > BATCH_MAX_RECORDS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("more than {BATCH_MAX_RECORDS} keys"),
        ));
    }
    let objects: Vec<(BatchGot, Bytes)> = futures_util::stream::iter(request.keys)
        .map(|raw| {
            let state = state.clone();
            let prefix = prefix.clone();
            async move {
                let answer = |status: StatusCode, content: Bytes| {
                    (
                        BatchGot {
                            key: raw.clone(),
                            status: status.as_u16(),
                            size: content.len() as u64,
                        },
                        content,
                    )
                };
                let key = match key_within(&raw, &prefix) {
                    Ok(key) => key,
                    Err(refusal) => return answer(refusal.status, Bytes::new()),
                };
                let object = match state.store.get_stream(&key).await {
                    Ok(object) => object,
                    Err(e) => return answer(storage_error(e).status, Bytes::new()),
                };
                if object.size.is_none_or(|size| size > BATCH_GET_MAX_OBJECT) {
                    return answer(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new());
                }
                let mut body = object.body;
                let mut content = Vec::new();
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(chunk) => content.extend_from_slice(&chunk),
                        Err(e) => return answer(storage_error(e).status, Bytes::new()),
                    }
                    if content.len() as u64 > BATCH_GET_MAX_OBJECT {
                        return answer(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new());
                    }
                }
                answer(StatusCode::OK, Bytes::from(content))
            }
        })
        .buffered(cloudcode_proto::storage::PARALLEL_REQUESTS)
        .collect()
        .await;
    Ok(encode_got(&objects).into_response())
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

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcode_proto::storage::gateway::GatewayStore;
    use cloudcode_proto::storage::local::LocalStore;

    /// Every token is project `alpha`'s.
    struct Alpha;

    #[async_trait]
    impl Authenticator for Alpha {
        async fn project_of(&self, _token: &str) -> Result<ProjectId, AuthError> {
            Ok(ProjectId::parse("alpha").map_err(|e| AuthError::Refused(e.to_string()))?)
        }
    }

    async fn gateway(store: Arc<dyn ObjectStore>, dir: &std::path::Path) -> GatewayStore {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(GatewayState::new(store, Arc::new(Alpha), 1 << 30, dir.join("spool")));
        tokio::spawn(serve(listener, state));
        std::fs::write(dir.join("token"), "t").unwrap();
        GatewayStore::new(&format!("http://{addr}"), &dir.join("token")).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn batches_put_get_and_delete_many_objects_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let backing = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
        let client = gateway(backing.clone(), dir.path()).await;
        let key = |k: &str| ObjectKey::parse(k).unwrap();
        let mut items: Vec<(ObjectKey, PutSource)> = (0..2500)
            .map(|i| {
                (
                    key(&format!("code/alpha/d{}/f{i}", i % 7)),
                    PutSource::Bytes(Bytes::from(format!("{i}"))),
                )
            })
            .collect();
        // One outside the project: refused for itself, the rest stored.
        items.push((key("code/other/x"), PutSource::Bytes(Bytes::from_static(b"no"))));
        let results = client.put_many(items).await;
        assert_eq!(results.len(), 2501);
        assert!(results[..2500].iter().all(Result::is_ok));
        assert!(
            results[2500].as_ref().is_err_and(StorageError::is_permanent),
            "{:?}",
            results[2500]
        );
        assert_eq!(&backing.get(&key("code/alpha/d3/f10")).await.unwrap()[..], b"10");
        assert!(backing.get(&key("code/other/x")).await.is_err());

        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let big = vec![7u8; 3 * 1024 * 1024];
        backing
            .put(&key("code/alpha/big"), Bytes::from(big.clone()))
            .await
            .unwrap();
        let wanted = vec![
            (key("code/alpha/d1/f8"), out.join("a")),
            (key("code/alpha/missing"), out.join("b")),
            (key("code/alpha/big"), out.join("c")),
        ];
        let got = client.get_many_to_files(wanted).await;
        assert_eq!(*got[0].as_ref().unwrap(), 1);
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"8");
        assert!(matches!(got[1], Err(StorageError::NotFound(_))));
        assert_eq!(
            *got[2].as_ref().unwrap(),
            big.len() as u64,
            "a large object is fetched alone"
        );
        assert!(std::fs::read(out.join("c")).unwrap() == big);

        let keys: Vec<ObjectKey> = (0..2500).map(|i| key(&format!("code/alpha/d{}/f{i}", i % 7))).collect();
        assert!(client.delete_many(keys).await.iter().all(Result::is_ok));
        let left = backing.list(&KeyPrefix::parse("code/alpha").unwrap()).await.unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    /// A runner's token reaches its project's home as it does its files,
    /// and neither the home nor the files of any other project.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_scope_is_the_projects_files_and_home_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let backing = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
        let client = gateway(backing.clone(), dir.path()).await;
        let alpha = ProjectId::parse("alpha").unwrap();
        let beta = ProjectId::parse("beta").unwrap();
        let history = layout::home(&alpha)
            .key_for(&cloudcode_proto::path::WorkspacePath::parse(".bash_history").unwrap())
            .unwrap();
        client.put(&history, Bytes::from_static(b"ls\n")).await.unwrap();
        assert_eq!(&backing.get(&history).await.unwrap()[..], b"ls\n");
        assert_eq!(&client.get(&history).await.unwrap()[..], b"ls\n");
        let listed = client.list(&layout::home(&alpha)).await.unwrap();
        assert_eq!(listed.iter().map(|o| &o.key).collect::<Vec<_>>(), [&history]);

        let theirs = layout::home(&beta)
            .key_for(&cloudcode_proto::path::WorkspacePath::parse(".bash_history").unwrap())
            .unwrap();
        backing.put(&theirs, Bytes::from_static(b"secret")).await.unwrap();
        let refused = |r: Result<(), StorageError>| assert!(r.is_err(), "{r:?}");
        refused(client.get(&theirs).await.map(drop));
        refused(client.put(&theirs, Bytes::from_static(b"x")).await);
        refused(client.delete(&theirs).await);
        refused(client.copy(&theirs, &history).await);
        refused(client.list(&layout::home(&beta)).await.map(drop));
        // Nor a prefix of both: `home/` lists every project's home.
        refused(client.list(&KeyPrefix::parse("home").unwrap()).await.map(drop));
        assert_eq!(&backing.get(&theirs).await.unwrap()[..], b"secret");
        let put = client
            .put_many(vec![(theirs.clone(), PutSource::Bytes(Bytes::from_static(b"x")))])
            .await;
        let put = put.into_iter().next().unwrap();
        assert!(put.as_ref().is_err_and(StorageError::is_permanent), "{put:?}");
        assert_eq!(&backing.get(&theirs).await.unwrap()[..], b"secret");
    }

    /// A restore through the gateway brings back modes, links and empty
    /// directories (the manifest travels like any object).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_through_the_gateway_keeps_modes_links_and_empty_directories() {
        use cloudcode_proto::sync::persister::Persister;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let backing = Arc::new(LocalStore::open(dir.path().join("storage")).unwrap());
        let client: Arc<dyn ObjectStore> = Arc::new(gateway(backing, dir.path()).await);
        let prefix = KeyPrefix::parse("code/alpha").unwrap();
        let open = |name: &str| {
            let root = dir.path().join(name);
            std::fs::create_dir_all(&root).unwrap();
            let root = root.canonicalize().unwrap();
            let handle = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
            Persister::new(client.clone(), prefix.clone(), handle, root, Duration::from_millis(10))
        };
        let first = dir.path().join("first");
        std::fs::create_dir_all(first.join("bin")).unwrap();
        std::fs::write(first.join("run.sh"), "#!/bin/sh\necho ok\n").unwrap();
        std::fs::set_permissions(first.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(first.join("main.py"), "print(1)\n").unwrap();
        std::os::unix::fs::symlink("main.py", first.join("link.py")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", first.join("bin/python")).unwrap();
        std::fs::create_dir_all(first.join("emptydir")).unwrap();
        let persister = open("first");
        persister.mark_dirty(cloudcode_proto::path::WorkspacePath::root());
        assert!(
            persister
                .flush(Instant::now() + Duration::from_secs(20))
                .await
                .is_empty()
        );

        let second = open("second");
        second.restore().await.unwrap();
        let ws = dir.path().join("second");
        let mode = std::fs::metadata(ws.join("run.sh")).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, "{mode:o}");
        assert_eq!(
            std::fs::read_link(ws.join("link.py")).unwrap(),
            std::path::Path::new("main.py")
        );
        assert_eq!(
            std::fs::read_link(ws.join("bin/python")).unwrap(),
            std::path::Path::new("/usr/bin/python3")
        );
        assert!(ws.join("emptydir").is_dir());
        assert_eq!(std::fs::read_to_string(ws.join("main.py")).unwrap(), "print(1)\n");
    }
}
