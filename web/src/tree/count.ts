// Counting what deleting a folder removes, for its confirmation.

import type { RunnerClient } from '../protocol/client';

/** Counting stops here; the confirmation then says "at least". */
const COUNT_LIMIT = { entries: 20_000, dirs: 400 };

export interface FolderCount {
  files: number;
  dirs: number;
  depth: number;
  complete: boolean;
}

/** What deleting folder `path` removes, listing a bounded number of folders a few at a time. */
export async function countFolder(client: Pick<RunnerClient, 'list'>, path: string): Promise<FolderCount> {
  const count: FolderCount = { files: 0, dirs: 0, depth: 0, complete: true };
  let queue: { path: string; depth: number }[] = [{ path, depth: 1 }];
  let listed = 0;
  while (queue.length > 0) {
    if (listed >= COUNT_LIMIT.dirs || count.files + count.dirs >= COUNT_LIMIT.entries) {
      count.complete = false;
      break;
    }
    const batch = queue.slice(0, 8);
    queue = queue.slice(8);
    listed += batch.length;
    const results = await Promise.all(batch.map((d) => client.list(d.path).then((entries) => ({ d, entries }))));
    for (const { d, entries } of results) {
      if (entries.length > 0) count.depth = Math.max(count.depth, d.depth);
      for (const e of entries) {
        if (e.kind === 'dir') {
          count.dirs++;
          queue.push({ path: e.path, depth: d.depth + 1 });
        } else {
          count.files++;
        }
      }
    }
  }
  return count;
}
