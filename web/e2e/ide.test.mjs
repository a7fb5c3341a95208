// The IDE (`/p/<id>`) against a real server and real sandboxes: edit and
// save, run, reload, a dropped connection, upload, a conflict, the preview.
// Each test has a project of its own, so one failure does not cascade.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  OUT_DIR,
  PATIENCE_MS,
  editorPath,
  editorValue,
  launchBrowser,
  liveRunTab,
  liveRuns,
  login,
  newPage,
  openFileFromTree,
  openIde,
  pageWait,
  randomBytes,
  sel,
  shot,
  startServer,
  terminalCount,
  terminalLines,
  terminalText,
  typeInEditor,
  typeInTerminal,
  uniqueId,
  waitIdeReady,
  waitPrompt,
  waitTerminalText,
  waitUntil,
  withDiagnostics,
} from './harness.mjs';

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer('ide'), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A logged-in page on a new Python project's IDE, with a shell prompt in
 * terminal 0. */
async function ideOn(prefix, { language = 'python', viewport } = {}) {
  const id = uniqueId(prefix);
  await server.createProject(id, language);
  const { context, page } = await newPage(browser, { viewport });
  await login(page, server);
  await openIde(page, server, id);
  await waitPrompt(page, 0);
  // The IDE opens the language's entry file by itself; once it has, focus
  // stays where a test puts it.
  const entry = language === 'python' ? 'main.py' : 'index.js';
  await waitUntil(`the IDE to open ${entry}`, async () => (await editorPath(page)) === entry);
  return { id, context, page };
}

/** "saved" (durable) as the status bar says it, not "unsaved", "saving…". */
function saysSaved(text) {
  return /\bsaved\b/i.test(text) && !/unsaved|not saved|saving|modified|error|fail|conflict/i.test(text);
}

async function saveStatus(page) {
  return ((await page.locator(sel.statusSave).first().textContent({ timeout: 2000 }).catch(() => '')) ?? '').trim();
}

async function tabIsDirty(page, file) {
  return (await page.locator(`${sel.editorTab(file)} ${sel.editorTabDirty}`).count()) > 0;
}

/** Every terminal's text; for output whose tab index is not fixed (Run). */
async function allTerminalTexts(page) {
  const n = await terminalCount(page);
  const texts = [];
  for (let i = 0; i < n; i++) texts.push(await terminalText(page, i));
  return texts;
}

async function waitAnyTerminal(page, what, pattern) {
  let last = [];
  try {
    return await waitUntil(what, async () => {
      last = await allTerminalTexts(page);
      const i = last.findIndex((t) => pattern.test(t));
      return i >= 0 ? { index: i, text: last[i] } : false;
    });
  } catch (e) {
    throw new Error(`${e.message.split('; last seen')[0]}; terminals show:\n${last.map((t, i) => `--- ${i}:\n${t.slice(-1500)}`).join('\n')}`);
  }
}

async function waitSaved(page, id, file) {
  let status = '';
  await waitUntil(`status-save to say saved (durable) for ${file}`, async () => {
    status = await saveStatus(page);
    return saysSaved(status) && !(await tabIsDirty(page, file));
  }).catch((e) => {
    throw new Error(`${e.message}; status-save says ${JSON.stringify(status)}`);
  });
}

test('edit and save: type into main.py, Ctrl-S, "saved" means the bytes in storage are Monaco\'s', { timeout: 120_000 }, async () => {
  const { id, context, page } = await ideOn('save');
  await withDiagnostics(page, 'save', async () => {
    await openFileFromTree(page, 'main.py');
    const before = await editorValue(page);
    assert.equal(before, server.readStorage(id, 'main.py').toString('utf8'), 'Monaco opened what storage holds');

    const marker = `# edited in the browser ${Date.now()}`;
    await typeInEditor(page, `${marker}\n`, { at: 'start' });
    await waitUntil('main.py to be marked dirty', async () => (await tabIsDirty(page, 'main.py')) || !saysSaved(await saveStatus(page)));
    await page.keyboard.press('Control+s');
    await waitSaved(page, id, 'main.py');
    // `saved` is the runner's `written`: durable, so no waiting here.
    const model = await editorValue(page);
    assert.ok(model.startsWith(marker), `the model starts with what was typed: ${JSON.stringify(model.slice(0, 80))}`);
    assert.equal(server.readStorage(id, 'main.py').toString('utf8'), model, 'storage holds exactly the model');
    await shot(page, 'ide-saved');
  });
  await context.close();
});

