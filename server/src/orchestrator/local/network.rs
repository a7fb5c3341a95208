//! A sandbox's optional outbound network (`Network::Outbound`): slirp4netns
//! attached to its network namespace, host loopback disabled.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Attaches slirp4netns to the sandbox's network namespace (that of bwrap's
/// child, the namespace's first process) once bwrap has set it up: when
/// that child has started the runner (attached earlier, slirp4netns races
/// bwrap's own loopback set-up, which then fails the sandbox). `None`,
/// logged, if it cannot: the sandbox then simply has no outbound network.
pub(super) async fn start_slirp(bwrap: u32) -> Option<Child> {
    let mut namespace_pid = None;
    for _ in 0..2000 {
        let first = super::os::children(bwrap).into_iter().next();
        if let Some(first) = first
            && !super::os::children(first).is_empty()
        {
            namespace_pid = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(pid) = namespace_pid else {
        tracing::warn!("the sandbox never started its runner: no outbound network");
        return None;
    };
    let mut command = Command::new("slirp4netns");
    // SAFETY: setsid is async-signal-safe. It outlives this server, like
    // the sandbox it serves, in a session of its own (no terminal's
    // signals); the sandbox's stop or clean-up ends it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
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
        .spawn();
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!("slirp4netns could not start ({e}): the sandbox has no outbound network");
            None
        }
    }
}
