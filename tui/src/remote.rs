//! The connection to one project's runner, run as a task apart from the UI
//! (as gitui's asyncgit keeps I/O off its UI loop): the UI sends
//! [`Command`]s and receives [`Update`]s, never waiting on the network.
//!
//! The task owns reconnection: when the connection drops it says so, retries
//! with backoff (starting the project again, which also brings back a
//! sandbox the idle reaper stopped), and re-attaches every terminal from the
//! sequence number after the last byte it passed on, so the UI's terminal
//! screens continue exactly where they were. Unless the runner is another
//! process than before (its `welcome` names another `instance`: the sandbox
//! restarted): then every terminal it knew has ended, and it says so
//! instead of attaching by an id that may now name another terminal.
//!
//! Results carry a [`SessionError`], never a string to match on.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use cloudcode_proto::client::{ClientError, Incoming, RunnerClient, RunnerHandle};
use cloudcode_proto::frame::Frame;
use cloudcode_proto::message::{Entry, ErrorCode, Event, FsChange, Op, Reply, StorageStatus, TermId};
use cloudcode_proto::path::WorkspacePath;
use tokio::sync::mpsc;

use crate::api::{ApiClient, Started};

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(8);
/// A silent connection (a dead peer whose TCP never says so) is found by a
/// ping that gets no answer.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_PATIENCE: Duration = Duration::from_secs(5);

/// What a terminal is for: told to the runner, so a browser's Run finds
/// the TUI's (PROTOCOL.md), and carried back in [`Update::TermOpened`].
pub use cloudcode_proto::message::TermPurpose;

#[derive(Debug)]
pub enum Command {
    List(WorkspacePath),
    Stat(WorkspacePath),
    Read(WorkspacePath),
    Write {
        path: WorkspacePath,
        data: Vec<u8>,
        base_version: Option<String>,
    },
    CreateFile(WorkspacePath),
    CreateDir(WorkspacePath),
    Rename {
        from: WorkspacePath,
        to: WorkspacePath,
    },
    Delete(WorkspacePath),
    TermOpen {
        cols: u16,
        rows: u16,
        command: Option<Vec<String>>,
        purpose: TermPurpose,
    },
    Input {
        term: TermId,
        data: Bytes,
    },
    Resize {
        term: TermId,
        cols: u16,
        rows: u16,
    },
    TermClose(TermId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting { attempt: u32 },
    Connected { preview_url: String },
    Lost { reason: String, retry_in: Duration },
}

/// Why a request to the runner did not succeed. The app decides by the
/// variant and the protocol's [`ErrorCode`]; the text is for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The runner refused (a conflicting save: `ErrorCode::Conflict`).
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    /// Not connected to the project: the request was not sent, or the
    /// connection dropped before its answer. The session is reconnecting.
    #[error("not connected to the project: retrying")]
    Disconnected,
    /// An answer that does not fit the request.
    #[error("unexpected reply from the runner: {0}")]
    Unexpected(String),
}

impl SessionError {
    /// The runner's code, when the runner refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn unexpected(reply: &Reply) -> Self {
        Self::Unexpected(format!("{reply:?}"))
    }
}

impl From<ClientError> for SessionError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Remote { code, message } => Self::Remote { code, message },
            ClientError::Connect(_) | ClientError::Closed => Self::Disconnected,
            ClientError::Unexpected(reply) => Self::unexpected(&reply),
            ClientError::Malformed(detail) => Self::Unexpected(detail),
        }
    }
}

/// Why a terminal the UI shows no longer exists on the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The runner is another process than the one the terminal ran in (a
    /// new `instance` in its welcome): the sandbox restarted, and the
    /// terminal's processes ended with the old one.
    Restarted,
    /// The runner refused to attach it again (`unknown_terminal`): it was
    /// closed, or reaped as idle, while this client was away.
    Closed,
    /// The runner refused to attach it again with another code.
    Refused(ErrorCode),
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Restarted => f.write_str("the sandbox restarted"),
            Self::Closed => f.write_str("it was closed in the sandbox"),
            Self::Refused(code) => write!(f, "the runner refused it ({code:?})"),
        }
    }
}

