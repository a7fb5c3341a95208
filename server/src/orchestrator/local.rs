//! The local backend: each project's runner is a child process in its own
//! bubblewrap sandbox on this machine.
//!
//! The sandbox: a read-only view of the system's programs, the project's
//! workspace as the only writable place besides a private /tmp, its own pid,
//! ipc, uts, network, user and mount namespaces, an unprivileged uid, all
//! capabilities dropped, a new session (no TIOCSTI into our terminal), and
//! death with its parent. It has no network at all (only its own loopback):
//! the gateway reaches the runner through Unix sockets bind-mounted into it,
//! so the sandbox can never reach the control plane's ports or any other
//! loopback service of the host. Its storage view is its own project's
//! directory only. Memory, process count and CPU are capped with cgroups
//! (v2, or v1 as on this machine) and rlimits.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{Endpoints, OrchestratorError, SandboxBackend, SandboxSpec, SandboxState};
use crate::gateway::Upstream;
use crate::projects::ProjectId;

/// Inside the sandbox.
const RUNNER_PATH: &str = "/opt/cloudcode/cloudcode-runner";
const SOCKET_DIR: &str = "/run/cloudcode";
const WORKSPACE: &str = "/workspace";
const STORAGE: &str = "/storage";
/// `close_range` flag: mark close-on-exec instead of closing now (Linux 5.11).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

struct Running {
    child: Child,
    mirror: Option<crate::mirror::Mirror>,
    /// The sandbox's user-mode network stack, with `Network::Outbound`.
    slirp: Option<Child>,
    endpoints: Endpoints,
    cgroup: Option<Cgroup>,
}

pub struct LocalBackend {
    config: LocalConfig,
    running: Mutex<HashMap<ProjectId, Running>>,
    failed: Mutex<HashMap<ProjectId, String>>,
    stopping: Mutex<std::collections::HashSet<ProjectId>>,
    cgroups: CgroupVersion,
}

impl LocalBackend {
    pub fn new(config: LocalConfig) -> Self {
        let cgroups = CgroupVersion::detect();
        tracing::info!(?cgroups, isolation = ?config.isolation, "local sandbox backend");
        Self {
            config,
            running: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            stopping: Mutex::new(Default::default()),
            cgroups,
        }
    }

    fn project_dir(&self, project: &ProjectId) -> PathBuf {
        self.config.root.join(project.as_str())
    }

    fn endpoints(&self, project: &ProjectId) -> Endpoints {
        let sockets = self.project_dir(project).join("run");
        Endpoints {
            ide: Upstream::Unix(sockets.join("ide.sock")),
            preview: Upstream::Unix(sockets.join("preview.sock")),
        }
    }

