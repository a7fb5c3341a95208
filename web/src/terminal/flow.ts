// Flow control for one terminal, client side (proto/PROTOCOL.md, flow
// control): the runner sends at most FLOW_WINDOW_BYTES beyond our last ack,
// and we ack once xterm.js has *parsed* the bytes (its write callback), every
// ACK_STEP_BYTES. So xterm never holds more than the window unparsed, and
// Ctrl-C under `yes` takes effect within one window's parse time.

export const ACK_STEP_BYTES = 64 * 1024;

export class AckTracker {
  private lastAcked = 0;

  constructor(private readonly step = ACK_STEP_BYTES) {}

  /** xterm.js parsed every byte below `endSeq`: the seq to ack now, or null
   * when it is not yet worth a frame. */
  parsed(endSeq: number): number | null {
    if (endSeq - this.lastAcked < this.step) return null;
    this.lastAcked = endSeq;
    return endSeq;
  }

  /** A snapshot current at `seq` was parsed: always acked, since the runner
   * counts the snapshot's bytes in the window until it hears of it. */
  snapshotParsed(seq: number): number {
    this.lastAcked = seq;
    return seq;
  }
}
