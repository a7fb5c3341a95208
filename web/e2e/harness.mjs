// The end-to-end harness: a real cloudcode-server (real bubblewrap
// sandboxes, real runners) and Debian's Chromium driven by playwright-core.
// Nothing is mocked. Every wait is a condition polled against a deadline,
// never a fixed sleep, so a slow machine makes the suite slower, not flaky.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
export const OUT_DIR = path.join(E2E_DIR, 'out');
mkdirSync(OUT_DIR, { recursive: true });

const TARGET = process.env.CARGO_TARGET_DIR || '/var/cache/cloudcode-ci/target';
export const BINS = {
  server: process.env.CLOUDCODE_SERVER_BIN || path.join(TARGET, 'debug', 'cloudcode-server'),
  runner: process.env.CLOUDCODE_RUNNER_BIN || path.join(TARGET, 'debug', 'cloudcode-runner'),
  tui: process.env.CLOUDCODE_TUI_BIN || path.join(TARGET, 'debug', 'cloudcode-tui'),
};
export const CHROMIUM = process.env.CLOUDCODE_CHROMIUM || '/usr/bin/chromium';

/** How long any single condition may take before the test fails. A sandbox
 * start on a loaded 2-core machine takes a few seconds; 30 s is generous. */
export const PATIENCE_MS = Number(process.env.CLOUDCODE_E2E_PATIENCE_MS || 30_000);

// ---------------------------------------------------------------- waiting

/** Polls `check` (sync or async) until it returns a truthy value, which is
 * returned. On the deadline, fails with `what` and the last value/error, so
 * a failure says what was expected and what was seen instead. */
export async function waitUntil(what, check, { timeout = PATIENCE_MS, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const seen = last instanceof Error ? `${last.message}` : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last seen: ${truncate(seen, 2000)}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** `page.waitForFunction` with a message that says what was awaited. */
export async function pageWait(page, what, fn, arg, { timeout = PATIENCE_MS } = {}) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    const value = await handle.jsonValue().catch(() => undefined);
    await handle.dispose();
    return value;
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting in the page for ${what}: ${e instanceof Error ? e.message.split('\n')[0] : e}`);
  }
}

export function truncate(s, n) {
  return s.length <= n ? s : `${s.slice(0, n)}… (${s.length - n} more characters)`;
}

/** Milliseconds to hold still for something that must NOT happen (a cookie
 * that must not arrive). The only place a fixed wait is right: absence
 * cannot be awaited. */
export function settle(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------- server

function requireFile(file, what) {
  if (!existsSync(file)) {
    throw new Error(`${what} not found at ${file}: build it (cargo build -p cloudcode-server -p cloudcode-runner -p cloudcode-tui) or set the variable that names it`);
  }
}

let serverCount = 0;

/** A cloudcode-server of its own: its own data and config directories, an
 * ephemeral port, real sandboxes. `name` labels its log in e2e/out/. */
export async function startServer(name = 'server', { extraArgs = [], again } = {}) {
  requireFile(BINS.server, 'cloudcode-server (CLOUDCODE_SERVER_BIN)');
  requireFile(BINS.runner, 'cloudcode-runner (CLOUDCODE_RUNNER_BIN)');
  // `again`: a stopped Server to start once more, on its port and data.
  const root = again?.root ?? mkdtempSync(path.join(tmpdir(), 'cc-e2e-'));
  // mkdtemp makes it 0700; a server running as root starts each sandbox
  // as an unprivileged uid, whose bwrap must traverse the path to the data
  // directory (it fails with "Can't find source path /proc/self/fd/N:
  // Permission denied" otherwise; reported to the server's owner).
  // Traversable, not listable.
  chmodSync(root, 0o711);
  const dataDir = path.join(root, 'data');
  const confDir = path.join(root, 'conf');
  mkdirSync(dataDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  // The server reads CLOUDCODE_* settings from the environment: the tests'
  // own variables (and a developer's) must not configure it.
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CLOUDCODE_')) env[k] = v;
  env.RUST_LOG = env.RUST_LOG || 'info';
  const logFile = path.join(OUT_DIR, `${name}-${process.pid}-${serverCount++}.log`);
  const log = createWriteStream(logFile);
  const child = spawn(
    BINS.server,
    [
      '--listen', `127.0.0.1:${again?.port ?? 0}`,
      '--data-dir', dataDir,
      '--config-dir', confDir,
      '--runner-binary', BINS.runner,
      ...extraArgs,
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderrTail = '';
  child.stderr.on('data', (d) => {
    log.write(d);
    stderrTail = (stderrTail + d.toString()).slice(-4000);
  });
  const found = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      log.write(d);
      stdout += d.toString();
      const m = /IDE: (https?):\/\/localhost:(\d+)\/#token=(\S+)/.exec(stdout);
      if (m) resolve({ scheme: m[1], port: Number(m[2]), token: m[3], ideUrl: `${m[1]}://localhost:${m[2]}/#token=${m[3]}` });
    });
    child.on('exit', (code, signal) =>
      reject(new Error(`cloudcode-server exited (${code ?? signal}) before printing its IDE URL; its stderr:\n${stderrTail}`)),
    );
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), PATIENCE_MS);
  let info;
  try {
    info = await found;
  } finally {
    clearTimeout(timer);
  }
  return new Server({ ...info, child, root, dataDir, confDir, logFile, log, env, extraArgs, stderr: () => stderrTail });
}

