//! The operating system side of a terminal: a pseudo-terminal and the
//! process on it. Kept apart so the rest of the terminal code deals in bytes
//! and sizes, not file descriptors.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use portable_pty::{Child, ChildKiller, CommandBuilder, MasterPty, PtySize, native_pty_system};

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
    pub master: Box<dyn MasterPty + Send>,
    pub child: Box<dyn Child + Send + Sync>,
    pub killer: Box<dyn ChildKiller + Send + Sync>,
    pub pid: Option<u32>,
}

pub fn size(cols: u16, rows: u16) -> PtySize {
    PtySize {
        rows: rows.max(1),
        cols: cols.max(1),
        pixel_width: 0,
        pixel_height: 0,
    }
}

pub fn spawn(spec: &SpawnSpec) -> io::Result<SpawnedPty> {
    let pair = native_pty_system()
        .openpty(size(spec.cols, spec.rows))
        .map_err(io::Error::other)?;
    let mut cmd = CommandBuilder::new(&spec.program);
    cmd.args(&spec.args);
    cmd.cwd(&spec.cwd);
    cmd.env_clear();
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let child = pair.slave.spawn_command(cmd).map_err(io::Error::other)?;
    // The child holds its own copy of the slave; keeping ours would hold the
    // terminal open after the child exits and hide the end of output.
    drop(pair.slave);
    let reader = pair.master.try_clone_reader().map_err(io::Error::other)?;
    let writer = pair.master.take_writer().map_err(io::Error::other)?;
    let killer = child.clone_killer();
    let pid = child.process_id();
    Ok(SpawnedPty {
        reader,
        writer,
        master: pair.master,
        child,
        killer,
        pid,
    })
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
