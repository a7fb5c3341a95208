// The tree's DOM: draws a TreeState and turns clicks, keys and drags into
// TreeActions. Rows are kept per path and only patched, so a listing that
// changes one row does not rebuild the others (or steal the name input's
// focus).

import { openDialog, type OpenDialog } from '../app/dialogs';
import type { Entry } from '../protocol/generated';
import { icon, type IconName } from './icons';
import { entryAt, isExpanded, visibleRows, type TreeAction, type TreeState } from './model';
import { baseName, parentOf } from './paths';
import './tree.css';

export interface TreeViewHandlers {
  dispatch(action: TreeAction): void;
  /** Desktop files or folders dropped on folder `target`. */
  drop(target: string, dt: DataTransfer): void;
  /** The upload button or menu item: pick files for folder `target`. */
  pick(target: string): void;
  cancelUpload(): void;
}

export interface TreeView {
  render(state: TreeState): void;
  dispose(): void;
}

/** The drag type of a row dragged inside the tree. */
const ROW_DRAG = 'application/x-cloudcode-path';

interface RowParts {
  el: HTMLDivElement;
  twisty: HTMLSpanElement;
  glyph: HTMLSpanElement;
  name: HTMLSpanElement;
  /** What was drawn last, to skip unchanged rows. */
  drawn: string;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

function button(testid: string, label: string, glyph: IconName, onClick: () => void): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'tree-tool';
  b.dataset['testid'] = testid;
  b.title = label;
  b.setAttribute('aria-label', label);
  b.append(icon(glyph));
  b.addEventListener('click', onClick);
  return b;
}

let nextRowId = 0;

