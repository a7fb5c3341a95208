// The file tree's state and every decision it makes, as a pure reducer:
// `reduceTree(state, action) -> [state, effects]`. Nothing here touches the
// DOM or the network; `index.ts` carries the effects out and feeds the
// results back as actions, so all of this is unit-tested (model.test.ts).

import type { Entry, EntryKind, FsChange } from '../protocol/generated';
import { ancestorsOf, baseName, isWithin, joinPath, nameProblem, parentOf } from './paths';

export type NameEdit =
  | { kind: 'create'; what: 'file' | 'dir'; parent: string; problem: string | null }
  | { kind: 'rename'; path: string; problem: string | null };

export type Confirm =
  | { kind: 'delete'; path: string; entryKind: EntryKind; message: string }
  | { kind: 'replace'; job: number; message: string };

export interface UploadProgress {
  job: number;
  /** The file being sent now, as a workspace path. */
  name: string;
  fileIndex: number;
  fileCount: number;
  /** Bytes of the whole job. */
  sent: number;
  total: number;
}

export interface TreeState {
  /** Listed directories ("" is the root), entries as the runner sorted them. */
  dirs: Readonly<Record<string, readonly Entry[]>>;
  /** Directories the user opened; the root is always open. */
  expanded: Readonly<Record<string, true>>;
  /**
   * `list` requests in flight. `stale`: the directory changed while its
   * listing was under way, so the answer may predate the change and it is
   * listed once more when the answer lands.
   */
  listing: Readonly<Record<string, 'loading' | 'stale'>>;
  selected: string | null;
  edit: NameEdit | null;
  /** Paths with a create, rename or delete in flight. */
  busy: Readonly<Record<string, true>>;
  /** A folder whose contents are being counted for a delete confirmation. */
  counting: string | null;
  confirm: Confirm | null;
  menu: { path: string | null; x: number; y: number } | null;
  upload: UploadProgress | null;
  /** The directory a desktop drag is over (highlighted), "" for the root. */
  dropTarget: string | null;
  rootError: string | null;
  /** A request failed for want of a connection: list nothing until `reconnected`. */
  offline: boolean;
}

export type TreeEffect =
  | { type: 'list'; path: string }
  | { type: 'open'; path: string }
  | { type: 'create'; what: 'file' | 'dir'; path: string }
  | { type: 'rename'; from: string; to: string }
  | { type: 'delete'; path: string; recursive: boolean }
  /** Count what deleting a folder would remove, for the confirmation. */
  | { type: 'count'; path: string }
  | { type: 'download'; path: string }
  | { type: 'startUpload'; job: number }
  | { type: 'cancelUpload'; job: number }
  | { type: 'error'; message: string };

export type OpResult =
  | { op: 'create'; what: 'file' | 'dir'; path: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'delete'; path: string };

export type TreeAction =
  | { type: 'start' }
  /** The connection came back: events may have been missed. */
  | { type: 'reconnected' }
  | { type: 'listed'; path: string; entries: readonly Entry[] }
  | { type: 'listFailed'; path: string; code: string; message: string }
  | { type: 'fsChanged'; changes: readonly FsChange[] }
  | { type: 'select'; path: string | null }
  /** A click on a row, or Enter: files open, folders fold. */
  | { type: 'activate'; path: string }
  | { type: 'toggle'; path: string }
  /** Opens a folder and its ancestors (where a drop or upload lands). */
  | { type: 'reveal'; path: string }
  | { type: 'key'; key: string }
  /** `at`: the row a menu was opened on (else the selection decides). */
  | { type: 'startCreate'; what: 'file' | 'dir'; at?: string | null }
  | { type: 'startRename'; path?: string }
  | { type: 'nameChanged'; name: string }
  | { type: 'submitName'; name: string }
  | { type: 'cancelEdit' }
  /** A row dragged onto a folder ("" = the root). */
  | { type: 'move'; from: string; toDir: string }
  | { type: 'opDone'; result: OpResult }
  | { type: 'opFailed'; paths: readonly string[]; message: string }
  | { type: 'requestDelete'; path?: string }
  | { type: 'counted'; path: string; files: number; dirs: number; depth: number; complete: boolean }
  | { type: 'countFailed'; path: string; message: string }
  | { type: 'confirmOk' }
  | { type: 'confirmCancel' }
  | { type: 'openMenu'; path: string | null; x: number; y: number }
  | { type: 'closeMenu' }
  | { type: 'download'; path?: string }
  | { type: 'dragOver'; path: string | null }
  | { type: 'askReplace'; job: number; names: readonly string[] }
  | { type: 'uploadProgress'; progress: UploadProgress }
  | { type: 'uploadEnded'; job: number; dirs: readonly string[] };

