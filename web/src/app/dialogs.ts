// Modal dialogs on the native <dialog> element: focus is trapped and Escape
// cancels without any code of ours.

import { h } from './dom';

export interface ConfirmOptions {
  title: string;
  message: string | Node;
  okLabel?: string;
  cancelLabel?: string;
  /** The action destroys something: the OK button is red. */
  danger?: boolean;
}

/** Resolves true when the person confirmed, false otherwise. */
export function confirmDialog(opts: ConfirmOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h('button', {
      class: opts.danger ? 'button danger' : 'button primary',
      testid: 'confirm-ok',
      text: opts.okLabel ?? 'OK',
      attrs: { type: 'submit', value: 'ok' },
    });
    const cancel = h('button', {
      class: 'button',
      testid: 'confirm-cancel',
      text: opts.cancelLabel ?? 'Cancel',
      attrs: { type: 'button' },
    });
    const form = h(
      'form',
      { attrs: { method: 'dialog' } },
      h('h2', { class: 'dialog-title', text: opts.title }),
      h('div', { class: 'dialog-body' }, opts.message),
      h('div', { class: 'dialog-buttons' }, cancel, ok),
    );
    const dialog = h('dialog', { class: 'dialog', testid: 'confirm-dialog' }, form);
    let confirmed = false;
    ok.addEventListener('click', () => {
      confirmed = true;
    });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(confirmed);
    });
    document.body.append(dialog);
    dialog.showModal();
    // The safe choice has the focus for destructive actions.
    (opts.danger ? cancel : ok).focus();
  });
}
