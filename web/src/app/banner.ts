// The error banner: every failure the page cannot handle by itself is said
// here, in words, instead of leaving a blank or silent page.

import { h, icon } from './dom';

export interface Banner {
  el: HTMLElement;
  show(message: string, action?: { label: string; run: () => void }): void;
  clear(): void;
}

export function createBanner(): Banner {
  const text = h('span', { class: 'banner-text', testid: 'error-banner-text' });
  const actions = h('span', { class: 'banner-actions' });
  const dismiss = h(
    'button',
    { class: 'icon-button', title: 'Dismiss', testid: 'error-banner-dismiss', attrs: { type: 'button', 'aria-label': 'Dismiss' } },
    icon('close'),
  );
  const el = h('div', { class: 'banner', testid: 'error-banner', attrs: { role: 'alert' } }, text, actions, dismiss);
  el.hidden = true;
  const clear = (): void => {
    el.hidden = true;
    text.textContent = '';
    actions.replaceChildren();
  };
  dismiss.addEventListener('click', clear);
  return {
    el,
    show(message, action) {
      text.textContent = message;
      actions.replaceChildren();
      if (action !== undefined) {
        actions.append(
          h('button', {
            class: 'button small',
            text: action.label,
            testid: 'error-banner-action',
            attrs: { type: 'button' },
            on: { click: () => action.run() },
          }),
        );
      }
      el.hidden = false;
    },
    clear,
  };
}
