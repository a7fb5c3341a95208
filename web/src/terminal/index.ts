// The terminal pane: tabs of xterm.js terminals on the runner. Decisions are
// in tabs.ts (pure); this file runs their effects: emulators, protocol calls,
// flow-control acks.

import type { Terminal } from '@xterm/xterm';
import { h, icon } from '../app/dom';
import { ProtocolError, type RunnerClient, type TerminalSink } from '../protocol/client';
import { AckTracker } from './flow';
import { newerRun, runsToEnd } from './run';
import { endedNotice, initialTerminals, terminalsReducer, type TerminalsAction, type TerminalsEffect, type TerminalsState } from './tabs';
import { TerminalView } from './view';

export interface TerminalsPane {
  /** Runs the project's command in the Run tab (ending a previous run). */
  run(): void;
  newShell(): void;
  /** The i-th tab's emulator (for tests). */
  terminal(index: number): Terminal | undefined;
  dispose(): void;
}

export interface TerminalsContext {
  client: RunnerClient;
  project: string;
  runCommand: string[];
  onError: (message: string) => void;
  /** Once, when a terminal first shows output (a page's first prompt). */
  onFirstOutput?: () => void;
}

interface Slot {
  view: TerminalView;
  /** When output last arrived (performance.now()), to place the ended notice after it. */
  lastOutputAt: number;
  /** The runner's id of the terminal shown now (null while opening). */
  term: number | null;
  epoch: number;
}

const RESIZE_DEBOUNCE_MS = 60;
const ENDED_SETTLE_MS = 150;
const ENDED_SETTLE_MAX_MS = 1000;
/** When the Run tab's run ends, the runner is asked this many times, this
 * far apart, whether another client started a newer one in its place: that
 * client ends the old run before it opens the new one, so the new one may
 * not exist yet when the old one's exit arrives here. */
const FOLLOW_TRIES = 4;
const FOLLOW_EVERY_MS = 400;

