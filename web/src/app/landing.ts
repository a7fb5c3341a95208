// The landing page: the project list and the create form. State and
// decisions live in landing-state.ts; this file draws and does the I/O.

import { describeError, type Api } from '../api';
import { LANGUAGES, type Language, type ProjectSummary } from '../protocol/generated';
import type { Banner } from './banner';
import { confirmDialog } from './dialogs';
import { h, icon } from './dom';
import { initialLanding, landingReducer, type LandingAction, type LandingEffect, type LandingState } from './landing-state';

const POLL_MS = 5000;

export function languageLabel(id: string): string {
  return LANGUAGES.find((l) => l.id === id)?.label ?? id;
}

const STATE_WORDS: Record<ProjectSummary['state'], string> = {
  running: 'running',
  starting: 'starting…',
  stopping: 'stopping…',
  stopped: 'stopped',
  failed: 'failed',
};

export function mountLanding(
  root: HTMLElement,
  ctx: { api: Api; banner: Banner; navigate: (id: string) => void; onLogout: () => void },
): { dispose(): void } {
  const firstLanguage = (LANGUAGES[0]?.id ?? 'python') as Language;
  let state: LandingState = initialLanding(firstLanguage);
  let disposed = false;

  // ---- the form (drawn once: re-drawing would lose the caret) ----
  const idInput = h('input', {
    class: 'input',
    testid: 'project-id-input',
    attrs: {
      type: 'text',
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: 'my-app',
      maxlength: '63',
      'aria-label': 'Project name',
      'aria-describedby': 'project-id-hint',
    },
  });
  const languageSelect = h('select', { class: 'input', testid: 'project-language', attrs: { 'aria-label': 'Language' } });
  for (const lang of LANGUAGES) {
    languageSelect.append(h('option', { text: lang.label, attrs: { value: lang.id } }));
  }
  const createButton = h('button', { class: 'button primary', testid: 'project-create', text: 'Create', attrs: { type: 'submit' } });
  const idError = h('p', { class: 'form-error', testid: 'project-id-error', attrs: { role: 'status' } });
  const form = h(
    'form',
    { class: 'create-form', testid: 'project-create-form' },
    h('label', { class: 'field grow' }, h('span', { class: 'field-label', text: 'Name' }), idInput),
    h('label', { class: 'field' }, h('span', { class: 'field-label', text: 'Language' }), languageSelect),
    h('div', { class: 'field' }, h('span', { class: 'field-label', text: '\u00a0' }), createButton),
  );
  const hint = h('p', {
    class: 'muted small',
    text: '3 to 63 characters: lowercase letters, digits and "-", not at either end.',
    attrs: { id: 'project-id-hint' },
  });

  const listBody = h('div', { class: 'project-list', testid: 'project-list' });
  const listStatus = h('p', { class: 'muted', testid: 'project-list-status' });
  const logout = h('button', { class: 'button ghost', testid: 'logout', text: 'Log out', attrs: { type: 'button' } });

  const page = h(
    'div',
    { class: 'landing', testid: 'landing-page' },
    h(
      'header',
      { class: 'topbar' },
      h('span', { class: 'brand' }, h('span', { class: 'brand-mark', text: '{ }' }), 'cloudcode'),
      h('span', { class: 'spacer' }),
      logout,
    ),
    ctx.banner.el,
    h(
      'main',
      { class: 'landing-main' },
      h('section', { class: 'card' }, h('h2', { class: 'card-title', text: 'New project' }), form, hint, idError),
      h('section', { class: 'card' }, h('h2', { class: 'card-title', text: 'Projects' }), listStatus, listBody),
    ),
  );
  root.replaceChildren(page);
  idInput.focus();

  const dispatch = (action: LandingAction): void => {
    if (disposed) return;
    const [next, effects] = landingReducer(state, action);
    state = next;
    render();
    for (const effect of effects) void run(effect);
  };

  const run = async (effect: LandingEffect): Promise<void> => {
    switch (effect.kind) {
      case 'load':
        try {
          dispatch({ kind: 'loaded', projects: await ctx.api.listProjects() });
        } catch (e) {
          dispatch({ kind: 'load_failed', message: describeError(e) });
        }
        return;
      case 'create':
        try {
          dispatch({ kind: 'created', project: await ctx.api.createProject(effect.id, effect.language) });
        } catch (e) {
          dispatch({ kind: 'create_failed', message: describeError(e) });
        }
        return;
      case 'stop':
        try {
          await ctx.api.stopProject(effect.id);
          dispatch({ kind: 'stopped', id: effect.id });
        } catch (e) {
          dispatch({ kind: 'op_failed', id: effect.id, message: `Stopping ${effect.id} failed: ${describeError(e)}` });
        }
        return;
      case 'delete':
        try {
          await ctx.api.deleteProject(effect.id);
          dispatch({ kind: 'deleted', id: effect.id });
        } catch (e) {
          dispatch({ kind: 'op_failed', id: effect.id, message: `Deleting ${effect.id} failed: ${describeError(e)}` });
        }
        return;
      case 'navigate':
        ctx.navigate(effect.id);
        return;
    }
  };

  const askDelete = async (id: string): Promise<void> => {
    const ok = await confirmDialog({
      title: `Delete ${id}?`,
      message: h(
        'p',
        {},
        'The project ',
        h('strong', { text: id }),
        ' and all its files are deleted from storage, and its sandbox is stopped. This cannot be undone.',
      ),
      okLabel: 'Delete',
      danger: true,
    });
    if (ok) dispatch({ kind: 'delete_confirmed', id });
  };

  const row = (p: ProjectSummary): HTMLElement => {
    const busy = state.busy[p.id];
    const stateText = busy === 'stopping' ? 'stopping…' : busy === 'deleting' ? 'deleting…' : STATE_WORDS[p.state];
    const live = p.state === 'running' || p.state === 'starting';
    const openLink = h('a', {
      class: 'project-name',
      testid: 'project-open',
      text: p.id,
      attrs: { href: `/p/${encodeURIComponent(p.id)}` },
      on: {
        click: (ev) => {
          if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return; // let the browser open a tab
          ev.preventDefault();
          dispatch({ kind: 'open', id: p.id });
        },
      },
    });
    const stop = h('button', {
      class: 'button small',
      testid: 'project-stop',
      text: 'Stop',
      attrs: { type: 'button' },
      on: { click: () => dispatch({ kind: 'stop', id: p.id }) },
    });
    stop.disabled = !live || busy !== undefined;
    const del = h(
      'button',
      {
        class: 'button small danger-ghost',
        testid: 'project-delete',
        title: `Delete ${p.id}`,
        attrs: { type: 'button' },
        on: { click: () => void askDelete(p.id) },
      },
      icon('trash'),
      'Delete',
    );
    del.disabled = busy !== undefined;
    const badge = h('span', { class: `state-badge state-${busy ?? p.state}`, testid: 'project-state', text: stateText });
    if (p.state === 'failed' && p.detail) badge.title = p.detail;
    return h(
      'div',
      { class: 'project-row', testid: 'project-row', attrs: { 'data-id': p.id, 'data-state': p.state } },
      h('span', { class: 'project-cell name' }, openLink),
      h('span', { class: 'project-cell lang', testid: 'project-language-label', text: languageLabel(p.language) }),
      h('span', { class: 'project-cell state' }, badge),
      h('span', { class: 'project-cell actions' }, stop, del),
    );
  };

  const render = (): void => {
    idError.textContent = state.draftError ?? '';
    idInput.classList.toggle('invalid', state.draftError !== null);
    if (idInput.value !== state.draftId) idInput.value = state.draftId;
    languageSelect.value = state.draftLanguage;
    createButton.disabled = state.creating;
    createButton.textContent = state.creating ? 'Creating…' : 'Create';

    if (state.banner !== null) ctx.banner.show(state.banner);
    else if (state.loadError !== null) {
      ctx.banner.show(`The project list could not be loaded: ${state.loadError}`, {
        label: 'Retry',
        run: () => dispatch({ kind: 'load' }),
      });
    } else ctx.banner.clear();

    if (state.projects === null) {
      listStatus.textContent = state.loadError === null ? 'Loading projects…' : 'No project list (see above).';
      listBody.replaceChildren();
    } else if (state.projects.length === 0) {
      listStatus.textContent = 'No projects yet: create one above.';
      listBody.replaceChildren();
    } else {
      listStatus.textContent = '';
      listBody.replaceChildren(
        h(
          'div',
          { class: 'project-row head' },
          h('span', { class: 'project-cell name', text: 'Name' }),
          h('span', { class: 'project-cell lang', text: 'Language' }),
          h('span', { class: 'project-cell state', text: 'State' }),
          h('span', { class: 'project-cell actions' }),
        ),
        ...state.projects.map(row),
      );
    }
  };

  idInput.addEventListener('input', () => {
    const caret = idInput.selectionStart;
    dispatch({ kind: 'draft_id', value: idInput.value });
    if (caret !== null) idInput.setSelectionRange(caret, caret);
  });
  languageSelect.addEventListener('change', () => dispatch({ kind: 'draft_language', value: languageSelect.value as Language }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    dispatch({ kind: 'submit' });
  });
  logout.addEventListener('click', () => {
    ctx.api.logOut().then(ctx.onLogout, (e: unknown) => ctx.banner.show(`Logging out failed: ${describeError(e)}`));
  });

  // Keep states fresh (a project started from the TUI shows as running).
  const poll = setInterval(() => {
    if (document.visibilityState === 'visible') void run({ kind: 'load' });
  }, POLL_MS);

  render();
  dispatch({ kind: 'load' });

  return {
    dispose() {
      disposed = true;
      clearInterval(poll);
      ctx.banner.clear();
    },
  };
}
