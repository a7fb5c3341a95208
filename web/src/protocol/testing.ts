// A fake WebSocket with a scriptable runner side, for unit tests of the
// protocol client and of the panes that use it.

import { decodeFrame, encodeFrame, type Frame } from './frames';
import type { Event, Reply, ServerMessage } from './generated';

type Handler = ((ev: unknown) => void) | null;

export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  static reset(): void {
    FakeWebSocket.instances = [];
  }
  static last(): FakeWebSocket {
    const ws = FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    if (ws === undefined) throw new Error('no socket was created');
    return ws;
  }

  readyState = 0;
  bufferedAmount = 0;
  binaryType = 'blob';
  readonly sent: Array<string | Uint8Array> = [];
  closedByClient: number | undefined;
  /** When set, binary sends pile up in bufferedAmount (a slow network) until
   * the test drains it. */
  accumulate = false;
  onopen: Handler = null;
  onmessage: Handler = null;
  onclose: Handler = null;
  onerror: Handler = null;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeWebSocket.instances.push(this);
  }

  send(data: string | Uint8Array): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(typeof data === 'string' ? data : data.slice());
    if (this.accumulate) this.bufferedAmount += typeof data === 'string' ? data.length : data.byteLength;
  }

  close(code = 1000): void {
    this.closedByClient = code;
    this.readyState = 3;
  }

  // ---- the runner's side ----

  open(welcome: Partial<Extract<Event, { event: 'welcome' }>> = {}): void {
    this.readyState = 1;
    this.onopen?.({});
    // (cast: fields a runner adds to `welcome`, e.g. `instance`, stay optional here)
    this.event({
      event: 'welcome',
      protocol: 1,
      project: 'alpha',
      max_file_size: 1 << 30,
      max_frame_size: 1048640,
      ...welcome,
    } as Event);
  }

  message(message: ServerMessage): void {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  event(event: Event): void {
    this.message({ type: 'event', ...event });
  }

  respond(id: number, result: Reply): void {
    this.message({ type: 'response', id, result });
  }

  frame(frame: Frame): void {
    const bytes = encodeFrame(frame);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  /** The connection breaks (not closed by the client). */
  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }

  /** JSON requests the client sent, in order. */
  requests(): Array<{ id: number; op: string } & Record<string, unknown>> {
    return this.sent
      .filter((m): m is string => typeof m === 'string')
      .map((m) => JSON.parse(m) as { id: number; op: string } & Record<string, unknown>);
  }

  lastRequest(op?: string): { id: number; op: string } & Record<string, unknown> {
    const all = this.requests().filter((r) => op === undefined || r.op === op);
    const r = all[all.length - 1];
    if (r === undefined) throw new Error(`no ${op ?? ''} request was sent`);
    return r;
  }

  /** Binary frames the client sent, decoded. */
  frames(): Frame[] {
    return this.sent.filter((m): m is Uint8Array => typeof m !== 'string').map((m) => decodeFrame(m));
  }
}
