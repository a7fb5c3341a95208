import { describe, expect, it } from 'vitest';
import { DEFAULT_LAYOUT, dragSplitter, fitLayout, parseLayout } from './layout';

describe('layout', () => {
  it('reads back what it stored, and survives garbage', () => {
    const l = { treeWidth: 300, rightWidth: 400, terminalShare: 0.3, narrowPane: 'terminal' as const };
    expect(parseLayout(JSON.stringify(l))).toEqual(l);
    expect(parseLayout(null)).toEqual(DEFAULT_LAYOUT);
    expect(parseLayout('{nope')).toEqual(DEFAULT_LAYOUT);
    expect(parseLayout('{"treeWidth":"wide","narrowPane":"x"}')).toEqual(DEFAULT_LAYOUT);
  });

  it('keeps the editor usable at 1280 px whatever was stored', () => {
    const l = fitLayout({ ...DEFAULT_LAYOUT, treeWidth: 900, rightWidth: 900 }, 1280);
    expect(1280 - l.treeWidth - l.rightWidth - 8).toBeGreaterThanOrEqual(240);
    expect(l.treeWidth).toBeLessThanOrEqual(640);
  });

  it('gives the editor a third of an 800 px window, the tree a fifth', () => {
    const l = fitLayout(DEFAULT_LAYOUT, 800);
    expect(l.treeWidth).toBe(160);
    expect(800 - l.treeWidth - l.rightWidth - 8).toBe(280);
    expect(l.rightWidth).toBe(352);
  });

  it('drags splitters within bounds', () => {
    const w = 1280;
    expect(dragSplitter(DEFAULT_LAYOUT, 'tree', 60, 0, w, 600).treeWidth).toBe(280);
    expect(dragSplitter(DEFAULT_LAYOUT, 'tree', -500, 0, w, 600).treeWidth).toBe(140);
    expect(dragSplitter(DEFAULT_LAYOUT, 'right', -100, 0, w, 600).rightWidth).toBe(560);
    expect(dragSplitter(DEFAULT_LAYOUT, 'right', 2000, 0, w, 600).rightWidth).toBe(220);
    expect(dragSplitter(DEFAULT_LAYOUT, 'terminal', 0, 60, w, 600).terminalShare).toBeCloseTo(0.65);
    expect(dragSplitter(DEFAULT_LAYOUT, 'terminal', 0, -6000, w, 600).terminalShare).toBe(0.1);
  });
});
