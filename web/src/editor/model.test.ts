import { describe, expect, it } from 'vitest';
import { HotExitStore, parseSnapshot, serializeSnapshot, takeSnapshot, type HotExitSnapshot } from './hotexit';
import {
  docAt,
  initialEditor,
  isDirty,
  reduceEditor,
  saveStateOf,
  type Doc,
  type EditorAction,
  type EditorEffect,
  type EditorState,
} from './model';
import { decodeText, encodeText } from './text';

function run(state: EditorState, ...actions: EditorAction[]): [EditorState, EditorEffect[]] {
  const all: EditorEffect[] = [];
  for (const a of actions) {
    const [next, fx] = reduceEditor(state, a);
    state = next;
    all.push(...fx);
  }
  return [state, all];
}

/**
 * Plays the view's part for setText effects: a fake buffer per path whose
 * version goes up by one per edit, like Monaco's version ids.
 */
class Buffers {
  text = new Map<string, string>();
  version = new Map<string, number>();
  private next = 1;
  apply(state: EditorState, fx: EditorEffect[]): [EditorState, EditorEffect[]] {
    const out: EditorEffect[] = [];
    for (const e of fx) {
      if (e.type === 'setText') {
        this.text.set(e.path, e.text);
        const v = this.next++;
        this.version.set(e.path, v);
        const [s, more] = this.apply(...run(state, { type: 'applied', path: e.path, version: v, clean: e.clean }));
        state = s;
        out.push(...more);
      } else {
        out.push(e);
      }
    }
    return [state, out];
  }
  type(state: EditorState, path: string, text: string): EditorState {
    this.text.set(path, text);
    const v = this.next++;
    this.version.set(path, v);
    return run(state, { type: 'edited', path, version: v })[0];
  }
}

function doc(state: EditorState, path = 'a.py'): Doc {
  const d = docAt(state, path);
  if (d === undefined) throw new Error(`no tab ${path}`);
  return d;
}

function writes(fx: EditorEffect[]): EditorEffect[] {
  return fx.filter((e) => e.type === 'write');
}

/** a.py open, clean, at version v1 with text "one". */
function opened(b: Buffers): EditorState {
  const [s, fx] = run(initialEditor(), { type: 'open', path: 'a.py' });
  expect(fx).toEqual([{ type: 'load', path: 'a.py', purpose: 'open' }]);
  return b.apply(...run(s, { type: 'loaded', path: 'a.py', purpose: 'open', text: 'one', version: 'v1' }))[0];
}

describe('tabs', () => {
  it('opens a tab per file, once, and activates it', () => {
    let [s, fx] = run(initialEditor(), { type: 'open', path: 'a.py' }, { type: 'open', path: 'b.py' }, { type: 'open', path: 'a.py' });
    expect(s.docs.map((d) => d.path)).toEqual(['a.py', 'b.py']);
    expect(s.active).toBe('a.py');
    expect(fx.filter((e) => e.type === 'load')).toHaveLength(2);
    [s] = run(s, { type: 'open', path: 'c.py', activate: false });
    expect(s.active).toBe('a.py');
  });

  it('closing a clean tab disposes its model and activates the neighbour', () => {
    const b = new Buffers();
    let s = opened(b);
    [s] = b.apply(...run(s, { type: 'open', path: 'b.py' }, { type: 'loaded', path: 'b.py', purpose: 'open', text: '', version: 'x' }));
    [s] = run(s, { type: 'activate', path: 'a.py' });
    const [s2, fx] = run(s, { type: 'close', path: 'a.py' });
    expect(fx).toEqual([{ type: 'dispose', path: 'a.py' }]);
    expect(s2.active).toBe('b.py');
  });

  it('closing a dirty tab asks; discard closes, cancel keeps, save closes once saved', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    let fx: EditorEffect[];
    [s, fx] = run(s, { type: 'close', path: 'a.py' });
    expect(s.confirmClose).toBe('a.py');
    expect(fx).toEqual([]);
    [s] = run(s, { type: 'closeChoice', choice: 'cancel' });
    expect(s.docs).toHaveLength(1);
    expect(s.confirmClose).toBeNull();
    [s, fx] = run(s, { type: 'close', path: 'a.py' }, { type: 'closeChoice', choice: 'save' });
    expect(writes(fx)).toHaveLength(1);
    expect(s.docs).toHaveLength(1);
    const edit = doc(s).edit;
    [s, fx] = run(s, { type: 'saved', path: 'a.py', edit, version: 'v2' });
    expect(s.docs).toHaveLength(0);
    expect(fx).toEqual([{ type: 'dispose', path: 'a.py' }]);
    const [s3] = run(b.type(opened(b), 'a.py', 'x'), { type: 'close', path: 'a.py' }, { type: 'closeChoice', choice: 'discard' });
    expect(s3.docs).toHaveLength(0);
  });
});

