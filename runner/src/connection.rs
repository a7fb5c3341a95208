//! One client's WebSocket connection.
//!
//! The socket is split: this task reads and dispatches every request through
//! one `match` ([`Connection::handle_request`]); a writer task owns the sending
//! half and drains three bounded queues, highest priority first — control
//! messages, terminal output, file chunks — so a 1 GB download never delays a
//! keystroke echo and a client that stops reading holds a fixed amount of
//! memory. A terminal's `term_exited` goes in the terminal output queue, not
//! the control queue: it must not overtake the output before it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use bytes::Bytes;
use cloudcode_proto::PROTOCOL_VERSION;
use cloudcode_proto::frame::{Frame, encode_term_output};
use cloudcode_proto::message::{
    BatchedWrite, ChangeKind, ErrorCode, Event, FsChange, Op, Reply, Request, RequestError, ServerMessage, TermId,
    WRITE_MANY_MAX_BYTES, WRITE_MANY_MAX_FILES, WriteOptions, WriteOutcome,
};
use cloudcode_proto::path::WorkspacePath;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::files::{Committed, FileError, PendingWrite, Workspace};
use crate::manifest::HashCache;
use crate::state::RunnerState;
use crate::terminal::flow::Window;
use crate::terminal::scrollback::Next;
use crate::terminal::{READ_CHUNK, Terminal};
use crate::workspace_queue::WorkspaceQueue;
use cloudcode_proto::sync::persister::Written;

const CONTROL_QUEUE: usize = 64;
/// Terminal frames are at most 64 KiB: this bounds a stalled client's
/// terminal backlog to 512 KiB per connection.
const TERMINAL_QUEUE: usize = 8;
const BULK_QUEUE: usize = 4;
/// File bytes per download frame.
const DOWNLOAD_CHUNK: usize = 256 * 1024;
/// A storage backlog this large is reported as it drains...
const PROGRESS_BACKLOG: u64 = 100;
/// ...at most this often.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Messages written before one flush.
const WRITE_BATCH: usize = 32;

#[derive(Clone)]
struct Outbound {
    control: mpsc::Sender<Message>,
    terminal: mpsc::Sender<Message>,
    bulk: mpsc::Sender<Message>,
}

impl Outbound {
    fn text(message: &ServerMessage) -> Message {
        // Serialising our own types cannot fail.
        let json = serde_json::to_string(message).unwrap_or_default();
        Message::Text(Utf8Bytes::from(json))
    }

    async fn send(&self, message: ServerMessage) {
        let _ = self.control.send(Self::text(&message)).await;
    }

    async fn reply(&self, id: u64, result: Result<Reply, FileError>) {
        let message = match result {
            Ok(result) => ServerMessage::Response { id, result },
            Err(e) => ServerMessage::error(Some(id), e.code, e.message),
        };
        self.send(message).await;
    }
}

/// Commits an upload whose bytes all arrived and hands on the outcome.
fn commit(ws: &Workspace, slot: &mut UploadSlot) {
    let Some(pending) = slot.pending.take() else { return };
    let target = pending.target().clone();
    let committed = pending.commit(ws).map(|committed| {
        if let Some((meta, hash)) = committed.content {
            HashCache::shared().remember(target.clone(), &meta, hash);
        }
        (target, committed.version)
    });
    if let Some(outcome) = slot.outcome.take() {
        let _ = outcome.send(committed);
    }
}

/// A file of a `write_many` once written: its version, and where it is
/// with what storage may take instead of reading it back.
struct BatchWritten {
    version: String,
    written: Written,
}

/// What a committed write of `content` at `target` leaves: its hash for
/// the manifest, its bytes for storage (when nothing touched the file
/// between the two looks at it).
fn kept(target: WorkspacePath, committed: Committed, content: Bytes) -> BatchWritten {
    let content = committed.content.map(|(meta, hash)| {
        HashCache::shared().remember(target.clone(), &meta, hash);
        (meta, content)
    });
    BatchWritten {
        version: committed.version,
        written: Written { path: target, content },
    }
}

/// Writes one whole file of a `write_many` as a `write` of it would:
/// through a temporary file, checked as the write takes effect.
fn write_whole(ws: &Workspace, file: &BatchedWrite, content: Bytes, max: u64) -> Result<BatchWritten, FileError> {
    let mut pending = ws.begin_write(
        &file.path,
        file.size,
        max,
        file.base_version.as_deref(),
        file.create_new,
    )?;
    if let Err(e) = pending.append(&content) {
        pending.abort(ws);
        return Err(chunk_not_written(e));
    }
    let target = pending.target().clone();
    let committed = pending.commit(ws)?;
    Ok(kept(target, committed, content))
}

