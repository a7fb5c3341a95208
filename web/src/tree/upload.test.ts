import { describe, expect, it } from 'vitest';
import type { Entry, ErrorCode, Op, Reply, WriteOutcome } from '../protocol/generated';
import { errorText } from './errors';
import { countFolder } from './count';
import { collectDrop, planUpload, runUpload, touchedDirs, uploadJobs, type UploadItem } from './upload';

const blob = (n: number): Blob => new Blob([new Uint8Array(n)]);

describe('planUpload', () => {
  it('creates every folder parents first and places files under the target', () => {
    const items: UploadItem[] = [
      { relPath: 'photos', kind: 'dir' },
      { relPath: 'photos/2024', kind: 'dir' },
      { relPath: 'photos/2024/a.jpg', kind: 'file', blob: blob(3) },
      { relPath: 'photos/empty', kind: 'dir' },
      { relPath: 'notes.txt', kind: 'file', blob: blob(5) },
    ];
    const plan = planUpload('src', items);
    expect(plan.dirs).toEqual(['src/photos', 'src/photos/2024', 'src/photos/empty']);
    expect(plan.files.map((f) => f.path)).toEqual(['src/photos/2024/a.jpg', 'src/notes.txt']);
    expect(plan.total).toBe(8);
    expect(plan.topNames).toEqual(['src/photos', 'src/notes.txt']);
    expect(plan.skipped).toEqual([]);
    expect(touchedDirs(plan, 'src').sort()).toEqual(['src', 'src/photos', 'src/photos/2024']);
  });

  it('a folder picked with webkitdirectory brings its parents implicitly', () => {
    const plan = planUpload('', [{ relPath: 'a/b/c.txt', kind: 'file', blob: blob(1) }]);
    expect(plan.dirs).toEqual(['a', 'a/b']);
    expect(plan.files.map((f) => f.path)).toEqual(['a/b/c.txt']);
  });

  it('skips names the workspace refuses, saying why', () => {
    const plan = planUpload('', [
      { relPath: 'ok.txt', kind: 'file', blob: blob(1) },
      { relPath: 'bad\\name.txt', kind: 'file', blob: blob(1) },
      { relPath: '.cloudcode-tmp-x', kind: 'file', blob: blob(1) },
    ]);
    expect(plan.files.map((f) => f.path)).toEqual(['ok.txt']);
    expect(plan.skipped).toHaveLength(2);
    expect(plan.skipped[0]).toContain('bad\\name.txt');
  });
});

class FakeClient {
  ops: Op[] = [];
  writes: { path: string; size: number; bulk: boolean }[] = [];
  /** The files of each write_many, in order. */
  batches: string[][] = [];
  existing = new Set<string>(['src']);
  failOn: string | null = null;
  /** A file whose bytes the browser can no longer read (changed on disk). */
  unreadable: string | null = null;
  /** How a refused file of a batch is answered. */
  refusal: { code: ErrorCode; message: string } = { code: 'storage', message: 'disk full' };
  /** Writes of these paths take a timer's turn to finish, not microtasks. */
  slow = new Set<string>();
  maxInFlight = 0;
  inFlight = 0;
  /** create_dirs asked and not yet answered, and each one's parent then. */
  private dirsPending = new Set<string>();
  dirStartedBeforeParent: string[] = [];
  maxDirsInFlight = 0;
  tree: Record<string, Entry[]> = {};

  async request(op: Op): Promise<Reply> {
    this.ops.push(op);
    if (op.op === 'create_dir') {
      const parent = op.path.split('/').slice(0, -1).join('/');
      if (this.dirsPending.has(parent)) this.dirStartedBeforeParent.push(op.path);
      this.dirsPending.add(op.path);
      this.maxDirsInFlight = Math.max(this.maxDirsInFlight, this.dirsPending.size);
      await Promise.resolve();
      await Promise.resolve();
      this.dirsPending.delete(op.path);
      if (this.existing.has(op.path)) {
        throw Object.assign(new Error(`${op.path}: exists`), { code: 'already_exists' });
      }
    }
    return { kind: 'done' };
  }

