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
use cloudcode_proto::rest::{
    ApiErrorBody, ApiIndex, CSRF_HEADER, CreateProject, ProjectDetail, ProjectList, ProjectStatus, ProjectSummary,
    SERVICE, SandboxPhase, SandboxStatus, SeedCreated, SessionInfo, StartedProject,
};
use serde::Deserialize;

use crate::gateway::{self, Route};
use crate::orchestrator::{Orchestrator, SandboxState};
use crate::projects::{ProjectError, ProjectId, Projects};
use crate::session::{self, Sessions, constant_time_eq};
use crate::web;

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
    pub sessions: Sessions,
    pub web_policy: web::Policy,
}

impl AppState {
    /// The state the router needs beside the projects and the orchestrator,
    /// derived from the settings every deployment has.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        projects: Projects,
        orchestrator: Orchestrator,
        api_token: String,
        ide_domain: String,
        preview_domain: String,
        public_scheme: String,
        public_port: Option<u16>,
    ) -> Self {
        let sessions = Sessions::new(&api_token, public_scheme == "https");
        let web_policy = web::Policy::new(&public_scheme, public_port, &ide_domain, &preview_domain);
        Self {
            projects,
            orchestrator,
            api_token,
            ide_domain,
            preview_domain,
            public_scheme,
            public_port,
            sessions,
            web_policy,
        }
    }
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
        let body = ApiErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
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
        .route("/api", get(index))
        .route("/api/session", get(session_info).post(log_in).delete(log_out))
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
        .layer(middleware::from_fn_with_state(state.clone(), serve_page))
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
        Route::Ide(id) => {
            if let Some(origin) = request.headers().get(header::ORIGIN)
                && !is_ide_page_origin(origin.to_str().unwrap_or(""), &state)
            {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    "the runner answers only the IDE's own page",
                )
                .into_response();
            }
            (id, false)
        }
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
        // A person looks at the preview: nothing listening yet is the usual
        // case (the app is not running), and it deserves words, not JSON.
        Err(gateway::ProxyError::Connect(_)) if preview => preview_not_running(&project),
        Err(e) => ApiError::new(StatusCode::BAD_GATEWAY, "sandbox_unreachable", e.to_string()).into_response(),
    }
}

fn preview_not_running(project: &ProjectId) -> Response {
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta name=color-scheme content=\"light dark\">\
         <title>{project}: nothing is running</title>\
         <body style=\"font:15px system-ui,sans-serif;margin:2rem;line-height:1.5\">\
         <h1 style=\"font-size:1.2rem\">Nothing is answering on port 3000 yet</h1>\
         <p>Run the project (the Run button, or start your app in a terminal listening on port 3000) \
         and reload this preview.</p>"
    );
    let mut response = (StatusCode::BAD_GATEWAY, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// Browsers (with an `Origin`) may reach a runner only from a page of the
/// API origin, never from a preview (hostile) or another project's host.
/// Clients that are not browsers send no `Origin` and are judged by their
/// token alone.
fn is_ide_page_origin(origin: &str, state: &AppState) -> bool {
    let Some(host) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    matches!(
        gateway::route(Some(host), &state.ide_domain, &state.preview_domain),
        Route::Api
    )
}

/// The page and its assets, with the headers that confine it; every answer
/// of the API origin gets those headers.
async fn serve_page(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let is_read = request.method() == axum::http::Method::GET || request.method() == axum::http::Method::HEAD;
    let mut response = match web::serve(request.uri().path(), request.headers()) {
        Some(page) if is_read => page,
        _ => next.run(request).await,
    };
    web::harden(response.headers_mut(), &state.web_policy);
    response
}

/// How a request proved who it is.
enum Credential<'a> {
    Token,
    Session(&'a str),
}

fn credential<'a>(state: &AppState, request: &'a Request) -> Option<Credential<'a>> {
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
    if let Some(presented) = from_header.or(from_query) {
        return constant_time_eq(presented.as_bytes(), state.api_token.as_bytes()).then_some(Credential::Token);
    }
    let cookie = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookie_header)?;
    state.sessions.verify(cookie).then_some(Credential::Session(cookie))
}

async fn require_api_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match credential(&state, &request) {
        Some(Credential::Token) => {}
        Some(Credential::Session(cookie)) => {
            let safe = matches!(
                *request.method(),
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            let csrf = request
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !safe && !state.sessions.csrf_matches(cookie, csrf) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    format!("a request that changes state needs the {CSRF_HEADER} header of its session"),
                )
                .into_response();
            }
        }
        None => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API token is required",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Trades the API token for a session cookie (the page calls this with the
/// token from its URL fragment or a login form).
async fn log_in(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let cookie = state
        .sessions
        .issue()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let csrf = state.sessions.csrf_for(&cookie);
    let mut response = (StatusCode::OK, Json(SessionInfo { csrf })).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&state.sessions.set_cookie(&cookie)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn session_info(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    match credential(&state, &request) {
        Some(Credential::Session(cookie)) => {
            let mut response = Json(SessionInfo {
                csrf: state.sessions.csrf_for(cookie),
            })
            .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            Ok(response)
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_session",
            "this browser is not logged in",
        )),
    }
}

