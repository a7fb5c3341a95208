import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FLOW_WINDOW_BYTES, ProtocolError, RunnerClient, SEND_HIGH_WATER_BYTES, UPLOAD_CHUNK_BYTES, UPLOAD_WINDOW_BYTES, type TerminalSink } from './client';
import { WRITE_MANY_MAX_BYTES, WRITE_MANY_MAX_FILES, type StorageStatus } from './generated';
import { FakeWebSocket } from './testing';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Lets promise continuations (connect(), whenOpen) run under fake timers. */
async function settle(ms = 0): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

async function connected(opts: Partial<ConstructorParameters<typeof RunnerClient>[0]> = {}) {
  let tokens = 0;
  const connect = vi.fn(async () => ({ wsUrl: 'ws://alpha.ide.localhost:8080/v1/ws', token: `tok${++tokens}` }));
  const client = new RunnerClient({
    connect,
    WebSocketImpl: FakeWebSocket as unknown as typeof WebSocket,
    pingIntervalMs: 0,
    ...opts,
  });
  client.start();
  await settle();
  const ws = FakeWebSocket.last();
  ws.open();
  return { client, ws, connect };
}

function recordingSink() {
  const log: string[] = [];
  const sink: TerminalSink = {
    output: (data, seq) => log.push(`out ${seq} ${text(data)}`),
    snapshot: (data, seq) => log.push(`snap ${seq} ${text(data)}`),
    exited: (code) => log.push(`exited ${code}`),
    lost: () => log.push('lost'),
  };
  return { log, sink };
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('connecting', () => {
  it('sends the token as a subprotocol, never in the URL', async () => {
    const { client, ws } = await connected();
    expect(ws.url).toBe('ws://alpha.ide.localhost:8080/v1/ws');
    expect(ws.protocols).toEqual(['cloudcode.v1', 'cloudcode-token.tok1']);
    expect(ws.binaryType).toBe('arraybuffer');
    expect(client.state).toBe('open');
    expect(client.limits?.maxFileSize).toBe(1 << 30);
  });

  it('reports its states', async () => {
    const states: string[] = [];
    const { client, ws } = await connected();
    client.onState((s) => states.push(s));
    ws.drop();
    expect(client.state).toBe('reconnecting');
    await settle(1000);
    FakeWebSocket.last().open();
    client.close();
    expect(states).toEqual(['reconnecting', 'open', 'closed']);
  });
});

describe('requests', () => {
  it('matches answers to requests by id, in any order', async () => {
    const { client, ws } = await connected();
    const a = client.list('src');
    const b = client.request({ op: 'ping' });
    await settle();
    const [ra, rb] = ws.requests();
    expect(ra).toEqual({ id: ra?.id, op: 'list', path: 'src' });
    expect(rb?.op).toBe('ping');
    ws.respond(rb!.id, { kind: 'pong' });
    ws.respond(ra!.id, {
      kind: 'entries',
      entries: [{ name: 'a.js', path: 'src/a.js', kind: 'file', size: 3, mtime_ms: 1, version: 'v1' }],
    });
    await expect(b).resolves.toEqual({ kind: 'pong' });
    await expect(a).resolves.toEqual([{ name: 'a.js', path: 'src/a.js', kind: 'file', size: 3, mtime_ms: 1, version: 'v1' }]);
  });

  it('maps runner errors to ProtocolError with the runner code', async () => {
    const { client, ws } = await connected();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const p = client.stat('nope');
    await settle();
    // An error without id concerns no request: it is logged, nothing fails.
    ws.message({ type: 'error', code: 'bad_request', message: 'broken JSON' });
    ws.message({ type: 'error', id: ws.lastRequest('stat').id, code: 'not_found', message: 'nope: no such file' });
    const error = await p.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error).toMatchObject({ code: 'not_found', message: 'nope: no such file' });
    expect(warn).toHaveBeenCalledOnce();
  });

  it('waits for the connection before sending, and times out', async () => {
    const connect = vi.fn(() => new Promise<{ wsUrl: string; token: string }>(() => undefined));
    const client = new RunnerClient({ connect, WebSocketImpl: FakeWebSocket as unknown as typeof WebSocket, queueTimeoutMs: 5000 });
    const p = client.list('');
    const result = p.catch((e: unknown) => e);
    expect(connect).toHaveBeenCalledOnce();
    await settle(5001);
    expect(await result).toMatchObject({ code: 'timeout' });
  });

  it('sends what was asked while connecting once the socket opens', async () => {
    const client = new RunnerClient({
      connect: async () => ({ wsUrl: 'ws://x/v1/ws', token: 't' }),
      WebSocketImpl: FakeWebSocket as unknown as typeof WebSocket,
      pingIntervalMs: 0,
    });
    client.start();
    const p = client.request({ op: 'storage_status' });
    await settle();
    const ws = FakeWebSocket.last();
    expect(ws.sent).toEqual([]);
    ws.open();
    await settle();
    // (cast: the status grows fields as the runner does; these two are enough here)
    const status = { healthy: true, pending: 0 } as StorageStatus;
    ws.respond(ws.lastRequest('storage_status').id, { kind: 'storage', status });
    await expect(p).resolves.toEqual({ kind: 'storage', status });
  });

  it('rejects every pending request when the connection drops', async () => {
    const { client, ws } = await connected();
    const a = client.list('').catch((e: unknown) => e);
    const b = client.readFile('big.bin').catch((e: unknown) => e);
    await settle();
    ws.respond(ws.lastRequest('read').id, { kind: 'read_started', size: 10, version: 'v' });
    ws.frame({ kind: 'file_chunk', transfer: ws.lastRequest('read').id, offset: 0, data: bytes('12345') });
    ws.drop();
    expect(await a).toMatchObject({ code: 'disconnected' });
    expect(await b).toMatchObject({ code: 'disconnected' });
  });

  it('re-sends watch_fs after a reconnect and passes events on', async () => {
    const { client, ws } = await connected();
    const events: string[] = [];
    client.onEvent((e) => events.push(e.event));
    client.watchFs();
    expect(ws.lastRequest().op).toBe('watch_fs');
    ws.event({ event: 'fs_changed', changes: [{ path: 'a', kind: 'created' }] });
    ws.drop();
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    expect(ws2).not.toBe(ws);
    ws2.open();
    expect(ws2.requests().map((r) => r.op)).toEqual(['watch_fs']);
    expect(events).toEqual(['fs_changed', 'welcome']);
  });

  it('close() rejects pending work and never reconnects', async () => {
    const { client, ws, connect } = await connected();
    const p = client.list('').catch((e: unknown) => e);
    await settle();
    client.close();
    expect(await p).toMatchObject({ code: 'disconnected' });
    expect(ws.closedByClient).toBe(1000);
    await settle(60_000);
    expect(connect).toHaveBeenCalledOnce();
    await expect(client.list('')).rejects.toMatchObject({ code: 'disconnected' });
  });
});