export function initialTree(): TreeState {
  return {
    dirs: {},
    expanded: {},
    listing: {},
    selected: null,
    edit: null,
    busy: {},
    counting: null,
    confirm: null,
    menu: null,
    upload: null,
    dropTarget: null,
    rootError: null,
    offline: false,
  };
}

export type Row =
  | { kind: 'entry'; entry: Entry; depth: number }
  /** Where the name input of a new file or folder goes. */
  | { kind: 'create'; what: 'file' | 'dir'; parent: string; depth: number };

export function isExpanded(state: TreeState, path: string): boolean {
  return path === '' || state.expanded[path] === true;
}

/** The rows on screen, in order: expanded folders show their children. */
export function visibleRows(state: TreeState): Row[] {
  const rows: Row[] = [];
  const edit = state.edit;
  const walk = (dir: string, depth: number): void => {
    if (edit?.kind === 'create' && edit.parent === dir) {
      rows.push({ kind: 'create', what: edit.what, parent: dir, depth });
    }
    for (const entry of state.dirs[dir] ?? []) {
      rows.push({ kind: 'entry', entry, depth });
      if (entry.kind === 'dir' && isExpanded(state, entry.path)) walk(entry.path, depth + 1);
    }
  };
  walk('', 0);
  return rows;
}

/** The entry at `path` if its directory is listed. */
export function entryAt(state: TreeState, path: string): Entry | undefined {
  return state.dirs[parentOf(path)]?.find((e) => e.path === path);
}

/** Whether a directory's rows are on screen: it and all its ancestors are open. */
function isShown(state: TreeState, dir: string): boolean {
  if (!isExpanded(state, dir)) return false;
  return dir === '' || ancestorsOf(dir).every((a) => isExpanded(state, a));
}

type Step = [TreeState, TreeEffect[]];

/** Lists `dir`, or marks its listing in flight as stale (one list per directory at a time). */
function relist(state: TreeState, dir: string, effects: TreeEffect[]): TreeState {
  const current = state.listing[dir];
  if (current === 'stale') return state;
  if (current === 'loading') return { ...state, listing: { ...state.listing, [dir]: 'stale' } };
  effects.push({ type: 'list', path: dir });
  return { ...state, listing: { ...state.listing, [dir]: 'loading' } };
}

/** Forgets the listings of `dir` and everything under it. */
function evict(state: TreeState, dir: string, alsoFold: boolean): TreeState {
  const dirs: Record<string, readonly Entry[]> = {};
  for (const [p, entries] of Object.entries(state.dirs)) if (!isWithin(p, dir)) dirs[p] = entries;
  let expanded = state.expanded;
  if (alsoFold) {
    const kept: Record<string, true> = {};
    for (const p of Object.keys(state.expanded)) if (!isWithin(p, dir)) kept[p] = true;
    expanded = kept;
  }
  return { ...state, dirs, expanded };
}

