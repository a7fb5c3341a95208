// The terminal pane's state: its tabs and what each shows. Pure: the view
// (index.ts) runs the effects (xterm.js instances, protocol calls) and feeds
// their outcomes back as actions.
//
// Every (re)start of a tab bumps its `epoch`; outcomes carry the epoch they
// belong to, so the late `exited` of a terminal that a second Run just
// replaced cannot mark the new one as ended.

import type { TermInfo } from '../protocol/generated';
import { currentRun } from './run';

export type TabRole = 'shell' | 'run';

export type TabStatus =
  | { kind: 'opening' }
  | { kind: 'attaching' }
  | { kind: 'live' }
  | { kind: 'exited'; code: number | null }
  | { kind: 'lost' }
  | { kind: 'failed'; message: string };

export interface TerminalTab {
  /** Stable for the tab's life (the runner's term id changes on a re-run). */
  key: number;
  term: number | null;
  role: TabRole;
  title: string;
  status: TabStatus;
  epoch: number;
}

export interface TerminalsState {
  tabs: TerminalTab[];
  active: number | null;
  nextKey: number;
  /** Numbers shells "Terminal 1", "Terminal 2", ... */
  shellsOpened: number;
}

export type TerminalsAction =
  /** After a page load: the runner's terminals (the newest live one whose
   * purpose is run is the Run tab). */
  | { kind: 'restore'; terms: TermInfo[] }
  | { kind: 'new_shell' }
  /** `end`: other clients' live runs, ended before this one starts. */
  | { kind: 'run'; command: string[]; end: number[] }
  /** The Run tab's run ended and another client's newer run replaced it. */
  | { kind: 'follow'; key: number; epoch: number; term: number }
  | { kind: 'opened'; key: number; epoch: number; term: number }
  | { kind: 'attached'; key: number; epoch: number }
  | { kind: 'failed'; key: number; epoch: number; message: string }
  | { kind: 'exited'; key: number; epoch: number; code: number | null }
  | { kind: 'lost'; key: number; epoch: number }
  /** "Start a new one" in an ended tab: a shell again, or the run again. */
  | { kind: 'restart'; key: number; command?: string[] }
  | { kind: 'close'; key: number }
  | { kind: 'activate'; key: number };

export type TerminalsEffect =
  /** Create (or reset) the tab's emulator and open a terminal on the runner. */
  | { kind: 'open'; key: number; epoch: number; command?: string[] }
  /** Create (or reset) the tab's emulator and attach to an existing
   * terminal from seq 0. */
  | { kind: 'attach'; key: number; epoch: number; term: number }
  /** End terminals on the runner, then open a new one in the tab. */
  | { kind: 'replace'; key: number; epoch: number; oldTerms: number[]; command?: string[] }
  | { kind: 'close_term'; term: number }
  | { kind: 'dispose_view'; key: number }
  | { kind: 'show'; key: number };

export function initialTerminals(): TerminalsState {
  return { tabs: [], active: null, nextKey: 1, shellsOpened: 0 };
}

function update(state: TerminalsState, key: number, f: (t: TerminalTab) => TerminalTab): TerminalsState {
  return { ...state, tabs: state.tabs.map((t) => (t.key === key ? f(t) : t)) };
}

function current(state: TerminalsState, key: number, epoch: number): TerminalTab | undefined {
  const tab = state.tabs.find((t) => t.key === key);
  return tab !== undefined && tab.epoch === epoch ? tab : undefined;
}

function isRunning(tab: TerminalTab): boolean {
  return tab.term !== null && (tab.status.kind === 'live' || tab.status.kind === 'attaching');
}

function newShell(state: TerminalsState): [TerminalsState, TerminalsEffect[]] {
  const key = state.nextKey;
  const n = state.shellsOpened + 1;
  const tab: TerminalTab = { key, term: null, role: 'shell', title: `Terminal ${n}`, status: { kind: 'opening' }, epoch: 1 };
  return [
    { ...state, tabs: [...state.tabs, tab], active: key, nextKey: key + 1, shellsOpened: n },
    [
      { kind: 'open', key, epoch: 1 },
      { kind: 'show', key },
    ],
  ];
}

