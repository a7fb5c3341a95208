//! When the project was last used: a connected client, a request, or
//! terminal output. The control plane's idle reaper reads it from the health
//! endpoint to stop sandboxes nobody uses.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Activity {
    clients: AtomicU32,
    last_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            clients: AtomicU32::new(0),
            last_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl Activity {
    pub fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn client_connected(&self) {
        self.clients.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    pub fn client_disconnected(&self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    pub fn clients(&self) -> u32 {
        self.clients.load(Ordering::Relaxed)
    }

    /// Seconds since anything happened.
    pub fn idle_secs(&self) -> u64 {
        now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)) / 1000
    }
}
