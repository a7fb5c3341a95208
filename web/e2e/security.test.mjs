// The preview is hostile: user code serves it. A hostile app (e2e/hostile/)
// runs in a real sandbox and, loaded in the IDE's preview pane and in a tab
// of its own, tries to use the browser's credentials against the API and
// the runner, toss cookies at their hosts, read and steer the IDE. In real
// Chromium, every attempt must fail.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  E2E_DIR,
  PATIENCE_MS,
  editorPath,
  editorValue,
  launchBrowser,
  login,
  newPage,
  openIde,
  sel,
  settle,
  shot,
  startServer,
  terminalCount,
  terminalText,
  uniqueId,
  waitPrompt,
  waitUntil,
  watchPage,
  withDiagnostics,
} from './harness.mjs';

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer('security'), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const HOSTILE_FILES = ['main.py', 'index.html', 'attack.js'];

/** What the hostile page wrote into #out once it finished. */
async function hostileResults(scope) {
  const out = scope.locator('body[data-done="1"] #out');
  await out.waitFor({ state: 'attached', timeout: PATIENCE_MS * 2 });
  return JSON.parse(await out.textContent());
}

/** Fails unless an attempt to read the API or the runner was refused:
 * the fetch threw (CORS) or got no successful answer. */
function assertNoRead(result, what) {
  assert.ok(result, `${what}: attempted`);
  const read = result.ok === true || (typeof result.body === 'string' && /"projects"|"csrf"|"terminals"/.test(result.body));
  assert.ok(!read, `${what} must fail, got ${JSON.stringify(result)}`);
}

function assertAllFailed(r, where) {
  assertNoRead(r.fetch_projects, `${where}: fetch of /api/projects with credentials`);
  assertNoRead(r.fetch_session, `${where}: fetch of /api/session (the CSRF value) with credentials`);
  assertNoRead(r.fetch_projects_127, `${where}: fetch of the API by IP with credentials`);
  assertNoRead(r.post_project, `${where}: POST /api/projects with credentials`);
  assertNoRead(r.post_delete_session, `${where}: DELETE /api/session with credentials`);
  assertNoRead(r.runner_health, `${where}: the runner's /v1/health with credentials`);
  assert.notEqual(r.runner_ws?.outcome, 'open', `${where}: the runner WebSocket must not open: ${JSON.stringify(r.runner_ws)}`);
  if (r.where === 'frame') {
    assert.ok(r.parent_document?.threw, `${where}: reading window.parent.document must throw: ${JSON.stringify(r.parent_document)}`);
    assert.ok(r.parent_storage?.threw, `${where}: reading the parent's localStorage must throw: ${JSON.stringify(r.parent_storage)}`);
  }
  assert.equal(r.opener?.opener, null, `${where}: no window.opener`);
}

