// The landing page's state and its pure reducer: the project list, the
// create form, and what is in flight. I/O happens in landing.ts from the
// effects returned here.

import { projectIdProblem } from '../api';
import type { Language, ProjectSummary } from '../protocol/generated';

export interface LandingState {
  /** null until the first answer. */
  projects: ProjectSummary[] | null;
  /** Why the list could not be loaded (the list keeps its last content). */
  loadError: string | null;
  /** Per project: the operation in flight. */
  busy: Record<string, 'stopping' | 'deleting' | 'opening'>;
  draftId: string;
  draftLanguage: Language;
  /** Shown under the id field; only after the person typed or submitted. */
  draftError: string | null;
  creating: boolean;
  /** An operation that failed, said in words. */
  banner: string | null;
}

export type LandingAction =
  | { kind: 'load' }
  | { kind: 'loaded'; projects: ProjectSummary[] }
  | { kind: 'load_failed'; message: string }
  | { kind: 'draft_id'; value: string }
  | { kind: 'draft_language'; value: Language }
  | { kind: 'submit' }
  | { kind: 'created'; project: ProjectSummary }
  | { kind: 'create_failed'; message: string }
  | { kind: 'open'; id: string }
  | { kind: 'stop'; id: string }
  | { kind: 'stopped'; id: string }
  | { kind: 'delete_confirmed'; id: string }
  | { kind: 'deleted'; id: string }
  | { kind: 'op_failed'; id: string; message: string }
  | { kind: 'dismiss_banner' };

export type LandingEffect =
  | { kind: 'load' }
  | { kind: 'create'; id: string; language: Language }
  | { kind: 'stop'; id: string }
  | { kind: 'delete'; id: string }
  | { kind: 'navigate'; id: string };

export function initialLanding(defaultLanguage: Language): LandingState {
  return {
    projects: null,
    loadError: null,
    busy: {},
    draftId: '',
    draftLanguage: defaultLanguage,
    draftError: null,
    creating: false,
    banner: null,
  };
}

function withoutBusy(busy: LandingState['busy'], id: string): LandingState['busy'] {
  const next = { ...busy };
  delete next[id];
  return next;
}

function sortProjects(projects: ProjectSummary[]): ProjectSummary[] {
  return [...projects].sort((a, b) => b.created_ms - a.created_ms || a.id.localeCompare(b.id));
}

export function landingReducer(state: LandingState, action: LandingAction): [LandingState, LandingEffect[]] {
  switch (action.kind) {
    case 'load':
      return [state, [{ kind: 'load' }]];
    case 'loaded':
      return [{ ...state, projects: sortProjects(action.projects), loadError: null }, []];
    case 'load_failed':
      return [{ ...state, loadError: action.message }, []];
    case 'draft_id': {
      // Lowercase as typed: the rule allows only lowercase, and "MyApp"
      // most likely means "myapp".
      const value = action.value.toLowerCase();
      const problem = value === '' ? null : projectIdProblem(value);
      return [{ ...state, draftId: value, draftError: problem }, []];
    }
    case 'draft_language':
      return [{ ...state, draftLanguage: action.value }, []];
    case 'submit': {
      if (state.creating) return [state, []];
      const id = state.draftId.trim();
      const problem = projectIdProblem(id);
      if (problem !== null) return [{ ...state, draftError: `The name needs ${problem}.` }, []];
      if (state.projects?.some((p) => p.id === id)) {
        return [{ ...state, draftError: `A project named ${id} already exists.` }, []];
      }
      return [{ ...state, creating: true, draftError: null, banner: null }, [{ kind: 'create', id, language: state.draftLanguage }]];
    }
    case 'created':
      return [
        {
          ...state,
          creating: false,
          draftId: '',
          draftError: null,
          projects: sortProjects([...(state.projects ?? []).filter((p) => p.id !== action.project.id), action.project]),
        },
        [{ kind: 'navigate', id: action.project.id }],
      ];
    case 'create_failed':
      return [{ ...state, creating: false, draftError: action.message }, []];
    case 'open':
      return [{ ...state, busy: { ...state.busy, [action.id]: 'opening' } }, [{ kind: 'navigate', id: action.id }]];
    case 'stop':
      if (state.busy[action.id] !== undefined) return [state, []];
      return [{ ...state, busy: { ...state.busy, [action.id]: 'stopping' }, banner: null }, [{ kind: 'stop', id: action.id }]];
    case 'stopped':
      return [
        {
          ...state,
          busy: withoutBusy(state.busy, action.id),
          projects: state.projects?.map((p) => (p.id === action.id ? { ...p, state: 'stopped' as const } : p)) ?? null,
        },
        [{ kind: 'load' }],
      ];
    case 'delete_confirmed':
      if (state.busy[action.id] !== undefined) return [state, []];
      return [{ ...state, busy: { ...state.busy, [action.id]: 'deleting' }, banner: null }, [{ kind: 'delete', id: action.id }]];
    case 'deleted':
      return [
        {
          ...state,
          busy: withoutBusy(state.busy, action.id),
          projects: state.projects?.filter((p) => p.id !== action.id) ?? null,
        },
        [],
      ];
    case 'op_failed':
      return [{ ...state, busy: withoutBusy(state.busy, action.id), banner: action.message }, [{ kind: 'load' }]];
    case 'dismiss_banner':
      return [{ ...state, banner: null }, []];
  }
}