  async writeFile(
    path: string,
    data: Uint8Array | Blob,
    opts: { bulk?: boolean; onProgress?: (sent: number, total: number) => void; signal?: AbortSignal } = {},
  ): Promise<{ version: string }> {
    const size = data instanceof Blob ? data.size : data.length;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await Promise.resolve();
      if (path === this.failOn) throw Object.assign(new Error('disk full'), { code: 'storage' });
      if (path === this.unreadable) throw new DOMException('The requested file could not be read', 'NotReadableError');
      if (this.slow.has(path)) await new Promise((resolve) => setTimeout(resolve, 5));
      opts.onProgress?.(Math.floor(size / 2), size);
      await Promise.resolve();
      opts.onProgress?.(size, size);
      this.writes.push({ path, size, bulk: opts.bulk === true });
      return { version: 'v' };
    } finally {
      this.inFlight--;
    }
  }

  async writeMany(
    files: readonly { path: string; data: Uint8Array | Blob }[],
    opts: { bulk?: boolean; onProgress?: (sent: number, total: number) => void; signal?: AbortSignal } = {},
  ): Promise<WriteOutcome[]> {
    const sizes = files.map((f) => (f.data instanceof Blob ? f.data.size : f.data.length));
    const total = sizes.reduce((a, b) => a + b, 0);
    if (opts.signal?.aborted) throw new DOMException('the upload was cancelled', 'AbortError');
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await Promise.resolve();
      opts.onProgress?.(Math.floor(total / 2), total);
      await Promise.resolve();
      opts.onProgress?.(total, total);
      this.batches.push(files.map((f) => f.path));
      return files.map((f, i): WriteOutcome => {
        if (f.path === this.failOn) return { outcome: 'refused', ...this.refusal };
        this.writes.push({ path: f.path, size: sizes[i] ?? 0, bulk: opts.bulk === true });
        return { outcome: 'written', version: 'v' };
      });
    } finally {
      this.inFlight--;
    }
  }

  async list(path: string): Promise<Entry[]> {
    const entries = this.tree[path];
    if (entries === undefined) throw Object.assign(new Error('gone'), { code: 'not_found' });
    return entries;
  }
}