test('run: the Run button runs the project; its output is in the xterm.js buffer', { timeout: 120_000 }, async () => {
  const { id, context, page } = await ideOn('run');
  await withDiagnostics(page, 'run', async () => {
    // A program whose output is not in its own command line.
    const program = 'print("run-output", 6 * 7, flush=True)\n';
    await page.evaluate((text) => window.__cloudcode.client().writeFile('main.py', new TextEncoder().encode(text)), program);
    assert.equal(server.readStorage(id, 'main.py').toString(), program);
    await page.locator(sel.runButton).first().click();
    await waitAnyTerminal(page, 'the Run output "run-output 42"', /run-output 42/);
    await shot(page, 'ide-run');
  });
  await context.close();
});

test('run across browsers: the Run tab is the same terminal in every browser; a Run anywhere ends the run and the others follow', { timeout: 180_000 }, async () => {
  const { id, context, page } = await ideOn('runid');
  const second = await newPage(browser);
  await withDiagnostics(page, 'runid', async () => {
    const program = 'import os, time\nprint("run-pid", os.getpid(), flush=True)\ntime.sleep(600)\n';
    await page.evaluate((text) => window.__cloudcode.client().writeFile('main.py', new TextEncoder().encode(text)), program);
    await page.locator(sel.runButton).first().click();
    const first = await liveRunTab(page, 'the Run tab of the first browser');
    await waitAnyTerminal(page, 'the first run\'s output', /run-pid \d+/);

    // Another browser opening the project shows that run as its Run tab.
    await login(second.page, server);
    await openIde(second.page, server, id);
    assert.equal(await liveRunTab(second.page, 'the Run tab of the second browser'), first, 'the second browser shows the first one\'s run as its Run tab');
    assert.deepEqual(await liveRuns(second.page), [first]);

    // Its Run replaces that run (one server on the port), in its Run tab...
    await second.page.locator(sel.runButton).first().click();
    const replaced = await liveRunTab(second.page, 'the second browser\'s new run', first);
    await waitUntil('the first run to end', async () => JSON.stringify(await liveRuns(second.page)) === JSON.stringify([replaced]));
    // ...and the first browser's Run tab follows it.
    assert.equal(await liveRunTab(page, 'the first browser\'s Run tab to follow', first), replaced);
    await waitAnyTerminal(page, 'the new run\'s output in the first browser', /run-pid \d+/);

    // And back: a Run in the first browser ends the second's run.
    await page.locator(sel.runButton).first().click();
    const third = await liveRunTab(page, 'the first browser\'s new run', replaced);
    await waitUntil('one run left', async () => JSON.stringify(await liveRuns(page)) === JSON.stringify([third]));
    assert.equal(await liveRunTab(second.page, 'the second browser\'s Run tab to follow', replaced), third);
    assert.equal(await page.locator('[data-role="run"]').count(), 1, 'one Run tab in the first browser');
    assert.equal(await second.page.locator('[data-role="run"]').count(), 1, 'one Run tab in the second browser');
  });
  await second.context.close();
  await context.close();
});