test('hostile preview: in the preview pane and in its own tab, the app cannot use the API, toss cookies, read or steer the IDE, or open the runner', { timeout: 240_000 }, async () => {
  const id = uniqueId('hostile');
  await server.createProject(id, 'python');
  const { context, page } = await newPage(browser);
  // Every request the IDE's page and the tab send to the API and runner
  // hosts, with the cookies as sent: what the server would see.
  const sent = [];
  context.on('request', async (req) => {
    const u = new URL(req.url());
    if (u.hostname === 'localhost' || u.hostname.endsWith('.ide.localhost')) {
      const cookie = (await req.headerValue('cookie').catch(() => null)) ?? '';
      sent.push({ url: req.url(), cookie });
    }
  });

  await withDiagnostics(page, 'hostile', async () => {
    await login(page, server);
    const sessionBefore = (await context.cookies(server.origin)).find((c) => c.name === 'cloudcode_session');
    assert.ok(sessionBefore, 'logged in with a session cookie');
    await openIde(page, server, id);
    await waitPrompt(page, 0);

    // The hostile app replaces the template, written through the runner.
    for (const f of HOSTILE_FILES) {
      const text = readFileSync(path.join(E2E_DIR, 'hostile', f), 'utf8');
      await page.evaluate(([p, t]) => window.__cloudcode.client().writeFile(p, new TextEncoder().encode(t)), [f, text]);
    }
    await page.locator(sel.runButton).first().click();
    await waitUntil('the hostile app to listen', async () => {
      const n = await terminalCount(page);
      for (let i = 0; i < n; i++) if ((await terminalText(page, i)).includes('hostile app listening')) return true;
      return false;
    });

    // The open main.py is a clean buffer: it reloads with the hostile app's
    // text when the write's change arrives. The "before" is taken after that
    // reload, or the reload itself would pass for the attack's doing.
    const hostileMain = readFileSync(path.join(E2E_DIR, 'hostile', 'main.py'), 'utf8');
    await waitUntil('the open main.py to reload with the hostile app', async () =>
      (await editorPath(page)) === 'main.py' && (await editorValue(page)) === hostileMain);

    // The IDE's state before the attack, to compare after it.
    const idePath = new URL(page.url()).pathname;
    const terminalsBefore = await terminalCount(page);
    const editorBefore = await editorValue(page);
    const frameEl = page.locator(sel.previewFrame).first();
    const sandbox = (await frameEl.getAttribute('sandbox')) ?? '';
    assert.ok(sandbox !== '' || (await frameEl.getAttribute('sandbox')) !== null, 'the preview iframe is sandboxed');
    assert.ok(!/allow-top-navigation/.test(sandbox), `the sandbox does not allow top navigation: "${sandbox}"`);

    // --- In the preview pane.
    const frame = page.frameLocator(sel.previewFrame);
    let inFrame;
    await waitUntil('the hostile page to load in the preview pane and finish', async () => {
      try {
        inFrame = await hostileResults(frame).catch(() => null);
        if (inFrame) return true;
      } catch {
        /* not yet */
      }
      await page.locator(sel.previewReload).first().click({ timeout: 1000 }).catch(() => {});
      return false;
    }, { timeout: PATIENCE_MS * 2, interval: 2000 });
    // Anything the attack set in motion (a navigation, a message) has had
    // its chance once the page is still here a moment later.
    await settle(1000);
    await shot(page, 'hostile-in-frame');
    console.log(`# in the preview pane: ${JSON.stringify(inFrame)}`);
    assert.equal(inFrame.where, 'frame');
    assertAllFailed(inFrame, 'preview pane');
    assert.equal(new URL(page.url()).pathname, idePath, `the IDE page stays (top navigation blocked); now at ${page.url()}`);
    assert.ok(!page.url().includes('hijacked'), 'the IDE was not navigated');
    assert.equal(await page.evaluate(() => window.__cloudcode.client()?.state), 'open', 'the IDE is still connected');
    assert.equal(await terminalCount(page), terminalsBefore, 'postMessage opened no terminal');
    assert.equal(await editorValue(page), editorBefore, 'postMessage changed no editor buffer');
    assert.equal(await page.locator(sel.landing).count(), 0, 'postMessage did not navigate the IDE to the landing page');

    // --- In a tab of its own (same browser, so the same cookies).
    const tab = watchPage(await context.newPage());
    await tab.goto(server.previewOrigin(id) + '/');
    const inTab = await hostileResults(tab);
    await shot(tab, 'hostile-in-tab');
    console.log(`# in its own tab: ${JSON.stringify(inTab)}`);
    assert.equal(inTab.where, 'tab');
    assertAllFailed(inTab, 'own tab');
    await tab.close();

    // --- Nothing was created or ended through the browser's credentials.
    const projects = (await server.listProjects()).map((p) => p.id);
    assert.deepEqual(projects.filter((p) => p.startsWith('pwned')), [], `no project created by the hostile app: ${projects}`);
    const session = await page.evaluate(async () => (await fetch('/api/session', { credentials: 'same-origin' })).status);
    assert.equal(session, 200, 'the IDE is still logged in (no logout by the hostile app)');

    // --- No tossed cookie reaches the API's or the runner's host.
    const jar = await context.cookies([`${server.origin}/`, `http://${server.ideHost(id)}/`]);
    const tossed = jar.filter((c) => c.name.startsWith('tossed') || (c.name === 'cloudcode_session' && c.value.startsWith('tossed')));
    assert.deepEqual(tossed, [], `cookies tossed from the preview reach the IDE's hosts: ${JSON.stringify(tossed)}`);
    const sessions = jar.filter((c) => c.name === 'cloudcode_session');
    assert.deepEqual(sessions.map((c) => c.value), [sessionBefore.value], 'one session cookie, the real one');
    // What the server sees: the next API request from the IDE carries no
    // tossed cookie.
    const mark = sent.length;
    await page.evaluate(() => fetch('/api/projects', { credentials: 'same-origin' }).then((r) => r.status));
    await waitUntil('the IDE\'s API request to be seen', () => sent.length > mark);
    for (const s of sent) {
      assert.ok(!s.cookie.includes('tossed'), `a request to ${s.url} carried a tossed cookie: ${s.cookie}`);
    }
    // The CSRF defence itself: a cookie alone cannot change state.
    const csrfless = await page.evaluate(async () => {
      const r = await fetch('/api/projects', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ id: 'pwned-no-csrf', language: 'python' }),
      });
      return r.status;
    });
    assert.ok(csrfless === 401 || csrfless === 403, `a POST with the cookie but no CSRF header is refused: ${csrfless}`);
    assert.ok(!(await server.listProjects()).some((p) => p.id === 'pwned-no-csrf'));

    // The IDE page acts on no message: it has no 'message' listener, or
    // the checks above showed no effect.
    const cdp = await context.newCDPSession(page);
    const { result } = await cdp.send('Runtime.evaluate', { expression: 'window' });
    const { listeners } = await cdp.send('DOMDebugger.getEventListeners', { objectId: result.objectId });
    const messageListeners = listeners.filter((l) => l.type === 'message');
    console.log(`# the IDE page's window has ${messageListeners.length} 'message' listener(s)`);
  });
  await context.close();
});

