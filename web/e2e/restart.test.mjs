// The server restarts under an open IDE (an upgrade, a crash and a
// supervisor): the page reconnects by itself, the session holds, nothing
// saved or unsaved is lost, and the terminals come back or say they ended.

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

test('server restart: the IDE reconnects by itself; the session, saved and unsaved work survive; terminals resume or say they ended and a new one works', { timeout: 240_000 }, async () => {
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

    // The terminal: its screen is still there; it either goes on (the
    // runner survived) or says it ended, and a new terminal works.
    const text = await terminalText(page, 0);
    assert.match(text, /^before-restart-2$/m, 'the terminal\'s earlier output is still on screen');
    const ended = page.locator('[data-testid="terminal-ended"]');
    const alive = await (async () => {
      await typeInTerminal(page, 0, 'echo "after-restart-$((2+2))"\n');
      return waitTerminalText(page, 0, /^after-restart-4$/m, { timeout: 5000 }).then(() => true, () => false);
    })();
    if (!alive) {
      await ended.first().waitFor({ timeout: PATIENCE_MS }).catch(() => {
        throw new Error('the terminal neither works after the restart nor says that it ended');
      });
      const words = (await ended.first().textContent()) ?? '';
      assert.match(words, /ended|exited|restart/i, `the ended terminal says why: ${JSON.stringify(words)}`);
      const before = await terminalCount(page);
      const restart = page.locator('[data-testid="terminal-restart"]');
      if ((await restart.count()) > 0 && (await restart.first().isVisible())) await restart.first().click();
      else await page.locator(sel.terminalNew).first().click();
      const index = await waitUntil('a new terminal with a prompt', async () => {
        const n = await terminalCount(page);
        for (let i = 0; i < n; i++) if (/[$#] ?$/m.test(await terminalText(page, i)) && (i >= before || !(await terminalText(page, i)).includes('before-restart-2'))) return { i };
        return false;
      });
      await typeInTerminal(page, index.i, 'echo "new-terminal-$((3+3))"\n');
      await waitTerminalText(page, index.i, /^new-terminal-6$/m);
    }
  });
  await context.close();
});