#[derive(Debug)]
pub enum Update {
    Connection(Connection),
    Listed {
        path: WorkspacePath,
        result: Result<Vec<Entry>, SessionError>,
    },
    Stat {
        path: WorkspacePath,
        result: Result<Entry, SessionError>,
    },
    Read {
        path: WorkspacePath,
        result: Result<(Vec<u8>, String), SessionError>,
    },
    /// A save finished: the new version, or why not (`ErrorCode::Conflict`:
    /// the file changed in the sandbox since the buffer was loaded).
    Saved {
        path: WorkspacePath,
        result: Result<String, SessionError>,
    },
    /// A create, rename or delete finished; `what` says which, for the user.
    Done {
        what: String,
        result: Result<(), SessionError>,
    },
    FsChanged(Vec<FsChange>),
    TermOpened {
        term: TermId,
        purpose: TermPurpose,
        cols: u16,
        rows: u16,
    },
    TermOpenFailed(SessionError),
    TermOutput {
        term: TermId,
        data: Bytes,
    },
    /// Redraws the screen from scratch: the output since the last byte seen
    /// had left the runner's scrollback.
    TermSnapshot {
        term: TermId,
        data: Bytes,
    },
    TermExited {
        term: TermId,
        code: Option<u32>,
    },
    /// The terminal no longer exists on the runner: it ended with a sandbox
    /// restart, or was closed while this client was away. Its id may name
    /// another terminal from now on.
    TermLost {
        term: TermId,
        reason: LostReason,
    },
    Storage(StorageStatus),
}

/// Why a runner could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("starting the project: {0}")]
    Start(#[from] crate::api::ApiError),
    #[error("connecting to its runner: {0}")]
    Connect(#[from] ClientError),
}

/// How the session reaches a runner: the real control plane, or in tests a
/// fixed runner.
#[async_trait::async_trait]
pub trait Dialer: Send + Sync + 'static {
    /// Makes sure the project runs and connects to its runner; with the
    /// preview's URL (empty when there is none).
    async fn dial(&self) -> Result<(RunnerClient, String), DialError>;
}

/// Dials through the control plane: `start` the project (idempotent), then
/// connect to its runner with the token that start returned.
pub struct ControlPlane {
    pub api: ApiClient,
    pub project: String,
}

#[async_trait::async_trait]
impl Dialer for ControlPlane {
    async fn dial(&self) -> Result<(RunnerClient, String), DialError> {
        let started = self.api.start(&self.project).await?;
        let client = connect_runner(self.api.base(), &started).await?;
        Ok((client, started.preview_url))
    }
}

/// `*.localhost` names resolve to loopback in browsers but not in every
/// system resolver: for those the session dials the address the API was
/// reached at (the same server's gateway, or a proxy in front of it) and
/// names the project's host in the Host header.
pub async fn connect_runner(api_base: &str, started: &Started) -> Result<RunnerClient, ClientError> {
    let (scheme, rest) = started
        .ws_url
        .split_once("://")
        .ok_or_else(|| ClientError::Connect(format!("not a URL: {}", started.ws_url)))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host == "localhost" || host.ends_with(".localhost") {
        let api_authority = api_base.split_once("://").map_or(api_base, |(_, a)| a);
        let api_authority = api_authority.split('/').next().unwrap_or(api_authority);
        let url = format!("{scheme}://{api_authority}{path}");
        RunnerClient::connect_with_host(&url, Some(authority), &started.token).await
    } else {
        RunnerClient::connect(&started.ws_url, &started.token).await
    }
}

pub struct Session {
    commands: mpsc::UnboundedSender<Command>,
}

impl Session {
    /// Starts the session task; updates arrive on the returned receiver.
    pub fn spawn(dialer: impl Dialer) -> (Session, mpsc::UnboundedReceiver<Update>) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (updates, updates_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(dialer, commands_rx, updates));
        (Session { commands }, updates_rx)
    }

    pub fn send(&self, command: Command) {
        // The task ends only when this handle is dropped.
        let _ = self.commands.send(command);
    }
}

/// Per terminal, the sequence number after the last byte passed to the UI:
/// where to resume from, and how to drop what a resume sends twice; and
/// which runner process they live in.
#[derive(Default)]
struct Terminals {
    next_seq: HashMap<TermId, u64>,
    /// The `instance` of the runner last connected to.
    instance: Option<String>,
}

