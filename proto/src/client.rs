//! A typed async client for the runner protocol: requests matched to
//! responses by id, file transfers split into chunks, everything else
//! (events, terminal frames) delivered in order through
//! [`RunnerClient::next_incoming`]. Used by the TUI, the benchmarks and the
//! tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::frame::{self, Frame};
use crate::message::{
    BatchedWrite, ErrorCode, Event, ManifestEntry, Op, Reply, Request, ServerMessage, TermId, WriteOptions,
    WriteOutcome,
};
use crate::path::WorkspacePath;

/// Bytes per upload chunk; below the runner's default frame limit.
pub const UPLOAD_CHUNK: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the runner failed: {0}")]
    Connect(String),
    #[error("the runner refused: {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    #[error("the connection closed")]
    Closed,
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<Reply>),
    #[error("an unreadable answer from the runner: {0}")]
    Malformed(String),
}

/// Something the runner sent that is not a response to a request.
#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    Frame(Frame),
    /// An error for no pending request: a malformed message of ours, or a
    /// request sent raw with [`RunnerClient::send_text`].
    Error {
        id: Option<u64>,
        code: ErrorCode,
        message: String,
    },
    Closed(Option<CloseFrame>),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, ClientError>>>>>;
type Transfers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Bytes>>>>;

/// A connection to a runner: requests through [`RunnerHandle`] (which it
/// derefs to), everything else through [`RunnerClient::next_incoming`].
pub struct RunnerClient {
    handle: RunnerHandle,
    incoming: mpsc::UnboundedReceiver<Incoming>,
}

/// The sending half of a connection. Cheap to clone, so requests can be
/// awaited from many tasks while one task reads what else arrives.
#[derive(Clone)]
pub struct RunnerHandle {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    transfers: Transfers,
    next_id: Arc<AtomicU64>,
}

impl std::ops::Deref for RunnerClient {
    type Target = RunnerHandle;

    fn deref(&self) -> &RunnerHandle {
        &self.handle
    }
}

impl RunnerClient {
    /// Connects to `url` (`ws://host:port/v1/ws`) with a bearer token.
    pub async fn connect(url: &str, token: &str) -> Result<Self, ClientError> {
        Self::connect_with_host(url, None, token).await
    }

    /// Connects to `url` but names `host` in the Host header: reaching a
    /// gateway by address while addressing a project's origin.
    pub async fn connect_with_host(url: &str, host: Option<&str>, token: &str) -> Result<Self, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(host) = host {
            let value = HeaderValue::from_str(host).map_err(|e| ClientError::Connect(e.to_string()))?;
            request.headers_mut().insert("host", value);
        }
        let auth =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| ClientError::Connect(e.to_string()))?;
        request.headers_mut().insert("authorization", auth);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<Message>();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let transfers: Transfers = Arc::default();

        tokio::spawn(async move {
            while let Some(message) = outgoing_rx.recv().await {
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            // The client was dropped: close the connection rather than leave
            // it open with nobody reading.
            let _ = sink.send(Message::Close(None)).await;
        });
        let (pending_r, transfers_r) = (pending.clone(), transfers.clone());
        tokio::spawn(async move {
            let mut close = None;
            while let Some(message) = stream.next().await {
                let Ok(message) = message else { break };
                match message {
                    Message::Text(text) => match serde_json::from_str::<ServerMessage>(text.as_str()) {
                        Ok(ServerMessage::Response { id, result }) => resolve(&pending_r, id, Ok(result)),
                        Ok(ServerMessage::Error {
                            id: Some(id),
                            code,
                            message,
                        }) => {
                            transfers_r.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                            let waiter = pending_r.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                            match waiter {
                                Some(waiter) => {
                                    let _ = waiter.send(Err(ClientError::Remote { code, message }));
                                }
                                None => {
                                    let _ = incoming_tx.send(Incoming::Error {
                                        id: Some(id),
                                        code,
                                        message,
                                    });
                                }
                            }
                        }
                        Ok(ServerMessage::Error {
                            id: None,
                            code,
                            message,
                        }) => {
                            let _ = incoming_tx.send(Incoming::Error {
                                id: None,
                                code,
                                message,
                            });
                        }
                        Ok(ServerMessage::Event(event)) => {
                            let _ = incoming_tx.send(Incoming::Event(event));
                        }
                        Err(e) => tracing::warn!("unreadable message from the runner: {e}"),
                    },
                    Message::Binary(data) => match Frame::decode(data) {
                        Ok(Frame::FileChunk { transfer, data, .. }) => {
                            let routes = transfers_r.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(route) = routes.get(&transfer) {
                                let _ = route.send(data);
                            }
                        }
                        Ok(frame) => {
                            let _ = incoming_tx.send(Incoming::Frame(frame));
                        }
                        Err(e) => tracing::warn!("unreadable frame from the runner: {e}"),
                    },
                    Message::Close(frame) => {
                        close = frame;
                        break;
                    }
                    _ => {}
                }
            }
            for (_, waiter) in pending_r.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                let _ = waiter.send(Err(ClientError::Closed));
            }
            transfers_r.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let _ = incoming_tx.send(Incoming::Closed(close));
        });
        Ok(Self {
            handle: RunnerHandle {
                outgoing,
                pending,
                transfers,
                next_id: Arc::new(AtomicU64::new(1)),
            },
            incoming,
        })
    }

    pub async fn next_incoming(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Separates the sending half from what arrives unasked.
    pub fn into_split(self) -> (RunnerHandle, mpsc::UnboundedReceiver<Incoming>) {
        (self.handle, self.incoming)
    }
}

