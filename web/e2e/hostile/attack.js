// A hostile preview app: user code serves the preview, so it tries what an
// attacker would against the IDE, the API and the runner, and writes every
// outcome into #out as JSON for the test to read. Served from
// <id>.preview.localhost:PORT, in the IDE's preview iframe and in a tab.
(async () => {
  const results = {};
  const port = location.port;
  const id = location.hostname.split('.')[0];
  const api = `${location.protocol}//localhost:${port}`;
  const framed = window.parent !== window;
  const where = framed ? 'frame' : 'tab';
  results.where = where;
  results.origin = location.origin;

  const describe = (e) => ({ threw: String((e && e.name) || e), message: String((e && e.message) || e) });
  const step = async (name, fn) => {
    try {
      results[name] = await fn();
    } catch (e) {
      results[name] = describe(e);
    }
  };
  const withTimeout = (ms, p, onTimeout) =>
    Promise.race([p, new Promise((resolve) => setTimeout(() => resolve(onTimeout), ms))]);
  const read = async (r) => ({ status: r.status, ok: r.ok, type: r.type, body: (await r.text()).slice(0, 300) });

  // 1. Read the API with the browser's credentials.
  await step('fetch_projects', async () => read(await fetch(`${api}/api/projects`, { credentials: 'include' })));
  await step('fetch_session', async () => read(await fetch(`${api}/api/session`, { credentials: 'include' })));
  await step('fetch_projects_127', async () =>
    read(await fetch(`${location.protocol}//127.0.0.1:${port}/api/projects`, { credentials: 'include' })),
  );

  // 2. Change state with the browser's credentials (CSRF): a "simple"
  // request that needs no preflight, a no-cors one, and a form post.
  await step('post_project', async () =>
    read(
      await fetch(`${api}/api/projects`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'content-type': 'text/plain' },
        body: JSON.stringify({ id: `pwned-fetch-${where}`, language: 'python' }),
      }),
    ),
  );
  await step('post_project_json_no_cors', async () => {
    const r = await fetch(`${api}/api/projects`, {
      method: 'POST',
      mode: 'no-cors',
      credentials: 'include',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify({ id: `pwned-nocors-${where}`, language: 'python' }),
    });
    return { type: r.type, status: r.status };
  });
  await step('post_delete_session', async () => {
    // DELETE is not a simple method: the browser must ask first (preflight).
    return read(await fetch(`${api}/api/session`, { method: 'DELETE', credentials: 'include' }));
  });
  await step('form_post', async () => {
    const sink = document.createElement('iframe');
    sink.name = `sink-${where}`;
    sink.style.display = 'none';
    document.body.append(sink);
    const form = document.createElement('form');
    form.method = 'POST';
    form.action = `${api}/api/projects`;
    form.enctype = 'text/plain';
    form.target = sink.name;
    const input = document.createElement('input');
    input.type = 'hidden';
    input.name = `{"id":"pwned-form-${where}","language":"python","pad":"`;
    input.value = '"}';
    form.append(input);
    document.body.append(form);
    const loaded = new Promise((resolve) => sink.addEventListener('load', () => resolve('loaded'), { once: true }));
    form.submit();
    return withTimeout(5000, loaded, 'no load event');
  });

  // 3. Toss cookies at the API's host and the runners' hosts, including a
  // fake session meant to shadow the real one.
  await step('cookies', () => {
    const attempts = [
      `tossed_api=1; domain=localhost; path=/`,
      `cloudcode_session=tossed-${where}; domain=localhost; path=/`,
      `tossed_ide=1; domain=ide.localhost; path=/`,
      `tossed_runner=1; domain=${id}.ide.localhost; path=/`,
      `tossed_own=1; path=/`,
    ];
    for (const c of attempts) document.cookie = c;
    return { visible_here: document.cookie };
  });

  // 4. Read the embedding page.
  await step('parent_document', () => {
    if (!framed) return { skipped: 'not framed' };
    const d = window.parent.document;
    return { read: true, title: d.title, cookie: d.cookie };
  });
  await step('parent_storage', () => {
    if (!framed) return { skipped: 'not framed' };
    return { read: true, keys: Object.keys(window.parent.localStorage) };
  });
  await step('opener', () => ({ opener: window.opener === null ? null : 'present' }));

  // 5. Talk to the IDE with postMessage: shapes a careless listener might act on.
  await step('post_message', () => {
    const target = framed ? window.parent : window;
    const messages = [
      { type: 'navigate', path: '/' },
      { kind: 'logout' },
      { op: 'term_open', id: 1, cols: 80, rows: 24 },
      { op: 'write', path: 'main.py', size: 0, id: 2 },
      'reload',
      { type: 'open', path: '/etc/passwd' },
    ];
    // Monaco's setImmediate stand-in listens for these from any source.
    for (let n = 1; n <= 200; n++) messages.push({ vscodeScheduleAsyncWork: n });
    for (const m of messages) target.postMessage(m, '*');
    if (framed) window.top.postMessage({ type: 'navigate', path: '/' }, '*');
    return { sent: messages.length };
  });

  // 6. Open the runner's WebSocket (the browser would send cookies the
  // runner's host has, and the preview's Origin), and its HTTP side.
  await step('runner_ws', () =>
    new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${id}.ide.localhost:${port}/v1/ws`, ['cloudcode.v1']);
      } catch (e) {
        resolve(describe(e));
        return;
      }
      const timer = setTimeout(() => {
        resolve({ outcome: 'timeout', readyState: ws.readyState });
        ws.close();
      }, 8000);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve({ outcome: 'open', protocol: ws.protocol });
        ws.close();
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        resolve({ outcome: 'closed', code: ev.code });
      };
    }),
  );
  await step('runner_health', async () =>
    read(await fetch(`${location.protocol}//${id}.ide.localhost:${port}/v1/health`, { credentials: 'include' })),
  );

  // 7. Navigate the top window away from the IDE (last: if it worked,
  // nothing after it would run).
  await step('top_navigation', () => {
    if (!framed) return { skipped: 'not framed' };
    window.top.location.href = `${api}/?hijacked-by-preview`;
    return { assigned: true };
  });

  const out = document.getElementById('out');
  out.textContent = JSON.stringify(results);
  document.body.dataset.done = '1';
})();
