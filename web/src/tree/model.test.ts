import { describe, expect, it } from 'vitest';
import type { Entry } from '../protocol/generated';
import {
  deleteMessage,
  initialTree,
  reduceTree,
  visibleRows,
  type TreeAction,
  type TreeEffect,
  type TreeState,
} from './model';
import { ancestorsOf, nameProblem, parentOf } from './paths';

function file(path: string, version = 'v1'): Entry {
  return { name: path.slice(path.lastIndexOf('/') + 1), path, kind: 'file', size: 1, mtime_ms: 0, version };
}
function dir(path: string): Entry {
  return { name: path.slice(path.lastIndexOf('/') + 1), path, kind: 'dir', size: 0, mtime_ms: 0 };
}

/** Runs actions in order, returning the last state and all effects. */
function run(state: TreeState, ...actions: TreeAction[]): [TreeState, TreeEffect[]] {
  const all: TreeEffect[] = [];
  for (const a of actions) {
    const [next, fx] = reduceTree(state, a);
    state = next;
    all.push(...fx);
  }
  return [state, all];
}

function lists(fx: TreeEffect[]): string[] {
  return fx.flatMap((e) => (e.type === 'list' ? [e.path] : []));
}

/** A tree with the root listed: src/ (listed, open), docs/ (closed), a.txt. */
function loaded(): TreeState {
  const [s] = run(
    initialTree(),
    { type: 'start' },
    { type: 'listed', path: '', entries: [dir('docs'), dir('src'), file('a.txt')] },
    { type: 'toggle', path: 'src' },
    { type: 'listed', path: 'src', entries: [dir('src/lib'), file('src/main.js')] },
  );
  return s;
}

function paths(state: TreeState): string[] {
  return visibleRows(state).map((r) => (r.kind === 'entry' ? r.entry.path : `+${r.parent}`));
}

describe('loading', () => {
  it('lists the root on start and a folder when it is opened', () => {
    const [s, fx] = run(initialTree(), { type: 'start' });
    expect(lists(fx)).toEqual(['']);
    const [s2, fx2] = run(s, { type: 'start' });
    expect(lists(fx2)).toEqual([]); // already in flight
    const [s3, fx3] = run(s2, { type: 'listed', path: '', entries: [dir('src'), file('a.txt')] }, { type: 'activate', path: 'src' });
    expect(lists(fx3)).toEqual(['src']);
    expect(s3.selected).toBe('src');
    expect(paths(s3)).toEqual(['src', 'a.txt']);
  });

  it('shows folders depth first, closed folders without children', () => {
    const s = loaded();
    expect(paths(s)).toEqual(['docs', 'src', 'src/lib', 'src/main.js', 'a.txt']);
    const depths = visibleRows(s).map((r) => r.depth);
    expect(depths).toEqual([0, 0, 1, 1, 0]);
    const [closed] = run(s, { type: 'toggle', path: 'src' });
    expect(paths(closed)).toEqual(['docs', 'src', 'a.txt']);
    // Reopening uses the cached listing.
    const [again, fx] = run(closed, { type: 'toggle', path: 'src' });
    expect(lists(fx)).toEqual([]);
    expect(paths(again)).toContain('src/main.js');
  });

  it('a folder gone before its listing arrives is dropped, and its parent re-read', () => {
    const [s, fx] = run(loaded(), { type: 'toggle', path: 'docs' }, { type: 'listFailed', path: 'docs', code: 'not_found', message: 'gone' });
    expect(lists(fx)).toEqual(['docs', '']);
    expect(s.expanded['docs']).toBeUndefined();
    expect(fx.some((e) => e.type === 'error')).toBe(false);
  });

  it('other listing errors are reported in words', () => {
    const [, fx] = run(loaded(), { type: 'toggle', path: 'docs' }, { type: 'listFailed', path: 'docs', code: 'outside_workspace', message: 'docs leads out of the workspace' });
    expect(fx).toContainEqual({ type: 'error', message: 'docs leads out of the workspace' });
  });

  it('a dropped connection stops listing until it is back, then re-reads what is shown', () => {
    const [s, fx] = run(loaded(), { type: 'toggle', path: 'docs' }, { type: 'listFailed', path: 'docs', code: 'disconnected', message: 'x' });
    expect(lists(fx)).toEqual(['docs']);
    expect(s.offline).toBe(true);
    expect(fx.some((e) => e.type === 'error')).toBe(false);
    const [, fx2] = run(s, { type: 'reconnected' });
    expect(lists(fx2).sort()).toEqual(['', 'docs', 'src']);
  });
});