test('upload: a 100 MB file dropped on the tree arrives byte for byte while the terminal keeps echoing', { timeout: 300_000 }, async () => {
  const { id, context, page } = await ideOn('bigdrop');
  await withDiagnostics(page, 'bigdrop', async () => {
    const size = 100 * 1024 * 1024;
    const bytes = randomBytes(size, 7);
    const file = path.join(OUT_DIR, 'big-drop.bin');
    writeFileSync(file, bytes);
    // A real File for the page (Playwright hands the browser the path), then
    // the drop the tree handles: a DataTransfer holding it, dropped on the
    // tree's root.
    await page.evaluate(() => {
      const input = document.createElement('input');
      input.type = 'file';
      input.id = 'e2e-drop-source';
      input.hidden = true;
      document.body.append(input);
    });
    await page.locator('#e2e-drop-source').setInputFiles(file);
    // Echo as the page sees it: keydown until the character is parsed into
    // the buffer on the cursor's line.
    await page.evaluate(() => {
      const term = window.__cloudcode.terminal(0);
      window.__e2eEcho = { t0: null, expect: '', ms: null };
      window.addEventListener('keydown', () => (window.__e2eEcho.t0 = performance.now()), true);
      term.onWriteParsed(() => {
        const e = window.__e2eEcho;
        const buf = term.buffer.active;
        // The cursor's line with the rows it wraps from: a long prompt and
        // what was typed may not fit the pane's width.
        let row = buf.cursorY + buf.baseY;
        let line = buf.getLine(row)?.translateToString(true) ?? '';
        while (row > 0 && buf.getLine(row)?.isWrapped) {
          row -= 1;
          line = (buf.getLine(row)?.translateToString(true) ?? '') + line;
        }
        if (e.t0 !== null && e.ms === null && line.endsWith(e.expect)) e.ms = performance.now() - e.t0;
      });
    });
    await page.evaluate(() => window.__cloudcode.terminal(0).focus());
    await page.evaluate(() => {
      const f = document.getElementById('e2e-drop-source').files[0];
      const dt = new DataTransfer();
      dt.items.add(f);
      const list = document.querySelector('[data-testid="tree"]');
      for (const type of ['dragenter', 'dragover', 'drop']) list.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    const stored = () => server.readStorageOrNull(id, 'big-drop.bin');
    const done = () => {
      const s = stored();
      return s !== null && s.length === size;
    };
    // Type while it uploads: every keystroke's echo, measured in the page.
    const echoes = [];
    let typed = '';
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    while (!done() && echoes.length < 400) {
      const ch = letters[echoes.length % letters.length];
      typed += ch;
      await page.evaluate((t) => Object.assign(window.__e2eEcho, { t0: null, expect: t, ms: null }), typed);
      await page.keyboard.press(ch);
      const ms = await pageWait(page, `the echo of ${ch} during the upload`, () => window.__e2eEcho.ms, undefined, { timeout: PATIENCE_MS });
      echoes.push({ ms, uploading: !done() });
      // Cleared well before the prompt and the letters fill the pane's
      // width: readline moves to a new row at the edge.
      if (typed.length >= 20) {
        await page.keyboard.press('Control+U');
        typed = '';
      }
    }
    const during = echoes.filter((e) => e.uploading).map((e) => e.ms);
    await waitUntil('the 100 MB upload to reach storage whole', done, { timeout: 240_000 });
    assert.ok(stored().equals(bytes), 'the stored bytes equal the dropped file');
    const sorted = [...during].sort((a, b) => a - b);
    const at = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
    console.log(`# echo during a 100 MB upload: ${during.length} keys, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${Math.round(sorted[sorted.length - 1])} ms`);
    // Each keystroke is a round trip through Playwright; a fast machine
    // uploads 100 MB in a few seconds.
    assert.ok(during.length >= 5, `only ${during.length} keystrokes echoed while the upload ran`);
    // Not a speed figure (a shared machine): a terminal stalled behind the
    // upload would wait for all of it, many seconds.
    assert.ok(sorted[sorted.length - 1] < 3000, `an echo took ${Math.round(sorted[sorted.length - 1])} ms during the upload`);
    await page.locator(sel.treeItem('big-drop.bin')).first().waitFor({ timeout: PATIENCE_MS });
  });
  await context.close();
});

test('dialogs: a delete from the tree and closing a tab with unsaved changes ask first, in the page\'s one dialog', { timeout: 150_000 }, async () => {
  const { id, context, page } = await ideOn('dialogs');
  await withDiagnostics(page, 'dialogs', async () => {
    const dialog = page.locator('[data-testid="confirm-dialog"]');
    await typeInTerminal(page, 0, 'echo doomed > doomed.txt\n');
    const row = page.locator(sel.treeItem('doomed.txt')).first();
    await row.waitFor({ timeout: PATIENCE_MS });
    const askDelete = async () => {
      await row.click({ button: 'right' });
      await page.locator('[data-testid="tree-menu-delete"]').click();
      await dialog.waitFor({ timeout: PATIENCE_MS });
      assert.match(await dialog.textContent(), /doomed\.txt/);
      assert.equal(await dialog.count(), 1);
    };
    // Escape keeps the file; the safe choice had the focus.
    await askDelete();
    await shot(page, 'ide-confirm-delete');
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-testid')), 'confirm-cancel');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached', timeout: PATIENCE_MS });
    assert.ok(server.readStorageOrNull(id, 'doomed.txt') !== null, 'Escape deleted the file');
    // Delete removes it.
    await askDelete();
    await page.locator(sel.confirmOk).click();
    await waitUntil('doomed.txt to leave storage', () => server.readStorageOrNull(id, 'doomed.txt') === null);
    await row.waitFor({ state: 'detached', timeout: PATIENCE_MS });

    // A tab with unsaved changes: Save / Don't save / Cancel.
    await openFileFromTree(page, 'main.py');
    const stored = server.readStorage(id, 'main.py').toString();
    await typeInEditor(page, '# not kept\n', { at: 'start' });
    await waitUntil('main.py to be dirty', () => tabIsDirty(page, 'main.py'));
    const askClose = async () => {
      await page.locator(`${sel.editorTab('main.py')} [data-testid="editor-tab-close"]`).click();
      await dialog.waitFor({ timeout: PATIENCE_MS });
      assert.match(await dialog.textContent(), /main\.py.*unsaved changes/);
    };
    await askClose();
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-testid')), 'editor-close-save');
    await page.locator('[data-testid="confirm-cancel"]').click();
    await dialog.waitFor({ state: 'detached', timeout: PATIENCE_MS });
    assert.ok(await tabIsDirty(page, 'main.py'), 'Cancel closed the tab');
    await askClose();
    await page.locator(sel.confirmOk).click(); // "Don't save"
    await page.locator(sel.editorTab('main.py')).waitFor({ state: 'detached', timeout: PATIENCE_MS });
    assert.equal(server.readStorage(id, 'main.py').toString(), stored, "Don't save saved");
  });
  await context.close();
});

