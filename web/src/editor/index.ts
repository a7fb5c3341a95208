// The editor pane: tabs and buffers (model.ts), their DOM (view.ts), Monaco
// (workbench.ts, loaded with a dynamic import so the landing page never
// pays for it), hot exit (hotexit.ts), and the effects that talk to the
// runner. Mounted by the IDE shell.

import type { RunnerClient } from '../protocol/client';
import { downloadFile } from '../tree/download';
import { errorCode, errorText } from '../tree/errors';
import { onMoved } from '../tree/moves';
import { baseName, isWithin } from '../tree/paths';
import { HotExitStore, hotExitKey, isEmptySnapshot, takeSnapshot, type KeyValueStore } from './hotexit';
import {
  docAt,
  initialEditor,
  isDirty,
  reduceEditor,
  saveStateOf,
  type EditorAction,
  type EditorEffect,
  type Conflict,
  type EditorState,
  type Refusal,
  type SaveState,
} from './model';
import { decodeText, encodeText, MAX_EDITOR_BYTES, formatSize } from './text';
import { createEditorView } from './view';
import type { Workbench } from './workbench';

export type { SaveState } from './model';

export interface EditorContext {
  client: RunnerClient;
  project: string;
  onSaveState: (s: SaveState) => void;
  onError: (message: string) => void;
  /** Monaco starts loading once this settles (or a file is opened with
   * `focus: 'always'`, a user's open); absent: at once. */
  loadAfter?: Promise<void>;
}

export interface EditorHandle {
  /** Opens (or shows) a tab. `focus: 'if-idle'` (the IDE opening the entry
   * file by itself) leaves the keyboard where the user has put it. */
  open(path: string, opts?: { focus?: 'always' | 'if-idle' }): void;
  /** Saves the active tab (Ctrl/Cmd-S pressed elsewhere in the IDE). */
  save(): void;
  layout(): void;
  dispose(): void;
  /** The Monaco code editor once loaded (for tests), else undefined. */
  editor(): unknown;
}

/** localStorage, or a memory stand-in where the browser refuses it. */
function browserStore(): KeyValueStore {
  try {
    const ls = window.localStorage;
    ls.getItem('cloudcode.probe');
    return ls;
  } catch {
    const map = new Map<string, string>();
    return {
      getItem: (k) => map.get(k) ?? null,
      setItem: (k, v) => void map.set(k, v),
      removeItem: (k) => void map.delete(k),
    };
  }
}

/**
 * Monaco (a MB of JavaScript, hundreds of milliseconds of the main thread
 * to evaluate and start) loads when the pane's `loadAfter` says, or at
 * once when the user opens a file: the IDE lets the terminal's first
 * prompt go first.
 */
let workbenchModule: Promise<typeof import('./workbench')> | null = null;
function loadWorkbench(): Promise<typeof import('./workbench')> {
  workbenchModule ??= import('./workbench');
  return workbenchModule;
}

/**
 * How long after mounting a restored session keeps its active tab against
 * the shell's "open the entry file" call.
 */
const RESTORE_GRACE_MS = 3000;

