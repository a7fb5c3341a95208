// Generated from the Rust types in proto/ (proto/src/typescript.rs): do not edit.
// Regenerate with: CLOUDCODE_UPDATE_TS=1 cargo test -p cloudcode-proto --features ts

export type Request = { id: number, } & ({ "op": "list", path: string, } | { "op": "stat", path: string, } | { "op": "read", path: string, } | { "op": "write", path: string, size: number, 
/**
 * Refuse with `conflict` if the file's current version differs.
 */
base_version?: string, 
/**
 * Refuse with `already_exists` if the path exists.
 */
create_new?: boolean, 
/**
 * One of many writes (a first sync, a folder upload): persisted
 * with the backlog, in its batches, instead of ahead of it, so a
 * save made meanwhile does not wait behind them. Still answered
 * once durable.
 */
bulk?: boolean, } | { "op": "write_many", files: Array<BatchedWrite>, 
/**
 * As for [`Op::Write`]: persisted with the backlog, in its
 * batches, so a save made meanwhile goes ahead.
 */
bulk?: boolean, } | { "op": "create_dir", path: string, } | { "op": "rename", from: string, to: string, overwrite?: boolean, } | { "op": "delete", path: string, recursive?: boolean, 
/**
 * Refuse with `conflict` unless the path is a file of this version
 * (checked in the same step as the delete, so a write since the
 * client looked is never deleted unseen).
 */
base_version?: string, } | { "op": "watch_fs" } | { "op": "unwatch_fs" } | { "op": "term_open", cols: number, rows: number, 
/**
 * Program and arguments; the user's login shell when absent.
 */
command?: Array<string>, 
/**
 * Flow control: at most this many bytes of output sent beyond the
 * client's last `TermAck`. Absent: no window (TCP backpressure only).
 */
flow_window?: number, 
/**
 * What the terminal is for, told to every client in its
 * [`TermInfo`]. Absent: a shell.
 */
purpose?: TermPurpose, } | { "op": "term_attach", term: number, from_seq: number, 
/**
 * As in `TermOpen`, for this attachment.
 */
flow_window?: number, } | { "op": "term_detach", term: number, } | { "op": "term_resize", term: number, cols: number, rows: number, } | { "op": "term_close", term: number, } | { "op": "term_list" } | { "op": "storage_status" } | { "op": "ping" } | { "op": "manifest", path: string, } | { "op": "symlink", path: string, target: string, overwrite?: boolean, } | { "op": "set_executable", path: string, executable: boolean, });

export type Op = { "op": "list", path: string, } | { "op": "stat", path: string, } | { "op": "read", path: string, } | { "op": "write", path: string, size: number, 
/**
 * Refuse with `conflict` if the file's current version differs.
 */
base_version?: string, 
/**
 * Refuse with `already_exists` if the path exists.
 */
create_new?: boolean, 
/**
 * One of many writes (a first sync, a folder upload): persisted
 * with the backlog, in its batches, instead of ahead of it, so a
 * save made meanwhile does not wait behind them. Still answered
 * once durable.
 */
bulk?: boolean, } | { "op": "write_many", files: Array<BatchedWrite>, 
/**
 * As for [`Op::Write`]: persisted with the backlog, in its
 * batches, so a save made meanwhile goes ahead.
 */
bulk?: boolean, } | { "op": "create_dir", path: string, } | { "op": "rename", from: string, to: string, overwrite?: boolean, } | { "op": "delete", path: string, recursive?: boolean, 
/**
 * Refuse with `conflict` unless the path is a file of this version
 * (checked in the same step as the delete, so a write since the
 * client looked is never deleted unseen).
 */
base_version?: string, } | { "op": "watch_fs" } | { "op": "unwatch_fs" } | { "op": "term_open", cols: number, rows: number, 
/**
 * Program and arguments; the user's login shell when absent.
 */
command?: Array<string>, 
/**
 * Flow control: at most this many bytes of output sent beyond the
 * client's last `TermAck`. Absent: no window (TCP backpressure only).
 */
flow_window?: number, 
/**
 * What the terminal is for, told to every client in its
 * [`TermInfo`]. Absent: a shell.
 */
purpose?: TermPurpose, } | { "op": "term_attach", term: number, from_seq: number, 
/**
 * As in `TermOpen`, for this attachment.
 */
flow_window?: number, } | { "op": "term_detach", term: number, } | { "op": "term_resize", term: number, cols: number, rows: number, } | { "op": "term_close", term: number, } | { "op": "term_list" } | { "op": "storage_status" } | { "op": "ping" } | { "op": "manifest", path: string, } | { "op": "symlink", path: string, target: string, overwrite?: boolean, } | { "op": "set_executable", path: string, executable: boolean, };

export type ServerMessage = { "type": "response", id: number, result: Reply, } | { "type": "error", id?: number, code: ErrorCode, message: string, } | { "type": "event" } & Event;

export type Reply = { "kind": "entries", entries: Array<Entry>, } | { "kind": "entry", entry: Entry, } | { "kind": "read_started", size: number, version: string, } | { "kind": "written", version: string, } | { "kind": "written_many", files: Array<WriteOutcome>, } | { "kind": "done" } | { "kind": "term_opened", term: number, } | { "kind": "term_attached", term: number, cols: number, rows: number, } | { "kind": "terms", terms: Array<TermInfo>, } | { "kind": "storage", status: StorageStatus, } | { "kind": "pong" } | { "kind": "manifest_started", size: number, entries: number, };

