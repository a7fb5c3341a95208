// Monaco 0.57 as this page uses it (see /work/shared/notes/web-ide.md): the
// editor API, its features, syntax for the languages a project is likely to
// hold, the JS/TS/JSON/CSS/HTML language services, and workers that load
// only when a language first needs one (the TypeScript worker, 1.5 MB, waits
// for the first JS/TS file). This module is loaded with a dynamic import so
// none of it is on the landing page's critical path.

import * as monaco from 'monaco-editor/editor';
import 'monaco-editor/features/register.all';
// Monarch syntax. Each registration is a few hundred bytes; the grammar
// itself loads with the first file of its language.
import 'monaco-editor/languages/definitions/javascript/register';
import 'monaco-editor/languages/definitions/typescript/register';
import 'monaco-editor/languages/definitions/python/register';
import 'monaco-editor/languages/definitions/markdown/register';
import 'monaco-editor/languages/definitions/html/register';
import 'monaco-editor/languages/definitions/css/register';
import 'monaco-editor/languages/definitions/scss/register';
import 'monaco-editor/languages/definitions/less/register';
import 'monaco-editor/languages/definitions/shell/register';
import 'monaco-editor/languages/definitions/yaml/register';
import 'monaco-editor/languages/definitions/dockerfile/register';
import 'monaco-editor/languages/definitions/ini/register';
import 'monaco-editor/languages/definitions/xml/register';
import 'monaco-editor/languages/definitions/sql/register';
import 'monaco-editor/languages/definitions/go/register';
import 'monaco-editor/languages/definitions/rust/register';
import 'monaco-editor/languages/definitions/java/register';
import 'monaco-editor/languages/definitions/cpp/register';
import 'monaco-editor/languages/definitions/ruby/register';
import 'monaco-editor/languages/definitions/php/register';
// Language services (completion, diagnostics, hover...) for TS/JS, JSON,
// CSS and HTML: registrations only, each mode loads with its language.
import 'monaco-editor/languages/features/register.all';

import EditorWorker from 'monaco-editor/editor/editor.worker?worker';

type WorkerFactory = () => Promise<Worker>;

// Each language worker is its own chunk, imported the first time a model of
// that language asks for it.
const workers: Record<string, WorkerFactory> = {
  json: async () => new (await import('monaco-editor/language/json/json.worker?worker')).default(),
  css: async () => new (await import('monaco-editor/language/css/css.worker?worker')).default(),
  html: async () => new (await import('monaco-editor/language/html/html.worker?worker')).default(),
  typescript: async () => new (await import('monaco-editor/language/typescript/ts.worker?worker')).default(),
};
const workerLabels: Record<string, keyof typeof workers> = {
  json: 'json',
  css: 'css',
  scss: 'css',
  less: 'css',
  html: 'html',
  handlebars: 'html',
  razor: 'html',
  typescript: 'typescript',
  javascript: 'typescript',
};

interface MonacoEnvironmentShape {
  getWorker(workerId: string, label: string): Worker | Promise<Worker>;
}

(self as unknown as { MonacoEnvironment: MonacoEnvironmentShape }).MonacoEnvironment = {
  getWorker(_workerId: string, label: string): Worker | Promise<Worker> {
    const kind = workerLabels[label];
    const factory = kind === undefined ? undefined : workers[kind];
    return factory !== undefined ? factory() : new EditorWorker();
  },
};

/** Filenames without an extension that still have a language. */
monaco.languages.register({ id: 'shell', filenames: ['.bashrc', '.profile', '.zshrc', '.envrc'] });
monaco.languages.register({ id: 'ini', filenames: ['.env', '.editorconfig', '.npmrc', '.gitconfig'] });
monaco.languages.register({ id: 'plaintext', filenames: ['.gitignore', '.dockerignore', 'LICENSE'] });

/** Follows the system's light or dark scheme, live. */
export function followColorScheme(): () => void {
  const query = window.matchMedia('(prefers-color-scheme: dark)');
  const apply = (): void => monaco.editor.setTheme(query.matches ? 'vs-dark' : 'vs');
  apply();
  query.addEventListener('change', apply);
  return () => query.removeEventListener('change', apply);
}

export { monaco };