describe('saving', () => {
  it('saves with the base version; saved means clean and durable', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    expect(saveStateOf(s)).toEqual({ kind: 'dirty', count: 1 });
    let fx: EditorEffect[];
    [s, fx] = run(s, { type: 'save' });
    expect(fx).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, baseVersion: 'v1' }]);
    expect(saveStateOf(s)).toEqual({ kind: 'saving', count: 1 });
    [s] = run(s, { type: 'saved', path: 'a.py', edit: doc(s).edit, version: 'v2' });
    expect(isDirty(doc(s))).toBe(false);
    expect(doc(s).base).toBe('v2');
    expect(saveStateOf(s)).toEqual({ kind: 'saved' });
    s = b.type(s, 'a.py', 'three');
    expect(saveStateOf(s)).toEqual({ kind: 'dirty', count: 1 });
  });

  it('edits made while a save is in flight stay dirty after it', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    [s] = run(s, { type: 'save' });
    const saving = doc(s).edit;
    s = b.type(s, 'a.py', 'two and more');
    [s] = run(s, { type: 'saved', path: 'a.py', edit: saving, version: 'v2' });
    expect(isDirty(doc(s))).toBe(true);
    expect(doc(s).base).toBe('v2');
    expect(saveStateOf(s)).toEqual({ kind: 'dirty', count: 1 });
  });

  it('Ctrl-S during a save saves again afterwards, with the new base', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'save' });
    const first = doc(s).edit;
    s = b.type(s, 'a.py', 'three');
    [s, fx] = run(s, { type: 'save' });
    expect(writes(fx)).toEqual([]);
    [s, fx] = run(s, { type: 'saved', path: 'a.py', edit: first, version: 'v2' });
    expect(writes(fx)).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, baseVersion: 'v2' }]);
  });

  it('undoing back to the saved text is clean', () => {
    const b = new Buffers();
    let s = opened(b);
    const cleanVersion = doc(s).edit;
    s = b.type(s, 'a.py', 'two');
    [s] = run(s, { type: 'edited', path: 'a.py', version: cleanVersion });
    expect(isDirty(doc(s))).toBe(false);
    expect(saveStateOf(s)).toEqual({ kind: 'clean' });
  });

  it('a failed save is an error in the status and in words', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'save' });
    [s, fx] = run(s, { type: 'saveFailed', path: 'a.py', edit: doc(s).edit, code: 'storage', message: 'Could not save "a.py": storage failed.' });
    expect(saveStateOf(s)).toEqual({ kind: 'error', message: 'Could not save "a.py": storage failed.' });
    expect(fx).toEqual([{ type: 'error', message: 'Could not save "a.py": storage failed.' }]);
    expect(isDirty(doc(s))).toBe(true);
    [s, fx] = run(s, { type: 'save' });
    expect(saveStateOf(s).kind).toBe('saving');
  });

  it('a save cut off by a dropped connection is retried once it is back', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'save' });
    [s, fx] = run(s, { type: 'saveFailed', path: 'a.py', edit: doc(s).edit, code: 'disconnected', message: 'dropped' });
    expect(fx).toEqual([]);
    expect(saveStateOf(s)).toEqual({ kind: 'error', message: 'dropped' });
    [s, fx] = run(s, { type: 'reconnected' });
    expect(writes(fx)).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, baseVersion: 'v1' }]);
    expect(saveStateOf(s).kind).toBe('saving');
  });

  it('a save refused with conflict fetches theirs and shows the conflict', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'mine');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'save' });
    [s, fx] = run(s, { type: 'saveFailed', path: 'a.py', edit: doc(s).edit, code: 'conflict', message: 'changed' });
    expect(fx).toEqual([{ type: 'load', path: 'a.py', purpose: 'theirs' }]);
    [s] = run(s, { type: 'loaded', path: 'a.py', purpose: 'theirs', text: 'theirs', version: 'v9' });
    expect(doc(s).conflict).toEqual({ theirs: 'theirs', theirsVersion: 'v9' });
    // No save while the conflict is open.
    [s, fx] = run(s, { type: 'save' });
    expect(fx).toEqual([]);
  });

  it('a file deleted before the save is created again', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'save' });
    [s, fx] = run(s, { type: 'saveFailed', path: 'a.py', edit: doc(s).edit, code: 'not_found', message: 'gone' });
    expect(writes(fx)).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, createNew: true }]);
  });
});

