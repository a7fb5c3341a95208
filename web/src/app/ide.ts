// The IDE for one project (`/p/<id>`): starts its sandbox, connects the
// protocol client, lays out tree | editor | terminals over preview with
// splitters, and keeps the status bar. Loaded on demand so the landing page
// does not pay for Monaco and xterm.js.

import { ApiError, describeError, type Api } from '../api';
import { mountEditor, type SaveState } from '../editor';
import { mountPreview, type PreviewPane } from '../preview';
import { RunnerClient, type ConnectionState } from '../protocol/client';
import { LANGUAGES, type LanguageInfo, type StartedProject, type StorageStatus } from '../protocol/generated';
import { mountTerminals, type TerminalsPane } from '../terminal';
import { mountFileTree } from '../tree';
import type { Banner } from './banner';
import { h, icon } from './dom';
import { languageLabel } from './landing';
import { dragSplitter, fitLayout, layoutKey, NARROW_WIDTH, parseLayout, type Layout, type NarrowPane, type Splitter } from './layout';
import { connectionText, saveText, storageText } from './status';
import { registerTestingParts } from './testing';

export interface IdeContext {
  api: Api;
  banner: Banner;
  project: string;
  goHome: () => void;
}

/** After Run, the app needs a moment to listen before the preview can show it. */
const PREVIEW_RELOAD_AFTER_RUN_MS = 2000;
/** Monaco and the preview wait for the first prompt, at most this long
 * after the runner connection opens (a shell that prints nothing). */
const FIRST_PROMPT_FIRST_MS = 1000;
const SPLITTER_KEY_STEP = 16;
const STORAGE_POLL_BUSY_MS = 1500;
const STORAGE_POLL_IDLE_MS = 10_000;