describe('reconnecting', () => {
  it('backs off exponentially with jitter and asks connect() for a fresh token each time', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1);
    const { client, ws, connect } = await connected({ backoffInitialMs: 100, backoffMaxMs: 1000 });
    ws.drop();
    await settle(99);
    expect(connect).toHaveBeenCalledTimes(1);
    await settle(1);
    expect(connect).toHaveBeenCalledTimes(2);
    FakeWebSocket.last().drop(); // fails before opening
    await settle(199);
    expect(connect).toHaveBeenCalledTimes(2);
    await settle(1);
    expect(connect).toHaveBeenCalledTimes(3);
    expect(FakeWebSocket.last().protocols[1]).toBe('cloudcode-token.tok3');
    FakeWebSocket.last().open();
    expect(client.state).toBe('open');
    // A success resets the backoff.
    FakeWebSocket.last().drop();
    await settle(100);
    expect(connect).toHaveBeenCalledTimes(4);
  });

  it('keeps retrying when connect() itself fails', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const connect = vi
      .fn<() => Promise<{ wsUrl: string; token: string }>>()
      .mockRejectedValueOnce(new Error('503 start_failed'))
      .mockResolvedValue({ wsUrl: 'ws://x/v1/ws', token: 't' });
    const client = new RunnerClient({ connect, WebSocketImpl: FakeWebSocket as unknown as typeof WebSocket, pingIntervalMs: 0 });
    client.start();
    await settle();
    expect(client.lastError).toBe('503 start_failed');
    expect(client.state).toBe('connecting');
    await settle(250);
    FakeWebSocket.last().open();
    expect(client.state).toBe('open');
  });

  it('drops a connection on demand and reconnects at once when told to', async () => {
    const { client, ws, connect } = await connected({ backoffInitialMs: 10_000 });
    const p = client.list('').catch((e: unknown) => e);
    await settle();
    client.dropConnection('the browser is offline');
    expect(client.state).toBe('reconnecting');
    expect(ws.closedByClient).toBeDefined();
    expect(await p).toMatchObject({ code: 'disconnected' });
    client.reconnectNow();
    client.reconnectNow(); // one attempt, not two
    await settle();
    expect(connect).toHaveBeenCalledTimes(2);
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last().open();
    expect(client.state).toBe('open');
  });

  it('gives up on a connection that stops answering pings', async () => {
    const { client, ws } = await connected({ pingIntervalMs: 1000 });
    await settle(1000);
    expect(ws.lastRequest().op).toBe('ping');
    ws.respond(ws.lastRequest().id, { kind: 'pong' });
    await settle(1000);
    expect(ws.requests().filter((r) => r.op === 'ping')).toHaveLength(2);
    await settle(11_000); // no pong
    expect(client.state).toBe('reconnecting');
    expect(ws.closedByClient).toBeDefined();
  });
});

