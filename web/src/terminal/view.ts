// One xterm.js terminal with its addons, keys, context menu and search box.
// Knows nothing of the protocol: it reports input and size, and is fed bytes.

import { ClipboardAddon, type IClipboardProvider } from '@xterm/addon-clipboard';
import { FitAddon } from '@xterm/addon-fit';
import { SearchAddon } from '@xterm/addon-search';
import { Unicode11Addon } from '@xterm/addon-unicode11';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { Terminal, type ITheme } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { h, icon } from '../app/dom';

const DARK: ITheme = {
  background: '#181818',
  foreground: '#cccccc',
  cursor: '#cccccc',
  cursorAccent: '#181818',
  selectionBackground: '#264f78',
  black: '#000000',
  red: '#cd3131',
  green: '#0dbc79',
  yellow: '#e5e510',
  blue: '#2472c8',
  magenta: '#bc3fbc',
  cyan: '#11a8cd',
  white: '#e5e5e5',
  brightBlack: '#666666',
  brightRed: '#f14c4c',
  brightGreen: '#23d18b',
  brightYellow: '#f5f543',
  brightBlue: '#3b8eea',
  brightMagenta: '#d670d6',
  brightCyan: '#29b8db',
  brightWhite: '#e5e5e5',
};

const LIGHT: ITheme = {
  background: '#ffffff',
  foreground: '#333333',
  cursor: '#333333',
  cursorAccent: '#ffffff',
  selectionBackground: '#add6ff',
  black: '#000000',
  red: '#cd3131',
  green: '#107c10',
  yellow: '#949800',
  blue: '#0451a5',
  magenta: '#bc05bc',
  cyan: '#0598bc',
  white: '#555555',
  brightBlack: '#666666',
  brightRed: '#cd3131',
  brightGreen: '#14ce14',
  brightYellow: '#b5ba00',
  brightBlue: '#0451a5',
  brightMagenta: '#bc05bc',
  brightCyan: '#0598bc',
  brightWhite: '#a5a5a5',
};

const FONT = 'ui-monospace, "SF Mono", "Cascadia Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace';
/** About 1.1-1.5 KB of memory per 80-column line in xterm 6: ~8 MB per terminal. */
const SCROLLBACK_LINES = 5000;

const darkScheme = typeof matchMedia === 'function' ? matchMedia('(prefers-color-scheme: dark)') : undefined;

export interface TerminalViewCallbacks {
  input(data: string | Uint8Array): void;
  resize(cols: number, rows: number): void;
  /** Something to tell the person (clipboard refused, ...). */
  notice(message: string): void;
}

/** Programs may set the clipboard (OSC 52, e.g. tmux or vim yanks) but never
 * read it: the sandbox runs code the person may not have read. */
const writeOnlyClipboard: IClipboardProvider = {
  readText: () => '',
  writeText: async (_selection, text) => {
    await navigator.clipboard?.writeText(text);
  },
};

export class TerminalView {
  readonly el: HTMLElement;
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly search = new SearchAddon();
  private readonly host: HTMLElement;
  private readonly searchBox: HTMLElement;
  private readonly searchInput: HTMLInputElement;
  private readonly endedBar: HTMLElement;
  private readonly resizeObserver: ResizeObserver;
  private menu: HTMLElement | null = null;
  private fitQueued = false;
  private disposed = false;
  private readonly onScheme = (): void => {
    this.term.options.theme = darkScheme?.matches === false ? LIGHT : DARK;
  };