describe('live changes and conflicts', () => {
  it('a clean buffer reloads in place when the file changes', () => {
    const b = new Buffers();
    let s = opened(b);
    let fx: EditorEffect[];
    [s, fx] = run(s, { type: 'fsChanged', changes: [{ path: 'a.py', kind: 'modified' }] });
    expect(fx).toEqual([{ type: 'stat', path: 'a.py' }]);
    [s, fx] = run(s, { type: 'statted', path: 'a.py', version: 'v2' });
    expect(fx).toEqual([{ type: 'load', path: 'a.py', purpose: 'reload' }]);
    [s, fx] = run(s, { type: 'loaded', path: 'a.py', purpose: 'reload', text: 'new', version: 'v2' });
    expect(fx).toEqual([{ type: 'setText', path: 'a.py', text: 'new', how: 'reload', clean: true }]);
    [s] = b.apply(s, fx);
    expect(isDirty(doc(s))).toBe(false);
    expect(doc(s).base).toBe('v2');
  });

  it('the same version (our own save echoed back) changes nothing', () => {
    const b = new Buffers();
    let s = opened(b);
    let fx: EditorEffect[];
    [s, fx] = run(s, { type: 'fsChanged', changes: [{ path: 'a.py', kind: 'modified' }] }, { type: 'statted', path: 'a.py', version: 'v1' });
    expect(fx).toEqual([{ type: 'stat', path: 'a.py' }]);
    expect(doc(s).checking).toBe(false);
  });

  it('a change seen while our save is in flight is checked after it', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'two');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'save' });
    [s, fx] = run(s, { type: 'fsChanged', changes: [{ path: 'a.py', kind: 'modified' }] });
    expect(fx).toEqual([]);
    [s, fx] = run(s, { type: 'saved', path: 'a.py', edit: doc(s).edit, version: 'v2' });
    expect(fx).toEqual([{ type: 'stat', path: 'a.py' }]);
    [s, fx] = run(s, { type: 'statted', path: 'a.py', version: 'v2' });
    expect(fx).toEqual([]);
  });

  it('a dirty buffer gets a conflict, never an overwrite', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'mine');
    let fx: EditorEffect[];
    [s, fx] = run(s, { type: 'fsChanged', changes: [{ path: 'a.py', kind: 'modified' }] }, { type: 'statted', path: 'a.py', version: 'v2' });
    expect(fx[1]).toEqual({ type: 'load', path: 'a.py', purpose: 'theirs' });
    [s, fx] = run(s, { type: 'loaded', path: 'a.py', purpose: 'theirs', text: 'theirs', version: 'v2' });
    expect(fx).toEqual([]);
    expect(doc(s).conflict).toEqual({ theirs: 'theirs', theirsVersion: 'v2' });
    expect(isDirty(doc(s))).toBe(true);
  });

  it('typing during a reload turns it into a conflict', () => {
    const b = new Buffers();
    let s = opened(b);
    [s] = run(s, { type: 'fsChanged', changes: [{ path: 'a.py', kind: 'modified' }] }, { type: 'statted', path: 'a.py', version: 'v2' });
    s = b.type(s, 'a.py', 'typed');
    const [s2, fx] = run(s, { type: 'loaded', path: 'a.py', purpose: 'reload', text: 'new', version: 'v2' });
    expect(fx).toEqual([]);
    expect(doc(s2).conflict?.theirs).toBe('new');
  });

  it('theirs equal to mine is no conflict', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'same');
    [s] = run(s, { type: 'loaded', path: 'a.py', purpose: 'theirs', text: 'same', version: 'v2', mineEqual: true });
    expect(doc(s).conflict).toBeNull();
    expect(isDirty(doc(s))).toBe(false);
    expect(doc(s).base).toBe('v2');
  });

  it('keep mine saves over their version; take theirs loads it', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'mine');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'loaded', path: 'a.py', purpose: 'theirs', text: 'theirs', version: 'v2' });
    [, fx] = run(s, { type: 'keepMine', path: 'a.py' });
    expect(writes(fx)).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, baseVersion: 'v2' }]);
    let t: EditorState;
    [t, fx] = run(s, { type: 'takeTheirs', path: 'a.py' });
    expect(fx).toEqual([{ type: 'setText', path: 'a.py', text: 'theirs', how: 'replace', clean: true }]);
    [t] = b.apply(t, fx);
    expect(doc(t).conflict).toBeNull();
    expect(isDirty(doc(t))).toBe(false);
    expect(doc(t).base).toBe('v2');
  });

  it('a file removed in the sandbox keeps its buffer and says so; saving recreates it', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'mine');
    let fx: EditorEffect[];
    [s] = run(s, { type: 'fsChanged', changes: [{ path: 'a.py', kind: 'removed' }] }, { type: 'statted', path: 'a.py', version: null });
    expect(doc(s).removed).toBe(true);
    expect(doc(s).status).toBe('ready');
    [s, fx] = run(s, { type: 'save' });
    expect(writes(fx)).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, createNew: true }]);
    [s] = run(s, { type: 'saved', path: 'a.py', edit: doc(s).edit, version: 'v3' });
    expect(doc(s).removed).toBe(false);
  });

  it('a removed folder concerns the files under it; a modified folder does not', () => {
    const b = new Buffers();
    let s: EditorState;
    [s] = b.apply(...run(initialEditor(), { type: 'open', path: 'src/x.js' }, { type: 'loaded', path: 'src/x.js', purpose: 'open', text: '', version: 'v' }));
    const [, fx] = run(s, { type: 'fsChanged', changes: [{ path: 'src', kind: 'modified' }] });
    expect(fx).toEqual([]);
    const [, fx2] = run(s, { type: 'fsChanged', changes: [{ path: 'src', kind: 'removed' }] });
    expect(fx2).toEqual([{ type: 'stat', path: 'src/x.js' }]);
    const [, fx3] = run(s, { type: 'fsChanged', changes: [{ path: '', kind: 'modified' }] });
    expect(fx3).toEqual([{ type: 'stat', path: 'src/x.js' }]);
  });
});

