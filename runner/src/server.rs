//! The runner's HTTP surface: one authenticated WebSocket endpoint, an
//! authenticated health check, and an unauthenticated readiness probe that
//! tells one bit (this runner serves). Everything else is a 404; nothing
//! about the project answers without a valid token for it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloudcode_proto::PROTOCOL_VERSION;
use cloudcode_proto::rest::{ApiErrorBody, RunnerHealth};
use cloudcode_proto::token::{TokenError, unix_now};

use crate::state::RunnerState;

/// Subprotocol a browser offers to carry its token, since browsers cannot set
/// headers on a WebSocket: `Sec-WebSocket-Protocol: cloudcode.v1,
/// cloudcode-token.<token>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "cloudcode-token.";
pub const SUBPROTOCOL: &str = "cloudcode.v1";

pub fn router(state: Arc<RunnerState>) -> Router {
    Router::new()
        .route(&format!("/v{PROTOCOL_VERSION}/ws"), get(websocket))
        .route(&format!("/v{PROTOCOL_VERSION}/health"), get(health))
        .route(&format!("/v{PROTOCOL_VERSION}/ready"), get(ready))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// For probes (a kubelet has no project token), so without one: one bit,
/// "this runner serves" (it listens only once the workspace is restored).
/// The answer is a constant: it reads nothing of the request nor of the
/// runner's state, so it cannot tell the project, the version, the
/// terminals, the clients or storage's health, to anyone.
async fn ready() -> &'static str {
    "ready\n"
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ApiErrorBody {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    (status, Json(body)).into_response()
}

/// The bearer token from `Authorization` or from the subprotocol list.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(TOKEN_SUBPROTOCOL_PREFIX).map(str::to_owned))
}

fn authenticate(state: &RunnerState, headers: &HeaderMap) -> Result<(), TokenError> {
    let token = presented_token(headers).unwrap_or_default();
    state.verifier.verify(&token, &state.project, unix_now()).map(|_| ())
}

fn refusal(e: TokenError) -> Response {
    let status = match e {
        TokenError::WrongProject => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    tracing::info!("refused a request: {e}");
    error(status, "unauthorized", &e.to_string())
}

async fn websocket(State(state): State<Arc<RunnerState>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if let Err(e) = authenticate(&state, &headers) {
        return refusal(e);
    }
    let limits = state.limits;
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(limits.max_frame_size)
        .max_frame_size(limits.max_frame_size)
        .on_upgrade(move |socket| crate::connection::serve(socket, state))
}

async fn health(State(state): State<Arc<RunnerState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&state, &headers) {
        return refusal(e);
    }
    Json(RunnerHealth {
        project: state.project.clone(),
        protocol: PROTOCOL_VERSION,
        terminals: state.terminals.count() as u64,
        clients: u64::from(state.activity.clients()),
        idle_secs: state.activity.idle_secs(),
        storage: state.persister.current_status(),
    })
    .into_response()
}
