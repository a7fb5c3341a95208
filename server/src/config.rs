//! Settings: flags, or `CLOUDCODE_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// cloudcode-server: projects from templates, a sandboxed runner per
/// project, and the gateway in front of them, on one port.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct Config {
    #[arg(long, env = "CLOUDCODE_SERVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where projects, sandboxes and local storage live; the user's data
    /// directory by default.
    #[arg(long, env = "CLOUDCODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where the API token and signing key are kept (0600); the user's
    /// config directory by default.
    #[arg(long, env = "CLOUDCODE_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,

    /// IDE origin: `<project>.<ide-domain>` reaches the project's runner.
    /// Browsers resolve `*.localhost` to this machine without DNS set-up.
    #[arg(long, env = "CLOUDCODE_IDE_DOMAIN", default_value = "ide.localhost")]
    pub ide_domain: String,

    /// Preview origin: `<project>.<preview-domain>` reaches the user's app.
    #[arg(long, env = "CLOUDCODE_PREVIEW_DOMAIN", default_value = "preview.localhost")]
    pub preview_domain: String,

    /// Scheme and port in the URLs handed to clients, when a proxy in front
    /// changes them.
    #[arg(long, env = "CLOUDCODE_PUBLIC_SCHEME", default_value = "http")]
    pub public_scheme: String,
    #[arg(long, env = "CLOUDCODE_PUBLIC_PORT")]
    pub public_port: Option<u16>,

    /// The runner binary; next to this one by default.
    #[arg(long, env = "CLOUDCODE_RUNNER_BINARY")]
    pub runner_binary: Option<PathBuf>,

    /// Run runners WITHOUT a sandbox when bubblewrap is missing. Users' code
    /// then runs with this server's privileges: for development only.
    #[arg(long, env = "CLOUDCODE_INSECURE_NO_SANDBOX")]
    pub insecure_no_sandbox: bool,

    /// Sandbox networking: `none` (its own loopback only) or `outbound`
    /// (connections out through slirp4netns, for npm/pip; the host's
    /// loopback stays unreachable).
    #[arg(long, env = "CLOUDCODE_SANDBOX_NETWORK", default_value = "none", value_parser = ["none", "outbound"])]
    pub sandbox_network: String,

    /// Memory cap per sandbox, in MiB.
    #[arg(long, env = "CLOUDCODE_SANDBOX_MEMORY_MIB", default_value_t = 1024)]
    pub sandbox_memory_mib: u64,
    /// Process cap per sandbox.
    #[arg(long, env = "CLOUDCODE_SANDBOX_PIDS", default_value_t = 256)]
    pub sandbox_pids: u64,
    /// CPU cap per sandbox, in percent of one core.
    #[arg(long, env = "CLOUDCODE_SANDBOX_CPU_PERCENT", default_value_t = 100)]
    pub sandbox_cpu_percent: u64,

    /// Seconds without a client or any activity after which a sandbox is
    /// stopped (its files flushed first); the next start restores it.
    #[arg(long, env = "CLOUDCODE_IDLE_TIMEOUT_SECS", default_value_t = 1800)]
    pub idle_timeout_secs: u64,

    /// Extra arguments for every runner, space-separated.
    #[arg(long, env = "CLOUDCODE_RUNNER_ARGS", value_delimiter = ' ', num_args = 0..)]
    pub runner_args: Vec<String>,
}
