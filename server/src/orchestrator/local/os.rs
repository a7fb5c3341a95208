//! Everything the lifecycle asks of the operating system (spawning
//! sandboxes, signals, `/proc`, cgroupfs, the sandboxes' records, a
//! runner's readiness), behind a small trait so the lifecycle is
//! unit-tested with a fake.
//!
//! Sandboxes are started detached from this server's lifetime: their own
//! session, no death signal tied to it, their output in a log file of
//! their own rather than a pipe this server must drain. A server that
//! stops or dies leaves them running, and the next one adopts them
//! ([`Os::adopt`]) by pid and start time, waiting for a process that is
//! not its child through a pidfd.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::unix::AsyncFd;

use super::cgroup::{Cgroup, CgroupVersion};
use super::record::{Pid, Record};
use super::{Isolation, LocalConfig, Network};
use crate::gateway::Upstream;
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
    /// SIGKILLs everything in the sandbox whose first process is `sandbox`
    /// (with bubblewrap: the init of its pid namespace, whose death ends
    /// every process in it).
    fn kill_sandbox(&self, sandbox: u32);
    /// The init of the pid namespace the live process `runner` is in: with
    /// bubblewrap, the sandbox's reaper, which lives on as long as anything
    /// in the sandbox does, even once bwrap and the runner are gone (kill it
    /// through [`Os::adopt`]). `None` without a pid namespace of the
    /// sandbox's own.
    fn namespace_init(&self, runner: Pid) -> Option<Pid>;
    /// The sandbox's network helper, if its network needs one.
    async fn start_network(&self, sandbox: u32) -> Option<Box<dyn Process>>;
    /// Whether sandboxes get outbound network under these settings.
    fn gives_network(&self) -> bool;
    /// SIGKILLs everything left in the cgroup.
    fn kill_cgroup(&self, cgroup: &Cgroup);
    /// Sets this server's limits on an adopted sandbox's cgroup (logged when
    /// it cannot).
    fn apply_limits(&self, cgroup: &Cgroup);
    /// One attempt at removing the cgroup: true once it is gone.
    fn remove_cgroup(&self, cgroup: &Cgroup) -> bool;
    /// When the live process `pid` started (clock ticks after boot): with
    /// its pid, what tells it from a later process given the same pid.
    /// `None` once it has exited (a zombie included).
    fn start_time(&self, pid: u32) -> Option<u64>;
    /// The process `pid` if it is still the one that started at `start`
    /// (never a later process that reuses its pid), to wait for and kill
    /// though it is not this server's child.
    fn adopt(&self, pid: Pid) -> Option<Box<dyn Process>>;
    /// True once the runner answers on its socket (`GET /v1/ready`).
    async fn runner_ready(&self, ide: &Upstream) -> bool;
    /// Writes (atomically) the record of a running sandbox, for the next
    /// server to adopt it.
    fn save_record(&self, record: &Record);
    /// Every sandbox record on this machine's sandboxes' root.
    fn load_records(&self) -> Vec<Record>;
    fn remove_record(&self, project: &ProjectId);
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

/// A sandbox or helper this server spawned: waited for as its child.
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

/// A process a previous server spawned (now init's child, or a
/// subreaper's): waited for through a pidfd, which also makes its signals
/// race-free (a pidfd never names a later process with the same pid).
struct AdoptedProcess {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

impl AdoptedProcess {
    /// `pidfd_open`, then the start time checked: the descriptor is opened
    /// first, so a process that died and whose pid was reused meanwhile is
    /// caught by the check and never adopted.
    fn open(pid: Pid) -> Option<Self> {
        let raw = libc::pid_t::try_from(pid.pid).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, libc::O_NONBLOCK as libc::c_uint) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just returned to us and is owned here only.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        if process_start_time(pid.pid) != Some(pid.start) {
            return None;
        }
        // SAFETY: an OwnedFd's descriptor stays open and the same for as
        // long as the AsyncFd owns it.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()?;
        Some(Self { pid: pid.pid, pidfd })
    }

    fn exited(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.pidfd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) > 0 }
    }
}

