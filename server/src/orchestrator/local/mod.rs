//! The local backend: each project's runner is a child process in its own
//! bubblewrap sandbox on this machine.
//!
//! The sandbox: a read-only view of the system's programs in a read-only
//! private root, the project's workspace, its storage directory and its
//! socket directory as the only writable places besides a private /tmp and
//! /dev, its own pid, ipc, uts, network, user and mount namespaces, no new
//! user namespaces inside, uid 1000 inside and an unprivileged uid of its
//! own on the host (never root: see [`command`]), all capabilities dropped,
//! a new session (no TIOCSTI into our terminal). It does not die with this
//! server: a restart or an upgrade of the control plane leaves it running,
//! and the next server adopts it from its record ([`record`]). It has no
//! network at all (only its own loopback):
//! the gateway reaches the runner through Unix sockets bind-mounted into it,
//! so the sandbox can never reach the control plane's ports or any other
//! loopback service of the host. Its storage view is its own project's
//! directory only. Memory, process count and CPU are capped with cgroups
//! (v2, or v1 as on this machine) and rlimits.
//!
//! By concern: [`command`] builds the sandbox's command line, [`cgroup`]
//! its control groups, [`network`] its optional outbound network,
//! [`lifecycle`] starts, watches, stops and adopts sandboxes, and reaches the
//! operating system only through the small [`os::Os`] trait ([`os::HostOs`]
//! for real, a fake in the lifecycle's unit tests).

mod cgroup;
mod command;
mod lifecycle;
mod network;
mod os;
mod record;

use std::path::PathBuf;

pub use cgroup::{Cgroup, CgroupVersion};
pub use lifecycle::{Adoption, LocalBackend, LocalBackendError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    Bubblewrap,
    /// No sandbox at all: only with an explicit, loudly logged option.
    Insecure,
}

/// What a sandbox's network reaches. Either way it has its own network
/// namespace: the host's loopback (the control plane among it) is never
/// reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Its own loopback only.
    None,
    /// Outbound connections through slirp4netns (user-mode NAT), so
    /// `npm install` and `pip install` work; host loopback disabled.
    Outbound,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: u64,
    pub max_pids: u64,
    /// Percent of one core.
    pub cpu_percent: u64,
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub runner_binary: PathBuf,
    /// Per-project sandbox directories (workspace, sockets).
    pub root: PathBuf,
    /// Local storage root; each sandbox sees only `code/<project>/` of it.
    pub storage_dir: PathBuf,
    pub isolation: Isolation,
    pub network: Network,
    pub limits: Limits,
    /// Extra runner arguments (tests use it for short timeouts).
    pub runner_args: Vec<String>,
    /// With S3 storage: `storage_dir` is a local copy, mirrored to this
    /// store while the sandbox runs (see `mirror.rs`).
    pub mirror_to: Option<std::sync::Arc<dyn cloudcode_proto::storage::ObjectStore>>,
}