    fn command(&self, spec: &SandboxSpec) -> std::io::Result<Command> {
        let dir = self.project_dir(&spec.project);
        let workspace = dir.join("workspace");
        let sockets = dir.join("run");
        let storage = self.config.storage_dir.join("code").join(spec.project.as_str());
        for d in [&workspace, &sockets, &storage] {
            std::fs::create_dir_all(d)?;
        }
        let runner_args = |socket_dir: &Path, workspace: &Path, storage_root: &Path| {
            let mut args: Vec<String> = vec![
                "--listen-unix".into(),
                socket_dir.join("ide.sock").display().to_string(),
                "--preview-unix".into(),
                socket_dir.join("preview.sock").display().to_string(),
                "--project".into(),
                spec.project.to_string(),
                "--token-public-key".into(),
                spec.token_public_key.clone(),
                "--workspace".into(),
                workspace.display().to_string(),
                "--storage".into(),
                "local".into(),
                "--storage-dir".into(),
                storage_root.display().to_string(),
            ];
            args.extend(self.config.runner_args.iter().cloned());
            args
        };
        let mut cmd = match self.config.isolation {
            Isolation::Insecure => {
                let mut cmd = Command::new(&self.config.runner_binary);
                cmd.args(runner_args(&sockets, &workspace, &self.config.storage_dir));
                cmd
            }
            Isolation::Bubblewrap => {
                let identity = dir.join("etc");
                write_identity_files(&identity, &spec.project)?;
                let mut cmd = Command::new("bwrap");
                cmd.args([
                    "--die-with-parent",
                    "--new-session",
                    "--unshare-all",
                    "--cap-drop",
                    "ALL",
                ])
                .args(["--uid", "1000", "--gid", "1000", "--hostname", spec.project.as_str()])
                .args(["--ro-bind", "/usr", "/usr"])
                .args(["--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin"])
                .args(["--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
                .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
                for etc in [
                    "ld.so.cache",
                    "ssl",
                    "ca-certificates",
                    "alternatives",
                    "localtime",
                    "bash.bashrc",
                    "inputrc",
                ] {
                    let host = format!("/etc/{etc}");
                    cmd.args(["--ro-bind-try", &host, &host]);
                }
                if self.config.network == Network::Outbound {
                    cmd.arg("--ro-bind")
                        .arg(identity.join("resolv.conf"))
                        .arg("/etc/resolv.conf");
                }
                for file in ["passwd", "group", "hosts", "nsswitch.conf"] {
                    cmd.arg("--ro-bind")
                        .arg(identity.join(file))
                        .arg(format!("/etc/{file}"));
                }
                cmd.arg("--ro-bind").arg(&self.config.runner_binary).arg(RUNNER_PATH);
                cmd.arg("--bind").arg(&workspace).arg(WORKSPACE);
                cmd.arg("--bind").arg(&sockets).arg(SOCKET_DIR);
                cmd.arg("--bind")
                    .arg(&storage)
                    .arg(format!("{STORAGE}/code/{}", spec.project));
                cmd.args(["--chdir", WORKSPACE, "--clearenv"])
                    .args(["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"])
                    .args(["--setenv", "HOME", WORKSPACE])
                    .args(["--", RUNNER_PATH])
                    .args(runner_args(
                        Path::new(SOCKET_DIR),
                        Path::new(WORKSPACE),
                        Path::new(STORAGE),
                    ));
                cmd
            }
        };
        // The runner's environment holds nothing of ours.
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("RUST_LOG", "cloudcode_runner=info");
        // Never hand the sandbox one of our descriptors: if this server runs
        // in a terminal, an inherited stderr would be a way to inject input
        // into it (TIOCSTI). The runner's log comes back through a pipe.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        Ok(cmd)
    }
}

/// A passwd/group pair naming the sandbox's one user, and hosts for its
/// own loopback: the host's files say too much.
fn write_identity_files(dir: &Path, project: &ProjectId) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("passwd"),
        "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nuser:x:1000:1000:cloudcode user:/workspace:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    std::fs::write(dir.join("group"), "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")?;
    std::fs::write(
        dir.join("hosts"),
        format!("127.0.0.1 localhost {project}\n::1 localhost\n"),
    )?;
    std::fs::write(
        dir.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )?;
    // slirp4netns's built-in DNS forwarder, for `Network::Outbound`.
    std::fs::write(dir.join("resolv.conf"), "nameserver 10.0.2.3\n")?;
    Ok(())
}

#[async_trait]
impl SandboxBackend for LocalBackend {
    async fn ensure_running(&self, spec: &SandboxSpec) -> Result<Endpoints, OrchestratorError> {
        let mut running = self.running.lock().await;
        if let Some(existing) = running.get_mut(&spec.project) {
            match existing.child.try_wait() {
                Ok(None) => return Ok(existing.endpoints.clone()),
                Ok(Some(status)) => {
                    let detail = format!("the runner exited unexpectedly ({status}); restarted");
                    tracing::warn!(project = %spec.project, "{detail}");
                    if let Some(sandbox) = running.remove(&spec.project) {
                        retire(sandbox);
                    }
                }
                Err(e) => return Err(OrchestratorError::Start(e.to_string())),
            }
        }
        let endpoints = self.endpoints(&spec.project);
        let mirror = match &self.config.mirror_to {
            Some(store) => {
                let dir = self.config.storage_dir.join("code").join(spec.project.as_str());
                let mirror = crate::mirror::Mirror::start(store.clone(), &spec.project, &dir)
                    .await
                    .map_err(|e| OrchestratorError::Start(e.to_string()))?;
                Some(mirror)
            }
            None => None,
        };
        let mut cmd = self
            .command(spec)
            .map_err(|e| OrchestratorError::Start(format!("preparing the sandbox: {e}")))?;
        let cgroup = self.cgroups.create(&spec.project, &self.config.limits);
        let joins: Vec<CString> = cgroup
            .as_ref()
            .map(|c| {
                c.procs_files()
                    .iter()
                    .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: only async-signal-safe calls (open, write, close,
        // close_range, setrlimit)
        // on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                for file in &joins {
                    join_cgroup(file);
                }
                // Descriptors this server inherited without close-on-exec
                // (a terminal, a socket) must not reach the sandbox.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
                set_rlimit(libc::RLIMIT_CORE, 0);
                set_rlimit(libc::RLIMIT_NOFILE, 8192);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| OrchestratorError::Start(format!("spawning the sandbox: {e}")))?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(relay_log(spec.project.clone(), stderr));
        }
        let slirp = match (self.config.network, self.config.isolation, child.id()) {
            (Network::Outbound, Isolation::Bubblewrap, Some(bwrap)) => start_slirp(bwrap).await,
            _ => None,
        };
        tracing::info!(project = %spec.project, pid = ?child.id(), "sandbox started");
        self.failed.lock().await.remove(&spec.project);
        running.insert(
            spec.project.clone(),
            Running {
                child,
                mirror,
                slirp,
                endpoints: endpoints.clone(),
                cgroup,
            },
        );
        Ok(endpoints)
    }

