// A small element builder: the page has no framework, and this keeps view
// code readable without one.

type Child = Node | string | null | undefined | false;

export interface Props {
  class?: string;
  testid?: string;
  text?: string;
  title?: string;
  /** Other attributes, set with setAttribute. */
  attrs?: Record<string, string>;
  on?: { [K in keyof HTMLElementEventMap]?: (ev: HTMLElementEventMap[K]) => void };
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class !== undefined) el.className = props.class;
  if (props.testid !== undefined) el.dataset.testid = props.testid;
  if (props.text !== undefined) el.textContent = props.text;
  if (props.title !== undefined) el.title = props.title;
  for (const [name, value] of Object.entries(props.attrs ?? {})) el.setAttribute(name, value);
  for (const [name, listener] of Object.entries(props.on ?? {})) {
    el.addEventListener(name, listener as EventListener);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

/** Replaces an element's children. */
export function replaceChildren(el: Element, ...children: Child[]): void {
  el.replaceChildren(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
}

/** An icon from the page's own SVG set (no icon font, no CDN). */
export function icon(name: IconName): SVGSVGElement {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('aria-hidden', 'true');
  svg.classList.add('icon');
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

const ICONS = {
  play: 'M4 2.5v11l9-5.5z',
  plus: 'M7.25 2h1.5v5.25H14v1.5H8.75V14h-1.5V8.75H2v-1.5h5.25z',
  close: 'M3.7 2.64 8 6.94l4.3-4.3 1.06 1.06L9.06 8l4.3 4.3-1.06 1.06L8 9.06l-4.3 4.3-1.06-1.06L6.94 8l-4.3-4.3z',
  reload: 'M8 2.5a5.5 5.5 0 1 0 5.2 7.3l-1.42-.5A4 4 0 1 1 10.8 5H9v1.5h4v-4h-1.5v1.6A5.48 5.48 0 0 0 8 2.5z',
  external: 'M9 2h5v5h-1.5V4.56L7.53 9.53 6.47 8.47l4.97-4.97H9zM3 4h4v1.5H4.5v6h6V9H12v4H3z',
  back: 'M7.53 3.47 8.59 4.53 5.87 7.25H13v1.5H5.87l2.72 2.72-1.06 1.06L3 8z',
  stop: 'M4 4h8v8H4z',
  search: 'M6.5 2a4.5 4.5 0 0 1 3.6 7.2l3.85 3.85-1.06 1.06L9.04 10.26A4.5 4.5 0 1 1 6.5 2zm0 1.5a3 3 0 1 0 0 6 3 3 0 0 0 0-6z',
  up: 'M8 4.5l4.5 4.5-1.06 1.06L8 6.62l-3.44 3.44L3.5 9z',
  down: 'M8 11.5 3.5 7l1.06-1.06L8 9.38l3.44-3.44L12.5 7z',
  trash: 'M6 1.5h4V3h3.5v1.5h-11V3H6zM4 5.5h8l-.7 9H4.7z',
} as const;

export type IconName = keyof typeof ICONS;