async fn log_out(State(state): State<Arc<AppState>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = header::HeaderValue::from_str(&state.sessions.clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
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

/// What the URL printed at start-up shows: where things are, and the
/// projects there are.
async fn index(State(state): State<Arc<AppState>>) -> Result<Json<ApiIndex>, ApiError> {
    let projects: Vec<String> = state.projects.list().await?.into_iter().map(|p| p.id).collect();
    let api = [
        (
            "create",
            "POST /api/projects {\"id\", \"language\": \"node-js\" | \"python\"}",
        ),
        ("list", "GET /api/projects"),
        ("start", "POST /api/projects/{id}/start"),
        ("stop", "POST /api/projects/{id}/stop"),
        ("status", "GET /api/projects/{id}/status"),
        ("delete", "DELETE /api/projects/{id}"),
    ];
    Ok(Json(ApiIndex {
        service: SERVICE.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        projects,
        api: api.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        ide_domain: state.ide_domain.clone(),
        preview_domain: state.preview_domain.clone(),
    }))
}

async fn seed_create(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<SeedCreate>,
) -> Result<Response, ApiError> {
    let record = state.projects.create(&body.repl_id, &body.language).await?;
    Ok((
        StatusCode::CREATED,
        Json(SeedCreated {
            repl_id: record.id,
            language: record.language,
        }),
    )
        .into_response())
}

async fn create(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<CreateProject>,
) -> Result<Response, ApiError> {
    let record = state.projects.create(&body.id, &body.language).await?;
    let summary = ProjectSummary {
        id: record.id,
        language: record.language,
        created_ms: record.created_ms,
        state: SandboxPhase::Stopped,
        detail: None,
    };
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

async fn list(State(state): State<Arc<AppState>>) -> Result<Json<ProjectList>, ApiError> {
    let mut projects = Vec::new();
    for record in state.projects.list().await? {
        let (phase, detail) = match ProjectId::parse(&record.id) {
            Ok(id) => phase(&state.orchestrator.state(&id).await),
            Err(_) => (SandboxPhase::Stopped, None),
        };
        projects.push(ProjectSummary {
            id: record.id,
            language: record.language,
            created_ms: record.created_ms,
            state: phase,
            detail,
        });
    }
    Ok(Json(ProjectList { projects }))
}

async fn existing(state: &AppState, raw: &str) -> Result<ProjectId, ApiError> {
    let id = ProjectId::parse(raw).map_err(ProjectError::from)?;
    match state.projects.get(&id).await? {
        Some(_) => Ok(id),
        None => Err(ProjectError::NotFound(id.to_string()).into()),
    }
}

fn phase(state: &SandboxState) -> (SandboxPhase, Option<String>) {
    match state {
        SandboxState::Running(_) => (SandboxPhase::Running, None),
        SandboxState::Starting => (SandboxPhase::Starting, None),
        SandboxState::Stopping => (SandboxPhase::Stopping, None),
        SandboxState::Stopped => (SandboxPhase::Stopped, None),
        SandboxState::Failed { detail } => (SandboxPhase::Failed, Some(detail.clone())),
    }
}

async fn show(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<ProjectDetail>, ApiError> {
    let id = ProjectId::parse(&raw).map_err(ProjectError::from)?;
    let record = state
        .projects
        .get(&id)
        .await?
        .ok_or_else(|| ProjectError::NotFound(id.to_string()))?;
    let (phase, detail) = phase(&state.orchestrator.state(&id).await);
    Ok(Json(ProjectDetail {
        project: record,
        sandbox: SandboxStatus { state: phase, detail },
    }))
}

async fn delete(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<StatusCode, ApiError> {
    let id = existing(&state, &raw).await?;
    state
        .orchestrator
        .forget(&id, state.projects.delete(&id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stop_failed", e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

async fn do_start(state: &AppState, raw: &str) -> Result<Json<StartedProject>, ApiError> {
    let id = ProjectId::parse(raw).map_err(ProjectError::from)?;
    let started = state
        .orchestrator
        .start_if(&id, async { existing(state, raw).await.map(drop) })
        .await?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "start_failed", e.to_string()))?;
    let port = state.public_port.map(|p| format!(":{p}")).unwrap_or_default();
    let ws = if state.public_scheme == "https" { "wss" } else { "ws" };
    let ide_host = format!("{id}.{}{port}", state.ide_domain);
    Ok(Json(StartedProject {
        repl_id: id.to_string(),
        ide_url: format!("{}://{ide_host}/", state.public_scheme),
        ws_url: format!("{ws}://{ide_host}/v1/ws"),
        preview_url: format!("{}://{id}.{}{port}/", state.public_scheme, state.preview_domain),
        token: started.token,
        token_expires: started.expires,
    }))
}

async fn seed_start(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<SeedStart>,
) -> Result<Json<StartedProject>, ApiError> {
    do_start(&state, &body.repl_id).await
}

async fn start(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<StartedProject>, ApiError> {
    do_start(&state, &raw).await
}

async fn stop(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<ProjectStatus>, ApiError> {
    let id = existing(&state, &raw).await?;
    state
        .orchestrator
        .stop(&id)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stop_failed", e.to_string()))?;
    Ok(Json(ProjectStatus {
        repl_id: id.to_string(),
        state: SandboxPhase::Stopped,
        detail: None,
    }))
}

async fn status(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Json<ProjectStatus>, ApiError> {
    let id = existing(&state, &raw).await?;
    let (phase, detail) = phase(&state.orchestrator.state(&id).await);
    Ok(Json(ProjectStatus {
        repl_id: id.to_string(),
        state: phase,
        detail,
    }))
}
