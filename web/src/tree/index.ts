// The file tree pane: the reducer (model.ts), its view (view.ts), and the
// effects that talk to the runner. Mounted by the IDE shell.

import type { RunnerClient } from '../protocol/client';
import { countFolder } from './count';
import { downloadFile } from './download';
import { errorCode, errorText } from './errors';
import { entryAt, initialTree, reduceTree, type TreeAction, type TreeEffect, type TreeState } from './model';
import { announceMove } from './moves';
import { baseName, joinPath } from './paths';
import { collectDrop, entriesOfDrop, itemsFromFiles, planUpload, runUpload, touchedDirs, type UploadItem, type UploadPlan } from './upload';
import { createTreeView } from './view';

export interface FileTreeContext {
  client: RunnerClient;
  project: string;
  onOpen: (path: string) => void;
  onError: (message: string) => void;
}

interface UploadJob {
  target: string;
  plan: UploadPlan;
}

export function mountFileTree(el: HTMLElement, ctx: FileTreeContext): { dispose(): void } {
  const { client } = ctx;
  let state: TreeState = initialTree();
  let disposed = false;

  // Upload jobs run one after the other; a job waits here while the user
  // decides whether it may replace existing files.
  const jobs = new Map<number, UploadJob>();
  const queue: number[] = [];
  let running: { job: number; abort: AbortController } | null = null;
  let nextJob = 0;

  const view = createTreeView(el, {
    dispatch,
    drop(target, dt) {
      const { entries, files } = entriesOfDrop(dt);
      const items: Promise<UploadItem[]> =
        entries.length > 0 ? collectDrop(entries) : Promise.resolve(itemsFromFiles(files));
      items.then(
        (list) => upload(target, list),
        (err: unknown) => ctx.onError(errorText(err, 'Could not read the dropped files')),
      );
    },
    pick(target) {
      picker.dataset['target'] = target;
      picker.value = '';
      picker.click();
    },
    cancelUpload() {
      running?.abort.abort();
    },
  });

  const picker = document.createElement('input');
  picker.type = 'file';
  picker.multiple = true;
  picker.hidden = true;
  picker.dataset['testid'] = 'tree-upload-input';
  picker.addEventListener('change', () => {
    const files = picker.files === null ? [] : Array.from(picker.files);
    if (files.length > 0) upload(picker.dataset['target'] ?? '', itemsFromFiles(files));
  });
  el.append(picker);

  function dispatch(action: TreeAction): void {
    if (disposed) return;
    const [next, effects] = reduceTree(state, action);
    if (next !== state) {
      state = next;
      view.render(state);
    }
    for (const effect of effects) perform(effect);
  }

  function describe(path: string): string {
    return path === '' ? 'the workspace' : `"${path}"`;
  }

  function perform(effect: TreeEffect): void {
    switch (effect.type) {
      case 'list': {
        const path = effect.path;
        client.list(path).then(
          (entries) => dispatch({ type: 'listed', path, entries }),
          (err: unknown) =>
            dispatch({
              type: 'listFailed',
              path,
              code: errorCode(err) ?? 'internal',
              message: errorText(err, `Could not list ${describe(path)}`),
            }),
        );
        return;
      }
      case 'open':
        ctx.onOpen(effect.path);
        return;
      case 'create': {
        const { path, what } = effect;
        const done: Promise<unknown> =
          what === 'file'
            ? client.writeFile(path, new Uint8Array(0), { createNew: true })
            : client.request({ op: 'create_dir', path });
        done.then(
          () => dispatch({ type: 'opDone', result: { op: 'create', what, path } }),
          (err: unknown) =>
            dispatch({
              type: 'opFailed',
              paths: [path],
              message: errorText(err, `Could not create the ${what === 'dir' ? 'folder' : 'file'} "${path}"`),
            }),
        );
        return;
      }
      case 'rename': {
        const { from, to } = effect;
        client.request({ op: 'rename', from, to }).then(
          () => {
            announceMove(client, from, to);
            dispatch({ type: 'opDone', result: { op: 'rename', from, to } });
          },
          (err: unknown) =>
            dispatch({ type: 'opFailed', paths: [from, to], message: errorText(err, `Could not rename "${from}" to "${to}"`) }),
        );
        return;
      }
      case 'delete': {
        const { path, recursive } = effect;
        client.request(recursive ? { op: 'delete', path, recursive } : { op: 'delete', path }).then(
          () => dispatch({ type: 'opDone', result: { op: 'delete', path } }),
          (err: unknown) => {
            // Already gone is what the user wanted.
            if (errorCode(err) === 'not_found') dispatch({ type: 'opDone', result: { op: 'delete', path } });
            else dispatch({ type: 'opFailed', paths: [path], message: errorText(err, `Could not delete "${path}"`) });
          },
        );
        return;
      }
      case 'count': {
        const path = effect.path;
        countFolder(client, path).then(
          (count) => dispatch({ type: 'counted', path, ...count }),
          (err: unknown) => dispatch({ type: 'countFailed', path, message: errorText(err, 'Could not count') }),
        );
        return;
      }
      case 'download': {
        const path = effect.path;
        downloadFile(client, path).catch((err: unknown) =>
          ctx.onError(errorText(err, `Could not download "${baseName(path)}"`)),
        );
        return;
      }
      case 'startUpload':
        queue.push(effect.job);
        pump();
        return;
      case 'cancelUpload':
        jobs.delete(effect.job);
        return;
      case 'error':
        ctx.onError(effect.message);
        return;
    }
  }

  function upload(target: string, items: readonly UploadItem[]): void {
    if (disposed) return;
    const plan = planUpload(target, items);
    if (plan.skipped.length > 0) {
      const first = plan.skipped[0] ?? '';
      const more = plan.skipped.length > 1 ? ` and ${plan.skipped.length - 1} more` : '';
      ctx.onError(`Skipped ${first}${more}.`);
    }
    if (plan.files.length === 0 && plan.dirs.length === 0) return;
    const job = ++nextJob;
    jobs.set(job, { target, plan });
    dispatch({ type: 'reveal', path: target });
    const existing = plan.topNames.filter((p) => {
      const e = entryAt(state, p);
      // Dropping a folder onto a folder of the same name merges them; only
      // files would be replaced.
      return e !== undefined && !(e.kind === 'dir' && plan.dirs.includes(p));
    });
    if (existing.length > 0) dispatch({ type: 'askReplace', job, names: existing });
    else perform({ type: 'startUpload', job });
  }

  function pump(): void {
    if (running !== null || disposed) return;
    const job = queue.shift();
    if (job === undefined) return;
    const entry = jobs.get(job);
    if (entry === undefined) return pump();
    const abort = new AbortController();
    running = { job, abort };
    const { plan, target } = entry;
    const fileCount = plan.files.length;
    let lastReport = 0;
    const report = {
      progress(name: string, fileIndex: number, sent: number): void {
        // A frame's worth of progress at most: a 100 MB file reports per
        // 512 KiB chunk, thousands of small files per file.
        const now = performance.now();
        if (now - lastReport < 50 && sent < plan.total) return;
        lastReport = now;
        dispatch({ type: 'uploadProgress', progress: { job, name, fileIndex, fileCount, sent, total: plan.total } });
      },
    };
    report.progress(plan.files[0]?.path ?? joinPath(target, plan.dirs[0] ?? ''), 0, 0);
    runUpload(client, plan, report, abort.signal)
      .catch((err: unknown) => {
        if (!abort.signal.aborted) ctx.onError(err instanceof Error ? err.message : String(err));
      })
      .finally(() => {
        jobs.delete(job);
        running = null;
        dispatch({ type: 'uploadEnded', job, dirs: touchedDirs(plan, target) });
        pump();
      });
  }

  const offEvent = client.onEvent((event) => {
    if (event.event === 'fs_changed') dispatch({ type: 'fsChanged', changes: event.changes });
  });
  let wasOpen = client.state === 'open';
  const offState = client.onState((s) => {
    // The first open lists what a request made while connecting may have
    // missed; later ones catch up on events lost while the socket was down.
    if (s === 'open' && !wasOpen) dispatch({ type: 'reconnected' });
    wasOpen = s === 'open';
  });

  view.render(state);
  dispatch({ type: 'start' });

  return {
    dispose() {
      disposed = true;
      running?.abort.abort();
      offEvent();
      offState();
      view.dispose();
      picker.remove();
    },
  };
}
