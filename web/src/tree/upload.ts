// Uploads: what a drop or a file picker brings, where each piece goes, and
// the job that sends it. `planUpload` is pure (tested); `collectDrop` walks
// the browser's drag-and-drop entries; `runUpload` talks to the runner.

import type { RunnerClient } from '../protocol/client';
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

/** How many files are in flight at once: small files cost a round trip each. */
const PARALLEL = 4;

/**
 * Sends a plan: folders first (one that exists already is fine), then the
 * files, a few at a time. Resolves once every file is durable (`written`);
 * rejects with the first failure, in words.
 */
export async function runUpload(
  client: Pick<RunnerClient, 'request' | 'writeFile'>,
  plan: UploadPlan,
  report: UploadReport,
  signal: AbortSignal,
): Promise<void> {
  for (const dir of plan.dirs) {
    if (signal.aborted) throw new DOMException('Upload cancelled', 'AbortError');
    try {
      await client.request({ op: 'create_dir', path: dir });
    } catch (err) {
      if (errorCode(err) !== 'already_exists') throw new Error(errorText(err, `Could not create the folder "${dir}"`));
    }
  }
  let finished = 0; // bytes of files already durable
  const inFlight = new Map<number, number>(); // file index -> bytes sent
  const sent = (): number => {
    let n = finished;
    for (const v of inFlight.values()) n += v;
    return n;
  };
  let next = 0;
  let failed = false;
  const cancelled = (): DOMException => new DOMException('Upload cancelled', 'AbortError');
  const worker = async (): Promise<void> => {
    while (next < plan.files.length && !failed) {
      const index = next++;
      const f = plan.files[index];
      if (f === undefined) return;
      if (signal.aborted) throw cancelled();
      inFlight.set(index, 0);
      report.progress(f.path, index, sent());
      try {
        await client.writeFile(f.path, f.blob, {
          bulk,
          signal,
          onProgress: (bytes) => {
            inFlight.set(index, bytes);
            report.progress(f.path, index, sent());
          },
        });
      } catch (err) {
        failed = true;
        if (signal.aborted) throw cancelled();
        throw new Error(errorText(err, `Could not upload "${f.path}"`));
      }
      inFlight.delete(index);
      finished += f.blob.size;
      report.progress(f.path, index, sent());
    }
  };
  // A big file goes alone so its progress reads as one steady bar; small
  // files share the socket, a few at a time.
  const lanes = plan.files.length > 1 && plan.total / plan.files.length < 4 * 1024 * 1024 ? PARALLEL : 1;
  // Many files are bulk work for the runner: a save made in the editor
  // meanwhile is persisted ahead of them. One file is as urgent as a save.
  const bulk = plan.files.length > 1;
  const workers = Array.from({ length: Math.min(lanes, plan.files.length) }, () => worker());
  // The first failure stops the other lanes before their next file.
  await Promise.all(workers);
}
