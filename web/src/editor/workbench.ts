// Everything that needs Monaco: one code editor whose model changes with the
// active tab, one model per file (URI file:///<path>), and a diff editor for
// conflicts. Loaded lazily by index.ts; the reducer never sees Monaco.

import { followColorScheme, monaco } from './monaco';
import type { Conflict } from './model';

/** Below this editor width the minimap is hidden. */
const MINIMAP_MIN_WIDTH = 480;

export interface WorkbenchHooks {
  /** The user changed a buffer: its new version id. */
  edited(path: string, version: number): void;
  /** Ctrl/Cmd-S inside the editor. */
  save(): void;
}

export interface Workbench {
  readonly editor: monaco.editor.IStandaloneCodeEditor;
  /** Puts `text` into the buffer of `path` and returns the buffer's new version id. */
  setText(path: string, text: string, how: 'create' | 'reload' | 'replace'): number;
  textOf(path: string): string | undefined;
  /** Moves a buffer to a model under a new path (after a rename); returns its version id. */
  rekey(from: string, to: string): number;
  dispose(path: string): void;
  /** Shows the buffer of `path` (or nothing), as a diff when it is in conflict. */
  show(path: string | null, conflict: Conflict | null): void;
  layout(): void;
  focus(): void;
  disposeAll(): void;
}

export function uriOf(path: string): monaco.Uri {
  return monaco.Uri.from({ scheme: 'file', path: `/${path}` });
}

let theirsCount = 0;

/** A fresh URI per conflict: a model of a disposed conflict may linger a moment. */
function theirsUriOf(path: string): monaco.Uri {
  return monaco.Uri.from({ scheme: 'cloudcode-theirs', path: `/${path}`, query: String(++theirsCount) });
}

/** The one edit that turns `from` into `to`: common start and end kept, so cursors and folds outside it stay. */
function minimalEdit(model: monaco.editor.ITextModel, to: string): monaco.editor.IIdentifiedSingleEditOperation | null {
  const from = model.getValue();
  if (from === to) return null;
  let start = 0;
  const max = Math.min(from.length, to.length);
  while (start < max && from.charCodeAt(start) === to.charCodeAt(start)) start++;
  let end = 0;
  while (end < max - start && from.charCodeAt(from.length - 1 - end) === to.charCodeAt(to.length - 1 - end)) end++;
  const a = model.getPositionAt(start);
  const b = model.getPositionAt(from.length - end);
  return {
    range: new monaco.Range(a.lineNumber, a.column, b.lineNumber, b.column),
    text: to.slice(start, to.length - end),
    forceMoveMarkers: false,
  };
}

const EDITOR_OPTIONS: monaco.editor.IStandaloneEditorConstructionOptions = {
  automaticLayout: false,
  fontSize: 13,
  lineHeight: 20,
  scrollBeyondLastLine: false,
  fixedOverflowWidgets: true,
  renderWhitespace: 'selection',
  minimap: { enabled: true, renderCharacters: false, maxColumn: 80 },
  smoothScrolling: false,
  tabSize: 4,
  insertSpaces: true,
  detectIndentation: true,
  bracketPairColorization: { enabled: true },
  guides: { bracketPairs: false, indentation: true },
  stickyScroll: { enabled: false },
  // Monaco's own context menu stays; the browser's paste works from it over
  // HTTPS and localhost.
  contextmenu: true,
};

