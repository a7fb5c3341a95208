// The hook end-to-end tests read the page through (web/e2e): the Monaco
// editor, the terminals' emulators and the protocol client. It exposes
// nothing the page's own scripts could not already reach.

import type { Terminal } from '@xterm/xterm';
import type { RunnerClient } from '../protocol/client';

export interface CloudcodeTestingHook {
  editor(): unknown;
  terminal(index: number): Terminal | undefined;
  client(): RunnerClient | undefined;
}

declare global {
  interface Window {
    __cloudcode: CloudcodeTestingHook;
  }
}

const parts: { editor?: () => unknown; terminal?: (i: number) => Terminal | undefined; client?: () => RunnerClient | undefined } = {};

export function installTestingHook(): void {
  window.__cloudcode = {
    editor: () => parts.editor?.(),
    terminal: (i) => parts.terminal?.(i),
    client: () => parts.client?.(),
  };
}

/** A pane registers its accessors; the returned function unregisters them. */
export function registerTestingParts(p: typeof parts): () => void {
  Object.assign(parts, p);
  return () => {
    for (const k of Object.keys(p) as Array<keyof typeof parts>) {
      if (parts[k] === p[k]) delete parts[k];
    }
  };
}
