// The landing page and login, as a user meets them: the printed URL, the
// project list, create / open / delete.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  PATIENCE_MS,
  launchBrowser,
  login,
  newPage,
  pageWait,
  sel,
  shot,
  startServer,
  uniqueId,
  waitUntil,
  withDiagnostics,
} from './harness.mjs';

let server;
let browser;

before(async () => {
  [server, browser] = await Promise.all([startServer('landing'), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('landing: create a Python project from the form, see it listed, open it, refuse a bad id in words, delete with confirmation', { timeout: 180_000 }, async () => {
  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'landing', async () => {
    await login(page, server);
    const id = uniqueId('land');

    // A bad id: the form says why, in words, and the page stays.
    await page.locator(sel.createId).fill('Bad_Name!');
    await page.locator(sel.createSubmit).click();
    const formError = page.locator(`${sel.createError}, ${sel.errorBanner}`).filter({ hasText: /\w{3,}/ });
    await formError.first().waitFor({ timeout: PATIENCE_MS });
    const words = (await formError.first().textContent()).trim();
    assert.match(words, /[a-z]{3,}.*[a-z]{3,}/i, `the refusal is said in words: ${JSON.stringify(words)}`);
    assert.ok(await page.locator(sel.landing).isVisible(), 'the landing page is still there (no blank page)');
    await shot(page, 'landing-bad-id');
    for (const bad of ['-abc', 'ab', 'abc-']) {
      await page.locator(sel.createId).fill(bad);
      await page.locator(sel.createSubmit).click();
      await formError.first().waitFor({ timeout: PATIENCE_MS });
    }
    assert.deepEqual(
      (await server.listProjects()).map((p) => p.id),
      [],
      'no bad id reached the server as a project',
    );

    // A good one: created as Python.
    await page.locator(sel.createId).fill(id);
    await page.locator(sel.createLanguage).selectOption('python');
    await page.locator(sel.createSubmit).click();
    await waitUntil(`${id} to exist on the server`, async () =>
      (await server.listProjects()).find((p) => p.id === id && p.language === 'python'),
    );
    // Creating opens the new project (the page navigates once the server's
    // answer arrives, which may be after the server lists it); back to the list.
    await waitUntil('the new project to open', () => new URL(page.url()).pathname === `/p/${id}`);
    await page.goto(`${server.origin}/`);
    const row = page.locator(sel.projectRow(id));
    await row.waitFor({ timeout: PATIENCE_MS });
    assert.match(await row.textContent(), /python/i, 'the row names the language');

    // The same id again: refused in words (by the form or the server).
    await page.locator(sel.createId).fill(id);
    await page.locator(sel.createSubmit).click();
    await formError.first().waitFor({ timeout: PATIENCE_MS });
    assert.match(await formError.first().textContent(), /exist|taken|already/i);

    // Open it: the IDE's route, with a connected runner.
    await page.locator(sel.projectOpen(id)).first().click();
    await waitUntil('the URL to be /p/<id>', () => new URL(page.url()).pathname === `/p/${id}`);
    await pageWait(page, 'the runner to connect', () => window.__cloudcode?.client?.()?.state === 'open', undefined, {
      timeout: PATIENCE_MS * 2,
    });

    // Back to the list; delete asks first, then the project is gone.
    await page.goto(`${server.origin}/`);
    await row.waitFor({ timeout: PATIENCE_MS });
    await page.locator(sel.projectDelete(id)).first().click();
    const ok = page.locator(sel.confirmOk).first();
    await ok.waitFor({ timeout: PATIENCE_MS });
    assert.ok((await server.listProjects()).some((p) => p.id === id), 'nothing is deleted before the confirmation');
    await shot(page, 'landing-delete-confirm');
    await ok.click();
    await row.waitFor({ state: 'detached', timeout: PATIENCE_MS });
    await waitUntil(`${id} to be gone on the server`, async () => !(await server.listProjects()).some((p) => p.id === id));
  });
  await context.close();
});

test('login: the printed URL logs in and leaves no token in the address or history; the session is HttpOnly, host-only, SameSite=Strict; a fresh context gets the login form; a wrong token is refused in words', { timeout: 120_000 }, async () => {
  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'login', async () => {
    await page.goto(server.ideUrl);
    await page.locator(sel.landing).waitFor({ timeout: PATIENCE_MS });
    await waitUntil('the token to leave the address bar', () => !page.url().includes('token'));
    assert.ok(!(await page.evaluate(() => location.href)).includes(server.token), 'location.href has no token');

    // No history entry holds it either.
    const cdp = await context.newCDPSession(page);
    const { entries } = await cdp.send('Page.getNavigationHistory');
    for (const e of entries) assert.ok(!e.url.includes('token='), `history entry without a token: ${e.url}`);
    await page.goBack().catch(() => {});
    assert.ok(!page.url().includes('token='), `going back finds no #token= entry (at ${page.url()})`);
    await page.goForward().catch(() => {});

    // The session cookie: HttpOnly, host-only, SameSite=Strict.
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'cloudcode_session') ?? cookies[0];
    assert.ok(session, `a session cookie was set: ${JSON.stringify(cookies)}`);
    assert.equal(session.httpOnly, true, 'HttpOnly');
    assert.equal(session.sameSite, 'Strict', 'SameSite=Strict');
    assert.equal(session.domain, 'localhost', 'host-only (no Domain attribute, so no leading dot)');
    assert.ok(!cookies.some((c) => c.value.includes(server.token)), 'no cookie holds the API token itself');
    assert.equal(await page.evaluate(() => document.cookie), '', 'the page script cannot read the session');

    // A later visit in the same browser needs no token.
    const again = await context.newPage();
    await again.goto(`${server.origin}/`);
    await again.locator(sel.landing).waitFor({ timeout: PATIENCE_MS });
    assert.equal(await again.locator(sel.loginPage).count(), 0);
    await again.close();
  });

  // A fresh browser without the token: the login form.
  const fresh = await newPage(browser);
  await withDiagnostics(fresh.page, 'login-fresh', async () => {
    const p = fresh.page;
    await p.goto(`${server.origin}/`);
    await p.locator(sel.loginPage).waitFor({ timeout: PATIENCE_MS });
    await shot(p, 'login-form');

    // A wrong token, pasted: refused in words, still on the form.
    await p.locator(sel.loginToken).fill('not-the-token');
    await p.locator(sel.loginSubmit).click();
    const err = p.locator(sel.loginError).filter({ hasText: /\w{3,}/ });
    await err.waitFor({ timeout: PATIENCE_MS });
    assert.match(await err.textContent(), /[a-z]{3,} [a-z]{2,}/i, 'the refusal is a sentence');
    assert.equal(await p.locator(sel.landing).count(), 0, 'a wrong token does not log in');
    assert.deepEqual(await fresh.context.cookies(), [], 'a wrong token gets no cookie');

    // A wrong token in the URL: also refused in words.
    await p.goto(`${server.origin}/p/whatever#token=wrong-token`);
    await p.locator(sel.loginPage).waitFor({ timeout: PATIENCE_MS });
    await waitUntil('the wrong token to leave the address bar too', () => !p.url().includes('token'));

    // The right token, pasted: logged in.
    await p.goto(`${server.origin}/`);
    await p.locator(sel.loginToken).fill(server.token);
    await p.locator(sel.loginSubmit).click();
    await p.locator(sel.landing).waitFor({ timeout: PATIENCE_MS });
  });
  await fresh.context.close();
  await context.close();
});

test('login: the printed URL opened in the tab that shows the login form logs in (only the fragment changes, the page does not reload)', { timeout: 60_000 }, async () => {
  const { context, page } = await newPage(browser);
  await withDiagnostics(page, 'login-hash', async () => {
    await page.goto(`${server.origin}/`);
    await page.locator(sel.loginPage).waitFor({ timeout: PATIENCE_MS });
    // As a user pastes the printed URL into this tab's address bar: the
    // same document, a new fragment (a hashchange, no reload).
    await page.goto(server.ideUrl);
    await page.locator(sel.landing).waitFor({ timeout: 10_000 }).catch(() => {
      throw new Error('the page ignores a #token= fragment that arrives without a reload (no hashchange handling): the login form stays');
    });
    await waitUntil('the token to leave the address bar', () => !page.url().includes('token'));
  });
  await context.close();
});
