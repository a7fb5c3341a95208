//! A connection's workspace operations, run one after another in the order
//! its client asked for them, on a thread of their own.
//!
//! Never on the runtime's worker: it carries every terminal's bytes, and a
//! `list` of a huge directory or a recursive `delete` there froze every
//! keystroke echo. Nor one trip to the blocking pool per operation: a first
//! sync's upload of 10,000 files was three such trips per file (each a
//! cross-CPU wake-up, and hundreds of threads contending for the same
//! directories' locks), and the connection waited for two of them before it
//! read the client's next message. Here the connection queues an operation
//! and reads on; the thread takes what is queued without sleeping in
//! between, so only a queue that ran empty costs a wake-up. One thread per
//! connection keeps a client's operations in its order (a write's chunks
//! after its start, a rename after the write it renames) while a slow one
//! (a recursive delete) holds up no other client.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use cloudcode_proto::message::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::files::{FileError, Workspace};

/// Operations queued at most: a client sending faster than the disk takes
/// its chunks waits (and so stops reading its socket) rather than have the
/// runner hold its bytes. A chunk is at most a frame (1 MiB by default).
const QUEUED: usize = 32;

type Job = Box<dyn FnOnce(&Workspace) + Send>;

pub struct WorkspaceQueue {
    jobs: mpsc::Sender<Job>,
}

impl WorkspaceQueue {
    /// Starts the connection's thread; it ends once the queue is dropped and
    /// what was queued before is done.
    pub fn start(workspace: Arc<Workspace>) -> std::io::Result<Self> {
        let (jobs, mut queued) = mpsc::channel::<Job>(QUEUED);
        std::thread::Builder::new()
            .name("workspace".to_owned())
            .spawn(move || {
                // On a save's way, like the worker: it runs at once when it
                // wakes (see `sched`).
                crate::sched::shorten_slice(0);
                while let Some(job) = queued.blocking_recv() {
                    // A bug in one operation fails that operation (its
                    // answer is dropped, so it is told), not the client's
                    // others.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&workspace))).is_err() {
                        tracing::error!("a workspace operation panicked");
                    }
                }
            })?;
        Ok(Self { jobs })
    }

    /// Queues `op` behind what the client asked before, waiting only while
    /// the queue is full; its result comes through the returned [`Queued`].
    pub async fn queue<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Workspace) -> Result<T, FileError> + Send + 'static,
    ) -> Queued<T> {
        let (tx, rx) = oneshot::channel();
        self.then(move |ws| {
            let _ = tx.send(op(ws));
        })
        .await;
        Queued(rx)
    }

    /// Runs `op` after what was queued before, and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Workspace) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, FileError> {
        self.queue(op).await.result().await
    }

    /// Queues `op`, which answers for itself. If the thread is gone, `op` is
    /// dropped unrun, and with it whatever it would have answered through.
    pub async fn then(&self, op: impl FnOnce(&Workspace) + Send + 'static) {
        let _ = self.jobs.send(Box::new(op)).await;
    }
}

/// The result of a queued operation, once it ran.
pub struct Queued<T>(oneshot::Receiver<Result<T, FileError>>);

impl<T> Queued<T> {
    pub async fn result(self) -> Result<T, FileError> {
        self.0.await.unwrap_or_else(|_| {
            Err(FileError::new(
                ErrorCode::Internal,
                "the workspace operation failed before it could answer",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcode_proto::path::WorkspacePath;

    fn queue_on(dir: &std::path::Path) -> WorkspaceQueue {
        WorkspaceQueue::start(Arc::new(Workspace::open(dir).unwrap())).unwrap()
    }

    #[tokio::test]
    async fn operations_run_in_the_order_they_were_queued() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue_on(dir.path());
        let path = WorkspacePath::parse("a").unwrap();
        // Queued without waiting for each other: a later one sees what the
        // earlier ones did.
        let mut results = Vec::new();
        for i in 0..100 {
            let path = path.clone();
            results.push(
                queue
                    .queue(move |ws| {
                        let before = std::fs::read_to_string(ws.root().join(path.as_str())).unwrap_or_default();
                        std::fs::write(ws.root().join(path.as_str()), i.to_string()).unwrap();
                        Ok(before)
                    })
                    .await,
            );
        }
        let mut seen = Vec::new();
        for queued in results {
            seen.push(queued.result().await.unwrap());
        }
        let expected: Vec<String> = std::iter::once(String::new())
            .chain((0..99).map(|i| i.to_string()))
            .collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue_on(dir.path());
        let failed = queue.run(|_| -> Result<(), FileError> { panic!("a bug") }).await;
        assert_eq!(failed.unwrap_err().code, ErrorCode::Internal);
        let after = queue.run(|ws| Ok(ws.root().to_path_buf())).await.unwrap();
        assert_eq!(after, dir.path().canonicalize().unwrap());
    }
}