describe('files', () => {
  it('reads a file from chunk frames, whatever their split', async () => {
    const { client, ws } = await connected();
    const p = client.readFile('src/a.txt');
    await settle();
    const id = ws.lastRequest('read').id;
    ws.respond(id, { kind: 'read_started', size: 11, version: 'v7' });
    ws.frame({ kind: 'file_chunk', transfer: id, offset: 0, data: bytes('hello ') });
    ws.frame({ kind: 'file_chunk', transfer: id + 100, offset: 0, data: bytes('other transfer') });
    ws.frame({ kind: 'file_chunk', transfer: id, offset: 6, data: bytes('world') });
    const { data, version } = await p;
    expect(text(data)).toBe('hello world');
    expect(version).toBe('v7');
  });

  it('reads an empty file', async () => {
    const { client, ws } = await connected();
    const p = client.readFile('empty');
    await settle();
    ws.respond(ws.lastRequest('read').id, { kind: 'read_started', size: 0, version: 'v0' });
    expect((await p).data.length).toBe(0);
  });

  it('refuses a file above maxBytes without reading it', async () => {
    const { client, ws } = await connected();
    const p = client.readFile('huge.log', { maxBytes: 5 * 1024 * 1024 }).catch((e: unknown) => e);
    await settle();
    ws.respond(ws.lastRequest('stat').id, {
      kind: 'entry',
      entry: { name: 'huge.log', path: 'huge.log', kind: 'file', size: 6 * 1024 * 1024, mtime_ms: 0, version: 'v' },
    });
    expect(await p).toMatchObject({ code: 'too_large' });
    expect(ws.requests().map((r) => r.op)).toEqual(['stat']);
  });

  it('writes in 512 KiB chunks and resolves only on written', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 }); // (the pong window has its own test)
    const data = new Uint8Array(UPLOAD_CHUNK_BYTES * 2 + 10);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    const progress: number[] = [];
    let done = false;
    const p = client
      .writeFile('bin/data', data, { baseVersion: 'v1', onProgress: (sent) => progress.push(sent) })
      .then((r) => {
        done = true;
        return r;
      });
    await settle();
    const req = ws.lastRequest('write');
    expect(req).toEqual({ id: req.id, op: 'write', path: 'bin/data', size: data.length, base_version: 'v1' });
    const chunks = ws.frames();
    expect(chunks.map((f) => (f.kind === 'file_chunk' ? [f.transfer, f.offset, f.data.length] : f.kind))).toEqual([
      [req.id, 0, UPLOAD_CHUNK_BYTES],
      [req.id, UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES],
      [req.id, UPLOAD_CHUNK_BYTES * 2, 10],
    ]);
    const joined = new Uint8Array(data.length);
    for (const f of chunks) if (f.kind === 'file_chunk') joined.set(f.data, f.offset);
    // (toEqual on megabytes is slow)
    expect(joined.every((b, i) => b === data[i])).toBe(true);
    expect(progress).toEqual([0, UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES * 2, data.length]);
    await settle();
    expect(done).toBe(false); // sent is not durable
    ws.respond(req.id, { kind: 'written', version: 'v2' });
    await expect(p).resolves.toEqual({ version: 'v2' });
  });

  it('streams a Blob and waits while the socket buffer is full', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 }); // (the pong window has its own test)
    const blob = new Blob([new Uint8Array(UPLOAD_CHUNK_BYTES * 3)]);
    ws.accumulate = true;
    const p = client.writeFile('big.bin', blob, { createNew: true, bulk: true });
    await settle(50);
    expect(ws.lastRequest('write')).toMatchObject({ create_new: true, bulk: true, size: blob.size });
    const sentWhileFull = ws.frames().length;
    expect(sentWhileFull).toBe(2); // 1 MiB + headers queued: above the high-water mark
    expect(ws.bufferedAmount).toBeGreaterThan(SEND_HIGH_WATER_BYTES);
    await settle(500);
    expect(ws.frames().length).toBe(sentWhileFull);
    ws.bufferedAmount = 0;
    await settle(50);
    expect(ws.frames().length).toBe(3);
    ws.respond(ws.lastRequest('write').id, { kind: 'written', version: 'v1' });
    await expect(p).resolves.toEqual({ version: 'v1' });
  });

  it('keeps at most a window of upload ahead of the last pong, so input never queues behind megabytes', async () => {
    const { client, ws } = await connected();
    const total = UPLOAD_CHUNK_BYTES * 20; // 10 MiB
    let done = false;
    const p = client.writeFile('big.bin', new Blob([new Uint8Array(total)])).then((r) => {
      done = true;
      return r;
    });
    /** Upload bytes sent, and the ones before the last answered ping. */
    const sentBytes = (): number => ws.frames().reduce((n, f) => n + (f.kind === 'file_chunk' ? f.data.length : 0), 0);
    let answered = 0;
    const answeredPings = new Set<number>();
    // The runner answers each ping in order, once it has read what came before it.
    const offsetsOfPings = (): Array<{ id: number; offset: number }> => {
      const out: Array<{ id: number; offset: number }> = [];
      let offset = 0;
      for (const m of ws.sent) {
        if (typeof m === 'string') {
          const r = JSON.parse(m) as { id: number; op: string };
          if (r.op === 'ping') out.push({ id: r.id, offset });
        } else offset += Math.max(0, m.length - 17);
      }
      return out;
    };
    let rounds = 0;
    for (;;) {
      await settle(20);
      // Never more than the window beyond what the runner said it processed.
      expect(sentBytes() - answered).toBeLessThanOrEqual(UPLOAD_WINDOW_BYTES);
      if (sentBytes() === total) break;
      const next = offsetsOfPings().find((q) => !answeredPings.has(q.id));
      expect(next).toBeDefined(); // it waits for a pong, not for nothing
      const before = sentBytes();
      await settle(200);
      expect(sentBytes()).toBe(before); // stalled until that pong
      answeredPings.add(next!.id);
      answered = next!.offset;
      ws.respond(next!.id, { kind: 'pong' });
      rounds++;
    }
    expect(rounds).toBeGreaterThanOrEqual(total / UPLOAD_WINDOW_BYTES - 2);
    // The bytes are all there, in order.
    const offsets = ws.frames().map((f) => (f.kind === 'file_chunk' ? f.offset : -1));
    expect(offsets).toEqual(Array.from({ length: 20 }, (_, i) => i * UPLOAD_CHUNK_BYTES));
    expect(done).toBe(false);
    ws.respond(ws.lastRequest('write').id, { kind: 'written', version: 'v9' });
    await expect(p).resolves.toEqual({ version: 'v9' });
  });

  it('an upload waiting for a pong fails when the connection drops', async () => {
    const { client, ws } = await connected();
    const p = client.writeFile('a', new Uint8Array(UPLOAD_CHUNK_BYTES * 12)).catch((e: unknown) => e);
    await settle(20);
    expect(ws.requests().some((r) => r.op === 'ping')).toBe(true);
    ws.drop();
    await settle(20);
    expect(await p).toMatchObject({ code: 'disconnected' });
  });

  it('stops streaming when the runner refuses the write early', async () => {
    const { client, ws } = await connected();
    ws.bufferedAmount = SEND_HIGH_WATER_BYTES + 1;
    const p = client.writeFile('a', new Uint8Array(UPLOAD_CHUNK_BYTES * 4), { baseVersion: 'old' }).catch((e: unknown) => e);
    await settle();
    ws.message({ type: 'error', id: ws.lastRequest('write').id, code: 'conflict', message: 'a changed' });
    ws.bufferedAmount = 0;
    await settle(100);
    expect(await p).toMatchObject({ code: 'conflict' });
    expect(ws.frames()).toHaveLength(0);
  });

  it('refuses a file above the runner limit before sending anything', async () => {
    const client = new RunnerClient({
      connect: async () => ({ wsUrl: 'ws://x/v1/ws', token: 't' }),
      WebSocketImpl: FakeWebSocket as unknown as typeof WebSocket,
      pingIntervalMs: 0,
    });
    client.start();
    await settle();
    const ws = FakeWebSocket.last();
    ws.open({ max_file_size: 4 });
    await expect(client.writeFile('a', bytes('12345'))).rejects.toMatchObject({ code: 'too_large' });
    expect(ws.sent).toEqual([]);
  });

  it('aborts an upload by sending a chunk past its size', async () => {
    const { client, ws } = await connected();
    const abort = new AbortController();
    const p = client
      .writeFile('a', new Blob([new Uint8Array(UPLOAD_CHUNK_BYTES * 3)]), {
        signal: abort.signal,
        onProgress: (sent) => {
          if (sent === UPLOAD_CHUNK_BYTES) abort.abort();
        },
      })
      .catch((e: unknown) => e);
    await settle(50);
    const id = ws.lastRequest('write').id;
    const offsets = ws.frames().map((f) => (f.kind === 'file_chunk' ? f.offset : -1));
    expect(offsets).toEqual([0, UPLOAD_CHUNK_BYTES * 3]);
    ws.message({ type: 'error', id, code: 'bad_request', message: 'chunk past the size' });
    expect(await p).toMatchObject({ name: 'AbortError' });
  });

  it('aborts a write whose file can no longer be read, with the read\'s error', async () => {
    const { client, ws } = await connected();
    class Unreadable extends Blob {
      override slice(): Blob {
        return { arrayBuffer: () => Promise.reject(new DOMException('the file changed', 'NotReadableError')) } as unknown as Blob;
      }
    }
    const p = client.writeFile('a', new Unreadable(['12345'])).catch((e: unknown) => e);
    await settle();
    const id = ws.lastRequest('write').id;
    expect(ws.frames().map((f) => (f.kind === 'file_chunk' ? [f.transfer, f.offset, f.data.length] : f.kind))).toEqual([[id, 5, 1]]);
    expect(await p).toMatchObject({ name: 'NotReadableError' });
  });

  it('fails an upload whose connection drops', async () => {
    const { client, ws } = await connected();
    ws.bufferedAmount = SEND_HIGH_WATER_BYTES + 1;
    const p = client.writeFile('a', new Uint8Array(UPLOAD_CHUNK_BYTES * 2)).catch((e: unknown) => e);
    await settle(20);
    ws.drop();
    await settle(20);
    expect(await p).toMatchObject({ code: 'disconnected' });
  });
});