export function mountTerminals(el: HTMLElement, ctx: TerminalsContext): TerminalsPane {
  const { client } = ctx;
  let state: TerminalsState = initialTerminals();
  let disposed = false;
  const slots = new Map<number, Slot>();
  let firstOutput = (): void => {
    firstOutput = () => undefined;
    ctx.onFirstOutput?.();
  };
  /** Last status kind drawn per tab, to act on transitions only. */
  const drawnStatus = new Map<number, string>();

  const tabList = h('div', { class: 'tab-list', attrs: { role: 'tablist' } });
  const newButton = h(
    'button',
    {
      class: 'icon-button',
      testid: 'terminal-new',
      title: 'New terminal',
      attrs: { type: 'button', 'aria-label': 'New terminal' },
      on: { click: () => dispatch({ kind: 'new_shell' }) },
    },
    icon('plus'),
  );
  const body = h('div', { class: 'terminal-body' });
  const empty = h(
    'div',
    { class: 'pane-empty' },
    h('p', { class: 'muted', text: 'No terminal open.' }),
    h('button', { class: 'button small', text: 'New terminal', attrs: { type: 'button' }, on: { click: () => dispatch({ kind: 'new_shell' }) } }),
  );
  el.replaceChildren(h('div', { class: 'tab-bar' }, tabList, newButton), body);
  el.dataset.testid = 'terminal-pane';
  el.classList.add('terminal-pane');

  const dispatch = (action: TerminalsAction): void => {
    if (disposed) return;
    const [next, effects] = terminalsReducer(state, action);
    state = next;
    render();
    for (const effect of effects) runEffect(effect);
  };

  const slotFor = (key: number, epoch: number): Slot => {
    let slot = slots.get(key);
    if (slot === undefined) {
      let resizeTimer: ReturnType<typeof setTimeout> | undefined;
      const view = new TerminalView({
        input: (data) => {
          const s = slots.get(key);
          if (s?.term != null) client.input(s.term, data);
        },
        resize: (cols, rows) => {
          clearTimeout(resizeTimer);
          resizeTimer = setTimeout(() => {
            const s = slots.get(key);
            if (s?.term != null) client.resize(s.term, cols, rows);
          }, RESIZE_DEBOUNCE_MS);
        },
        notice: ctx.onError,
      });
      body.append(view.el);
      view.show(state.active === key);
      view.mount();
      slot = { view, term: null, epoch, lastOutputAt: 0 };
      slots.set(key, slot);
    }
    slot.epoch = epoch;
    return slot;
  };

  /** Where the runner's bytes for one (tab, epoch) go. */
  const sinkFor = (key: number, epoch: number, slot: Slot): TerminalSink => {
    const tracker = new AckTracker();
    const live = (): boolean => slots.get(key) === slot && slot.epoch === epoch;
    return {
      output: (data, seq) => {
        if (!live()) return;
        slot.lastOutputAt = performance.now();
        const end = seq + data.length;
        slot.view.write(data, () => {
          firstOutput();
          const ack = tracker.parsed(end);
          if (ack !== null && slot.term !== null && live()) client.ack(slot.term, ack);
        });
      },
      snapshot: (data, seq) => {
        if (!live()) return;
        slot.view.resetAndWrite(data, () => {
          const ack = tracker.snapshotParsed(seq);
          if (slot.term !== null && live()) client.ack(slot.term, ack);
        });
      },
      exited: (code) => {
        const ended = slot.term;
        dispatch({ kind: 'exited', key, epoch, code });
        if (ended !== null && live()) followRun(key, epoch, ended, FOLLOW_TRIES);
      },
      lost: () => dispatch({ kind: 'lost', key, epoch }),
    };
  };

  const open = (key: number, epoch: number, command: string[] | undefined): void => {
    const reused = slots.has(key);
    const slot = slotFor(key, epoch);
    slot.term = null;
    if (reused) slot.view.reset(); // a new process in an ended tab starts clean
    slot.view.fitNow();
    // The runner tells every client which terminal is the run (PROTOCOL.md).
    const purpose = state.tabs.find((t) => t.key === key)?.role === 'run' ? 'run' : undefined;
    client.openTerminal(slot.view.size, command, sinkFor(key, epoch, slot), purpose).then(
      (term) => {
        if (slots.get(key) === slot && slot.epoch === epoch) slot.term = term;
        dispatch({ kind: 'opened', key, epoch, term });
        if (state.active === key) slot.view.focus();
      },
      (e: unknown) => dispatch({ kind: 'failed', key, epoch, message: describe(e) }),
    );
  };

  const runEffect = (effect: TerminalsEffect): void => {
    switch (effect.kind) {
      case 'open':
        open(effect.key, effect.epoch, effect.command);
        return;
      case 'attach': {
        const reused = slots.has(effect.key);
        const slot = slotFor(effect.key, effect.epoch);
        if (reused) slot.view.reset(); // another run in an ended Run tab
        slot.term = effect.term;
        // From 0: the runner replays its scrollback (or a snapshot), so the
        // screen and history come back after a reload.
        client.attachTerminal(effect.term, 0, sinkFor(effect.key, effect.epoch, slot)).then(
          () => {
            dispatch({ kind: 'attached', key: effect.key, epoch: effect.epoch });
            slot.view.fitNow();
            client.resize(effect.term, slot.view.size.cols, slot.view.size.rows);
          },
          (e: unknown) => {
            // unknown_terminal already reached the sink as lost().
            if (!(e instanceof ProtocolError && e.code === 'unknown_terminal')) {
              dispatch({ kind: 'failed', key: effect.key, epoch: effect.epoch, message: describe(e) });
            }
          },
        );
        return;
      }
      case 'replace': {
        const slot = slotFor(effect.key, effect.epoch);
        slot.term = null;
        Promise.all(
          effect.oldTerms.map((term) =>
            client.closeTerminal(term).catch((e: unknown) => {
              // Ended meanwhile (by its own exit, another client): fine.
              if (!(e instanceof ProtocolError && e.code === 'unknown_terminal')) ctx.onError(`Ending the previous run failed: ${describe(e)}`);
            }),
          ),
        ).finally(() => {
            if (slots.get(effect.key) !== slot || slot.epoch !== effect.epoch) return;
            slot.view.reset();
            open(effect.key, effect.epoch, effect.command);
          });
        return;
      }
      case 'close_term':
        client.closeTerminal(effect.term).catch((e: unknown) => ctx.onError(`Closing the terminal failed: ${describe(e)}`));
        return;
      case 'dispose_view': {
        const slot = slots.get(effect.key);
        slot?.view.dispose();
        slots.delete(effect.key);
        drawnStatus.delete(effect.key);
        return;
      }
      case 'show':
        for (const [key, slot] of slots) slot.view.show(key === effect.key);
        slots.get(effect.key)?.view.focus();
        return;
    }
  };

  const render = (): void => {
    tabList.replaceChildren(
      ...state.tabs.map((tab, index) => {
        const ended = endedNotice(tab.status) !== null;
        const close = h(
          'button',
          {
            class: 'tab-close',
            testid: 'terminal-tab-close',
            title: 'Close (ends its processes)',
            attrs: { type: 'button', 'aria-label': `Close ${tab.title}` },
            on: {
              click: (ev) => {
                ev.stopPropagation();
                dispatch({ kind: 'close', key: tab.key });
              },
            },
          },
          icon('close'),
        );
        const el = h(
          'div',
          {
            class: `tab${tab.key === state.active ? ' active' : ''}${ended ? ' ended' : ''}`,
            testid: `terminal-tab-${index}`,
            attrs: {
              role: 'tab',
              'aria-selected': String(tab.key === state.active),
              'data-status': tab.status.kind,
              'data-role': tab.role,
              ...(tab.term === null ? {} : { 'data-term': String(tab.term) }),
            },
            on: {
              click: () => dispatch({ kind: 'activate', key: tab.key }),
              auxclick: (ev) => {
                if (ev.button === 1) dispatch({ kind: 'close', key: tab.key });
              },
            },
          },
          tab.role === 'run' ? icon('play') : null,
          h('span', { class: 'tab-title', text: tab.title }),
          close,
        );
        return el;
      }),
    );
    if (state.tabs.length === 0) {
      if (!body.contains(empty)) body.append(empty);
    } else empty.remove();

    for (const tab of state.tabs) {
      const kind = tab.status.kind;
      if (drawnStatus.get(tab.key) === kind) continue;
      drawnStatus.set(tab.key, kind);
      const slot = slots.get(tab.key);
      const line = endedNotice(tab.status);
      if (slot === undefined) continue;
      if (line === null) {
        slot.view.setEnded(null);
        continue;
      }
      const epoch = tab.epoch;
      const ended = {
        line,
        action: tab.role === 'run' ? 'Run again' : 'New terminal',
        run: () => (tab.role === 'run' ? runProject() : dispatch({ kind: 'restart', key: tab.key })),
      };
      // The exit can overtake the process's last bytes (they travel apart on
      // the runner); the notice goes below them once output has settled.
      const since = performance.now();
      const place = (): void => {
        if (slots.get(tab.key) !== slot || slot.epoch !== epoch) return;
        const now = performance.now();
        if (now - slot.lastOutputAt < ENDED_SETTLE_MS && now - since < ENDED_SETTLE_MAX_MS) setTimeout(place, ENDED_SETTLE_MS);
        else slot.view.setEnded(ended);
      };
      setTimeout(place, ENDED_SETTLE_MS);
    }
  };

  // After a page load the runner may already have terminals: show them again.
  const restore = (): void => {
    client.request({ op: 'term_list' }).then(
      (reply) => {
        if (reply.kind === 'terms') dispatch({ kind: 'restore', terms: reply.terms });
      },
      (e: unknown) => {
        ctx.onError(`Listing the terminals failed: ${describe(e)}`);
        // Retry once the connection is back.
        const off = client.onState((s) => {
          if (s === 'open') {
            off();
            restore();
          }
        });
      },
    );
  };
  /** Runs the project in the Run tab. The runner says which terminals are
   * runs (their purpose), so a run another tab, browser or the TUI started
   * is ended first, as this page's own previous run is. */
  function runProject(): void {
    if (disposed) return;
    const own = state.tabs.find((t) => t.role === 'run')?.term ?? null;
    client.request({ op: 'term_list' }).then(
      (reply) => dispatch({ kind: 'run', command: ctx.runCommand, end: reply.kind === 'terms' ? runsToEnd(reply.terms, own) : [] }),
      () => dispatch({ kind: 'run', command: ctx.runCommand, end: [] }),
    );
  }

  /** The Run tab's run (`ended`) is over: if another client started a
   * newer run, the tab shows that one, so every page's Run tab is the same
   * terminal. */
  function followRun(key: number, epoch: number, ended: number, tries: number): void {
    const tab = state.tabs.find((t) => t.key === key);
    if (disposed || tab === undefined || tab.role !== 'run' || tab.epoch !== epoch || tries <= 0) return;
    client.request({ op: 'term_list' }).then(
      (reply) => {
        const shown = new Set(state.tabs.map((t) => t.term).filter((t): t is number => t !== null));
        const newer = reply.kind === 'terms' ? newerRun(reply.terms, ended, shown) : null;
        if (newer !== null) dispatch({ kind: 'follow', key, epoch, term: newer });
        else setTimeout(() => followRun(key, epoch, ended, tries - 1), FOLLOW_EVERY_MS);
      },
      () => undefined,
    );
  }

  render();
  restore();

  return {
    run: runProject,
    newShell: () => dispatch({ kind: 'new_shell' }),
    terminal: (index) => {
      const tab = state.tabs[index];
      return tab === undefined ? undefined : slots.get(tab.key)?.view.term;
    },
    dispose: () => {
      disposed = true;
      // Detach, never close: the terminals outlive the page (reload, another tab).
      for (const slot of slots.values()) {
        if (slot.term !== null) client.detachTerminal(slot.term);
        slot.view.dispose();
      }
      slots.clear();
    },
  };
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