test('gateway: a runner WebSocket whose Origin is a project or preview host is refused, a token in the URL is not accepted', { timeout: 60_000 }, async () => {
  const id = uniqueId('origin');
  await server.createProject(id, 'python');
  const started = await server.startProject(id);
  const ws = new URL(started.wsUrl);
  // A raw handshake: Node's fetch does not send Upgrade requests.
  const raw = (origin) =>
    new Promise((resolve, reject) => {
      import('node:net').then(({ connect }) => {
        const s = connect(server.port, '127.0.0.1', () => {
          s.write(
            `GET ${ws.pathname} HTTP/1.1\r\nHost: ${ws.host}\r\nOrigin: ${origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
              `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
              `Sec-WebSocket-Protocol: cloudcode.v1, cloudcode-token.${started.token}\r\n\r\n`,
          );
        });
        let data = '';
        s.on('data', (d) => {
          data += d;
          const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
          if (m) {
            resolve(Number(m[1]));
            s.destroy();
          }
        });
        s.on('error', reject);
        setTimeout(() => {
          s.destroy();
          reject(new Error(`no answer: ${data}`));
        }, 10_000);
      });
    });
  assert.equal(await raw(server.origin), 101, 'the IDE page\'s origin may open the runner socket');
  assert.equal(await raw(server.previewOrigin(id)), 403, 'the project\'s preview origin may not');
  assert.equal(await raw(`http://other.preview.localhost:${server.port}`), 403, 'another preview origin may not');
  assert.equal(await raw(`http://${server.ideHost(id)}`), 403, 'a project (runner) host origin may not');
});
