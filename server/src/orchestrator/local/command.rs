//! The sandbox's command line: bubblewrap's mounts and namespaces around
//! the runner, or the bare runner without isolation.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::{Isolation, LocalConfig, Network};
use crate::orchestrator::SandboxSpec;
use crate::projects::ProjectId;

/// Inside the sandbox.
const RUNNER_PATH: &str = "/opt/cloudcode/cloudcode-runner";
const SOCKET_DIR: &str = "/run/cloudcode";
const WORKSPACE: &str = "/workspace";
const STORAGE: &str = "/storage";

/// The project's directory under the sandboxes' root: its workspace, its
/// runner's sockets (`run/`), its identity files (`etc/`).
pub(super) fn project_dir(root: &Path, project: &ProjectId) -> PathBuf {
    root.join(project.as_str())
}

/// The runner's socket directory, relative to the sandboxes' root. The
/// runner binds `ide.sock` and `preview.sock` in it.
pub(super) fn socket_dir(project: &ProjectId) -> PathBuf {
    Path::new(project.as_str()).join("run")
}

/// Creates the project's directories and returns the command that starts
/// its sandbox. Blocking (file system work).
pub(super) fn prepare(config: &LocalConfig, spec: &SandboxSpec) -> std::io::Result<Command> {
    let dir = project_dir(&config.root, &spec.project);
    let workspace = dir.join("workspace");
    let sockets = config.root.join(socket_dir(&spec.project));
    let storage = config.storage_dir.join("code").join(spec.project.as_str());
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
        args.extend(config.runner_args.iter().cloned());
        args
    };
    let mut cmd = match config.isolation {
        Isolation::Insecure => {
            // The runner binds its sockets relative to its working
            // directory, the socket directory: their absolute path, under a
            // data directory of any length, could pass SUN_LEN.
            let mut cmd = Command::new(&config.runner_binary);
            cmd.current_dir(&sockets).args(runner_args(
                Path::new(""),
                &std::path::absolute(&workspace)?,
                &std::path::absolute(&config.storage_dir)?,
            ));
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
            if config.network == Network::Outbound {
                cmd.arg("--ro-bind")
                    .arg(identity.join("resolv.conf"))
                    .arg("/etc/resolv.conf");
            }
            for file in ["passwd", "group", "hosts", "nsswitch.conf"] {
                cmd.arg("--ro-bind")
                    .arg(identity.join(file))
                    .arg(format!("/etc/{file}"));
            }
            cmd.arg("--ro-bind").arg(&config.runner_binary).arg(RUNNER_PATH);
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