    async fn stop(&self, project: &ProjectId) -> Result<(), OrchestratorError> {
        let mut running = self.running.lock().await;
        let Some(mut sandbox) = running.remove(project) else {
            return Ok(());
        };
        self.stopping.lock().await.insert(project.clone());
        drop(running);
        // The runner flushes pending changes to storage on SIGTERM. In a
        // sandbox it is bwrap's grandchild (bwrap, its pid-1 reaper, the
        // runner); the sandbox ends when the runner does.
        if let Some(pid) = sandbox.child.id() {
            let runner = match self.config.isolation {
                Isolation::Insecure => Some(pid),
                Isolation::Bubblewrap => children(pid)
                    .into_iter()
                    .next()
                    .and_then(|reaper| children(reaper).into_iter().next()),
            };
            if let Some(runner) = runner {
                signal(runner, libc::SIGTERM);
            }
        }
        let exited = tokio::time::timeout(Duration::from_secs(40), sandbox.child.wait()).await;
        if exited.is_err() {
            tracing::warn!(%project, "runner did not stop in 40 s: killing the sandbox");
            let _ = sandbox.child.kill().await;
        }
        if let Some(mut slirp) = sandbox.slirp {
            let _ = slirp.kill().await;
        }
        if let Some(cgroup) = sandbox.cgroup {
            cgroup.kill_all();
            cgroup.remove();
        }
        if let Some(mirror) = sandbox.mirror {
            let unsaved = mirror.finish().await;
            if !unsaved.is_empty() {
                tracing::error!(%project, "S3 unreachable: {} paths not mirrored yet: {unsaved:?}", unsaved.len());
            }
        }
        self.stopping.lock().await.remove(project);
        tracing::info!(%project, "sandbox stopped");
        Ok(())
    }

    async fn state(&self, project: &ProjectId) -> SandboxState {
        let mut running = self.running.lock().await;
        if let Some(sandbox) = running.get_mut(project) {
            match sandbox.child.try_wait() {
                Ok(None) => return SandboxState::Running(sandbox.endpoints.clone()),
                Ok(Some(status)) => {
                    let detail = format!("the runner exited unexpectedly ({status})");
                    if let Some(sandbox) = running.remove(project) {
                        retire(sandbox);
                    }
                    self.failed.lock().await.insert(project.clone(), detail);
                }
                Err(e) => return SandboxState::Failed { detail: e.to_string() },
            }
        }
        if self.stopping.lock().await.contains(project) {
            return SandboxState::Stopping;
        }
        match self.failed.lock().await.get(project) {
            Some(detail) => SandboxState::Failed { detail: detail.clone() },
            None => SandboxState::Stopped,
        }
    }

    async fn running(&self) -> Vec<ProjectId> {
        self.running.lock().await.keys().cloned().collect()
    }

    async fn forget(&self, project: &ProjectId) {
        let _ = std::fs::remove_dir_all(self.project_dir(project));
        if self.config.mirror_to.is_some() {
            let _ = std::fs::remove_dir_all(self.config.storage_dir.join("code").join(project.as_str()));
        }
        self.failed.lock().await.remove(project);
    }
}

/// Attaches slirp4netns to the sandbox's network namespace (that of bwrap's
/// child, the namespace's first process). `None`, logged, if it cannot: the
/// sandbox then simply has no outbound network.
async fn start_slirp(bwrap: u32) -> Option<Child> {
    let mut namespace_pid = None;
    for _ in 0..200 {
        namespace_pid = children(bwrap).into_iter().next();
        if namespace_pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = namespace_pid?;
    let mut command = Command::new("slirp4netns");
    // SAFETY: prctl is async-signal-safe. It dies with this server, like
    // the sandbox it serves (bwrap --die-with-parent).
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let spawned = command
        // By path: joining via the pid makes slirp4netns enter the
        // sandbox's user namespace first, where it may not join the network.
        .args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--netns-type=path",
        ])
        .arg(format!("/proc/{pid}/ns/net"))
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!("slirp4netns could not start ({e}): the sandbox has no outbound network");
            None
        }
    }
}