describe('live changes', () => {
  it('re-lists each changed directory once per batch', () => {
    const [, fx] = run(loaded(), {
      type: 'fsChanged',
      changes: [
        { path: 'src/a.js', kind: 'created' },
        { path: 'src/b.js', kind: 'created' },
        { path: 'b.txt', kind: 'created' },
        { path: 'src/main.js', kind: 'modified' },
      ],
    });
    expect(lists(fx).sort()).toEqual(['', 'src']);
  });

  it('ignores directories that were never listed', () => {
    const [, fx] = run(loaded(), { type: 'fsChanged', changes: [{ path: 'node_modules/x/y.js', kind: 'created' }] });
    expect(lists(fx)).toEqual([]);
  });

  it('a change while a listing is in flight lists once more when it lands', () => {
    const [s, fx] = run(loaded(), { type: 'fsChanged', changes: [{ path: 'src/a.js', kind: 'created' }] });
    expect(lists(fx)).toEqual(['src']);
    const [s2, fx2] = run(s, { type: 'fsChanged', changes: [{ path: 'src/b.js', kind: 'created' }] }, { type: 'fsChanged', changes: [{ path: 'src/c.js', kind: 'created' }] });
    expect(lists(fx2)).toEqual([]);
    expect(s2.listing['src']).toBe('stale');
    const [s3, fx3] = run(s2, { type: 'listed', path: 'src', entries: [file('src/a.js')] });
    expect(lists(fx3)).toEqual(['src']);
    const [s4, fx4] = run(s3, { type: 'listed', path: 'src', entries: [file('src/a.js'), file('src/b.js'), file('src/c.js')] });
    expect(lists(fx4)).toEqual([]);
    expect(s4.listing['src']).toBeUndefined();
    expect(paths(s4)).toContain('src/c.js');
  });

  it('a change of the root re-reads every listed directory on screen', () => {
    const [s, fx] = run(loaded(), { type: 'fsChanged', changes: [{ path: '', kind: 'modified' }] });
    expect(lists(fx).sort()).toEqual(['', 'src']);
    expect(s.dirs['src']).toBeDefined();
  });

  it('a closed folder that changes is forgotten, and listed when opened', () => {
    const [s, fx] = run(loaded(), { type: 'toggle', path: 'src' }, { type: 'fsChanged', changes: [{ path: 'src/new.js', kind: 'created' }] });
    expect(lists(fx)).toEqual([]);
    expect(s.dirs['src']).toBeUndefined();
    const [, fx2] = run(s, { type: 'toggle', path: 'src' });
    expect(lists(fx2)).toEqual(['src']);
  });

  it('a removed folder takes its listings and open state with it', () => {
    const [s0] = run(loaded(), { type: 'toggle', path: 'src/lib' }, { type: 'listed', path: 'src/lib', entries: [file('src/lib/x.js')] });
    const [s, fx] = run(s0, { type: 'fsChanged', changes: [{ path: 'src', kind: 'removed' }] });
    expect(lists(fx)).toEqual(['']);
    expect(s.dirs['src']).toBeUndefined();
    expect(s.dirs['src/lib']).toBeUndefined();
    expect(s.expanded['src/lib']).toBeUndefined();
  });

  it('a listing without a former subfolder drops that subfolder', () => {
    const [s] = run(loaded(), { type: 'listed', path: '', entries: [dir('docs'), file('a.txt')] });
    expect(s.dirs['src']).toBeUndefined();
    expect(s.expanded['src']).toBeUndefined();
    expect(paths(s)).toEqual(['docs', 'a.txt']);
  });
});