impl RunnerHandle {
    fn register(&self) -> (u64, oneshot::Receiver<Result<Reply, ClientError>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        (id, rx)
    }

    fn send_request(&self, id: u64, op: Op) -> Result<(), ClientError> {
        let json = serde_json::to_string(&Request { id, op }).map_err(|e| ClientError::Connect(e.to_string()))?;
        self.outgoing
            .send(Message::Text(json.into()))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends one request and waits for its response.
    pub async fn request(&self, op: Op) -> Result<Reply, ClientError> {
        let (id, rx) = self.register();
        self.send_request(id, op)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Writes a whole file; resolves once it is durable in storage.
    /// Returns the new version.
    pub async fn write_file(
        &self,
        path: &WorkspacePath,
        data: &[u8],
        base_version: Option<String>,
    ) -> Result<String, ClientError> {
        let options = WriteOptions {
            base_version,
            ..WriteOptions::default()
        };
        self.write_file_with(path, data, options).await
    }

    /// [`RunnerHandle::write_file`] with the write's other options.
    pub async fn write_file_with(
        &self,
        path: &WorkspacePath,
        data: &[u8],
        options: WriteOptions,
    ) -> Result<String, ClientError> {
        let (id, rx) = self.register();
        self.send_request(
            id,
            Op::Write {
                path: path.clone(),
                size: data.len() as u64,
                base_version: options.base_version,
                create_new: options.create_new,
                bulk: options.bulk,
            },
        )?;
        for (i, chunk) in data.chunks(UPLOAD_CHUNK).enumerate() {
            let frame = Frame::FileChunk {
                transfer: id,
                offset: (i * UPLOAD_CHUNK) as u64,
                data: Bytes::copy_from_slice(chunk),
            };
            self.send_binary(frame.encode())?;
        }
        match rx.await.map_err(|_| ClientError::Closed)?? {
            Reply::Written { version } => Ok(version),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Writes many small files in one request ([`Op::WriteMany`]): each
    /// file's options are `write`'s (`bulk` is the request's). Resolves once
    /// every file written is durable, with each file's version or the error
    /// that refused it, in `files`' order.
    pub async fn write_many(
        &self,
        files: &[(BatchedWrite, &[u8])],
        bulk: bool,
    ) -> Result<Vec<Result<String, ClientError>>, ClientError> {
        let (id, rx) = self.register();
        let announced = files.iter().map(|(file, _)| file.clone()).collect();
        self.send_request(id, Op::WriteMany { files: announced, bulk })?;
        // The files' bytes one after another, cut into chunks regardless of
        // where one file ends: a chunk per file would be a message per file.
        let total: usize = files.iter().map(|(_, data)| data.len()).sum();
        let frame_at = |offset: usize| frame::file_chunk_frame(id, offset as u64, UPLOAD_CHUNK.min(total - offset));
        let mut offset = 0usize;
        let mut chunk = frame_at(0);
        for &(_, data) in files {
            let mut data = data;
            while !data.is_empty() {
                let room = frame::FILE_CHUNK_HEADER + UPLOAD_CHUNK - chunk.len();
                let (now, later) = data.split_at(room.min(data.len()));
                chunk.extend_from_slice(now);
                offset += now.len();
                data = later;
                if chunk.len() == frame::FILE_CHUNK_HEADER + UPLOAD_CHUNK && offset < total {
                    let full = std::mem::replace(&mut chunk, frame_at(offset));
                    self.send_binary(full.freeze())?;
                }
            }
        }
        if total > 0 {
            self.send_binary(chunk.freeze())?;
        }
        let outcomes = match rx.await.map_err(|_| ClientError::Closed)?? {
            Reply::WrittenMany { files: outcomes } if outcomes.len() == files.len() => outcomes,
            other => return Err(ClientError::Unexpected(Box::new(other))),
        };
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                WriteOutcome::Written { version } => Ok(version),
                WriteOutcome::Refused { code, message } => Err(ClientError::Remote { code, message }),
            })
            .collect())
    }

    /// Reads a whole file; returns its bytes and version.
    pub async fn read_file(&self, path: &WorkspacePath) -> Result<(Vec<u8>, String), ClientError> {
        let (id, rx) = self.register();
        let (chunks_tx, mut chunks) = mpsc::unbounded_channel();
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, chunks_tx);
        self.send_request(id, Op::Read { path: path.clone() })?;
        let (size, version) = match rx.await.map_err(|_| ClientError::Closed)?? {
            Reply::ReadStarted { size, version } => (size, version),
            other => return Err(ClientError::Unexpected(Box::new(other))),
        };
        let mut data = Vec::with_capacity(size as usize);
        while (data.len() as u64) < size {
            match chunks.recv().await {
                Some(chunk) => data.extend_from_slice(&chunk),
                None => return Err(ClientError::Closed),
            }
        }
        self.transfers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        Ok((data, version))
    }

