//! The sandbox's command line: bubblewrap's mounts and namespaces around
//! the runner, or the bare runner without isolation.
//!
//! A server running as root runs each sandbox as an unprivileged host uid
//! of its own ([`host_id`]): bwrap is started as that uid (after joining
//! the sandbox's cgroups as root), so the sandbox's user, uid 1000 inside,
//! is that uid on the host, never root. The directories it writes are
//! chowned to it before each start; everything it mounts comes from
//! descriptors this server opened (`--bind-fd`), so the unprivileged bwrap
//! needs no access to the data directory's path (root's is 0700). New user
//! namespaces are refused inside (`--disable-userns`), and the sandbox's
//! private root is read-only (`--remount-ro /`): it writes only to its
//! workspace, its home, its storage directories, its socket directory, `/tmp` and
//! `/dev` (`/dev/shm`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::{Isolation, LocalConfig, Network};
use crate::orchestrator::SandboxSpec;
use crate::projects::ProjectId;
use cloudcode_proto::sandbox::{HOME, WORKSPACE};
use cloudcode_proto::storage::layout;

/// Inside the sandbox.
const RUNNER_PATH: &str = "/opt/cloudcode/cloudcode-runner";
const SOCKET_DIR: &str = "/run/cloudcode";
const STORAGE: &str = "/storage";

/// The project's directory under the sandboxes' root: its workspace, its
/// terminals' home (`home/`), its runner's sockets (`run/`), its identity
/// files (`etc/`).
pub(super) fn project_dir(root: &Path, project: &ProjectId) -> PathBuf {
    root.join(project.as_str())
}

/// The sandbox's log (its runner's stdout and stderr).
pub(super) fn log_file(root: &Path, project: &ProjectId) -> PathBuf {
    project_dir(root, project).join("sandbox.log")
}

/// The runner's socket directory, relative to the sandboxes' root. The
/// runner binds `ide.sock` and `preview.sock` in it.
pub(super) fn socket_dir(project: &ProjectId) -> PathBuf {
    Path::new(project.as_str()).join("run")
}

/// Sandboxes' host uids (and gids): from 1,900,000,000 on, above systemd's
/// container ranges (up to 1,879,048,191) and the usual subordinate-id
/// ranges of rootless containers (100,000 and up), below 2^31.
const HOST_ID_BASE: u32 = 1_900_000_000;
const HOST_ID_RANGE: u32 = 1 << 16;
const _: () = assert!(HOST_ID_BASE + HOST_ID_RANGE < 1 << 31);

/// The project's own unprivileged host uid and gid: stable (its files keep
/// their owner across restarts and upgrades), one of 65,536, so two
/// projects share one rarely (and then still see only their own mounts).
pub(super) fn host_id(project: &ProjectId) -> u32 {
    HOST_ID_BASE + fnv1a(project.as_str().as_bytes()) % HOST_ID_RANGE
}

/// 32-bit FNV-1a: stable across versions and machines.
pub(super) fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// A sandbox ready to spawn.
pub(super) struct Prepared {
    pub command: Command,
    /// Where its bind mounts come from: bwrap inherits these; they are
    /// closed here once it runs.
    pub fds: Vec<OwnedFd>,
    /// The host uid and gid to start it as: `None` when this server is not
    /// root (bwrap, and so the sandbox, is then this server's own uid).
    pub host_id: Option<u32>,
}

