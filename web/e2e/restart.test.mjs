// The server restarts under an open IDE (an upgrade, a crash and a
// supervisor): the page reconnects by itself, the session holds, nothing
// saved or unsaved is lost, and the terminals come back with their screen
// and their shell: sandboxes outlive the server, which takes them over.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  PATIENCE_MS,
  editorPath,
  editorValue,
  launchBrowser,
  login,
  newPage,
  openIde,
  pageWait,
  sel,
  shot,
  startServer,
  terminalCount,
  terminalText,
  typeInEditor,
  typeInTerminal,
  uniqueId,
  waitPrompt,
  waitTerminalText,
  waitUntil,
  withDiagnostics,
} from './harness.mjs';

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer('restart'), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('server restart: the IDE reconnects by itself; the session, saved and unsaved work survive; the terminal resumes with its screen and the same shell', { timeout: 240_000 }, async () => {
  const id = uniqueId('restart');
  await server.createProject(id, 'python');
  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'restart', async () => {
    await login(page, server);
    await openIde(page, server, id);
    await waitPrompt(page, 0);
    await waitUntil('main.py open', async () => (await editorPath(page)) === 'main.py');
    await typeInTerminal(page, 0, 'echo "before-restart-$((1+1))"\n');
    await waitTerminalText(page, 0, /^before-restart-2$/m);
    await typeInTerminal(page, 0, 'echo "shell-before-$$"\n');
    const shellBefore = /^shell-before-(\d+)$/m.exec(await waitTerminalText(page, 0, /^shell-before-\d+$/m))[1];
    const terminalsBefore = await terminalCount(page);
    await page.evaluate(() => window.__cloudcode.client().writeFile('saved.txt', new TextEncoder().encode('saved before the restart\n')));
    const marker = `# unsaved across a restart ${Date.now()}`;
    await typeInEditor(page, `${marker}\n`, { at: 'start' });
    const unsaved = await editorValue(page);
    await pageWait(page, 'the unsaved buffer in localStorage', (m) =>
      Object.keys(localStorage).some((k) => (localStorage.getItem(k) ?? '').includes(m)), marker);

    // The restart: the same port, data and token.
    const old = server;
    await old.stop({ keepData: true });
    await pageWait(page, 'the page to notice', () => window.__cloudcode.client().state !== 'open');
    server = await startServer('restart-again', { again: old });
    assert.equal(server.token, old.token, 'the token survives a restart');

    await pageWait(page, 'the IDE to reconnect by itself (no reload)', () => window.__cloudcode.client().state === 'open', undefined, {
      timeout: PATIENCE_MS * 2,
    });
    await shot(page, 'ide-after-server-restart');
    assert.equal(server.readStorage(id, 'saved.txt').toString(), 'saved before the restart\n');
    // The unsaved buffer: still there, still dirty; saving it works now.
    assert.equal(await editorValue(page), unsaved, 'the unsaved buffer is intact');
    await page.locator(sel.editorTab('main.py')).first().click();
    await page.evaluate(() => window.__cloudcode.editor().focus());
    await page.keyboard.press('Control+s');
    await waitUntil('the save after the restart to be durable', () =>
      server.readStorage(id, 'main.py').toString() === unsaved);

    // The terminal: the same shell, with its screen, goes on (the sandbox
    // outlived the server, and the page resumed it from its seq).
    const text = await terminalText(page, 0);
    assert.match(text, /^before-restart-2$/m, 'the terminal\'s earlier output is still on screen');
    await typeInTerminal(page, 0, 'echo "shell-after-$$"\n');
    const shellAfter = /^shell-after-(\d+)$/m.exec(await waitTerminalText(page, 0, /^shell-after-\d+$/m))[1];
    assert.equal(shellAfter, shellBefore, 'the same shell before and after the restart');
    const endedBars = await page.$$eval('[data-testid="terminal-ended"]', (bars) => bars.filter((b) => !b.hidden).length);
    assert.equal(endedBars, 0, 'a terminal says it ended');
    assert.equal(await terminalCount(page), terminalsBefore, 'a terminal was added or lost');
    assert.match(await terminalText(page, 0), /^shell-before-\d+$/m, 'the screen before the restart was kept');
  });
  await context.close();
});