export function terminalsReducer(state: TerminalsState, action: TerminalsAction): [TerminalsState, TerminalsEffect[]] {
  switch (action.kind) {
    case 'restore': {
      if (state.tabs.length > 0) return [state, []];
      const running = action.terms.filter((t) => t.exited === undefined).sort((a, b) => a.term - b.term);
      if (running.length === 0) return newShell(state);
      const runTerm = currentRun(running);
      let next = state;
      const effects: TerminalsEffect[] = [];
      for (const info of running) {
        const key = next.nextKey;
        const isRun = info.term === runTerm;
        const shellsOpened = isRun ? next.shellsOpened : next.shellsOpened + 1;
        const tab: TerminalTab = {
          key,
          term: info.term,
          role: isRun ? 'run' : 'shell',
          title: isRun ? 'Run' : `Terminal ${shellsOpened}`,
          status: { kind: 'attaching' },
          epoch: 1,
        };
        next = { ...next, tabs: [...next.tabs, tab], nextKey: key + 1, shellsOpened };
        effects.push({ kind: 'attach', key, epoch: 1, term: info.term });
      }
      const first = next.tabs[0];
      if (first !== undefined) {
        next = { ...next, active: first.key };
        effects.push({ kind: 'show', key: first.key });
      }
      return [next, effects];
    }
    case 'new_shell':
      return newShell(state);
    case 'run': {
      const runTab = state.tabs.find((t) => t.role === 'run');
      // A second Run ends the first, wherever it was started: two servers
      // on one port would fight.
      const start = (key: number, epoch: number, own: number[]): TerminalsEffect => {
        const oldTerms = [...own, ...action.end.filter((t) => !own.includes(t))];
        return oldTerms.length > 0
          ? { kind: 'replace', key, epoch, oldTerms, command: action.command }
          : { kind: 'open', key, epoch, command: action.command };
      };
      if (runTab === undefined) {
        const key = state.nextKey;
        const tab: TerminalTab = { key, term: null, role: 'run', title: 'Run', status: { kind: 'opening' }, epoch: 1 };
        return [
          { ...state, tabs: [...state.tabs, tab], active: key, nextKey: key + 1 },
          [start(key, 1, []), { kind: 'show', key }],
        ];
      }
      const epoch = runTab.epoch + 1;
      const next = update({ ...state, active: runTab.key }, runTab.key, (t) => ({ ...t, term: null, status: { kind: 'opening' }, epoch }));
      const own = runTab.term !== null && isRunning(runTab) ? [runTab.term] : [];
      return [next, [start(runTab.key, epoch, own), { kind: 'show', key: runTab.key }]];
    }
    case 'follow': {
      const tab = current(state, action.key, action.epoch);
      if (tab === undefined || tab.role !== 'run' || (tab.status.kind !== 'exited' && tab.status.kind !== 'lost')) return [state, []];
      if (state.tabs.some((t) => t.term === action.term)) return [state, []];
      const epoch = tab.epoch + 1;
      const next = update(state, tab.key, (t) => ({ ...t, term: action.term, status: { kind: 'attaching' }, epoch }));
      return [next, [{ kind: 'attach', key: tab.key, epoch, term: action.term }]];
    }
    case 'opened': {
      const tab = current(state, action.key, action.epoch);
      if (tab === undefined) return [state, [{ kind: 'close_term', term: action.term }]];
      return [update(state, action.key, (t) => ({ ...t, term: action.term, status: { kind: 'live' } })), []];
    }
    case 'attached': {
      if (current(state, action.key, action.epoch) === undefined) return [state, []];
      return [update(state, action.key, (t) => ({ ...t, status: { kind: 'live' } })), []];
    }
    case 'failed': {
      if (current(state, action.key, action.epoch) === undefined) return [state, []];
      return [update(state, action.key, (t) => ({ ...t, status: { kind: 'failed', message: action.message } })), []];
    }
    case 'exited': {
      if (current(state, action.key, action.epoch) === undefined) return [state, []];
      return [update(state, action.key, (t) => ({ ...t, status: { kind: 'exited', code: action.code } })), []];
    }
    case 'lost': {
      if (current(state, action.key, action.epoch) === undefined) return [state, []];
      return [update(state, action.key, (t) => ({ ...t, term: null, status: { kind: 'lost' } })), []];
    }
    case 'restart': {
      const tab = state.tabs.find((t) => t.key === action.key);
      if (tab === undefined || isRunning(tab) || tab.status.kind === 'opening') return [state, []];
      const epoch = tab.epoch + 1;
      const command = tab.role === 'run' ? action.command : undefined;
      const next = update({ ...state, active: tab.key }, tab.key, (t) => ({ ...t, term: null, status: { kind: 'opening' }, epoch }));
      const open: TerminalsEffect = command === undefined ? { kind: 'open', key: tab.key, epoch } : { kind: 'open', key: tab.key, epoch, command };
      return [next, [open, { kind: 'show', key: tab.key }]];
    }
    case 'close': {
      const index = state.tabs.findIndex((t) => t.key === action.key);
      const tab = state.tabs[index];
      if (tab === undefined) return [state, []];
      const tabs = state.tabs.filter((t) => t.key !== action.key);
      let active = state.active;
      if (active === action.key) {
        // The neighbour takes the focus, as in every tabbed editor.
        active = (tabs[Math.min(index, tabs.length - 1)] ?? null)?.key ?? null;
      }
      const effects: TerminalsEffect[] = [{ kind: 'dispose_view', key: tab.key }];
      if (tab.term !== null && tab.status.kind !== 'exited' && tab.status.kind !== 'lost') {
        effects.push({ kind: 'close_term', term: tab.term });
      }
      if (active !== null) effects.push({ kind: 'show', key: active });
      return [{ ...state, tabs, active }, effects];
    }
    case 'activate': {
      if (!state.tabs.some((t) => t.key === action.key)) return [state, []];
      return [{ ...state, active: action.key }, [{ kind: 'show', key: action.key }]];
    }
  }
}

/** The line a tab shows when its terminal ended. */
export function endedNotice(status: TabStatus): string | null {
  switch (status.kind) {
    case 'exited':
      return status.code === null ? '[process ended by a signal]' : `[process exited with code ${status.code}]`;
    case 'lost':
      return '[terminal ended: the sandbox restarted]';
    case 'failed':
      return `[could not start a terminal: ${status.message}]`;
    default:
      return null;
  }
}
