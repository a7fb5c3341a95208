// Screenshots of every screen at 1280x720 and 800x600, dark and light, into
// e2e/out/ for a person to look at; plus the checks a look would make
// anyway: nothing overflows the window, every pane has room, the status bar
// is on screen, and the theme follows the system's colour scheme.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  editorPath,
  launchBrowser,
  login,
  newPage,
  openFileFromTree,
  openIde,
  sel,
  shot,
  startServer,
  typeInTerminal,
  uniqueId,
  waitPrompt,
  waitTerminalText,
  waitUntil,
  withDiagnostics,
} from './harness.mjs';

let server;
let browser;
let id;

before(async () => {
  [server, browser] = await Promise.all([startServer('screens'), launchBrowser()]);
  id = uniqueId('screens');
  await server.createProject(id, 'python');
  await server.createProject(uniqueId('other-node'), 'node-js');
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const SIZES = [
  { width: 1280, height: 720 },
  { width: 800, height: 600 },
];
const SCHEMES = ['dark', 'light'];

/** What a look at the page would catch, measured. */
async function layoutProblems(page, selectors) {
  return page.evaluate((sels) => {
    const problems = [];
    const doc = document.scrollingElement ?? document.documentElement;
    if (doc.scrollWidth > innerWidth + 1) problems.push(`the page scrolls sideways (${doc.scrollWidth} > ${innerWidth})`);
    for (const [name, s] of Object.entries(sels)) {
      const el = document.querySelector(s);
      if (el === null) {
        problems.push(`${name} (${s}) missing`);
        continue;
      }
      const r = el.getBoundingClientRect();
      if (r.width < 40 || r.height < 16) problems.push(`${name} is too small: ${Math.round(r.width)}x${Math.round(r.height)}`);
      if (r.bottom > innerHeight + 1 || r.right > innerWidth + 1) {
        problems.push(`${name} extends past the window: ${Math.round(r.right)}x${Math.round(r.bottom)} in ${innerWidth}x${innerHeight}`);
      }
    }
    return problems;
  }, selectors);
}

function luminance(rgb) {
  const m = /rgba?\((\d+), (\d+), (\d+)/.exec(rgb);
  if (!m) return NaN;
  return 0.2126 * Number(m[1]) + 0.7152 * Number(m[2]) + 0.0722 * Number(m[3]);
}

async function backgrounds(page) {
  return page.evaluate(() => {
    const bg = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = getComputedStyle(e).backgroundColor;
        if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c;
      }
      return getComputedStyle(document.body).backgroundColor;
    };
    const q = (s) => document.querySelector(s);
    return {
      body: bg(document.body),
      editor: q('.monaco-editor .monaco-editor-background') ? bg(q('.monaco-editor .monaco-editor-background')) : null,
      terminal: q('.xterm-viewport') ? bg(q('.xterm-viewport')) : q('.xterm') ? bg(q('.xterm')) : null,
    };
  });
}

test('screenshots: login, landing and the IDE (a file open, a terminal with output) at 1280x720 and 800x600, dark and light; nothing overflows, the theme follows the system', { timeout: 240_000 }, async () => {
  const problems = [];
  const seen = {};
  for (const viewport of SIZES) {
    for (const colorScheme of SCHEMES) {
      const tag = `${viewport.width}x${viewport.height}-${colorScheme}`;
      const { context, page } = await newPage(browser, { viewport, colorScheme });
      await withDiagnostics(page, `screens-${tag}`, async () => {
        // The login form in a page of its own: opening the printed URL on
        // top of it would be a hash-only navigation (login.test covers it).
        const loginPage = await context.newPage();
        await loginPage.goto(`${server.origin}/`);
        await loginPage.locator(sel.loginPage).waitFor();
        await shot(loginPage, `screen-login-${tag}`);
        problems.push(...(await layoutProblems(loginPage, { 'login form': '[data-testid="login-token"]' })).map((p) => `login ${tag}: ${p}`));
        await loginPage.close();

        await login(page, server);
        await page.locator(sel.projectRow(id)).waitFor();
        await shot(page, `screen-landing-${tag}`);
        problems.push(
          ...(await layoutProblems(page, { 'create form': sel.createId, 'project row': sel.projectRow(id) })).map((p) => `landing ${tag}: ${p}`),
        );
        const landingBg = await backgrounds(page);

        await openIde(page, server, id);
        await waitPrompt(page, 0);
        await waitUntil('main.py open', async () => (await editorPath(page)) === 'main.py').catch(() => openFileFromTree(page, 'main.py'));
        await typeInTerminal(page, 0, 'ls -la; python3 --version; echo "screens-ready"\n');
        await waitTerminalText(page, 0, /^screens-ready$/m);
        // Wait for the fonts: a screenshot before them shows fallbacks.
        await page.evaluate(() => document.fonts.ready);
        await shot(page, `screen-ide-${tag}`);
        const ideSelectors = {
          'tree': '[data-testid="tree"]',
          'editor': '.monaco-editor',
          'terminal': '[data-testid="terminal-pane"] .xterm',
          'status bar': '[data-testid="status-connection"]',
          'run button': sel.runButton,
        };
        if (viewport.width >= 1280) ideSelectors.preview = sel.previewFrame;
        problems.push(...(await layoutProblems(page, ideSelectors)).map((p) => `IDE ${tag}: ${p}`));
        seen[tag] = { landing: landingBg, ide: await backgrounds(page) };
        // The preview answers 502 while no app listens on port 3000: expected.
        const errors = page.problems.filter((p) => !/status of 502/.test(p));
        problems.push(...errors.map((p) => `IDE ${tag}: ${p}`));
      });
      await context.close();
    }
  }
  console.log(`# backgrounds: ${JSON.stringify(seen)}`);
  for (const { width, height } of SIZES) {
    const dark = seen[`${width}x${height}-dark`];
    const light = seen[`${width}x${height}-light`];
    for (const part of ['body', 'editor', 'terminal']) {
      for (const screen of ['landing', 'ide']) {
        const d = luminance(dark[screen][part] ?? '');
        const l = luminance(light[screen][part] ?? '');
        if (Number.isNaN(d) || Number.isNaN(l)) continue;
        if (!(d < 100 && l > 150)) problems.push(`${screen} ${part} at ${width}x${height}: dark ${dark[screen][part]}, light ${light[screen][part]}: the theme does not follow the system`);
      }
    }
  }
  assert.deepEqual(problems, [], `what a look at the screens finds:\n${problems.join('\n')}`);
});
