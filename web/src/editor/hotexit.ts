// Hot exit: open tabs and unsaved buffers survive a page reload, kept in
// localStorage under one key per project. Serialization is pure (tested);
// `HotExitStore` adds the storage and the debounce.

import { isDirty, type EditorState } from './model';

export interface HotExitBuffer {
  path: string;
  /** The file version the unsaved text was based on (null: the file did not exist). */
  base: string | null;
  text: string;
}

export interface HotExitSnapshot {
  tabs: string[];
  active: string | null;
  buffers: HotExitBuffer[];
}

const FORMAT = 1;

export function hotExitKey(project: string): string {
  return `cloudcode.editor.${project}`;
}

/**
 * The state worth keeping: every tab, and the text of dirty ones. `textOf`
 * reads a buffer (undefined when it has no model yet).
 */
export function takeSnapshot(state: EditorState, textOf: (path: string) => string | undefined): HotExitSnapshot {
  const buffers: HotExitBuffer[] = [];
  for (const doc of state.docs) {
    if (!isDirty(doc)) continue;
    const text = doc.restored?.text ?? textOf(doc.path);
    if (text === undefined) continue;
    buffers.push({ path: doc.path, base: doc.restored !== null ? doc.restored.base : doc.base, text });
  }
  return { tabs: state.docs.map((d) => d.path), active: state.active, buffers };
}

export function serializeSnapshot(s: HotExitSnapshot): string {
  return JSON.stringify({ format: FORMAT, ...s });
}

/** The snapshot in `raw`, or null when there is none or it is unreadable. */
export function parseSnapshot(raw: string | null): HotExitSnapshot | null {
  if (raw === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v['format'] !== FORMAT || !Array.isArray(v['tabs']) || !Array.isArray(v['buffers'])) return null;
  const tabs = v['tabs'].filter((t): t is string => typeof t === 'string');
  const active = typeof v['active'] === 'string' ? v['active'] : null;
  const buffers: HotExitBuffer[] = [];
  for (const b of v['buffers'] as unknown[]) {
    if (typeof b !== 'object' || b === null) continue;
    const r = b as Record<string, unknown>;
    const path = r['path'];
    const text = r['text'];
    const base = r['base'];
    if (typeof path !== 'string' || typeof text !== 'string') continue;
    if (base !== null && typeof base !== 'string') continue;
    buffers.push({ path, text, base });
  }
  return { tabs, active, buffers };
}

export function isEmptySnapshot(s: HotExitSnapshot): boolean {
  return s.tabs.length === 0 && s.buffers.length === 0;
}

/** Where snapshots go; `localStorage` in the page, a Map in tests. */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Writes snapshots at most every `delayMs` while typing, and at once on
 * `flush` (page hide). `save` reports whether the browser accepted it (a
 * full quota refuses).
 */
export class HotExitStore {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastWritten: string | null = null;
  /** False after the storage refused a write (quota): the page then warns before unloading. */
  ok = true;

  constructor(
    private readonly store: KeyValueStore,
    private readonly key: string,
    private readonly take: () => HotExitSnapshot,
    private readonly delayMs = 400,
  ) {}

  load(): HotExitSnapshot | null {
    try {
      return parseSnapshot(this.store.getItem(this.key));
    } catch {
      return null;
    }
  }

  schedule(): void {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.delayMs);
  }

  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const snapshot = this.take();
    const raw = isEmptySnapshot(snapshot) ? null : serializeSnapshot(snapshot);
    if (raw === this.lastWritten) return;
    try {
      if (raw === null) this.store.removeItem(this.key);
      else this.store.setItem(this.key, raw);
      this.lastWritten = raw;
      this.ok = true;
    } catch {
      // Over quota: keep at least the tab list, and say so on unload.
      this.ok = false;
      try {
        this.store.setItem(this.key, serializeSnapshot({ ...snapshot, buffers: [] }));
      } catch {
        /* nothing more to do */
      }
    }
  }

  dispose(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
