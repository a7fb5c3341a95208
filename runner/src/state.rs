//! What every connection of one runner shares.

use std::sync::Arc;

use cloudcode_proto::token::TokenVerifier;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::files::Workspace;
use crate::terminal::Terminals;
use cloudcode_proto::sync::persister::Persister;
use cloudcode_proto::sync::watch::FsEvents;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file a client may read or write.
    pub max_file_size: u64,
    /// Largest WebSocket message accepted.
    pub max_frame_size: usize,
}

pub struct RunnerState {
    pub project: String,
    pub verifier: TokenVerifier,
    pub workspace: Arc<Workspace>,
    pub terminals: Arc<Terminals>,
    pub persister: Arc<Persister>,
    pub fs_events: FsEvents,
    pub limits: Limits,
    pub activity: Arc<Activity>,
    /// Cancelled when the runner shuts down.
    pub shutdown: CancellationToken,
}