describe('renames from the tree', () => {
  it('tabs under a renamed folder follow it, keeping dirty buffers dirty', () => {
    const b = new Buffers();
    let s: EditorState;
    let fx: EditorEffect[];
    [s] = b.apply(...run(initialEditor(), { type: 'open', path: 'src/a.js' }, { type: 'loaded', path: 'src/a.js', purpose: 'open', text: 'a', version: 'va' }));
    [s] = b.apply(...run(s, { type: 'open', path: 'src/b.js' }, { type: 'loaded', path: 'src/b.js', purpose: 'open', text: 'b', version: 'vb' }));
    s = b.type(s, 'src/b.js', 'b2');
    [s, fx] = run(s, { type: 'open', path: 'src/c.js' }, { type: 'moved', from: 'src', to: 'lib' });
    expect(s.docs.map((d) => d.path)).toEqual(['lib/a.js', 'lib/b.js', 'lib/c.js']);
    expect(s.active).toBe('lib/c.js');
    expect(fx).toContainEqual({ type: 'rekey', from: 'src/a.js', to: 'lib/a.js' });
    expect(fx).toContainEqual({ type: 'rekey', from: 'src/b.js', to: 'lib/b.js' });
    expect(fx).toContainEqual({ type: 'load', path: 'lib/c.js', purpose: 'open' });
    [s] = run(s, { type: 'rekeyed', path: 'lib/a.js', version: 50 }, { type: 'rekeyed', path: 'lib/b.js', version: 51 });
    expect(isDirty(doc(s, 'lib/a.js'))).toBe(false);
    expect(isDirty(doc(s, 'lib/b.js'))).toBe(true);
    const [, fx2] = run(s, { type: 'save', path: 'lib/b.js' });
    expect(writes(fx2)).toEqual([{ type: 'write', path: 'lib/b.js', edit: 51, baseVersion: 'vb' }]);
  });

  it('a rename elsewhere touches nothing', () => {
    const b = new Buffers();
    const s = opened(b);
    const [s2, fx] = run(s, { type: 'moved', from: 'other', to: 'x' });
    expect(s2).toBe(s);
    expect(fx).toEqual([]);
  });
});