export function mountEditor(el: HTMLElement, ctx: EditorContext): EditorHandle {
  const { client } = ctx;
  let state: EditorState = initialEditor();
  let wb: Workbench | null = null;
  let disposed = false;
  /** Files that began with a UTF-8 BOM get it back when saved. */
  const boms = new Map<string, boolean>();
  /** Effects that need Monaco, waiting for it to load, in order. */
  const waitingForMonaco: Array<(wb: Workbench) => void> = [];
  /** Give the editor the focus once this tab's buffer exists (`ifIdle`:
   * only if the user is not busy elsewhere by then, e.g. in a terminal). */
  let focusWhenReady: string | null = null;
  let focusOnlyIfIdle = false;
  /**
   * Renames seen so far. An answer to a request made before a rename names
   * the old path; `follow` brings it to where the tab is now.
   */
  const renames: { from: string; to: string }[] = [];
  const follow = (path: string, since: number): string => {
    let p = path;
    for (const r of renames.slice(since)) if (isWithin(p, r.from)) p = r.to + p.slice(r.from.length);
    return p;
  };

  const view = createEditorView(el, {
    dispatch,
    download(path) {
      downloadFile(client, path).catch((err: unknown) => ctx.onError(errorText(err, `Could not download "${baseName(path)}"`)));
    },
  });

  const store = new HotExitStore(browserStore(), hotExitKey(ctx.project), () =>
    takeSnapshot(state, (p) => wb?.textOf(p)),
  );

  // Actions raised while effects run (Monaco events, synchronous answers)
  // wait their turn, so each reduction sees the state the previous left.
  const queue: EditorAction[] = [];
  let draining = false;
  let lastSaveState = '';

  function dispatch(action: EditorAction): void {
    if (disposed) return;
    queue.push(action);
    if (draining) return;
    draining = true;
    let changed = false;
    try {
      for (let a = queue.shift(); a !== undefined; a = queue.shift()) {
        const [next, effects] = reduceEditor(state, a);
        if (next !== state) changed = true;
        state = next;
        for (const e of effects) perform(e);
      }
    } finally {
      draining = false;
    }
    if (changed) render();
  }

  let shownPath: string | null = null;
  let shownConflict: Conflict | null = null;
  let shownBy: Workbench | null = null;

  function render(): void {
    const doc = state.active === null ? undefined : docAt(state, state.active);
    view.render(state, wb !== null);
    if (wb !== null) {
      // Only when what is shown changes: not on every keystroke.
      const showPath = doc?.status === 'ready' ? doc.path : null;
      const conflict = doc?.conflict ?? null;
      if (showPath !== shownPath || conflict !== shownConflict || wb !== shownBy) {
        shownPath = showPath;
        shownConflict = conflict;
        shownBy = wb;
        wb.show(showPath, conflict);
      }
      if (focusWhenReady !== null && doc?.path === focusWhenReady && doc.status !== 'loading') {
        focusWhenReady = null;
        const busyElsewhere = focusOnlyIfIdle && document.activeElement !== null && document.activeElement !== document.body;
        if (doc.status === 'ready' && !busyElsewhere) wb.focus();
      }
    }
    const s = saveStateOf(state);
    const key = JSON.stringify(s);
    if (key !== lastSaveState) {
      lastSaveState = key;
      ctx.onSaveState(s);
    }
    store.schedule();
  }

  function withMonaco(fn: (wb: Workbench) => void): void {
    if (wb !== null) fn(wb);
    else waitingForMonaco.push(fn);
  }

  function refusalFor(path: string, err: unknown, size?: number): { code: string; refusal: Refusal } {
    const code = errorCode(err) ?? 'internal';
    const name = baseName(path);
    if (code === 'too_large') {
      const what = size === undefined ? `larger than ${formatSize(MAX_EDITOR_BYTES)}` : formatSize(size);
      return {
        code,
        refusal: { reason: 'too_large', message: `"${name}" is ${what}; the editor opens files up to ${formatSize(MAX_EDITOR_BYTES)}.` },
      };
    }
    if (code === 'is_a_directory') return { code, refusal: { reason: 'failed', message: `"${name}" is a folder.` } };
    return { code, refusal: { reason: 'failed', message: errorText(err, `Could not open "${path}"`) } };
  }

  function perform(effect: EditorEffect): void {
    switch (effect.type) {
      case 'load': {
        const { purpose } = effect;
        const since = renames.length;
        client.readFile(effect.path, { maxBytes: MAX_EDITOR_BYTES }).then(
          ({ data, version }) => {
            const path = follow(effect.path, since);
            const decoded = decodeText(data);
            if (!decoded.ok) {
              const message = `"${baseName(path)}" is not a text file (it is binary, or not UTF-8), so it does not open in the editor.`;
              dispatch({ type: 'loadFailed', path, purpose, code: 'binary', refusal: { reason: 'binary', message } });
              return;
            }
            boms.set(path, decoded.bom);
            const mine = wb?.textOf(path);
            dispatch({ type: 'loaded', path, purpose, text: decoded.text, version, mineEqual: mine === decoded.text });
          },
          (err: unknown) => {
            const path = follow(effect.path, since);
            if (errorCode(err) !== 'too_large') {
              dispatch({ type: 'loadFailed', path, purpose, ...refusalFor(path, err) });
              return;
            }
            // Say how large: one more stat, worth it for the message.
            client.stat(path).then(
              (entry) => dispatch({ type: 'loadFailed', path, purpose, ...refusalFor(path, err, entry.size) }),
              () => dispatch({ type: 'loadFailed', path, purpose, ...refusalFor(path, err) }),
            );
          },
        );
        return;
      }
      case 'setText': {
        const { path, text, how, clean } = effect;
        withMonaco((w) => dispatch({ type: 'applied', path, version: w.setText(path, text, how), clean }));
        return;
      }
      case 'write': {
        const text = wb?.textOf(effect.path);
        if (text === undefined) {
          const { path, edit } = effect;
          queueMicrotask(() => dispatch({ type: 'saveFailed', path, edit, code: 'internal', message: `Could not save "${path}": the buffer is gone.` }));
          return;
        }
        const opts: { baseVersion?: string; createNew?: boolean } = {};
        if (effect.baseVersion !== undefined) opts.baseVersion = effect.baseVersion;
        if (effect.createNew === true) opts.createNew = true;
        const since = renames.length;
        // After a rename the buffer has new version ids: the save in flight
        // is the one the tab now waits for.
        const answer = (): { path: string; edit: number } => {
          const path = follow(effect.path, since);
          if (path === effect.path) return { path, edit: effect.edit };
          return { path, edit: docAt(state, path)?.saving?.edit ?? effect.edit };
        };
        client.writeFile(effect.path, encodeText(text, boms.get(effect.path) ?? false), opts).then(
          ({ version }) => dispatch({ type: 'saved', ...answer(), version }),
          (err: unknown) =>
            dispatch({
              type: 'saveFailed',
              ...answer(),
              code: errorCode(err) ?? 'internal',
              message: errorText(err, `Could not save "${effect.path}"`),
            }),
        );
        return;
      }
      case 'stat': {
        const since = renames.length;
        client.stat(effect.path).then(
          (entry) => {
            const path = follow(effect.path, since);
            if (entry.kind === 'file') dispatch({ type: 'statted', path, version: entry.version ?? null });
            else if (entry.kind === 'dir') dispatch({ type: 'statted', path, version: null });
            // A link is not followed by stat: no version to compare, so no verdict.
            else dispatch({ type: 'statFailed', path });
          },
          (err: unknown) => {
            const path = follow(effect.path, since);
            if (errorCode(err) === 'not_found') dispatch({ type: 'statted', path, version: null });
            else dispatch({ type: 'statFailed', path });
          },
        );
        return;
      }
      case 'rekey': {
        const { from, to } = effect;
        const bom = boms.get(from);
        boms.delete(from);
        if (bom !== undefined) boms.set(to, bom);
        withMonaco((w) => dispatch({ type: 'rekeyed', path: to, version: w.rekey(from, to) }));
        return;
      }
      case 'dispose':
        boms.delete(effect.path);
        wb?.dispose(effect.path);
        return;
      case 'error':
        ctx.onError(effect.message);
        return;
    }
  }

  // Monaco arrives in its own chunks; tabs, messages and file reads do not wait for it.
  const loadMonaco = (): void => {
    loadWorkbench().then(
      ({ createWorkbench }) => {
        if (disposed) return;
        wb = createWorkbench(view.codeHost, view.diffHost, {
          edited: (path, version) => dispatch({ type: 'edited', path, version }),
          save: () => dispatch({ type: 'save' }),
        });
        const w = wb;
        for (const fn of waitingForMonaco.splice(0)) fn(w);
        w.layout(); // sized (and its minimap chosen) for the pane as it is now
        render();
      },
      (err: unknown) => ctx.onError(errorText(err, 'The editor could not load; reload the page to try again')),
    );
  };
  let startLoad: () => void = () => undefined;
  const userOpened = new Promise<void>((resolve) => (startLoad = resolve));
  void Promise.race([ctx.loadAfter ?? Promise.resolve(), userOpened]).then(loadMonaco);


  // Ctrl/Cmd-S on the tabs or a message (inside Monaco, its own command does it).
  const onKey = (e: KeyboardEvent): void => {
    if ((e.ctrlKey || e.metaKey) && !e.altKey && !e.shiftKey && e.key.toLowerCase() === 's' && !e.defaultPrevented) {
      e.preventDefault();
      dispatch({ type: 'save' });
    }
  };
  el.addEventListener('keydown', onKey);

  const resize = new ResizeObserver(() => wb?.layout());
  resize.observe(el);

  const offMoved = onMoved(client, (from, to) => {
    renames.push({ from, to });
    dispatch({ type: 'moved', from, to });
  });
  const offEvent = client.onEvent((event) => {
    if (event.event === 'fs_changed') dispatch({ type: 'fsChanged', changes: event.changes });
  });
  let wasOpen = client.state === 'open';
  const offState = client.onState((s) => {
    if (s === 'open' && !wasOpen) dispatch({ type: 'reconnected' });
    wasOpen = s === 'open';
  });

  // Unsaved work is written out when the page goes away, not only after the debounce.
  const flush = (): void => store.flush();
  const onVisibility = (): void => {
    if (document.visibilityState === 'hidden') store.flush();
  };
  const onBeforeUnload = (e: BeforeUnloadEvent): void => {
    store.flush();
    // Only when the unsaved text could not be kept (storage full) is there
    // anything to lose.
    if (!store.ok && state.docs.some(isDirty)) e.preventDefault();
  };
  window.addEventListener('pagehide', flush);
  window.addEventListener('beforeunload', onBeforeUnload);
  document.addEventListener('visibilitychange', onVisibility);

  const mountedAt = performance.now();
  const snapshot = store.load();
  let restoredActive = snapshot !== null && !isEmptySnapshot(snapshot) && snapshot.active !== null;
  if (snapshot !== null && !isEmptySnapshot(snapshot)) {
    dispatch({ type: 'restore', tabs: snapshot.tabs, active: snapshot.active, buffers: snapshot.buffers });
  }
  render();

  return {
    open(path, opts) {
      if (restoredActive) {
        restoredActive = false;
        // The shell opens the project's entry file on arrival; a restored
        // session's own active tab wins over that first call.
        if (performance.now() - mountedAt < RESTORE_GRACE_MS) return;
      }
      focusWhenReady = path;
      focusOnlyIfIdle = opts?.focus === 'if-idle';
      if (!focusOnlyIfIdle) startLoad(); // the user asked for this file
      dispatch({ type: 'open', path });
    },
    save() {
      dispatch({ type: 'save' });
    },
    layout() {
      wb?.layout();
    },
    editor() {
      return wb?.editor;
    },
    dispose() {
      store.flush();
      disposed = true;
      store.dispose();
      offEvent();
      offState();
      offMoved();
      resize.disconnect();
      el.removeEventListener('keydown', onKey);
      window.removeEventListener('pagehide', flush);
      window.removeEventListener('beforeunload', onBeforeUnload);
      document.removeEventListener('visibilitychange', onVisibility);
      wb?.disposeAll();
      wb = null;
      view.dispose();
    },
  };
}