describe('write_many', () => {
  it('sends the files\' bytes one after another, chunks spanning files, and resolves with each outcome once answered', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 });
    const a = new Uint8Array(UPLOAD_CHUNK_BYTES - 3).fill(1);
    const b = new Blob([new Uint8Array(10).fill(2)]);
    const c = new Uint8Array(0);
    const d = new Uint8Array(5).fill(4);
    const progress: number[] = [];
    let done = false;
    const p = client
      .writeMany(
        [
          { path: 'a.js', data: a, baseVersion: 'v1' },
          { path: 'lib/b.js', data: b, createNew: true },
          { path: 'empty', data: c },
          { path: 'd', data: d },
        ],
        { bulk: true, onProgress: (sent) => progress.push(sent) },
      )
      .then((r) => {
        done = true;
        return r;
      });
    await settle();
    const req = ws.lastRequest('write_many');
    expect(req).toEqual({
      id: req.id,
      op: 'write_many',
      files: [
        { path: 'a.js', size: a.length, base_version: 'v1' },
        { path: 'lib/b.js', size: 10, create_new: true },
        { path: 'empty', size: 0 },
        { path: 'd', size: 5 },
      ],
      bulk: true,
    });
    const total = a.length + 10 + 5;
    const chunks = ws.frames();
    expect(chunks.map((f) => (f.kind === 'file_chunk' ? [f.transfer, f.offset, f.data.length] : f.kind))).toEqual([
      [req.id, 0, UPLOAD_CHUNK_BYTES],
      [req.id, UPLOAD_CHUNK_BYTES, total - UPLOAD_CHUNK_BYTES],
    ]);
    const joined = new Uint8Array(total);
    for (const f of chunks) if (f.kind === 'file_chunk') joined.set(f.data, f.offset);
    const expected = [...a, ...new Uint8Array(10).fill(2), ...d];
    expect(joined.every((x, i) => x === expected[i])).toBe(true);
    expect(progress).toEqual([0, UPLOAD_CHUNK_BYTES, total]);
    await settle();
    expect(done).toBe(false); // sent is not durable
    const outcomes = [
      { outcome: 'written', version: 'v2' },
      { outcome: 'refused', code: 'not_found', message: 'lib: no such folder' },
      { outcome: 'written', version: 'v3' },
      { outcome: 'written', version: 'v4' },
    ] as const;
    ws.respond(req.id, { kind: 'written_many', files: [...outcomes] });
    await expect(p).resolves.toEqual(outcomes);
  });

  it('refuses a batch over the limits, or naming a file twice, before sending anything', async () => {
    const { client, ws } = await connected();
    const one = new Uint8Array(1);
    const tooMany = Array.from({ length: WRITE_MANY_MAX_FILES + 1 }, (_, i) => ({ path: `f${i}`, data: one }));
    await expect(client.writeMany(tooMany)).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.writeMany([{ path: 'big', data: new Blob([new Uint8Array(WRITE_MANY_MAX_BYTES + 1)]) }])).rejects.toMatchObject({
      code: 'too_large',
    });
    await expect(
      client.writeMany([
        { path: 'a', data: one },
        { path: 'a', data: one },
      ]),
    ).rejects.toMatchObject({ code: 'bad_request' });
    await expect(client.request({ op: 'write_many', files: [] })).rejects.toThrow(TypeError);
    await expect(client.writeMany([])).resolves.toEqual([]);
    await settle();
    expect(ws.sent).toEqual([]);
  });

  it('sends a second batch only once the first one\'s bytes are all sent', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 });
    ws.bufferedAmount = SEND_HIGH_WATER_BYTES + 1; // the first batch's bytes wait
    const first = client.writeMany([{ path: 'a', data: new Uint8Array(10) }]);
    const second = client.writeMany([{ path: 'b', data: new Uint8Array(10) }]);
    await settle(100);
    expect(ws.requests().map((r) => r.op)).toEqual(['write_many']);
    expect(ws.frames()).toHaveLength(0);
    ws.bufferedAmount = 0;
    await settle(50);
    const [ra, rb] = ws.requests();
    expect([ra?.op, rb?.op]).toEqual(['write_many', 'write_many']);
    // The first batch's chunk went out before the second request.
    const firstChunkAt = ws.sent.findIndex((m) => typeof m !== 'string');
    const secondAt = ws.sent.findIndex((m) => typeof m === 'string' && (JSON.parse(m) as { id: number }).id === rb?.id);
    expect(firstChunkAt).toBeGreaterThanOrEqual(0);
    expect(firstChunkAt).toBeLessThan(secondAt);
    ws.respond(rb!.id, { kind: 'written_many', files: [{ outcome: 'written', version: 'b1' }] });
    ws.respond(ra!.id, { kind: 'written_many', files: [{ outcome: 'written', version: 'a1' }] });
    await expect(first).resolves.toEqual([{ outcome: 'written', version: 'a1' }]);
    await expect(second).resolves.toEqual([{ outcome: 'written', version: 'b1' }]);
  });

  it('a batch cancelled mid-way sends a chunk past its bytes, and the next batch still goes', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 });
    const abort = new AbortController();
    const data = new Uint8Array(UPLOAD_CHUNK_BYTES * 2);
    const p = client
      .writeMany([{ path: 'a', data }], {
        signal: abort.signal,
        onProgress: (sent) => {
          if (sent === UPLOAD_CHUNK_BYTES) abort.abort();
        },
      })
      .catch((e: unknown) => e);
    await settle(50);
    const id = ws.lastRequest('write_many').id;
    expect(ws.frames().map((f) => (f.kind === 'file_chunk' ? f.offset : -1))).toEqual([0, data.length]);
    ws.message({ type: 'error', id, code: 'bad_request', message: 'chunk past the batch' });
    expect(await p).toMatchObject({ name: 'AbortError' });
    const next = client.writeMany([{ path: 'b', data: new Uint8Array(1) }]);
    await settle();
    ws.respond(ws.lastRequest('write_many').id, { kind: 'written_many', files: [{ outcome: 'written', version: 'b1' }] });
    await expect(next).resolves.toEqual([{ outcome: 'written', version: 'b1' }]);
  });

  it('aborts a batch whose file can no longer be read, and the next batch still goes', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 });
    // A file picked, then changed or deleted on disk: reading it fails.
    class Unreadable extends Blob {
      override slice(): Blob {
        return { arrayBuffer: () => Promise.reject(new DOMException('the file changed', 'NotReadableError')) } as unknown as Blob;
      }
    }
    const p = client
      .writeMany([
        { path: 'a', data: new Uint8Array(3) },
        { path: 'b', data: new Unreadable(['12345']) },
      ])
      .catch((e: unknown) => e);
    await settle();
    const id = ws.lastRequest('write_many').id;
    // Nothing of the batch, then a chunk past its 8 bytes: the runner aborts it.
    expect(ws.frames().map((f) => (f.kind === 'file_chunk' ? [f.transfer, f.offset, f.data.length] : f.kind))).toEqual([[id, 8, 1]]);
    expect(await p).toMatchObject({ name: 'NotReadableError' });
    ws.message({ type: 'error', id, code: 'bad_request', message: 'chunk past the batch' });
    const next = client.writeMany([{ path: 'c', data: new Uint8Array(1) }]);
    await settle();
    const again = ws.lastRequest('write_many');
    expect(again.id).not.toBe(id);
    ws.respond(again.id, { kind: 'written_many', files: [{ outcome: 'written', version: 'c1' }] });
    await expect(next).resolves.toEqual([{ outcome: 'written', version: 'c1' }]);
  });

  it('never sends a batch cancelled while it waited for its turn, even one with no bytes', async () => {
    const { client, ws } = await connected({ uploadWindowBytes: 8 << 20 });
    ws.bufferedAmount = SEND_HIGH_WATER_BYTES + 1; // the first batch's bytes wait
    const first = client.writeMany([{ path: 'a', data: new Uint8Array(10) }]);
    const abort = new AbortController();
    const second = client.writeMany([{ path: 'empty', data: new Uint8Array(0) }], { signal: abort.signal }).catch((e: unknown) => e);
    await settle(50);
    abort.abort();
    ws.bufferedAmount = 0;
    await settle(50);
    expect(await second).toMatchObject({ name: 'AbortError' });
    expect(ws.requests().map((r) => r.op)).toEqual(['write_many']);
    ws.respond(ws.lastRequest('write_many').id, { kind: 'written_many', files: [{ outcome: 'written', version: 'a1' }] });
    await expect(first).resolves.toEqual([{ outcome: 'written', version: 'a1' }]);
  });

  it('fails a batch whose connection drops, and lets the next one go', async () => {
    const { client, ws } = await connected();
    ws.bufferedAmount = SEND_HIGH_WATER_BYTES + 1;
    const p = client.writeMany([{ path: 'a', data: new Uint8Array(10) }]).catch((e: unknown) => e);
    const next = client.writeMany([{ path: 'b', data: new Uint8Array(1) }]).catch((e: unknown) => e);
    await settle(20);
    ws.drop();
    await settle(20);
    expect(await p).toMatchObject({ code: 'disconnected' });
    await settle(1000);
    const again = FakeWebSocket.last();
    again.open();
    await settle();
    again.respond(again.lastRequest('write_many').id, { kind: 'written_many', files: [{ outcome: 'written', version: 'b1' }] });
    expect(await next).toEqual([{ outcome: 'written', version: 'b1' }]);
  });
});