impl Terminals {
    /// Returns the part of `data` (starting at `seq`) not yet passed on.
    fn fresh(&mut self, term: TermId, seq: u64, data: Bytes) -> Option<Bytes> {
        let next = self.next_seq.entry(term).or_insert(0);
        let end = seq + data.len() as u64;
        if end <= *next {
            return None;
        }
        let skip = next.saturating_sub(seq) as usize;
        *next = end;
        Some(data.slice(skip..))
    }
}

async fn run(
    dialer: impl Dialer,
    mut commands: mpsc::UnboundedReceiver<Command>,
    updates: mpsc::UnboundedSender<Update>,
) {
    let mut terminals = Terminals::default();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if updates
            .send(Update::Connection(Connection::Connecting { attempt }))
            .is_err()
        {
            return;
        }
        let reason = match dialer.dial().await {
            Ok((client, preview_url)) => {
                attempt = 0;
                match serve(client, preview_url, &mut terminals, &mut commands, &updates).await {
                    Ended::UiGone => return,
                    Ended::Lost(reason) => reason,
                }
            }
            Err(e) => e.to_string(),
        };
        let retry_in = (FIRST_RETRY * 2u32.saturating_pow(attempt.min(6))).min(LAST_RETRY);
        let lost = Connection::Lost { reason, retry_in };
        if updates.send(Update::Connection(lost)).is_err() {
            return;
        }
        // Keep answering the UI while waiting, so nothing it asks hangs.
        let wait = tokio::time::sleep(retry_in);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                command = commands.recv() => match command {
                    Some(command) => refuse_offline(command, &updates),
                    None => return,
                },
            }
        }
    }
}

enum Ended {
    UiGone,
    Lost(String),
}

fn refuse_offline(command: Command, updates: &mpsc::UnboundedSender<Update>) {
    const OFFLINE: SessionError = SessionError::Disconnected;
    let update = match command {
        Command::List(path) => Update::Listed {
            path,
            result: Err(OFFLINE),
        },
        Command::Stat(path) => Update::Stat {
            path,
            result: Err(OFFLINE),
        },
        Command::Read(path) => Update::Read {
            path,
            result: Err(OFFLINE),
        },
        Command::Write { path, .. } => Update::Saved {
            path,
            result: Err(OFFLINE),
        },
        Command::CreateFile(_) | Command::CreateDir(_) | Command::Rename { .. } | Command::Delete(_) => Update::Done {
            what: "change".into(),
            result: Err(OFFLINE),
        },
        Command::TermOpen { .. } => Update::TermOpenFailed(OFFLINE),
        // Keystrokes typed into a disconnected terminal are dropped, as ssh
        // would; a resize is sent again on reconnect by the UI.
        Command::Input { .. } | Command::Resize { .. } | Command::TermClose(_) => return,
    };
    let _ = updates.send(update);
}

