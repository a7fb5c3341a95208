import { describe, expect, it } from 'vitest';
import type { StorageStatus } from '../protocol/generated';
import { connectionText, saveText, storageText } from './status';

/** A status with only the fields a test names (the rest as an idle runner's). */
const storage = (s: Partial<StorageStatus> & { healthy: boolean; pending: number }): StorageStatus =>
  ({ saves_pending: 0, drain_rate: 0, skipped: 0, skipped_changes: [], ...s }) as StorageStatus;

describe('status bar words', () => {
  it('says how the connection is', () => {
    expect(connectionText('open').text).toBe('connected');
    expect(connectionText('connecting').text).toBe('connecting…');
    expect(connectionText('reconnecting').text).toBe('reconnecting…');
    expect(connectionText('reconnecting', 'connection closed (1006)').text).toBe('reconnecting… (connection closed (1006))');
  });

  it('says how storage is', () => {
    expect(storageText(storage({ healthy: true, pending: 0 })).text).toBe('storage: ok');
    expect(storageText(storage({ healthy: false, pending: 3, last_error: 'timeout' }))).toMatchObject({ text: 'storage down: 3 pending', tone: 'bad' });
    expect(storageText(storage({ healthy: true, pending: 2 })).text).toBe('saving 2 files…');
    expect(storageText(storage({ healthy: true, pending: 1 })).text).toBe('saving 1 file…');
    const busy = storageText(storage({ healthy: true, pending: 23356, drain_rate: 812.4 }));
    expect(busy).toMatchObject({ text: 'saving 23,356 files… (812/s)', tone: 'warn' });
    expect(busy.title).toContain('about 29 s left');
    expect(storageText(storage({ healthy: true, pending: 3, drain_rate: 0.5 })).text).toBe('saving 3 files… (0.5/s)');
    // An older runner without the rate: just the count.
    expect(storageText({ healthy: true, pending: 4 } as StorageStatus).text).toBe('saving 4 files…');
    expect(storageText(storage({ healthy: false, pending: 23356 })).text).toBe('storage down: 23,356 pending');
    expect(storageText(null).tone).toBe('warn');
  });

  it('says how saves are', () => {
    expect(saveText({ kind: 'saved' }).text).toBe('saved');
    expect(saveText({ kind: 'dirty', count: 2 }).text).toBe('2 unsaved files');
    expect(saveText({ kind: 'saving', count: 1 }).text).toBe('saving…');
    expect(saveText({ kind: 'error', message: 'conflict' }).text).toBe('save failed: conflict');
  });
});
