// Small line icons, built with the DOM (the CSP allows no inline markup
// tricks, and the codicon font belongs to the lazily loaded editor).

const SVG = 'http://www.w3.org/2000/svg';

const PATHS = {
  newFile: 'M9.5 1.5H4a1 1 0 0 0-1 1v11a1 1 0 0 0 1 1h4 M9.5 1.5 13 5v3 M9.5 1.5V5H13 M12 10v5 M9.5 12.5h5',
  newFolder: 'M1.5 3.5a1 1 0 0 1 1-1h3l1.5 1.5h6a1 1 0 0 1 1 1V8 M1.5 3.5v9a1 1 0 0 0 1 1H8 M12 9.5v5 M9.5 12h5',
  upload: 'M8 11V2.5 M4.5 6 8 2.5 11.5 6 M2.5 10.5v2a1 1 0 0 0 1 1h9a1 1 0 0 0 1-1v-2',
  refresh: 'M13.5 8a5.5 5.5 0 1 1-1.6-3.9 M12 1.5v3h-3',
  chevron: 'M6 4l4 4-4 4',
  file: 'M9 1.5H4a1 1 0 0 0-1 1v11a1 1 0 0 0 1 1h8a1 1 0 0 0 1-1V5.5z M9 1.5v4h4',
  folder: 'M1.5 3.5a1 1 0 0 1 1-1h3.5l1.5 1.5h6a1 1 0 0 1 1 1v7.5a1 1 0 0 1-1 1h-11a1 1 0 0 1-1-1z',
  link: 'M6.5 9.5l3-3 M7 4.5l1-1a2.5 2.5 0 0 1 3.5 3.5l-1 1 M9 11.5l-1 1a2.5 2.5 0 0 1-3.5-3.5l1-1',
  close: 'M4 4l8 8 M12 4l-8 8',
} as const;

export type IconName = keyof typeof PATHS;

export function icon(name: IconName, className = 'icon'): SVGSVGElement {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '16');
  svg.setAttribute('height', '16');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', className);
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', PATHS[name]);
  path.setAttribute('fill', 'none');
  path.setAttribute('stroke', 'currentColor');
  path.setAttribute('stroke-width', '1.2');
  path.setAttribute('stroke-linecap', 'round');
  path.setAttribute('stroke-linejoin', 'round');
  svg.append(path);
  return svg;
}
