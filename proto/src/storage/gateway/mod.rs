//! The storage gateway: object storage reached through the control plane's
//! storage gateway, for runners that must hold no storage credentials of
//! their own (see "Storage gateway" in `PROTOCOL.md`).
//!
//! Every request carries a bearer token read from a file at the moment of
//! the request: on Kubernetes that file is a projected service-account token
//! the kubelet rotates, so a long-lived runner never holds a stale one. The
//! gateway maps the token to one project and refuses every key outside that
//! project's prefix, so what this store holds grants nothing beyond it.
//!
//! The wire format (HTTP, every request with `Authorization: Bearer`):
//! - `PUT /v1/storage/object?key=K` with the bytes and a `Content-Length`;
//! - `GET /v1/storage/object?key=K`: the bytes, or 404;
//! - `DELETE /v1/storage/object?key=K`: 204, also when there was none;
//! - `GET /v1/storage/list?prefix=P`: a JSON array of [`ListedObject`];
//! - `POST /v1/storage/copy` with a JSON [`CopyRequest`].
//!
//! 401 is a missing or refused token, 403 a key outside the token's
//! project, 413 an object over the gateway's limit, 429 too many refused
//! tokens from one caller, 503 storage down.

#[cfg(feature = "gateway")]
mod client;
#[cfg(feature = "gateway")]
pub use client::{GatewayConfigError, GatewayStore, percent_encode};

/// One object as the gateway lists it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

/// The body of `POST /v1/storage/copy`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct CopyRequest {
    pub from: String,
    pub to: String,
}
