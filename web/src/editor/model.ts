// The editor's tabs, their files and every decision about saving, reloading
// and conflicts, as a pure reducer: `reduceEditor(state, action) ->
// [state, effects]`. Buffer text lives in Monaco models; the reducer knows
// each buffer by its Monaco "alternative version id" (which returns to an
// earlier value when edits are undone), so dirty = "the buffer's version is
// not the one that matches the file on disk".

import type { FsChange } from '../protocol/generated';
import { isWithin } from '../tree/paths';

export type SaveState =
  | { kind: 'clean' }
  | { kind: 'dirty'; count: number }
  | { kind: 'saving'; count: number }
  | { kind: 'saved' }
  | { kind: 'error'; message: string };

export interface Conflict {
  /** The file as it is in the sandbox now. */
  theirs: string;
  theirsVersion: string;
}

export interface Refusal {
  reason: 'binary' | 'too_large' | 'failed';
  message: string;
}

export interface Doc {
  path: string;
  /** loading: the file is being read; ready: a buffer exists; refused: not opened (message instead). */
  status: 'loading' | 'ready' | 'refused';
  refusal: Refusal | null;
  /** Version of the file on disk that the buffer started from (null: none yet). */
  base: string | null;
  /** The buffer's current version id (0 before the buffer exists). */
  edit: number;
  /** The buffer version equal to `base` on disk; -1 when none is (a restored buffer). */
  clean: number;
  /** A save in flight, of buffer version `edit`. */
  saving: { edit: number } | null;
  /** Save again when the one in flight is done (Ctrl-S pressed meanwhile). */
  saveQueued: boolean;
  /** Close the tab once a save succeeds (chosen in the close dialog). */
  closeAfterSave: boolean;
  saveError: string | null;
  /** The save failed for want of a connection: save again once it is back. */
  retrySave: boolean;
  /** Saved and not edited since: the status bar says "saved". */
  justSaved: boolean;
  /** The file was deleted in the sandbox; the buffer stays, a save recreates it. */
  removed: boolean;
  conflict: Conflict | null;
  /** A stat or read for a change check is in flight. */
  checking: boolean;
  /** The file changed while something was in flight: check again afterwards. */
  recheck: boolean;
  /** An unsaved buffer from before a page reload, not yet put into a model. */
  restored: { text: string; base: string | null } | null;
}

export interface EditorState {
  /** Tabs, in order. */
  docs: readonly Doc[];
  active: string | null;
  /** A dirty tab whose close waits for the user's choice. */
  confirmClose: string | null;
}

export type LoadPurpose = 'open' | 'reload' | 'theirs';

export type EditorEffect =
  /** Read the file (refusing binary and huge ones); answer with loaded / loadFailed. */
  | { type: 'load'; path: string; purpose: LoadPurpose }
  /**
   * Put text in the buffer: `create` makes the model, `reload` replaces the
   * text keeping cursor and scroll, `replace` is an undoable edit. Answer
   * with `applied`.
   */
  | { type: 'setText'; path: string; text: string; how: 'create' | 'reload' | 'replace'; clean: boolean }
  /** Write the buffer's current text (which is version `edit`); answer saved / saveFailed. */
  | { type: 'write'; path: string; edit: number; baseVersion?: string; createNew?: boolean }
  | { type: 'stat'; path: string }
  /** The file was renamed: move its buffer to a model under the new path; answer `rekeyed`. */
  | { type: 'rekey'; from: string; to: string }
  | { type: 'dispose'; path: string }
  | { type: 'error'; message: string };

