//! Settings: flags, or `CLOUDCODE_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Where projects are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// A directory under the data directory.
    Local,
    /// An S3-compatible service (`--s3-*`).
    S3,
}

/// What runs sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Bubblewrap sandboxes on this machine.
    Local,
    /// A runner pod per project.
    Kubernetes,
}

/// The network a local sandbox has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxNetwork {
    /// Its own loopback only.
    None,
    /// Outbound connections through slirp4netns, never to the host's loopback.
    Outbound,
}

/// The scheme clients reach the server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How project hosts reach runner pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum K8sRouting {
    /// Wildcard Ingresses to this server, which proxies.
    Gateway,
    /// An Ingress per project.
    Ingress,
}

/// How runner pods reach storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum K8sStorage {
    /// Through this server's storage gateway, with their pod's token.
    Gateway,
    /// S3 themselves, with per-project credentials.
    Direct,
}

/// cloudcode-server: projects from templates, a sandboxed runner per
/// project, and the gateway in front of them, on one port.
///
/// Every setting is a flag, a `CLOUDCODE_*` environment variable, or a line
/// `CLOUDCODE_NAME=value` in the config file (`--config`, or `server.env` in
/// the user's config directory); flags win over the environment, which wins
/// over the file.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct Config {
    /// Print a new Ed25519 signing key (base64) and exit: for the
    /// credentials Secret that several replicas share.
    #[arg(long)]
    pub print_new_signing_key: bool,

    /// Stop every local sandbox of the data directory and exit: each runner
    /// flushes its files first. Sandboxes outlive the server (a restart or
    /// an upgrade keeps users' shells and apps running, as pods do); this
    /// is how a machine is left without any. No server may be running on
    /// the data directory. The projects start again with the next server.
    #[arg(long)]
    pub stop_sandboxes: bool,

    /// Config file of `CLOUDCODE_NAME=value` lines.
    #[arg(long, env = "CLOUDCODE_CONFIG")]
    pub config: Option<PathBuf>,

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

    /// Where projects live: `local` (a directory under the data directory)
    /// or `s3` (`--s3-*`; credentials in CLOUDCODE_S3_ACCESS_KEY_ID and
    /// CLOUDCODE_S3_SECRET_ACCESS_KEY, or the AWS default chain).
    #[arg(long, env = "CLOUDCODE_STORAGE", value_enum, default_value_t = StorageKind::Local)]
    pub storage: StorageKind,
    #[command(flatten)]
    pub s3: cloudcode_proto::storage::s3::S3Args,

    /// IDE origin: `<project>.<ide-domain>` reaches the project's runner.
    /// Browsers resolve `*.localhost` to this machine without DNS set-up.
    #[arg(long, env = "CLOUDCODE_IDE_DOMAIN", default_value = "ide.localhost")]
    pub ide_domain: String,

    /// Preview origin: `<project>.<preview-domain>` reaches the user's app.
    #[arg(long, env = "CLOUDCODE_PREVIEW_DOMAIN", default_value = "preview.localhost")]
    pub preview_domain: String,

    /// Scheme and port in the URLs handed to clients, when a proxy in front
    /// changes them.
    #[arg(long, env = "CLOUDCODE_PUBLIC_SCHEME", value_enum, default_value_t = Scheme::Http)]
    pub public_scheme: Scheme,
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
    #[arg(long, env = "CLOUDCODE_SANDBOX_NETWORK", value_enum, default_value_t = SandboxNetwork::None)]
    pub sandbox_network: SandboxNetwork,

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

    /// Where runners run: `local` (a bubblewrap sandbox per project on this
    /// machine) or `kubernetes` (a pod per project, in the cluster of
    /// KUBECONFIG or of the server's own service account; needs
    /// `--storage s3`).
    #[arg(long, env = "CLOUDCODE_BACKEND", value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,

    /// Extra arguments for every runner, space-separated.
    #[arg(long, env = "CLOUDCODE_RUNNER_ARGS", value_delimiter = ' ', num_args = 0..)]
    pub runner_args: Vec<String>,
}