describe('runUpload', () => {
  it('creates folders (tolerating existing ones), sends every file, reports bytes', async () => {
    const client = new FakeClient();
    const plan = planUpload('', [
      { relPath: 'src/a.txt', kind: 'file', blob: blob(10) },
      { relPath: 'src/b.txt', kind: 'file', blob: blob(20) },
      { relPath: 'c', kind: 'dir' },
    ]);
    const seen: number[] = [];
    await runUpload(client, plan, { progress: (_n, _i, sent) => seen.push(sent) }, new AbortController().signal);
    expect(client.ops).toEqual([{ op: 'create_dir', path: 'c' }, { op: 'create_dir', path: 'src' }]);
    expect(client.writes.map((w) => w.path).sort()).toEqual(['src/a.txt', 'src/b.txt']);
    expect(seen[seen.length - 1]).toBe(30);
    expect(Math.max(...seen)).toBe(30);
    // Progress never runs backwards.
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
  });

  it('small files go in batches, a big one alone, a few jobs at a time', async () => {
    const client = new FakeClient();
    const small = Array.from({ length: 600 }, (_, i): UploadItem => ({ relPath: `f${i}`, kind: 'file', blob: blob(1) }));
    const big: UploadItem = { relPath: 'big.bin', kind: 'file', blob: blob(300 * 1024) };
    await runUpload(client, planUpload('', [...small, big]), { progress: () => undefined }, new AbortController().signal);
    expect(client.batches.map((b) => b.length)).toEqual([256, 256, 88]);
    expect(client.writes).toHaveLength(601);
    expect(client.writes.filter((w) => w.path === 'big.bin')).toEqual([{ path: 'big.bin', size: 300 * 1024, bulk: true }]);
    expect(client.batches.flat()).not.toContain('big.bin');
    expect(client.maxInFlight).toBe(4);
  });

  it('a batch holds at most 256 files and 1 MiB, in the plan\'s order', () => {
    const files = [...Array.from({ length: 3 }, () => ({ blob: blob(400 * 1024) })), { blob: blob(1) }];
    // 400 KiB is above the batched size: each goes alone.
    expect(uploadJobs(files)).toEqual([
      { files: [0], batched: false },
      { files: [1], batched: false },
      { files: [2], batched: false },
      { files: [3], batched: true },
    ]);
    const mid = Array.from({ length: 5 }, () => ({ blob: blob(250 * 1024) }));
    expect(uploadJobs(mid).map((j) => j.files)).toEqual([[0, 1, 2, 3], [4]]);
    expect(uploadJobs([{ blob: blob(1) }])).toEqual([{ files: [0], batched: false }]);
  });

  it('many files are sent as bulk writes, so a save goes ahead of them; one file is not', async () => {
    const client = new FakeClient();
    const many = Array.from({ length: 3 }, (_, i): UploadItem => ({ relPath: `f${i}`, kind: 'file', blob: blob(1) }));
    await runUpload(client, planUpload('', many), { progress: () => undefined }, new AbortController().signal);
    expect(client.batches).toEqual([['f0', 'f1', 'f2']]);
    expect(client.writes.map((w) => w.bulk)).toEqual([true, true, true]);
    const one = new FakeClient();
    await runUpload(one, planUpload('', [many[0]!]), { progress: () => undefined }, new AbortController().signal);
    expect(one.batches).toEqual([]);
    expect(one.writes.map((w) => w.bulk)).toEqual([false]);
  });

  it('creates the folders of one depth together, never a folder before its parent', async () => {
    const client = new FakeClient();
    const items: UploadItem[] = [];
    for (let a = 0; a < 5; a++) for (let b = 0; b < 5; b++) items.push({ relPath: `d${a}/e${b}`, kind: 'dir' });
    await runUpload(client, planUpload('', items), { progress: () => undefined }, new AbortController().signal);
    expect(client.ops.filter((o) => o.op === 'create_dir')).toHaveLength(30);
    expect(client.dirStartedBeforeParent).toEqual([]);
    expect(client.maxDirsInFlight).toBeGreaterThan(1);
    expect(client.maxDirsInFlight).toBeLessThanOrEqual(16);
  });

  it('fails with the file and the reason in words, and stops', async () => {
    const client = new FakeClient();
    client.failOn = 'f1';
    const items = Array.from({ length: 3 }, (_, i): UploadItem => ({ relPath: `f${i}`, kind: 'file', blob: blob(1) }));
    const plan = planUpload('', items);
    await expect(runUpload(client, plan, { progress: () => undefined }, new AbortController().signal)).rejects.toThrow(
      'Could not upload "f1": disk full.',
    );
  });

  it('a failure stops the jobs not yet started, and is reported once the started ones have settled', async () => {
    const client = new FakeClient();
    client.failOn = 'f1';
    client.slow = new Set(['f0', 'f2', 'f3']);
    // Above the batched size, so each file is a job of its own, four at a time.
    const items = Array.from({ length: 8 }, (_, i): UploadItem => ({ relPath: `f${i}`, kind: 'file', blob: blob(300 * 1024) }));
    let inFlightWhenFailed = -1;
    await expect(
      runUpload(client, planUpload('', items), { progress: () => undefined }, new AbortController().signal).catch((e: unknown) => {
        inFlightWhenFailed = client.inFlight;
        throw e;
      }),
    ).rejects.toThrow('Could not upload "f1": disk full.');
    expect(inFlightWhenFailed).toBe(0);
    expect(client.writes.map((w) => w.path).sort()).toEqual(['f0', 'f2', 'f3']);
  });

  it('a file of a batch refused for a missing folder says so', async () => {
    const client = new FakeClient();
    client.failOn = 'gone/b';
    client.refusal = { code: 'not_found', message: 'gone: no such directory' };
    const items = ['gone/a', 'gone/b'].map((relPath): UploadItem => ({ relPath, kind: 'file', blob: blob(1) }));
    await expect(runUpload(client, planUpload('', items), { progress: () => undefined }, new AbortController().signal)).rejects.toThrow(
      'Could not upload "gone/b": its folder does not exist (any more).',
    );
  });

  it('a file changed on disk since it was picked is named, in words', async () => {
    const client = new FakeClient();
    client.unreadable = 'big.bin';
    const plan = planUpload('', [{ relPath: 'big.bin', kind: 'file', blob: blob(1) }]);
    await expect(runUpload(client, plan, { progress: () => undefined }, new AbortController().signal)).rejects.toThrow(
      'Could not upload "big.bin": it could not be read from your computer; it may have changed or been removed since you picked it.',
    );
  });

  it('a batched upload cancelled as it starts sends no batch', async () => {
    const client = new FakeClient();
    const abort = new AbortController();
    const items = Array.from({ length: 2000 }, (_, i): UploadItem => ({ relPath: `f${i}`, kind: 'file', blob: blob(1) }));
    const report = { progress: () => abort.abort() };
    await expect(runUpload(client, planUpload('', items), report, abort.signal)).rejects.toThrow('cancelled');
    expect(client.batches).toEqual([]);
  });

  it('a cancelled upload sends nothing more', async () => {
    const client = new FakeClient();
    const abort = new AbortController();
    abort.abort();
    const plan = planUpload('', [{ relPath: 'a', kind: 'file', blob: blob(1) }]);
    await expect(runUpload(client, plan, { progress: () => undefined }, abort.signal)).rejects.toThrow('cancelled');
    expect(client.writes).toEqual([]);
  });
});