export type EditorAction =
  /** `activate: false` adds the tab behind the current one. */
  | { type: 'open'; path: string; activate?: boolean }
  | { type: 'restore'; tabs: readonly string[]; active: string | null; buffers: readonly { path: string; base: string | null; text: string }[] }
  | { type: 'activate'; path: string }
  | { type: 'loaded'; path: string; purpose: LoadPurpose; text: string; version: string; mineEqual?: boolean }
  | { type: 'loadFailed'; path: string; purpose: LoadPurpose; code: string; refusal: Refusal }
  | { type: 'applied'; path: string; version: number; clean: boolean }
  | { type: 'edited'; path: string; version: number }
  | { type: 'save'; path?: string }
  | { type: 'saved'; path: string; edit: number; version: string }
  | { type: 'saveFailed'; path: string; edit: number; code: string; message: string }
  | { type: 'fsChanged'; changes: readonly FsChange[] }
  /** Events may have been lost while the socket was down. */
  | { type: 'reconnected' }
  | { type: 'statted'; path: string; version: string | null }
  | { type: 'statFailed'; path: string }
  | { type: 'keepMine'; path: string }
  | { type: 'takeTheirs'; path: string }
  | { type: 'close'; path: string; force?: boolean }
  /** A file or folder was renamed from the tree: tabs under it follow. */
  | { type: 'moved'; from: string; to: string }
  | { type: 'rekeyed'; path: string; version: number }
  | { type: 'closeChoice'; choice: 'save' | 'discard' | 'cancel' };

export function initialEditor(): EditorState {
  return { docs: [], active: null, confirmClose: null };
}

export function newDoc(path: string): Doc {
  return {
    path,
    status: 'loading',
    refusal: null,
    base: null,
    edit: 0,
    clean: 0,
    saving: null,
    saveQueued: false,
    closeAfterSave: false,
    saveError: null,
    retrySave: false,
    justSaved: false,
    removed: false,
    conflict: null,
    checking: false,
    recheck: false,
    restored: null,
  };
}

export function isDirty(doc: Doc): boolean {
  return doc.status === 'ready' ? doc.edit !== doc.clean : doc.restored !== null;
}

export function docAt(state: EditorState, path: string): Doc | undefined {
  return state.docs.find((d) => d.path === path);
}

/** What the status bar shows for all tabs together. */
export function saveStateOf(state: EditorState): SaveState {
  const failed = state.docs.find((d) => d.saveError !== null);
  if (failed !== undefined && failed.saveError !== null) return { kind: 'error', message: failed.saveError };
  const saving = state.docs.filter((d) => d.saving !== null).length;
  if (saving > 0) return { kind: 'saving', count: saving };
  const dirty = state.docs.filter(isDirty).length;
  if (dirty > 0) return { kind: 'dirty', count: dirty };
  return state.docs.some((d) => d.justSaved) ? { kind: 'saved' } : { kind: 'clean' };
}

type Fx = EditorEffect[];

function update(state: EditorState, path: string, change: (d: Doc) => Doc): EditorState {
  let changed = false;
  const docs = state.docs.map((d) => {
    if (d.path !== path) return d;
    const next = change(d);
    if (next !== d) changed = true;
    return next;
  });
  return changed ? { ...state, docs } : state;
}

export function reduceEditor(state: EditorState, action: EditorAction): [EditorState, EditorEffect[]] {
  const fx: Fx = [];
  return [step(state, action, fx), fx];
}

/** Starts a save of `doc` if one can start, else queues or ignores it. */
function startSave(doc: Doc, fx: Fx): Doc {
  if (doc.status !== 'ready' || doc.conflict !== null) return doc;
  if (doc.saving !== null) return { ...doc, saveQueued: true };
  const write: EditorEffect = { type: 'write', path: doc.path, edit: doc.edit };
  if (doc.removed || doc.base === null) write.createNew = true;
  else write.baseVersion = doc.base;
  fx.push(write);
  return { ...doc, saving: { edit: doc.edit }, saveQueued: false, saveError: null, retrySave: false };
}

/** Asks whether the file changed, unless something in flight will answer that anyway. */
function check(doc: Doc, fx: Fx): Doc {
  if (doc.status === 'refused') return doc;
  if (doc.status === 'loading' || doc.saving !== null || doc.checking) return doc.recheck ? doc : { ...doc, recheck: true };
  fx.push({ type: 'stat', path: doc.path });
  return { ...doc, checking: true, recheck: false };
}