/** Lists every open directory on screen that has no listing yet. */
function loadShown(state: TreeState, effects: TreeEffect[]): TreeState {
  const missing: string[] = [];
  const walk = (dir: string): void => {
    const entries = state.dirs[dir];
    if (entries === undefined) {
      if (state.listing[dir] === undefined) missing.push(dir);
      return;
    }
    for (const e of entries) if (e.kind === 'dir' && isExpanded(state, e.path)) walk(e.path);
  };
  if (state.offline) return state;
  if (state.rootError === null || state.dirs[''] !== undefined) walk('');
  let next = state;
  for (const dir of missing) next = relist(next, dir, effects);
  return next;
}

/** Opens `dir` and its ancestors. */
function reveal(state: TreeState, dir: string): TreeState {
  const expanded = { ...state.expanded };
  for (const a of [...ancestorsOf(dir), dir]) if (a !== '') expanded[a] = true;
  return { ...state, expanded };
}

/** The folder a new file goes into: the row itself when a folder, else its parent. */
function folderFor(state: TreeState, path: string | null): string {
  if (path === null || path === '') return '';
  const entry = entryAt(state, path);
  return entry?.kind === 'dir' ? path : parentOf(path);
}

function plural(n: number, one: string, many: string): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}

export function deleteMessage(
  path: string,
  kind: EntryKind,
  count?: { files: number; dirs: number; depth: number; complete: boolean },
): string {
  const name = baseName(path);
  if (kind === 'dir') {
    if (count === undefined) return `Delete the folder "${name}" and everything in it? This cannot be undone.`;
    if (count.files === 0 && count.dirs === 0) return `Delete the empty folder "${name}"?`;
    const what = `${plural(count.files, 'file', 'files')} and ${plural(count.dirs, 'folder', 'folders')}`;
    if (!count.complete) {
      return `Delete the folder "${name}" and everything in it: at least ${what}? This cannot be undone.`;
    }
    const levels = count.depth <= 1 ? '' : `, ${count.depth} levels deep`;
    return `Delete the folder "${name}" and everything in it: ${what}${levels}? This cannot be undone.`;
  }
  if (kind === 'symlink') return `Delete the link "${name}"? Its target is not touched.`;
  return `Delete "${name}"? This cannot be undone.`;
}

function withoutKeys<T>(record: Readonly<Record<string, T>>, keys: readonly string[]): Record<string, T> {
  const out = { ...record };
  for (const k of keys) delete out[k];
  return out;
}

function moveKeys(record: Readonly<Record<string, true>>, from: string, to: string): Record<string, true> {
  const out: Record<string, true> = {};
  for (const p of Object.keys(record)) out[isWithin(p, from) ? to + p.slice(from.length) : p] = true;
  return out;
}

export function reduceTree(state: TreeState, action: TreeAction): Step {
  const effects: TreeEffect[] = [];
  const next = step(state, action, effects);
  return [loadShown(next, effects), effects];
}

