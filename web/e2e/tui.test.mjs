// The same project open in the TUI (in tmux) and in the browser at once:
// saves in either show in the other, and one terminal takes input from both.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  BINS,
  PATIENCE_MS,
  Tmux,
  editorPath,
  editorValue,
  launchBrowser,
  liveRunTab,
  liveRuns,
  login,
  newPage,
  openIde,
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
let tmux;

before(async () => {
  [server, browser] = await Promise.all([startServer('tui'), launchBrowser()]);
});

after(async () => {
  tmux?.kill();
  await browser?.close();
  await server?.stop();
});

function saysSaved(text) {
  return /\bsaved\b/i.test(text) && !/unsaved|not saved|saving|modified|error|fail|conflict/i.test(text);
}

test('TUI and browser on one project: a save in either shows in the other; one terminal typed into from both', { timeout: 240_000 }, async () => {
  const id = uniqueId('both');
  await server.createProject(id, 'python');

  // The TUI first, as a user who already works in a terminal.
  const home = path.join(server.root, 'tui-home');
  mkdirSync(home, { recursive: true });
  tmux = new Tmux(160, 45, `${BINS.tui} --server ${server.apiBase} --token ${server.token} --project ${id}`, {
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, 'config'),
    XDG_DATA_HOME: path.join(home, 'data'),
    TERM: 'xterm-256color',
  });
  await tmux.waitFor('the TUI connected with a shell', (s) => s.includes('● connected') && s.includes(`user@${id}`), {
    timeout: PATIENCE_MS * 2,
  });

  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'tui', async () => {
    await login(page, server);
    await openIde(page, server, id);
    await waitPrompt(page, 0);
    await waitUntil('the browser to open main.py', async () => (await editorPath(page)) === 'main.py');

    // --- One terminal, typed into from both.
    await tmux.press('M-3');
    // Keys typed go to the focused pane: wait until it is the terminal, so a
    // lost Alt chord fails here, by name, not as missing shell output.
    await tmux.waitText('┏ 1 shell');
    tmux.typeText('echo "tui-says-$((3*3))"');
    await tmux.press('Enter');
    await tmux.waitText('tui-says-9');
    const shared = await waitUntil('a browser terminal to show the TUI\'s shell (tui-says-9)', async () => {
      const n = await terminalCount(page);
      for (let i = 0; i < n; i++) if (/^tui-says-9$/m.test(await terminalText(page, i))) return { index: i };
      return false;
    });
    await typeInTerminal(page, shared.index, 'echo "browser-says-$((4*4))"\n');
    await waitTerminalText(page, shared.index, /^browser-says-16$/m);
    await tmux.waitText('browser-says-16');
    await shot(page, 'tui-browser-shared-terminal');

    // --- A save in the browser shows in the TUI's editor.
    const fromBrowser = `# saved-from-browser-${Date.now() % 100000}`;
    await typeInEditor(page, `${fromBrowser}\n`, { at: 'start' });
    await page.keyboard.press('Control+s');
    await waitUntil('the browser to say saved', async () =>
      saysSaved(((await page.locator(sel.statusSave).first().textContent().catch(() => '')) ?? '').trim()),
    );
    assert.ok(server.readStorage(id, 'main.py').toString().startsWith(fromBrowser), 'the browser\'s save is durable');
    await tmux.waitText(fromBrowser);

    // --- A save in the TUI shows in the browser's editor.
    const fromTui = `# saved-from-tui-${Date.now() % 100000}`;
    await tmux.press('M-2');
    await tmux.waitText('┏ main.py');
    tmux.typeText(fromTui);
    await tmux.press('Enter');
    await tmux.waitText('main.py modified');
    await tmux.press('C-s');
    await tmux.waitText('main.py saved');
    const stored = server.readStorage(id, 'main.py').toString();
    assert.ok(stored.includes(fromTui), `the TUI's save is durable: ${stored.slice(0, 200)}`);
    await waitUntil('the browser\'s (clean) buffer to reload with the TUI\'s save', async () => (await editorValue(page)) === stored);
    assert.equal(await page.locator(sel.conflictBanner).count() === 0 || !(await page.locator(sel.conflictBanner).first().isVisible()), true,
      'no conflict for a clean buffer');
    await shot(page, 'tui-browser-after-tui-save');
  });
  await context.close();
});

test('Run across the TUI and the browser: F5\'s run is the browser\'s Run tab, the browser\'s Run ends it, and F5 ends the browser\'s', { timeout: 240_000 }, async () => {
  const id = uniqueId('runtui');
  await server.createProject(id, 'python');
  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'runtui', async () => {
    await login(page, server);
    await openIde(page, server, id);
    const program = 'import os, time\nprint("run-pid", os.getpid(), flush=True)\ntime.sleep(600)\n';
    await page.evaluate((text) => window.__cloudcode.client().writeFile('main.py', new TextEncoder().encode(text)), program);

    const home = path.join(server.root, 'tui-home-run');
    mkdirSync(home, { recursive: true });
    tmux?.kill();
    tmux = new Tmux(160, 45, `${BINS.tui} --server ${server.apiBase} --token ${server.token} --project ${id}`, {
      HOME: home,
      XDG_CONFIG_HOME: path.join(home, 'config'),
      XDG_DATA_HOME: path.join(home, 'data'),
      TERM: 'xterm-256color',
    });
    await tmux.waitFor('the TUI connected with a shell', (s) => s.includes('● connected') && s.includes(`user@${id}`), {
      timeout: PATIENCE_MS * 2,
    });
    await tmux.press('F5');
    await tmux.waitText('run-pid');
    const fromTui = await waitUntil('the TUI\'s run to be listed', async () => {
      const runs = await liveRuns(page);
      return runs.length === 1 ? runs[0] : false;
    });

    // A page opened now shows the TUI's run as its Run tab.
    await page.reload();
    await openIde(page, server, id);
    assert.equal(await liveRunTab(page, 'the browser\'s Run tab'), fromTui);

    // The browser's Run ends the TUI's run.
    await page.locator(sel.runButton).first().click();
    const fromBrowser = await liveRunTab(page, 'the browser\'s own run', fromTui);
    await waitUntil('only the browser\'s run left', async () => JSON.stringify(await liveRuns(page)) === JSON.stringify([fromBrowser]));

    // And F5 ends the browser's; the browser's Run tab follows the TUI's.
    await tmux.press('F5');
    const again = await waitUntil('the TUI\'s new run, alone', async () => {
      const runs = await liveRuns(page);
      return runs.length === 1 && runs[0] !== fromBrowser ? runs[0] : false;
    });
    assert.equal(await liveRunTab(page, 'the browser\'s Run tab to follow F5', fromBrowser), again);
    await shot(page, 'tui-browser-run');
  });
  await context.close();
});
