//! cloudcode's runner: the data plane of one project, inside its sandbox.
//! It serves the project's files and terminals over the protocol of
//! `cloudcode-proto` and keeps object storage equal to the workspace.

pub mod activity;
pub mod config;
pub mod connection;
pub mod files;
pub mod manifest;
pub mod preview;
pub mod sched;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod terminal;
pub mod workspace_queue;