async fn serve(
    client: RunnerClient,
    preview_url: String,
    terminals: &mut Terminals,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    updates: &mpsc::UnboundedSender<Update>,
) -> Ended {
    let (handle, mut incoming) = client.into_split();
    // The welcome comes first: which runner process this is.
    let instance = match tokio::time::timeout(PING_PATIENCE, incoming.recv()).await {
        Ok(Some(Incoming::Event(Event::Welcome { instance, .. }))) => instance,
        Ok(Some(Incoming::Closed(_)) | None) => return Ended::Lost("the connection dropped".into()),
        Ok(Some(other)) => return Ended::Lost(format!("the runner began with {other:?}, not its welcome")),
        Err(_) => return Ended::Lost("the runner did not say welcome".into()),
    };
    if terminals.instance.as_ref().is_some_and(|known| *known != instance) {
        // Another runner: every terminal of the old one ended with it, and
        // their ids may name new terminals here. Never attach by them.
        let mut lost: Vec<TermId> = terminals.next_seq.drain().map(|(term, _)| term).collect();
        lost.sort_unstable();
        for term in lost {
            let reason = LostReason::Restarted;
            let _ = updates.send(Update::TermLost { term, reason });
        }
    }
    terminals.instance = Some(instance);
    if let Err(e) = handle.request(Op::WatchFs).await {
        return Ended::Lost(e.to_string());
    }
    // Re-attach every terminal from where the UI's screen is.
    let mut known: Vec<(TermId, u64)> = terminals.next_seq.iter().map(|(t, s)| (*t, *s)).collect();
    known.sort_unstable();
    for (term, from_seq) in known {
        let attached = handle
            .request(Op::TermAttach {
                term,
                from_seq,
                flow_window: None,
            })
            .await;
        let reason = match attached.map_err(SessionError::from) {
            Ok(_) => continue,
            Err(SessionError::Remote {
                code: ErrorCode::UnknownTerminal | ErrorCode::NotFound,
                ..
            }) => LostReason::Closed,
            Err(SessionError::Remote { code, .. }) => LostReason::Refused(code),
            // Reconnecting may still find it.
            Err(e) => return Ended::Lost(e.to_string()),
        };
        terminals.next_seq.remove(&term);
        let _ = updates.send(Update::TermLost { term, reason });
    }
    if updates
        .send(Update::Connection(Connection::Connected { preview_url }))
        .is_err()
    {
        return Ended::UiGone;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<String>();
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Update>();
    loop {
        tokio::select! {
            // A terminal this session opened is known from its answer on, so
            // that a reconnection attaches it (or reports it lost) even if it
            // printed nothing yet.
            Some(update) = opened_rx.recv() => {
                if let Update::TermOpened { term, .. } = &update {
                    terminals.next_seq.entry(*term).or_insert(0);
                }
                if updates.send(update).is_err() {
                    return Ended::UiGone;
                }
            }
            command = commands.recv() => match command {
                Some(command) => perform(&handle, command, updates, terminals, &opened_tx),
                None => {
                    handle.close();
                    return Ended::UiGone;
                }
            },
            message = incoming.recv() => match message {
                Some(Incoming::Closed(frame)) => {
                    let reason = frame
                        .map(|f| format!("the runner closed the connection: {}", f.reason))
                        .unwrap_or_else(|| "the connection dropped".to_string());
                    return Ended::Lost(reason);
                }
                Some(message) => {
                    if !deliver(message, terminals, updates) {
                        return Ended::UiGone;
                    }
                }
                None => return Ended::Lost("the connection dropped".to_string()),
            },
            _ = ping.tick() => {
                let (handle, lost_tx) = (handle.clone(), lost_tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(PING_PATIENCE, handle.request(Op::Ping)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => { let _ = lost_tx.send(e.to_string()); }
                        Err(_) => { let _ = lost_tx.send("the runner stopped answering".to_string()); }
                    }
                });
            }
            Some(reason) = lost_rx.recv() => {
                handle.close();
                return Ended::Lost(reason);
            }
        }
    }
}

/// Passes one unasked message on; false when the UI is gone.
fn deliver(message: Incoming, terminals: &mut Terminals, updates: &mpsc::UnboundedSender<Update>) -> bool {
    let update = match message {
        Incoming::Frame(Frame::TermOutput { term, seq, data }) => match terminals.fresh(term, seq, data) {
            Some(data) => Update::TermOutput { term, data },
            None => return true,
        },
        Incoming::Frame(Frame::TermSnapshot { term, seq, data }) => {
            terminals.next_seq.insert(term, seq);
            Update::TermSnapshot { term, data }
        }
        Incoming::Event(Event::FsChanged { changes }) => Update::FsChanged(changes),
        Incoming::Event(Event::TermExited { term, code }) => {
            terminals.next_seq.remove(&term);
            Update::TermExited { term, code }
        }
        Incoming::Event(Event::Storage { status }) => Update::Storage(status),
        Incoming::Event(Event::Welcome { .. }) | Incoming::Frame(_) | Incoming::Error { .. } | Incoming::Closed(_) => {
            return true;
        }
    };
    updates.send(update).is_ok()
}

