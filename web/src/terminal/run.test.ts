import { describe, expect, it } from 'vitest';
import type { TermInfo } from '../protocol/generated';
import { currentRun, liveRuns, newerRun, runsToEnd } from './run';

const info = (term: number, purpose: 'shell' | 'run', exited?: number | null): TermInfo => ({
  term,
  cols: 80,
  rows: 24,
  seq: 0,
  attached_clients: 1,
  purpose,
  ...(exited === undefined ? {} : { exited }),
});

describe('the Run terminal across tabs and browsers', () => {
  const terms = [info(1, 'shell'), info(2, 'run', 0), info(3, 'run'), info(4, 'shell'), info(6, 'run')];

  it('is the newest live terminal whose purpose is run, wherever it was started', () => {
    expect(liveRuns(terms).map((t) => t.term)).toEqual([6, 3]);
    expect(currentRun(terms)).toBe(6);
    expect(currentRun([info(1, 'shell'), info(2, 'run', null)])).toBeNull();
  });

  it('a new run ends every other live run, never a shell', () => {
    expect(runsToEnd(terms, 6)).toEqual([3]);
    expect(runsToEnd(terms, null)).toEqual([6, 3]);
    expect(runsToEnd([info(1, 'shell')], null)).toEqual([]);
  });

  it('a Run tab whose run ended follows the newer run another client started', () => {
    expect(newerRun(terms, 3, new Set([1]))).toBe(6);
    // Shown in another tab here already, or older: nothing to follow.
    expect(newerRun(terms, 3, new Set([6]))).toBeNull();
    expect(newerRun(terms, 6, new Set())).toBeNull();
  });
});