describe('countFolder', () => {
  const e = (path: string, kind: 'file' | 'dir'): Entry => ({ name: path, path, kind, size: 0, mtime_ms: 0 });
  it('counts files, folders and depth', async () => {
    const client = new FakeClient();
    client.tree = {
      src: [e('src/lib', 'dir'), e('src/a', 'file')],
      'src/lib': [e('src/lib/deep', 'dir'), e('src/lib/b', 'file'), e('src/lib/c', 'file')],
      'src/lib/deep': [],
    };
    expect(await countFolder(client, 'src')).toEqual({ files: 3, dirs: 2, depth: 2, complete: true });
  });
});

describe('errorText', () => {
  it('says what failed and why', () => {
    expect(errorText(Object.assign(new Error('x: no such file'), { code: 'not_found' }), 'Could not open "x"')).toBe(
      'Could not open "x": it does not exist (any more).',
    );
    expect(errorText(Object.assign(new Error('storage is unreachable: timeout.'), { code: 'storage' }), 'Could not save')).toBe(
      'Could not save: storage is unreachable: timeout.',
    );
    expect(errorText(Object.assign(new Error('socket closed'), { code: 'disconnected' }), 'Could not save')).toBe(
      'Could not save: the connection to the sandbox dropped; try again once it is back.',
    );
    expect(errorText(new Error('boom'), 'Could not')).toBe('Could not: boom.');
  });
});

describe('collectDrop', () => {
  // Stand-ins for the browser's FileSystemEntry objects of a dropped folder.
  function fileEntry(name: string, text: string): FileSystemEntry {
    const file = new File([text], name);
    return { name, isFile: true, isDirectory: false, file: (ok: (f: File) => void) => ok(file) } as unknown as FileSystemEntry;
  }
  function dirEntry(name: string, children: FileSystemEntry[]): FileSystemEntry {
    return {
      name,
      isFile: false,
      isDirectory: true,
      createReader: () => {
        // Two entries per batch, then an empty one, like Chromium's 100.
        let at = 0;
        return {
          readEntries: (ok: (batch: FileSystemEntry[]) => void) => {
            ok(children.slice(at, at + 2));
            at += 2;
          },
        };
      },
    } as unknown as FileSystemEntry;
  }

  it('walks folders in batches, keeping empty folders', async () => {
    const tree = dirEntry('site', [
      fileEntry('a.html', 'a'),
      fileEntry('b.css', 'b'),
      dirEntry('img', [fileEntry('c.png', 'c')]),
      dirEntry('empty', []),
    ]);
    const items = await collectDrop([tree, fileEntry('top.txt', 't')]);
    expect(items.map((i) => `${i.kind}:${i.relPath}`)).toEqual([
      'dir:site',
      'file:site/a.html',
      'file:site/b.css',
      'dir:site/img',
      'file:site/img/c.png',
      'dir:site/empty',
      'file:top.txt',
    ]);
    const plan = planUpload('', items);
    expect(plan.dirs).toEqual(['site', 'site/empty', 'site/img']);
    expect(plan.files.map((f) => f.path)).toEqual(['site/a.html', 'site/b.css', 'site/img/c.png', 'top.txt']);
  });
});