test('reload: the terminal\'s earlier output and the unsaved buffer come back after a page reload', { timeout: 150_000 }, async () => {
  const { id, context, page } = await ideOn('reload');
  await withDiagnostics(page, 'reload', async () => {
    // Enough output to reach into the scrollback, and a marker after it.
    await typeInTerminal(page, 0, 'seq 1 300; echo "reload-marker-$((6*7))"\n');
    await waitTerminalText(page, 0, /^reload-marker-42$/m);
    const beforeLines = await terminalLines(page, 0);

    await openFileFromTree(page, 'main.py');
    const marker = `# unsaved ${Date.now()}`;
    await typeInEditor(page, `${marker}\n`, { at: 'start' });
    const unsaved = await editorValue(page);
    // Hot exit keeps the buffer in localStorage (debounced): wait for it
    // there, as a user would wait a moment before reloading.
    await pageWait(
      page,
      'the unsaved buffer to reach localStorage',
      (m) => Object.keys(localStorage).some((k) => (localStorage.getItem(k) ?? '').includes(m)),
      marker,
    );

    await page.reload();
    await waitIdeReady(page, { waitEditor: true });
    // The terminal: its earlier output, scrollback included, in order.
    const text = await waitTerminalText(page, 0, /^reload-marker-42$/m);
    const numbers = text.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
    assert.deepEqual(numbers, Array.from({ length: 300 }, (_, i) => i + 1), 'seq 1 300 is back whole, once');
    const afterLines = await terminalLines(page, 0);
    assert.deepEqual(afterLines.slice(0, beforeLines.length), beforeLines, 'the screen and scrollback are as before');

    // The unsaved buffer: back, and still dirty (not saved behind the user's back).
    const tab = page.locator(sel.editorTab('main.py')).first();
    await tab.waitFor({ timeout: PATIENCE_MS });
    if (!((await editorValue(page)) ?? '').includes(marker)) await tab.click();
    await waitUntil('main.py to be restored with the unsaved text', async () => ((await editorValue(page)) ?? '').includes(marker));
    assert.equal(await editorValue(page), unsaved, 'the buffer is exactly as it was');
    assert.ok(await tabIsDirty(page, 'main.py'), 'the restored buffer is marked dirty');
    assert.ok(!server.readStorage(id, 'main.py').toString().includes(marker), 'nothing was saved without Ctrl-S');
    await shot(page, 'ide-after-reload');
  });
  await context.close();
});

