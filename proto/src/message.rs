//! Control messages: JSON in WebSocket text frames.
//!
//! A client sends [`Request`]s, each with an id of its choosing; the runner
//! answers each with exactly one [`ServerMessage::Response`] or
//! [`ServerMessage::Error`] carrying that id, and pushes
//! [`ServerMessage::Event`]s at any time. Bulk bytes (terminal I/O, file
//! contents) never travel here: see [`crate::frame`].

use serde::{Deserialize, Serialize};

use crate::path::WorkspacePath;

/// Identifies a terminal within one runner.
pub type TermId = u32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Request {
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    /// A client's request, from its text: a path it names that the
    /// protocol refuses is told apart, by type, from any other mistake.
    pub fn from_json(text: &str) -> Result<Self, RequestError> {
        crate::path::refusal_behind(|| serde_json::from_str(text)).map_err(|(source, refusal)| match refusal {
            Some(refusal) => RequestError::InvalidPath { refusal, source },
            None => RequestError::Malformed(source),
        })
    }
}

/// Why a client's text is not a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Well formed, but a path in it is refused (`invalid_path`).
    #[error("{source}")]
    InvalidPath {
        refusal: crate::path::PathError,
        source: serde_json::Error,
    },
    /// Not JSON, or not a request (`bad_request`).
    #[error("{0}")]
    Malformed(serde_json::Error),
}