export class Server {
  constructor(o) {
    Object.assign(this, o);
    /** The page's origin (the API host, as the printed URL names it). */
    this.origin = `${o.scheme}://localhost:${o.port}`;
    /** The same server for Node's fetch, which may resolve localhost to ::1
     * where nothing listens. */
    this.apiBase = `${o.scheme}://127.0.0.1:${o.port}`;
  }

  ideHost(id) {
    return `${id}.ide.localhost:${this.port}`;
  }

  previewOrigin(id) {
    return `${this.scheme}://${id}.preview.localhost:${this.port}`;
  }

  /** A REST call with the API token (how the TUI and scripts call it). */
  async api(method, urlPath, body, headers = {}) {
    const res = await fetch(this.apiBase + urlPath, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, headers: res.headers };
  }

  async listProjects() {
    const r = await this.api('GET', '/api/projects');
    if (r.status !== 200) throw new Error(`GET /api/projects: ${r.status} ${r.text}`);
    return r.json.projects;
  }

  async createProject(id, language = 'python') {
    const r = await this.api('POST', '/api/projects', { id, language });
    if (r.status !== 201 && r.status !== 200) throw new Error(`creating ${id}: ${r.status} ${r.text}`);
    return r.json;
  }

  async startProject(id) {
    const r = await this.api('POST', `/api/projects/${id}/start`);
    if (r.status !== 200) throw new Error(`starting ${id}: ${r.status} ${r.text}`);
    return r.json;
  }

  /** Where local storage keeps a project's durable files. */
  storagePath(id, file = '') {
    return path.join(this.dataDir, 'storage', 'code', id, file);
  }

  readStorage(id, file) {
    return readFileSync(this.storagePath(id, file));
  }

  readStorageOrNull(id, file) {
    try {
      return readFileSync(this.storagePath(id, file));
    } catch {
      return null;
    }
  }

  /** A network failure between browsers and this server: every TCP
   * connection to its port is reset (`ss -K`, root), as a dropped Wi-Fi or
   * a restarted proxy does. Returns how many were killed. */
  dropConnections() {
    const out = execFileSync('ss', ['-K', '-t', 'dport', '=', `:${this.port}`], { encoding: 'utf8' });
    return out.split('\n').filter((l) => l.includes(`:${this.port}`)).length;
  }

