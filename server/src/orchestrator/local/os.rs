//! Everything the lifecycle asks of the operating system (spawning
//! sandboxes, signals, `/proc`, cgroupfs), behind a small trait so the
//! lifecycle is unit-tested with a fake.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::cgroup::{Cgroup, CgroupVersion};
use super::{Isolation, LocalConfig, Network};
use crate::orchestrator::SandboxSpec;
use crate::projects::ProjectId;

/// `close_range` flag: mark close-on-exec instead of closing now (Linux 5.11).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// A process the lifecycle started: a sandbox (bwrap, or the bare runner)
/// or a sandbox's network helper.
#[async_trait]
pub(super) trait Process: Send {
    fn id(&self) -> Option<u32>;
    /// `None` while it runs; how it ended once it has.
    fn try_wait(&mut self) -> std::io::Result<Option<String>>;
    async fn wait(&mut self);
    async fn kill(&mut self);
}

#[async_trait]
pub(super) trait Os: Send + Sync + 'static {
    /// The sandbox's control groups with their limits; `None` where there
    /// are none (logged).
    fn create_cgroup(&self, project: &ProjectId) -> Option<Cgroup>;
    /// Prepares the project's directories and spawns its sandbox, in
    /// `cgroup`. The error says what failed, for the user.
    async fn spawn(&self, spec: &SandboxSpec, cgroup: Option<&Cgroup>) -> Result<Box<dyn Process>, String>;
    /// The runner's pid in the sandbox whose first process is `sandbox`,
    /// once it runs.
    fn runner_pid(&self, sandbox: u32) -> Option<u32>;
    /// Asks a runner to stop (it flushes its files first).
    fn terminate(&self, pid: u32);
    /// The sandbox's network helper, if its network needs one.
    async fn start_network(&self, sandbox: u32) -> Option<Box<dyn Process>>;
    /// SIGKILLs everything left in the cgroup.
    fn kill_cgroup(&self, cgroup: &Cgroup);
    /// One attempt at removing the cgroup: true once it is gone.
    fn remove_cgroup(&self, cgroup: &Cgroup) -> bool;
}

/// This machine.
pub(super) struct HostOs {
    config: LocalConfig,
    cgroups: CgroupVersion,
    /// Names this server's cgroups apart from another server's on the same
    /// machine: a hash of its sandboxes' root.
    server: String,
    /// Sandboxes run as their own unprivileged host uid (a root server on
    /// a machine that allows it).
    unprivileged: bool,
}

impl HostOs {
    pub(super) fn new(config: LocalConfig, cgroups: CgroupVersion) -> Self {
        let root = config.root.canonicalize().unwrap_or_else(|_| config.root.clone());
        let server = format!("{:08x}", super::command::fnv1a(root.as_os_str().as_bytes()));
        // SAFETY: geteuid has no preconditions.
        let root_server = unsafe { libc::geteuid() } == 0;
        let unprivileged = root_server
            && config.isolation == Isolation::Bubblewrap
            && super::command::unprivileged_sandboxes_work(&root, &config.runner_binary);
        if root_server && config.isolation == Isolation::Bubblewrap && !unprivileged {
            tracing::error!(
                root = %root.display(),
                "!!! sandboxes run as host root (without capabilities) instead of an unprivileged uid of their own: \
                 this machine refuses user namespaces to unprivileged users, or a parent of the sandboxes' directory \
                 or of the runner binary is private to root (e.g. /root is 0700; give --data-dir and the runner a path \
                 others may traverse, such as /var/lib/cloudcode and /usr/local/bin) !!!"
            );
        }
        Self {
            config,
            cgroups,
            server,
            unprivileged,
        }
    }
}

struct ChildProcess(tokio::process::Child);

#[async_trait]
impl Process for ChildProcess {
    fn id(&self) -> Option<u32> {
        self.0.id()
    }

    fn try_wait(&mut self) -> std::io::Result<Option<String>> {
        Ok(self.0.try_wait()?.map(|status| status.to_string()))
    }

    async fn wait(&mut self) {
        let _ = self.0.wait().await;
    }

    async fn kill(&mut self) {
        let _ = self.0.kill().await;
    }
}

#[async_trait]
impl Os for HostOs {
    fn create_cgroup(&self, project: &ProjectId) -> Option<Cgroup> {
        self.cgroups.create(project, &self.server, &self.config.limits)
    }

