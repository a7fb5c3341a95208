//! Command-line and environment settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// A local directory (`--storage-dir`).
    Local,
    /// An S3-compatible service (`--s3-*`).
    #[cfg(feature = "s3")]
    S3,
    /// The control plane's storage gateway (`--storage-gateway-url`), with
    /// the token in `--storage-token-file`: no storage credential here.
    #[cfg(feature = "gateway")]
    Gateway,
}

/// cloudcode-runner: serves one project's files and terminals over an
/// authenticated WebSocket and keeps object storage equal to its workspace.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, env = "CLOUDCODE_LISTEN", default_value = "127.0.0.1:3001")]
    pub listen: SocketAddr,

    /// Listen on this Unix socket instead of TCP: how the gateway reaches a
    /// runner in a sandbox that has no network of its own.
    #[arg(long, env = "CLOUDCODE_LISTEN_UNIX")]
    pub listen_unix: Option<PathBuf>,

    /// Also accept connections on this Unix socket and relay them, byte for
    /// byte, to the user's app on 127.0.0.1:<preview-port> in the sandbox:
    /// the preview route (HTTP and WebSocket alike).
    #[arg(long, env = "CLOUDCODE_PREVIEW_UNIX")]
    pub preview_unix: Option<PathBuf>,

    /// Port of the user's app inside the sandbox.
    #[arg(long, env = "CLOUDCODE_PREVIEW_PORT", default_value_t = 3000)]
    pub preview_port: u16,

    /// The project this runner serves; tokens for any other are refused.
    #[arg(long, env = "CLOUDCODE_PROJECT")]
    pub project: String,

    /// The control plane's Ed25519 public key (base64) that signs tokens.
    #[arg(long, env = "CLOUDCODE_TOKEN_PUBLIC_KEY")]
    pub token_public_key: String,

    /// The project's working copy.
    #[arg(long, env = "CLOUDCODE_WORKSPACE", default_value = cloudcode_proto::sandbox::WORKSPACE)]
    pub workspace: PathBuf,

    #[arg(long, env = "CLOUDCODE_STORAGE", value_enum, default_value = "local")]
    pub storage: StorageKind,

    /// Root directory of local storage.
    #[arg(long, env = "CLOUDCODE_STORAGE_DIR", required_if_eq("storage", "local"))]
    pub storage_dir: Option<PathBuf>,

    /// Key prefix of this project's files; the layout's `code/<project>/`
    /// by default.
    #[arg(long, env = "CLOUDCODE_STORAGE_PREFIX")]
    pub storage_prefix: Option<String>,

    #[cfg(feature = "s3")]
    #[command(flatten)]
    pub s3: cloudcode_proto::storage::s3::S3Args,

    /// The storage gateway's URL (`--storage gateway`).
    #[cfg(feature = "gateway")]
    #[arg(long, env = "CLOUDCODE_STORAGE_GATEWAY_URL", required_if_eq("storage", "gateway"))]
    pub storage_gateway_url: Option<String>,

    /// The file holding the storage gateway token, re-read on every request
    /// (the kubelet renews it in place).
    #[cfg(feature = "gateway")]
    #[arg(long, env = "CLOUDCODE_STORAGE_TOKEN_FILE", required_if_eq("storage", "gateway"))]
    pub storage_token_file: Option<PathBuf>,

    /// Shell for new terminals, with its arguments.
    #[arg(long, env = "CLOUDCODE_SHELL", num_args = 1.., value_delimiter = ' ')]
    pub shell: Option<Vec<String>>,

    /// HOME of terminal processes: a directory apart from the workspace,
    /// restored from and kept in storage under `home/<project>/` (without
    /// its caches), never part of the file tree clients see. Without it,
    /// HOME is the workspace itself.
    #[arg(long, env = "CLOUDCODE_HOME")]
    pub home: Option<PathBuf>,

    /// A project variable for terminals, KEY=VALUE; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub project_env: Vec<String>,

    /// Output bytes kept per terminal for clients that reconnect.
    #[arg(long, env = "CLOUDCODE_SCROLLBACK_BYTES", default_value_t = 1024 * 1024)]
    pub scrollback_bytes: usize,

    /// Seconds a terminal with no client attached lives on.
    #[arg(long, env = "CLOUDCODE_TERMINAL_IDLE_SECS", default_value_t = 1800)]
    pub terminal_idle_secs: u64,

    /// Largest file a client may read or write, in bytes.
    #[arg(long, env = "CLOUDCODE_MAX_FILE_SIZE", default_value_t = 1024 * 1024 * 1024)]
    pub max_file_size: u64,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "CLOUDCODE_MAX_FRAME_SIZE", default_value_t = 1024 * 1024 + 64)]
    pub max_frame_size: usize,

    /// How long programs' writes, across the whole workspace, must pause
    /// before what they changed is uploaded (at most 2 s after a change), in
    /// milliseconds.
    #[arg(long, env = "CLOUDCODE_SYNC_DEBOUNCE_MS", default_value_t = 100)]
    pub sync_debounce_ms: u64,

    /// Seconds to keep retrying storage on shutdown before giving up.
    #[arg(long, env = "CLOUDCODE_FLUSH_TIMEOUT_SECS", default_value_t = 30)]
    pub flush_timeout_secs: u64,
}

/// Environment variables a runner may be given that must never reach a
/// user's terminal; `main` removes them from its own environment too.
pub const SECRET_ENV: &[&str] = &[
    "CLOUDCODE_S3_ACCESS_KEY_ID",
    "CLOUDCODE_S3_SECRET_ACCESS_KEY",
    "CLOUDCODE_S3_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

impl Config {
    pub fn shell_argv(&self) -> Vec<String> {
        if let Some(shell) = &self.shell
            && !shell.is_empty()
        {
            return shell.clone();
        }
        let bash = std::path::Path::new("/bin/bash");
        vec![if bash.exists() { "/bin/bash" } else { "/bin/sh" }.to_owned()]
    }

    /// The complete environment of terminal processes: a fixed base, then
    /// the project's own variables. Nothing comes from the runner's own
    /// environment, which may hold credentials.
    pub fn terminal_env(&self, workspace: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
        let shell = self.shell_argv().first().cloned().unwrap_or_default();
        let home = self.home.clone().unwrap_or_else(|| workspace.to_path_buf());
        let mut env = vec![
            (
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ),
            ("HOME".to_owned(), home.display().to_string()),
            ("TERM".to_owned(), "xterm-256color".to_owned()),
            ("COLORTERM".to_owned(), "truecolor".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("SHELL".to_owned(), shell),
            ("CLOUDCODE_PROJECT".to_owned(), self.project.clone()),
        ];
        for pair in &self.project_env {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--env {pair:?}: expected KEY=VALUE"))?;
            if key.is_empty() || key.contains('\0') || value.contains('\0') {
                anyhow::bail!("--env {pair:?}: invalid variable");
            }
            env.retain(|(k, _)| k != key);
            env.push((key.to_owned(), value.to_owned()));
        }
        Ok(env)
    }
}