export function createWorkbench(codeHost: HTMLElement, diffHost: HTMLElement, hooks: WorkbenchHooks): Workbench {
  const stopTheme = followColorScheme();
  const editor = monaco.editor.create(codeHost, { ...EDITOR_OPTIONS, model: null });
  editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, () => hooks.save());

  const models = new Map<string, { model: monaco.editor.ITextModel; listener: monaco.IDisposable }>();
  const viewStates = new Map<string, monaco.editor.ICodeEditorViewState>();
  let applying = false;
  let shown: string | null = null;

  let diff: monaco.editor.IStandaloneDiffEditor | null = null;
  let diffFor: { path: string; theirs: monaco.editor.ITextModel } | null = null;

  function ensureDiff(): monaco.editor.IStandaloneDiffEditor {
    if (diff === null) {
      diff = monaco.editor.createDiffEditor(diffHost, {
        ...EDITOR_OPTIONS,
        minimap: { enabled: false },
        originalEditable: false,
        renderSideBySide: true,
        useInlineViewWhenSpaceIsLimited: true,
        renderSideBySideInlineBreakpoint: 700,
        ignoreTrimWhitespace: false,
        renderOverviewRuler: true,
      });
      diff.getModifiedEditor().addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, () => hooks.save());
    }
    return diff;
  }

  function dropDiff(): void {
    if (diffFor === null) return;
    diff?.setModel(null);
    diffFor.theirs.dispose();
    diffFor = null;
  }

  let minimapOn = true;

  /** Lays out with the host's size measured now (a host that was hidden reports stale sizes otherwise). */
  function fit(target: { layout(d?: monaco.editor.IDimension): void }, host: HTMLElement): void {
    const width = host.clientWidth;
    const height = host.clientHeight;
    if (width > 0 && height > 0) target.layout({ width, height });
  }

  function rememberView(): void {
    if (shown !== null && models.has(shown)) {
      const vs = editor.saveViewState();
      if (vs !== null) viewStates.set(shown, vs);
    }
  }

  const workbench: Workbench = {
    editor,

    setText(path, text, how) {
      applying = true;
      try {
        let entry = models.get(path);
        if (entry === undefined || how === 'create') {
          if (entry === undefined) {
            const uri = uriOf(path);
            // A model left from an earlier tab of the same file is reused.
            const model = monaco.editor.getModel(uri) ?? monaco.editor.createModel(text, undefined, uri);
            if (model.getValue() !== text) model.setValue(text);
            const listener = model.onDidChangeContent(() => {
              if (!applying) hooks.edited(path, model.getAlternativeVersionId());
            });
            entry = { model, listener };
            models.set(path, entry);
          } else if (entry.model.getValue() !== text) {
            entry.model.setValue(text);
          }
          return entry.model.getAlternativeVersionId();
        }
        const { model } = entry;
        const edit = minimalEdit(model, text);
        if (edit !== null) {
          const keepView = how === 'reload' && shown === path && editor.getModel() === model ? editor.saveViewState() : null;
          // An undoable edit: "take theirs" and reloads can be undone.
          model.pushStackElement();
          model.pushEditOperations(editor.getModel() === model ? editor.getSelections() : [], [edit], () => null);
          model.pushStackElement();
          if (keepView !== null) editor.restoreViewState(keepView);
        }
        return model.getAlternativeVersionId();
      } finally {
        applying = false;
      }
    },

    textOf(path) {
      return models.get(path)?.model.getValue();
    },

    rekey(from, to) {
      const old = models.get(from);
      if (old === undefined) return 0;
      const wasShown = shown === from && editor.getModel() === old.model;
      const view = wasShown ? editor.saveViewState() : viewStates.get(from);
      const text = old.model.getValue();
      workbench.dispose(from);
      const version = workbench.setText(to, text, 'create');
      if (view !== undefined && view !== null) viewStates.set(to, view);
      return version;
    },

    dispose(path) {
      const entry = models.get(path);
      if (entry === undefined) return;
      if (diffFor?.path === path) dropDiff();
      if (editor.getModel() === entry.model) editor.setModel(null);
      entry.listener.dispose();
      entry.model.dispose();
      models.delete(path);
      viewStates.delete(path);
      if (shown === path) shown = null;
    },

    show(path, conflict) {
      const entry = path === null ? undefined : models.get(path);
      if (entry === undefined || path === null) {
        rememberView();
        editor.setModel(null);
        shown = null;
        dropDiff();
        codeHost.hidden = true;
        diffHost.hidden = true;
        return;
      }
      // The code editor holds the active buffer even behind a conflict's
      // diff, so `editor().getModel()` always names what is being edited.
      if (editor.getModel() !== entry.model) {
        rememberView();
        editor.setModel(entry.model);
        const vs = viewStates.get(path);
        if (vs !== undefined) editor.restoreViewState(vs);
        shown = path;
      }
      if (conflict !== null) {
        const d = ensureDiff();
        if (diffFor?.path !== path) {
          dropDiff();
          // JS/TS "theirs" as plain text: a second model of the same file
          // would make the TypeScript service report every name twice.
          const lang = entry.model.getLanguageId();
          const theirsLang = lang === 'javascript' || lang === 'typescript' ? 'plaintext' : lang;
          const theirs = monaco.editor.createModel(conflict.theirs, theirsLang, theirsUriOf(path));
          diffFor = { path, theirs };
          d.setModel({ original: theirs, modified: entry.model });
        } else if (diffFor.theirs.getValue() !== conflict.theirs) {
          diffFor.theirs.setValue(conflict.theirs);
        }
        codeHost.hidden = true;
        diffHost.hidden = false;
        fit(d, diffHost);
        return;
      }
      dropDiff();
      diffHost.hidden = true;
      codeHost.hidden = false;
      fit(editor, codeHost);
    },

    layout() {
      // A narrow editor (an 800 px window) needs its columns for code, not the minimap.
      const wide = codeHost.clientWidth === 0 || codeHost.clientWidth >= MINIMAP_MIN_WIDTH;
      if (wide !== minimapOn) {
        minimapOn = wide;
        editor.updateOptions({ minimap: { enabled: wide } });
      }
      if (!codeHost.hidden) fit(editor, codeHost);
      if (diff !== null && !diffHost.hidden) fit(diff, diffHost);
    },

    focus() {
      if (!diffHost.hidden && diff !== null) diff.getModifiedEditor().focus();
      else editor.focus();
    },

    disposeAll() {
      dropDiff();
      diff?.dispose();
      editor.dispose();
      for (const { model, listener } of models.values()) {
        listener.dispose();
        model.dispose();
      }
      models.clear();
      stopTheme();
    },
  };
  return workbench;
}
