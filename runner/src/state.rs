//! What every connection of one runner shares.

use std::sync::{Arc, OnceLock};

use cloudcode_proto::token::TokenVerifier;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::files::Workspace;
use crate::terminal::Terminals;
use cloudcode_proto::sync::persister::Persister;
use cloudcode_proto::sync::watch::FsEvents;

/// This runner process's instance id, sent in every `welcome`: 128 random
/// bits as hex, drawn once per process. Terminal ids start again at 1 when
/// a runner restarts; the instance tells a reconnecting client that the
/// terminals it knew are gone, even where a new one has the same id.
pub fn instance() -> &'static str {
    static INSTANCE: OnceLock<String> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut bytes = [0u8; 16];
        fill_random(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

fn fill_random(bytes: &mut [u8]) {
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match n {
            n if n > 0 => filled += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    if filled < bytes.len() {
        // No getrandom(2) (a kernel older than 3.17): the device, else the
        // clock and pid, which still differ from one start to the next.
        use std::io::Read;
        let from_device = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(bytes));
        if from_device.is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let mixed = nanos ^ (u128::from(std::process::id()) << 96);
            bytes.copy_from_slice(&mixed.to_le_bytes()[..bytes.len()]);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file a client may read or write.
    pub max_file_size: u64,
    /// Largest WebSocket message accepted.
    pub max_frame_size: usize,
}

pub struct RunnerState {
    pub project: String,
    pub verifier: TokenVerifier,
    pub workspace: Arc<Workspace>,
    pub terminals: Arc<Terminals>,
    pub persister: Arc<Persister>,
    pub fs_events: FsEvents,
    pub limits: Limits,
    pub activity: Arc<Activity>,
    /// Cancelled when the runner shuts down.
    pub shutdown: CancellationToken,
}
