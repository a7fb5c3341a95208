//! The pieces every cloudcode component shares: the runner's wire protocol
//! ([`message`] for control messages, [`frame`] for the binary path), the
//! rules that confine a client-supplied path to a workspace ([`path`]), the
//! project-scoped access tokens ([`token`]), object storage ([`storage`]),
//! and the control plane's REST bodies and language catalogue ([`rest`]).
//!
//! `proto/PROTOCOL.md` is the protocol's reference.

#[cfg(feature = "client")]
pub mod client;
pub mod envfile;
pub mod frame;
pub mod message;
pub mod path;
pub mod project;
pub mod rest;
pub mod sandbox;
pub mod storage;
#[cfg(feature = "sync")]
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
#[cfg(feature = "ts")]
pub mod typescript;

/// Version of the runner protocol. Bumped on any incompatible change; the
/// WebSocket endpoint is `/v{PROTOCOL_VERSION}/ws`.
pub const PROTOCOL_VERSION: u32 = 1;