describe('refusals', () => {
  it('binary and huge files are refused with a message', () => {
    const [s] = run(initialEditor(), { type: 'open', path: 'a.bin' }, {
      type: 'loadFailed',
      path: 'a.bin',
      purpose: 'open',
      code: 'binary',
      refusal: { reason: 'binary', message: 'not text' },
    });
    expect(doc(s, 'a.bin').status).toBe('refused');
    expect(doc(s, 'a.bin').refusal?.reason).toBe('binary');
    const [, fx] = run(s, { type: 'fsChanged', changes: [{ path: 'a.bin', kind: 'modified' }] }, { type: 'save' });
    expect(fx).toEqual([]);
  });

  it('recognises text, binary and broken UTF-8', () => {
    expect(decodeText(new TextEncoder().encode('héllo\n'))).toEqual({ ok: true, text: 'héllo\n', bom: false });
    expect(decodeText(new Uint8Array([0x68, 0, 0x69]))).toEqual({ ok: false, reason: 'binary' });
    expect(decodeText(new Uint8Array([0x68, 0xff, 0x69]))).toEqual({ ok: false, reason: 'binary' });
    const bom = decodeText(new Uint8Array([0xef, 0xbb, 0xbf, 0x41]));
    expect(bom).toEqual({ ok: true, text: 'A', bom: true });
    expect(Array.from(encodeText('A', true))).toEqual([0xef, 0xbb, 0xbf, 0x41]);
    // A NUL after the first 8 KB does not make a file binary (it is still UTF-8).
    const late = new Uint8Array(9000).fill(0x61);
    late[8999] = 0;
    expect(decodeText(late).ok).toBe(true);
    expect(decodeText(new Uint8Array(0))).toEqual({ ok: true, text: '', bom: false });
  });
});