describe('keyboard', () => {
  it('moves with arrows, opens and closes folders, opens files with Enter', () => {
    let [s, fx] = run(loaded(), { type: 'key', key: 'ArrowDown' });
    expect(s.selected).toBe('docs');
    [s] = run(s, { type: 'key', key: 'ArrowDown' }, { type: 'key', key: 'ArrowDown' });
    expect(s.selected).toBe('src/lib');
    [s, fx] = run(s, { type: 'key', key: 'ArrowRight' });
    expect(lists(fx)).toEqual(['src/lib']);
    [s] = run(s, { type: 'key', key: 'ArrowLeft' });
    expect(s.expanded['src/lib']).toBeUndefined();
    [s] = run(s, { type: 'key', key: 'ArrowLeft' });
    expect(s.selected).toBe('src');
    [s] = run(s, { type: 'key', key: 'ArrowRight' }, { type: 'key', key: 'End' }, { type: 'key', key: 'ArrowUp' });
    expect(s.selected).toBe('src/main.js');
    [s, fx] = run(s, { type: 'key', key: 'Enter' });
    expect(fx).toContainEqual({ type: 'open', path: 'src/main.js' });
    [s] = run(s, { type: 'key', key: 'F2' });
    expect(s.edit).toEqual({ kind: 'rename', path: 'src/main.js', problem: null });
    [s] = run(s, { type: 'key', key: 'Escape' });
    expect(s.edit).toBeNull();
  });

  it('closing a folder moves a selection inside it to the folder', () => {
    const [s] = run(loaded(), { type: 'select', path: 'src/main.js' }, { type: 'toggle', path: 'src' });
    expect(s.selected).toBe('src');
  });
});