/// Why a `write_many` is refused before any byte of it is taken.
fn batch_refusal(files: &[BatchedWrite], total: u64) -> Option<FileError> {
    if files.len() > WRITE_MANY_MAX_FILES {
        let msg = format!(
            "{} files in one write_many; at most {WRITE_MANY_MAX_FILES}",
            files.len()
        );
        return Some(FileError::new(ErrorCode::BadRequest, msg));
    }
    if total > WRITE_MANY_MAX_BYTES {
        let msg = format!("{total} bytes in one write_many; at most {WRITE_MANY_MAX_BYTES}");
        return Some(FileError::new(ErrorCode::TooLarge, msg));
    }
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    if let Some(twice) = files.iter().find(|f| !seen.insert(&f.path)) {
        let msg = format!("{} is named twice in one write_many", twice.path);
        return Some(FileError::new(ErrorCode::BadRequest, msg));
    }
    None
}

/// A chunk that could not be written: a full disk is the client's file
/// being too large for what is left, anything else the runner's fault.
fn chunk_not_written(e: std::io::Error) -> FileError {
    let code = match e.kind() {
        std::io::ErrorKind::StorageFull => ErrorCode::TooLarge,
        _ => ErrorCode::Internal,
    };
    FileError::new(code, format!("write aborted: {e}"))
}

/// Whether a WebSocket read failed because a message or frame exceeded the
/// configured limits (which leaves the stream unframed: it must close).
fn exceeds_capacity(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    matches!(e.into_inner().downcast_ref::<WsError>(), Some(WsError::Capacity(_)))
}

/// A `write` whose bytes are arriving. The connection checks each chunk
/// against the transfer's rules and queues it; the file itself is touched
/// only by the connection's [`WorkspaceQueue`], in order, through
/// [`UploadSlot`].
struct Upload {
    slot: Arc<Mutex<UploadSlot>>,
    size: u64,
    received: u64,
}

/// A write as its queued steps see it: open once begun, until the one step
/// that ends it (commit, or a failure) answers through `outcome`.
struct UploadSlot {
    pending: Option<PendingWrite>,
    outcome: Option<oneshot::Sender<Result<(WorkspacePath, String), FileError>>>,
}

impl UploadSlot {
    fn lock(slot: &Mutex<UploadSlot>) -> std::sync::MutexGuard<'_, UploadSlot> {
        slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the temporary file and answers `error`; later steps find
    /// nothing to do.
    fn fail(&mut self, ws: &Workspace, error: FileError) {
        if let Some(pending) = self.pending.take() {
            pending.abort(ws);
        }
        if let Some(outcome) = self.outcome.take() {
            let _ = outcome.send(Err(error));
        }
    }
}

/// A `write_many` whose bytes are arriving, kept in memory (at most
/// [`WRITE_MANY_MAX_BYTES`]) until all came, then written in one step of
/// the workspace thread.
struct BatchUpload {
    id: u64,
    files: Vec<BatchedWrite>,
    bytes: Vec<u8>,
    total: u64,
    bulk: bool,
}

struct Attachment {
    cancel: CancellationToken,
    /// Set when the client asked for a flow window.
    flow: Option<FlowLink>,
}

/// The reading side of a windowed attachment: checks the client's acks and
/// hands them to its pump.
struct FlowLink {
    /// The pump's position (the seq after its last frame), stored before the
    /// frame is queued, so no legitimate ack can be beyond it.
    sent: Arc<AtomicU64>,
    acked: watch::Sender<u64>,
}

/// The pump's side of a windowed attachment.
struct PumpFlow {
    window: Window,
    sent: Arc<AtomicU64>,
    acks: watch::Receiver<u64>,
}

impl PumpFlow {
    /// Waits for the client's next ack; false when the pump should stop.
    async fn ack_arrived(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            r = self.acks.changed() => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }
}

pub struct Connection {
    state: Arc<RunnerState>,
    /// Every workspace operation of this client, in its order.
    workspace: WorkspaceQueue,
    out: Outbound,
    uploads: HashMap<u64, Upload>,
    /// At most one at a time: its bytes come before the next request's.
    batch: Option<BatchUpload>,
    attached: HashMap<TermId, Attachment>,
    fs_watch: Option<CancellationToken>,
    /// Cancels every task this connection started.
    tasks: CancellationToken,
}