  constructor(private readonly cb: TerminalViewCallbacks) {
    this.term = new Terminal({
      allowProposedApi: true, // unicode11
      fontFamily: FONT,
      fontSize: 13,
      lineHeight: 1.15,
      scrollback: SCROLLBACK_LINES,
      // A blinking cursor restarts its timer and repaints on every key: the
      // benchmark measured keystroke-to-screen p50 27 ms with it, 11 ms
      // without (ttyd's page: 12 ms, blink off).
      cursorBlink: false,
      macOptionIsMeta: false,
      rightClickSelectsWord: false,
      theme: darkScheme?.matches === false ? LIGHT : DARK,
    });
    this.term.loadAddon(this.fit);
    this.term.loadAddon(this.search);
    this.term.loadAddon(new Unicode11Addon());
    this.term.unicode.activeVersion = '11';
    this.term.loadAddon(new ClipboardAddon(undefined, writeOnlyClipboard));
    this.term.loadAddon(
      new WebLinksAddon((event, uri) => {
        event.preventDefault();
        // A link printed by user code must not get a handle on this page.
        window.open(uri, '_blank', 'noopener,noreferrer');
      }),
    );

    this.host = h('div', { class: 'terminal-host' });
    this.searchInput = h('input', {
      class: 'input small',
      testid: 'terminal-search-input',
      attrs: { type: 'text', placeholder: 'Find', spellcheck: 'false', 'aria-label': 'Find in terminal' },
    });
    this.searchBox = h(
      'div',
      { class: 'terminal-search', testid: 'terminal-search' },
      this.searchInput,
      h('button', { class: 'icon-button', title: 'Previous match (Shift+Enter)', attrs: { type: 'button' }, on: { click: () => this.find(-1) } }, icon('up')),
      h('button', { class: 'icon-button', title: 'Next match (Enter)', attrs: { type: 'button' }, on: { click: () => this.find(1) } }, icon('down')),
      h('button', { class: 'icon-button', title: 'Close (Escape)', attrs: { type: 'button' }, on: { click: () => this.closeSearch() } }, icon('close')),
    );
    this.searchBox.hidden = true;
    this.endedBar = h('div', { class: 'terminal-ended', testid: 'terminal-ended' });
    this.endedBar.hidden = true;
    this.el = h('div', { class: 'terminal-view' }, this.host, this.searchBox, this.endedBar);

    this.searchInput.addEventListener('input', () => {
      if (this.searchInput.value === '') this.search.clearDecorations();
      else this.search.findNext(this.searchInput.value, { incremental: true });
    });
    this.searchInput.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        this.find(ev.shiftKey ? -1 : 1);
      } else if (ev.key === 'Escape') {
        ev.preventDefault();
        this.closeSearch();
      }
    });

    this.term.onData((data) => cb.input(data));
    // Binary strings (some mouse reports) are bytes, one per char code.
    this.term.onBinary((data) => cb.input(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => cb.resize(cols, rows));
    this.term.attachCustomKeyEventHandler((ev) => this.key(ev));

    this.el.addEventListener('contextmenu', (ev) => {
      if (!this.host.contains(ev.target as Node)) return;
      ev.preventDefault();
      this.openMenu(ev.clientX, ev.clientY);
    });
    this.resizeObserver = new ResizeObserver(() => this.queueFit());
    darkScheme?.addEventListener('change', this.onScheme);
  }

  /** Puts the terminal into the page; call once, when `el` is in the DOM. */
  mount(): void {
    if (this.term.element !== undefined) return;
    this.term.open(this.host);
    this.loadRenderer();
    this.resizeObserver.observe(this.host);
    this.fitNow();
  }

  get size(): { cols: number; rows: number } {
    return { cols: this.term.cols, rows: this.term.rows };
  }

  write(data: Uint8Array, parsed: () => void): void {
    this.term.write(data, parsed);
  }

  /** A snapshot redraws from a reset emulator (PROTOCOL.md). */
  resetAndWrite(data: Uint8Array, parsed: () => void): void {
    this.term.reset();
    this.term.write(data, parsed);
  }

  /** Clears everything for a new process in the same tab. */
  reset(): void {
    this.term.reset();
    this.setEnded(null);
  }

  /** A dim line in the terminal itself, plus a bar offering what to do. */
  setEnded(ended: { line: string; action: string; run: () => void } | null): void {
    if (ended === null) {
      this.endedBar.hidden = true;
      this.endedBar.replaceChildren();
      return;
    }
    this.term.write(`\r\n\x1b[2m${ended.line}\x1b[0m\r\n`);
    this.endedBar.replaceChildren(
      h('span', { class: 'muted', text: ended.line }),
      h('button', {
        class: 'button small primary',
        testid: 'terminal-restart',
        text: ended.action,
        attrs: { type: 'button' },
        on: { click: () => ended.run() },
      }),
    );
    this.endedBar.hidden = false;
  }

  show(visible: boolean): void {
    this.el.hidden = !visible;
    if (visible) this.queueFit();
  }

  focus(): void {
    this.term.focus();
  }

  fitNow(): void {
    if (this.disposed || this.el.hidden || this.host.clientWidth === 0 || this.host.clientHeight === 0) return;
    try {
      this.fit.fit();
    } catch {
      // Not measurable yet (fonts, hidden parent): the next resize fits.
    }
  }

  openSearch(): void {
    this.searchBox.hidden = false;
    const selection = this.term.getSelection();
    if (selection !== '' && !selection.includes('\n')) this.searchInput.value = selection;
    this.searchInput.select();
    this.searchInput.focus();
  }

  dispose(): void {
    this.disposed = true;
    this.closeMenu();
    this.resizeObserver.disconnect();
    darkScheme?.removeEventListener('change', this.onScheme);
    this.term.dispose();
    this.el.remove();
  }

  // ---- internals ----

  private queueFit(): void {
    if (this.fitQueued) return;
    this.fitQueued = true;
    requestAnimationFrame(() => {
      this.fitQueued = false;
      this.fitNow();
    });
  }

  private loadRenderer(): void {
    // WebGL is the fastest renderer on real GPUs; under automation it runs on
    // SwiftShader at a fifth of the DOM renderer's speed.
    if (navigator.webdriver) return;
    void import('@xterm/addon-webgl')
      .then(({ WebglAddon }) => {
        if (this.disposed) return;
        const webgl = new WebglAddon();
        webgl.onContextLoss(() => webgl.dispose()); // back to the DOM renderer
        this.term.loadAddon(webgl);
      })
      .catch(() => undefined); // no WebGL: the DOM renderer stays
  }

  private find(direction: 1 | -1): void {
    const q = this.searchInput.value;
    if (q === '') return;
    if (direction === 1) this.search.findNext(q);
    else this.search.findPrevious(q);
  }

  private closeSearch(): void {
    this.searchBox.hidden = true;
    this.search.clearDecorations();
    this.term.clearSelection();
    this.term.focus();
  }

  /** Returns false for keys we handle instead of xterm.js. */
  private key(ev: KeyboardEvent): boolean {
    if (ev.type !== 'keydown') return true;
    const ctrl = ev.ctrlKey && !ev.metaKey && !ev.altKey;
    const k = ev.key.toLowerCase();
    if (ctrl && ev.shiftKey && k === 'c') {
      ev.preventDefault(); // Chromium would open the element inspector
      void this.copy();
      return false;
    }
    if (ctrl && ev.shiftKey && k === 'v') {
      // Not prevented: the browser's own paste event reaches xterm.js's
      // textarea, which works without clipboard permissions or HTTPS.
      return false;
    }
    if (ctrl && ev.shiftKey && k === 'f') {
      ev.preventDefault();
      this.openSearch();
      return false;
    }
    if (ctrl && !ev.shiftKey && k === 'c' && this.term.hasSelection()) {
      // With a selection Ctrl-C copies (as in VS Code); without one it is ^C.
      ev.preventDefault();
      void this.copy().then(() => this.term.clearSelection());
      return false;
    }
    if ((ev.ctrlKey || ev.metaKey) && ev.key === 'Enter') {
      // The IDE's Run key: not for the shell.
      return false;
    }
    return true;
  }

  private async copy(): Promise<void> {
    const text = this.term.getSelection();
    if (text === '') return;
    try {
      if (navigator.clipboard === undefined) throw new Error('no clipboard API');
      await navigator.clipboard.writeText(text);
    } catch {
      // Plain HTTP on a non-local host has no clipboard API; the old copy
      // command still works from a user gesture (xterm.js answers its event).
      this.term.focus();
      if (!document.execCommand('copy')) this.cb.notice('Copying was refused by the browser.');
    }
  }

  private async paste(): Promise<void> {
    try {
      if (navigator.clipboard === undefined) throw new Error('no clipboard API');
      const text = await navigator.clipboard.readText();
      this.term.paste(text);
    } catch {
      this.cb.notice('The browser did not allow reading the clipboard: paste with Ctrl+Shift+V (Cmd+V on a Mac).');
    }
    this.term.focus();
  }

  private openMenu(x: number, y: number): void {
    this.closeMenu();
    const item = (label: string, testid: string, hint: string, run: () => void, enabled = true): HTMLElement => {
      const b = h(
        'button',
        {
          class: 'menu-item',
          testid,
          attrs: { type: 'button', role: 'menuitem' },
          on: {
            click: () => {
              this.closeMenu();
              run();
            },
          },
        },
        h('span', { text: label }),
        h('span', { class: 'menu-hint', text: hint }),
      );
      b.toggleAttribute('disabled', !enabled);
      return b;
    };
    const menu = h(
      'div',
      { class: 'menu', testid: 'terminal-menu', attrs: { role: 'menu' } },
      item('Copy', 'terminal-menu-copy', 'Ctrl+Shift+C', () => void this.copy(), this.term.hasSelection()),
      item('Paste', 'terminal-menu-paste', 'Ctrl+Shift+V', () => void this.paste()),
      item('Find…', 'terminal-menu-find', 'Ctrl+Shift+F', () => this.openSearch()),
      h('div', { class: 'menu-separator' }),
      item('Clear', 'terminal-menu-clear', '', () => {
        this.term.clear();
        this.term.focus();
      }),
    );
    document.body.append(menu);
    // Keep the menu inside the window.
    const rect = menu.getBoundingClientRect();
    menu.style.left = `${Math.min(x, window.innerWidth - rect.width - 4)}px`;
    menu.style.top = `${Math.min(y, window.innerHeight - rect.height - 4)}px`;
    this.menu = menu;
    const away = (ev: Event): void => {
      if (ev instanceof KeyboardEvent && ev.key !== 'Escape') return;
      if (ev.type === 'pointerdown' && menu.contains(ev.target as Node)) return;
      this.closeMenu();
    };
    window.addEventListener('pointerdown', away, true);
    window.addEventListener('keydown', away, true);
    window.addEventListener('blur', away);
    this.closeMenuListeners = () => {
      window.removeEventListener('pointerdown', away, true);
      window.removeEventListener('keydown', away, true);
      window.removeEventListener('blur', away);
    };
  }

  private closeMenuListeners: (() => void) | null = null;

  private closeMenu(): void {
    this.menu?.remove();
    this.menu = null;
    this.closeMenuListeners?.();
    this.closeMenuListeners = null;
  }
}