/// Settings of the Kubernetes backend.
#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesArgs {
    /// The namespace runner pods live in.
    #[arg(long, env = "CLOUDCODE_K8S_NAMESPACE", default_value = "cloudcode-projects")]
    pub k8s_namespace: String,
    /// The runner pod template (Pod, Service, Ingress as YAML); the one in
    /// `k8s/runner-template.yaml` when absent.
    #[arg(long, env = "CLOUDCODE_K8S_TEMPLATE")]
    pub k8s_template: Option<PathBuf>,
    /// This installation's name, in the owner label of every object it
    /// creates.
    #[arg(long, env = "CLOUDCODE_K8S_OWNER", default_value = "cloudcode")]
    pub k8s_owner: String,
    /// The runner image, instead of the template's.
    #[arg(long, env = "CLOUDCODE_K8S_RUNNER_IMAGE")]
    pub k8s_runner_image: Option<String>,
    /// `gateway`: wildcard Ingresses to this server, which routes to each
    /// project's Service; `ingress`: one Ingress per project.
    #[arg(long, env = "CLOUDCODE_K8S_ROUTING", value_enum, default_value_t = K8sRouting::Gateway)]
    pub k8s_routing: K8sRouting,
    #[arg(long, env = "CLOUDCODE_K8S_INGRESS_CLASS")]
    pub k8s_ingress_class: Option<String>,
    /// How runner pods reach storage. `gateway`: through this server's
    /// storage gateway, each pod confined to its project by its own bound
    /// service-account token, with no storage credential in the pod.
    /// `direct`: straight to S3 with credentials from a per-project Secret
    /// (`--k8s-storage-secret-prefix`) that the operator scopes.
    #[arg(long, env = "CLOUDCODE_K8S_STORAGE", value_enum, default_value_t = K8sStorage::Gateway)]
    pub k8s_storage: K8sStorage,
    /// Where the storage gateway listens (a port of its own: the only one
    /// runner pods may reach).
    #[arg(long, env = "CLOUDCODE_K8S_STORAGE_GATEWAY_LISTEN", default_value = "0.0.0.0:8081")]
    pub k8s_storage_gateway_listen: SocketAddr,
    /// The storage gateway's URL as runner pods reach it; by default the
    /// `cloudcode-storage` Service of `k8s/`.
    #[arg(long, env = "CLOUDCODE_K8S_STORAGE_GATEWAY_URL")]
    pub k8s_storage_gateway_url: Option<String>,
    /// Largest object a runner may store through the gateway, in bytes.
    #[arg(long, env = "CLOUDCODE_K8S_STORAGE_MAX_OBJECT_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub k8s_storage_max_object_bytes: u64,
    /// Seconds an accepted runner token is trusted before it is reviewed
    /// again (0: every request).
    #[arg(long, env = "CLOUDCODE_K8S_STORAGE_TOKEN_CACHE_SECS", default_value_t = 30)]
    pub k8s_storage_token_cache_secs: u64,
    /// With `--k8s-storage direct`: each runner's storage credentials come
    /// from the Secret named this prefix plus the project id (credentials
    /// scoped to that project's prefix); empty to give runners none
    /// (workload identity).
    #[arg(
        long,
        env = "CLOUDCODE_K8S_STORAGE_SECRET_PREFIX",
        default_value = "cloudcode-storage-"
    )]
    pub k8s_storage_secret_prefix: String,
    #[arg(long, env = "CLOUDCODE_K8S_CPU_REQUEST", default_value = "50m")]
    pub k8s_cpu_request: String,
    #[arg(long, env = "CLOUDCODE_K8S_MEMORY_REQUEST", default_value = "96Mi")]
    pub k8s_memory_request: String,
    #[arg(long, env = "CLOUDCODE_K8S_CPU_LIMIT", default_value = "1")]
    pub k8s_cpu_limit: String,
    #[arg(long, env = "CLOUDCODE_K8S_MEMORY_LIMIT", default_value = "1Gi")]
    pub k8s_memory_limit: String,
    /// How long a pod may take to become ready (image pulls included).
    #[arg(long, env = "CLOUDCODE_K8S_START_TIMEOUT_SECS", default_value_t = 180)]
    pub k8s_start_timeout_secs: u64,
    #[arg(long, env = "CLOUDCODE_K8S_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub k8s_cluster_domain: String,
}

/// The config file to read: `--config PATH`, `CLOUDCODE_CONFIG`, or
/// `server.env` in the user's config directory when it exists. Found before
/// the flags are parsed, because the file supplies their defaults.
pub fn config_file_path(mut args: impl Iterator<Item = String>) -> Option<PathBuf> {
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    if let Some(path) = std::env::var_os("CLOUDCODE_CONFIG") {
        return Some(PathBuf::from(path));
    }
    directories::ProjectDirs::from("dev", "cloudcode", "cloudcode")
        .map(|d| d.config_dir().join("server.env"))
        .filter(|p| p.exists())
}

/// Reads the settings file (`CLOUDCODE_NAME=value` lines, see
/// [`cloudcode_proto::envfile`]); naming another file in it is refused.
pub fn read_config_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let settings = cloudcode_proto::envfile::read(path)?
        .ok_or_else(|| anyhow::anyhow!("the config file {} does not exist", path.display()))?;
    if settings.iter().any(|(key, _)| key == "CLOUDCODE_CONFIG") {
        anyhow::bail!("{}: CLOUDCODE_CONFIG cannot be set from a config file", path.display());
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.env");
        std::fs::write(
            &path,
            "# comment\nCLOUDCODE_IDE_DOMAIN = code.example.test\n\nCLOUDCODE_SANDBOX_PIDS=\"64\"\n",
        )
        .unwrap();
        assert_eq!(
            read_config_file(&path).unwrap(),
            vec![
                ("CLOUDCODE_IDE_DOMAIN".to_owned(), "code.example.test".to_owned()),
                ("CLOUDCODE_SANDBOX_PIDS".to_owned(), "64".to_owned())
            ]
        );
        std::fs::write(&path, "PATH=/evil\n").unwrap();
        assert!(read_config_file(&path).is_err());
        std::fs::write(&path, "no equals sign\n").unwrap();
        assert!(read_config_file(&path).is_err());
        let args = ["cloudcode-server", "--listen", "x", "--config", "/etc/cc.env"].map(String::from);
        assert_eq!(config_file_path(args.into_iter()), Some(PathBuf::from("/etc/cc.env")));
    }
}
