// The editor pane's DOM around Monaco: tabs, the conflict banner, messages
// for files that do not open, the close-with-changes dialog. Plain DOM, so it
// draws before Monaco has loaded.

import { openDialog, type OpenDialog } from '../app/dialogs';
import { icon } from '../tree/icons';
import { baseName, parentOf } from '../tree/paths';
import { isDirty, type Doc, type EditorAction, type EditorState } from './model';

type CloseChoice = Extract<EditorAction, { type: 'closeChoice' }>['choice'];
import './editor.css';

export interface EditorViewHandlers {
  dispatch(action: EditorAction): void;
  download(path: string): void;
}

export interface EditorView {
  /** Where Monaco's code editor and diff editor go. */
  readonly codeHost: HTMLElement;
  readonly diffHost: HTMLElement;
  render(state: EditorState, monacoReady: boolean): void;
  dispose(): void;
}

/** Names shown on tabs: the file name, plus its folder when two tabs share a name. */
export function tabLabels(paths: readonly string[]): Map<string, { name: string; hint: string }> {
  const count = new Map<string, number>();
  for (const p of paths) count.set(baseName(p), (count.get(baseName(p)) ?? 0) + 1);
  const out = new Map<string, { name: string; hint: string }>();
  for (const p of paths) {
    const name = baseName(p);
    out.set(p, { name, hint: (count.get(name) ?? 0) > 1 ? parentOf(p) || './' : '' });
  }
  return out;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, testid?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = className;
  if (testid !== undefined) e.dataset['testid'] = testid;
  return e;
}

function textButton(label: string, className: string, testid: string, onClick: () => void): HTMLButtonElement {
  const b = el('button', className, testid);
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}

