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

export function storageText(status: StorageStatus | null): { text: string; tone: 'ok' | 'warn' | 'bad'; title: string } {
  if (status === null) return { text: 'storage: …', tone: 'warn', title: 'Waiting for the runner' };
  if (!status.healthy) {
    return {
      text: `storage down: ${status.pending} pending`,
      tone: 'bad',
      title: `Saves wait until storage is back${status.last_error ? `: ${status.last_error}` : ''}`,
    };
  }
  if (status.pending > 0) return { text: `storage: ${status.pending} pending`, tone: 'warn', title: 'Changes on their way to storage' };
  return { text: 'storage: ok', tone: 'ok', title: 'Every change is in storage' };
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
