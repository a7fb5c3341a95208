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
 * browser started in another tab (end it first), `others` counts live
 * terminals this page does not show (one may be a run from another browser).
 */
export function runElsewhere(
  live: readonly TermInfo[],
  tabs: ReadonlyArray<{ term: number | null }>,
  remembered: number | null,
): { close: number | null; others: number } {
  const shown = new Set(tabs.map((t) => t.term).filter((t): t is number => t !== null));
  const notShown = live.filter((t) => !shown.has(t.term));
  const close = remembered !== null && notShown.some((t) => t.term === remembered) ? remembered : null;
  return { close, others: notShown.length - (close === null ? 0 : 1) };
}
