//! The operating system side of a terminal: a pseudo-terminal and the
//! process on it. Kept apart so the rest of the terminal code deals in bytes
//! and sizes, not file descriptors.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use portable_pty::{Child, ChildKiller, ExitStatus};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment: nothing is inherited from the runner.
    pub env: Vec<(String, String)>,
    pub cols: u16,
    pub rows: u16,
}

pub struct SpawnedPty {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    pub master: Master,
    pub child: Box<dyn Child + Send + Sync>,
    pub killer: Box<dyn ChildKiller + Send + Sync>,
    pub pid: Option<u32>,
}

/// The runner's side of a pseudo-terminal.
pub struct Master {
    fd: OwnedFd,
}

impl Master {
    /// A new pseudo-terminal of `cols` x `rows`, and the path of its other
    /// side, which the process opens (the runner never does: holding it
    /// would keep the terminal open after the process exits, hiding the
    /// end of its output).
    fn open(cols: u16, rows: u16) -> io::Result<(Self, PathBuf)> {
        // SAFETY: posix_openpt has no memory-safety preconditions.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened and owned by nothing else.
        let master = Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let mut name = [0 as libc::c_char; 64];
        // SAFETY: a valid descriptor; ptsname_r writes at most `name.len()`
        // bytes, NUL included.
        let named = unsafe {
            if libc::unlockpt(fd) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::ptsname_r(fd, name.as_mut_ptr(), name.len())
        };
        if named != 0 {
            return Err(io::Error::from_raw_os_error(named));
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated
        // string.
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(
            unsafe { CStr::from_ptr(name.as_ptr()) }.to_bytes(),
        ));
        master.resize(cols, rows)?;
        Ok((master, path))
    }

    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: rows.max(1),
            ws_col: cols.max(1),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        match unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCSWINSZ, &size) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn file(&self) -> io::Result<File> {
        Ok(File::from(self.fd.try_clone()?))
    }
}

pub fn spawn(spec: &SpawnSpec) -> io::Result<SpawnedPty> {
    let (master, tty) = Master::open(spec.cols, spec.rows)?;
    let child = ShellProcess {
        pid: spawn_on_terminal(&tty, spec)?,
    };
    let reader = Box::new(master.file()?);
    let writer = Box::new(master.file()?);
    let killer = child.clone_killer();
    let pid = Some(child.pid as u32);
    Ok(SpawnedPty {
        reader,
        writer,
        master,
        child: Box::new(child),
        killer,
        pid,
    })
}

/// Signals reset to their defaults in the new process, whatever the
/// runner's own dispositions.
const DEFAULT_SIGNALS: [libc::c_int; 7] = [
    libc::SIGCHLD,
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGPIPE,
];

/// Starts `spec` as the leader of a new session whose controlling terminal
/// is `tty`, with `posix_spawn`: glibc implements it with a vfork-style
/// clone, which does not copy the runner's page tables as the fork behind
/// a `pre_exec` hook does. That fork was the largest part of opening a
/// terminal.
fn spawn_on_terminal(tty: &Path, spec: &SpawnSpec) -> io::Result<libc::pid_t> {
    let c_string = |bytes: Vec<u8>| {
        CString::new(bytes).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a NUL byte in a command or its environment",
            )
        })
    };
    let program = c_string(resolve_program(&spec.program, &spec.env)?.into_os_string().into_vec())?;
    let argv: Vec<CString> = std::iter::once(&spec.program)
        .chain(&spec.args)
        .map(|a| c_string(a.clone().into_bytes()))
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| c_string(format!("{k}={v}").into_bytes()))
        .collect::<io::Result<_>>()?;
    let tty = c_string(tty.as_os_str().as_bytes().to_vec())?;
    let cwd = c_string(spec.cwd.as_os_str().as_bytes().to_vec())?;
    let pointers = |strings: &[CString]| -> Vec<*mut libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr() as *mut libc::c_char)
            .chain(std::iter::once(std::ptr::null_mut()))
            .collect()
    };
    let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    // SAFETY: every pointer handed to libc points into a CString or vector
    // that outlives the call; the attribute and action objects are
    // initialised before use and destroyed on every path.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let prepared = (|| {
            // After setsid, the first terminal a session leader opens
            // becomes its controlling terminal: job control and ^C work.
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                tty.as_ptr(),
                libc::O_RDWR,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, 0, 1))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, 0, 2))?;
            // Nothing of the runner's reaches the shell, even a descriptor
            // some library opened without close-on-exec.
            check(libc::posix_spawn_file_actions_addclosefrom_np(&mut actions, 3))?;
            check(libc::posix_spawn_file_actions_addchdir_np(&mut actions, cwd.as_ptr()))?;
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            for signal in DEFAULT_SIGNALS {
                libc::sigaddset(&mut defaults, signal);
            }
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults))?;
            let mut unblocked: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblocked);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &unblocked))?;
            let flags =
                libc::POSIX_SPAWN_SETSID as libc::c_int | libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK;
            check(libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        prepared
    }
}

/// A bare name is looked up in the PATH of the terminal's environment (not
/// the runner's), as a shell would.
fn resolve_program(program: &str, env: &[(String, String)]) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/bin:/bin");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{program}: not found in PATH {path}")))
}

/// The terminal's first process, known by its pid.
#[derive(Debug)]
struct ShellProcess {
    pid: libc::pid_t,
}

fn wait_status(status: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::with_signal(&format!("signal {}", libc::WTERMSIG(status)))
    } else {
        ExitStatus::with_exit_code(libc::WEXITSTATUS(status) as u32)
    }
}

impl Child for ShellProcess {
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: waitpid writes one int.
        match unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } {
            0 => Ok(None),
            -1 => Err(io::Error::last_os_error()),
            _ => Ok(Some(wait_status(status))),
        }
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes one int.
            match unsafe { libc::waitpid(self.pid, &mut status, 0) } {
                -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                -1 => return Err(io::Error::last_os_error()),
                _ => return Ok(wait_status(status)),
            }
        }
    }

    fn process_id(&self) -> Option<u32> {
        u32::try_from(self.pid).ok()
    }
}

impl ChildKiller for ShellProcess {
    /// Hangs the terminal up, as closing a terminal window does.
    fn kill(&mut self) -> io::Result<()> {
        // SAFETY: kill has no memory-safety preconditions.
        match unsafe { libc::kill(self.pid, libc::SIGHUP) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn clone_killer(&self) -> Box<dyn ChildKiller + Send + Sync> {
        Box::new(ShellProcess { pid: self.pid })
    }
}

/// Sends `signal` to the terminal's whole process group: the shell is a
/// session leader, so its pgid is its pid, and jobs it started (a dev server,
/// `sleep 1000 &`) go with it instead of leaking.
pub fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: killpg has no memory-safety preconditions; a stale pid at worst
    // returns ESRCH.
    unsafe {
        libc::killpg(pid, signal);
    }
}

/// Every live process whose session id is `sid`, read from `/proc`. A
/// terminal's shell leads its own session, and job control gives each job its
/// own process group inside that session, so the session is the unit that
/// holds everything the terminal started.
pub fn session_members(sid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the parenthesised command name, which may
                    // itself hold spaces and parentheses.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(3)?.parse::<u32>().ok()
                })
                == Some(sid)
        })
        .collect()
}

/// SIGKILLs every process of the session.
pub fn kill_session(sid: u32) {
    for pid in session_members(sid) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: as in signal_group.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
