import { describe, expect, it } from 'vitest';
import type { TermInfo } from '../protocol/generated';
import { endedNotice, initialTerminals, terminalsReducer, type TerminalsAction, type TerminalsEffect, type TerminalsState } from './tabs';

function run(actions: TerminalsAction[], state: TerminalsState = initialTerminals()): [TerminalsState, TerminalsEffect[]] {
  let effects: TerminalsEffect[] = [];
  for (const a of actions) [state, effects] = terminalsReducer(state, a);
  return [state, effects];
}

const info = (term: number, exited?: number | null, purpose: 'shell' | 'run' = 'shell'): TermInfo =>
  exited === undefined ? { term, cols: 80, rows: 24, seq: 100, attached_clients: 0, purpose } : { term, cols: 80, rows: 24, seq: 100, attached_clients: 0, exited, purpose };

describe('terminal tabs', () => {
  it('opens a shell when the runner has none', () => {
    const [state, effects] = run([{ kind: 'restore', terms: [info(1, 0)] }]);
    expect(state.tabs).toMatchObject([{ title: 'Terminal 1', role: 'shell', status: { kind: 'opening' } }]);
    expect(effects).toEqual([
      { kind: 'open', key: 1, epoch: 1 },
      { kind: 'show', key: 1 },
    ]);
  });

  it('re-creates a tab per running terminal after a reload, the Run one (by its purpose) included', () => {
    const [state, effects] = run([{ kind: 'restore', terms: [info(5, undefined, 'run'), info(2), info(3, null)] }]);
    expect(state.tabs.map((t) => [t.term, t.title, t.role])).toEqual([
      [2, 'Terminal 1', 'shell'],
      [5, 'Run', 'run'],
    ]);
    expect(effects).toEqual([
      { kind: 'attach', key: 1, epoch: 1, term: 2 },
      { kind: 'attach', key: 2, epoch: 1, term: 5 },
      { kind: 'show', key: 1 },
    ]);
    expect(state.active).toBe(1);
  });

  it('shows the newest live run as the Run tab, an older one (two clients racing) as a plain tab', () => {
    const [state] = run([{ kind: 'restore', terms: [info(4, undefined, 'run'), info(7, undefined, 'run'), info(9, 0, 'run')] }]);
    expect(state.tabs.map((t) => [t.term, t.title, t.role])).toEqual([
      [4, 'Terminal 1', 'shell'],
      [7, 'Run', 'run'],
    ]);
  });

  it('runs in a dedicated tab, and a second run replaces the first', () => {
    let [state, effects] = run([{ kind: 'new_shell' }, { kind: 'opened', key: 1, epoch: 1, term: 1 }, { kind: 'run', command: ['python3', 'main.py'], end: [] }]);
    expect(effects).toEqual([
      { kind: 'open', key: 2, epoch: 1, command: ['python3', 'main.py'] },
      { kind: 'show', key: 2 },
    ]);
    [state, effects] = run([{ kind: 'opened', key: 2, epoch: 1, term: 7 }], state);
    expect(effects).toEqual([]);
    [state, effects] = run([{ kind: 'activate', key: 1 }, { kind: 'run', command: ['python3', 'main.py'], end: [] }], state);
    expect(state.active).toBe(2);
    expect(effects).toEqual([
      { kind: 'replace', key: 2, epoch: 2, oldTerms: [7], command: ['python3', 'main.py'] },
      { kind: 'show', key: 2 },
    ]);
    // The first run's exit arrives late: it does not end the second.
    [state] = run([{ kind: 'exited', key: 2, epoch: 1, code: 143 }, { kind: 'opened', key: 2, epoch: 2, term: 8 }], state);
    expect(state.tabs[1]).toMatchObject({ term: 8, status: { kind: 'live' }, epoch: 2 });
  });

  it('runs again without closing anything when the last run ended', () => {
    const [, effects] = run([
      { kind: 'run', command: ['npm', 'start'], end: [] },
      { kind: 'opened', key: 1, epoch: 1, term: 3 },
      { kind: 'exited', key: 1, epoch: 1, code: 0 },
      { kind: 'run', command: ['npm', 'start'], end: [] },
    ]);
    expect(effects[0]).toEqual({ kind: 'open', key: 1, epoch: 2, command: ['npm', 'start'] });
  });

  it('ends the runs other clients started before this one starts, in a new Run tab or the existing one', () => {
    let [state, effects] = run([{ kind: 'run', command: ['npm', 'start'], end: [5] }]);
    expect(effects[0]).toEqual({ kind: 'replace', key: 1, epoch: 1, oldTerms: [5], command: ['npm', 'start'] });
    [state, effects] = run([{ kind: 'opened', key: 1, epoch: 1, term: 8 }, { kind: 'run', command: ['npm', 'start'], end: [9, 8] }], state);
    expect(effects[0]).toEqual({ kind: 'replace', key: 1, epoch: 2, oldTerms: [8, 9], command: ['npm', 'start'] });
  });

  it('a Run tab whose run ended follows the newer run another client started', () => {
    let [state, effects] = run([
      { kind: 'run', command: ['npm', 'start'], end: [] },
      { kind: 'opened', key: 1, epoch: 1, term: 3 },
      { kind: 'exited', key: 1, epoch: 1, code: null },
      { kind: 'follow', key: 1, epoch: 1, term: 4 },
    ]);
    expect(effects).toEqual([{ kind: 'attach', key: 1, epoch: 2, term: 4 }]);
    expect(state.tabs[0]).toMatchObject({ term: 4, role: 'run', status: { kind: 'attaching' } });
    // A stale follow (the tab has moved on), or one for a live tab: nothing.
    [state, effects] = run([{ kind: 'follow', key: 1, epoch: 1, term: 6 }], state);
    expect(effects).toEqual([]);
    [state, effects] = run([{ kind: 'attached', key: 1, epoch: 2 }, { kind: 'follow', key: 1, epoch: 2, term: 6 }], state);
    expect(effects).toEqual([]);
    expect(state.tabs[0]?.term).toBe(4);
  });

  it('closes a tab: ends its terminal, and the neighbour becomes active', () => {
    const [state, effects] = run([
      { kind: 'new_shell' },
      { kind: 'opened', key: 1, epoch: 1, term: 1 },
      { kind: 'new_shell' },
      { kind: 'opened', key: 2, epoch: 1, term: 2 },
      { kind: 'new_shell' },
      { kind: 'activate', key: 2 },
      { kind: 'close', key: 2 },
    ]);
    expect(state.tabs.map((t) => t.title)).toEqual(['Terminal 1', 'Terminal 3']);
    expect(state.active).toBe(3);
    expect(effects).toEqual([
      { kind: 'dispose_view', key: 2 },
      { kind: 'close_term', term: 2 },
      { kind: 'show', key: 3 },
    ]);
  });

  it('does not close an ended terminal again', () => {
    const [, effects] = run([{ kind: 'new_shell' }, { kind: 'opened', key: 1, epoch: 1, term: 1 }, { kind: 'exited', key: 1, epoch: 1, code: 0 }, { kind: 'close', key: 1 }]);
    expect(effects).toEqual([{ kind: 'dispose_view', key: 1 }]);
  });

  it('closes a terminal whose tab went away while it was opening', () => {
    const [, effects] = run([{ kind: 'new_shell' }, { kind: 'close', key: 1 }, { kind: 'opened', key: 1, epoch: 1, term: 4 }]);
    expect(effects).toEqual([{ kind: 'close_term', term: 4 }]);
  });

  it('offers a new terminal in an ended or lost tab', () => {
    let [state, effects] = run([{ kind: 'new_shell' }, { kind: 'opened', key: 1, epoch: 1, term: 1 }, { kind: 'restart', key: 1 }]);
    expect(effects).toEqual([]); // still running: nothing to restart
    [state, effects] = run([{ kind: 'lost', key: 1, epoch: 1 }, { kind: 'restart', key: 1 }], state);
    expect(effects[0]).toEqual({ kind: 'open', key: 1, epoch: 2 });
    expect(state.tabs[0]?.status).toEqual({ kind: 'opening' });
  });

  it('words the end of a terminal', () => {
    expect(endedNotice({ kind: 'exited', code: 2 })).toBe('[process exited with code 2]');
    expect(endedNotice({ kind: 'exited', code: null })).toBe('[process ended by a signal]');
    expect(endedNotice({ kind: 'lost' })).toBe('[terminal ended: the sandbox restarted]');
    expect(endedNotice({ kind: 'live' })).toBeNull();
  });
});