function step(state: TreeState, action: TreeAction, fx: TreeEffect[]): TreeState {
  switch (action.type) {
    case 'start':
      return state;

    case 'reconnected': {
      // Events sent while the socket was down are lost: re-read what is on
      // screen and forget the rest (it is listed again when opened).
      let next: TreeState = { ...state, offline: false, rootError: null };
      for (const dir of Object.keys(state.dirs)) {
        next = isShown(next, dir) ? relist(next, dir, fx) : evict(next, dir, false);
      }
      return next;
    }

    case 'listed': {
      const stale = state.listing[action.path] === 'stale';
      let next: TreeState = {
        ...state,
        dirs: { ...state.dirs, [action.path]: action.entries },
        listing: withoutKeys(state.listing, [action.path]),
        rootError: action.path === '' ? null : state.rootError,
      };
      // Subfolders that vanished take their listings and open state along.
      const previous = state.dirs[action.path] ?? [];
      for (const old of previous) {
        if (old.kind !== 'dir') continue;
        const still = action.entries.find((e) => e.path === old.path);
        if (still === undefined || still.kind !== 'dir') next = evict(next, old.path, true);
      }
      if (stale) next = relist(next, action.path, fx);
      return next;
    }

    case 'listFailed': {
      let next: TreeState = { ...state, listing: withoutKeys(state.listing, [action.path]) };
      // The socket dropped: `reconnected` lists again what is on screen.
      if (action.code === 'disconnected') return { ...next, offline: true };
      if (action.path === '') return { ...next, rootError: action.message };
      if (action.code === 'not_found' || action.code === 'not_a_directory') {
        // Gone before we got there: the parent's listing will not show it.
        next = evict(next, action.path, true);
        return relist(next, parentOf(action.path), fx);
      }
      fx.push({ type: 'error', message: action.message });
      return next;
    }

    case 'fsChanged': {
      if (action.changes.some((c) => c.path === '')) {
        // The runner's watch overflowed: every listing may be wrong.
        return step(state, { type: 'reconnected' }, fx);
      }
      // One list per directory for the whole batch.
      const touched = new Set<string>();
      let next = state;
      for (const change of action.changes) {
        touched.add(parentOf(change.path));
        if (change.kind === 'removed') next = evict(next, change.path, true);
        else if (next.dirs[change.path] !== undefined) touched.add(change.path);
      }
      for (const dir of touched) {
        if (next.dirs[dir] === undefined && next.listing[dir] === undefined) continue;
        // A folder not on screen is forgotten rather than listed: a `git
        // clone` into a closed folder costs nothing until it is opened.
        // (A listing in flight is marked stale instead, or its answer, which
        // may predate the change, would be kept.)
        const keep = isShown(next, dir) || next.listing[dir] !== undefined;
        next = keep ? relist(next, dir, fx) : evict(next, dir, false);
      }
      return next;
    }

    case 'select':
      return { ...state, selected: action.path, menu: null };

    case 'activate': {
      const entry = entryAt(state, action.path);
      const next = { ...state, selected: action.path, menu: null };
      if (entry?.kind === 'dir') return step(next, { type: 'toggle', path: action.path }, fx);
      if (entry?.kind === 'other') {
        fx.push({ type: 'error', message: `"${entry.name}" is not a regular file and cannot be opened.` });
        return next;
      }
      fx.push({ type: 'open', path: action.path });
      return next;
    }

    case 'toggle': {
      if (action.path === '') return state;
      if (state.expanded[action.path]) {
        const selected =
          state.selected !== null && state.selected !== action.path && isWithin(state.selected, action.path)
            ? action.path
            : state.selected;
        return { ...state, expanded: withoutKeys(state.expanded, [action.path]), selected };
      }
      return { ...state, expanded: { ...state.expanded, [action.path]: true } };
    }

    case 'reveal':
      return action.path === '' ? state : reveal(state, action.path);

    case 'key':
      return onKey(state, action.key, fx);

    case 'startCreate': {
      const parent = folderFor(state, action.at !== undefined ? action.at : state.selected);
      return {
        ...reveal(state, parent),
        edit: { kind: 'create', what: action.what, parent, problem: null },
        menu: null,
      };
    }

    case 'startRename': {
      const path = action.path ?? state.selected;
      if (path === null || path === '' || state.busy[path]) return { ...state, menu: null };
      return { ...state, selected: path, edit: { kind: 'rename', path, problem: null }, menu: null };
    }

    case 'nameChanged': {
      if (state.edit === null) return state;
      const problem = action.name === '' ? null : nameCheck(state, state.edit, action.name.trim());
      return problem === state.edit.problem ? state : { ...state, edit: { ...state.edit, problem } };
    }

    case 'submitName': {
      const edit = state.edit;
      if (edit === null) return state;
      const name = action.name.trim();
      if (edit.kind === 'rename' && name === baseName(edit.path)) return { ...state, edit: null };
      const problem = nameCheck(state, edit, name);
      if (problem !== null) return { ...state, edit: { ...edit, problem } };
      if (edit.kind === 'create') {
        const path = joinPath(edit.parent, name);
        fx.push({ type: 'create', what: edit.what, path });
        return { ...state, edit: null, busy: { ...state.busy, [path]: true } };
      }
      const to = joinPath(parentOf(edit.path), name);
      fx.push({ type: 'rename', from: edit.path, to });
      return { ...state, edit: null, busy: { ...state.busy, [edit.path]: true, [to]: true } };
    }

    case 'cancelEdit':
      return { ...state, edit: null };

    case 'move': {
      const name = baseName(action.from);
      const to = joinPath(action.toDir, name);
      if (parentOf(action.from) === action.toDir || state.busy[action.from]) return state;
      if (isWithin(action.toDir, action.from)) {
        fx.push({ type: 'error', message: `Cannot move "${name}" into itself.` });
        return state;
      }
      if ((state.dirs[action.toDir] ?? []).some((e) => e.name === name)) {
        fx.push({ type: 'error', message: `Cannot move "${name}": "${to}" already exists.` });
        return state;
      }
      fx.push({ type: 'rename', from: action.from, to });
      return { ...reveal(state, action.toDir), busy: { ...state.busy, [action.from]: true, [to]: true } };
    }

    case 'opDone': {
      const r = action.result;
      if (r.op === 'create') {
        if (r.what === 'file') fx.push({ type: 'open', path: r.path });
        const next = { ...state, busy: withoutKeys(state.busy, [r.path]), selected: r.path };
        return relist(next, parentOf(r.path), fx);
      }
      if (r.op === 'rename') {
        let next: TreeState = {
          ...evict(state, r.from, false),
          busy: withoutKeys(state.busy, [r.from, r.to]),
          expanded: moveKeys(state.expanded, r.from, r.to),
          selected: state.selected !== null && isWithin(state.selected, r.from)
            ? r.to + state.selected.slice(r.from.length)
            : state.selected,
        };
        next = relist(next, parentOf(r.from), fx);
        return relist(next, parentOf(r.to), fx);
      }
      const next: TreeState = {
        ...evict(state, r.path, true),
        busy: withoutKeys(state.busy, [r.path]),
        selected: state.selected !== null && isWithin(state.selected, r.path) ? null : state.selected,
      };
      return relist(next, parentOf(r.path), fx);
    }

    case 'opFailed':
      fx.push({ type: 'error', message: action.message });
      return { ...state, busy: withoutKeys(state.busy, action.paths) };

    case 'requestDelete': {
      const path = action.path ?? state.selected;
      const next = { ...state, menu: null };
      if (path === null || path === '' || state.busy[path]) return next;
      const kind = entryAt(state, path)?.kind ?? 'file';
      if (kind === 'dir') {
        fx.push({ type: 'count', path });
        return { ...next, selected: path, counting: path };
      }
      return { ...next, selected: path, confirm: { kind: 'delete', path, entryKind: kind, message: deleteMessage(path, kind) } };
    }

    case 'counted':
    case 'countFailed': {
      if (state.counting !== action.path) return state;
      const message =
        action.type === 'counted' ? deleteMessage(action.path, 'dir', action) : deleteMessage(action.path, 'dir');
      return { ...state, counting: null, confirm: { kind: 'delete', path: action.path, entryKind: 'dir', message } };
    }

    case 'confirmOk': {
      const c = state.confirm;
      if (c === null) return state;
      if (c.kind === 'replace') {
        fx.push({ type: 'startUpload', job: c.job });
        return { ...state, confirm: null };
      }
      fx.push({ type: 'delete', path: c.path, recursive: c.entryKind === 'dir' });
      return { ...state, confirm: null, busy: { ...state.busy, [c.path]: true } };
    }

    case 'confirmCancel': {
      const c = state.confirm;
      if (c?.kind === 'replace') fx.push({ type: 'cancelUpload', job: c.job });
      return { ...state, confirm: null };
    }

    case 'openMenu':
      return { ...state, menu: { path: action.path, x: action.x, y: action.y }, selected: action.path ?? state.selected };

    case 'closeMenu':
      return state.menu === null ? state : { ...state, menu: null };

    case 'download': {
      const path = action.path ?? state.selected;
      const next = { ...state, menu: null };
      if (path === null) return next;
      const kind = entryAt(state, path)?.kind;
      if (kind === 'dir' || kind === 'other') {
        fx.push({ type: 'error', message: `"${baseName(path)}" is not a file: only files can be downloaded.` });
        return next;
      }
      fx.push({ type: 'download', path });
      return next;
    }

    case 'dragOver':
      return state.dropTarget === action.path ? state : { ...state, dropTarget: action.path };

    case 'askReplace': {
      const shown = action.names.slice(0, 3).map((n) => `"${baseName(n)}"`).join(', ');
      const more = action.names.length > 3 ? ` and ${action.names.length - 3} more` : '';
      const message =
        action.names.length === 1
          ? `${shown} already exists. Replace it with the uploaded one?`
          : `${shown}${more} already exist. Replace them with the uploaded ones?`;
      return { ...state, confirm: { kind: 'replace', job: action.job, message } };
    }

    case 'uploadProgress':
      return { ...state, upload: action.progress };

    case 'uploadEnded': {
      let next: TreeState = state.upload?.job === action.job ? { ...state, upload: null } : state;
      for (const dir of action.dirs) if (next.dirs[dir] !== undefined) next = relist(next, dir, fx);
      return next;
    }
  }
}

