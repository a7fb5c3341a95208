// The page: login, then the route's screen (landing or IDE), with one error
// banner. The IDE module is loaded on demand: the landing page does not pay
// for Monaco and xterm.js.

import { Api, describeError } from '../api';
import { createBanner } from './banner';
import { h } from './dom';
import { logInFromUrl, showLoginForm, tokenFromHash } from './login';
import { mountLanding } from './landing';
import { Router, type Route } from './router';
import { installTestingHook } from './testing';

export async function startApp(root: HTMLElement): Promise<void> {
  installTestingHook();
  const api = new Api();
  const banner = createBanner();
  const router = new Router();

  const urlError = await logInFromUrl(api);
  // Until the server answers, say so instead of showing nothing.
  for (;;) {
    try {
      if (await api.hasSession()) break;
      await showLoginForm(root, api, urlError);
      break;
    } catch (e) {
      await new Promise<void>((resolve) => {
        root.replaceChildren(
          h(
            'main',
            { class: 'login-page' },
            h(
              'div',
              { class: 'login-form' },
              h('h1', { class: 'brand' }, h('span', { class: 'brand-mark', text: '{ }' }), 'cloudcode'),
              h('div', { class: 'banner static', testid: 'error-banner', attrs: { role: 'alert' } }, h('span', { class: 'banner-text', text: describeError(e) })),
              h('div', { class: 'form-buttons' }, h('button', { class: 'button primary', text: 'Retry', attrs: { type: 'button' }, on: { click: () => resolve() } })),
            ),
          ),
        );
      });
    }
  }

  let current: { dispose(): void } | null = null;
  let generation = 0;
  const show = async (route: Route): Promise<void> => {
    const mine = ++generation;
    current?.dispose();
    current = null;
    banner.clear();
    switch (route.kind) {
      case 'landing':
        document.title = 'cloudcode';
        current = mountLanding(root, {
          api,
          banner,
          navigate: (id) => router.navigate({ kind: 'ide', project: id }),
          onLogout: () => location.assign('/'),
        });
        return;
      case 'ide': {
        root.replaceChildren(h('div', { class: 'page-loading', testid: 'page-loading', text: `Opening ${route.project}…` }));
        let mod: typeof import('./ide');
        try {
          mod = await import('./ide');
        } catch (e) {
          root.replaceChildren(banner.el);
          banner.show(`The IDE could not be loaded: ${describeError(e)}. Reload the page.`);
          return;
        }
        if (mine !== generation) return;
        current = mod.mountIde(root, { api, banner, project: route.project, goHome: () => router.navigate({ kind: 'landing' }) });
        return;
      }
      case 'not_found':
        document.title = 'cloudcode';
        root.replaceChildren(
          h(
            'main',
            { class: 'login-page' },
            h(
              'div',
              { class: 'login-form' },
              h('h1', { class: 'brand', text: 'Nothing here' }),
              h('p', { class: 'muted', text: `There is no page at ${route.path}.` }),
              h('a', { class: 'button primary', text: 'All projects', attrs: { href: '/' } }),
            ),
          ),
        );
        return;
    }
  };
  router.onChange((r) => void show(r));
  // The printed URL opened in a tab already showing the page changes only the
  // fragment, which loads nothing: log in with it all the same.
  window.addEventListener('hashchange', () => {
    if (tokenFromHash(location.hash) === null) return;
    void logInFromUrl(api).then((error) => {
      if (error !== null) banner.show(error);
      else void show(router.current);
    });
  });
  await show(router.current);
}
