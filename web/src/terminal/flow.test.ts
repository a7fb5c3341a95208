import { describe, expect, it } from 'vitest';
import { ACK_STEP_BYTES, AckTracker } from './flow';

describe('AckTracker', () => {
  it('acks every 64 KiB of parsed output', () => {
    const t = new AckTracker();
    expect(t.parsed(1000)).toBeNull();
    expect(t.parsed(ACK_STEP_BYTES - 1)).toBeNull();
    expect(t.parsed(ACK_STEP_BYTES + 10)).toBe(ACK_STEP_BYTES + 10);
    expect(t.parsed(ACK_STEP_BYTES + 20)).toBeNull();
    expect(t.parsed(2 * ACK_STEP_BYTES + 10)).toBe(2 * ACK_STEP_BYTES + 10);
  });

  it('always acks a snapshot and counts from it', () => {
    const t = new AckTracker();
    expect(t.snapshotParsed(5_000_000)).toBe(5_000_000);
    expect(t.parsed(5_000_100)).toBeNull();
    expect(t.parsed(5_000_000 + ACK_STEP_BYTES)).toBe(5_000_000 + ACK_STEP_BYTES);
  });

  it('never lets the runner run dry: unacked parsed bytes stay below the window', () => {
    const t = new AckTracker();
    let acked = 0;
    for (let end = 100; end < 10_000_000; end += 4096 + 7) {
      const a = t.parsed(end);
      if (a !== null) acked = a;
      expect(end - acked).toBeLessThan(ACK_STEP_BYTES);
    }
  });
});