/// Everything a client can ask of a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Lists one directory (not recursive).
    List {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
    },
    Stat {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
    },
    /// Answered with [`Reply::ReadStarted`], then `size` bytes in
    /// [`crate::frame::Frame::FileChunk`]s whose transfer is the request id.
    Read {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
    },
    /// After sending this the client sends exactly `size` bytes in
    /// `FileChunk`s whose transfer is the request id. Answered with
    /// [`Reply::Written`] once the new content is durable in storage.
    Write {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        size: u64,
        /// Refuse with `conflict` if the file's current version differs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        base_version: Option<String>,
        /// Refuse with `already_exists` if the path exists.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        create_new: bool,
        /// One of many writes (a first sync, a folder upload): persisted
        /// with the backlog, in its batches, instead of ahead of it, so a
        /// save made meanwhile does not wait behind them. Still answered
        /// once durable.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bulk: bool,
    },
    /// Many small files in one request (a first sync, a folder upload):
    /// after it the client sends the sum of their sizes in `FileChunk`s
    /// whose transfer is the request id, the files' bytes one after
    /// another in this order. Each is written as a `write` with the same
    /// options would be; answered with [`Reply::WrittenMany`], one outcome
    /// per file in this order, once every file written is durable. At most
    /// [`WRITE_MANY_MAX_FILES`] files and [`WRITE_MANY_MAX_BYTES`] bytes.
    WriteMany {
        files: Vec<BatchedWrite>,
        /// As for [`Op::Write`]: persisted with the backlog, in its
        /// batches, so a save made meanwhile goes ahead.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bulk: bool,
    },
    CreateDir {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
    },
    Rename {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        from: WorkspacePath,
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        to: WorkspacePath,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        overwrite: bool,
    },
    /// Deleting a non-empty directory needs `recursive`.
    Delete {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recursive: bool,
        /// Refuse with `conflict` unless the path is a file of this version
        /// (checked in the same step as the delete, so a write since the
        /// client looked is never deleted unseen).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        base_version: Option<String>,
    },
    /// Starts [`Event::FsChanged`] events for this connection.
    WatchFs,
    UnwatchFs,
    /// Opens a terminal and attaches this connection to it from sequence 0.
    TermOpen {
        cols: u16,
        rows: u16,
        /// Program and arguments; the user's login shell when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        command: Option<Vec<String>>,
        /// Flow control: at most this many bytes of output sent beyond the
        /// client's last `TermAck`. Absent: no window (TCP backpressure only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        flow_window: Option<u32>,
        /// What the terminal is for, told to every client in its
        /// [`TermInfo`]. Absent: a shell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        purpose: Option<TermPurpose>,
    },
    /// Attaches to a running terminal. Output resumes at `from_seq`; if that
    /// has left the scrollback, a snapshot of the screen comes first.
    TermAttach {
        term: TermId,
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        from_seq: u64,
        /// As in `TermOpen`, for this attachment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        flow_window: Option<u32>,
    },
    TermDetach {
        term: TermId,
    },
    TermResize {
        term: TermId,
        cols: u16,
        rows: u16,
    },
    /// Ends the terminal's process group.
    TermClose {
        term: TermId,
    },
    TermList,
    StorageStatus,
    Ping,
    /// `path` and every entry below it, recursively (for the root: every
    /// entry of the workspace; for a file or link: only it), in one
    /// request: answered with [`Reply::ManifestStarted`], then `size`
    /// bytes of newline-delimited JSON, one [`ManifestEntry`] per line, in
    /// `FileChunk`s whose transfer is the request id. Symlinks are listed,
    /// never followed.
    Manifest {
        #[serde(default)]
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
    },
    /// Makes `path` a symbolic link to `target` (any text: it is stored as
    /// written and never followed out of the workspace). With `overwrite`, a
    /// file or link already there is replaced atomically; a directory never is.
    Symlink {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
        target: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        overwrite: bool,
    },
    /// Sets or clears the executable bits of a regular file (the only
    /// permission the protocol carries). Its `version` does not change.
    SetExecutable {
        #[cfg_attr(feature = "ts", ts(type = "string"))]
        path: WorkspacePath,
        executable: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Response {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        id: u64,
        result: Reply,
    },
    /// `id` is absent when the failing message had no readable id (broken
    /// JSON, a stray binary frame).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        id: Option<u64>,
        code: ErrorCode,
        message: String,
    },
    Event(Event),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Entries {
        entries: Vec<Entry>,
    },
    Entry {
        entry: Entry,
    },
    ReadStarted {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        size: u64,
        version: String,
    },
    Written {
        version: String,
    },
    /// One outcome per file of a [`Op::WriteMany`], in its order.
    WrittenMany {
        files: Vec<WriteOutcome>,
    },
    Done,
    TermOpened {
        term: TermId,
    },
    TermAttached {
        term: TermId,
        cols: u16,
        rows: u16,
    },
    Terms {
        terms: Vec<TermInfo>,
    },
    Storage {
        status: StorageStatus,
    },
    Pong,
    /// `entries` manifest lines in `size` bytes follow as file chunks.
    ManifestStarted {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        size: u64,
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        entries: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// First message on every connection.
    Welcome {
        protocol: u32,
        project: String,
        /// Largest file a `write` accepts.
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        max_file_size: u64,
        /// Largest binary frame the runner accepts or sends.
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        max_frame_size: u64,
        /// This runner process: 128 random bits as hex, new on every start.
        /// Terminal ids start again at 1 when a runner restarts, so a client
        /// that reconnects and sees another instance must treat every
        /// terminal it knew as ended, never attach to one by id. (Empty only
        /// from a runner older than the field.)
        #[serde(default)]
        instance: String,
    },
    FsChanged {
        changes: Vec<FsChange>,
    },
    TermExited {
        term: TermId,
        /// Exit code; absent when the process was killed by a signal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "ts", ts(optional))]
        code: Option<u32>,
    },
    Storage {
        status: StorageStatus,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Sockets, FIFOs, devices.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Entry {
    pub name: String,
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub path: WorkspacePath,
    pub kind: EntryKind,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub mtime_ms: i64,
    /// For symlinks: the link's target as written. Never followed out of the
    /// workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub target: Option<String>,
    /// Opaque; changes whenever the content does. Files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub version: Option<String>,
}

/// One line of a [`Op::Manifest`]: what a sync compares without reading
/// contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ManifestEntry {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub path: WorkspacePath,
    pub kind: EntryKind,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub size: u64,
    /// Milliseconds since the Unix epoch; for display only (clocks of two
    /// machines are never compared).
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub mtime_ms: i64,
    /// As in [`Entry::version`]: what `base_version` names. Files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub version: Option<String>,
    /// BLAKE3 of the content, lowercase hex. Files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub hash: Option<String>,
    /// Any executable bit set. Files only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// For symlinks: the target as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Modified,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct FsChange {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub path: WorkspacePath,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct TermInfo {
    pub term: TermId,
    pub cols: u16,
    pub rows: u16,
    /// Sequence number of the next output byte.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub seq: u64,
    pub attached_clients: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub exited: Option<Option<u32>>,
    /// As given to `term_open`.
    #[serde(default)]
    pub purpose: TermPurpose,
}

/// What a terminal is for, chosen by the client that opens it. Every client
/// sees it in `term_list`, so "the Run terminal" is one terminal for all of
/// them: a second browser, a reloaded page or the TUI finds the run another
/// one started, and a new run ends it (two servers on one port would fight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TermPurpose {
    /// An interactive terminal.
    #[default]
    Shell,
    /// Runs the project (the IDEs' Run button, F5).
    Run,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct StorageStatus {
    /// False while storage calls fail; changes queue and are retried.
    pub healthy: bool,
    /// Changes waiting to reach storage (files and directories, whoever
    /// made them): "saving 23,356 files".
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub pending: u64,
    /// Of those, the ones clients wait on (their `write`, `rename`,
    /// `delete`): they go ahead of the rest. 0 means every save a client
    /// made is in storage.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub saves_pending: u64,
    /// Files per second reaching storage (over the last 5 s); with
    /// `pending`, how long the rest will take.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub drain_rate: u64,
    /// Changes storage can never take (a key over 1024 bytes, a file the
    /// runner may not read): skipped, not retried, not making storage
    /// unhealthy. They are retried when the path changes again.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub skipped: u64,
    /// The first 100 of them, with the reason.
    #[serde(default)]
    pub skipped_changes: Vec<SkippedChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub last_error: Option<String>,
}

/// A change storage can never take; see [`StorageStatus::skipped`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SkippedChange {
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Broken JSON, an unknown op, a missing field.
    BadRequest,
    InvalidPath,
    NotFound,
    AlreadyExists,
    /// The file changed since `base_version`.
    Conflict,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    TooLarge,
    /// A symlink leads out of the workspace.
    OutsideWorkspace,
    UnknownTerminal,
    /// Storage failed in a way retrying will not fix.
    Storage,
    Internal,
}