describe('hot exit', () => {
  it('keeps tabs and the text of dirty buffers, and reads it back', () => {
    const b = new Buffers();
    let s = b.type(opened(b), 'a.py', 'unsaved');
    [s] = b.apply(...run(s, { type: 'open', path: 'b.py' }, { type: 'loaded', path: 'b.py', purpose: 'open', text: 'b', version: 'bv' }));
    const snap = takeSnapshot(s, (p) => b.text.get(p));
    expect(snap).toEqual({ tabs: ['a.py', 'b.py'], active: 'b.py', buffers: [{ path: 'a.py', base: 'v1', text: 'unsaved' }] });
    expect(parseSnapshot(serializeSnapshot(snap))).toEqual(snap);
    expect(parseSnapshot('not json')).toBeNull();
    expect(parseSnapshot('{"format":99}')).toBeNull();
    expect(parseSnapshot(null)).toBeNull();
  });

  it('a restored buffer on an unchanged file comes back dirty', () => {
    const b = new Buffers();
    let [s, fx] = run(initialEditor(), { type: 'restore', tabs: ['a.py', 'b.py'], active: 'b.py', buffers: [{ path: 'a.py', base: 'v1', text: 'unsaved' }] });
    expect(fx).toEqual([
      { type: 'load', path: 'a.py', purpose: 'open' },
      { type: 'load', path: 'b.py', purpose: 'open' },
    ]);
    expect(s.active).toBe('b.py');
    expect(isDirty(doc(s))).toBe(true); // dirty before the model exists
    expect(takeSnapshot(s, () => undefined).buffers).toEqual([{ path: 'a.py', base: 'v1', text: 'unsaved' }]);
    [s, fx] = run(s, { type: 'loaded', path: 'a.py', purpose: 'open', text: 'on disk', version: 'v1' });
    expect(fx).toEqual([{ type: 'setText', path: 'a.py', text: 'unsaved', how: 'create', clean: false }]);
    [s] = b.apply(s, fx);
    expect(isDirty(doc(s))).toBe(true);
    expect(doc(s).conflict).toBeNull();
    expect(doc(s).base).toBe('v1');
    [s, fx] = run(s, { type: 'save', path: 'a.py' });
    expect(writes(fx)).toEqual([{ type: 'write', path: 'a.py', edit: doc(s).edit, baseVersion: 'v1' }]);
  });

  it('a restored buffer whose file changed goes to the conflict view', () => {
    const b = new Buffers();
    let [s, fx] = run(
      initialEditor(),
      { type: 'restore', tabs: ['a.py'], active: 'a.py', buffers: [{ path: 'a.py', base: 'v1', text: 'unsaved' }] },
      { type: 'loaded', path: 'a.py', purpose: 'open', text: 'changed elsewhere', version: 'v2' },
    );
    [s] = b.apply(s, fx);
    expect(doc(s).conflict).toEqual({ theirs: 'changed elsewhere', theirsVersion: 'v2' });
    expect(b.text.get('a.py')).toBe('unsaved');
    expect(isDirty(doc(s))).toBe(true);
  });

  it('a restored buffer equal to the file is clean; one whose file is gone is kept', () => {
    const b = new Buffers();
    let [s, fx] = run(
      initialEditor(),
      { type: 'restore', tabs: [], active: null, buffers: [{ path: 'a.py', base: 'v1', text: 'same' }, { path: 'gone.py', base: 'g', text: 'keep me' }] },
      { type: 'loaded', path: 'a.py', purpose: 'open', text: 'same', version: 'v7' },
      { type: 'loadFailed', path: 'gone.py', purpose: 'open', code: 'not_found', refusal: { reason: 'failed', message: 'gone' } },
    );
    [s] = b.apply(s, fx);
    expect(isDirty(doc(s))).toBe(false);
    expect(doc(s).base).toBe('v7');
    expect(doc(s, 'gone.py').removed).toBe(true);
    expect(doc(s, 'gone.py').status).toBe('ready');
    expect(isDirty(doc(s, 'gone.py'))).toBe(true);
    expect(b.text.get('gone.py')).toBe('keep me');
  });

  it('the store debounces, flushes, and clears when nothing is left', async () => {
    const map = new Map<string, string>();
    const kv = { getItem: (k: string) => map.get(k) ?? null, setItem: (k: string, v: string) => void map.set(k, v), removeItem: (k: string) => void map.delete(k) };
    let snap: HotExitSnapshot = { tabs: ['a'], active: 'a', buffers: [{ path: 'a', base: null, text: 't' }] };
    const store = new HotExitStore(kv, 'k', () => snap, 5);
    store.schedule();
    expect(map.has('k')).toBe(false);
    await new Promise((r) => setTimeout(r, 20));
    expect(parseSnapshot(map.get('k') ?? null)).toEqual(snap);
    snap = { tabs: [], active: null, buffers: [] };
    store.flush();
    expect(map.has('k')).toBe(false);
    const full = { ...kv, setItem: () => { throw new Error('QuotaExceededError'); } };
    const refused = new HotExitStore(full, 'k', () => ({ tabs: ['a'], active: null, buffers: [] }));
    refused.flush();
    expect(refused.ok).toBe(false);
  });
});
