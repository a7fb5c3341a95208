// The one client of the runner protocol (proto/PROTOCOL.md) that every part of
// the page uses: one WebSocket, requests by id, binary frames, terminals that
// survive reconnects by their sequence numbers, and flow control.
//
// Why one module: the socket is shared by file transfers and terminals, so
// only one place can see all of it (to keep a 100 MB upload from starving
// keystrokes, to re-attach every terminal after a drop, to reject every
// pending request when the connection goes).

import { WRITE_MANY_MAX_BYTES, WRITE_MANY_MAX_FILES, type BatchedWrite, type Entry, type ErrorCode, type Event, type Op, type Reply, type ServerMessage, type TermPurpose, type WriteOutcome } from './generated';
import { decodeFrame, encodeFileChunk, encodeTermAck, encodeTermInput, FrameError } from './frames';

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export type ProtocolErrorCode = ErrorCode | 'disconnected' | 'timeout';

export class ProtocolError extends Error {
  override name = 'ProtocolError';
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** Where a terminal's bytes go (the terminal view). */
export interface TerminalSink {
  /** Output bytes, `seq` being that of the first one; never a duplicate. */
  output(data: Uint8Array, seq: number): void;
  /** Reset the emulator, then feed it these bytes: the screen as of `seq`. */
  snapshot(data: Uint8Array, seq: number): void;
  /** The process ended (`null`: killed by a signal). */
  exited(code: number | null): void;
  /** The terminal is gone on the runner (unknown_terminal, e.g. after a runner restart). */
  lost(): void;
}

export interface RunnerClientOptions {
  /** Asked for a fresh URL and token before every connection attempt. */
  connect: () => Promise<{ wsUrl: string; token: string }>;
  WebSocketImpl?: typeof WebSocket;
  /** Bytes of terminal output the runner may send beyond our last ack. */
  flowWindow?: number;
  /** How long a request waits for a connection before failing with `timeout`. */
  queueTimeoutMs?: number;
  /** Interval of the keep-alive ping that detects dead connections; 0 disables. */
  pingIntervalMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Upload bytes that may be on their way (sent, not yet known to be
   * processed by the runner) at any time; see UPLOAD_WINDOW_BYTES. */
  uploadWindowBytes?: number;
}

/** The runner's window and our ack step: acks every 64 KiB keep the runner
 * sending while xterm.js never holds more than 256 KiB unparsed, and the
 * runner skips us ahead once we are 256 KiB behind on top of that
 * (PROTOCOL.md, "Falling behind"), so Ctrl-C under runaway output leaves
 * at most about 512 KiB to parse. */
export const FLOW_WINDOW_BYTES = 256 * 1024;
/** File chunks well below the runner's 1 MiB frame limit (as the Rust client). */
export const UPLOAD_CHUNK_BYTES = 512 * 1024;
/** An upload waits while this much is queued in the socket, so keystrokes and
 * acks (queued behind it) never wait behind more than ~1 MiB. */
export const SEND_HIGH_WATER_BYTES = 1024 * 1024;
/**
 * End to end, at most this much of an upload is ever queued ahead of a
 * keystroke. `bufferedAmount` sees only the browser's own queue; behind it
 * the kernel's socket buffers, the gateway and the runner's read loop hold
 * megabytes more, and input typed during a 100 MB upload waited behind all of
 * it (1.2 s). So after every half window the upload sends a `ping`: the
 * runner reads its connection in order, so its `pong` means every chunk
 * before the ping was processed. The upload never runs more than a window
 * ahead of the last pong.
 */
export const UPLOAD_WINDOW_BYTES = 1024 * 1024;
/** Terminal input is split so a huge paste stays below the frame limit. */
const INPUT_FRAME_BYTES = 64 * 1024;
/** Input typed while disconnected is kept up to this much, then dropped. */
const MAX_QUEUED_INPUT_BYTES = 1024 * 1024;
const PING_TIMEOUT_MS = 10_000;

interface PendingRequest {
  /** Called synchronously for the response, so that frames that follow it on
   * the socket (terminal output after `term_opened`) find their route. Returns
   * true when the request is finished (reads still wait for chunks). */
  reply(reply: Reply): boolean;
  fail(error: ProtocolError): void;
  /** File chunks whose transfer is this request's id. */
  chunk?(data: Uint8Array, offset: number): void;
}

interface TerminalAttachment {
  term: number;
  sink: TerminalSink;
  /** Sequence number of the next byte we expect. */
  nextSeq: number;
  phase: 'attaching' | 'attached' | 'exited';
  /** Highest ack sent on the current connection (-1: none yet). */
  ackSent: number;
  /** Last size asked for, re-sent after a reconnect when it differs. */
  size?: { cols: number; rows: number };
  waiters: Array<{ resolve: (size: { cols: number; rows: number }) => void; reject: (e: ProtocolError) => void }>;
  queuedInput: Uint8Array[];
  queuedInputBytes: number;
}

interface Welcome {
  maxFileSize: number;
  maxFrameSize: number;
  project: string;
  /** Which start of the runner this is; another one after a reconnect means
   * the runner restarted and every terminal is gone (older runners: absent). */
  instance?: string;
}

const OPEN = 1;
const textEncoder = new TextEncoder();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function unexpected(reply: Reply, wanted: string): ProtocolError {
  return new ProtocolError('internal', `unexpected reply ${reply.kind} (wanted ${wanted})`);
}

function abortError(): DOMException {
  return new DOMException('the upload was cancelled', 'AbortError');
}

export class RunnerClient {
  private readonly opts: Required<Omit<RunnerClientOptions, 'WebSocketImpl'>> & { WebSocketImpl: typeof WebSocket };
  private ws: WebSocket | null = null;
  /** Increments with every socket, so that work started on one connection
   * (an upload's stream) notices it is gone. */
  private generation = 0;
  private currentState: ConnectionState = 'connecting';
  private started = false;
  private nextId = 1;
  private readonly pending = new Map<number, PendingRequest>();
  /** The last `write_many` in line to send its bytes (see writeMany). */
  private batchSending: Promise<void> = Promise.resolve();
  private readonly terminals = new Map<number, TerminalAttachment>();
  private readonly stateListeners = new Set<(s: ConnectionState) => void>();
  private readonly eventListeners = new Set<(e: Event) => void>();
  private openWaiters: Array<{ resolve: () => void; reject: (e: ProtocolError) => void }> = [];
  private watching = false;
  private attempt = 0;
  /** A connect() call is in flight: a second would open two sockets. */
  private connecting = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pingOutstanding: number | undefined;
  private welcome: Welcome | undefined;
  /** The current socket's `welcome` arrived (and with it, the state `open`). */
  private welcomed = false;
  /** Why the last connection attempt failed, for the status bar. */
  lastError: string | undefined;

