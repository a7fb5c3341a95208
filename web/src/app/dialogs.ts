// Modal dialogs on the native <dialog> element: focus is trapped and Escape
// cancels without any code of ours. The one dialog of the page: the landing
// page's confirmations, the tree's delete and replace, the editor's close
// with unsaved changes.

import { h } from './dom';

export interface Choice<T> {
  value: T;
  label: string;
  /** primary: the expected answer; danger: it destroys something (red). */
  kind?: 'primary' | 'danger' | 'plain';
  testid?: string;
}

export interface DialogOptions<T> {
  title?: string;
  message: string | Node;
  /** Left to right. */
  choices: ReadonlyArray<Choice<T>>;
  /** What Escape means. */
  cancel: T;
  /** The choice that has the focus when the dialog opens. */
  focus: T;
}

export interface OpenDialog {
  /** Closes the dialog without a choice (the question went away). */
  close(): void;
}

/**
 * Opens a modal dialog; `chosen` gets the person's choice, once (Escape
 * gives `cancel`). For views whose state says when a question is open:
 * they open it when the question appears and close it when it goes.
 */
export function openDialog<T>(opts: DialogOptions<T>, chosen: (value: T) => void): OpenDialog {
  let answered = false;
  const answer = (value: T): void => {
    if (answered) return;
    answered = true;
    if (dialog.open) dialog.close();
    dialog.remove();
    chosen(value);
  };
  const buttons = opts.choices.map((c) =>
    h('button', {
      class: c.kind === 'danger' ? 'button danger' : c.kind === 'primary' ? 'button primary' : 'button',
      ...(c.testid === undefined ? {} : { testid: c.testid }),
      text: c.label,
      attrs: { type: 'button' },
      on: { click: () => answer(c.value) },
    }),
  );
  const dialog = h(
    'dialog',
    { class: 'dialog', testid: 'confirm-dialog' },
    opts.title === undefined ? null : h('h2', { class: 'dialog-title', text: opts.title }),
    h('div', { class: 'dialog-body' }, opts.message),
    h('div', { class: 'dialog-buttons' }, ...buttons),
  );
  dialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    answer(opts.cancel);
  });
  document.body.append(dialog);
  dialog.showModal();
  buttons[opts.choices.findIndex((c) => c.value === opts.focus)]?.focus();
  return {
    close: () => {
      answered = true;
      if (dialog.open) dialog.close();
      dialog.remove();
    },
  };
}

export interface ConfirmOptions {
  title: string;
  message: string | Node;
  okLabel?: string;
  cancelLabel?: string;
  /** The action destroys something: the OK button is red, and the safe
   * choice has the focus. */
  danger?: boolean;
}

/** Resolves true when the person confirmed, false otherwise. */
export function confirmDialog(opts: ConfirmOptions): Promise<boolean> {
  return new Promise((resolve) => {
    openDialog(
      {
        title: opts.title,
        message: opts.message,
        choices: [
          { value: false, label: opts.cancelLabel ?? 'Cancel', testid: 'confirm-cancel' },
          { value: true, label: opts.okLabel ?? 'OK', kind: opts.danger ? 'danger' : 'primary', testid: 'confirm-ok' },
        ],
        cancel: false,
        focus: !opts.danger,
      },
      resolve,
    );
  });
}