    async fn spawn(&self, spec: &SandboxSpec, cgroup: Option<&Cgroup>) -> Result<Box<dyn Process>, String> {
        let (config, owned, unprivileged) = (self.config.clone(), spec.clone(), self.unprivileged);
        let prepared = tokio::task::spawn_blocking(move || super::command::prepare(&config, &owned, unprivileged))
            .await
            .map_err(|e| format!("preparing the sandbox: {e}"))?
            .map_err(|e| format!("preparing the sandbox: {e}"))?;
        let mut cmd = prepared.command;
        let inherited: Vec<libc::c_int> = prepared.fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let host_id = prepared.host_id;
        let joins: Vec<CString> = cgroup
            .map(|c| {
                c.procs_files()
                    .iter()
                    .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: only async-signal-safe calls (open, write, close,
        // close_range, fcntl, setrlimit, setgroups, setresgid, setresuid)
        // on memory prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                // As root still: cgroup.procs is root's.
                for file in &joins {
                    join_cgroup(file);
                }
                // Descriptors this server inherited without close-on-exec
                // (a terminal, a socket) must not reach the sandbox; only
                // its bind mounts' sources do, and bwrap closes those.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
                for fd in &inherited {
                    libc::fcntl(*fd, libc::F_SETFD, 0);
                }
                set_rlimit(libc::RLIMIT_CORE, 0);
                set_rlimit(libc::RLIMIT_NOFILE, 8192);
                if let Some(id) = host_id
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setresgid(id, id, id) != 0
                        || libc::setresuid(id, id, id) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(prepared.fds);
        let mut child = spawned.map_err(|e| format!("spawning the sandbox: {e}"))?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(relay_log(spec.project.clone(), stderr));
        }
        Ok(Box::new(ChildProcess(child)))
    }

    fn runner_pid(&self, sandbox: u32) -> Option<u32> {
        match self.config.isolation {
            Isolation::Insecure => Some(sandbox),
            // bwrap, its pid-1 reaper, the runner.
            Isolation::Bubblewrap => children(sandbox)
                .into_iter()
                .next()
                .and_then(|reaper| children(reaper).into_iter().next()),
        }
    }

    fn terminate(&self, pid: u32) {
        signal(pid, libc::SIGTERM);
    }

    async fn start_network(&self, sandbox: u32) -> Option<Box<dyn Process>> {
        match (self.config.network, self.config.isolation) {
            (Network::Outbound, Isolation::Bubblewrap) => super::network::start_slirp(sandbox)
                .await
                .map(|child| Box::new(ChildProcess(child)) as Box<dyn Process>),
            _ => None,
        }
    }

    fn kill_cgroup(&self, cgroup: &Cgroup) {
        cgroup.kill_all();
    }

    fn remove_cgroup(&self, cgroup: &Cgroup) -> bool {
        cgroup.try_remove()
    }
}

/// Where this process reaches the sandboxes' root for connecting to runner
/// sockets: `/proc/self/fd/<fd>`, `fd` an open descriptor of `root` kept for
/// the life of the process. A socket path is then at most
/// `/proc/self/fd/<10 digits>/<63-byte id>/run/preview.sock`, 105 bytes,
/// under the 108 of `sun_path` whatever the data directory's length (the
/// full path, `<data>/sandboxes/<id>/run/preview.sock`, fails with "path must
/// be shorter than SUN_LEN" for a 63-byte id once the data directory's own
/// path is 17 bytes long). Falls back to `root` itself (logged) if it cannot
/// be opened.
pub(super) fn socket_base(root: &Path) -> PathBuf {
    use std::os::fd::IntoRawFd;
    let opened = std::fs::create_dir_all(root).and_then(|()| std::fs::File::open(root));
    match opened {
        // Never closed: a closed number could be reused by another
        // directory, and a stale socket path would then lead there.
        Ok(dir) => PathBuf::from(format!("/proc/self/fd/{}", dir.into_raw_fd())),
        Err(e) => {
            tracing::warn!(
                "opening {} ({e}): runner sockets are reached by their full path",
                root.display()
            );
            root.to_path_buf()
        }
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

pub(super) fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub(super) fn signal(pid: u32, sig: i32) {
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