describe('terminals', () => {
  async function openedTerminal(cols = 80, rows = 24) {
    const env = await connected();
    const { log, sink } = recordingSink();
    const p = env.client.openTerminal({ cols, rows }, ['bash', '-l'], sink);
    await settle();
    const req = env.ws.lastRequest('term_open');
    expect(req).toEqual({ id: req.id, op: 'term_open', cols, rows, command: ['bash', '-l'], flow_window: FLOW_WINDOW_BYTES });
    env.ws.respond(req.id, { kind: 'term_opened', term: 4 });
    // Output right behind the reply, before any promise continuation ran.
    env.ws.frame({ kind: 'term_output', term: 4, seq: 0, data: bytes('$ ') });
    expect(await p).toBe(4);
    return { ...env, log, sink };
  }

  it('tells the runner what a terminal is for (the Run terminal), so every client can find it', async () => {
    const env = await connected();
    const { sink } = recordingSink();
    void env.client.openTerminal({ cols: 80, rows: 24 }, ['python3', 'main.py'], sink, 'run');
    await settle();
    const req = env.ws.lastRequest('term_open');
    expect(req).toEqual({ id: req.id, op: 'term_open', cols: 80, rows: 24, command: ['python3', 'main.py'], flow_window: FLOW_WINDOW_BYTES, purpose: 'run' });
  });

  it('delivers output in order and sends input and resizes', async () => {
    const { client, ws, log } = await openedTerminal();
    ws.frame({ kind: 'term_output', term: 4, seq: 2, data: bytes('ls') });
    ws.frame({ kind: 'term_output', term: 9, seq: 0, data: bytes('not ours') });
    client.input(4, 'ls\r');
    client.resize(4, 100, 30);
    expect(log).toEqual(['out 0 $ ', 'out 2 ls']);
    const input = ws.frames().find((f) => f.kind === 'term_input');
    expect(input).toEqual({ kind: 'term_input', term: 4, data: bytes('ls\r') });
    expect(ws.lastRequest()).toMatchObject({ op: 'term_resize', term: 4, cols: 100, rows: 30 });
  });

  it('resumes from the next expected seq after a reconnect, without duplicates', async () => {
    const { client, ws, log } = await openedTerminal();
    ws.frame({ kind: 'term_output', term: 4, seq: 2, data: bytes('abc') }); // next: 5
    ws.drop();
    client.input(4, 'typed while away');
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    const attach = ws2.lastRequest('term_attach');
    expect(attach).toEqual({ id: attach.id, op: 'term_attach', term: 4, from_seq: 5, flow_window: FLOW_WINDOW_BYTES });
    expect(ws2.frames()).toEqual([]); // input waits for the attachment
    ws2.respond(attach.id, { kind: 'term_attached', term: 4, cols: 80, rows: 24 });
    expect(ws2.frames()).toEqual([{ kind: 'term_input', term: 4, data: bytes('typed while away') }]);
    // Overlapping and repeated frames: only new bytes reach the sink.
    ws2.frame({ kind: 'term_output', term: 4, seq: 3, data: bytes('bcdef') });
    ws2.frame({ kind: 'term_output', term: 4, seq: 5, data: bytes('def') });
    ws2.frame({ kind: 'term_output', term: 4, seq: 8, data: bytes('g') });
    expect(log).toEqual(['out 0 $ ', 'out 2 abc', 'out 5 def', 'out 8 g']);
  });

  it('treats another runner instance after a reconnect as every terminal lost, never attaching by old id', async () => {
    const env = await connected();
    // The first socket's welcome had no instance in connected(); start over with one.
    env.ws.drop();
    await settle(1000);
    FakeWebSocket.last().open({ instance: 'run-1' } as never);
    const { log, sink } = recordingSink();
    const other = recordingSink();
    const p = env.client.openTerminal({ cols: 80, rows: 24 }, undefined, sink);
    await settle();
    const ws1 = FakeWebSocket.last();
    ws1.respond(ws1.lastRequest('term_open').id, { kind: 'term_opened', term: 1 });
    expect(await p).toBe(1);
    const attached = env.client.attachTerminal(2, 0, other.sink).catch((e: unknown) => e);
    ws1.respond(ws1.lastRequest('term_attach').id, { kind: 'term_attached', term: 2, cols: 80, rows: 24 });
    await settle();

    // The same runner again: terminals resume.
    ws1.drop();
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    ws2.open({ instance: 'run-1' } as never);
    expect(ws2.requests().filter((r) => r.op === 'term_attach').map((r) => r.term)).toEqual([1, 2]);
    expect(log).toEqual([]);
    expect(env.client.state).toBe('open');

    // A restarted runner: ids 1 and 2 may name someone else's new terminals.
    ws2.drop();
    await settle(1000);
    const ws3 = FakeWebSocket.last();
    const pendingAttach = env.client.attachTerminal(7, 0, recordingSink().sink).catch((e: unknown) => e);
    ws3.open({ instance: 'run-2' } as never);
    expect(ws3.requests().filter((r) => r.op === 'term_attach')).toEqual([]);
    expect(log).toEqual(['lost']);
    expect(other.log).toEqual(['lost']);
    expect(await pendingAttach).toMatchObject({ code: 'unknown_terminal' });
    expect(await attached).toEqual({ cols: 80, rows: 24 });
    expect(env.client.state).toBe('open');
    expect(env.client.instance).toBe('run-2');
  });

  it('re-sends a size changed while disconnected', async () => {
    const { client, ws } = await openedTerminal();
    ws.drop();
    client.resize(4, 120, 40);
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    expect(ws2.requests().some((r) => r.op === 'term_resize')).toBe(false);
    ws2.respond(ws2.lastRequest('term_attach').id, { kind: 'term_attached', term: 4, cols: 80, rows: 24 });
    expect(ws2.lastRequest()).toMatchObject({ op: 'term_resize', term: 4, cols: 120, rows: 40 });
  });

  it('hands a snapshot over and continues from its seq', async () => {
    const { client, ws } = await connected();
    const { log, sink } = recordingSink();
    const attached = client.attachTerminal(2, 0, sink);
    const req = ws.lastRequest('term_attach');
    expect(req).toMatchObject({ term: 2, from_seq: 0 });
    ws.respond(req.id, { kind: 'term_attached', term: 2, cols: 132, rows: 43 });
    expect(await attached).toEqual({ cols: 132, rows: 43 });
    ws.frame({ kind: 'term_snapshot', term: 2, seq: 5_000_000, data: bytes('\x1b[2Jscreen') });
    ws.frame({ kind: 'term_output', term: 2, seq: 4_999_990, data: bytes('old') });
    ws.frame({ kind: 'term_output', term: 2, seq: 5_000_000, data: bytes('new') });
    expect(log).toEqual(['snap 5000000 \x1b[2Jscreen', 'out 5000000 new']);
    // The ack for the snapshot's seq releases it on the runner.
    client.ack(2, 5_000_000);
    expect(ws.frames()).toEqual([{ kind: 'term_ack', term: 2, seq: 5_000_000 }]);
  });

  it('sends acks forward only, and again after a reconnect', async () => {
    const { client, ws } = await openedTerminal();
    client.ack(4, 65536);
    client.ack(4, 65536);
    client.ack(4, 100);
    client.ack(4, 131072);
    client.ack(99, 10); // not attached: nothing
    expect(ws.frames()).toEqual([
      { kind: 'term_ack', term: 4, seq: 65536 },
      { kind: 'term_ack', term: 4, seq: 131072 },
    ]);
    ws.drop();
    client.ack(4, 200000); // while down: nothing to send it on
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    client.ack(4, 200000); // still attaching
    ws2.respond(ws2.lastRequest('term_attach').id, { kind: 'term_attached', term: 4, cols: 80, rows: 24 });
    client.ack(4, 131072); // the new attachment has a fresh window
    expect(ws2.frames()).toEqual([{ kind: 'term_ack', term: 4, seq: 131072 }]);
  });

  it('tells the sink when the process exits, and does not re-attach it', async () => {
    const { ws, log } = await openedTerminal();
    ws.event({ event: 'term_exited', term: 4 });
    expect(log).toContain('exited null');
    ws.drop();
    await settle(1000);
    FakeWebSocket.last().open();
    expect(FakeWebSocket.last().requests().filter((r) => r.op === 'term_attach')).toEqual([]);
  });

  it('reports exit codes', async () => {
    const { ws, log } = await openedTerminal();
    ws.event({ event: 'term_exited', term: 4, code: 3 });
    expect(log[log.length - 1]).toBe('exited 3');
  });

  it('says a terminal is lost when the runner no longer knows it', async () => {
    const { ws, log } = await openedTerminal();
    ws.drop();
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    ws2.message({ type: 'error', id: ws2.lastRequest('term_attach').id, code: 'unknown_terminal', message: 'no terminal 4' });
    expect(log[log.length - 1]).toBe('lost');
  });

  it('attaches a terminal asked for while disconnected once connected', async () => {
    const { client, ws } = await connected();
    ws.drop();
    const { sink } = recordingSink();
    const attached = client.attachTerminal(7, 0, sink);
    await settle(1000);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    const attaches = ws2.requests().filter((r) => r.op === 'term_attach');
    expect(attaches).toHaveLength(1);
    ws2.respond(attaches[0]!.id, { kind: 'term_attached', term: 7, cols: 80, rows: 24 });
    await expect(attached).resolves.toEqual({ cols: 80, rows: 24 });
  });

  it('closes and detaches', async () => {
    const { client, ws, log } = await openedTerminal();
    const closed = client.closeTerminal(4);
    await settle();
    ws.respond(ws.lastRequest('term_close').id, { kind: 'done' });
    await closed;
    ws.frame({ kind: 'term_output', term: 4, seq: 2, data: bytes('late') });
    expect(log).toEqual(['out 0 $ ']);
    client.detachTerminal(5);
    expect(ws.lastRequest()).toMatchObject({ op: 'term_detach', term: 5 });
  });

  it('splits a huge paste into frames below the frame limit', async () => {
    const { client, ws } = await openedTerminal();
    client.input(4, new Uint8Array(200 * 1024));
    const sizes = ws.frames().map((f) => (f.kind === 'term_input' ? f.data.length : -1));
    expect(sizes).toEqual([65536, 65536, 65536, 8192]);
  });
});
