import { describe, expect, it } from 'vitest';
import type { TermInfo } from '../protocol/generated';
import { formatRunTerm, parseRunTerm, runElsewhere } from './run';

const info = (term: number, attached_clients = 1): TermInfo => ({ term, cols: 80, rows: 24, seq: 0, attached_clients }) as TermInfo;

describe('the Run terminal across tabs and browsers', () => {
  it('remembers the terminal with the runner instance, and forgets it for another instance', () => {
    expect(parseRunTerm(formatRunTerm(3, 'a1'), 'a1')).toBe(3);
    expect(parseRunTerm(formatRunTerm(3, 'a1'), 'b2')).toBeNull();
    // Written by an older page or for a runner that names no instance.
    expect(parseRunTerm('3', 'b2')).toBe(3);
    expect(parseRunTerm(formatRunTerm(3, undefined), undefined)).toBe(3);
    expect(parseRunTerm(null, 'a1')).toBeNull();
    expect(parseRunTerm('x@a1', 'a1')).toBeNull();
  });

  it('ends a Run terminal another tab of this browser started, and counts the rest', () => {
    const tabs = [{ term: 1 }, { term: null }];
    expect(runElsewhere([info(1), info(2), info(5)], tabs, 5)).toEqual({ close: 5, others: 1 });
    // Not live any more, or shown here: nothing to end.
    expect(runElsewhere([info(1), info(2)], tabs, 5)).toEqual({ close: null, others: 1 });
    expect(runElsewhere([info(1)], tabs, 1)).toEqual({ close: null, others: 0 });
    expect(runElsewhere([info(1)], tabs, null)).toEqual({ close: null, others: 0 });
    // Shown here, but another browser is attached too: maybe its run.
    expect(runElsewhere([info(1, 2)], tabs, null)).toEqual({ close: null, others: 1 });
  });
});
