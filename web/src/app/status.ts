// The status bar's words, from plain data (pure, tested).

import type { ConnectionState } from '../protocol/client';
import type { StorageStatus } from '../protocol/generated';

/** The editor's aggregate save state (web/src/editor owns the values). */
export type SaveStateView =
  | { kind: 'clean' }
  | { kind: 'dirty'; count: number }
  | { kind: 'saving'; count: number }
  | { kind: 'saved' }
  | { kind: 'error'; message: string };

export function connectionText(state: ConnectionState | 'starting', lastError?: string): { text: string; tone: 'ok' | 'warn' | 'bad' } {
  switch (state) {
    case 'starting':
      return { text: 'starting…', tone: 'warn' };
    case 'connecting':
      return { text: 'connecting…', tone: 'warn' };
    case 'open':
      return { text: 'connected', tone: 'ok' };
    case 'reconnecting':
      return { text: lastError ? `reconnecting… (${lastError})` : 'reconnecting…', tone: 'bad' };
    case 'closed':
      return { text: 'disconnected', tone: 'bad' };
  }
}

/** Fields a newer runner adds to StorageStatus (PROTOCOL.md); absent from an older one. */
interface StorageProgress {
  drain_rate?: number;
}

function plural(n: number, one: string, many: string): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}

/**
 * Storage health and the backlog on its way there (a program writing 50,000
 * files, the persister catching up). The user's own saves are the editor's
 * business (saveText): this says what the runner still owes storage.
 */
export function storageText(status: StorageStatus | null): { text: string; tone: 'ok' | 'warn' | 'bad'; title: string } {
  if (status === null) return { text: 'storage: …', tone: 'warn', title: 'Waiting for the runner' };
  if (!status.healthy) {
    return {
      text: `storage down: ${status.pending.toLocaleString('en-US')} pending`,
      tone: 'bad',
      title: `Changes wait until storage is back; nothing is lost${status.last_error ? `. Last error: ${status.last_error}` : ''}`,
    };
  }
  if (status.pending > 0) {
    const rate = (status as StorageStatus & StorageProgress).drain_rate;
    const perSecond = typeof rate === 'number' && rate > 0 ? ` (${rate >= 10 ? Math.round(rate).toLocaleString('en-US') : rate.toFixed(1)}/s)` : '';
    const eta = typeof rate === 'number' && rate > 0 ? `, about ${formatEta(status.pending / rate)} left` : '';
    return {
      text: `saving ${plural(status.pending, 'file', 'files')}…${perSecond}`,
      tone: 'warn',
      title: `Changes on their way to storage${eta}`,
    };
  }
  return { text: 'storage: ok', tone: 'ok', title: 'Every change is in storage' };
}

function formatEta(seconds: number): string {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function saveText(s: SaveStateView): { text: string; tone: 'ok' | 'warn' | 'bad' | 'none' } {
  switch (s.kind) {
    case 'clean':
      return { text: '', tone: 'none' };
    case 'dirty':
      return { text: s.count === 1 ? '1 unsaved file' : `${s.count} unsaved files`, tone: 'warn' };
    case 'saving':
      return { text: s.count === 1 ? 'saving…' : `saving ${s.count} files…`, tone: 'warn' };
    case 'saved':
      return { text: 'saved', tone: 'ok' };
    case 'error':
      return { text: `save failed: ${s.message}`, tone: 'bad' };
  }
}