#[async_trait]
impl Process for AdoptedProcess {
    fn id(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn try_wait(&mut self) -> std::io::Result<Option<String>> {
        // Not our child: its exit status is its new parent's to read.
        Ok(self.exited().then(|| "exited".to_string()))
    }

    async fn wait(&mut self) {
        // A pidfd becomes readable when its process exits.
        let _ = self.pidfd.readable().await;
    }

    async fn kill(&mut self) {
        // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        self.wait().await;
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
                // Its own session and process group: a Ctrl-C or hang-up
                // of the terminal this server runs in never reaches it.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
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
        let child = spawned.map_err(|e| format!("spawning the sandbox: {e}"))?;
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

    fn kill_sandbox(&self, sandbox: u32) {
        // Without isolation the sandbox is the runner itself, killed next.
        if self.config.isolation == Isolation::Bubblewrap
            && let Some(init) = children(sandbox).into_iter().next()
        {
            signal(init, libc::SIGKILL);
        }
    }

    fn namespace_init(&self, runner: Pid) -> Option<Pid> {
        if self.config.isolation != Isolation::Bubblewrap {
            return None;
        }
        let pid = parent_pid(runner.pid)?;
        let init = Pid {
            pid,
            start: process_start_time(pid)?,
        };
        // Read after the parent's: the runner is still the recorded one, so
        // `init` was its parent. That parent must be pid 1 of the runner's
        // own namespace, which is not this server's (nor the host's).
        let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let (runner_ns, init_ns, own_ns) = (
            namespace(&runner.pid.to_string()),
            namespace(&pid.to_string()),
            namespace("self"),
        );
        let is_sandbox_init = process_start_time(runner.pid) == Some(runner.start)
            && runner_ns.is_some()
            && runner_ns == init_ns
            && init_ns != own_ns
            && pid_in_own_namespace(pid) == Some(1);
        is_sandbox_init.then_some(init)
    }

    fn gives_network(&self) -> bool {
        self.config.network == Network::Outbound && self.config.isolation == Isolation::Bubblewrap
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

    fn apply_limits(&self, cgroup: &Cgroup) {
        if let Err(e) = cgroup.set_limits(&self.config.limits) {
            tracing::warn!("setting this server's limits on the adopted sandbox's cgroup {cgroup:?}: {e}");
        }
    }

    fn remove_cgroup(&self, cgroup: &Cgroup) -> bool {
        cgroup.try_remove()
    }

    fn start_time(&self, pid: u32) -> Option<u64> {
        process_start_time(pid)
    }

    fn adopt(&self, pid: Pid) -> Option<Box<dyn Process>> {
        AdoptedProcess::open(pid).map(|p| Box::new(p) as Box<dyn Process>)
    }

    async fn runner_ready(&self, ide: &Upstream) -> bool {
        let request = axum::http::Request::get(format!("/v{}/ready", cloudcode_proto::PROTOCOL_VERSION))
            .header(axum::http::header::HOST, "runner")
            .body(axum::body::Body::empty());
        let Ok(request) = request else { return false };
        let answer = tokio::time::timeout(READY_PROBE, crate::gateway::forward(ide, request)).await;
        matches!(answer, Ok(Ok(response)) if response.status().is_success())
    }

    fn save_record(&self, record: &Record) {
        if let Err(e) = record.save(&self.config.root) {
            tracing::error!(project = %record.project, "recording the sandbox (a restarted server cannot adopt it): {e}");
        }
    }

    fn load_records(&self) -> Vec<Record> {
        Record::load_all(&self.config.root)
    }

    fn remove_record(&self, project: &ProjectId) {
        Record::remove(&self.config.root, project);
    }
}

/// How long one readiness probe of a runner may take.
const READY_PROBE: Duration = Duration::from_secs(2);

/// Field 22 of `/proc/<pid>/stat`, `None` for a process that is gone or a
/// zombie. The command name (field 2) may hold spaces and parentheses: the
/// fields are counted after its last `)`.
pub(super) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 3 was the state; starttime is field 22.
    fields.nth(18)?.parse().ok()
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

/// The pid `pid` has in its own (innermost) pid namespace: the last field
/// of `NSpid` in `/proc/<pid>/status`.
fn pid_in_own_namespace(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// `/proc/<pid>/stat` field 4.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.split(' ').nth(1)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::orchestrator::local::Limits;

    fn running(word: &str) -> bool {
        std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.split(|b| *b == 0).any(|w| w == word.as_bytes()))
                && process_start_time(e.file_name().to_str().and_then(|p| p.parse().ok()).unwrap_or(0)).is_some()
        })
    }

    fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// bwrap with a pid namespace of its own around `script`.
    fn pid_sandbox(script: &str) -> std::process::Child {
        std::process::Command::new("bwrap")
            .args([
                "--unshare-pid",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
            ])
            .args(["--", "sh", "-c", script])
            .spawn()
            .expect("bwrap")
    }