  constructor(opts: RunnerClientOptions) {
    this.opts = {
      connect: opts.connect,
      WebSocketImpl: opts.WebSocketImpl ?? WebSocket,
      flowWindow: opts.flowWindow ?? FLOW_WINDOW_BYTES,
      queueTimeoutMs: opts.queueTimeoutMs ?? 60_000,
      pingIntervalMs: opts.pingIntervalMs ?? 25_000,
      backoffInitialMs: opts.backoffInitialMs ?? 500,
      backoffMaxMs: opts.backoffMaxMs ?? 15_000,
      uploadWindowBytes: Math.max(opts.uploadWindowBytes ?? UPLOAD_WINDOW_BYTES, 2 * UPLOAD_CHUNK_BYTES),
    };
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The runner's start this client talks to (its `welcome.instance`), if it says. */
  get instance(): string | undefined {
    return this.welcome?.instance;
  }

  /** The runner's limits, once its `welcome` arrived. */
  get limits(): Welcome | undefined {
    return this.welcome;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    void this.connectOnce();
  }

  close(): void {
    this.setState('closed');
    clearTimeout(this.reconnectTimer);
    const ws = this.ws;
    this.dropSocket();
    ws?.close(1000, 'closed by the client');
    const error = new ProtocolError('disconnected', 'the client was closed');
    this.failPending(error);
    for (const waiter of this.openWaiters.splice(0)) waiter.reject(error);
    for (const t of this.terminals.values()) for (const w of t.waiters.splice(0)) w.reject(error);
    this.terminals.clear();
  }

  /** Skips the backoff wait (e.g. when the browser says it is online again). */
  reconnectNow(): void {
    if (!this.started || this.currentState === 'closed' || this.ws !== null) return;
    clearTimeout(this.reconnectTimer);
    void this.connectOnce();
  }

  /** Gives up on the current connection at once (e.g. the browser went
   * offline: a socket may linger half-open for minutes) and reconnects with
   * the usual backoff; terminals resume from their sequence numbers. */
  dropConnection(reason: string): void {
    const ws = this.ws;
    if (ws === null || this.currentState === 'closed') return;
    this.lastError = reason;
    this.dropped();
    ws.close();
  }

  onState(cb: (s: ConnectionState) => void): () => void {
    this.stateListeners.add(cb);
    return () => this.stateListeners.delete(cb);
  }

  onEvent(cb: (e: Event) => void): () => void {
    this.eventListeners.add(cb);
    return () => this.eventListeners.delete(cb);
  }

  // ---- requests ----

  /** Any op without a binary payload (use readFile/writeFile for files). */
  async request(op: Op): Promise<Reply> {
    if (op.op === 'read' || op.op === 'write' || op.op === 'write_many') {
      throw new TypeError(`use readFile/writeFile/writeMany for ${op.op}`);
    }
    await this.whenOpen();
    return new Promise<Reply>((resolve, reject) => {
      this.send(op, {
        reply: (r) => {
          resolve(r);
          return true;
        },
        fail: reject,
      });
    });
  }

  async list(path: string): Promise<Entry[]> {
    const reply = await this.request({ op: 'list', path });
    if (reply.kind !== 'entries') throw unexpected(reply, 'entries');
    return reply.entries;
  }

  async stat(path: string): Promise<Entry> {
    const reply = await this.request({ op: 'stat', path });
    if (reply.kind !== 'entry') throw unexpected(reply, 'entry');
    return reply.entry;
  }

  async readFile(path: string, opts: { maxBytes?: number } = {}): Promise<{ data: Uint8Array; version: string }> {
    const maxBytes = opts.maxBytes;
    if (maxBytes !== undefined) {
      // A read cannot be cancelled once started, so look before reading a
      // 1 GB file just to refuse it.
      const entry = await this.stat(path);
      if (entry.size > maxBytes) throw tooLarge(path, entry.size, maxBytes);
    }
    await this.whenOpen();
    return new Promise((resolve, reject) => {
      let buffer: Uint8Array | null = null;
      let version = '';
      let size = -1;
      let received = 0;
      let refused = false;
      // Chunks are in order and normally follow `read_started`; keep any that
      // come first rather than rely on it.
      const early: Array<{ data: Uint8Array; offset: number }> = [];
      const place = (data: Uint8Array, offset: number): void => {
        if (buffer !== null && !refused) buffer.set(data.subarray(0, Math.max(0, size - offset)), offset);
        received += data.length;
      };
      const finished = (): boolean => {
        if (size < 0 || received < size) return false;
        this.pending.delete(id);
        if (!refused) resolve({ data: buffer ?? new Uint8Array(0), version });
        return true;
      };
      const id = this.send(
        { op: 'read', path },
        {
          reply: (r) => {
            if (r.kind !== 'read_started') {
              reject(unexpected(r, 'read_started'));
              return true;
            }
            size = r.size;
            version = r.version;
            if (maxBytes !== undefined && size > maxBytes) {
              // It grew since the stat: refuse now, swallow its chunks.
              refused = true;
              reject(tooLarge(path, size, maxBytes));
            } else {
              buffer = new Uint8Array(size);
            }
            for (const c of early.splice(0)) place(c.data, c.offset);
            return finished();
          },
          chunk: (data, offset) => {
            if (size < 0) early.push({ data: data.slice(), offset });
            else {
              place(data, offset);
              finished();
            }
          },
          fail: (e) => {
            if (!refused) reject(e);
          },
        },
      );
    });
  }

  /** Resolves once the runner answered `written`: the content is durable. */
  async writeFile(
    path: string,
    data: Uint8Array | Blob,
    opts: {
      baseVersion?: string;
      createNew?: boolean;
      /** One of many writes at once (an upload of a folder): persisted in
       * the backlog's batches, so a save sent meanwhile goes ahead of it. */
      bulk?: boolean;
      onProgress?: (sent: number, total: number) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<{ version: string }> {
    const total = sizeOf(data);
    const { signal, onProgress } = opts;
    if (signal?.aborted) throw abortError();
    if (this.welcome !== undefined && total > this.welcome.maxFileSize) {
      throw tooLarge(path, total, this.welcome.maxFileSize);
    }
    await this.whenOpen();
    const op: Op = { op: 'write', path, size: total };
    if (opts.baseVersion !== undefined) op.base_version = opts.baseVersion;
    if (opts.createNew) op.create_new = true;
    if (opts.bulk) op.bulk = true;
    const bytesAt = async (start: number, end: number): Promise<Uint8Array> =>
      data instanceof Uint8Array ? data.subarray(start, end) : new Uint8Array(await data.slice(start, end).arrayBuffer());
    const reply = await this.upload(op, total, bytesAt, signal, onProgress);
    if (reply.kind !== 'written') throw unexpected(reply, 'written');
    return { version: reply.version };
  }

  /**
   * Many small files in one `write_many` (PROTOCOL.md): one request and one
   * storage commit for all of them instead of one each. Resolves, once every
   * file written is durable, with one outcome per file in their order; a
   * file refused (`conflict`, `not_found` for a missing folder...) does not
   * stop the others. Rejects for the whole batch: over the limits
   * (`WRITE_MANY_MAX_FILES`, `WRITE_MANY_MAX_BYTES`, checked before anything
   * is sent), the connection gone (nothing of the batch was written), or
   * cancelled.
   */
  async writeMany(
    files: readonly { path: string; data: Uint8Array | Blob; baseVersion?: string; createNew?: boolean }[],
    opts: {
      bulk?: boolean;
      onProgress?: (sent: number, total: number) => void;
      signal?: AbortSignal;
    } = {},
  ): Promise<WriteOutcome[]> {
    const { signal, onProgress } = opts;
    if (signal?.aborted) throw abortError();
    if (files.length === 0) return [];
    const sizes = files.map((f) => sizeOf(f.data));
    const total = sizes.reduce((a, b) => a + b, 0);
    if (files.length > WRITE_MANY_MAX_FILES) {
      throw new ProtocolError('bad_request', `a write_many holds at most ${WRITE_MANY_MAX_FILES} files, not ${files.length}`);
    }
    if (total > WRITE_MANY_MAX_BYTES) {
      throw new ProtocolError('too_large', `a write_many holds at most ${WRITE_MANY_MAX_BYTES} bytes, not ${total}`);
    }
    const paths = new Set<string>();
    for (const f of files) {
      if (paths.has(f.path)) throw new ProtocolError('bad_request', `${f.path} is in the batch twice`);
      paths.add(f.path);
    }
    const batched: BatchedWrite[] = files.map((f, i) => {
      const w: BatchedWrite = { path: f.path, size: sizes[i] ?? 0 };
      if (f.baseVersion !== undefined) w.base_version = f.baseVersion;
      if (f.createNew) w.create_new = true;
      return w;
    });
    const op: Op = { op: 'write_many', files: batched };
    if (opts.bulk) op.bulk = true;
    // The bytes of the files one after another: a range may span several.
    const starts: number[] = [];
    let at = 0;
    for (const size of sizes) {
      starts.push(at);
      at += size;
    }
    const bytesAt = async (start: number, end: number): Promise<Uint8Array> => {
      const out = new Uint8Array(end - start);
      for (let i = 0; i < files.length; i++) {
        const from = Math.max(start, starts[i] ?? 0);
        const to = Math.min(end, (starts[i] ?? 0) + (sizes[i] ?? 0));
        const file = files[i];
        if (from >= to || file === undefined) continue;
        const a = from - (starts[i] ?? 0);
        const b = to - (starts[i] ?? 0);
        const part = file.data instanceof Uint8Array ? file.data.subarray(a, b) : new Uint8Array(await file.data.slice(a, b).arrayBuffer());
        out.set(part, from - start);
      }
      return out;
    };
    // A connection receives one batch's bytes at a time: the runner refuses a
    // `write_many` sent while another's bytes are still expected.
    const release = await this.batchTurn();
    let reply: Reply;
    try {
      await this.whenOpen();
      // The turn passes on as the last byte is sent, not once answered.
      reply = await this.upload(op, total, bytesAt, signal, onProgress, release);
    } finally {
      release();
    }
    if (reply.kind !== 'written_many') throw unexpected(reply, 'written_many');
    if (reply.files.length !== files.length) {
      throw new ProtocolError('internal', `written_many answered ${reply.files.length} files for ${files.length}`);
    }
    return reply.files;
  }

  /**
   * Sends `op`, then its `total` bytes (`bytesAt` gives a range) as
   * file-chunk frames, never more than a window ahead of the last pong, and
   * resolves with the runner's answer. `sent` is called once the stream has
   * ended, sent whole or not.
   */
  private async upload(
    op: Op,
    total: number,
    bytesAt: (start: number, end: number) => Promise<Uint8Array>,
    signal: AbortSignal | undefined,
    onProgress: ((sent: number, total: number) => void) | undefined,
    sent?: () => void,
  ): Promise<Reply> {
    if (signal?.aborted) {
      // Cancelled while waiting for the connection or a batch's turn: an
      // upload with no bytes would otherwise be sent, and written, anyway.
      sent?.();
      throw abortError();
    }
    const generation = this.generation;
    let aborted = false;
    let id = 0;
    const answer = new Promise<Reply>((resolve, reject) => {
      id = this.send(op, {
        reply: (r) => {
          resolve(r);
          return true;
        },
        fail: (e) => reject(aborted && e.code !== 'disconnected' ? abortError() : e),
      });
    });
    // Keep the rejection handled while the stream below is still running.
    answer.catch(() => undefined);
    const live = (): boolean => this.generation === generation && this.pending.has(id) && this.ws !== null;
    const windowBytes = this.opts.uploadWindowBytes;
    const fenceStep = Math.floor(windowBytes / 2);
    // Pings sent behind the chunks, oldest first: once one is answered, every
    // byte before its offset has been processed by the runner.
    const fences: Array<{ offset: number; answered: Promise<void> }> = [];
    let processed = 0;
    let lastFence = 0;
    let offset = 0;
    try {
      onProgress?.(0, total);
      while (offset < total && live()) {
        const end = Math.min(total, offset + UPLOAD_CHUNK_BYTES);
        for (let f = fences[0]; f !== undefined && end - processed > windowBytes && live(); f = fences[0]) {
          await f.answered;
          fences.shift();
          processed = f.offset;
        }
        while (live() && (this.ws?.bufferedAmount ?? 0) > SEND_HIGH_WATER_BYTES) await sleep(10);
        if (!live()) break;
        if (signal?.aborted) {
          // The protocol has no cancel: a chunk past the size aborts the
          // transfer on the runner, and nothing of it is written.
          aborted = true;
          this.ws?.send(encodeFileChunk(id, total, new Uint8Array(1)));
          break;
        }
        let bytes: Uint8Array;
        try {
          bytes = await bytesAt(offset, end);
        } catch (err) {
          // A file changed or deleted on disk since it was picked: abort the
          // transfer, or the runner would wait for its bytes and refuse
          // every later write_many on this connection.
          if (live()) {
            aborted = true;
            this.ws?.send(encodeFileChunk(id, total, new Uint8Array(1)));
          }
          throw err;
        }
        if (!live()) break;
        this.ws?.send(encodeFileChunk(id, offset, bytes));
        offset = end;
        onProgress?.(offset, total);
        if (offset - lastFence >= fenceStep && offset < total) {
          lastFence = offset;
          fences.push({ offset, answered: this.fence() });
        }
      }
    } finally {
      sent?.();
    }
    return answer;
  }
  /** Waits until no other batch is sending its bytes; resolves with the
   * function that ends this one's turn (safe to call more than once). */
  private async batchTurn(): Promise<() => void> {
    let end!: () => void;
    const mine = new Promise<void>((resolve) => (end = resolve));
    const before = this.batchSending;
    this.batchSending = before.then(() => mine);
    await before;
    return end;
  }

  /** A `ping` whose answer says the runner has processed everything sent
   * before it (it reads the connection in order). Settles on failure too:
   * the caller re-checks its connection. */
  private fence(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.send({ op: 'ping' }, {
        reply: () => {
          resolve();
          return true;
        },
        fail: () => resolve(),
      });
    });
  }

  /** Starts `fs_changed` events; re-sent after every reconnect. */
  watchFs(): void {
    this.watching = true;
    if (this.currentState === 'open') this.sendWatch();
  }

  // ---- terminals ----

  async openTerminal(size: { cols: number; rows: number }, command?: string[], sink?: TerminalSink, purpose?: TermPurpose): Promise<number> {
    await this.whenOpen();
    const op: Op = { op: 'term_open', cols: size.cols, rows: size.rows };
    if (command !== undefined) op.command = command;
    if (purpose !== undefined) op.purpose = purpose;
    if (sink !== undefined) op.flow_window = this.opts.flowWindow;
    return new Promise<number>((resolve, reject) => {
      this.send(op, {
        reply: (r) => {
          if (r.kind !== 'term_opened') {
            reject(unexpected(r, 'term_opened'));
            return true;
          }
          if (sink === undefined) {
            // Nobody watches it yet: a later attachTerminal(term, 0, sink) gets everything.
            this.send({ op: 'term_detach', term: r.term }, ignoreAnswer);
          } else {
            // Registered now, synchronously: output frames follow this reply.
            const t = this.newAttachment(r.term, 0, sink);
            t.phase = 'attached';
            t.size = { ...size };
          }
          resolve(r.term);
          return true;
        },
        fail: reject,
      });
    });
  }

  /** Attaches from `fromSeq` (0 after a page reload: the runner replays its
   * scrollback, or a snapshot when it has moved past). Survives reconnects. */
  attachTerminal(term: number, fromSeq: number, sink: TerminalSink): Promise<{ cols: number; rows: number }> {
    const previous = this.terminals.get(term);
    const t = this.newAttachment(term, fromSeq, sink);
    if (previous !== undefined) t.waiters.push(...previous.waiters);
    const attached = new Promise<{ cols: number; rows: number }>((resolve, reject) => {
      t.waiters.push({ resolve, reject });
    });
    if (this.currentState === 'open') this.sendAttach(t);
    else this.ensureStarted();
    return attached;
  }

  input(term: number, data: string | Uint8Array): void {
    const bytes = typeof data === 'string' ? textEncoder.encode(data) : data;
    const t = this.terminals.get(term);
    if (this.currentState === 'open' && (t === undefined || t.phase === 'attached')) {
      this.sendInput(term, bytes);
    } else if (t !== undefined && t.queuedInputBytes + bytes.length <= MAX_QUEUED_INPUT_BYTES) {
      // Typed while the connection is down: sent once the terminal is back.
      t.queuedInput.push(bytes.slice());
      t.queuedInputBytes += bytes.length;
    }
  }

  resize(term: number, cols: number, rows: number): void {
    const t = this.terminals.get(term);
    if (t !== undefined) t.size = { cols, rows };
    if (this.currentState === 'open' && (t === undefined || t.phase === 'attached')) {
      this.send({ op: 'term_resize', term, cols, rows }, ignoreAnswer);
    }
  }

  async closeTerminal(term: number): Promise<void> {
    const t = this.terminals.get(term);
    if (t !== undefined) t.phase = 'exited';
    try {
      await this.request({ op: 'term_close', term });
    } catch (e) {
      // Already gone is what we wanted.
      if (!(e instanceof ProtocolError && e.code === 'unknown_terminal')) throw e;
    } finally {
      this.terminals.delete(term);
    }
  }

  detachTerminal(term: number): void {
    const t = this.terminals.get(term);
    this.terminals.delete(term);
    if (t !== undefined) {
      for (const w of t.waiters.splice(0)) w.reject(new ProtocolError('disconnected', 'detached'));
    }
    if (this.currentState === 'open') this.send({ op: 'term_detach', term }, ignoreAnswer);
  }

  /** Flow control: every output byte below `seq` (and any snapshot at or
   * before it) has been processed by the emulator. */
  ack(term: number, seq: number): void {
    const t = this.terminals.get(term);
    if (t === undefined || t.phase !== 'attached' || seq <= t.ackSent) return;
    if (this.ws === null || this.currentState !== 'open') return;
    t.ackSent = seq;
    this.ws.send(encodeTermAck(term, seq));
  }

  // ---- internals: connection ----

  private ensureStarted(): void {
    if (!this.started) this.start();
  }

  private setState(s: ConnectionState): void {
    if (this.currentState === s) return;
    this.currentState = s;
    for (const cb of [...this.stateListeners]) cb(s);
  }

  private whenOpen(): Promise<void> {
    if (this.currentState === 'open') return Promise.resolve();
    if (this.currentState === 'closed') {
      return Promise.reject(new ProtocolError('disconnected', 'the client is closed'));
    }
    this.ensureStarted();
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: ProtocolError) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== waiter);
        reject(new ProtocolError('timeout', 'no connection to the runner'));
      }, this.opts.queueTimeoutMs);
      this.openWaiters.push(waiter);
    });
  }

  private async connectOnce(): Promise<void> {
    if (this.connecting) return;
    this.connecting = true;
    let target: { wsUrl: string; token: string };
    try {
      target = await this.opts.connect();
    } catch (e) {
      this.lastError = e instanceof Error ? e.message : String(e);
      this.scheduleReconnect();
      return;
    } finally {
      this.connecting = false;
    }
    if (this.currentState === 'closed' || this.ws !== null) return;
    let ws: WebSocket;
    try {
      // Browsers cannot set headers on a WebSocket: the token travels as a
      // subprotocol, never in the URL (URLs end up in logs).
      ws = new this.opts.WebSocketImpl(target.wsUrl, ['cloudcode.v1', `cloudcode-token.${target.token}`]);
    } catch (e) {
      this.lastError = e instanceof Error ? e.message : String(e);
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.generation += 1;
    // Open once the runner's `welcome` (always its first message) arrived:
    // it says whether this is still the runner our terminals live in.
    this.welcomed = false;
    ws.onopen = () => undefined;
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws === ws) this.received(ev.data);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.lastError = ev.code === 1000 ? undefined : `connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      this.dropped();
    };
    ws.onerror = () => {
      // Always followed by close, which does the work.
    };
  }

  private opened(): void {
    this.attempt = 0;
    this.lastError = undefined;
    this.setState('open');
    if (this.watching) this.sendWatch();
    for (const t of this.terminals.values()) if (t.phase !== 'exited') this.sendAttach(t);
    for (const waiter of this.openWaiters.splice(0)) waiter.resolve();
    this.startPing();
  }

  /** Another start of the runner: terminal ids of the old one mean nothing
   * here (a new terminal may even have the same id), so every terminal is
   * lost and none is attached by its old id. */
  private runnerRestarted(): void {
    const gone = [...this.terminals.values()];
    this.terminals.clear();
    const error = new ProtocolError('unknown_terminal', 'the runner restarted: its terminals are gone');
    for (const t of gone) {
      for (const w of t.waiters.splice(0)) w.reject(error);
      if (t.phase !== 'exited') t.sink.lost();
    }
  }

  /** Forgets the current socket: its late events are ignored from now on. */
  private dropSocket(): void {
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.pingOutstanding = undefined;
    if (ws !== null) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = null;
    }
  }

  private dropped(): void {
    this.dropSocket();
    if (this.currentState === 'closed') return;
    this.failPending(new ProtocolError('disconnected', 'the connection to the runner was lost'));
    for (const t of this.terminals.values()) if (t.phase === 'attached') t.phase = 'attaching';
    this.scheduleReconnect();
  }

  private failPending(error: ProtocolError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.fail(error);
  }

  private scheduleReconnect(): void {
    if (this.currentState === 'closed') return;
    if (this.currentState === 'open') this.setState('reconnecting');
    // Before the first success we are still "connecting".
    const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffInitialMs * 2 ** this.attempt);
    // Jitter: many tabs dropped by one gateway restart do not return in lockstep.
    const delay = ceiling * (0.5 + Math.random() * 0.5);
    this.attempt += 1;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.connectOnce(), delay);
  }

  private startPing(): void {
    if (this.opts.pingIntervalMs <= 0) return;
    this.pingTimer = setInterval(() => {
      if (this.pingOutstanding !== undefined && Date.now() - this.pingOutstanding > PING_TIMEOUT_MS) {
        // A half-open connection (laptop sleep, network change) never
        // closes by itself: give up on it and reconnect.
        const ws = this.ws;
        this.lastError = 'the runner stopped answering';
        this.dropped();
        ws?.close();
        return;
      }
      if (this.pingOutstanding !== undefined) return;
      this.pingOutstanding = Date.now();
      this.send({ op: 'ping' }, {
        reply: () => {
          this.pingOutstanding = undefined;
          return true;
        },
        fail: () => undefined,
      });
    }, this.opts.pingIntervalMs);
  }

  // ---- internals: messages ----

  /** Sends a request on the open socket and registers its handler. */
  private send(op: Op, handler: PendingRequest): number {
    const id = this.nextId++;
    const ws = this.ws;
    if (ws === null || ws.readyState !== OPEN) {
      handler.fail(new ProtocolError('disconnected', 'not connected to the runner'));
      return id;
    }
    this.pending.set(id, handler);
    ws.send(JSON.stringify({ id, ...op }));
    return id;
  }

  private sendWatch(): void {
    this.send({ op: 'watch_fs' }, ignoreAnswer);
  }

  private sendInput(term: number, bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length || i === 0; i += INPUT_FRAME_BYTES) {
      this.ws?.send(encodeTermInput(term, bytes.subarray(i, i + INPUT_FRAME_BYTES)));
      if (bytes.length === 0) break;
    }
  }

  private newAttachment(term: number, fromSeq: number, sink: TerminalSink): TerminalAttachment {
    const t: TerminalAttachment = {
      term,
      sink,
      nextSeq: fromSeq,
      phase: 'attaching',
      ackSent: -1,
      waiters: [],
      queuedInput: [],
      queuedInputBytes: 0,
    };
    this.terminals.set(term, t);
    return t;
  }

  private sendAttach(t: TerminalAttachment): void {
    t.phase = 'attaching';
    // The runner starts a fresh window for every attachment.
    t.ackSent = -1;
    this.send(
      { op: 'term_attach', term: t.term, from_seq: t.nextSeq, flow_window: this.opts.flowWindow },
      {
        reply: (r) => {
          if (this.terminals.get(t.term) !== t) return true;
          if (r.kind !== 'term_attached') {
            for (const w of t.waiters.splice(0)) w.reject(unexpected(r, 'term_attached'));
            return true;
          }
          t.phase = 'attached';
          for (const w of t.waiters.splice(0)) w.resolve({ cols: r.cols, rows: r.rows });
          for (const bytes of t.queuedInput.splice(0)) this.sendInput(t.term, bytes);
          t.queuedInputBytes = 0;
          if (t.size !== undefined && (t.size.cols !== r.cols || t.size.rows !== r.rows)) {
            this.send({ op: 'term_resize', term: t.term, cols: t.size.cols, rows: t.size.rows }, ignoreAnswer);
          }
          return true;
        },
        fail: (e) => {
          if (this.terminals.get(t.term) !== t) return;
          // A drop is retried on the next connection; anything else is final.
          if (e.code === 'disconnected') return;
          this.terminals.delete(t.term);
          for (const w of t.waiters.splice(0)) w.reject(e);
          if (e.code === 'unknown_terminal') t.sink.lost();
        },
      },
    );
  }

  private received(data: unknown): void {
    if (typeof data === 'string') {
      let message: ServerMessage;
      try {
        message = JSON.parse(data) as ServerMessage;
      } catch {
        console.warn('unreadable message from the runner', data.slice(0, 200));
        return;
      }
      this.receivedMessage(message);
    } else if (data instanceof ArrayBuffer) {
      this.receivedFrame(data);
    }
  }

  private receivedMessage(message: ServerMessage): void {
    switch (message.type) {
      case 'response': {
        const p = this.pending.get(message.id);
        if (p === undefined) return;
        // A read stays registered until its last chunk.
        if (p.reply(message.result)) this.pending.delete(message.id);
        return;
      }
      case 'error': {
        const p = message.id === undefined ? undefined : this.pending.get(message.id);
        if (p === undefined || message.id === undefined) {
          console.warn(`runner error ${message.code}: ${message.message}`);
          return;
        }
        this.pending.delete(message.id);
        p.fail(new ProtocolError(message.code, message.message));
        return;
      }
      case 'event':
        this.receivedEvent(message);
        return;
    }
  }

  private receivedEvent(event: Event): void {
    if (event.event === 'welcome') {
      const instance: unknown = (event as { instance?: unknown }).instance;
      const previous = this.welcome?.instance;
      this.welcome = { maxFileSize: event.max_file_size, maxFrameSize: event.max_frame_size, project: event.project };
      if (typeof instance === 'string') this.welcome.instance = instance;
      if (previous !== undefined && typeof instance === 'string' && instance !== previous) this.runnerRestarted();
      if (!this.welcomed) {
        this.welcomed = true;
        this.opened();
      }
    } else if (event.event === 'term_exited') {
      const t = this.terminals.get(event.term);
      if (t !== undefined) {
        t.phase = 'exited';
        t.sink.exited(event.code ?? null);
      }
    }
    for (const cb of [...this.eventListeners]) cb(event);
  }

  private receivedFrame(buffer: ArrayBuffer): void {
    let frame;
    try {
      frame = decodeFrame(buffer);
    } catch (e) {
      if (e instanceof FrameError) console.warn(`unreadable frame from the runner: ${e.message}`);
      return;
    }
    switch (frame.kind) {
      case 'term_output': {
        const t = this.terminals.get(frame.term);
        if (t === undefined) return;
        const end = frame.seq + frame.data.length;
        // After a reconnect the runner resumes exactly where we asked; still,
        // never hand the emulator a byte twice.
        if (end <= t.nextSeq) return;
        const skip = Math.max(0, t.nextSeq - frame.seq);
        const data = skip > 0 ? frame.data.subarray(skip) : frame.data;
        const seq = frame.seq + skip;
        t.nextSeq = end;
        t.sink.output(data, seq);
        return;
      }
      case 'term_snapshot': {
        const t = this.terminals.get(frame.term);
        if (t === undefined) return;
        t.nextSeq = frame.seq;
        t.sink.snapshot(frame.data, frame.seq);
        return;
      }
      case 'file_chunk':
        this.pending.get(frame.transfer)?.chunk?.(frame.data, frame.offset);
        return;
      default:
        return;
    }
  }
}

const ignoreAnswer: PendingRequest = {
  reply: () => true,
  fail: () => undefined,
};

function sizeOf(data: Uint8Array | Blob): number {
  return data instanceof Uint8Array ? data.length : data.size;
}

function tooLarge(path: string, size: number, limit: number): ProtocolError {
  return new ProtocolError('too_large', `${path} is ${size} bytes, above the limit of ${limit}`);
}