export function createTreeView(host: HTMLElement, h: TreeViewHandlers): TreeView {
  let state: TreeState | null = null;
  const root = document.createElement('div');
  root.className = 'tree-pane';

  // Toolbar.
  const toolbar = document.createElement('div');
  toolbar.className = 'tree-toolbar';
  const title = document.createElement('span');
  title.className = 'tree-title';
  title.textContent = 'Files';
  const targetFolder = (): string => {
    if (state === null || state.selected === null) return '';
    return entryAt(state, state.selected)?.kind === 'dir' ? state.selected : parentOf(state.selected);
  };
  toolbar.append(
    title,
    button('tree-new-file', 'New file', 'newFile', () => h.dispatch({ type: 'startCreate', what: 'file' })),
    button('tree-new-folder', 'New folder', 'newFolder', () => h.dispatch({ type: 'startCreate', what: 'dir' })),
    button('tree-upload', 'Upload files', 'upload', () => h.pick(targetFolder())),
    button('tree-refresh', 'Refresh', 'refresh', () => h.dispatch({ type: 'reconnected' })),
  );

  // The rows.
  const list = document.createElement('div');
  list.className = 'tree-list';
  list.dataset['testid'] = 'tree';
  list.setAttribute('role', 'tree');
  list.setAttribute('aria-label', 'Files');
  list.tabIndex = 0;
  const notice = document.createElement('div');
  notice.className = 'tree-notice';

  // The one name input, moved to where the edit happens.
  const nameBox = document.createElement('div');
  nameBox.className = 'tree-name-box';
  const input = document.createElement('input');
  input.type = 'text';
  input.className = 'tree-name-input';
  input.dataset['testid'] = 'tree-name-input';
  input.spellcheck = false;
  input.autocomplete = 'off';
  input.setAttribute('aria-label', 'Name');
  const problem = document.createElement('div');
  problem.className = 'tree-name-problem';
  problem.setAttribute('role', 'alert');
  nameBox.append(input, problem);
  const createRow = document.createElement('div');
  createRow.className = 'tree-row tree-create-row';
  const createGlyph = document.createElement('span');
  createGlyph.className = 'tree-glyph';
  createRow.append(document.createElement('span'), createGlyph);
  (createRow.firstElementChild as HTMLElement).className = 'tree-twisty';

  // Upload progress.
  const uploadBox = document.createElement('div');
  uploadBox.className = 'tree-upload';
  uploadBox.dataset['testid'] = 'upload-progress';
  uploadBox.hidden = true;
  const uploadLabel = document.createElement('div');
  uploadLabel.className = 'tree-upload-label';
  const uploadBar = document.createElement('div');
  uploadBar.className = 'tree-upload-bar';
  const uploadFill = document.createElement('div');
  uploadFill.className = 'tree-upload-fill';
  uploadBar.append(uploadFill);
  const uploadBytes = document.createElement('span');
  uploadBytes.className = 'tree-upload-bytes';
  const uploadCancel = document.createElement('button');
  uploadCancel.type = 'button';
  uploadCancel.className = 'tree-upload-cancel';
  uploadCancel.dataset['testid'] = 'upload-cancel';
  uploadCancel.title = 'Cancel the upload';
  uploadCancel.setAttribute('aria-label', 'Cancel the upload');
  uploadCancel.append(icon('close'));
  uploadCancel.addEventListener('click', () => h.cancelUpload());
  const uploadLine = document.createElement('div');
  uploadLine.className = 'tree-upload-line';
  uploadLine.append(uploadBytes, uploadCancel);
  uploadBox.append(uploadLabel, uploadBar, uploadLine);

  // Context menu; the confirmation is the page's one dialog (app/dialogs).
  const menu = document.createElement('div');
  menu.className = 'tree-menu';
  menu.setAttribute('role', 'menu');
  menu.hidden = true;
  /** The open confirmation and the question it asks. */
  let confirming: { question: TreeState['confirm']; dialog: OpenDialog } | null = null;

  root.append(toolbar, list, uploadBox, menu);
  host.append(root);

  const rows = new Map<string, RowParts>();
  let drawnEditKey = '';
  let rendering = false;
  let lastSelected: string | null = null;

  function rowFor(path: string): RowParts {
    let parts = rows.get(path);
    if (parts === undefined) {
      const el = document.createElement('div');
      el.className = 'tree-row';
      el.id = `tree-row-${++nextRowId}`;
      el.setAttribute('role', 'treeitem');
      el.dataset['testid'] = 'tree-item';
      el.dataset['path'] = path;
      el.draggable = true;
      const twisty = document.createElement('span');
      twisty.className = 'tree-twisty';
      const glyph = document.createElement('span');
      glyph.className = 'tree-glyph';
      const name = document.createElement('span');
      name.className = 'tree-name';
      el.append(twisty, glyph, name);
      parts = { el, twisty, glyph, name, drawn: '' };
      rows.set(path, parts);
    }
    return parts;
  }

  function drawRow(s: TreeState, parts: RowParts, entry: Entry, depth: number): void {
    const open = entry.kind === 'dir' && isExpanded(s, entry.path);
    const renaming = s.edit?.kind === 'rename' && s.edit.path === entry.path;
    const flags = [
      entry.kind,
      depth,
      open ? 'o' : '',
      s.selected === entry.path ? 's' : '',
      s.busy[entry.path] ? 'b' : '',
      s.dropTarget === entry.path ? 'd' : '',
      s.menu?.path === entry.path ? 'm' : '',
      renaming ? 'r' : '',
      entry.name,
      entry.target ?? '',
    ].join('|');
    if (flags === parts.drawn) return;
    parts.drawn = flags;
    const { el } = parts;
    el.dataset['kind'] = entry.kind;
    el.setAttribute('aria-level', String(depth + 1));
    el.setAttribute('aria-selected', String(s.selected === entry.path));
    if (entry.kind === 'dir') el.setAttribute('aria-expanded', String(open));
    else el.removeAttribute('aria-expanded');
    el.style.paddingLeft = `${6 + depth * 12}px`;
    el.classList.toggle('selected', s.selected === entry.path);
    el.classList.toggle('busy', s.busy[entry.path] === true);
    el.classList.toggle('drop-target', s.dropTarget === entry.path);
    el.classList.toggle('menu-open', s.menu?.path === entry.path);
    el.title = entry.kind === 'symlink' ? `${entry.path} → ${entry.target ?? '?'}` : entry.path;
    parts.twisty.replaceChildren(entry.kind === 'dir' ? icon('chevron', open ? 'icon open' : 'icon') : '');
    parts.glyph.replaceChildren(icon(entry.kind === 'dir' ? 'folder' : entry.kind === 'symlink' ? 'link' : 'file'));
    parts.glyph.className = `tree-glyph kind-${entry.kind}`;
    if (renaming) {
      parts.name.replaceChildren(nameBox);
    } else {
      parts.name.textContent = entry.name;
    }
  }

  function syncChildren(parent: HTMLElement, wanted: readonly Element[]): void {
    // Move only what is out of place: the node holding the focused input
    // is never detached by an insertion above it.
    let cursor = parent.firstElementChild;
    for (const node of wanted) {
      if (cursor === node) {
        cursor = cursor.nextElementSibling;
        continue;
      }
      parent.insertBefore(node, cursor);
    }
    while (cursor !== null) {
      const after = cursor.nextElementSibling;
      cursor.remove();
      cursor = after;
    }
  }

  function renderRows(s: TreeState): void {
    const wanted: Element[] = [];
    const seen = new Set<string>();
    for (const row of visibleRows(s)) {
      if (row.kind === 'create') {
        createRow.style.paddingLeft = `${6 + row.depth * 12}px`;
        createGlyph.replaceChildren(icon(row.what === 'dir' ? 'folder' : 'file'));
        if (createRow.lastElementChild !== nameBox) createRow.append(nameBox);
        wanted.push(createRow);
        continue;
      }
      const parts = rowFor(row.entry.path);
      seen.add(row.entry.path);
      drawRow(s, parts, row.entry, row.depth);
      wanted.push(parts.el);
    }
    for (const path of rows.keys()) if (!seen.has(path)) rows.delete(path);
    if (s.dirs[''] === undefined || (s.dirs['']?.length === 0 && s.edit === null)) {
      notice.textContent =
        s.rootError !== null
          ? s.rootError
          : s.dirs[''] === undefined
            ? s.offline
              ? 'Waiting for the connection…'
              : 'Loading…'
            : 'No files yet. Create one or drop files here.';
      wanted.push(notice);
    }
    syncChildren(list, wanted);
    list.classList.toggle('drop-target', s.dropTarget === '');
    const selected = s.selected === null ? undefined : rows.get(s.selected);
    if (selected !== undefined) list.setAttribute('aria-activedescendant', selected.el.id);
    else list.removeAttribute('aria-activedescendant');
    if (s.selected !== lastSelected && selected !== undefined) {
      selected.el.scrollIntoView({ block: 'nearest' });
    }
    lastSelected = s.selected;
  }

  function renderEdit(s: TreeState, hadFocus: boolean): void {
    const edit = s.edit;
    const key = edit === null ? '' : edit.kind === 'create' ? `c:${edit.parent}:${edit.what}` : `r:${edit.path}`;
    if (key !== drawnEditKey) {
      drawnEditKey = key;
      if (edit !== null) {
        input.value = edit.kind === 'rename' ? baseName(edit.path) : '';
        input.placeholder = edit.kind === 'create' ? (edit.what === 'dir' ? 'Folder name' : 'File name') : '';
        input.focus();
        if (edit.kind === 'rename') {
          // Select the stem, like desktop file managers: "main" of "main.py".
          const dot = input.value.lastIndexOf('.');
          input.setSelectionRange(0, dot > 0 ? dot : input.value.length);
        }
      } else if (hadFocus) {
        // The input left with its row: keep the keyboard in the tree.
        list.focus({ preventScroll: true });
      }
    }
    problem.textContent = edit?.problem ?? '';
    problem.hidden = edit?.problem == null;
    input.classList.toggle('invalid', edit?.problem != null);
  }

  function renderUpload(s: TreeState): void {
    const u = s.upload;
    uploadBox.hidden = u === null;
    if (u === null) return;
    const files = u.fileCount > 1 ? ` (${u.fileIndex + 1} of ${u.fileCount})` : '';
    uploadLabel.textContent = `Uploading ${u.name}${files}`;
    uploadLabel.title = u.name;
    uploadBytes.textContent = `${formatBytes(u.sent)} / ${formatBytes(u.total)}`;
    uploadBox.dataset['sent'] = String(u.sent);
    uploadBox.dataset['total'] = String(u.total);
    uploadBox.dataset['name'] = u.name;
    const ratio = u.total > 0 ? u.sent / u.total : 1;
    uploadFill.style.width = `${(Math.min(1, ratio) * 100).toFixed(1)}%`;
  }

  function menuItem(testid: string, label: string, action: () => void): HTMLButtonElement {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'tree-menu-item';
    b.setAttribute('role', 'menuitem');
    b.dataset['testid'] = testid;
    b.textContent = label;
    b.addEventListener('click', action);
    return b;
  }

  let drawnMenu: TreeState['menu'] = null;
  function renderMenu(s: TreeState): void {
    if (s.menu === drawnMenu) return;
    drawnMenu = s.menu;
    if (s.menu === null) {
      menu.hidden = true;
      menu.replaceChildren();
      return;
    }
    const path = s.menu.path;
    const entry = path === null ? undefined : entryAt(s, path);
    const folder = path === null ? '' : entry?.kind === 'dir' ? path : parentOf(path);
    const items: HTMLElement[] = [
      menuItem('tree-menu-new-file', 'New File…', () => h.dispatch({ type: 'startCreate', what: 'file', at: path })),
      menuItem('tree-menu-new-folder', 'New Folder…', () => h.dispatch({ type: 'startCreate', what: 'dir', at: path })),
      menuItem('tree-menu-upload', 'Upload Files…', () => {
        h.dispatch({ type: 'closeMenu' });
        h.pick(folder);
      }),
    ];
    if (path !== null) {
      const sep = document.createElement('div');
      sep.className = 'tree-menu-sep';
      items.push(sep);
      if (entry?.kind !== 'dir' && entry?.kind !== 'other') {
        items.push(menuItem('tree-menu-download', 'Download', () => h.dispatch({ type: 'download', path })));
      }
      items.push(
        menuItem('tree-menu-rename', 'Rename…', () => h.dispatch({ type: 'startRename', path })),
        menuItem('tree-menu-delete', 'Delete…', () => h.dispatch({ type: 'requestDelete', path })),
      );
    }
    menu.replaceChildren(...items);
    menu.hidden = false;
    // Keep it inside the window.
    menu.style.left = '0px';
    menu.style.top = '0px';
    const box = menu.getBoundingClientRect();
    const x = Math.max(0, Math.min(s.menu.x, window.innerWidth - box.width - 4));
    const y = Math.max(0, Math.min(s.menu.y, window.innerHeight - box.height - 4));
    menu.style.left = `${x}px`;
    menu.style.top = `${y}px`;
    items.find((i): i is HTMLButtonElement => i instanceof HTMLButtonElement)?.focus();
  }

  function renderConfirm(s: TreeState): void {
    const c = s.confirm;
    if (confirming !== null && confirming.question === c) return;
    confirming?.dialog.close();
    confirming = null;
    if (c === null) return;
    const label = c.kind === 'delete' ? 'Delete' : 'Replace';
    const dialog = openDialog(
      {
        title: label,
        message: c.message,
        choices: [
          { value: false, label: 'Cancel', testid: 'confirm-cancel' },
          { value: true, label, kind: 'danger', testid: 'confirm-ok' },
        ],
        cancel: false,
        // A delete cannot be undone: the safe choice has the focus.
        focus: c.kind !== 'delete',
      },
      (ok) => {
        confirming = null;
        h.dispatch({ type: ok ? 'confirmOk' : 'confirmCancel' });
      },
    );
    confirming = { question: c, dialog };
  }

  let drawnTree: unknown[] = [];
  function render(s: TreeState): void {
    state = s;
    rendering = true;
    try {
      // The rows depend on these fields only; an upload's progress does not
      // redraw them.
      const treeKey = [s.dirs, s.expanded, s.selected, s.edit, s.busy, s.dropTarget, s.menu, s.rootError, s.offline];
      if (treeKey.some((v, i) => v !== drawnTree[i])) {
        drawnTree = treeKey;
        // Read before the rows change: removing the input's row drops its focus.
        const inputHadFocus = document.activeElement === input;
        renderRows(s);
        renderEdit(s, inputHadFocus);
      }
      renderUpload(s);
      renderMenu(s);
      renderConfirm(s);
    } finally {
      rendering = false;
    }
  }

  // Input handling.
  const rowPath = (target: EventTarget | null): string | null => {
    const el = target instanceof Element ? target.closest<HTMLElement>('.tree-row[data-path]') : null;
    return el?.dataset['path'] ?? null;
  };
  /** The folder a drop on `target` goes into. */
  const dropFolder = (target: EventTarget | null): string => {
    const path = rowPath(target);
    if (path === null || state === null) return '';
    return entryAt(state, path)?.kind === 'dir' ? path : parentOf(path);
  };

  list.addEventListener('click', (e) => {
    if (e.target instanceof Node && nameBox.contains(e.target)) return;
    const path = rowPath(e.target);
    if (path === null) h.dispatch({ type: 'select', path: null });
    else h.dispatch({ type: 'activate', path });
  });
  list.addEventListener('contextmenu', (e) => {
    if (e.target instanceof Node && nameBox.contains(e.target)) return;
    e.preventDefault();
    h.dispatch({ type: 'openMenu', path: rowPath(e.target), x: e.clientX, y: e.clientY });
  });
  const treeKeys = new Set(['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'Home', 'End', 'Enter', 'F2', 'Delete', 'Escape']);
  list.addEventListener('keydown', (e) => {
    if (e.target === input || e.altKey || e.ctrlKey || e.metaKey) return;
    // Backspace deletes on macOS keyboards, which have no Delete key.
    const key = e.key === 'Backspace' ? 'Delete' : e.key;
    if (!treeKeys.has(key)) return;
    e.preventDefault();
    h.dispatch({ type: 'key', key });
  });

  input.addEventListener('input', () => h.dispatch({ type: 'nameChanged', name: input.value }));
  input.addEventListener('keydown', (e) => {
    e.stopPropagation();
    if (e.key === 'Enter') {
      e.preventDefault();
      h.dispatch({ type: 'submitName', name: input.value });
    } else if (e.key === 'Escape') {
      e.preventDefault();
      h.dispatch({ type: 'cancelEdit' });
    }
  });
  input.addEventListener('blur', () => {
    // Leaving the input keeps a good name and drops an empty or bad one.
    if (rendering || state?.edit == null) return;
    if (input.value.trim() === '' || state.edit.problem !== null) h.dispatch({ type: 'cancelEdit' });
    else h.dispatch({ type: 'submitName', name: input.value });
  });

  // Drags: rows onto folders (move), desktop files onto the tree (upload).
  list.addEventListener('dragstart', (e) => {
    const path = rowPath(e.target);
    if (path === null || e.dataTransfer === null) return;
    e.dataTransfer.setData(ROW_DRAG, path);
    e.dataTransfer.setData('text/plain', path);
    e.dataTransfer.effectAllowed = 'move';
  });
  const accepts = (dt: DataTransfer | null): 'files' | 'row' | null => {
    if (dt === null) return null;
    if (dt.types.includes(ROW_DRAG)) return 'row';
    return dt.types.includes('Files') ? 'files' : null;
  };
  list.addEventListener('dragover', (e) => {
    const kind = accepts(e.dataTransfer);
    if (kind === null || e.dataTransfer === null) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = kind === 'row' ? 'move' : 'copy';
    h.dispatch({ type: 'dragOver', path: dropFolder(e.target) });
  });
  list.addEventListener('dragleave', (e) => {
    if (e.relatedTarget instanceof Node && list.contains(e.relatedTarget)) return;
    h.dispatch({ type: 'dragOver', path: null });
  });
  list.addEventListener('drop', (e) => {
    const kind = accepts(e.dataTransfer);
    h.dispatch({ type: 'dragOver', path: null });
    if (kind === null || e.dataTransfer === null) return;
    e.preventDefault();
    const folder = dropFolder(e.target);
    if (kind === 'row') {
      const from = e.dataTransfer.getData(ROW_DRAG);
      if (from !== '') h.dispatch({ type: 'move', from, toDir: folder });
    } else {
      h.drop(folder, e.dataTransfer);
    }
  });
  list.addEventListener('dragend', () => h.dispatch({ type: 'dragOver', path: null }));

  // The menu closes on any press outside it, on Escape and when the window
  // loses focus.
  const onPointerDown = (e: PointerEvent): void => {
    if (!menu.hidden && !(e.target instanceof Node && menu.contains(e.target))) h.dispatch({ type: 'closeMenu' });
  };
  const onWindowBlur = (): void => h.dispatch({ type: 'closeMenu' });
  menu.addEventListener('keydown', (e) => {
    const items = Array.from(menu.querySelectorAll<HTMLButtonElement>('button'));
    const at = items.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'Escape') {
      e.preventDefault();
      h.dispatch({ type: 'closeMenu' });
      list.focus();
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const step = e.key === 'ArrowDown' ? 1 : -1;
      items[(at + step + items.length) % items.length]?.focus();
    }
  });
  document.addEventListener('pointerdown', onPointerDown, true);
  window.addEventListener('blur', onWindowBlur);

  return {
    render,
    dispose() {
      document.removeEventListener('pointerdown', onPointerDown, true);
      window.removeEventListener('blur', onWindowBlur);
      confirming?.dialog.close();
      confirming = null;
      root.remove();
    },
  };
}