/** Closes the tab of `path`: the neighbour to the right (else left) becomes active. */
function closeTab(state: EditorState, path: string, fx: Fx): EditorState {
  const index = state.docs.findIndex((d) => d.path === path);
  if (index < 0) return state;
  const docs = state.docs.filter((d) => d.path !== path);
  fx.push({ type: 'dispose', path });
  let active = state.active;
  if (active === path) active = (docs[index] ?? docs[index - 1])?.path ?? null;
  return { ...state, docs, active, confirmClose: state.confirmClose === path ? null : state.confirmClose };
}

function step(state: EditorState, action: EditorAction, fx: Fx): EditorState {
  switch (action.type) {
    case 'open': {
      const activate = action.activate ?? true;
      const existing = docAt(state, action.path);
      if (existing?.status === 'refused' && existing.refusal?.reason === 'failed') {
        // It could not be read before (missing, say): try again.
        fx.push({ type: 'load', path: action.path, purpose: 'open' });
        const docs = state.docs.map((d) => (d.path === action.path ? newDoc(action.path) : d));
        return { ...state, docs, active: activate ? action.path : state.active };
      }
      if (existing !== undefined) return activate ? { ...state, active: action.path } : state;
      fx.push({ type: 'load', path: action.path, purpose: 'open' });
      const docs = [...state.docs, newDoc(action.path)];
      return { ...state, docs, active: activate || state.active === null ? action.path : state.active };
    }

    case 'restore': {
      let next = state;
      const buffers = new Map(action.buffers.map((b) => [b.path, b]));
      const tabs = [...action.tabs, ...action.buffers.map((b) => b.path).filter((p) => !action.tabs.includes(p))];
      for (const path of tabs) {
        if (docAt(next, path) !== undefined) continue;
        const b = buffers.get(path);
        const doc: Doc = { ...newDoc(path), restored: b === undefined ? null : { text: b.text, base: b.base } };
        fx.push({ type: 'load', path, purpose: 'open' });
        next = { ...next, docs: [...next.docs, doc] };
      }
      const active = action.active !== null && docAt(next, action.active) !== undefined ? action.active : next.active;
      return { ...next, active: active ?? next.docs[0]?.path ?? null };
    }

    case 'activate':
      return docAt(state, action.path) === undefined ? state : { ...state, active: action.path };

    case 'loaded':
      return update(state, action.path, (d) => loaded(d, action, fx));

    case 'loadFailed':
      return update(state, action.path, (d) => {
        if (action.purpose !== 'open') {
          // A reload found the file gone: keep the buffer, say so.
          const removed = action.code === 'not_found';
          if (!removed) fx.push({ type: 'error', message: action.refusal.message });
          return { ...d, checking: false, removed: removed || d.removed };
        }
        if (d.status !== 'loading') return d;
        if (action.code === 'not_found' && d.restored !== null) {
          // Unsaved text of a file deleted since: keep it, saving recreates the file.
          fx.push({ type: 'setText', path: d.path, text: d.restored.text, how: 'create', clean: false });
          return { ...d, removed: true, base: d.restored.base };
        }
        return { ...d, status: 'refused', refusal: action.refusal, restored: null };
      });

    case 'applied':
      return update(state, action.path, (d) => {
        const next: Doc = {
          ...d,
          status: d.status === 'refused' ? d.status : 'ready',
          edit: action.version,
          clean: action.clean ? action.version : d.status === 'loading' && d.restored !== null ? -1 : d.clean,
          restored: null,
          justSaved: action.clean ? false : d.justSaved,
        };
        if (d.status === 'loading' && next.recheck) return check({ ...next, recheck: false }, fx);
        return next;
      });

    case 'edited':
      return update(state, action.path, (d) =>
        d.edit === action.version ? d : { ...d, edit: action.version, justSaved: false },
      );

    case 'save': {
      const path = action.path ?? state.active;
      if (path === null) return state;
      return update(state, path, (d) => startSave(d, fx));
    }

    case 'saved': {
      let closeNow = false;
      const next = update(state, action.path, (d) => {
        if (d.saving === null || d.saving.edit !== action.edit) return d;
        let doc: Doc = {
          ...d,
          base: action.version,
          clean: action.edit,
          saving: null,
          saveError: null,
          justSaved: true,
          removed: false,
        };
        if (doc.closeAfterSave) {
          closeNow = !isDirty(doc);
          doc = { ...doc, closeAfterSave: false };
        }
        if (doc.saveQueued) doc = isDirty(doc) ? startSave(doc, fx) : { ...doc, saveQueued: false };
        if (doc.recheck && doc.saving === null) doc = check({ ...doc, recheck: false }, fx);
        return doc;
      });
      return closeNow ? closeTab(next, action.path, fx) : next;
    }

    case 'saveFailed':
      return update(state, action.path, (d) => {
        if (d.saving === null || d.saving.edit !== action.edit) return d;
        const doc: Doc = { ...d, saving: null, saveQueued: false, closeAfterSave: false };
        if (action.code === 'conflict' || action.code === 'already_exists') {
          // Someone else wrote the file: show both sides, overwrite nothing.
          fx.push({ type: 'load', path: d.path, purpose: 'theirs' });
          return { ...doc, checking: true, recheck: false };
        }
        if (action.code === 'not_found' && !d.removed) {
          // Deleted meanwhile: the user asked to save, so create it again.
          return startSave({ ...doc, removed: true }, fx);
        }
        if (action.code === 'disconnected' || action.code === 'timeout') {
          // Said in the status bar, and done again when the socket is back. If
          // the write did land, the retry's conflict finds mine == theirs.
          return { ...doc, saveError: action.message, retrySave: true };
        }
        fx.push({ type: 'error', message: action.message });
        return { ...doc, saveError: action.message };
      });

    case 'fsChanged': {
      let next = state;
      for (const path of touchedDocs(state, action.changes)) next = update(next, path, (d) => check(d, fx));
      return next;
    }

    case 'reconnected': {
      let next = state;
      for (const doc of state.docs) {
        next = update(next, doc.path, (d) => {
          const checked = check({ ...d, checking: false }, fx);
          return d.retrySave ? startSave(checked, fx) : checked;
        });
      }
      return next;
    }

    case 'statted':
      return update(state, action.path, (d) => {
        const doc: Doc = { ...d, checking: false };
        if (doc.recheck || doc.saving !== null || doc.status !== 'ready') {
          // The answer may predate what happened meanwhile: ask again.
          return check({ ...doc, recheck: false }, fx);
        }
        if (action.version === null) return doc.removed ? doc : { ...doc, removed: true };
        const version = action.version;
        if (doc.conflict !== null) {
          if (doc.conflict.theirsVersion === version) return doc;
          fx.push({ type: 'load', path: doc.path, purpose: 'theirs' });
          return { ...doc, checking: true, removed: false };
        }
        if (version === doc.base) return doc.removed ? { ...doc, removed: false } : doc;
        fx.push({ type: 'load', path: doc.path, purpose: isDirty(doc) ? 'theirs' : 'reload' });
        return { ...doc, checking: true, removed: false };
      });

    case 'statFailed':
      return update(state, action.path, (d) => ({ ...d, checking: false }));

    case 'keepMine':
      return update(state, action.path, (d) => {
        if (d.conflict === null) return d;
        // Save over theirs, knowingly: their version becomes the base.
        return startSave({ ...d, base: d.conflict.theirsVersion, conflict: null, removed: false }, fx);
      });

    case 'takeTheirs':
      return update(state, action.path, (d) => {
        if (d.conflict === null) return d;
        fx.push({ type: 'setText', path: d.path, text: d.conflict.theirs, how: 'replace', clean: true });
        return { ...d, base: d.conflict.theirsVersion, conflict: null, removed: false, saveError: null };
      });

    case 'moved': {
      const { from, to } = action;
      const dest = (p: string): string => (isWithin(p, from) ? to + p.slice(from.length) : p);
      if (!state.docs.some((d) => isWithin(d.path, from))) return state;
      const docs = state.docs.map((d) => {
        if (!isWithin(d.path, from)) return d;
        const path = dest(d.path);
        if (d.status === 'ready') fx.push({ type: 'rekey', from: d.path, to: path });
        // A read in flight answers for the old path: read the new one.
        else if (d.status === 'loading') fx.push({ type: 'load', path, purpose: 'open' });
        return { ...d, path };
      });
      return {
        docs,
        active: state.active === null ? null : dest(state.active),
        confirmClose: state.confirmClose === null ? null : dest(state.confirmClose),
      };
    }

    case 'rekeyed':
      // The buffer has a new model and so new version ids: a clean buffer
      // stays clean, a dirty one stays dirty (undo cannot reach "clean" now).
      return update(state, action.path, (d) => ({
        ...d,
        edit: action.version,
        clean: isDirty(d) ? -1 : action.version,
        saving: d.saving === null ? null : { edit: d.saving.edit === d.edit ? action.version : -1 },
      }));

    case 'close': {
      const doc = docAt(state, action.path);
      if (doc === undefined) return state;
      if (!action.force && isDirty(doc)) return { ...state, confirmClose: doc.path, active: doc.path };
      return closeTab(state, action.path, fx);
    }

    case 'closeChoice': {
      const path = state.confirmClose;
      if (path === null) return state;
      const next = { ...state, confirmClose: null };
      if (action.choice === 'cancel') return next;
      if (action.choice === 'discard') return closeTab(next, path, fx);
      return update(next, path, (d) => {
        const saving = startSave(d, fx);
        // Nothing could start (a conflict is open): leave the tab.
        return saving.saving === null ? saving : { ...saving, closeAfterSave: true };
      });
    }
  }
}