test('connection drop: offline then online, the terminal resumes with no gap and no duplicate, and takes input', { timeout: 150_000 }, async () => {
  const { context, page } = await ideOn('drop');
  await withDiagnostics(page, 'drop', async () => {
    // Output keeps coming while the browser is offline: the runner holds it
    // and resume must deliver exactly the missing bytes.
    await typeInTerminal(page, 0, 'for i in $(seq 1 2000); do echo "L$i"; [ $i = 300 ] && sleep 3; done; echo "END$((1+1))"\n');
    await waitTerminalText(page, 0, /^L200$/m);
    // A real outage: the browser goes offline (reconnecting fails for a
    // while) and its open connections are reset.
    await context.setOffline(true);
    assert.ok(server.dropConnections() > 0, 'the browser had connections to reset');
    await pageWait(page, 'the client to notice the drop', () => window.__cloudcode.client().state !== 'open');
    const statusWhileDown = (await page.locator(sel.statusConnection).first().textContent().catch(() => '')) ?? '';
    await shot(page, 'ide-offline');
    await context.setOffline(false);
    await pageWait(page, 'the client to reconnect', () => window.__cloudcode.client().state === 'open', undefined, {
      timeout: PATIENCE_MS * 2,
    });
    const text = await waitTerminalText(page, 0, /^END2$/m, { timeout: PATIENCE_MS * 2 });
    const seen = text.split('\n').filter((l) => /^L\d+$/.test(l)).map((l) => Number(l.slice(1)));
    const expected = Array.from({ length: 2000 }, (_, i) => i + 1);
    if (seen.length !== expected.length || seen.some((n, i) => n !== expected[i])) {
      const dup = seen.filter((n, i) => seen.indexOf(n) !== i);
      const missing = expected.filter((n) => !seen.includes(n));
      assert.fail(`lines L1..L2000 once each, in order: ${seen.length} lines, duplicates ${JSON.stringify(dup.slice(0, 20))}, missing ${JSON.stringify(missing.slice(0, 20))}`);
    }
    assert.match(statusWhileDown, /connect|offline|lost|disconnect/i, `the status bar said the connection was down: ${JSON.stringify(statusWhileDown)}`);

    // Typing works after the reconnect, and is echoed once.
    await typeInTerminal(page, 0, 'echo "after-$((20+1))"\n');
    const after = await waitTerminalText(page, 0, /^after-21$/m);
    assert.equal(after.split('\n').filter((l) => l === 'after-21').length, 1);
  });
  await context.close();
});

test('upload: a 3 MB binary file through the tree\'s upload button arrives byte for byte', { timeout: 150_000 }, async () => {
  const { id, context, page } = await ideOn('upload');
  await withDiagnostics(page, 'upload', async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 17, 42);
    const file = path.join(OUT_DIR, 'upload-random.bin');
    writeFileSync(file, bytes);
    const input = page.locator(sel.treeUploadInput).first();
    if ((await input.count()) > 0) {
      await input.setInputFiles(file);
    } else {
      const chooser = page.waitForEvent('filechooser');
      await page.locator(sel.treeUpload).first().click();
      await (await chooser).setFiles(file);
    }
    await waitUntil('the upload to reach storage whole', () => {
      const stored = server.readStorageOrNull(id, 'upload-random.bin');
      return stored !== null && stored.length === bytes.length;
    }, { timeout: PATIENCE_MS * 2 });
    assert.ok(server.readStorage(id, 'upload-random.bin').equals(bytes), 'the stored bytes equal the original');
    await page.locator(sel.treeItem('upload-random.bin')).first().waitFor({ timeout: PATIENCE_MS });
  });
  await context.close();
});

