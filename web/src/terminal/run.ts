// Which terminal is the Run terminal, across tabs and browsers (pure, tested).
// The runner records each terminal's purpose (PROTOCOL.md, `TermInfo`): the
// live "run" terminals are the project's run, whoever started them (this
// page, another tab, another browser, the TUI's F5).

import type { TermInfo } from '../protocol/generated';

/** The live run terminals, newest (highest id) first. */
export function liveRuns(terms: readonly TermInfo[]): TermInfo[] {
  return terms.filter((t) => t.purpose === 'run' && t.exited === undefined).sort((a, b) => b.term - a.term);
}

/** The terminal a page shows as its Run tab when it loads. */
export function currentRun(terms: readonly TermInfo[]): number | null {
  return liveRuns(terms)[0]?.term ?? null;
}

/** What a new run ends first, besides the Run tab's own terminal (`own`):
 * every other live run, since two servers on one port would fight. */
export function runsToEnd(terms: readonly TermInfo[], own: number | null): number[] {
  return liveRuns(terms)
    .map((t) => t.term)
    .filter((t) => t !== own);
}

/** After the run a Run tab showed (`ended`) ended: the newer run another
 * client started in its place, if any, for the tab to follow. */
export function newerRun(terms: readonly TermInfo[], ended: number, shown: ReadonlySet<number>): number | null {
  const newer = liveRuns(terms).filter((t) => t.term > ended && !shown.has(t.term));
  return newer[0]?.term ?? null;
}