/// Cleans up after a sandbox that ended by itself.
fn retire(sandbox: Running) {
    if let Some(cgroup) = sandbox.cgroup {
        cgroup.remove();
    }
    if let Some(mirror) = sandbox.mirror {
        tokio::spawn(async move {
            let unsaved = mirror.finish().await;
            if !unsaved.is_empty() {
                tracing::error!("S3 unreachable: {} paths not mirrored yet: {unsaved:?}", unsaved.len());
            }
        });
    }
}

/// Re-emits the runner's log lines as ours, tagged with the project.
async fn relay_log(project: ProjectId, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "cloudcode_server::runner", %project, "{line}");
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn set_rlimit(resource: libc::__rlimit_resource_t, value: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass; async-signal-safe.
    unsafe {
        libc::setrlimit(resource, &limit);
    }
}

/// Writes the calling process's pid into a `cgroup.procs` file. Runs between
/// fork and exec: no allocation.
fn join_cgroup(procs: &CString) {
    // SAFETY: open/write/close on a NUL-terminated path and a stack buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 {
            return;
        }
        let mut buf = [0u8; 20];
        let mut n = libc::getpid() as u64;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        libc::write(fd, buf[i..].as_ptr().cast(), buf.len() - i);
        libc::close(fd);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V2,
    V1,
    Unavailable,
}

/// One sandbox's control groups.
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

impl CgroupVersion {
    pub fn detect() -> Self {
        let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") && controllers.contains("pids") {
            CgroupVersion::V2
        } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
            && Path::new("/sys/fs/cgroup/pids").exists()
        {
            CgroupVersion::V1
        } else {
            CgroupVersion::Unavailable
        }
    }

    /// Creates the sandbox's cgroups with its limits; `None` (logged) where
    /// cgroups cannot be used, leaving rlimits as the only cap.
    fn create(self, project: &ProjectId, limits: &Limits) -> Option<Cgroup> {
        let result = match self {
            CgroupVersion::V2 => {
                let parent = Path::new("/sys/fs/cgroup/cloudcode");
                let dir = parent.join(project.as_str());
                (|| -> std::io::Result<Cgroup> {
                    std::fs::create_dir_all(&dir)?;
                    let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids +cpu");
                    std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                    std::fs::write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    std::fs::write(dir.join("pids.max"), limits.max_pids.to_string())?;
                    std::fs::write(dir.join("cpu.max"), format!("{} 100000", limits.cpu_percent * 1000))?;
                    Ok(Cgroup { dirs: vec![dir] })
                })()
            }
            CgroupVersion::V1 => (|| -> std::io::Result<Cgroup> {
                let mut dirs = Vec::new();
                for controller in ["memory", "pids", "cpu"] {
                    let dir = Path::new("/sys/fs/cgroup")
                        .join(controller)
                        .join("cloudcode")
                        .join(project.as_str());
                    std::fs::create_dir_all(&dir)?;
                    dirs.push(dir);
                }
                std::fs::write(dirs[0].join("memory.limit_in_bytes"), limits.memory_bytes.to_string())?;
                let _ = std::fs::write(
                    dirs[0].join("memory.memsw.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                );
                std::fs::write(dirs[1].join("pids.max"), limits.max_pids.to_string())?;
                std::fs::write(dirs[2].join("cpu.cfs_period_us"), "100000")?;
                std::fs::write(
                    dirs[2].join("cpu.cfs_quota_us"),
                    (limits.cpu_percent * 1000).to_string(),
                )?;
                Ok(Cgroup { dirs })
            })(),
            CgroupVersion::Unavailable => {
                tracing::warn!(%project, "no usable cgroups: memory, process and CPU limits are rlimits only");
                return None;
            }
        };
        match result {
            Ok(cgroup) => Some(cgroup),
            Err(e) => {
                tracing::warn!(%project, "cgroup setup failed ({e}): limits are rlimits only");
                None
            }
        }
    }
}

impl Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// SIGKILLs whatever is still in the sandbox's cgroup.
    fn kill_all(&self) {
        for file in self.procs_files() {
            for pid in std::fs::read_to_string(&file).unwrap_or_default().split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    signal(pid, libc::SIGKILL);
                }
            }
        }
    }

    fn remove(&self) {
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
