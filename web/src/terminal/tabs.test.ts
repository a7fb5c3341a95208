import { describe, expect, it } from 'vitest';
import type { TermInfo } from '../protocol/generated';
import { endedNotice, initialTerminals, terminalsReducer, type TerminalsAction, type TerminalsEffect, type TerminalsState } from './tabs';

function run(actions: TerminalsAction[], state: TerminalsState = initialTerminals()): [TerminalsState, TerminalsEffect[]] {
  let effects: TerminalsEffect[] = [];
  for (const a of actions) [state, effects] = terminalsReducer(state, a);
  return [state, effects];
}

const info = (term: number, exited?: number | null): TermInfo =>
  exited === undefined ? { term, cols: 80, rows: 24, seq: 100, attached_clients: 0 } : { term, cols: 80, rows: 24, seq: 100, attached_clients: 0, exited };

describe('terminal tabs', () => {
  it('opens a shell when the runner has none', () => {
    const [state, effects] = run([{ kind: 'restore', terms: [info(1, 0)], runTerm: null }]);
    expect(state.tabs).toMatchObject([{ title: 'Terminal 1', role: 'shell', status: { kind: 'opening' } }]);
    expect(effects).toEqual([
      { kind: 'open', key: 1, epoch: 1 },
      { kind: 'show', key: 1 },
    ]);
  });

  it('re-creates a tab per running terminal after a reload, the Run one included', () => {
    const [state, effects] = run([{ kind: 'restore', terms: [info(5), info(2), info(3, null)], runTerm: 5 }]);
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

  it('forgets a remembered Run terminal that is gone', () => {
    const [, effects] = run([{ kind: 'restore', terms: [info(2)], runTerm: 9 }]);
    expect(effects).toContainEqual({ kind: 'remember_run', term: null });
  });

  it('runs in a dedicated tab, and a second run replaces the first', () => {
    let [state, effects] = run([{ kind: 'new_shell' }, { kind: 'opened', key: 1, epoch: 1, term: 1 }, { kind: 'run', command: ['python3', 'main.py'] }]);
    expect(effects).toEqual([
      { kind: 'open', key: 2, epoch: 1, command: ['python3', 'main.py'] },
      { kind: 'show', key: 2 },
    ]);
    [state, effects] = run([{ kind: 'opened', key: 2, epoch: 1, term: 7 }], state);
    expect(effects).toEqual([{ kind: 'remember_run', term: 7 }]);
    [state, effects] = run([{ kind: 'activate', key: 1 }, { kind: 'run', command: ['python3', 'main.py'] }], state);
    expect(state.active).toBe(2);
    expect(effects).toEqual([
      { kind: 'replace', key: 2, epoch: 2, oldTerm: 7, command: ['python3', 'main.py'] },
      { kind: 'show', key: 2 },
    ]);
    // The first run's exit arrives late: it does not end the second.
    [state] = run([{ kind: 'exited', key: 2, epoch: 1, code: 143 }, { kind: 'opened', key: 2, epoch: 2, term: 8 }], state);
    expect(state.tabs[1]).toMatchObject({ term: 8, status: { kind: 'live' }, epoch: 2 });
  });

  it('runs again without closing anything when the last run ended', () => {
    const [, effects] = run([
      { kind: 'run', command: ['npm', 'start'] },
      { kind: 'opened', key: 1, epoch: 1, term: 3 },
      { kind: 'exited', key: 1, epoch: 1, code: 0 },
      { kind: 'run', command: ['npm', 'start'] },
    ]);
    expect(effects[0]).toEqual({ kind: 'open', key: 1, epoch: 2, command: ['npm', 'start'] });
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
