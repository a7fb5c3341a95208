//! The runner's HTTP surface: one authenticated WebSocket endpoint, an
//! authenticated health check, and an unauthenticated readiness probe that
//! tells one bit (this runner serves). Everything else is a 404; nothing
//! about the project answers without a valid token for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloudcode_proto::PROTOCOL_VERSION;
use cloudcode_proto::rest::{ApiErrorBody, RunnerHealth};
use cloudcode_proto::token::{Claims, TokenError, TokenVerifier, unix_now};

use crate::state::RunnerState;

/// Subprotocol a browser offers to carry its token, since browsers cannot set
/// headers on a WebSocket: `Sec-WebSocket-Protocol: cloudcode.v1,
/// cloudcode-token.<token>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "cloudcode-token.";
pub const SUBPROTOCOL: &str = "cloudcode.v1";

/// Bytes a connection reads from its socket at a time. Tungstenite zeroes
/// this much of its read buffer before every read and allocates it for
/// every connection (128 KiB by default: a zeroing per keystroke and a
/// fresh allocation on every connect). What a client sends is keystrokes,
/// acks and requests, and file chunks, which still arrive whole into a
/// buffer grown for them: 16 KiB a read costs them a syscall per 16 KiB.
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// How many verified tokens are remembered. A project's clients are a
/// handful, each reconnecting with the token it has (every terminal tab,
/// every resume).
const VERIFIED_TOKENS: usize = 8;

/// What the endpoints share: the runner, and the tokens whose signature
/// was checked already.
struct Http {
    state: Arc<RunnerState>,
    verified: VerifiedTokens,
}

/// Tokens whose signature verified, with their claims. Checking an Ed25519
/// signature (about 40 µs) was the largest part of a WebSocket upgrade's
/// own work; a token seen before is recognised by comparing it, in
/// constant time, with the ones remembered. Its expiry is checked on every
/// use, as for a new one; a token stays as valid as its signature was
/// (tokens are not revoked, only expire), so remembering it changes no
/// answer.
#[derive(Default)]
struct VerifiedTokens {
    recent: Mutex<VecDeque<(String, Claims)>>,
}

impl VerifiedTokens {
    fn verify(&self, verifier: &TokenVerifier, project: &str, token: &str, now: u64) -> Result<(), TokenError> {
        let known = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            // Every entry is compared, whichever matches: the time taken
            // tells nothing of which one, nor how much of it, matched.
            recent.iter().fold(None, |found, (known, claims)| {
                let same = constant_time_eq(known.as_bytes(), token.as_bytes());
                if same { Some(claims.exp) } else { found }
            })
        };
        match known {
            Some(exp) if exp <= now => Err(TokenError::Expired),
            Some(_) => Ok(()),
            None => {
                let claims = verifier.verify(token, project, now)?;
                let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
                // Another connection may have verified it meanwhile.
                recent.retain(|(known, _)| !constant_time_eq(known.as_bytes(), token.as_bytes()));
                if recent.len() >= VERIFIED_TOKENS {
                    recent.pop_front();
                }
                recent.push_back((token.to_owned(), claims));
                Ok(())
            }
        }
    }
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths
/// only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

pub fn router(state: Arc<RunnerState>) -> Router {
    let http = Arc::new(Http {
        state,
        verified: VerifiedTokens::default(),
    });
    Router::new()
        .route(&format!("/v{PROTOCOL_VERSION}/ws"), get(websocket))
        .route(&format!("/v{PROTOCOL_VERSION}/health"), get(health))
        .route(&format!("/v{PROTOCOL_VERSION}/ready"), get(ready))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(http)
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

fn authenticate(http: &Http, headers: &HeaderMap) -> Result<(), TokenError> {
    let token = presented_token(headers).unwrap_or_default();
    let state = &http.state;
    http.verified
        .verify(&state.verifier, &state.project, &token, unix_now())
}

fn refusal(e: TokenError) -> Response {
    let status = match e {
        TokenError::WrongProject => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    tracing::info!("refused a request: {e}");
    error(status, "unauthorized", &e.to_string())
}

async fn websocket(State(http): State<Arc<Http>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if let Err(e) = authenticate(&http, &headers) {
        return refusal(e);
    }
    let state = http.state.clone();
    let limits = state.limits;
    upgrade
        .protocols([SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_message_size(limits.max_frame_size)
        .max_frame_size(limits.max_frame_size)
        .on_upgrade(move |socket| crate::connection::serve(socket, state))
}

async fn health(State(http): State<Arc<Http>>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&http, &headers) {
        return refusal(e);
    }
    let state = &http.state;
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

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcode_proto::token::TokenIssuer;

    const NOW: u64 = 1_000_000;

    fn token(issuer: &TokenIssuer, project: &str, exp: u64) -> String {
        issuer.issue(&Claims {
            project: project.into(),
            exp,
        })
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_it_expires() {
        let issuer = TokenIssuer::generate().unwrap();
        let verified = VerifiedTokens::default();
        let valid = token(&issuer, "alpha", NOW + 60);
        assert_eq!(verified.verify(&issuer.verifier(), "alpha", &valid, NOW), Ok(()));
        assert_eq!(verified.verify(&issuer.verifier(), "alpha", &valid, NOW + 59), Ok(()));
        assert_eq!(
            verified.verify(&issuer.verifier(), "alpha", &valid, NOW + 60),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn only_the_very_token_verified_is_recognised() {
        let issuer = TokenIssuer::generate().unwrap();
        let verifier = issuer.verifier();
        let verified = VerifiedTokens::default();
        let valid = token(&issuer, "alpha", NOW + 60);
        assert_eq!(verified.verify(&verifier, "alpha", &valid, NOW), Ok(()));
        // One character of the signature changed, or cut short: checked
        // again, and refused. (Not the last character: it also carries
        // padding bits, and a change there can make the base64 itself
        // malformed, a different refusal.)
        let mut forged = valid.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            verified.verify(&verifier, "alpha", &forged, NOW),
            Err(TokenError::BadSignature)
        );
        assert!(
            verified
                .verify(&verifier, "alpha", &valid[..valid.len() - 2], NOW)
                .is_err()
        );
        // Signed by another key: refused, remembered or not.
        let other = token(&TokenIssuer::generate().unwrap(), "alpha", NOW + 60);
        assert_eq!(
            verified.verify(&verifier, "alpha", &other, NOW),
            Err(TokenError::BadSignature)
        );
        // Another project's token is refused every time, never remembered.
        let elsewhere = token(&issuer, "victim", NOW + 60);
        for _ in 0..2 {
            assert_eq!(
                verified.verify(&verifier, "alpha", &elsewhere, NOW),
                Err(TokenError::WrongProject)
            );
        }
        assert_eq!(verified.recent.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_bounded_number_of_tokens_is_remembered() {
        let issuer = TokenIssuer::generate().unwrap();
        let verifier = issuer.verifier();
        let verified = VerifiedTokens::default();
        let tokens: Vec<String> = (0..VERIFIED_TOKENS as u64 + 3)
            .map(|i| token(&issuer, "alpha", NOW + 60 + i))
            .collect();
        for t in tokens.iter().chain(&tokens) {
            assert_eq!(verified.verify(&verifier, "alpha", t, NOW), Ok(()));
        }
        assert_eq!(verified.recent.lock().unwrap().len(), VERIFIED_TOKENS);
    }

    #[test]
    fn equal_means_every_byte() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
