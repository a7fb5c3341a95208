//! The one place the runner's shutdown is decided.
//!
//! SIGTERM or SIGINT cancels [`Shutdown::token`]. Everything long-lived
//! watches that token: the listener stops accepting, connections close, and
//! `main` then closes terminals and flushes pending changes to storage before
//! the process exits. A second signal skips the flush.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Waits for the first SIGTERM/SIGINT, triggers shutdown, and returns a
    /// future that resolves on the second one.
    pub async fn wait_for_signal(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = self.token.cancelled() => return Ok(()),
        }
        self.trigger();
        Ok(())
    }
}