test('upload: 2,000 small files picked at once all arrive byte for byte, in batches', { timeout: 240_000 }, async () => {
  const { id, context, page } = await ideOn('manyfiles');
  await withDiagnostics(page, 'manyfiles', async () => {
    const count = 2000;
    const dir = path.join(OUT_DIR, 'many-files');
    mkdirSync(dir, { recursive: true });
    const files = [];
    for (let i = 0; i < count; i++) {
      const name = `many-${String(i).padStart(4, '0')}.txt`;
      // 0 to 4 KiB: an empty one, and sizes that end inside a chunk.
      const bytes = randomBytes((i * 977) % 4096, 1000 + i);
      writeFileSync(path.join(dir, name), bytes);
      files.push({ name, bytes });
    }
    // Counted by the page: every request it sends, by op.
    await page.evaluate(() => {
      window.__e2eOps = {};
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        if (typeof data === 'string') {
          const op = JSON.parse(data).op;
          window.__e2eOps[op] = (window.__e2eOps[op] ?? 0) + 1;
        }
        return send.call(this, data);
      };
    });
    const started = Date.now();
    await page.locator(sel.treeUploadInput).first().setInputFiles(files.map((f) => path.join(dir, f.name)));
    const missing = () => files.filter((f) => {
      const stored = server.readStorageOrNull(id, f.name);
      return stored === null || !stored.equals(f.bytes);
    });
    await waitUntil(`all ${count} files in storage`, () => missing().length === 0, { timeout: 180_000, interval: 250 });
    const ms = Date.now() - started;
    const ops = await page.evaluate(() => window.__e2eOps);
    console.log(`# ${count} files (0-4 KiB) picked until all are in storage: ${ms} ms; requests: ${JSON.stringify(ops)}`);
    assert.deepEqual(missing().map((f) => f.name), []);
    // In batches: a request per batch, not per file.
    assert.ok((ops.write_many ?? 0) >= 1 && (ops.write_many ?? 0) <= count / 100, `write_many requests: ${ops.write_many}`);
    assert.equal(ops.write ?? 0, 0, 'no file went alone');
    await page.locator(sel.treeItem('many-0000.txt')).first().waitFor({ timeout: PATIENCE_MS });
  });
  await context.close();
});

test('conflict: a dirty tab changed from the terminal shows the conflict; keep mine saves mine, take theirs loads theirs', { timeout: 180_000 }, async () => {
  const { id, context, page } = await ideOn('conflict');
  await withDiagnostics(page, 'conflict', async () => {
    await openFileFromTree(page, 'main.py');

    // 1. Keep mine.
    const mine = `# mine ${Date.now()}`;
    await typeInEditor(page, `${mine}\n`, { at: 'start' });
    await waitUntil('main.py dirty', () => tabIsDirty(page, 'main.py'));
    await typeInTerminal(page, 0, "echo '# theirs-one' >> main.py\n");
    await page.locator(sel.conflictBanner).first().waitFor({ timeout: PATIENCE_MS });
    await shot(page, 'ide-conflict');
    const myText = await page.evaluate(() => {
      // The conflict view may be a diff editor; the editor hook names the
      // buffer being edited.
      return window.__cloudcode.editor()?.getModel()?.getValue();
    });
    await page.locator(sel.conflictKeepMine).first().click();
    await page.locator(sel.conflictBanner).first().waitFor({ state: 'hidden', timeout: PATIENCE_MS });
    await waitSaved(page, id, 'main.py');
    const stored = server.readStorage(id, 'main.py').toString();
    assert.ok(stored.includes(mine), 'storage has my line');
    assert.ok(!stored.includes('# theirs-one'), 'storage does not have theirs');
    assert.equal(stored, await editorValue(page), 'storage is exactly my buffer');
    if (myText !== undefined) assert.equal(stored, myText);

    // 2. Take theirs.
    const mine2 = `# mine again ${Date.now()}`;
    await typeInEditor(page, `${mine2}\n`, { at: 'start' });
    await waitUntil('main.py dirty again', () => tabIsDirty(page, 'main.py'));
    await typeInTerminal(page, 0, "echo '# theirs-two' >> main.py\n");
    await page.locator(sel.conflictBanner).first().waitFor({ timeout: PATIENCE_MS });
    await page.locator(sel.conflictTakeTheirs).first().click();
    await page.locator(sel.conflictBanner).first().waitFor({ state: 'hidden', timeout: PATIENCE_MS });
    const theirs = await waitUntil('storage to hold theirs', () => {
      const s = server.readStorage(id, 'main.py').toString();
      return s.includes('# theirs-two') ? s : false;
    });
    await waitUntil('the editor to show theirs', async () => (await editorValue(page)) === theirs);
    assert.ok(!(await editorValue(page)).includes(mine2), 'my second edit is gone from the editor');
    assert.ok(!(await tabIsDirty(page, 'main.py')), 'the tab is clean after taking theirs');
  });
  await context.close();
});