/** Why `name` cannot be used for this edit, or null. */
function nameCheck(state: TreeState, edit: NameEdit, name: string): string | null {
  const problem = nameProblem(name);
  if (problem !== null) return problem;
  const dir = edit.kind === 'create' ? edit.parent : parentOf(edit.path);
  const siblings = state.dirs[dir] ?? [];
  const self = edit.kind === 'rename' ? edit.path : null;
  if (siblings.some((e) => e.name === name && e.path !== self)) return `"${name}" already exists here.`;
  return null;
}

function onKey(state: TreeState, key: string, fx: TreeEffect[]): TreeState {
  if (key === 'Escape') {
    if (state.menu !== null) return { ...state, menu: null };
    return state.edit !== null ? { ...state, edit: null } : state;
  }
  const rows = visibleRows(state).flatMap((r) => (r.kind === 'entry' ? [r.entry] : []));
  if (rows.length === 0) return state;
  const index = state.selected === null ? -1 : rows.findIndex((e) => e.path === state.selected);
  const current = index >= 0 ? rows[index] : undefined;
  const select = (entry: Entry | undefined): TreeState => (entry === undefined ? state : { ...state, selected: entry.path });
  switch (key) {
    case 'ArrowDown':
      return select(rows[Math.min(index + 1, rows.length - 1)]);
    case 'ArrowUp':
      return select(index < 0 ? rows[rows.length - 1] : rows[Math.max(index - 1, 0)]);
    case 'Home':
      return select(rows[0]);
    case 'End':
      return select(rows[rows.length - 1]);
    case 'ArrowRight':
      if (current === undefined) return select(rows[0]);
      if (current.kind !== 'dir') return state;
      if (!isExpanded(state, current.path)) return step(state, { type: 'toggle', path: current.path }, fx);
      return select(state.dirs[current.path]?.[0]);
    case 'ArrowLeft': {
      if (current === undefined) return state;
      if (current.kind === 'dir' && isExpanded(state, current.path)) {
        return step(state, { type: 'toggle', path: current.path }, fx);
      }
      const parent = parentOf(current.path);
      return parent === '' ? state : { ...state, selected: parent };
    }
    case 'Enter':
      return current === undefined ? state : step(state, { type: 'activate', path: current.path }, fx);
    case 'F2':
      return current === undefined ? state : step(state, { type: 'startRename', path: current.path }, fx);
    case 'Delete':
      return current === undefined ? state : step(state, { type: 'requestDelete', path: current.path }, fx);
    default:
      return state;
  }
}