    /// Every entry under `path` (see `Op::Manifest`), in one request.
    pub async fn manifest(&self, path: &WorkspacePath) -> Result<Vec<ManifestEntry>, ClientError> {
        let (id, rx) = self.register();
        let (chunks_tx, mut chunks) = mpsc::unbounded_channel();
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, chunks_tx);
        // However it ends, the transfer is forgotten.
        let _transfer = TransferGuard {
            transfers: &self.transfers,
            id,
        };
        self.send_request(id, Op::Manifest { path: path.clone() })?;
        let (size, entries) = match rx.await.map_err(|_| ClientError::Closed)?? {
            Reply::ManifestStarted { size, entries } => (size, entries),
            other => return Err(ClientError::Unexpected(Box::new(other))),
        };
        // Sizes the runner announces are reserved only up to a bound: a
        // runner is code in a sandbox, and its word alone never makes this
        // process allocate gigabytes.
        let mut data = Vec::with_capacity(size.min(MANIFEST_RESERVE) as usize);
        while (data.len() as u64) < size {
            match chunks.recv().await {
                Some(chunk) => data.extend_from_slice(&chunk),
                None => return Err(ClientError::Closed),
            }
        }
        let mut out = Vec::with_capacity(entries.min(MANIFEST_RESERVE / 64) as usize);
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry = serde_json::from_slice(line).map_err(|e| ClientError::Malformed(e.to_string()))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Opens a terminal; with `flow_window`, the runner sends at most that
    /// many bytes beyond the last [`RunnerHandle::send_ack`] (see
    /// `PROTOCOL.md`, *Flow control*).
    pub async fn term_open(
        &self,
        cols: u16,
        rows: u16,
        command: Option<Vec<String>>,
        flow_window: Option<u32>,
    ) -> Result<TermId, ClientError> {
        let op = Op::TermOpen {
            cols,
            rows,
            command,
            flow_window,
            purpose: None,
        };
        match self.request(op).await? {
            Reply::TermOpened { term } => Ok(term),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Attaches to a terminal from `from_seq`, with a flow window as in
    /// [`RunnerHandle::term_open`]. Returns the terminal's size.
    pub async fn term_attach(
        &self,
        term: TermId,
        from_seq: u64,
        flow_window: Option<u32>,
    ) -> Result<(u16, u16), ClientError> {
        let op = Op::TermAttach {
            term,
            from_seq,
            flow_window,
        };
        match self.request(op).await? {
            Reply::TermAttached { cols, rows, .. } => Ok((cols, rows)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Acknowledges every output byte of `term` before `seq` (and a snapshot
    /// current at `seq`) as processed, opening the flow window again. Only
    /// for terminals attached with a `flow_window`.
    pub fn send_ack(&self, term: TermId, seq: u64) -> Result<(), ClientError> {
        self.send_binary(Frame::TermAck { term, seq }.encode())
    }

    pub fn send_input(&self, term: TermId, data: &[u8]) -> Result<(), ClientError> {
        self.send_binary(
            Frame::TermInput {
                term,
                data: Bytes::copy_from_slice(data),
            }
            .encode(),
        )
    }

    pub fn send_binary(&self, data: Bytes) -> Result<(), ClientError> {
        self.outgoing
            .send(Message::Binary(data))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends arbitrary text, for testing how the runner treats bad input.
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), ClientError> {
        self.outgoing
            .send(Message::Text(text.into().into()))
            .map_err(|_| ClientError::Closed)
    }

    pub fn close(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }
}

fn resolve(pending: &Pending, id: u64, result: Result<Reply, ClientError>) {
    if let Some(waiter) = pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
        let _ = waiter.send(result);
    }
}

/// Bytes reserved ahead for a manifest (it grows past this as it arrives).
const MANIFEST_RESERVE: u64 = 16 * 1024 * 1024;

/// Removes a transfer's chunk channel when the request that made it ends.
struct TransferGuard<'a> {
    transfers: &'a Transfers,
    id: u64,
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        self.transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}