test('preview: the pane shows the template\'s app once it runs', { timeout: 150_000 }, async () => {
  const { id, context, page } = await ideOn('preview');
  await withDiagnostics(page, 'preview', async () => {
    await page.locator(sel.runButton).first().click();
    await waitAnyTerminal(page, 'the app to listen', /Listening on http:\/\/localhost:3000/);
    const frame = page.frameLocator(sel.previewFrame);
    const frameEl = page.locator(sel.previewFrame).first();
    assert.equal(new URL(await frameEl.getAttribute('src')).host, new URL(server.previewOrigin(id)).host, 'the frame shows the preview host');
    await waitUntil('the preview to show "Hello from cloudcode"', async () => {
      const text = await frame.locator('h1').first().textContent({ timeout: 1000 }).catch(() => null);
      if (text?.includes('Hello from cloudcode')) return true;
      // The frame may have loaded before the app listened: reload it, as a
      // user presses the pane's reload button.
      await page.locator(sel.previewReload).first().click({ timeout: 1000 }).catch(() => {});
      return false;
    }, { interval: 1000 });
    await shot(page, 'ide-preview');

    // The URL bar opens paths of the app...
    const url = page.locator('[data-testid="preview-url"]').first();
    await url.fill('/some/path?q=1');
    await url.press('Enter');
    await waitUntil('the app to answer for /some/path', async () =>
      ((await frame.locator('body').first().textContent({ timeout: 1000 }).catch(() => '')) ?? '').includes('/some/path?q=1'));
    // ...and nothing outside the preview origin (not the IDE, not the web).
    for (const outside of [`${server.origin}/`, '//example.invalid/', 'javascript:alert(1)']) {
      await url.fill(outside);
      await url.press('Enter');
      const src = await frameEl.getAttribute('src');
      assert.equal(new URL(src).origin, server.previewOrigin(id), `"${outside}" is refused; the frame stays at ${src}`);
    }
    // Open in a new tab: the preview, without a way back to the IDE.
    const [tab] = await Promise.all([context.waitForEvent('page'), page.locator('[data-testid="preview-open"]').first().click()]);
    await tab.waitForLoadState();
    assert.equal(new URL(tab.url()).origin, server.previewOrigin(id));
    assert.equal(await tab.evaluate(() => window.opener), null, 'the new tab has no opener');
    await tab.close();
  });
  await context.close();
});

test('focus: the entry file the IDE opens by itself does not take the keyboard from a terminal the user is typing in', { timeout: 120_000 }, async () => {
  const id = uniqueId('focus');
  await server.createProject(id, 'python');
  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'focus', async () => {
    await login(page, server);
    // Hold Monaco's code back until the user types in the terminal: on a
    // slow network the editor arrives after the shell prompt. That is the
    // only thing slowed down; everything else is real.
    let release;
    const released = new Promise((r) => (release = r));
    let held = 0;
    await page.route(/\/assets\/editor\.api[^/]*\.js$/, async (route) => {
      held++;
      await released;
      await route.continue();
    });
    await page.goto(`${server.origin}/p/${id}`);
    await waitIdeReady(page);
    await waitPrompt(page, 0);
    await typeInTerminal(page, 0, 'echo "early-');
    release();
    await waitUntil('the IDE to open main.py by itself', async () => (await editorPath(page)) === 'main.py');
    // The user goes on typing where they were.
    await page.keyboard.type('$((5*5))"\n');
    if (held === 0) console.log('# the editor chunk was not held back (renamed?): the race may not have been exercised');
    const editor = await editorValue(page);
    assert.equal(editor, server.readStorage(id, 'main.py').toString(), 'nothing typed for the terminal went into the editor');
    await waitTerminalText(page, 0, /^early-25$/m);
  });
  await context.close();
});