describe('create and rename', () => {
  it('a new file goes into the selected folder, is validated, created and opened', () => {
    let [s, fx] = run(loaded(), { type: 'select', path: 'src/lib' }, { type: 'startCreate', what: 'file' });
    expect(s.edit).toEqual({ kind: 'create', what: 'file', parent: 'src/lib', problem: null });
    expect(s.expanded['src/lib']).toBe(true);
    expect(lists(fx)).toEqual(['src/lib']);
    [s] = run(s, { type: 'listed', path: 'src/lib', entries: [file('src/lib/x.js')] });
    expect(paths(s)).toEqual(['docs', 'src', 'src/lib', '+src/lib', 'src/lib/x.js', 'src/main.js', 'a.txt']);
    [s, fx] = run(s, { type: 'submitName', name: 'x.js' });
    expect(s.edit?.problem).toBe('"x.js" already exists here.');
    expect(fx).toEqual([]);
    [s, fx] = run(s, { type: 'submitName', name: 'a/b' });
    expect(s.edit?.problem).toContain('/');
    [s, fx] = run(s, { type: 'submitName', name: ' y.js ' });
    expect(fx).toEqual([{ type: 'create', what: 'file', path: 'src/lib/y.js' }]);
    expect(s.edit).toBeNull();
    expect(s.busy['src/lib/y.js']).toBe(true);
    [s, fx] = run(s, { type: 'opDone', result: { op: 'create', what: 'file', path: 'src/lib/y.js' } });
    expect(fx).toContainEqual({ type: 'open', path: 'src/lib/y.js' });
    expect(lists(fx)).toEqual(['src/lib']);
    expect(s.selected).toBe('src/lib/y.js');
    expect(s.busy['src/lib/y.js']).toBeUndefined();
  });

  it('a new folder next to a selected file goes into its parent; from the menu, where the menu was', () => {
    const [s] = run(loaded(), { type: 'select', path: 'src/main.js' }, { type: 'startCreate', what: 'dir' });
    expect(s.edit).toMatchObject({ parent: 'src', what: 'dir' });
    const [s2] = run(s, { type: 'startCreate', what: 'dir', at: null });
    expect(s2.edit).toMatchObject({ parent: '' });
    const [, fx] = run(s2, { type: 'submitName', name: 'pkg' });
    expect(fx).toEqual([{ type: 'create', what: 'dir', path: 'pkg' }]);
  });

  it('live validation says what is wrong as the user types', () => {
    const [s] = run(loaded(), { type: 'startCreate', what: 'file', at: null }, { type: 'nameChanged', name: '..' });
    expect(s.edit?.problem).toBe('".." is not a valid name.');
    const [s2] = run(s, { type: 'nameChanged', name: 'ok.txt' });
    expect(s2.edit?.problem).toBeNull();
  });

  it('rename keeps open folders open and the selection under the new name', () => {
    let [s, fx] = run(loaded(), { type: 'select', path: 'src/main.js' }, { type: 'startRename', path: 'src' });
    expect(s.selected).toBe('src');
    [s, fx] = run(s, { type: 'submitName', name: 'src' });
    expect(fx).toEqual([]);
    expect(s.edit).toBeNull();
    [s, fx] = run(s, { type: 'startRename' }, { type: 'submitName', name: 'docs' });
    expect(s.edit?.problem).toBe('"docs" already exists here.');
    [s, fx] = run(s, { type: 'submitName', name: 'app' });
    expect(fx).toEqual([{ type: 'rename', from: 'src', to: 'app' }]);
    [s, fx] = run(s, { type: 'opDone', result: { op: 'rename', from: 'src', to: 'app' } });
    expect(s.expanded['app']).toBe(true);
    expect(s.expanded['src']).toBeUndefined();
    expect(s.dirs['src']).toBeUndefined();
    expect(s.selected).toBe('app');
    expect(lists(fx)).toEqual(['']);
  });

  it('dragging a row onto a folder moves it, never into itself or onto a name in use', () => {
    const [s1, fx] = run(loaded(), { type: 'move', from: 'a.txt', toDir: 'docs' });
    expect(fx).toEqual([{ type: 'rename', from: 'a.txt', to: 'docs/a.txt' }, { type: 'list', path: 'docs' }]);
    expect(s1.expanded['docs']).toBe(true);
    const [, fx2] = run(loaded(), { type: 'move', from: 'src', toDir: 'src/lib' });
    expect(fx2[0]).toEqual({ type: 'error', message: 'Cannot move "src" into itself.' });
    const [, fx3] = run(loaded(), { type: 'move', from: 'src/main.js', toDir: 'src' });
    expect(fx3).toEqual([]);
    const [s4] = run(loaded(), { type: 'listed', path: 'docs', entries: [file('docs/a.txt')] });
    const [, fx4] = run(s4, { type: 'move', from: 'a.txt', toDir: 'docs' });
    expect(fx4[0]?.type).toBe('error');
  });

  it('a failed operation is reported and frees its paths', () => {
    const [s, fx] = run(loaded(), { type: 'startRename', path: 'a.txt' }, { type: 'submitName', name: 'b.txt' }, { type: 'opFailed', paths: ['a.txt', 'b.txt'], message: 'nope' });
    expect(fx).toContainEqual({ type: 'error', message: 'nope' });
    expect(s.busy).toEqual({});
  });
});