function loaded(d: Doc, a: Extract<EditorAction, { type: 'loaded' }>, fx: Fx): Doc {
  if (a.purpose === 'open') {
    if (d.status !== 'loading') return d;
    const r = d.restored;
    if (r === null || r.text === a.text) {
      // A restored buffer equal to the file is no change at all.
      fx.push({ type: 'setText', path: d.path, text: a.text, how: 'create', clean: true });
      return { ...d, base: a.version, restored: null };
    }
    fx.push({ type: 'setText', path: d.path, text: r.text, how: 'create', clean: false });
    if (r.base === a.version) return { ...d, base: a.version };
    // The file changed since the unsaved text was based on it.
    return { ...d, base: r.base, conflict: { theirs: a.text, theirsVersion: a.version } };
  }
  const doc: Doc = { ...d, checking: false };
  if (a.purpose === 'reload' && !isDirty(doc) && doc.saving === null) {
    fx.push({ type: 'setText', path: d.path, text: a.text, how: 'reload', clean: true });
    return { ...doc, base: a.version, conflict: null };
  }
  // Dirty (maybe typed into while the reload was under way): a conflict,
  // unless the buffer already says what the file says.
  if (a.mineEqual === true) {
    return { ...doc, base: a.version, clean: doc.edit, conflict: null };
  }
  return { ...doc, conflict: { theirs: a.text, theirsVersion: a.version } };
}

/**
 * The tabs a batch of changes may concern: the file itself, or a folder
 * above it that was removed or created (moved away, or back). A folder that
 * is only "modified" (a sibling came or went) does not touch its files.
 */
export function touchedDocs(state: EditorState, changes: readonly FsChange[]): string[] {
  return state.docs
    .filter((d) =>
      changes.some((c) => c.path === '' || c.path === d.path || (c.kind !== 'modified' && isWithin(d.path, c.path))),
    )
    .map((d) => d.path);
}