export type Event = { "event": "welcome", protocol: number, project: string, 
/**
 * Largest file a `write` accepts.
 */
max_file_size: number, 
/**
 * Largest binary frame the runner accepts or sends.
 */
max_frame_size: number, 
/**
 * This runner process: 128 random bits as hex, new on every start.
 * Terminal ids start again at 1 when a runner restarts, so a client
 * that reconnects and sees another instance must treat every
 * terminal it knew as ended, never attach to one by id. (Empty only
 * from a runner older than the field.)
 */
instance: string, } | { "event": "fs_changed", changes: Array<FsChange>, } | { "event": "term_exited", term: number, 
/**
 * Exit code; absent when the process was killed by a signal.
 */
code?: number, } | { "event": "storage", status: StorageStatus, };

export type EntryKind = "file" | "dir" | "symlink" | "other";

export type Entry = { name: string, path: string, kind: EntryKind, size: number, 
/**
 * Milliseconds since the Unix epoch.
 */
mtime_ms: number, 
/**
 * For symlinks: the link's target as written. Never followed out of the
 * workspace.
 */
target?: string, 
/**
 * Opaque; changes whenever the content does. Files only.
 */
version?: string, };

export type BatchedWrite = { path: string, size: number, base_version?: string, create_new?: boolean, };

export type WriteOutcome = { "outcome": "written", version: string, } | { "outcome": "refused", code: ErrorCode, message: string, };

export type ChangeKind = "created" | "modified" | "removed";

export type FsChange = { path: string, kind: ChangeKind, };

export type TermInfo = { term: number, cols: number, rows: number, 
/**
 * Sequence number of the next output byte.
 */
seq: number, attached_clients: number, exited?: number | null, 
/**
 * As given to `term_open`.
 */
purpose: TermPurpose, };

export type TermPurpose = "shell" | "run";

export type StorageStatus = { 
/**
 * False while storage calls fail; changes queue and are retried.
 */
healthy: boolean, 
/**
 * Changes waiting to reach storage (files and directories, whoever
 * made them): "saving 23,356 files".
 */
pending: number, 
/**
 * Of those, the ones clients wait on (their `write`, `rename`,
 * `delete`): they go ahead of the rest. 0 means every save a client
 * made is in storage.
 */
saves_pending: number, 
/**
 * Files per second reaching storage (over the last 5 s); with
 * `pending`, how long the rest will take.
 */
drain_rate: number, 
/**
 * Changes storage can never take (a key over 1024 bytes, a file the
 * runner may not read): skipped, not retried, not making storage
 * unhealthy. They are retried when the path changes again.
 */
skipped: number, 
/**
 * The first 100 of them, with the reason.
 */
skipped_changes: Array<SkippedChange>, last_error?: string, };

export type SkippedChange = { path: string, error: string, };

export type ErrorCode = "bad_request" | "invalid_path" | "not_found" | "already_exists" | "conflict" | "not_a_directory" | "is_a_directory" | "directory_not_empty" | "too_large" | "outside_workspace" | "unknown_terminal" | "storage" | "internal";

export type Language = "node-js" | "python";

export type ProjectRecord = { id: string, language: Language, 
/**
 * Milliseconds since the Unix epoch.
 */
created_ms: number, };

export type SandboxPhase = "running" | "starting" | "stopping" | "stopped" | "failed";

export type ProjectSummary = { id: string, language: Language, created_ms: number, state: SandboxPhase, 
/**
 * Why the sandbox failed, when it did.
 */
detail?: string, };

export type ProjectList = { projects: Array<ProjectSummary>, };

export type CreateProject = { id: string, language: string, };

export type ProjectStatus = { replId: string, state: SandboxPhase, detail?: string, };

export type SandboxStatus = { state: SandboxPhase, detail?: string, };

export type ProjectDetail = { project: ProjectRecord, sandbox: SandboxStatus, };

export type ApiIndex = { 
/**
 * [`SERVICE`].
 */
service: string, version: string, projects: Array<string>, 
/**
 * Endpoint name to how it is called, for people.
 */
api: { [key in string]?: string }, ide_domain: string, preview_domain: string, };

export type SeedCreated = { replId: string, language: Language, };

export type StartedProject = { replId: string, ideUrl: string, wsUrl: string, previewUrl: string, token: string, 
/**
 * Unix seconds.
 */
tokenExpires: number, };

export type ApiErrorBody = { code: string, message: string, };

export type SessionInfo = { csrf: string, };

export type LanguageInfo = { id: Language, label: string, run: Array<string>, entry: string, };

export type TermId = number;

export const PROTOCOL_VERSION = 1;

export const CSRF_HEADER = "x-cloudcode-csrf";

export const WRITE_MANY_MAX_FILES = 1024;

export const WRITE_MANY_MAX_BYTES = 4194304;

export const LANGUAGES: readonly LanguageInfo[] = [
  {
    "id": "node-js",
    "label": "Node.js",
    "run": [
      "npm",
      "start"
    ],
    "entry": "index.js"
  },
  {
    "id": "python",
    "label": "Python",
    "run": [
      "python3",
      "main.py"
    ],
    "entry": "main.py"
  }
];