/// Starts one command; requests run as their own tasks so a slow save never
/// holds up keystrokes to a terminal.
fn perform(
    handle: &RunnerHandle,
    command: Command,
    updates: &mpsc::UnboundedSender<Update>,
    terminals: &mut Terminals,
    opened: &mpsc::UnboundedSender<Update>,
) {
    let (handle, updates) = (handle.clone(), updates.clone());
    match command {
        Command::Input { term, data } => {
            let _ = handle.send_binary(Frame::TermInput { term, data }.encode());
        }
        Command::Resize { term, cols, rows } => {
            tokio::spawn(async move {
                let _ = handle.request(Op::TermResize { term, cols, rows }).await;
            });
        }
        Command::TermClose(term) => {
            terminals.next_seq.remove(&term);
            tokio::spawn(async move {
                let _ = handle.request(Op::TermClose { term }).await;
            });
        }
        Command::TermOpen {
            cols,
            rows,
            command,
            purpose,
        } => {
            let opened = opened.clone();
            tokio::spawn(async move {
                // A run ends every live run first, whoever started it (a
                // browser's Run too): two servers on one port would fight
                // (PROTOCOL.md, TermInfo's purpose).
                if purpose == TermPurpose::Run
                    && let Ok(Reply::Terms { terms }) = handle.request(Op::TermList).await
                {
                    for t in terms
                        .iter()
                        .filter(|t| t.purpose == TermPurpose::Run && t.exited.is_none())
                    {
                        let _ = handle.request(Op::TermClose { term: t.term }).await;
                    }
                }
                let update = match handle
                    .request(Op::TermOpen {
                        cols,
                        rows,
                        command,
                        flow_window: None,
                        purpose: Some(purpose),
                    })
                    .await
                {
                    Ok(Reply::TermOpened { term }) => Update::TermOpened {
                        term,
                        purpose,
                        cols,
                        rows,
                    },
                    Ok(other) => Update::TermOpenFailed(SessionError::unexpected(&other)),
                    Err(e) => Update::TermOpenFailed(e.into()),
                };
                // Through the session (which records the terminal), or
                // straight to the UI once that connection is over.
                if let Err(mpsc::error::SendError(update)) = opened.send(update) {
                    let _ = updates.send(update);
                }
            });
        }
        Command::List(path) => {
            tokio::spawn(async move {
                let result = match handle.request(Op::List { path: path.clone() }).await {
                    Ok(Reply::Entries { entries }) => Ok(entries),
                    Ok(other) => Err(SessionError::unexpected(&other)),
                    Err(e) => Err(e.into()),
                };
                let _ = updates.send(Update::Listed { path, result });
            });
        }
        Command::Stat(path) => {
            tokio::spawn(async move {
                let result = match handle.request(Op::Stat { path: path.clone() }).await {
                    Ok(Reply::Entry { entry }) => Ok(entry),
                    Ok(other) => Err(SessionError::unexpected(&other)),
                    Err(e) => Err(e.into()),
                };
                let _ = updates.send(Update::Stat { path, result });
            });
        }
        Command::Read(path) => {
            tokio::spawn(async move {
                let result = handle.read_file(&path).await.map_err(SessionError::from);
                let _ = updates.send(Update::Read { path, result });
            });
        }
        Command::Write {
            path,
            data,
            base_version,
        } => {
            tokio::spawn(async move {
                let result = handle
                    .write_file(&path, &data, base_version)
                    .await
                    .map_err(SessionError::from);
                let _ = updates.send(Update::Saved { path, result });
            });
        }
        Command::CreateFile(path) => {
            tokio::spawn(async move {
                let what = format!("create {path}");
                let empty = Op::Write {
                    path,
                    size: 0,
                    base_version: None,
                    create_new: true,
                    bulk: false,
                };
                let result = handle.request(empty).await;
                let _ = updates.send(Update::Done {
                    what,
                    result: result.map(drop).map_err(SessionError::from),
                });
            });
        }
        Command::CreateDir(path) => {
            tokio::spawn(async move {
                let what = format!("create folder {path}");
                let result = handle.request(Op::CreateDir { path }).await;
                let _ = updates.send(Update::Done {
                    what,
                    result: result.map(drop).map_err(SessionError::from),
                });
            });
        }
        Command::Rename { from, to } => {
            tokio::spawn(async move {
                let what = format!("rename {from} to {to}");
                let result = handle
                    .request(Op::Rename {
                        from,
                        to,
                        overwrite: false,
                    })
                    .await;
                let _ = updates.send(Update::Done {
                    what,
                    result: result.map(drop).map_err(SessionError::from),
                });
            });
        }
        Command::Delete(path) => {
            tokio::spawn(async move {
                let what = format!("delete {path}");
                let op = Op::Delete {
                    path,
                    recursive: true,
                    base_version: None,
                };
                let result = handle.request(op).await;
                let _ = updates.send(Update::Done {
                    what,
                    result: result.map(drop).map_err(SessionError::from),
                });
            });
        }
    }
}