export function mountIde(root: HTMLElement, ctx: IdeContext): { dispose(): void } {
  const { api, banner, project } = ctx;
  let disposed = false;
  const cleanups: Array<() => void> = [];
  let client: RunnerClient | undefined;
  let terminals: TerminalsPane | undefined;
  let preview: PreviewPane | undefined;
  let editor: ReturnType<typeof mountEditor> | undefined;
  let tree: { dispose(): void } | undefined;
  let language: LanguageInfo | undefined;
  let storage: StorageStatus | null = null;
  let connection: ConnectionState | 'starting' = 'starting';

  document.title = `${project} · cloudcode`;

  // ---- the frame ----
  const back = h(
    'a',
    { class: 'icon-button back', testid: 'nav-home', title: 'All projects', attrs: { href: '/', 'aria-label': 'All projects' } },
    icon('back'),
  );
  back.addEventListener('click', (ev) => {
    if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    ev.preventDefault();
    ctx.goHome();
  });
  const languageBadge = h('span', { class: 'muted small', testid: 'ide-language' });
  const runButton = h(
    'button',
    { class: 'button primary run', testid: 'run-button', title: 'Run the project (Ctrl+Enter)', attrs: { type: 'button' } },
    icon('play'),
    h('span', { text: 'Run' }),
  );
  runButton.disabled = true;
  const topbar = h(
    'header',
    { class: 'topbar ide-topbar' },
    back,
    h('span', { class: 'brand-mark small', text: '{ }' }),
    h('span', { class: 'project-title', testid: 'ide-project', text: project }),
    languageBadge,
    h('span', { class: 'spacer' }),
    runButton,
  );

  const treeSlot = h('section', { class: 'pane tree-slot', attrs: { 'aria-label': 'Files' } });
  const editorSlot = h('section', { class: 'pane editor-slot', testid: 'editor-pane', attrs: { 'aria-label': 'Editor' } });
  const terminalSlot = h('section', { class: 'pane terminal-slot', attrs: { 'aria-label': 'Terminals' } });
  const previewSlot = h('section', { class: 'pane preview-slot', attrs: { 'aria-label': 'Preview' } });
  const splitter = (which: Splitter): HTMLElement =>
    h('div', {
      class: `splitter ${which === 'terminal' ? 'horizontal' : 'vertical'}`,
      testid: `splitter-${which}`,
      title: 'Drag to resize; double-click to reset',
      attrs: {
        role: 'separator',
        tabindex: '0',
        'aria-orientation': which === 'terminal' ? 'horizontal' : 'vertical',
        'data-splitter': which,
      },
    });
  const treeSplitter = splitter('tree');
  const rightSplitter = splitter('right');
  const terminalSplitter = splitter('terminal');
  const rightColumn = h('div', { class: 'right-column' }, terminalSlot, terminalSplitter, previewSlot);
  const overlayText = h('p', { class: 'overlay-text', testid: 'ide-starting-text', text: `Starting ${project}…` });
  const overlayActions = h('div', { class: 'overlay-actions' });
  const overlay = h('div', { class: 'ide-overlay', testid: 'ide-starting' }, h('div', { class: 'spinner' }), overlayText, overlayActions);
  const body = h('div', { class: 'ide-body' }, treeSlot, treeSplitter, editorSlot, rightSplitter, rightColumn, overlay);

  const narrowButtons = new Map<NarrowPane, HTMLButtonElement>();
  const narrowBar = h('nav', { class: 'narrow-bar', attrs: { 'aria-label': 'Panes' } });
  for (const [pane, label] of [
    ['tree', 'Files'],
    ['editor', 'Editor'],
    ['terminal', 'Terminal'],
    ['preview', 'Preview'],
  ] as const) {
    const b = h('button', {
      class: 'narrow-tab',
      testid: `narrow-tab-${pane}`,
      text: label,
      attrs: { type: 'button' },
      on: { click: () => setNarrowPane(pane) },
    });
    narrowButtons.set(pane, b);
    narrowBar.append(b);
  }

  const statusConnection = h('span', { class: 'status-item', testid: 'status-connection' });
  const statusStorage = h('span', { class: 'status-item', testid: 'status-storage' });
  const statusSave = h('span', { class: 'status-item', testid: 'status-save' });
  const statusbar = h(
    'footer',
    { class: 'statusbar' },
    statusConnection,
    statusStorage,
    statusSave,
    h('span', { class: 'spacer' }),
    h('span', { class: 'status-item muted', text: project }),
  );

  const ide = h('div', { class: 'ide', testid: 'ide' }, topbar, banner.el, narrowBar, body, statusbar);
  root.replaceChildren(ide);

  // ---- layout ----
  let layout: Layout = parseLayout(localStorage.getItem(layoutKey(project)));
  const narrowQuery = matchMedia(`(max-width: ${NARROW_WIDTH}px)`);
  const applyLayout = (): void => {
    const width = body.clientWidth || window.innerWidth;
    if (!narrowQuery.matches) layout = fitLayout(layout, width);
    body.style.setProperty('--tree-width', `${layout.treeWidth}px`);
    body.style.setProperty('--right-width', `${layout.rightWidth}px`);
    rightColumn.style.setProperty('--terminal-fr', `${layout.terminalShare}fr`);
    rightColumn.style.setProperty('--preview-fr', `${1 - layout.terminalShare}fr`);
    ide.classList.toggle('narrow', narrowQuery.matches);
    ide.dataset.narrowPane = layout.narrowPane;
    for (const [pane, b] of narrowButtons) b.classList.toggle('active', pane === layout.narrowPane);
    editor?.layout();
  };
  const saveLayout = (): void => {
    try {
      localStorage.setItem(layoutKey(project), JSON.stringify(layout));
    } catch {
      // Storage full or disabled: the layout just is not remembered.
    }
  };
  const setNarrowPane = (pane: NarrowPane): void => {
    layout = { ...layout, narrowPane: pane };
    applyLayout();
    saveLayout();
  };
  const defaults = parseLayout(null);
  for (const [handle, which] of [
    [treeSplitter, 'tree'],
    [rightSplitter, 'right'],
    [terminalSplitter, 'terminal'],
  ] as const) {
    handle.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault();
      handle.setPointerCapture(ev.pointerId);
      const start = layout;
      const x0 = ev.clientX;
      const y0 = ev.clientY;
      // Frames would swallow the pointer while it crosses them.
      document.body.classList.add('dragging', which === 'terminal' ? 'dragging-row' : 'dragging-col');
      const move = (e: PointerEvent): void => {
        layout = dragSplitter(start, which, e.clientX - x0, e.clientY - y0, body.clientWidth, rightColumn.clientHeight);
        applyLayout();
      };
      const up = (): void => {
        handle.removeEventListener('pointermove', move);
        handle.removeEventListener('pointerup', up);
        handle.removeEventListener('pointercancel', up);
        document.body.classList.remove('dragging', 'dragging-row', 'dragging-col');
        saveLayout();
      };
      handle.addEventListener('pointermove', move);
      handle.addEventListener('pointerup', up);
      handle.addEventListener('pointercancel', up);
    });
    handle.addEventListener('dblclick', () => {
      layout =
        which === 'tree'
          ? { ...layout, treeWidth: defaults.treeWidth }
          : which === 'right'
            ? { ...layout, rightWidth: defaults.rightWidth }
            : { ...layout, terminalShare: defaults.terminalShare };
      applyLayout();
      saveLayout();
    });
    handle.addEventListener('keydown', (ev) => {
      const horizontal = which === 'terminal';
      const delta =
        (horizontal ? ev.key === 'ArrowDown' : ev.key === 'ArrowRight') ? SPLITTER_KEY_STEP : (horizontal ? ev.key === 'ArrowUp' : ev.key === 'ArrowLeft') ? -SPLITTER_KEY_STEP : 0;
      if (delta === 0) return;
      ev.preventDefault();
      layout = dragSplitter(layout, which, horizontal ? 0 : delta, horizontal ? delta : 0, body.clientWidth, rightColumn.clientHeight);
      applyLayout();
      saveLayout();
    });
  }
  const onWindowResize = (): void => applyLayout();
  window.addEventListener('resize', onWindowResize);
  narrowQuery.addEventListener('change', onWindowResize);
  cleanups.push(() => {
    window.removeEventListener('resize', onWindowResize);
    narrowQuery.removeEventListener('change', onWindowResize);
  });
  applyLayout();

  // ---- status bar ----
  const tone = (el: HTMLElement, t: string): void => {
    el.dataset.tone = t;
  };
  const drawConnection = (): void => {
    const c = connectionText(connection, client?.lastError);
    statusConnection.textContent = c.text;
    tone(statusConnection, c.tone);
  };
  const drawStorage = (): void => {
    const s = storageText(storage);
    statusStorage.textContent = s.text;
    statusStorage.title = s.title;
    tone(statusStorage, s.tone);
  };
  const drawSave = (state: SaveState): void => {
    const s = saveText(state);
    statusSave.textContent = s.text;
    tone(statusSave, s.tone);
  };
  drawConnection();
  drawStorage();
  drawSave({ kind: 'clean' });

  // ---- run ----
  const run = (): void => {
    if (terminals === undefined || language === undefined) return;
    terminals.run();
    if (layout.narrowPane !== 'terminal' && narrowQuery.matches) setNarrowPane('terminal');
    const reload = setTimeout(() => preview?.reload(), PREVIEW_RELOAD_AFTER_RUN_MS);
    cleanups.push(() => clearTimeout(reload));
  };
  runButton.addEventListener('click', run);
  // Capture phase: Monaco binds Ctrl+Enter itself and would take it first.
  const onKey = (ev: KeyboardEvent): void => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && !ev.altKey && !ev.shiftKey) {
      if (document.querySelector('dialog[open]') !== null) return;
      ev.preventDefault();
      ev.stopPropagation();
      run();
    }
  };
  window.addEventListener('keydown', onKey, true);
  cleanups.push(() => window.removeEventListener('keydown', onKey, true));

  // Ctrl/Cmd-S anywhere saves the active editor file, never the browser's
  // "save page" dialog. Inside the editor pane, Monaco and the tab bar do it
  // themselves; elsewhere (tree, terminal, status bar) it is taken before the
  // focused element sees it: a terminal would send ^S (XOFF) to its shell.
  const onSaveKey = (ev: KeyboardEvent): void => {
    if (!(ev.ctrlKey || ev.metaKey) || ev.altKey || ev.shiftKey || ev.key.toLowerCase() !== 's') return;
    if (ev.target instanceof Node && editorSlot.contains(ev.target)) return;
    ev.preventDefault();
    if (document.querySelector('dialog[open]') !== null) return;
    ev.stopPropagation();
    editor?.save();
  };
  window.addEventListener('keydown', onSaveKey, true);
  cleanups.push(() => window.removeEventListener('keydown', onSaveKey, true));

  // A file dropped outside the tree must not make the browser navigate to it
  // (and away from unsaved work). The tree's own handlers run first and
  // take its drops; everywhere else refuses them.
  const refuseDrag = (ev: DragEvent): void => {
    if (ev.defaultPrevented) return;
    ev.preventDefault();
    if (ev.dataTransfer !== null) ev.dataTransfer.dropEffect = 'none';
  };
  const refuseDrop = (ev: DragEvent): void => {
    ev.preventDefault();
  };
  document.addEventListener('dragover', refuseDrag);
  document.addEventListener('drop', refuseDrop);
  cleanups.push(() => {
    document.removeEventListener('dragover', refuseDrag);
    document.removeEventListener('drop', refuseDrop);
  });

  // The browser knows about the network before the socket does.
  const onOnline = (): void => client?.reconnectNow();
  const onOffline = (): void => client?.dropConnection('the browser is offline');
  window.addEventListener('online', onOnline);
  window.addEventListener('offline', onOffline);
  cleanups.push(() => {
    window.removeEventListener('online', onOnline);
    window.removeEventListener('offline', onOffline);
  });

  cleanups.push(
    registerTestingParts({
      client: () => client,
      terminal: (i) => terminals?.terminal(i),
      editor: () => editor?.editor(),
    }),
  );

  // ---- start ----
  const showOverlay = (text: string, actions: HTMLElement[] = [], busy = true): void => {
    overlay.hidden = false;
    overlay.classList.toggle('busy', busy);
    overlayText.textContent = text;
    overlayActions.replaceChildren(...actions);
  };

  const mountPanes = (started: StartedProject): void => {
    if (disposed || client === undefined) return;
    const c = client;
    overlay.hidden = true;
    // The terminal first: its first prompt is what a user waits for, and
    // Monaco's start (hundreds of milliseconds of the main thread) and the
    // preview's page would hold it up. They follow it.
    let promptShown: () => void = () => undefined;
    const afterPrompt = new Promise<void>((resolve) => (promptShown = resolve));
    const fallback = setTimeout(promptShown, FIRST_PROMPT_FIRST_MS);
    cleanups.push(() => clearTimeout(fallback));
    terminals = mountTerminals(terminalSlot, {
      client: c,
      project,
      runCommand: language?.run ?? [],
      onError: (m) => banner.show(m),
      // After the frame that draws it.
      onFirstOutput: () => requestAnimationFrame(() => setTimeout(promptShown)),
    });
    c.watchFs();
    editor = mountEditor(editorSlot, {
      client: c,
      project,
      onSaveState: drawSave,
      onError: (m) => banner.show(m),
      loadAfter: afterPrompt,
    });
    tree = mountFileTree(treeSlot, {
      client: c,
      project,
      onOpen: (path) => {
        editor?.open(path);
        if (narrowQuery.matches) setNarrowPane('editor');
      },
      onError: (m) => banner.show(m),
    });
    const previewUrl = started.previewUrl;
    void afterPrompt.then(() => {
      if (!disposed) preview = mountPreview(previewSlot, { previewUrl });
    });
    if (language !== undefined) editor.open(language.entry, { focus: 'if-idle' });
    runButton.disabled = language === undefined;
    applyLayout();
  };

  const start = async (): Promise<void> => {
    showOverlay(`Starting ${project}…`);
    connection = 'starting';
    drawConnection();
    banner.clear();
    let started: StartedProject;
    try {
      const [s, projects] = await Promise.all([api.startProject(project), api.listProjects()]);
      started = s;
      const summary = projects.find((p) => p.id === project);
      language = LANGUAGES.find((l) => l.id === summary?.language);
      languageBadge.textContent = summary === undefined ? '' : languageLabel(summary.language);
    } catch (e) {
      if (disposed) return;
      connection = 'closed';
      drawConnection();
      if (e instanceof ApiError && e.status === 404) {
        showOverlay(`There is no project named ${project}.`, [h('button', { class: 'button', text: 'All projects', attrs: { type: 'button' }, on: { click: ctx.goHome } })], false);
      } else {
        const message = `Starting ${project} failed: ${describeError(e)}`;
        showOverlay(message, [h('button', { class: 'button primary', testid: 'ide-retry', text: 'Retry', attrs: { type: 'button' }, on: { click: () => void start() } })], false);
        banner.show(message);
      }
      return;
    }
    if (disposed) return;
    let first: StartedProject | undefined = started;
    const c = new RunnerClient({
      // The first connection uses the token we just got; every reconnect asks
      // the control plane again (the sandbox may have been restarted, and
      // tokens expire).
      connect: async () => {
        const s = first ?? (await api.startProject(project));
        first = undefined;
        return { wsUrl: s.wsUrl, token: s.token };
      },
    });
    client = c;
    let mounted = false;
    // The runner sends `storage` events when health changes, not as its
    // backlog drains: poll while something is pending (the status bar's
    // "saving 23,356 files…"), rarely otherwise (a program may start writing).
    let storageTimer: ReturnType<typeof setTimeout> | undefined;
    const pollStorage = (): void => {
      clearTimeout(storageTimer);
      if (disposed || c.state !== 'open') return;
      c.request({ op: 'storage_status' }).then(
        (r) => {
          if (r.kind === 'storage') {
            storage = r.status;
            drawStorage();
          }
        },
        () => undefined,
      ).finally(() => {
        if (disposed || c.state !== 'open') return;
        const busy = storage !== null && (storage.pending > 0 || !storage.healthy);
        clearTimeout(storageTimer);
        storageTimer = setTimeout(pollStorage, busy ? STORAGE_POLL_BUSY_MS : STORAGE_POLL_IDLE_MS);
      });
    };
    cleanups.push(() => clearTimeout(storageTimer));
    cleanups.push(
      c.onState((s) => {
        connection = s;
        drawConnection();
        if (s === 'open') {
          if (!mounted) {
            mounted = true;
            mountPanes(started);
          }
          pollStorage();
        }
      }),
    );
    cleanups.push(
      c.onEvent((e) => {
        if (e.event === 'storage') {
          storage = e.status;
          drawStorage();
        }
      }),
    );
    showOverlay(`Connecting to ${project}…`);
    // Until the first success, say why connecting fails (it keeps retrying).
    const retryText = setInterval(() => {
      if (mounted) clearInterval(retryText);
      else if (c.lastError !== undefined) {
        showOverlay(`Connecting to ${project}… (${c.lastError})`);
        drawConnection();
      }
    }, 1000);
    cleanups.push(() => clearInterval(retryText));
    c.start();
  };
  void start();

  return {
    dispose() {
      disposed = true;
      for (const f of cleanups.splice(0)) f();
      terminals?.dispose();
      tree?.dispose();
      editor?.dispose();
      preview?.dispose();
      client?.close();
      banner.clear();
    },
  };
}
