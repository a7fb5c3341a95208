// Login: the server prints `http://host/#token=TOKEN`. The token is in the
// fragment so it never reaches a server log; the page trades it for an
// HttpOnly session cookie and removes it from the address bar and history.

import { describeError, type Api } from '../api';
import { h } from './dom';

/** The token in a `#token=...` fragment (other fragment parameters allowed). */
export function tokenFromHash(hash: string): string | null {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const token = params.get('token');
  return token === null || token.trim() === '' ? null : token.trim();
}

/** The fragment without its token (other parameters kept). */
export function hashWithoutToken(hash: string): string {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  params.delete('token');
  const rest = params.toString();
  return rest === '' ? '' : `#${rest}`;
}

/** Logs in with a token from the URL, if there is one. Returns the error to
 * show when that failed. */
export async function logInFromUrl(api: Api): Promise<string | null> {
  const token = tokenFromHash(location.hash);
  if (token === null) return null;
  // Gone from the address bar and this history entry before anything else
  // can fail, so a screenshot or a shared URL never shows it.
  history.replaceState(history.state, '', location.pathname + location.search + hashWithoutToken(location.hash));
  try {
    await api.logIn(token);
    return null;
  } catch (e) {
    return `Logging in with the token from the address failed: ${describeError(e)}`;
  }
}

/** A form to paste the token into; resolves once logged in. */
export function showLoginForm(root: HTMLElement, api: Api, initialError: string | null): Promise<void> {
  return new Promise((resolve) => {
    const input = h('input', {
      class: 'input',
      testid: 'login-token',
      attrs: { type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'API token', 'aria-label': 'API token' },
    });
    const error = h('p', { class: 'form-error', testid: 'login-error', attrs: { role: 'alert' } });
    error.textContent = initialError ?? '';
    const submit = h('button', { class: 'button primary', testid: 'login-submit', text: 'Log in', attrs: { type: 'submit' } });
    const form = h(
      'form',
      { class: 'login-form' },
      h('h1', { class: 'brand' }, h('span', { class: 'brand-mark', text: '{ }' }), 'cloudcode'),
      h('p', {
        class: 'muted',
        text: 'Open the address cloudcode-server printed when it started (it ends in #token=…), or paste its token here.',
      }),
      h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'Token' }), input),
      error,
      h('div', { class: 'form-buttons' }, submit),
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (token === '') {
        error.textContent = 'Paste the token first.';
        return;
      }
      submit.disabled = true;
      error.textContent = '';
      api.logIn(token).then(
        () => {
          input.value = '';
          window.removeEventListener('hashchange', onHash);
          resolve();
        },
        (e: unknown) => {
          submit.disabled = false;
          error.textContent =
            e instanceof Error && 'status' in e && e.status === 401 ? 'That token was not accepted.' : describeError(e);
          input.select();
        },
      );
    });
    // The printed URL pasted into this very tab changes only the fragment:
    // no reload, so log in with it here.
    const onHash = (): void => {
      if (tokenFromHash(location.hash) === null) return;
      submit.disabled = true;
      error.textContent = '';
      void logInFromUrl(api).then((failed) => {
        submit.disabled = false;
        if (failed === null) {
          window.removeEventListener('hashchange', onHash);
          resolve();
        } else error.textContent = failed;
      });
    };
    window.addEventListener('hashchange', onHash);
    root.replaceChildren(h('main', { class: 'login-page', testid: 'login-page' }, form));
    input.focus();
  });
}
