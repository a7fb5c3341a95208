//! Each sandbox's control groups: memory, process count and CPU caps, and
//! the way to end everything a sandbox left behind.

use std::path::{Path, PathBuf};

use super::Limits;
use crate::projects::ProjectId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V2,
    V1,
    Unavailable,
}

/// One sandbox's control groups (one directory with v2, one per controller
/// with v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub(super) dirs: Vec<PathBuf>,
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
    /// cgroups cannot be used, leaving rlimits as the only cap. `server`
    /// tells this server's sandboxes from another's of the same project id
    /// (two servers on two data directories of one machine): a stop here
    /// never kills processes of a sandbox there.
    pub(super) fn create(self, project: &ProjectId, server: &str, limits: &Limits) -> Option<Cgroup> {
        let name = format!("{project}-{server}");
        let result = match self {
            CgroupVersion::V2 => {
                let parent = Path::new("/sys/fs/cgroup/cloudcode");
                let dir = parent.join(&name);
                (|| -> std::io::Result<Cgroup> {
                    std::fs::create_dir_all(&dir)?;
                    let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids +cpu");
                    std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                    let cgroup = Cgroup { dirs: vec![dir] };
                    cgroup.set_limits(limits)?;
                    Ok(cgroup)
                })()
            }
            CgroupVersion::V1 => (|| -> std::io::Result<Cgroup> {
                let mut dirs = Vec::new();
                for controller in ["memory", "pids", "cpu"] {
                    let dir = Path::new("/sys/fs/cgroup")
                        .join(controller)
                        .join("cloudcode")
                        .join(&name);
                    std::fs::create_dir_all(&dir)?;
                    dirs.push(dir);
                }
                let cgroup = Cgroup { dirs };
                cgroup.set_limits(limits)?;
                Ok(cgroup)
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
    /// Writes the limits: at creation, and again when a server adopts the
    /// sandbox, so one started with other limits applies its own to the
    /// sandboxes it takes over (cgroup limits change live).
    pub(super) fn set_limits(&self, limits: &Limits) -> std::io::Result<()> {
        let write = |dir: &Path, file: &str, value: String| std::fs::write(dir.join(file), value);
        // Each limit on its own: one refused (a memory cap below what the
        // sandbox uses now, say) leaves the others applied.
        let written = match self.dirs.as_slice() {
            [dir] => {
                let _ = write(dir, "memory.swap.max", "0".into());
                vec![
                    write(dir, "memory.max", limits.memory_bytes.to_string()),
                    write(dir, "pids.max", limits.max_pids.to_string()),
                    write(dir, "cpu.max", format!("{} 100000", limits.cpu_percent * 1000)),
                ]
            }
            [memory, pids, cpu] => {
                let memory_limit = write(memory, "memory.limit_in_bytes", limits.memory_bytes.to_string());
                let _ = write(memory, "memory.memsw.limit_in_bytes", limits.memory_bytes.to_string());
                vec![
                    memory_limit,
                    write(pids, "pids.max", limits.max_pids.to_string()),
                    write(cpu, "cpu.cfs_period_us", "100000".into()),
                    write(cpu, "cpu.cfs_quota_us", (limits.cpu_percent * 1000).to_string()),
                ]
            }
            other => return Err(std::io::Error::other(format!("not a sandbox's cgroup: {other:?}"))),
        };
        written.into_iter().collect()
    }

    pub(super) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// SIGKILLs whatever is still in the sandbox's cgroup.
    pub(super) fn kill_all(&self) {
        for file in self.procs_files() {
            for pid in std::fs::read_to_string(&file).unwrap_or_default().split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    super::os::signal(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// One attempt at removing the cgroup's directories: true once they are
    /// all gone. A cgroup whose last process is still exiting cannot be
    /// removed yet; the lifecycle retries without blocking a thread.
    pub(super) fn try_remove(&self) -> bool {
        let mut gone = true;
        for dir in &self.dirs {
            if std::fs::remove_dir(dir).is_err() && dir.exists() {
                gone = false;
            }
        }
        gone
    }
}