/// True when bwrap started as an unprivileged uid can make a sandbox that
/// mounts from `root`, the sandboxes' directory, and `runner`, the runner
/// binary: some machines restrict
/// unprivileged user namespaces, and bwrap resolves a mount's source by its
/// path, which an unprivileged uid cannot traverse when a parent directory
/// is private (root's default data directory is under `/root`, mode 0700).
/// Asked once, by a root server, with a sandbox of nothing. Blocking.
pub(super) fn unprivileged_sandboxes_work(root: &Path, runner: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    let id = HOST_ID_BASE;
    let Ok(root_fd) = std::fs::create_dir_all(root).and_then(|()| open_path(root)) else {
        return false;
    };
    let Ok(runner_fd) = open_path(runner) else {
        return false;
    };
    let mut probe = std::process::Command::new("bwrap");
    probe
        .args(["--unshare-all", "--unshare-user", "--disable-userns"])
        .arg("--ro-bind-fd")
        .arg(root_fd.as_raw_fd().to_string())
        .arg("/mnt")
        .arg("--ro-bind-fd")
        .arg(runner_fd.as_raw_fd().to_string())
        .arg("/runner")
        .args(["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib"])
        .args(["--symlink", "usr/lib64", "/lib64", "--remount-ro", "/"])
        .args(["--chdir", "/", "--", "/usr/bin/true"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let inherited = [root_fd.as_raw_fd(), runner_fd.as_raw_fd()];
    // SAFETY: fcntl, setgroups, setresgid and setresuid are
    // async-signal-safe.
    unsafe {
        probe.pre_exec(move || {
            // bwrap is handed these descriptors: they must survive exec.
            for fd in inherited {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(id, id, id) != 0
                || libc::setresuid(id, id, id) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let works = probe.status().is_ok_and(|status| status.success());
    drop((root_fd, runner_fd));
    works
}

/// Creates the project's directories and returns the command that starts
/// its sandbox, as the project's own host uid if `as_host_id` (a root
/// server). Blocking (file system work).
pub(super) fn prepare(config: &LocalConfig, spec: &SandboxSpec, as_host_id: bool) -> std::io::Result<Prepared> {
    let dir = project_dir(&config.root, &spec.project);
    let workspace = dir.join("workspace");
    let sockets = config.root.join(socket_dir(&spec.project));
    let home = dir.join("home");
    let storage = layout::local_dir(&config.storage_dir, &layout::code(&spec.project));
    let home_storage = layout::local_dir(&config.storage_dir, &layout::home(&spec.project));
    for d in [&workspace, &home, &sockets, &storage, &home_storage] {
        std::fs::create_dir_all(d)?;
    }
    // A home others may write to is one they can plant a `.bashrc` in.
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let runner_args = |socket_dir: &Path, workspace: &Path, home: &Path, storage_root: &Path| {
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
            "--home".into(),
            home.display().to_string(),
            "--storage".into(),
            "local".into(),
            "--storage-dir".into(),
            storage_root.display().to_string(),
        ];
        args.extend(config.runner_args.iter().cloned());
        args
    };
    let mut fds = Vec::new();
    let mut host = None;
    let mut cmd = match config.isolation {
        Isolation::Insecure => {
            // The runner binds its sockets relative to its working
            // directory, the socket directory: their absolute path, under a
            // data directory of any length, could pass SUN_LEN.
            let mut cmd = Command::new(&config.runner_binary);
            cmd.current_dir(&sockets).args(runner_args(
                Path::new(""),
                &std::path::absolute(&workspace)?,
                &std::path::absolute(&home)?,
                &std::path::absolute(&config.storage_dir)?,
            ));
            cmd
        }
        Isolation::Bubblewrap => {
            let identity = dir.join("etc");
            write_identity_files(&identity, &spec.project)?;
            if as_host_id {
                let id = host_id(&spec.project);
                for d in [&workspace, &home, &sockets, &storage, &home_storage] {
                    chown_tree(d, id)?;
                }
                host = Some(id);
            }
            let mut cmd = Command::new("bwrap");
            // Wherever this server runs, bwrap's uid may not enter it.
            cmd.current_dir("/");
            // No `--die-with-parent`: a sandbox outlives this server (a
            // restart or an upgrade), and the next server adopts it.
            cmd.args([
                "--new-session",
                "--unshare-all",
                "--unshare-user",
                "--disable-userns",
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
            let mut bind = |flag: &str, source: &Path, dest: &str| -> std::io::Result<()> {
                let fd = open_path(source)?;
                cmd.arg(flag).arg(fd.as_raw_fd().to_string()).arg(dest);
                fds.push(fd);
                Ok(())
            };
            if config.network == Network::Outbound {
                bind("--ro-bind-fd", &identity.join("resolv.conf"), "/etc/resolv.conf")?;
            }
            for file in ["passwd", "group", "hosts", "nsswitch.conf"] {
                bind("--ro-bind-fd", &identity.join(file), &format!("/etc/{file}"))?;
            }
            bind("--ro-bind-fd", &config.runner_binary, RUNNER_PATH)?;
            bind("--bind-fd", &workspace, WORKSPACE)?;
            bind("--bind-fd", &sockets, SOCKET_DIR)?;
            bind("--bind-fd", &home, HOME)?;
            let in_storage = |prefix| layout::local_dir(Path::new(STORAGE), &prefix).display().to_string();
            bind("--bind-fd", &storage, &in_storage(layout::code(&spec.project)))?;
            bind("--bind-fd", &home_storage, &in_storage(layout::home(&spec.project)))?;
            // Last: the mount points above are made in the root first.
            cmd.args(["--remount-ro", "/"]);
            cmd.args(["--chdir", WORKSPACE, "--clearenv"])
                .args(["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"])
                .args(["--setenv", "HOME", HOME])
                .args(["--", RUNNER_PATH])
                .args(runner_args(
                    Path::new(SOCKET_DIR),
                    Path::new(WORKSPACE),
                    Path::new(HOME),
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
    // into it (TIOCSTI). The runner logs to a file of its own, which
    // outlives this server as the sandbox does (a pipe would break when
    // the server goes); each start begins it afresh.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(log_file(&config.root, &spec.project))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    Ok(Prepared {
        command: cmd,
        fds,
        host_id: host,
    })
}

/// An `O_PATH` descriptor of `path`, for bwrap's `--bind-fd`.
fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    Ok(file.into())
}

/// Gives `path` and everything under it to `id`, never following a
/// symbolic link (a sandbox may have left links to anywhere).
fn chown_tree(path: &Path, id: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.uid() != id || meta.gid() != id {
        std::os::unix::fs::lchown(path, Some(id), Some(id))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), id)?;
        }
    }
    Ok(())
}

/// A passwd/group pair naming the sandbox's one user, and hosts for its
/// own loopback: the host's files say too much.
fn write_identity_files(dir: &Path, project: &ProjectId) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("passwd"),
        format!(
            "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nuser:x:1000:1000:cloudcode user:{HOME}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::local::Limits;

    #[test]
    fn host_ids_are_unprivileged_stable_and_in_their_range() {
        let id = |p: &str| host_id(&ProjectId::parse(p).unwrap());
        assert_eq!(id("alpha"), id("alpha"));
        assert_ne!(id("alpha"), id("beta"));
        for p in ["abc", "alpha", &"z".repeat(63)] {
            assert!((HOST_ID_BASE..HOST_ID_BASE + HOST_ID_RANGE).contains(&id(p)));
        }
    }

    #[test]
    fn the_sandbox_mounts_from_descriptors_refuses_user_namespaces_and_has_a_read_only_root() {
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("runner");
        std::fs::write(&runner, "").unwrap();
        let config = LocalConfig {
            runner_binary: runner,
            root: dir.path().join("sandboxes"),
            storage_dir: dir.path().join("storage"),
            isolation: Isolation::Bubblewrap,
            network: Network::None,
            limits: Limits {
                memory_bytes: 1 << 30,
                max_pids: 100,
                cpu_percent: 100,
            },
            runner_args: Vec::new(),
            mirror_to: None,
        };
        let project = ProjectId::parse("alpha").unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let prepared = prepare(
            &config,
            &SandboxSpec {
                project: project.clone(),
                token_public_key: "key".into(),
            },
            root,
        )
        .unwrap();
        let args: Vec<String> = prepared
            .command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--unshare-user --disable-userns"), "{joined}");
        // Nothing is mounted by a path of this machine but the system's own.
        let data = dir.path().display().to_string();
        let before_runner = &args[..args.iter().position(|a| a == "--").unwrap()];
        assert!(!before_runner.iter().any(|a| a.contains(&data)), "{joined}");
        assert_eq!(args.iter().filter(|a| a.ends_with("-fd")).count(), prepared.fds.len());
        assert_eq!(prepared.fds.len(), 10);
        // The home is its own mount, persisted under its own prefix, and
        // the shell's HOME; the passwd entry agrees.
        let mounted = |dest: &str| args.windows(3).any(|w| w[0] == "--bind-fd" && w[2] == dest);
        assert!(mounted("/home/user"), "{joined}");
        assert!(
            mounted("/storage/code/alpha") && mounted("/storage/home/alpha"),
            "{joined}"
        );
        assert!(joined.contains("--setenv HOME /home/user"), "{joined}");
        assert!(joined.contains("--home /home/user"), "{joined}");
        let passwd = std::fs::read_to_string(project_dir(&config.root, &project).join("etc/passwd")).unwrap();
        assert!(passwd.contains(":1000:1000:cloudcode user:/home/user:"), "{passwd}");
        let home = project_dir(&config.root, &project).join("home");
        assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
        // The root goes read-only after every mount point is made.
        let remount = args.iter().position(|a| a == "--remount-ro").unwrap();
        assert_eq!(args[remount + 1], "/");
        assert!(
            args.iter()
                .rposition(|a| a.ends_with("-fd") || a == "--tmpfs" || a == "--symlink")
                .unwrap()
                < remount
        );
        assert!(joined.contains("--listen-unix /run/cloudcode/ide.sock"), "{joined}");
        if root {
            assert_eq!(prepared.host_id, Some(host_id(&project)));
            let workspace = project_dir(&config.root, &project).join("workspace");
            assert_eq!(std::fs::metadata(workspace).unwrap().uid(), host_id(&project));
            assert_eq!(std::fs::metadata(&home).unwrap().uid(), host_id(&project));
        }
    }
}