test('tree: files made in a terminal show in the tree at once, folders included', { timeout: 90_000 }, async () => {
  const { context, page } = await ideOn('live');
  await withDiagnostics(page, 'live-tree', async () => {
    const t0 = Date.now();
    await typeInTerminal(page, 0, 'touch made-in-shell.txt && mkdir -p made-dir && echo hi > made-dir/inner.txt\n');
    await page.locator(sel.treeItem('made-in-shell.txt')).first().waitFor({ timeout: PATIENCE_MS });
    await page.locator(sel.treeItem('made-dir')).first().waitFor({ timeout: PATIENCE_MS });
    console.log(`# a touch in the terminal showed in the tree after ${Date.now() - t0} ms (typing included)`);
    // Expanding the new folder lists what is inside it.
    await page.locator(sel.treeItem('made-dir')).first().click();
    await page.locator(sel.treeItem('made-dir/inner.txt')).first().waitFor({ timeout: PATIENCE_MS });
    // And a removal goes away.
    await typeInTerminal(page, 0, 'rm made-in-shell.txt\n');
    await page.locator(sel.treeItem('made-in-shell.txt')).first().waitFor({ state: 'detached', timeout: PATIENCE_MS });
  });
  await context.close();
});

test('editor: a binary file and a file over the limit are refused politely, in words, not opened as text', { timeout: 90_000 }, async () => {
  const { context, page } = await ideOn('refuse');
  await withDiagnostics(page, 'refuse', async () => {
    const binary = randomBytes(4096, 7);
    binary[10] = 0;
    await page.evaluate(async ([b, big]) => {
      const c = window.__cloudcode.client();
      await c.writeFile('image.bin', new Uint8Array(b));
      await c.writeFile('huge.txt', new TextEncoder().encode('x'.repeat(big)));
    }, [Array.from(binary), 6 * 1024 * 1024]);
    for (const [file, words] of [['image.bin', /binary|not a text file/i], ['huge.txt', /large|MB|limit|up to/i]]) {
      await page.locator(sel.treeItem(file)).first().click();
      const message = page.locator('[data-testid="editor-message"]').filter({ hasText: words });
      await message.first().waitFor({ timeout: PATIENCE_MS });
      const path = await editorPath(page);
      const shown = path === file ? ((await editorValue(page)) ?? '').length : 0;
      assert.ok(shown === 0, `${file} is not shown as text in Monaco (${shown} characters)`);
    }
    await shot(page, 'ide-refused');
  });
  await context.close();
});

test('flow control: `yes` then Ctrl-C, three times: the output stops on screen, the prompt comes back and the terminal takes input', { timeout: 120_000 }, async () => {
  const { context, page } = await ideOn('yes');
  await withDiagnostics(page, 'yes', async () => {
    await page.evaluate(() => {
      const term = window.__cloudcode.terminal(0);
      window.__e2eLastWrite = performance.now();
      window.__e2eWritten = 0;
      term.onWriteParsed(() => {
        window.__e2eLastWrite = performance.now();
        window.__e2eWritten++;
      });
    });
    const rounds = [];
    for (let round = 0; round < 3; round++) {
      // Plain `yes`, as the issue says: 2-byte lines are the worst case for
      // a byte window (xterm.js's cost is per line, not per byte).
      await typeInTerminal(page, 0, 'yes\n');
      const from = await page.evaluate(() => window.__e2eWritten);
      // Let it run into the flow-control window for a moment.
      await pageWait(page, 'yes to be running', (n) => window.__e2eWritten > n + 50, from);
      await page.evaluate(() => (window.__e2eCtrlC = performance.now()));
      await page.keyboard.press('Control+c');
      // Stopped when the prompt is back and nothing was written for 500 ms.
      const stoppedAfter = await pageWait(page, 'the output to stop and the prompt to return', () => {
        const buf = window.__cloudcode.terminal(0).buffer.active;
        let last = '';
        for (let n = buf.length - 1; n >= 0 && last === ''; n--) last = buf.getLine(n)?.translateToString(true) ?? '';
        const quiet = performance.now() - window.__e2eLastWrite > 500;
        return quiet && /[$#] ?$/.test(last) ? Math.max(0, window.__e2eLastWrite - window.__e2eCtrlC) : false;
      }, undefined, { timeout: PATIENCE_MS });
      rounds.push(Math.round(stoppedAfter));
    }
    console.log(`# yes + Ctrl-C: output stopped on screen after ${rounds.join(', ')} ms (the issue's target: 500 ms)`);
    // How fast it stops is a figure for the benchmark (web/bench/ide.mjs
    // measures it beside ttyd), not a timed assertion on a shared CI
    // machine: this test proves it stops and the terminal still works.
    await typeInTerminal(page, 0, 'echo "after-yes-$((2*3))"\n');
    await waitTerminalText(page, 0, /^after-yes-6$/m);
  });
  await context.close();
});
