// Uploads: what a drop or a file picker brings, where each piece goes, and
// the job that sends it. `planUpload` is pure (tested); `collectDrop` walks
// the browser's drag-and-drop entries; `runUpload` talks to the runner.

import { ProtocolError, type RunnerClient } from '../protocol/client';
import { errorCode, errorText } from './errors';
import { joinPath, nameProblem, parentOf } from './paths';

/** One thing to upload, named relative to the folder it is dropped on. */
export interface UploadItem {
  /** `/`-separated, e.g. `photos/2024/a.jpg`. */
  relPath: string;
  /** Folders are listed too, so an empty dropped folder is created. */
  kind: 'file' | 'dir';
  /** The file's bytes (absent for folders). */
  blob?: Blob;
}

export interface UploadPlan {
  /** Folders to create, parents before children. */
  dirs: string[];
  files: { path: string; blob: Blob }[];
  /** Bytes of all files. */
  total: number;
  /** The names the upload adds to the target folder (first path components). */
  topNames: string[];
  /** Items left out because the workspace refuses their names, in words. */
  skipped: string[];
}

export function planUpload(target: string, items: readonly UploadItem[]): UploadPlan {
  const dirs = new Set<string>();
  const files: { path: string; blob: Blob }[] = [];
  const top = new Set<string>();
  const skipped: string[] = [];
  let total = 0;
  for (const item of items) {
    const parts = item.relPath.split('/').filter((p) => p !== '');
    const bad = parts.find((p) => nameProblem(p) !== null);
    if (parts.length === 0 || bad !== undefined) {
      skipped.push(`${item.relPath}: ${bad === undefined ? 'no name' : nameProblem(bad)}`);
      continue;
    }
    const first = parts[0];
    if (first !== undefined) top.add(first);
    let at = target;
    const folders = item.kind === 'dir' ? parts : parts.slice(0, -1);
    for (const part of folders) {
      at = joinPath(at, part);
      dirs.add(at);
    }
    if (item.kind === 'file' && item.blob !== undefined) {
      files.push({ path: joinPath(target, parts.join('/')), blob: item.blob });
      total += item.blob.size;
    }
  }
  const depth = (p: string): number => p.split('/').length;
  return {
    dirs: [...dirs].sort((a, b) => depth(a) - depth(b) || a.localeCompare(b)),
    files,
    total,
    topNames: [...top].map((n) => joinPath(target, n)),
    skipped,
  };
}

/** The folders whose listings an upload into `target` changes. */
export function touchedDirs(plan: UploadPlan, target: string): string[] {
  const out = new Set<string>([target]);
  for (const d of plan.dirs) out.add(parentOf(d));
  for (const f of plan.files) out.add(parentOf(f.path));
  return [...out];
}

/** Items from a file picker (`<input type=file>`), which never brings folders. */
export function itemsFromFiles(files: Iterable<File>): UploadItem[] {
  const out: UploadItem[] = [];
  for (const f of files) {
    // `webkitRelativePath` is set when a folder was picked (webkitdirectory).
    const rel = f.webkitRelativePath !== '' ? f.webkitRelativePath : f.name;
    out.push({ relPath: rel, kind: 'file', blob: f });
  }
  return out;
}

/**
 * Takes what a drop brings. The entries must be taken during the `drop`
 * event itself (the DataTransfer is emptied afterwards); walking folders
 * happens after.
 */
export function entriesOfDrop(dt: DataTransfer): { entries: FileSystemEntry[]; files: File[] } {
  const entries: FileSystemEntry[] = [];
  for (const item of Array.from(dt.items)) {
    if (item.kind !== 'file') continue;
    const entry = item.webkitGetAsEntry();
    if (entry !== null) entries.push(entry);
  }
  return { entries, files: entries.length > 0 ? [] : Array.from(dt.files) };
}

