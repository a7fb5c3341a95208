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

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use cloudcode_proto::message::ErrorCode;
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::files::{FileError, Workspace};

/// Operations queued at most: a client sending faster than the disk takes
/// them waits (and so stops reading its socket) rather than have the runner
/// hold them...
const QUEUED: usize = 32;
/// ...and a client that waited is let on only once the thread has taken
/// half of them: woken once per 16 operations, not after each one (a first
/// sync keeps the queue full, and every wake-up is a switch of threads).
const RESUME_AT: usize = QUEUED / 2;
/// ...and bytes of file chunks: a chunk is up to a frame (1 MiB by
/// default), and a few clients uploading large files at once must not hold
/// 32 of them each in memory.
const QUEUED_BYTES: usize = 4 * 1024 * 1024;

type Job = Box<dyn FnOnce(&Workspace) + Send>;

/// What the connection and its thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// The thread sleeps here while nothing is queued.
    work: Condvar,
    /// A sender sleeps here while the queue is full.
    room: Notify,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Senders that found the queue full and wait for [`RESUME_AT`].
    waiting: usize,
    /// The connection is gone: the thread ends once the queue is empty.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A job runs outside the lock, so nothing panics while holding it.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next job, waiting while there is none; `None` once closed and
    /// drained.
    fn next(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                if queue.waiting > 0 && queue.jobs.len() <= RESUME_AT {
                    queue.waiting = 0;
                    self.room.notify_waiters();
                }
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue = self.work.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

pub struct WorkspaceQueue {
    shared: Arc<Shared>,
    bytes: Arc<Semaphore>,
}

impl Drop for WorkspaceQueue {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

impl WorkspaceQueue {
    /// Starts the connection's thread; it ends once the queue is dropped and
    /// what was queued before is done.
    pub fn start(workspace: Arc<Workspace>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            room: Notify::new(),
        });
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("workspace".to_owned())
            .spawn(move || {
                // On a save's way, like the worker: it runs at once when it
                // wakes (see `sched`).
                crate::sched::shorten_slice(0);
                while let Some(job) = theirs.next() {
                    // A bug in one operation fails that operation (its
                    // answer is dropped, so it is told), not the client's
                    // others.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&workspace))).is_err() {
                        tracing::error!("a workspace operation panicked");
                    }
                }
            })?;
        Ok(Self {
            shared,
            bytes: Arc::new(Semaphore::new(QUEUED_BYTES)),
        })
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
        let job: Job = Box::new(op);
        loop {
            // Registered before looking, so a wake-up in between is kept.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut queue = self.shared.lock();
                if queue.jobs.len() < QUEUED {
                    queue.jobs.push_back(job);
                    // Only a thread that ran out of work sleeps.
                    let was_idle = queue.jobs.len() == 1;
                    drop(queue);
                    if was_idle {
                        self.shared.work.notify_one();
                    }
                    return;
                }
                queue.waiting += 1;
            }
            room.await;
        }
    }

    /// [`WorkspaceQueue::then`] for an operation holding `bytes` of a
    /// client's data until it has run: waits while the queue holds
    /// [`QUEUED_BYTES`] already (a larger one waits until it holds none).
    pub async fn then_holding(&self, bytes: usize, op: impl FnOnce(&Workspace) + Send + 'static) {
        let permits = bytes.clamp(1, QUEUED_BYTES) as u32;
        let Ok(held) = self.bytes.clone().acquire_many_owned(permits).await else {
            return; // Never closed.
        };
        self.then(move |ws| {
            op(ws);
            drop(held);
        })
        .await;
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

    /// Holds the queue's thread, as a slow operation would, until the
    /// returned sender is dropped; returns once the thread has taken it, so
    /// the queue is empty.
    async fn hold_thread(queue: &WorkspaceQueue) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (taken, holding) = oneshot::channel();
        queue
            .then(move |_| {
                let _ = taken.send(());
                let _ = held.recv();
            })
            .await;
        holding.await.unwrap();
        release
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
    async fn chunks_queued_are_bounded_by_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue_on(dir.path());
        let release = hold_thread(&queue).await;
        queue.then_holding(QUEUED_BYTES - 10, |_| {}).await;
        let (ran_tx, ran) = oneshot::channel();
        let next = queue.then_holding(1024, move |_| {
            let _ = ran_tx.send(());
        });
        tokio::pin!(next);
        assert!(
            futures_util::poll!(next.as_mut()).is_pending(),
            "queued beyond the bound"
        );
        drop(release);
        next.await;
        ran.await.unwrap();
    }

    #[tokio::test]
    async fn a_sender_facing_a_full_queue_waits_and_then_goes_on_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue_on(dir.path());
        let release = hold_thread(&queue).await;
        let ran = Arc::new(Mutex::new(Vec::new()));
        for i in 0..QUEUED {
            let ran = ran.clone();
            queue.then(move |_| ran.lock().unwrap().push(i)).await;
        }
        let last = ran.clone();
        let next = queue.then(move |_| last.lock().unwrap().push(QUEUED));
        tokio::pin!(next);
        assert!(
            futures_util::poll!(next.as_mut()).is_pending(),
            "queued beyond the bound"
        );
        drop(release);
        next.await;
        assert_eq!(queue.run(|_| Ok(())).await.ok(), Some(()));
        assert_eq!(*ran.lock().unwrap(), (0..=QUEUED).collect::<Vec<_>>());
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
