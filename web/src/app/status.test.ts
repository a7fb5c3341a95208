import { describe, expect, it } from 'vitest';
import { connectionText, saveText, storageText } from './status';

describe('status bar words', () => {
  it('says how the connection is', () => {
    expect(connectionText('open').text).toBe('connected');
    expect(connectionText('connecting').text).toBe('connecting…');
    expect(connectionText('reconnecting').text).toBe('reconnecting…');
    expect(connectionText('reconnecting', 'connection closed (1006)').text).toBe('reconnecting… (connection closed (1006))');
  });

  it('says how storage is', () => {
    expect(storageText({ healthy: true, pending: 0 }).text).toBe('storage: ok');
    expect(storageText({ healthy: false, pending: 3, last_error: 'timeout' })).toMatchObject({ text: 'storage down: 3 pending', tone: 'bad' });
    expect(storageText({ healthy: true, pending: 2 }).text).toBe('storage: 2 pending');
    expect(storageText(null).tone).toBe('warn');
  });

  it('says how saves are', () => {
    expect(saveText({ kind: 'saved' }).text).toBe('saved');
    expect(saveText({ kind: 'dirty', count: 2 }).text).toBe('2 unsaved files');
    expect(saveText({ kind: 'saving', count: 1 }).text).toBe('saving…');
    expect(saveText({ kind: 'error', message: 'conflict' }).text).toBe('save failed: conflict');
  });
});
