// The preview pane: the user's app from the preview origin in a sandboxed
// frame. The app is hostile by assumption: it lives on another site (so it
// cannot toss cookies to the IDE), may not navigate the top window, and this
// page listens to none of its messages.

import { h, icon } from '../app/dom';
import { resolvePreviewTarget } from './url';

export interface PreviewPane {
  reload(): void;
  dispose(): void;
}

/** allow-same-origin lets the app use its own storage and cookies; it is safe
 * only because the preview origin is a different site from the IDE's. No
 * allow-top-navigation: the app cannot replace the IDE. */
const SANDBOX = 'allow-scripts allow-forms allow-same-origin allow-popups allow-modals allow-downloads';

export function mountPreview(el: HTMLElement, ctx: { previewUrl: string }): PreviewPane {
  const origin = (() => {
    try {
      return new URL(ctx.previewUrl).origin;
    } catch {
      return '';
    }
  })();
  const frame = h('iframe', {
    class: 'preview-frame',
    testid: 'preview-frame',
    title: 'Preview of the app',
    attrs: { sandbox: SANDBOX, referrerpolicy: 'no-referrer', allow: '' },
  });
  const input = h('input', {
    class: 'input small url-input',
    testid: 'preview-url',
    attrs: { type: 'text', spellcheck: 'false', autocomplete: 'off', 'aria-label': 'Preview path', value: '/' },
  });
  const reload = h(
    'button',
    { class: 'icon-button', testid: 'preview-reload', title: 'Reload', attrs: { type: 'button', 'aria-label': 'Reload preview' } },
    icon('reload'),
  );
  const openTab = h(
    'a',
    {
      class: 'icon-button',
      testid: 'preview-open',
      title: 'Open in a new tab',
      attrs: { target: '_blank', rel: 'noopener noreferrer', href: ctx.previewUrl, 'aria-label': 'Open preview in a new tab' },
    },
    icon('external'),
  );
  const originLabel = h('span', { class: 'url-origin', text: origin.replace(/^https?:\/\//, ''), title: origin });
  const form = h('form', { class: 'url-bar' }, originLabel, input);
  el.replaceChildren(h('div', { class: 'pane-toolbar' }, h('span', { class: 'pane-title', text: 'Preview' }), reload, form, openTab), frame);
  el.classList.add('preview-pane');
  el.dataset.testid = 'preview-pane';

  let current = ctx.previewUrl;
  const navigate = (url: string): void => {
    current = url;
    openTab.href = url;
    // Assigning src always navigates the frame, also to the same URL: that
    // is the reload (the frame's own location is cross-origin, unreadable).
    frame.src = url;
  };

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const target = resolvePreviewTarget(ctx.previewUrl, input.value);
    if (!target.ok) {
      input.classList.add('invalid');
      input.title = target.message;
      input.setCustomValidity(target.message);
      input.reportValidity();
      return;
    }
    input.classList.remove('invalid');
    input.title = '';
    input.setCustomValidity('');
    input.value = target.path;
    navigate(target.url);
  });
  input.addEventListener('input', () => {
    input.classList.remove('invalid');
    input.setCustomValidity('');
  });
  reload.addEventListener('click', () => navigate(current));

  if (origin !== '') navigate(ctx.previewUrl);

  return {
    reload: () => navigate(current),
    dispose: () => {
      frame.src = 'about:blank';
      el.replaceChildren();
    },
  };
}
