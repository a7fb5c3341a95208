//! Keeping object storage equal to a directory: the runner's workspace
//! sync, and the control plane's mirror of a sandbox's storage to S3.
//! Behind the `sync` feature.

pub mod persister;
pub mod tree_watch;
pub mod watch;
