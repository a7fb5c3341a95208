// Which terminal is the Run terminal, across tabs and browsers (pure, tested).
// The runner's TermInfo does not say what a terminal runs, so this browser
// remembers its Run terminal in localStorage, tagged with the runner's
// instance: after a runner restart the same id names another terminal.

import type { TermInfo } from '../protocol/generated';

/** `"<term>"`, or `"<term>@<instance>"` when the runner names its instance. */
export function formatRunTerm(term: number, instance: string | undefined): string {
  return instance === undefined ? String(term) : `${term}@${instance}`;
}

/** The remembered Run terminal, if it belongs to this runner instance. */
export function parseRunTerm(raw: string | null, instance: string | undefined): number | null {
  if (raw === null) return null;
  const at = raw.indexOf('@');
  const id = Number(at < 0 ? raw : raw.slice(0, at));
  if (!Number.isInteger(id) || id < 0) return null;
  if (at >= 0 && instance !== undefined && raw.slice(at + 1) !== instance) return null;
  return id;
}

/**
 * Before a Run from a page without a Run tab: `close` is a Run terminal this
 * browser started in another tab (end it first); `others` counts the live
 * terminals that may be a run from another tab or browser: those this page
 * does not show, and those it shows that another client watches too (a page
 * shows every terminal of the runner, so another browser's Run is a plain
 * "Terminal N" here).
 */
export function runElsewhere(
  live: readonly TermInfo[],
  tabs: ReadonlyArray<{ term: number | null }>,
  remembered: number | null,
): { close: number | null; others: number } {
  const shown = new Set(tabs.map((t) => t.term).filter((t): t is number => t !== null));
  const close = remembered !== null && live.some((t) => t.term === remembered && !shown.has(t.term)) ? remembered : null;
  const others = live.filter((t) => t.term !== close && (!shown.has(t.term) || t.attached_clients > 1)).length;
  return { close, others };
}