pub async fn serve(socket: WebSocket, state: Arc<RunnerState>) {
    let (sink, mut stream) = socket.split();
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (terminal_tx, terminal_rx) = mpsc::channel(TERMINAL_QUEUE);
    let (bulk_tx, bulk_rx) = mpsc::channel(BULK_QUEUE);
    let (close_tx, close_rx) = mpsc::channel::<CloseFrame>(1);
    let writer = tokio::spawn(write_loop(sink, control_rx, terminal_rx, bulk_rx, close_rx));
    let out = Outbound {
        control: control_tx,
        terminal: terminal_tx,
        bulk: bulk_tx,
    };
    let tasks = state.shutdown.child_token();
    let workspace = match WorkspaceQueue::start(state.workspace.clone()) {
        Ok(queue) => queue,
        Err(e) => {
            tracing::error!("cannot start a connection's workspace thread: {e}");
            let _ = close_tx.try_send(CloseFrame {
                code: close_code::AGAIN,
                reason: "the runner cannot serve another connection now".into(),
            });
            drop(close_tx);
            let _ = writer.await;
            return;
        }
    };
    let mut conn = Connection {
        state: state.clone(),
        workspace,
        out,
        uploads: HashMap::new(),
        batch: None,
        attached: HashMap::new(),
        fs_watch: None,
        tasks,
    };

    conn.out
        .send(ServerMessage::Event(Event::Welcome {
            protocol: PROTOCOL_VERSION,
            project: state.project.clone(),
            max_file_size: state.limits.max_file_size,
            max_frame_size: state.limits.max_frame_size as u64,
            instance: crate::state::instance().to_owned(),
        }))
        .await;
    conn.spawn_storage_status();
    state.activity.client_connected();

    loop {
        let message = tokio::select! {
            m = stream.next() => m,
            _ = conn.tasks.cancelled() => {
                let _ = close_tx.try_send(CloseFrame { code: close_code::AWAY, reason: "runner shutting down".into() });
                break;
            }
        };
        state.activity.touch();
        match message {
            Some(Ok(Message::Text(text))) => conn.handle_text(text.as_str()).await,
            Some(Ok(Message::Binary(data))) => conn.handle_binary(data).await,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(e)) => {
                tracing::info!("connection read error: {e}");
                // Oversized messages break the framing: say why, then close.
                if exceeds_capacity(e) {
                    let _ = close_tx.try_send(CloseFrame {
                        code: close_code::SIZE,
                        reason: "message exceeds max_frame_size".into(),
                    });
                } else {
                    let _ = close_tx.try_send(CloseFrame {
                        code: close_code::PROTOCOL,
                        reason: "protocol error".into(),
                    });
                }
                break;
            }
        }
    }
    conn.finish().await;
    state.activity.client_disconnected();
    drop(conn);
    drop(close_tx);
    let _ = writer.await;
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut control: mpsc::Receiver<Message>,
    mut terminal: mpsc::Receiver<Message>,
    mut bulk: mpsc::Receiver<Message>,
    mut close: mpsc::Receiver<CloseFrame>,
) {
    loop {
        let message = tokio::select! {
            biased;
            Some(frame) = close.recv() => {
                // Flush replies already queued (an error explaining the
                // close) before the close frame.
                while let Ok(m) = control.try_recv() {
                    let _ = sink.feed(m).await;
                }
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
            Some(m) = control.recv() => m,
            Some(m) = terminal.recv() => m,
            Some(m) = bulk.recv() => m,
            else => return,
        };
        if sink.feed(message).await.is_err() {
            return;
        }
        // Batch what is already queued into one flush.
        for _ in 0..WRITE_BATCH {
            let next = control
                .try_recv()
                .or_else(|_| terminal.try_recv())
                .or_else(|_| bulk.try_recv());
            match next {
                Ok(m) => {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

impl Connection {
    async fn handle_text(&mut self, text: &str) {
        match Request::from_json(text) {
            Ok(request) => self.handle_request(request).await,
            Err(e) => {
                let id = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64());
                let code = match &e {
                    RequestError::InvalidPath { .. } => ErrorCode::InvalidPath,
                    RequestError::Malformed(_) => ErrorCode::BadRequest,
                };
                self.out.send(ServerMessage::error(id, code, e.to_string())).await;
            }
        }
    }

    async fn handle_binary(&mut self, data: Bytes) {
        match Frame::decode(data) {
            Ok(Frame::TermInput { term, data }) => match self.state.terminals.get(term) {
                Some(terminal) => terminal.write_input(&data),
                None => {
                    self.out
                        .send(ServerMessage::error(
                            None,
                            ErrorCode::UnknownTerminal,
                            format!("no terminal {term}"),
                        ))
                        .await
                }
            },
            Ok(Frame::FileChunk { transfer, offset, data }) => self.receive_chunk(transfer, offset, data).await,
            Ok(Frame::TermAck { term, seq }) => self.receive_ack(term, seq).await,
            Ok(other) => {
                let msg = format!("frame {other:?} is sent by the runner, not to it");
                self.out
                    .send(ServerMessage::error(None, ErrorCode::BadRequest, msg))
                    .await
            }
            Err(e) => {
                self.out
                    .send(ServerMessage::error(None, ErrorCode::BadRequest, e.to_string()))
                    .await
            }
        }
    }

    /// Every request goes through here.
    async fn handle_request(&mut self, Request { id, op }: Request) {
        let result = match op {
            Op::List { path } => self
                .workspace
                .run(move |ws| ws.list(&path))
                .await
                .map(|entries| Reply::Entries { entries }),
            Op::Stat { path } => self
                .workspace
                .run(move |ws| ws.entry(&path))
                .await
                .map(|entry| Reply::Entry { entry }),
            Op::Read { path } => return self.start_download(id, path).await,
            Op::Write {
                path,
                size,
                base_version,
                create_new,
                bulk,
            } => {
                let options = WriteOptions {
                    base_version,
                    create_new,
                    bulk,
                };
                return self.start_upload(id, path, size, options).await;
            }
            Op::WriteMany { files, bulk } => return self.start_batch(id, files, bulk).await,
            Op::CreateDir { path } => self
                .workspace
                .run(move |ws| ws.create_dir(&path))
                .await
                .map(|()| Reply::Done),
            Op::Rename { from, to, overwrite } => {
                let paths = vec![from.clone(), to.clone()];
                match self.workspace.run(move |ws| ws.rename(&from, &to, overwrite)).await {
                    Ok(()) => return self.reply_when_durable(id, paths, Reply::Done),
                    Err(e) => Err(e),
                }
            }
            Op::Delete {
                path,
                recursive,
                base_version,
            } => {
                let deleted = path.clone();
                // A recursive delete of 100,000 files takes a while: off the
                // worker that carries terminal bytes.
                match self
                    .workspace
                    .run(move |ws| ws.delete(&deleted, recursive, base_version.as_deref()))
                    .await
                {
                    Ok(()) => return self.reply_when_durable(id, vec![path], Reply::Done),
                    Err(e) => Err(e),
                }
            }
            Op::WatchFs => {
                self.start_fs_watch();
                Ok(Reply::Done)
            }
            Op::UnwatchFs => {
                if let Some(watch) = self.fs_watch.take() {
                    watch.cancel();
                }
                Ok(Reply::Done)
            }
            Op::TermOpen {
                cols,
                rows,
                command,
                flow_window,
                purpose,
            } => match check_window(flow_window).and_then(|()| {
                self.state
                    .terminals
                    .open(cols, rows, command, purpose.unwrap_or_default())
                    .map_err(|e| FileError::new(ErrorCode::BadRequest, e.to_string()))
            }) {
                Ok(terminal) => {
                    self.out.reply(id, Ok(Reply::TermOpened { term: terminal.id })).await;
                    self.attach(terminal, 0, flow_window);
                    return;
                }
                Err(e) => Err(e),
            },
            Op::TermAttach {
                term,
                from_seq,
                flow_window,
            } => match check_window(flow_window).and_then(|()| self.terminal(term)) {
                Ok(terminal) => {
                    let (cols, rows) = terminal.size();
                    self.out.reply(id, Ok(Reply::TermAttached { term, cols, rows })).await;
                    self.attach(terminal, from_seq, flow_window);
                    return;
                }
                Err(e) => Err(e),
            },
            Op::TermDetach { term } => match self.attached.remove(&term) {
                Some(a) => {
                    a.cancel.cancel();
                    Ok(Reply::Done)
                }
                None => Err(unknown_terminal(term)),
            },
            Op::TermResize { term, cols, rows } => self
                .terminal(term)
                .and_then(|t| {
                    t.resize(cols, rows)
                        .map_err(|e| FileError::new(ErrorCode::BadRequest, e.to_string()))
                })
                .map(|()| Reply::Done),
            Op::TermClose { term } => {
                if self.state.terminals.close(term) {
                    Ok(Reply::Done)
                } else {
                    Err(unknown_terminal(term))
                }
            }
            Op::TermList => Ok(Reply::Terms {
                terms: self.state.terminals.list(),
            }),
            Op::StorageStatus => Ok(Reply::Storage {
                status: self.state.persister.current_status(),
            }),
            Op::Ping => Ok(Reply::Pong),
            Op::Manifest { path } => return self.start_manifest(id, path).await,
            Op::Symlink {
                path,
                target,
                overwrite,
            } => {
                let link = path.clone();
                let made = self
                    .workspace
                    .run(move |ws| crate::manifest::symlink(ws, &link, &target, overwrite));
                match made.await {
                    Ok(()) => return self.reply_when_durable(id, vec![path], Reply::Done),
                    Err(e) => Err(e),
                }
            }
            Op::SetExecutable { path, executable } => {
                let file = path.clone();
                let set = self
                    .workspace
                    .run(move |ws| crate::manifest::set_executable(ws, &file, executable));
                match set.await {
                    Ok(()) => return self.reply_when_durable(id, vec![path], Reply::Done),
                    Err(e) => Err(e),
                }
            }
        };
        self.out.reply(id, result).await;
    }

    fn terminal(&self, term: TermId) -> Result<Arc<Terminal>, FileError> {
        self.state.terminals.get(term).ok_or_else(|| unknown_terminal(term))
    }

    /// Answers once the change to `paths` is in storage, without holding up
    /// this connection's other traffic meanwhile.
    fn reply_when_durable(&self, id: u64, paths: Vec<WorkspacePath>, reply: Reply) {
        let out = self.out.clone();
        let persister = self.state.persister.clone();
        tokio::spawn(async move {
            for path in paths {
                if let Err(e) = persister.persist(path).await {
                    return out
                        .reply(id, Err(FileError::new(ErrorCode::Storage, e.to_string())))
                        .await;
                }
            }
            out.reply(id, Ok(reply)).await;
        });
    }

    async fn start_download(&mut self, id: u64, path: WorkspacePath) {
        let max = self.state.limits.max_file_size;
        let opened = self.workspace.run(move |ws| ws.open_read(&path, max)).await;
        let (mut file, size, version) = match opened {
            Ok(opened) => opened,
            Err(e) => return self.out.reply(id, Err(e)).await,
        };
        self.out.reply(id, Ok(Reply::ReadStarted { size, version })).await;
        let bulk = self.out.bulk.clone();
        let cancel = self.tasks.clone();
        tokio::spawn(async move {
            let mut offset = 0u64;
            while offset < size {
                let want = DOWNLOAD_CHUNK.min((size - offset) as usize);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    let read = file.read_exact(&mut buf).map(|()| buf);
                    (file, read)
                })
                .await;
                let Ok((returned, Ok(buf))) = read else {
                    // Truncated under us: the client sees fewer bytes than
                    // announced and an error.
                    break;
                };
                let frame = Frame::FileChunk {
                    transfer: id,
                    offset,
                    data: Bytes::from(buf),
                }
                .encode();
                tokio::select! {
                    sent = bulk.send(Message::Binary(frame)) => if sent.is_err() { return },
                    _ = cancel.cancelled() => return,
                }
                offset += want as u64;
                file = returned;
            }
        });
    }

    /// Walks and hashes on the connection's workspace thread, then sends
    /// the manifest's bytes on the bulk queue, like a download.
    async fn start_manifest(&mut self, id: u64, path: WorkspacePath) {
        let built = self
            .workspace
            .run(move |ws| crate::manifest::build(ws, &path, HashCache::shared()))
            .await;
        let manifest = match built {
            Ok(manifest) => manifest,
            Err(e) => return self.out.reply(id, Err(e)).await,
        };
        let size = manifest.bytes.len() as u64;
        let entries = manifest.entries;
        self.out.reply(id, Ok(Reply::ManifestStarted { size, entries })).await;
        let bulk = self.out.bulk.clone();
        let cancel = self.tasks.clone();
        tokio::spawn(async move {
            let bytes = Bytes::from(manifest.bytes);
            let mut offset = 0usize;
            while offset < bytes.len() {
                let end = (offset + DOWNLOAD_CHUNK).min(bytes.len());
                let frame = Frame::FileChunk {
                    transfer: id,
                    offset: offset as u64,
                    data: bytes.slice(offset..end),
                }
                .encode();
                tokio::select! {
                    sent = bulk.send(Message::Binary(frame)) => if sent.is_err() { return },
                    _ = cancel.cancelled() => return,
                }
                offset = end;
            }
        });
    }

    /// Starts a write without waiting for the disk: each step is queued
    /// behind the client's earlier operations, and the answer comes from a
    /// task of its own once the write is committed and durable. The next
    /// message is read meanwhile, so a window of small uploads (a first
    /// sync) keeps the workspace thread busy instead of the connection
    /// waiting on it twice per file.
    async fn start_upload(&mut self, id: u64, path: WorkspacePath, size: u64, options: WriteOptions) {
        if self.uploads.contains_key(&id) {
            let err = FileError::new(
                ErrorCode::BadRequest,
                format!("request id {id} already has a write in progress"),
            );
            return self.out.reply(id, Err(err)).await;
        }
        let max = self.state.limits.max_file_size;
        let WriteOptions {
            base_version,
            create_new,
            bulk,
        } = options;
        let (outcome, outcome_rx) = oneshot::channel();
        let slot = Arc::new(Mutex::new(UploadSlot {
            pending: None,
            outcome: Some(outcome),
        }));
        self.answer_upload(id, bulk, outcome_rx);
        let begun = slot.clone();
        self.workspace
            .then(move |ws| {
                let mut slot = UploadSlot::lock(&begun);
                match ws.begin_write(&path, size, max, base_version.as_deref(), create_new) {
                    Ok(pending) => slot.pending = Some(pending),
                    Err(e) => slot.fail(ws, e),
                }
            })
            .await;
        let upload = Upload {
            slot,
            size,
            received: 0,
        };
        if size == 0 {
            self.commit_upload(upload).await;
        } else {
            self.uploads.insert(id, upload);
        }
    }

    /// Takes a `write_many`'s files; its bytes follow.
    async fn start_batch(&mut self, id: u64, files: Vec<BatchedWrite>, bulk: bool) {
        let total = files.iter().fold(0u64, |sum, f| sum.saturating_add(f.size));
        let refusal = if self.uploads.contains_key(&id) || self.batch.as_ref().is_some_and(|b| b.id == id) {
            Some(FileError::new(
                ErrorCode::BadRequest,
                format!("request id {id} already has a write in progress"),
            ))
        } else if let Some(other) = &self.batch {
            let msg = format!("the bytes of write_many {} are still expected", other.id);
            Some(FileError::new(ErrorCode::BadRequest, msg))
        } else {
            batch_refusal(&files, total)
        };
        if let Some(refusal) = refusal {
            return self.out.reply(id, Err(refusal)).await;
        }
        let batch = BatchUpload {
            id,
            files,
            // Within WRITE_MANY_MAX_BYTES, checked above.
            bytes: Vec::with_capacity(total as usize),
            total,
            bulk,
        };
        if total == 0 {
            self.commit_batch(batch).await;
        } else {
            self.batch = Some(batch);
        }
    }

    async fn receive_batch_chunk(&mut self, offset: u64, data: Bytes) {
        let Some(batch) = self.batch.as_mut() else { return };
        let received = batch.bytes.len() as u64;
        let problem = if offset != received {
            Some(format!("chunk at offset {offset}, expected {received}"))
        } else if received + data.len() as u64 > batch.total {
            Some(format!("more bytes than the announced sizes' sum {}", batch.total))
        } else {
            None
        };
        if let Some(problem) = problem {
            if let Some(batch) = self.batch.take() {
                let error = FileError::new(ErrorCode::BadRequest, format!("write_many aborted: {problem}"));
                self.out.reply(batch.id, Err(error)).await;
            }
            return;
        }
        batch.bytes.extend_from_slice(&data);
        if batch.bytes.len() as u64 == batch.total
            && let Some(batch) = self.batch.take()
        {
            self.commit_batch(batch).await;
        }
    }

    /// Queues the writes of a batch whose bytes all arrived; its answer
    /// comes from a task of its own once they are durable.
    async fn commit_batch(&self, batch: BatchUpload) {
        let (outcome, outcome_rx) = oneshot::channel();
        self.answer_batch(batch.id, batch.bulk, outcome_rx);
        let max = self.state.limits.max_file_size;
        let held = batch.bytes.len();
        self.workspace
            .then_holding(held, move |ws| {
                let bytes = Bytes::from(batch.bytes);
                let mut at = 0usize;
                // New files are made in their directory opened once for
                // each run of them (a first sync sends a directory's files
                // together); anything else takes a write's own path.
                let mut parent: Option<(WorkspacePath, cap_std::fs::Dir)> = None;
                let written = batch
                    .files
                    .iter()
                    .map(|file| {
                        let content = bytes.slice(at..at + file.size as usize);
                        at += file.size as usize;
                        if file.create_new && file.base_version.is_none() {
                            let dir_path = file.path.parent().unwrap_or_default();
                            if parent.as_ref().is_none_or(|(open, _)| *open != dir_path) {
                                parent = ws.open_parent_of(&file.path).map(|dir| (dir_path, dir));
                            }
                            let made = parent
                                .as_ref()
                                .and_then(|(_, dir)| ws.create_in(dir, &file.path, &content, max));
                            if let Some(committed) = made {
                                return Ok(kept(file.path.clone(), committed, content));
                            }
                        }
                        write_whole(ws, file, content, max)
                    })
                    .collect();
                let _ = outcome.send(written);
            })
            .await;
    }

    /// Answers a `write_many` once each of its files is written and
    /// durable, or refused.
    fn answer_batch(&self, id: u64, bulk: bool, written: oneshot::Receiver<Vec<Result<BatchWritten, FileError>>>) {
        let state = self.state.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let Ok(mut written) = written.await else {
                let error = FileError::new(ErrorCode::Internal, "the write_many failed in the runner");
                return out.reply(id, Err(error)).await;
            };
            // Each file written, in order, with its bytes when storage may
            // take them.
            let files = written
                .iter_mut()
                .filter_map(|w| w.as_mut().ok())
                .map(|w| Written {
                    path: w.written.path.clone(),
                    content: w.written.content.take(),
                })
                .collect();
            let mut durable = state.persister.persist_written(files, bulk).await.into_iter();
            let files = written
                .into_iter()
                .map(|w| match w {
                    Ok(BatchWritten { version, .. }) => match durable.next() {
                        Some(Ok(())) => WriteOutcome::Written { version },
                        Some(Err(e)) => WriteOutcome::Refused {
                            code: ErrorCode::Storage,
                            message: e.to_string(),
                        },
                        None => WriteOutcome::Refused {
                            code: ErrorCode::Internal,
                            message: "no word from storage".to_owned(),
                        },
                    },
                    Err(e) => WriteOutcome::Refused {
                        code: e.code,
                        message: e.message,
                    },
                })
                .collect();
            out.reply(id, Ok(Reply::WrittenMany { files })).await;
        });
    }

    async fn receive_chunk(&mut self, transfer: u64, offset: u64, data: Bytes) {
        if self.batch.as_ref().is_some_and(|b| b.id == transfer) {
            return self.receive_batch_chunk(offset, data).await;
        }
        let Some(upload) = self.uploads.get_mut(&transfer) else {
            let msg = format!("no write in progress for request {transfer}");
            return self
                .out
                .send(ServerMessage::error(Some(transfer), ErrorCode::BadRequest, msg))
                .await;
        };
        let problem = if offset != upload.received {
            Some(format!("chunk at offset {offset}, expected {}", upload.received))
        } else if upload.received + data.len() as u64 > upload.size {
            Some(format!("more bytes than the announced size {}", upload.size))
        } else {
            None
        };
        if let Some(problem) = problem {
            if let Some(upload) = self.uploads.remove(&transfer) {
                let error = FileError::new(ErrorCode::BadRequest, format!("write aborted: {problem}"));
                self.workspace
                    .then(move |ws| UploadSlot::lock(&upload.slot).fail(ws, error))
                    .await;
            }
            return;
        }
        upload.received += data.len() as u64;
        let slot = upload.slot.clone();
        // The last chunk commits in the same step: a small file (most of a
        // first sync) costs the workspace thread two steps, not three.
        let last = upload.received == upload.size;
        if last {
            self.uploads.remove(&transfer);
        }
        self.workspace
            .then_holding(data.len(), move |ws| {
                let mut locked = UploadSlot::lock(&slot);
                let Some(pending) = locked.pending.as_mut() else {
                    return; // It failed already, and said so.
                };
                if let Err(e) = pending.append(&data) {
                    return locked.fail(ws, chunk_not_written(e));
                }
                if last {
                    commit(ws, &mut locked);
                }
            })
            .await;
    }

    /// Queues the commit of an upload whose bytes all arrived.
    async fn commit_upload(&self, upload: Upload) {
        self.workspace
            .then(move |ws| commit(ws, &mut UploadSlot::lock(&upload.slot)))
            .await;
    }

    /// Answers the write `id` once its queued steps end: with the error that
    /// ended it, or once the committed file is durable. Nothing is sent for
    /// a write the client abandoned by leaving.
    fn answer_upload(
        &self,
        id: u64,
        bulk: bool,
        outcome: oneshot::Receiver<Result<(WorkspacePath, String), FileError>>,
    ) {
        let state = self.state.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let (target, version) = match outcome.await {
                Ok(Ok(committed)) => committed,
                Ok(Err(e)) => return out.reply(id, Err(e)).await,
                Err(_) => return,
            };
            let durable = match bulk {
                true => state.persister.persist_bulk(target).await,
                false => state.persister.persist(target).await,
            };
            match durable {
                Ok(()) => out.reply(id, Ok(Reply::Written { version })).await,
                Err(e) => {
                    out.reply(id, Err(FileError::new(ErrorCode::Storage, e.to_string())))
                        .await
                }
            }
        });
    }

    fn attach(&mut self, terminal: Arc<Terminal>, from_seq: u64, flow_window: Option<u32>) {
        if let Some(previous) = self.attached.remove(&terminal.id) {
            previous.cancel.cancel();
        }
        let cancel = self.tasks.child_token();
        let (link, flow) = match flow_window {
            Some(size) => {
                let sent = Arc::new(AtomicU64::new(from_seq));
                let (acked, acks) = watch::channel(from_seq);
                let link = FlowLink {
                    sent: sent.clone(),
                    acked,
                };
                let flow = PumpFlow {
                    window: Window::new(size, terminal.info().seq.max(from_seq)),
                    sent,
                    acks,
                };
                (Some(link), Some(flow))
            }
            None => (None, None),
        };
        self.attached.insert(
            terminal.id,
            Attachment {
                cancel: cancel.clone(),
                flow: link,
            },
        );
        tokio::spawn(pump(terminal, from_seq, self.out.clone(), cancel, flow));
    }

    /// A `TermAck`. One for a terminal this connection is not attached to
    /// with a window (never attached, detached, attached without one) is
    /// ignored: acks race with `term_detach` and with the client's own
    /// teardown, and there is nothing they could release. One that moves
    /// backwards (or repeats) is ignored too. One beyond what was sent is a
    /// client bug: an error without id, and the ack is dropped (not
    /// clamped), so the window stays as it was.
    async fn receive_ack(&mut self, term: TermId, seq: u64) {
        let Some(flow) = self.attached.get(&term).and_then(|a| a.flow.as_ref()) else {
            return;
        };
        if seq <= *flow.acked.borrow() {
            return;
        }
        let sent = flow.sent.load(Ordering::Acquire);
        if seq > sent {
            let message = format!("ack of seq {seq} for terminal {term}, but output was sent only up to {sent}");
            return self
                .out
                .send(ServerMessage::error(None, ErrorCode::BadRequest, message))
                .await;
        }
        flow.acked.send_replace(seq);
    }

    fn start_fs_watch(&mut self) {
        if self.fs_watch.is_some() {
            return;
        }
        let cancel = self.tasks.child_token();
        self.fs_watch = Some(cancel.clone());
        let mut events = self.state.fs_events.subscribe();
        let out = self.out.clone();
        tokio::spawn(async move {
            loop {
                let changes = tokio::select! {
                    e = events.recv() => e,
                    _ = cancel.cancelled() => return,
                };
                let changes = match changes {
                    Ok(changes) => changes.as_ref().clone(),
                    // Fell behind: tell the client to re-read everything.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        vec![FsChange {
                            path: WorkspacePath::root(),
                            kind: ChangeKind::Modified,
                        }]
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                out.send(ServerMessage::Event(Event::FsChanged { changes })).await;
            }
        });
    }

    /// Tells the client when storage becomes unreachable and when it is
    /// back, and, while a backlog of at least [`PROGRESS_BACKLOG`] changes
    /// drains, its progress once a second (pending count, drain rate), then
    /// once more when it is gone: enough for "saving 23,356 files" without
    /// an event per save.
    fn spawn_storage_status(&self) {
        let mut status = self.state.persister.status();
        let persister = self.state.persister.clone();
        let out = self.out.clone();
        let cancel = self.tasks.clone();
        tokio::spawn(async move {
            let mut healthy = status.borrow_and_update().healthy;
            if !healthy {
                let current = status.borrow().clone();
                out.send(ServerMessage::Event(Event::Storage { status: current })).await;
            }
            let mut reported_backlog = false;
            let now = tokio::time::Instant::now();
            let mut last_progress = now.checked_sub(PROGRESS_EVERY).unwrap_or(now);
            loop {
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    _ = cancel.cancelled() => return,
                }
                let pending = status.borrow_and_update().pending;
                let health_changed = status.borrow().healthy != healthy;
                let progress = pending >= PROGRESS_BACKLOG && last_progress.elapsed() >= PROGRESS_EVERY;
                let drained = reported_backlog && pending == 0;
                if health_changed || progress || drained {
                    let current = persister.current_status();
                    healthy = current.healthy;
                    if progress {
                        last_progress = tokio::time::Instant::now();
                    }
                    reported_backlog = pending >= PROGRESS_BACKLOG || (reported_backlog && pending > 0);
                    out.send(ServerMessage::Event(Event::Storage { status: current })).await;
                }
            }
        });
    }

    /// The client is gone: stop its tasks and drop unfinished writes (the
    /// files they targeted keep their old content).
    async fn finish(&mut self) {
        self.tasks.cancel();
        for (_, upload) in self.uploads.drain() {
            self.workspace
                .then(move |ws| {
                    let mut slot = UploadSlot::lock(&upload.slot);
                    slot.outcome = None;
                    if let Some(pending) = slot.pending.take() {
                        pending.abort(ws);
                    }
                })
                .await;
        }
    }
}

