// The IDE's pane sizes: pure arithmetic on plain data, remembered per project
// in localStorage (nothing secret: widths and a pane name).

export type NarrowPane = 'tree' | 'editor' | 'terminal' | 'preview';

export interface Layout {
  /** File tree width, px. */
  treeWidth: number;
  /** Right column (terminals over preview) width, px. */
  rightWidth: number;
  /** Share of the right column's height the terminals take, 0..1. */
  terminalShare: number;
  /** Which pane a narrow window shows. */
  narrowPane: NarrowPane;
}

export const DEFAULT_LAYOUT: Layout = { treeWidth: 220, rightWidth: 460, terminalShare: 0.55, narrowPane: 'editor' };

/** Below this width the panes are shown one at a time. */
export const NARROW_WIDTH = 760;

const MIN_TREE = 140;
const MIN_EDITOR = 240;
const MIN_RIGHT = 220;
const SPLITTER = 4;
const EDITOR_SHARE = 0.35;
const TREE_SHARE = 0.2;
/** Below this width the tree gives way first. */
const MID_WIDTH = 1000;

export function layoutKey(project: string): string {
  return `cloudcode.layout.${project}`;
}

export function parseLayout(raw: string | null): Layout {
  if (raw === null) return { ...DEFAULT_LAYOUT };
  try {
    const v = JSON.parse(raw) as Partial<Record<keyof Layout, unknown>>;
    const num = (x: unknown, d: number): number => (typeof x === 'number' && Number.isFinite(x) ? x : d);
    const pane = v.narrowPane;
    return {
      treeWidth: num(v.treeWidth, DEFAULT_LAYOUT.treeWidth),
      rightWidth: num(v.rightWidth, DEFAULT_LAYOUT.rightWidth),
      terminalShare: num(v.terminalShare, DEFAULT_LAYOUT.terminalShare),
      narrowPane: pane === 'tree' || pane === 'editor' || pane === 'terminal' || pane === 'preview' ? pane : DEFAULT_LAYOUT.narrowPane,
    };
  } catch {
    return { ...DEFAULT_LAYOUT };
  }
}

const clamp = (x: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, x));

/** Sizes that fit a body of `width` px: the editor keeps its minimum, then
 * the right column, then the tree give way. */
export function fitLayout(l: Layout, width: number): Layout {
  // In a mid-sized window (800 px) the editor keeps about a third and the
  // tree a fifth: a 240 px editor beside a full-width tree was unreadable.
  const editorMin = Math.max(MIN_EDITOR, Math.round(width * EDITOR_SHARE));
  const room = Math.max(0, width - 2 * SPLITTER - editorMin);
  const treeWidth = clamp(Math.round(l.treeWidth), MIN_TREE, Math.max(MIN_TREE, Math.min(room - MIN_RIGHT, width * (width < MID_WIDTH ? TREE_SHARE : 0.5))));
  const rightWidth = clamp(Math.round(l.rightWidth), MIN_RIGHT, Math.max(MIN_RIGHT, room - treeWidth));
  return { ...l, treeWidth, rightWidth, terminalShare: clamp(l.terminalShare, 0.1, 0.9) };
}

export type Splitter = 'tree' | 'right' | 'terminal';

/** The layout after dragging `splitter` by (dx, dy) px from where it was in
 * `start`; `height` is the right column's height. */
export function dragSplitter(start: Layout, splitter: Splitter, dx: number, dy: number, width: number, height: number): Layout {
  switch (splitter) {
    case 'tree':
      return fitLayout({ ...start, treeWidth: start.treeWidth + dx }, width);
    case 'right':
      return fitLayout({ ...start, rightWidth: start.rightWidth - dx }, width);
    case 'terminal':
      return fitLayout({ ...start, terminalShare: height > 0 ? start.terminalShare + dy / height : start.terminalShare }, width);
  }
}