function readBatch(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

function fileOf(entry: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

/** Walks dropped entries, folders recursively, into upload items. */
export async function collectDrop(entries: readonly FileSystemEntry[]): Promise<UploadItem[]> {
  const out: UploadItem[] = [];
  const walk = async (entry: FileSystemEntry, rel: string): Promise<void> => {
    if (entry.isFile) {
      out.push({ relPath: rel, kind: 'file', blob: await fileOf(entry as FileSystemFileEntry) });
      return;
    }
    if (!entry.isDirectory) return;
    out.push({ relPath: rel, kind: 'dir' });
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    // readEntries answers in batches (100 in Chromium) until an empty one.
    for (;;) {
      const batch = await readBatch(reader);
      if (batch.length === 0) break;
      for (const child of batch) await walk(child, `${rel}/${child.name}`);
    }
  };
  for (const e of entries) await walk(e, e.name);
  return out;
}

export interface UploadReport {
  /** Bytes sent so far over the whole job, and the file being sent. */
  progress(name: string, fileIndex: number, sent: number): void;
}

/** How many jobs (a batch of small files, or one big file) are in flight at
 * once: while one batch waits for storage, the next is on its way. */
const PARALLEL = 4;
/** Files up to this size travel in batches, one `write_many` each; a bigger
 * one goes alone, streamed with its own progress. */
const BATCHED_FILE_BYTES = 256 * 1024;
/** A batch: many enough files that a folder of thousands costs tens of
 * requests and storage commits rather than thousands, few enough bytes that
 * progress keeps moving (within the protocol's WRITE_MANY limits). */
const BATCH_FILES = 256;
const BATCH_BYTES = 1024 * 1024;
/** `create_dir`s in flight at once, for the folders of one depth. */
const DIRS_AT_ONCE = 16;

/** What one lane sends at a time: indices into the plan's files. */
interface Job {
  files: number[];
  /** In one `write_many` (else one `write`, of one file). */
  batched: boolean;
}

/** Many files are bulk work: small ones go in batches, big ones alone. One
 * file is a plain write, as urgent as a save. */
export function uploadJobs(files: readonly { blob: Blob }[]): Job[] {
  if (files.length <= 1) return files.map((_, i) => ({ files: [i], batched: false }));
  const jobs: Job[] = [];
  let batch: number[] = [];
  let bytes = 0;
  files.forEach((f, i) => {
    if (f.blob.size > BATCHED_FILE_BYTES) {
      jobs.push({ files: [i], batched: false });
      return;
    }
    if (batch.length === BATCH_FILES || bytes + f.blob.size > BATCH_BYTES) {
      jobs.push({ files: batch, batched: true });
      batch = [];
      bytes = 0;
    }
    batch.push(i);
    bytes += f.blob.size;
  });
  if (batch.length > 0) jobs.push({ files: batch, batched: true });
  return jobs;
}

/** Runs `f` over `items`, at most `limit` at a time; the first failure stops
 * the rest from starting and is what this rejects with, once the items
 * already started have settled (so nothing is still writing when the caller
 * hears of the failure and perhaps starts another upload). */
async function eachLimited<T>(items: readonly T[], limit: number, f: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const lane = async (): Promise<void> => {
    while (next < items.length && failure === undefined) {
      const item = items[next++] as T;
      try {
        await f(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, () => lane()));
  if (failure !== undefined) throw failure.err;
}

/**
 * Sends a plan: folders first, parents before children (one that exists
 * already is fine), then the files: small ones in batches, a few jobs at a
 * time. Resolves once every file is durable (`written`); rejects with the
 * first failure, in words.
 */
export async function runUpload(
  client: Pick<RunnerClient, 'request' | 'writeFile' | 'writeMany'>,
  plan: UploadPlan,
  report: UploadReport,
  signal: AbortSignal,
): Promise<void> {
  const cancelled = (): DOMException => new DOMException('Upload cancelled', 'AbortError');
  // A folder's parent exists once the depth above it is done.
  const byDepth = new Map<number, string[]>();
  for (const dir of plan.dirs) {
    const depth = dir.split('/').length;
    byDepth.set(depth, [...(byDepth.get(depth) ?? []), dir]);
  }
  for (const depth of [...byDepth.keys()].sort((a, b) => a - b)) {
    await eachLimited(byDepth.get(depth) ?? [], DIRS_AT_ONCE, async (dir) => {
      if (signal.aborted) throw cancelled();
      try {
        await client.request({ op: 'create_dir', path: dir });
      } catch (err) {
        if (errorCode(err) !== 'already_exists') throw new Error(errorText(err, `Could not create the folder "${dir}"`));
      }
    });
  }
  let finished = 0; // bytes of files already durable
  const inFlight = new Map<number, number>(); // job -> bytes sent
  const sent = (): number => {
    let n = finished;
    for (const v of inFlight.values()) n += v;
    return n;
  };
  const jobs = uploadJobs(plan.files);
  // Many files are bulk work for the runner: a save made in the editor
  // meanwhile is persisted ahead of them. One file is as urgent as a save.
  const bulk = plan.files.length > 1;
  const failure = (err: unknown, path: string): Error => {
    if (signal.aborted) return cancelled();
    // The browser's own words for a file changed or removed on disk since it
    // was picked name neither the file nor what to do.
    if (err instanceof DOMException && err.name === 'NotReadableError') {
      return new Error(`Could not upload "${path}": it could not be read from your computer; it may have changed or been removed since you picked it.`);
    }
    return new Error(errorText(err, `Could not upload "${path}"`));
  };
  const indices = jobs.map((_, i) => i);
  // A big file goes alone so its progress reads as one steady bar.
  const lanes = jobs.length > 1 && plan.total / plan.files.length < 4 * 1024 * 1024 ? PARALLEL : 1;
  await eachLimited(indices, lanes, async (jobIndex) => {
    const job = jobs[jobIndex] as Job;
    const files = job.files.map((i) => ({ index: i, ...(plan.files[i] as { path: string; blob: Blob }) }));
    const first = files[0];
    if (first === undefined) return;
    if (signal.aborted) throw cancelled();
    // Which file the job's byte `at` belongs to, for "(i of n)".
    const fileAt = (at: number): { path: string; index: number } => {
      let start = 0;
      for (const f of files) {
        if (at < start + f.blob.size) return f;
        start += f.blob.size;
      }
      return files[files.length - 1] ?? first;
    };
    const progress = (bytes: number): void => {
      inFlight.set(jobIndex, bytes);
      const f = fileAt(bytes);
      report.progress(f.path, f.index, sent());
    };
    progress(0);
    if (job.batched) {
      let outcomes;
      try {
        outcomes = await client.writeMany(
          files.map((f) => ({ path: f.path, data: f.blob })),
          { bulk, signal, onProgress: progress },
        );
      } catch (err) {
        throw failure(err, first.path);
      }
      for (const [i, outcome] of outcomes.entries()) {
        if (outcome.outcome !== 'refused') continue;
        const path = files[i]?.path ?? first.path;
        // A write's `not_found` means its folder is missing, not the file.
        if (outcome.code === 'not_found' && !signal.aborted) {
          throw new Error(`Could not upload "${path}": its folder does not exist (any more).`);
        }
        throw failure(new ProtocolError(outcome.code, outcome.message), path);
      }
    } else {
      try {
        await client.writeFile(first.path, first.blob, { bulk, signal, onProgress: progress });
      } catch (err) {
        throw failure(err, first.path);
      }
    }
    inFlight.delete(jobIndex);
    finished += files.reduce((n, f) => n + f.blob.size, 0);
    const last = files[files.length - 1] ?? first;
    report.progress(last.path, last.index, sent());
  });
}