export function createEditorView(host: HTMLElement, h: EditorViewHandlers): EditorView {
  const root = el('div', 'editor-pane');
  const tabs = el('div', 'editor-tabs');
  tabs.setAttribute('role', 'tablist');
  tabs.setAttribute('aria-label', 'Open files');
  const body = el('div', 'editor-body');
  const codeHost = el('div', 'editor-monaco');
  const conflict = el('div', 'editor-conflict');
  const banner = el('div', 'editor-conflict-banner', 'conflict-banner');
  banner.setAttribute('role', 'alert');
  const bannerText = el('div', 'editor-conflict-text');
  const bannerSides = el('div', 'editor-conflict-sides');
  // Worded for both layouts of the diff: side by side (theirs left) and,
  // in a narrow pane, inline.
  const theirsLabel = el('span', 'editor-conflict-side theirs');
  theirsLabel.textContent = 'Theirs (red): the file in the sandbox now';
  const mineLabel = el('span', 'editor-conflict-side mine');
  mineLabel.textContent = 'Mine (green): your unsaved text, editable';
  bannerSides.append(theirsLabel, mineLabel);
  let conflictPath: string | null = null;
  const keepMine = textButton('Keep mine', 'editor-button primary', 'conflict-keep-mine', () => {
    if (conflictPath !== null) h.dispatch({ type: 'keepMine', path: conflictPath });
  });
  keepMine.title = 'Save your version over the one in the sandbox';
  const takeTheirs = textButton('Take theirs', 'editor-button', 'conflict-take-theirs', () => {
    if (conflictPath !== null) h.dispatch({ type: 'takeTheirs', path: conflictPath });
  });
  takeTheirs.title = 'Drop your changes and load the version in the sandbox (undo brings them back)';
  const bannerButtons = el('div', 'editor-conflict-buttons');
  bannerButtons.append(takeTheirs, keepMine);
  const bannerTop = el('div', 'editor-conflict-top');
  bannerTop.append(bannerText, bannerButtons);
  banner.append(bannerTop, bannerSides);
  const diffHost = el('div', 'editor-diff');
  conflict.append(banner, diffHost);
  const message = el('div', 'editor-message', 'editor-message');
  const empty = el('div', 'editor-empty');
  empty.textContent = 'Open a file from the tree on the left.';
  const loading = el('div', 'editor-loading');
  loading.textContent = 'Loading…';
  body.append(codeHost, conflict, message, empty, loading);

  // The close dialog of a tab with unsaved changes (the page's one dialog,
  // app/dialogs), open while the state asks.
  let closing: { path: string; dialog: OpenDialog } | null = null;

  root.append(tabs, body);
  host.append(root);

  const tabEls = new Map<string, { tab: HTMLElement; drawn: string }>();

  function drawTab(doc: Doc, label: { name: string; hint: string }, active: boolean): HTMLElement {
    let entry = tabEls.get(doc.path);
    if (entry === undefined) {
      const tab = el('div', 'editor-tab', 'editor-tab');
      tab.dataset['path'] = doc.path;
      tab.setAttribute('role', 'tab');
      entry = { tab, drawn: '' };
      tabEls.set(doc.path, entry);
    }
    const dirty = isDirty(doc);
    const key = [active, dirty, doc.saving !== null, doc.removed, doc.conflict !== null, doc.saveError, doc.status, label.name, label.hint].join('|');
    if (key === entry.drawn) return entry.tab;
    entry.drawn = key;
    const { tab } = entry;
    tab.setAttribute('aria-selected', String(active));
    tab.tabIndex = active ? 0 : -1;
    tab.classList.toggle('active', active);
    tab.classList.toggle('dirty', dirty);
    tab.classList.toggle('removed', doc.removed);
    tab.classList.toggle('conflict', doc.conflict !== null);
    tab.classList.toggle('error', doc.saveError !== null);
    const states = [
      doc.removed ? 'deleted in the sandbox' : '',
      doc.conflict !== null ? 'changed in the sandbox: resolve the conflict' : '',
      doc.saving !== null ? 'saving…' : dirty ? 'unsaved changes' : '',
      doc.saveError ?? '',
    ].filter((s) => s !== '');
    tab.title = states.length > 0 ? `${doc.path} (${states.join('; ')})` : doc.path;
    const name = el('span', 'editor-tab-name');
    name.textContent = label.name;
    const parts: Node[] = [name];
    if (label.hint !== '') {
      const hint = el('span', 'editor-tab-hint');
      hint.textContent = label.hint;
      parts.push(hint);
    }
    if (doc.removed) {
      const gone = el('span', 'editor-tab-removed', 'editor-tab-removed');
      gone.textContent = 'deleted';
      parts.push(gone);
    }
    if (doc.conflict !== null) {
      const c = el('span', 'editor-tab-conflict', 'editor-tab-conflict');
      c.textContent = '!';
      c.setAttribute('aria-label', 'conflict');
      parts.push(c);
    }
    if (dirty) {
      const dot = el('span', doc.saving !== null ? 'editor-tab-dirty saving' : 'editor-tab-dirty', 'editor-tab-dirty');
      dot.setAttribute('aria-label', 'unsaved changes');
      parts.push(dot);
    }
    const close = el('button', 'editor-tab-close', 'editor-tab-close');
    close.type = 'button';
    close.tabIndex = -1;
    close.setAttribute('aria-label', `Close ${label.name}`);
    close.title = 'Close';
    close.append(icon('close'));
    parts.push(close);
    tab.replaceChildren(...parts);
    return tab;
  }

  tabs.addEventListener('click', (e) => {
    const tab = e.target instanceof Element ? e.target.closest<HTMLElement>('.editor-tab') : null;
    const path = tab?.dataset['path'];
    if (path === undefined) return;
    if (e.target instanceof Element && e.target.closest('.editor-tab-close') !== null) {
      h.dispatch({ type: 'close', path });
    } else {
      h.dispatch({ type: 'activate', path });
    }
  });
  // Keyboard: arrows move between tabs, Delete closes one.
  tabs.addEventListener('keydown', (e) => {
    const tab = e.target instanceof Element ? e.target.closest<HTMLElement>('.editor-tab') : null;
    const path = tab?.dataset['path'];
    if (tab === null || path === undefined) return;
    const all = Array.from(tabs.querySelectorAll<HTMLElement>('.editor-tab'));
    const at = all.indexOf(tab);
    const go = (i: number): void => {
      const next = all[(i + all.length) % all.length];
      const p = next?.dataset['path'];
      if (next === undefined || p === undefined) return;
      h.dispatch({ type: 'activate', path: p });
      next.focus();
    };
    if (e.key === 'ArrowRight') go(at + 1);
    else if (e.key === 'ArrowLeft') go(at - 1);
    else if (e.key === 'Home') go(0);
    else if (e.key === 'End') go(all.length - 1);
    else if (e.key === 'Delete') h.dispatch({ type: 'close', path });
    else return;
    e.preventDefault();
  });
  // Middle click closes, as in every tabbed editor; the mousedown would
  // otherwise start autoscroll.
  tabs.addEventListener('mousedown', (e) => {
    if (e.button === 1) e.preventDefault();
  });
  tabs.addEventListener('auxclick', (e) => {
    if (e.button !== 1) return;
    const path = e.target instanceof Element ? e.target.closest<HTMLElement>('.editor-tab')?.dataset['path'] : undefined;
    if (path !== undefined) {
      e.preventDefault();
      h.dispatch({ type: 'close', path });
    }
  });
  // A vertical wheel scrolls the tab strip sideways.
  tabs.addEventListener(
    'wheel',
    (e) => {
      if (e.deltaY !== 0 && tabs.scrollWidth > tabs.clientWidth) {
        tabs.scrollLeft += e.deltaY;
        e.preventDefault();
      }
    },
    { passive: false },
  );

  let drawnMessageFor = '';
  let lastActive: string | null = null;

  function render(state: EditorState, monacoReady: boolean): void {
    const labels = tabLabels(state.docs.map((d) => d.path));
    const wanted: HTMLElement[] = [];
    for (const doc of state.docs) {
      const label = labels.get(doc.path) ?? { name: doc.path, hint: '' };
      wanted.push(drawTab(doc, label, doc.path === state.active));
    }
    for (const path of [...tabEls.keys()]) if (!state.docs.some((d) => d.path === path)) tabEls.delete(path);
    // Move only tabs out of place: a detached tab would drop the keyboard focus.
    let cursor = tabs.firstElementChild;
    for (const node of wanted) {
      if (cursor === node) cursor = cursor.nextElementSibling;
      else tabs.insertBefore(node, cursor);
    }
    while (cursor !== null) {
      const after = cursor.nextElementSibling;
      cursor.remove();
      cursor = after;
    }
    tabs.hidden = state.docs.length === 0;
    if (state.active !== lastActive) {
      lastActive = state.active;
      const tab = state.active === null ? undefined : tabEls.get(state.active)?.tab;
      tab?.scrollIntoView({ block: 'nearest', inline: 'nearest' });
    }

    const doc = state.docs.find((d) => d.path === state.active);
    const refused = doc?.status === 'refused' ? doc : undefined;
    const waiting = doc !== undefined && (doc.status === 'loading' || (doc.status === 'ready' && !monacoReady));
    empty.hidden = doc !== undefined;
    loading.hidden = !waiting;
    message.hidden = refused === undefined;
    if (refused !== undefined && refused.refusal !== null) {
      const key = `${refused.path}|${refused.refusal.message}`;
      if (key !== drawnMessageFor) {
        drawnMessageFor = key;
        const text = el('p', '');
        text.textContent = refused.refusal.message;
        const parts: Node[] = [text];
        if (refused.refusal.reason !== 'failed') {
          const link = el('a', 'editor-download', 'editor-download');
          link.href = '#';
          link.textContent = `Download ${baseName(refused.path)}`;
          link.addEventListener('click', (e) => {
            e.preventDefault();
            h.download(refused.path);
          });
          parts.push(link);
        }
        message.replaceChildren(...parts);
      }
    } else {
      drawnMessageFor = '';
    }
    const inConflict = doc?.status === 'ready' && doc.conflict !== null && monacoReady ? doc : undefined;
    conflict.hidden = inConflict === undefined;
    conflictPath = inConflict?.path ?? null;
    if (inConflict !== undefined) {
      bannerText.textContent = `"${baseName(inConflict.path)}" changed in the sandbox while you were editing it. Keep your version or take theirs; nothing is overwritten until you choose.`;
    }
    const showCode = doc?.status === 'ready' && doc.conflict === null && monacoReady;
    codeHost.classList.toggle('covered', !showCode);

    const asking = state.confirmClose;
    if (closing?.path !== asking) {
      closing?.dialog.close();
      closing = null;
      if (asking !== null) {
        const dialog = openDialog<CloseChoice>(
          {
            title: 'Unsaved changes',
            message: `"${baseName(asking)}" has unsaved changes. Save them before closing?`,
            choices: [
              { value: 'cancel', label: 'Cancel', testid: 'confirm-cancel' },
              { value: 'discard', label: "Don't save", kind: 'danger', testid: 'confirm-ok' },
              { value: 'save', label: 'Save', kind: 'primary', testid: 'editor-close-save' },
            ],
            cancel: 'cancel',
            focus: 'save',
          },
          (choice) => {
            closing = null;
            h.dispatch({ type: 'closeChoice', choice });
          },
        );
        closing = { path: asking, dialog };
      }
    }
  }

  return {
    codeHost,
    diffHost,
    render,
    dispose() {
      closing?.dialog.close();
      closing = null;
      root.remove();
    },
  };
}
