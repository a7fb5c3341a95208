//! The control-plane HTTP API, the seed's two routes (`POST /project`,
//! `POST /start`) and the REST API beside them, behind one credential; and
//! the host-based routing into the gateway.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::gateway::{self, Route};
use crate::orchestrator::{Orchestrator, SandboxState};
use crate::projects::{ProjectError, ProjectId, Projects};

/// Requests to the API are small JSON documents.
const MAX_BODY: usize = 16 * 1024;

pub struct AppState {
    pub projects: Projects,
    pub orchestrator: Orchestrator,
    pub api_token: String,
    pub ide_domain: String,
    pub preview_domain: String,
    /// `http` or `https`, and the port clients reach us on, for the URLs we
    /// hand out.
    pub public_scheme: String,
    pub public_port: Option<u16>,
}

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "code": self.code, "message": self.message }))).into_response()
    }
}

impl From<ProjectError> for ApiError {
    fn from(e: ProjectError) -> Self {
        let (status, code) = match &e {
            ProjectError::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_id"),
            ProjectError::UnknownLanguage(_) => (StatusCode::BAD_REQUEST, "unknown_language"),
            ProjectError::Exists(_) => (StatusCode::CONFLICT, "exists"),
            ProjectError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ProjectError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<cloudcode_proto::storage::StorageError> for ApiError {
    fn from(e: cloudcode_proto::storage::StorageError) -> Self {
        ProjectError::Storage(e).into()
    }
}

/// JSON bodies with our error shape for every way they can be wrong.
pub struct JsonBody<T>(T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "too_large"
                } else {
                    "bad_request"
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/", get(index))
        .route("/project", post(seed_create))
        .route("/start", post(seed_start))
        .route("/api/projects", get(list).post(create))
        .route("/api/projects/{id}", get(show).delete(delete))
        .route("/api/projects/{id}/start", post(start))
        .route("/api/projects/{id}/stop", post(stop))
        .route("/api/projects/{id}/status", get(status))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), require_api_token))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .merge(api)
        // For probes and load balancers: says only that the server serves.
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn_with_state(state.clone(), route_by_host))
        .with_state(state)
}

/// Project hosts go to the gateway before any API routing or API auth.
async fn route_by_host(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let (project, preview) = match gateway::route(host.as_deref(), &state.ide_domain, &state.preview_domain) {
        Route::Api => return next.run(request).await,
        Route::BadProject => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such project").into_response();
        }
        Route::Ide(id) => (id, false),
        Route::Preview(id) => (id, true),
    };
    let Some(endpoints) = state.orchestrator.endpoints(&project).await else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_running",
            format!("project {project} is not running; start it first"),
        )
        .into_response();
    };
    let upstream = if preview { endpoints.preview } else { endpoints.ide };
    match gateway::forward(&upstream, request).await {
        Ok(response) => response,
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, "sandbox_unreachable", e.to_string()).into_response(),
    }
}

async fn require_api_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    let presented = from_header.or(from_query).unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), state.api_token.as_bytes()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API token is required",
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct SeedCreate {
    #[serde(rename = "replId")]
    repl_id: String,
    language: String,
}

#[derive(Deserialize)]
struct SeedStart {
    #[serde(rename = "replId")]
    repl_id: String,
}

#[derive(Deserialize)]
struct Create {
    id: String,
    language: String,
}

/// What the URL printed at start-up shows: where things are, and the
/// projects there are.
async fn index(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let projects: Vec<String> = state.projects.list().await?.into_iter().map(|p| p.id).collect();
    Ok(Json(json!({
        "service": "cloudcode-server",
        "version": env!("CARGO_PKG_VERSION"),
        "projects": projects,
        "api": {
            "create": "POST /api/projects {\"id\", \"language\": \"node-js\" | \"python\"}",
            "list": "GET /api/projects",
            "start": "POST /api/projects/{id}/start",
            "stop": "POST /api/projects/{id}/stop",
            "status": "GET /api/projects/{id}/status",
            "delete": "DELETE /api/projects/{id}",
        },
        "ide_domain": state.ide_domain,
        "preview_domain": state.preview_domain,
    })))
}

async fn seed_create(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<SeedCreate>,
) -> Result<Response, ApiError> {
    let record = state.projects.create(&body.repl_id, &body.language).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "replId": record.id, "language": record.language })),
    )
        .into_response())
}

async fn create(State(state): State<Arc<AppState>>, JsonBody(body): JsonBody<Create>) -> Result<Response, ApiError> {
    let record = state.projects.create(&body.id, &body.language).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "projects": state.projects.list().await? })))
}

async fn existing(state: &AppState, raw: &str) -> Result<ProjectId, ApiError> {
    let id = ProjectId::parse(raw).map_err(ProjectError::from)?;
    match state.projects.get(&id).await? {
        Some(_) => Ok(id),
        None => Err(ProjectError::NotFound(id.to_string()).into()),
    }
}

fn state_json(state: &SandboxState) -> Value {
    match state {
        SandboxState::Running(_) => json!({ "state": "running" }),
        SandboxState::Starting => json!({ "state": "starting" }),
        SandboxState::Stopping => json!({ "state": "stopping" }),
        SandboxState::Stopped => json!({ "state": "stopped" }),
        SandboxState::Failed { detail } => json!({ "state": "failed", "detail": detail }),
    }
}

async fn show(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = ProjectId::parse(&raw).map_err(ProjectError::from)?;
    let record = state
        .projects
        .get(&id)
        .await?
        .ok_or_else(|| ProjectError::NotFound(id.to_string()))?;
    let sandbox = state.orchestrator.state(&id).await;
    Ok(Json(json!({ "project": record, "sandbox": state_json(&sandbox) })))
}

async fn delete(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<StatusCode, ApiError> {
    let id = existing(&state, &raw).await?;
    state
        .orchestrator
        .forget(&id)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stop_failed", e.to_string()))?;
    state.projects.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn do_start(state: &AppState, raw: &str) -> Result<Json<Value>, ApiError> {
    let id = existing(state, raw).await?;
    let started = state
        .orchestrator
        .start(&id)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "start_failed", e.to_string()))?;
    let port = state.public_port.map(|p| format!(":{p}")).unwrap_or_default();
    let ws = if state.public_scheme == "https" { "wss" } else { "ws" };
    let ide_host = format!("{id}.{}{port}", state.ide_domain);
    Ok(Json(json!({
        "replId": id.as_str(),
        "ideUrl": format!("{}://{ide_host}/", state.public_scheme),
        "wsUrl": format!("{ws}://{ide_host}/v1/ws"),
        "previewUrl": format!("{}://{id}.{}{port}/", state.public_scheme, state.preview_domain),
        "token": started.token,
        "tokenExpires": started.expires,
    })))
}

async fn seed_start(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<SeedStart>,
) -> Result<Json<Value>, ApiError> {
    do_start(&state, &body.repl_id).await
}

async fn start(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    do_start(&state, &raw).await
}

async fn stop(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = existing(&state, &raw).await?;
    state
        .orchestrator
        .stop(&id)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stop_failed", e.to_string()))?;
    Ok(Json(json!({ "replId": id.as_str(), "state": "stopped" })))
}

async fn status(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = existing(&state, &raw).await?;
    let sandbox = state.orchestrator.state(&id).await;
    let mut value = state_json(&sandbox);
    value["replId"] = json!(id.as_str());
    Ok(Json(value))
}
