// Binary frames of the runner protocol (proto/PROTOCOL.md, "Binary frames"):
// one byte of kind, a fixed big-endian header, then payload to the end of the
// message. Mirrors proto/src/frame.rs; kind 0x05 is the terminal
// acknowledgement of the flow-control scheme.

export const FRAME_TERM_OUTPUT = 0x01;
export const FRAME_TERM_INPUT = 0x02;
export const FRAME_TERM_SNAPSHOT = 0x03;
export const FRAME_FILE_CHUNK = 0x04;
export const FRAME_TERM_ACK = 0x05;

export type Frame =
  | { kind: 'term_output'; term: number; seq: number; data: Uint8Array }
  | { kind: 'term_input'; term: number; data: Uint8Array }
  | { kind: 'term_snapshot'; term: number; seq: number; data: Uint8Array }
  | { kind: 'file_chunk'; transfer: number; offset: number; data: Uint8Array }
  | { kind: 'term_ack'; term: number; seq: number };

export class FrameError extends Error {
  override name = 'FrameError';
}

const HEADER_BYTES: Record<number, number> = {
  [FRAME_TERM_OUTPUT]: 1 + 4 + 8,
  [FRAME_TERM_INPUT]: 1 + 4,
  [FRAME_TERM_SNAPSHOT]: 1 + 4 + 8,
  [FRAME_FILE_CHUNK]: 1 + 8 + 8,
  [FRAME_TERM_ACK]: 1 + 4 + 8,
};

/** Offsets and sequence numbers are u64 on the wire; above 2^53 a JS number
 * would lose bytes silently, so refuse instead (no terminal or file gets
 * anywhere near 8 PiB). */
function u64ToNumber(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FrameError(`u64 value ${value} does not fit a JavaScript number`);
  }
  return Number(value);
}

function hex(kind: number): string {
  return `0x${kind.toString(16).padStart(2, '0')}`;
}

/** Parses one binary WebSocket message. The payload is a view into the
 * message, not a copy. */
export function decodeFrame(message: ArrayBuffer | Uint8Array): Frame {
  const bytes = message instanceof Uint8Array ? message : new Uint8Array(message);
  if (bytes.length === 0) throw new FrameError('empty binary frame');
  const kind = bytes[0] as number;
  const header = HEADER_BYTES[kind];
  if (header === undefined) {
    throw new FrameError(`unknown binary frame kind ${hex(kind)}`);
  }
  if (bytes.length < header) {
    throw new FrameError(`binary frame of kind ${hex(kind)} is shorter than its ${header}-byte header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const data = bytes.subarray(header);
  switch (kind) {
    case FRAME_TERM_OUTPUT:
      return { kind: 'term_output', term: view.getUint32(1), seq: u64ToNumber(view.getBigUint64(5)), data };
    case FRAME_TERM_SNAPSHOT:
      return { kind: 'term_snapshot', term: view.getUint32(1), seq: u64ToNumber(view.getBigUint64(5)), data };
    case FRAME_TERM_INPUT:
      return { kind: 'term_input', term: view.getUint32(1), data };
    case FRAME_TERM_ACK:
      return { kind: 'term_ack', term: view.getUint32(1), seq: u64ToNumber(view.getBigUint64(5)) };
    default:
      return {
        kind: 'file_chunk',
        transfer: u64ToNumber(view.getBigUint64(1)),
        offset: u64ToNumber(view.getBigUint64(9)),
        data,
      };
  }
}

function frameWithHeader(kind: number, payloadLength: number): { out: Uint8Array; view: DataView } {
  const header = HEADER_BYTES[kind] as number;
  const out = new Uint8Array(header + payloadLength);
  out[0] = kind;
  return { out, view: new DataView(out.buffer) };
}

export function encodeTermInput(term: number, data: Uint8Array): Uint8Array {
  const { out, view } = frameWithHeader(FRAME_TERM_INPUT, data.length);
  view.setUint32(1, term);
  out.set(data, 5);
  return out;
}

export function encodeTermAck(term: number, seq: number): Uint8Array {
  const { out, view } = frameWithHeader(FRAME_TERM_ACK, 0);
  view.setUint32(1, term);
  view.setBigUint64(5, BigInt(seq));
  return out;
}

export function encodeFileChunk(transfer: number, offset: number, data: Uint8Array): Uint8Array {
  const { out, view } = frameWithHeader(FRAME_FILE_CHUNK, data.length);
  view.setBigUint64(1, BigInt(transfer));
  view.setBigUint64(9, BigInt(offset));
  out.set(data, 17);
  return out;
}

/** Encodes any frame; the runner-to-client kinds are here for tests and fake
 * runners. */
export function encodeFrame(frame: Frame): Uint8Array {
  switch (frame.kind) {
    case 'term_input':
      return encodeTermInput(frame.term, frame.data);
    case 'term_ack':
      return encodeTermAck(frame.term, frame.seq);
    case 'file_chunk':
      return encodeFileChunk(frame.transfer, frame.offset, frame.data);
    case 'term_output':
    case 'term_snapshot': {
      const kind = frame.kind === 'term_output' ? FRAME_TERM_OUTPUT : FRAME_TERM_SNAPSHOT;
      const { out, view } = frameWithHeader(kind, frame.data.length);
      view.setUint32(1, frame.term);
      view.setBigUint64(5, BigInt(frame.seq));
      out.set(frame.data, 13);
      return out;
    }
  }
}