fn unknown_terminal(term: TermId) -> FileError {
    FileError::new(ErrorCode::UnknownTerminal, format!("no terminal {term}"))
}

/// A window of 0 would never let a byte through.
fn check_window(flow_window: Option<u32>) -> Result<(), FileError> {
    match flow_window {
        Some(0) => Err(FileError::new(
            ErrorCode::BadRequest,
            "flow_window must be at least 1 byte",
        )),
        _ => Ok(()),
    }
}

/// Streams one terminal's output to one client from `seq` on; with a flow
/// window, only as far as the client's acks allow. Waiting here (for the
/// socket or for acks) never holds up the terminal: its output goes on
/// into the scrollback, where this pump finds it, or a snapshot of it.
async fn pump(
    terminal: Arc<Terminal>,
    mut seq: u64,
    out: Outbound,
    cancel: CancellationToken,
    mut flow: Option<PumpFlow>,
) {
    let _attached = terminal.attach();
    let mut changed = terminal.subscribe();
    loop {
        changed.borrow_and_update();
        let mut max = READ_CHUNK;
        if let Some(flow) = &mut flow {
            flow.window.ack(*flow.acks.borrow_and_update());
            match flow.window.room() {
                0 => {
                    if !flow.ack_arrived(&cancel).await {
                        return;
                    }
                    continue;
                }
                room => max = max.min(usize::try_from(room).unwrap_or(usize::MAX)),
            }
        }
        let output = match &flow {
            Some(flow) => terminal.read_windowed(seq, max, &flow.window),
            None => terminal.read(seq, max),
        };
        let frame = match output.next {
            Next::Data { seq: at, data } => {
                seq = at + data.len() as u64;
                if let Some(flow) = &mut flow {
                    flow.window.sent_output(at, data.len() as u64);
                }
                encode_term_output(terminal.id, at, &data)
            }
            Next::Snapshot { seq: at, data } => {
                if let Some(flow) = &mut flow {
                    let len = data.len() as u64;
                    if !flow.window.admits_snapshot(len) {
                        flow.window.defer_snapshot(len);
                        continue;
                    }
                    flow.window.sent_snapshot(at, len);
                }
                seq = at;
                Frame::TermSnapshot {
                    term: terminal.id,
                    seq: at,
                    data,
                }
                .encode()
            }
            Next::UpToDate => {
                if let Some(code) = output.exited {
                    // Through the terminal queue, behind this terminal's
                    // output frames still queued: the control queue goes
                    // first and would overtake them.
                    let exited = ServerMessage::Event(Event::TermExited {
                        term: terminal.id,
                        code,
                    });
                    tokio::select! {
                        _ = out.terminal.send(Outbound::text(&exited)) => {}
                        _ = cancel.cancelled() => {}
                    }
                    return;
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = cancel.cancelled() => return,
                }
                continue;
            }
        };
        if let Some(flow) = &flow {
            flow.sent.store(seq, Ordering::Release);
        }
        tokio::select! {
            sent = out.terminal.send(Message::Binary(frame)) => if sent.is_err() { return },
            _ = cancel.cancelled() => return,
        }
    }
}
