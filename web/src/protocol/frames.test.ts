import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, encodeTermAck, FrameError, type Frame } from './frames';

describe('frames', () => {
  it('round-trips every kind', () => {
    const frames: Frame[] = [
      { kind: 'term_output', term: 3, seq: 2 ** 40 + 7, data: new TextEncoder().encode('\x1b[31mhi') },
      { kind: 'term_input', term: 0, data: new TextEncoder().encode('ls\r') },
      { kind: 'term_snapshot', term: 9, seq: 42, data: new Uint8Array(0) },
      { kind: 'file_chunk', transfer: 77, offset: 2 ** 40, data: new Uint8Array([0, 255, 10, 13]) },
      { kind: 'term_ack', term: 7, seq: Number.MAX_SAFE_INTEGER },
    ];
    for (const frame of frames) expect(decodeFrame(encodeFrame(frame))).toEqual(frame);
  });

  it('writes the ack exactly as proto/src/frame.rs does', () => {
    // term 0x01020304, seq 0x0011223344556677 (a u64 that fits a JS number).
    const wire = encodeTermAck(0x01020304, 0x0011_2233_4455_6677);
    expect([...wire]).toEqual([5, 1, 2, 3, 4, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
  });

  it('decodes big-endian headers and keeps the payload as a view', () => {
    const wire = new Uint8Array([1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 104, 105]);
    const frame = decodeFrame(wire);
    expect(frame).toEqual({ kind: 'term_output', term: 2, seq: 256, data: new Uint8Array([104, 105]) });
    if (frame.kind === 'term_output') expect(frame.data.buffer).toBe(wire.buffer);
  });

  it('refuses malformed frames', () => {
    expect(() => decodeFrame(new Uint8Array(0))).toThrow(FrameError);
    expect(() => decodeFrame(new Uint8Array([9, 0, 0]))).toThrow(/unknown binary frame kind 0x09/);
    expect(() => decodeFrame(new Uint8Array([4, 0, 1]))).toThrow(/0x04 is shorter than its 17-byte header/);
    const huge = new Uint8Array(13);
    huge[0] = 1;
    huge[5] = 0xff;
    expect(() => decodeFrame(huge)).toThrow(/does not fit/);
  });
});