  /** Ends the server (`signal`). Its sandboxes outlive it, as they do a
   * restart or an upgrade: `keepData` leaves them running with its
   * directories, for `startServer(name, {again: this})` to take over;
   * otherwise they are stopped (`--stop-sandboxes`: each flushes its files)
   * and the directories removed. */
  async stop({ keepData = false, signal = 'SIGTERM' } = {}) {
    const t0 = Date.now();
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const exited = once(child, 'exit');
      let timer;
      const timeout = new Promise((r) => (timer = setTimeout(r, 15_000, 'timeout')));
      const outcome = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    }
    if (process.env.CLOUDCODE_E2E_DEBUG) console.log(`# server stopped in ${Date.now() - t0} ms`);
    if (!keepData) await this.stopSandboxes();
    this.log.end();
    if (!keepData) rmSync(this.root, { recursive: true, force: true, maxRetries: 3 });
  }

  /** `cloudcode-server --stop-sandboxes` on this server's directories (with
   * no server running on them). */
  async stopSandboxes() {
    const child = spawn(
      BINS.server,
      ['--stop-sandboxes', '--data-dir', this.dataDir, '--config-dir', this.confDir, '--runner-binary', BINS.runner, ...this.extraArgs],
      { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const [code, signal] = await once(child, 'exit');
    this.log.write(out);
    if (code !== 0) throw new Error(`cloudcode-server --stop-sandboxes failed (${code ?? signal}):\n${out}`);
  }
}

// ---------------------------------------------------------------- browser

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export async function launchBrowser() {
  requireFile(CHROMIUM, 'Chromium (apt-get install chromium)');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/** A fresh context (no cookies, no storage) and a page in it. Console
 * errors and uncaught page errors are collected in `page.problems`, which
 * failing tests print. */
export async function newPage(browser, { viewport = { width: 1280, height: 720 }, colorScheme = 'dark', context } = {}) {
  const ctx = context ?? (await browser.newContext({ viewport, colorScheme }));
  const page = await ctx.newPage();
  watchPage(page);
  return { context: ctx, page };
}

export function watchPage(page) {
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console.error: ${m.text()}`);
  });
  return page;
}

/** Logs the context in the way a user does: by opening the printed URL. */
export async function login(page, server) {
  await page.goto(server.ideUrl);
  await page.locator(sel.landing).waitFor({ timeout: PATIENCE_MS });
}

// ---------------------------------------------------------------- selectors

const tid = (...names) => names.map((n) => `[data-testid="${n}"]`).join(', ');

/** The app's test ids, in one place. Where the brief's names and the app's
 * differ, both are accepted (the brief's first). */
export const sel = {
  landing: tid('landing-page'),
  loginPage: tid('login-page'),
  loginToken: tid('login-token'),
  loginSubmit: tid('login-submit'),
  loginError: tid('login-error'),
  createId: tid('create-id', 'project-id-input'),
  createLanguage: tid('create-language', 'project-language'),
  createSubmit: tid('create-submit', 'project-create'),
  createError: tid('create-error', 'project-id-error'),
  errorBanner: tid('error-banner'),
  projectRow: (id) => `[data-testid="project-row-${id}"], [data-testid="project-row"][data-id="${id}"]`,
  projectOpen: (id) =>
    `[data-testid="project-open-${id}"], [data-testid="project-row"][data-id="${id}"] [data-testid="project-open"]`,
  projectDelete: (id) =>
    `[data-testid="project-delete-${id}"], [data-testid="project-row"][data-id="${id}"] [data-testid="project-delete"]`,
  confirmOk: tid('confirm-ok'),
  treeItem: (p) => `[data-testid="tree-item"][data-path="${p}"]`,
  treeUpload: tid('tree-upload'),
  treeUploadInput: `${tid('tree-upload-input')}, input[type=file]`,
  editorTab: (p) => `[data-testid="editor-tab"][data-path="${p}"]`,
  editorTabDirty: tid('editor-tab-dirty'),
  statusSave: tid('status-save'),
  statusConnection: tid('status-connection'),
  runButton: tid('run-button'),
  terminalPane: tid('terminal-pane'),
  terminalTab: (i) => tid(`terminal-tab-${i}`),
  terminalNew: tid('terminal-new'),
  previewFrame: tid('preview-frame'),
  previewReload: tid('preview-reload'),
  conflictBanner: tid('conflict-banner'),
  conflictKeepMine: tid('conflict-keep-mine'),
  conflictTakeTheirs: tid('conflict-take-theirs'),
};

// ---------------------------------------------------------------- the IDE

/** Opens `/p/<id>` and waits until the runner connection is open and the
 * first terminal exists. */
export async function openIde(page, server, id, { waitTerminal = true, waitEditor = false } = {}) {
  await page.goto(`${server.origin}/p/${id}`);
  await waitIdeReady(page, { waitTerminal, waitEditor });
}

export async function waitIdeReady(page, { waitTerminal = true, waitEditor = false } = {}) {
  await pageWait(
    page,
    'window.__cloudcode.client() to be connected (state "open")',
    () => window.__cloudcode?.client?.()?.state === 'open',
    undefined,
    { timeout: PATIENCE_MS * 2 },
  );
  if (waitTerminal) {
    await pageWait(page, 'terminal 0 to exist', () => window.__cloudcode?.terminal?.(0) !== undefined);
  }
  if (waitEditor) {
    await pageWait(page, 'the Monaco editor to exist', () => window.__cloudcode?.editor?.() !== undefined);
  }
}

/** The logical lines of terminal `index`'s whole buffer (scrollback and
 * screen), wrapped rows joined, trailing blanks trimmed. */
export function terminalLines(page, index = 0) {
  return page.evaluate((i) => {
    const term = window.__cloudcode?.terminal?.(i);
    if (term === undefined) return null;
    const buf = term.buffer.active;
    const lines = [];
    for (let n = 0; n < buf.length; n++) {
      const line = buf.getLine(n);
      if (line === undefined) continue;
      const text = line.translateToString(true);
      if (line.isWrapped && lines.length > 0) lines[lines.length - 1] += text;
      else lines.push(text);
    }
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    return lines;
  }, index);
}

export async function terminalText(page, index = 0) {
  return ((await terminalLines(page, index)) ?? []).join('\n');
}

/** Waits until terminal `index` shows text matching `pattern` (string or
 * RegExp); returns the whole text. */
export async function waitTerminalText(page, index, pattern, opts) {
  const test = typeof pattern === 'string' ? (t) => t.includes(pattern) : (t) => pattern.test(t);
  let last = '';
  try {
    return await waitUntil(
      `terminal ${index} to show ${pattern}`,
      async () => {
        last = await terminalText(page, index);
        return test(last) ? last : false;
      },
      opts,
    );
  } catch (e) {
    throw new Error(`${e.message.split('; last seen')[0]}; the terminal shows:\n${truncate(last.slice(-3000), 3000)}`);
  }
}

/** Focuses terminal `index` (its helper textarea) and types `text`. */
export async function typeInTerminal(page, index, text) {
  await page.evaluate((i) => window.__cloudcode.terminal(i).focus(), index);
  await page.keyboard.type(text);
}

/** The number of terminals the page currently has (0..n-1 answered). */
export function terminalCount(page) {
  return page.evaluate(() => {
    let n = 0;
    while (window.__cloudcode?.terminal?.(n) !== undefined && n < 64) n++;
    return n;
  });
}

/** The runner's live run terminals (purpose "run"), as any client sees them. */
export function liveRuns(page) {
  return page.evaluate(async () => {
    const reply = await window.__cloudcode.client().request({ op: 'term_list' });
    return reply.terms.filter((t) => t.purpose === 'run' && t.exited === undefined).map((t) => t.term);
  });
}

/** The runner terminal this page's Run tab shows once it is live (and is
 * not `other`). */
export async function liveRunTab(page, what, other) {
  return waitUntil(what, async () => {
    const tab = page.locator('[data-role="run"][data-status="live"]');
    if ((await tab.count()) !== 1) return false;
    const term = Number(await tab.getAttribute('data-term'));
    return Number.isInteger(term) && term !== other ? term : false;
  });
}

/** Waits for a shell prompt in terminal `index` (the sandbox's bash). */
export async function waitPrompt(page, index = 0) {
  return waitTerminalText(page, index, /[$#] ?$/m);
}

export function editorValue(page) {
  return page.evaluate(() => window.__cloudcode?.editor?.()?.getModel()?.getValue() ?? null);
}

export function editorPath(page) {
  return page.evaluate(() => {
    const uri = window.__cloudcode?.editor?.()?.getModel()?.uri;
    return uri === undefined ? null : decodeURIComponent(uri.path.replace(/^\//, ''));
  });
}

/** Opens `file` from the tree and waits until Monaco shows it. */
export async function openFileFromTree(page, file) {
  const row = page.locator(sel.treeItem(file)).first();
  await row.waitFor({ timeout: PATIENCE_MS });
  await row.click();
  // Some trees open on a single click, some on Enter or double click.
  const opened = () => editorPath(page).then((p) => p === file);
  if (!(await waitUntil(`${file} to open`, opened, { timeout: 3000 }).catch(() => false))) {
    await row.dblclick();
  }
  await waitUntil(`Monaco to show ${file}`, opened);
}

/** Puts the caret at the end of the Monaco model and types `text`. */
export async function typeInEditor(page, text, { at = 'end' } = {}) {
  await page.evaluate((where) => {
    const ed = window.__cloudcode.editor();
    const model = ed.getModel();
    const pos = where === 'start' ? { lineNumber: 1, column: 1 } : model.getFullModelRange().getEndPosition();
    ed.setPosition(pos);
    ed.focus();
  }, at);
  await page.keyboard.type(text);
}

export async function saveStatusText(page) {
  return (await page.locator(sel.statusSave).first().textContent())?.trim() ?? '';
}

// ---------------------------------------------------------------- misc

let idCount = 0;
/** A project id valid for the server (3-63 of a-z 0-9 -). */
export function uniqueId(prefix) {
  return `${prefix}-${process.pid.toString(36)}${(idCount++).toString(36)}`.slice(0, 63);
}

export async function shot(page, name) {
  const file = path.join(OUT_DIR, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** On failure, a screenshot and the page's console problems help. */
export async function withDiagnostics(page, name, fn) {
  try {
    return await fn();
  } catch (e) {
    let extra = '';
    try {
      await shot(page, `FAILED-${name}`);
      extra += `\n  screenshot: e2e/out/FAILED-${name}.png`;
    } catch {
      /* the page may be gone */
    }
    if (page.problems?.length) extra += `\n  page problems:\n    ${page.problems.slice(-15).join('\n    ')}`;
    // The test runner prints the stack (which holds the message as it was
    // when thrown), so the diagnostics go there.
    if (e instanceof Error) {
      if (typeof e.stack === 'string') e.stack += extra;
      else e.message += extra;
    }
    throw e;
  }
}

export function randomBytes(n, seed = 1) {
  // A deterministic xorshift stream: the same bytes every run, none of
  // them compressible or valid UTF-8 for long.
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', ...opts });
}

// ---------------------------------------------------------------- tmux

let tmuxCount = 0;

/** A tmux server of its own (its own socket) with one window of a fixed
 * size running `command`: how the TUI is driven, as in tui/tests/e2e.rs. */
export class Tmux {
  constructor(width, height, command, env = {}) {
    this.socket = `cc-web-e2e-${process.pid}-${tmuxCount++}`;
    const vars = Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`).join(' ');
    this.run(['new-session', '-d', '-s', 'main', '-x', String(width), '-y', String(height), `env ${vars} ${command}`]);
  }

  run(args) {
    return execFileSync('tmux', ['-L', this.socket, ...args], { encoding: 'utf8' });
  }

  screen() {
    return this.run(['capture-pane', '-p', '-t', 'main']);
  }

  /** Types text literally. */
  typeText(text) {
    this.run(['send-keys', '-t', 'main', '-l', text]);
  }

  /** Presses keys by tmux name (Enter, C-s, M-3), one at a time as fingers
   * do: an Esc-prefixed Alt chord must not merge with the next key. This
   * pause paces the keys; it synchronises nothing. */
  async press(...keys) {
    for (const key of keys) {
      this.run(['send-keys', '-t', 'main', key]);
      await new Promise((r) => setTimeout(r, 60));
    }
  }

  async waitFor(what, check, opts) {
    let last = '';
    try {
      return await waitUntil(what, () => {
        last = this.screen();
        return check(last) ? last : false;
      }, opts);
    } catch (e) {
      throw new Error(`${e.message.split('; last seen')[0]}; the TUI's screen:\n${last}`);
    }
  }

  waitText(text, opts) {
    return this.waitFor(JSON.stringify(text), (s) => s.includes(text), opts);
  }

  kill() {
    try {
      this.run(['kill-server']);
    } catch {
      /* already gone */
    }
  }
}

function shellQuote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}