describe('delete', () => {
  it('a file is deleted after a confirmation', () => {
    let [s, fx] = run(loaded(), { type: 'requestDelete', path: 'a.txt' });
    expect(s.confirm).toEqual({ kind: 'delete', path: 'a.txt', entryKind: 'file', message: 'Delete "a.txt"? This cannot be undone.' });
    expect(fx).toEqual([]);
    [s, fx] = run(s, { type: 'confirmOk' });
    expect(fx).toEqual([{ type: 'delete', path: 'a.txt', recursive: false }]);
    [s, fx] = run(s, { type: 'opDone', result: { op: 'delete', path: 'a.txt' } });
    expect(lists(fx)).toEqual(['']);
    expect(s.selected).toBeNull();
  });

  it('a folder is counted first and the confirmation says what goes', () => {
    let [s, fx] = run(loaded(), { type: 'select', path: 'src' }, { type: 'key', key: 'Delete' });
    expect(fx).toEqual([{ type: 'count', path: 'src' }]);
    expect(s.confirm).toBeNull();
    [s] = run(s, { type: 'counted', path: 'src', files: 12, dirs: 3, depth: 4, complete: true });
    expect(s.confirm?.message).toBe('Delete the folder "src" and everything in it: 12 files and 3 folders, 4 levels deep? This cannot be undone.');
    [s, fx] = run(s, { type: 'confirmOk' });
    expect(fx).toEqual([{ type: 'delete', path: 'src', recursive: true }]);
    expect(s.busy['src']).toBe(true);
  });

  it('cancel deletes nothing', () => {
    const [s, fx] = run(loaded(), { type: 'requestDelete', path: 'a.txt' }, { type: 'confirmCancel' });
    expect(s.confirm).toBeNull();
    expect(fx).toEqual([]);
  });

  it('messages for empty, huge and linked things', () => {
    expect(deleteMessage('x/e', 'dir', { files: 0, dirs: 0, depth: 0, complete: true })).toBe('Delete the empty folder "e"?');
    expect(deleteMessage('big', 'dir', { files: 1000, dirs: 1, depth: 2, complete: false })).toBe(
      'Delete the folder "big" and everything in it: at least 1,000 files and 1 folder? This cannot be undone.',
    );
    expect(deleteMessage('l', 'symlink')).toBe('Delete the link "l"? Its target is not touched.');
  });
});

describe('upload and download', () => {
  it('asks before replacing, then starts or cancels the job', () => {
    let [s, fx] = run(loaded(), { type: 'askReplace', job: 7, names: ['a.txt'] });
    expect(s.confirm).toEqual({ kind: 'replace', job: 7, message: '"a.txt" already exists. Replace it with the uploaded one?' });
    [s, fx] = run(s, { type: 'confirmOk' });
    expect(fx).toEqual([{ type: 'startUpload', job: 7 }]);
    [, fx] = run(s, { type: 'askReplace', job: 8, names: ['a', 'b', 'c', 'd', 'e'] }, { type: 'confirmCancel' });
    expect(fx).toEqual([{ type: 'cancelUpload', job: 8 }]);
  });

  it('an ended upload re-reads the directories it touched', () => {
    const progress = { job: 1, name: 'src/x.bin', fileIndex: 0, fileCount: 1, sent: 5, total: 10 };
    const [s, fx] = run(loaded(), { type: 'uploadProgress', progress }, { type: 'uploadEnded', job: 1, dirs: ['src', 'nowhere'] });
    expect(s.upload).toBeNull();
    expect(lists(fx)).toEqual(['src']);
  });

  it('only files download', () => {
    const [, fx] = run(loaded(), { type: 'download', path: 'src' }, { type: 'download', path: 'a.txt' });
    expect(fx[0]?.type).toBe('error');
    expect(fx[1]).toEqual({ type: 'download', path: 'a.txt' });
  });
});

describe('names and paths', () => {
  it('validates names like the runner', () => {
    expect(nameProblem('')).not.toBeNull();
    expect(nameProblem('  ')).not.toBeNull();
    expect(nameProblem('.')).not.toBeNull();
    expect(nameProblem('..')).not.toBeNull();
    expect(nameProblem('a/b')).not.toBeNull();
    expect(nameProblem('a\\b')).not.toBeNull();
    expect(nameProblem('a\u202eb')).not.toBeNull();
    expect(nameProblem('a\u0007')).not.toBeNull();
    expect(nameProblem('.cloudcode-tmp-x')).not.toBeNull();
    expect(nameProblem('x'.repeat(256))).not.toBeNull();
    expect(nameProblem('.env')).toBeNull();
    expect(nameProblem('résumé 2.txt')).toBeNull();
    expect(nameProblem('👩‍💻.md')).toBeNull();
  });

  it('splits paths', () => {
    expect(parentOf('a/b/c')).toBe('a/b');
    expect(parentOf('a')).toBe('');
    expect(ancestorsOf('a/b/c')).toEqual(['', 'a', 'a/b']);
    expect(ancestorsOf('a')).toEqual(['']);
  });
});