impl ServerMessage {
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Files one [`Op::WriteMany`] may carry...
pub const WRITE_MANY_MAX_FILES: usize = 1024;
/// ...and bytes, all its files together: a runner holds them in memory
/// until they are written.
pub const WRITE_MANY_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// One file of an [`Op::WriteMany`]: [`Op::Write`]'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct BatchedWrite {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub path: WorkspacePath,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub base_version: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create_new: bool,
}

/// What became of one file of an [`Op::WriteMany`]: its new version, or
/// the error a `write` of it alone would have been answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WriteOutcome {
    Written { version: String },
    Refused { code: ErrorCode, message: String },
}

/// A write's options beside its path and size: the fields of
/// [`Op::Write`], for code that passes them along.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Refuse with `conflict` if the file's current version differs.
    pub base_version: Option<String>,
    /// Refuse with `already_exists` if the path exists.
    pub create_new: bool,
    /// One of many writes: persisted with the backlog (see [`Op::Write`]).
    pub bulk: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code a server answers comes from the error's type: a refused
    /// path, however the text reads, and nothing else, even on a thread
    /// whose previous parse refused one.
    #[test]
    fn a_refused_path_is_told_from_other_bad_input_by_type() {
        let refused = Request::from_json(r#"{"id":1,"op":"read","path":"../etc/passwd"}"#);
        assert!(
            matches!(
                refused,
                Err(RequestError::InvalidPath {
                    refusal: crate::path::PathError::ParentComponent,
                    ..
                })
            ),
            "{refused:?}"
        );
        for malformed in [
            "{",
            r#"{"id":1,"op":"no_such_op"}"#,
            r#"{"id":1,"op":"read"}"#,
            r#"{"id":1,"op":"read","path":7}"#,
        ] {
            assert!(
                matches!(Request::from_json(malformed), Err(RequestError::Malformed(_))),
                "{malformed}"
            );
        }
        // A name that merely reads like the refusal's text is a fine path.
        assert!(Request::from_json(r#"{"id":1,"op":"read","path":"invalid path: a"}"#).is_ok());
    }

    #[test]
    fn a_write_of_many_files_and_its_answer_have_stable_shapes() {
        let req = Request::from_json(
            r#"{"id":3,"op":"write_many","bulk":true,"files":[{"path":"a","size":2},{"path":"d/b","size":0,"create_new":true},{"path":"c","size":5,"base_version":"v1"}]}"#,
        )
        .unwrap();
        let Op::WriteMany { files, bulk } = &req.op else {
            panic!("{:?}", req.op)
        };
        assert!(bulk);
        assert_eq!(files.len(), 3);
        assert_eq!(files[1].path.as_str(), "d/b");
        assert!(files[1].create_new && files[1].base_version.is_none());
        assert_eq!(files[2].base_version.as_deref(), Some("v1"));
        // A bad path in any file refuses the request as a path.
        assert!(matches!(
            Request::from_json(
                r#"{"id":3,"op":"write_many","files":[{"path":"ok","size":1},{"path":"../x","size":1}]}"#
            ),
            Err(RequestError::InvalidPath { .. })
        ));
        let answer = ServerMessage::Response {
            id: 3,
            result: Reply::WrittenMany {
                files: vec![
                    WriteOutcome::Written { version: "v2".into() },
                    WriteOutcome::Refused {
                        code: ErrorCode::Conflict,
                        message: "c: changed".into(),
                    },
                ],
            },
        };
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"type": "response", "id": 3, "result": {"kind": "written_many", "files": [
                {"outcome": "written", "version": "v2"},
                {"outcome": "refused", "code": "conflict", "message": "c: changed"},
            ]}})
        );
    }

    #[test]
    fn wire_shapes_are_stable() {
        let req: Request = serde_json::from_str(r#"{"id":7,"op":"write","path":"a.txt","size":3}"#).unwrap();
        assert_eq!(
            req.op,
            Op::Write {
                path: WorkspacePath::parse("a.txt").unwrap(),
                size: 3,
                base_version: None,
                create_new: false,
                bulk: false
            }
        );
        // `bulk` is sent only when set, so older runners see a plain write.
        let plain = serde_json::to_value(&req.op).unwrap();
        assert_eq!(plain.get("bulk"), None);
        let bulk: Request =
            serde_json::from_str(r#"{"id":9,"op":"write","path":"a.txt","size":3,"bulk":true}"#).unwrap();
        assert!(matches!(bulk.op, Op::Write { bulk: true, .. }), "{:?}", bulk.op);
        let del: Request =
            serde_json::from_str(r#"{"id":8,"op":"delete","path":"a.txt","base_version":"v1"}"#).unwrap();
        assert_eq!(
            del.op,
            Op::Delete {
                path: WorkspacePath::parse("a.txt").unwrap(),
                recursive: false,
                base_version: Some("v1".into())
            }
        );
        // Absent: no check (every client before it existed).
        let del: Request = serde_json::from_str(r#"{"id":9,"op":"delete","path":"d","recursive":true}"#).unwrap();
        assert!(matches!(
            del.op,
            Op::Delete {
                recursive: true,
                base_version: None,
                ..
            }
        ));
        let ev = ServerMessage::Event(Event::TermExited { term: 2, code: Some(0) });
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"type":"event","event":"term_exited","term":2,"code":0}"#
        );
        let back: ServerMessage = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
        let resp = ServerMessage::Response {
            id: 1,
            result: Reply::Done,
        };
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"type":"response","id":1,"result":{"kind":"done"}}"#
        );
    }

    #[test]
    fn terminal_purpose_wire_shapes_are_stable() {
        let open: Request =
            serde_json::from_str(r#"{"id":2,"op":"term_open","cols":80,"rows":24,"purpose":"run"}"#).unwrap();
        assert!(matches!(
            open.op,
            Op::TermOpen {
                purpose: Some(TermPurpose::Run),
                ..
            }
        ));
        // Absent: a shell (every client before purposes existed).
        let plain: Request = serde_json::from_str(r#"{"id":3,"op":"term_open","cols":80,"rows":24}"#).unwrap();
        assert!(matches!(plain.op, Op::TermOpen { purpose: None, .. }));
        assert!(
            serde_json::from_str::<Request>(r#"{"id":4,"op":"term_open","cols":80,"rows":24,"purpose":"x"}"#).is_err()
        );
        let info = TermInfo {
            term: 5,
            cols: 80,
            rows: 24,
            seq: 10,
            attached_clients: 1,
            exited: None,
            purpose: TermPurpose::Run,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"term":5,"cols":80,"rows":24,"seq":10,"attached_clients":1,"purpose":"run"}"#
        );
    }

    #[test]
    fn manifest_wire_shapes_are_stable() {
        let req: Request = serde_json::from_str(r#"{"id":3,"op":"manifest"}"#).unwrap();
        assert_eq!(
            req.op,
            Op::Manifest {
                path: WorkspacePath::root()
            }
        );
        let req: Request =
            serde_json::from_str(r#"{"id":4,"op":"symlink","path":"bin/py","target":"/usr/bin/python3"}"#).unwrap();
        assert_eq!(
            req.op,
            Op::Symlink {
                path: WorkspacePath::parse("bin/py").unwrap(),
                target: "/usr/bin/python3".into(),
                overwrite: false
            }
        );
        let req: Request =
            serde_json::from_str(r#"{"id":5,"op":"set_executable","path":"run.sh","executable":true}"#).unwrap();
        assert_eq!(
            req.op,
            Op::SetExecutable {
                path: WorkspacePath::parse("run.sh").unwrap(),
                executable: true
            }
        );
        let started = ServerMessage::Response {
            id: 3,
            result: Reply::ManifestStarted { size: 120, entries: 2 },
        };
        assert_eq!(
            serde_json::to_string(&started).unwrap(),
            r#"{"type":"response","id":3,"result":{"kind":"manifest_started","size":120,"entries":2}}"#
        );
        let file = ManifestEntry {
            path: WorkspacePath::parse("run.sh").unwrap(),
            kind: EntryKind::File,
            size: 5,
            mtime_ms: 1700000000000,
            version: Some("v1".into()),
            hash: Some("ab".into()),
            executable: true,
            target: None,
        };
        assert_eq!(
            serde_json::to_string(&file).unwrap(),
            r#"{"path":"run.sh","kind":"file","size":5,"mtime_ms":1700000000000,"version":"v1","hash":"ab","executable":true}"#
        );
        let link: ManifestEntry =
            serde_json::from_str(r#"{"path":"l","kind":"symlink","size":1,"mtime_ms":0,"target":"a"}"#).unwrap();
        assert_eq!(link.target.as_deref(), Some("a"));
        assert!(!link.executable);
    }

    #[test]
    fn bad_paths_are_refused_at_parse_time() {
        let err = serde_json::from_str::<Request>(r#"{"id":1,"op":"read","path":"../../etc/passwd"}"#);
        assert!(err.is_err());
    }
}