    fn host_os() -> HostOs {
        HostOs {
            config: LocalConfig {
                runner_binary: "/nonexistent".into(),
                root: "/nonexistent".into(),
                storage_dir: "/nonexistent".into(),
                isolation: Isolation::Bubblewrap,
                network: Network::None,
                limits: Limits {
                    memory_bytes: 1 << 30,
                    max_pids: 100,
                    cpu_percent: 100,
                },
                runner_args: Vec::new(),
                mirror_to: None,
            },
            cgroups: CgroupVersion::Unavailable,
            server: String::new(),
            unprivileged: false,
        }
    }

    /// With bwrap killed, the runner's exit does not end the sandbox (its
    /// reaper waits for every process in it); the namespace's init, held
    /// while the runner lived, does.
    #[tokio::test]
    async fn a_sandbox_whose_bwrap_is_gone_is_ended_through_its_namespace_init() {
        let mut bwrap = pid_sandbox("setsid sleep 4757 & exec sleep 4758");
        until("the sandbox's processes", || running("4757") && running("4758"));
        let os = host_os();
        let runner = os.runner_pid(bwrap.id()).expect("the sandbox's first process");
        let runner = Pid {
            pid: runner,
            start: process_start_time(runner).unwrap(),
        };
        bwrap.kill().unwrap();
        bwrap.wait().unwrap();

        let init = os
            .namespace_init(runner)
            .expect("the sandbox's init, found through its runner");
        let mut init = os.adopt(init).expect("the init, held");
        signal(runner.pid, libc::SIGKILL);
        until("the runner gone", || !running("4758"));
        assert!(
            running("4757"),
            "the sandbox ended with its runner: the init would not be needed"
        );
        init.kill().await;
        until("every process of the sandbox gone", || !running("4757"));

        // A process in the server's own namespace has no init to give.
        let mut own = std::process::Command::new("sleep").arg("4759").spawn().unwrap();
        let pid = Pid {
            pid: own.id(),
            start: process_start_time(own.id()).unwrap(),
        };
        assert!(
            os.namespace_init(pid).is_none(),
            "offered this server's own parent or the host's init"
        );
        own.kill().unwrap();
        own.wait().unwrap();
    }

    /// bwrap's death does not end its sandbox any more (no
    /// `--die-with-parent`): a kill ends the sandbox's pid namespace, so
    /// nothing is left even where no cgroup can be swept.
    #[test]
    fn killing_a_sandbox_ends_every_process_in_its_namespace() {
        let mut bwrap = pid_sandbox("sleep 4747 & exec sleep 4748");
        until("the sandbox's processes", || running("4747") && running("4748"));
        let os = host_os();
        os.kill_sandbox(bwrap.id());
        until("every process of the sandbox gone", || {
            !running("4747") && !running("4748")
        });
        let _ = bwrap.wait();
    }

    #[test]
    fn a_start_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // The command name is the executable's file name.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a) (b c");
        std::os::unix::fs::symlink("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd).arg("30").spawn().unwrap();
        let pid = child.id();
        until("the oddly named process", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains("(a) (b c)"))
        });
        let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let expected: u64 = own[own.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(process_start_time(pid), Some(expected));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(process_start_time(pid), None, "a reaped process still has a start time");
    }

    /// A process is adopted only with its own start time; once adopted it
    /// is waited for and killed through its pidfd (here a zombie child:
    /// exited as far as anyone adopting it can tell).
    #[tokio::test]
    async fn a_process_is_adopted_by_pid_and_start_time_and_waited_for_through_its_pidfd() {
        let mut child = std::process::Command::new("sleep").arg("3131").spawn().unwrap();
        let pid = child.id();
        let start = process_start_time(pid).unwrap();
        assert!(
            AdoptedProcess::open(Pid { pid, start: start + 1 }).is_none(),
            "adopted with another start time"
        );
        let mut adopted = AdoptedProcess::open(Pid { pid, start }).expect("not adopted");
        assert_eq!(adopted.try_wait().unwrap(), None);
        tokio::time::timeout(Duration::from_secs(20), adopted.kill())
            .await
            .expect("the kill never ended it");
        assert!(adopted.try_wait().unwrap().is_some());
        assert_eq!(process_start_time(pid), None, "a zombie counts as alive");
        child.wait().unwrap();
    }
}
