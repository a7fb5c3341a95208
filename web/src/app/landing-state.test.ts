import { describe, expect, it } from 'vitest';
import type { ProjectSummary } from '../protocol/generated';
import { initialLanding, landingReducer, type LandingAction, type LandingEffect, type LandingState } from './landing-state';
import { projectIdProblem } from '../api';

const project = (id: string, created_ms = 1, state: ProjectSummary['state'] = 'stopped'): ProjectSummary => ({ id, language: 'python', created_ms, state });

function run(actions: LandingAction[], state: LandingState = initialLanding('python')): [LandingState, LandingEffect[]] {
  let effects: LandingEffect[] = [];
  for (const a of actions) [state, effects] = landingReducer(state, a);
  return [state, effects];
}

describe('project ids', () => {
  it('follow the server rule exactly', () => {
    for (const ok of ['abc', 'my-app-2', 'a'.repeat(63), '0x0']) expect(projectIdProblem(ok), ok).toBeNull();
    for (const bad of ['ab', 'a'.repeat(64), 'My-app', 'my_app', '-abc', 'abc-', 'ab c', 'ünï', 'a.b']) {
      expect(projectIdProblem(bad), bad).not.toBeNull();
    }
  });
});

describe('landing', () => {
  it('lists projects newest first', () => {
    const [state] = run([{ kind: 'loaded', projects: [project('old', 1), project('new', 5)] }]);
    expect(state.projects?.map((p) => p.id)).toEqual(['new', 'old']);
  });

  it('validates the name as typed and on submit', () => {
    let [state, effects] = run([{ kind: 'draft_id', value: 'My' }]);
    expect(state.draftId).toBe('my');
    expect(state.draftError).toBe('at least 3 characters');
    [state, effects] = run([{ kind: 'submit' }], state);
    expect(effects).toEqual([]);
    expect(state.draftError).toBe('The name needs at least 3 characters.');
    [state, effects] = run([{ kind: 'draft_id', value: 'my-app' }, { kind: 'draft_language', value: 'node-js' }, { kind: 'submit' }], state);
    expect(effects).toEqual([{ kind: 'create', id: 'my-app', language: 'node-js' }]);
    expect(state.creating).toBe(true);
    // A double click does not create twice.
    expect(run([{ kind: 'submit' }], state)[1]).toEqual([]);
  });

  it('refuses a name that exists, and opens what it created', () => {
    let [state, effects] = run([{ kind: 'loaded', projects: [project('taken')] }, { kind: 'draft_id', value: 'taken' }, { kind: 'submit' }]);
    expect(effects).toEqual([]);
    expect(state.draftError).toMatch(/already exists/);
    [state, effects] = run([{ kind: 'draft_id', value: 'fresh' }, { kind: 'submit' }, { kind: 'created', project: project('fresh', 9) }], state);
    expect(effects).toEqual([{ kind: 'navigate', id: 'fresh' }]);
    expect(state.projects?.[0]?.id).toBe('fresh');
    expect(state.draftId).toBe('');
  });

  it('shows what the server said when creating fails', () => {
    const [state] = run([{ kind: 'draft_id', value: 'abc' }, { kind: 'submit' }, { kind: 'create_failed', message: 'storage down (HTTP 503)' }]);
    expect(state).toMatchObject({ creating: false, draftError: 'storage down (HTTP 503)' });
  });

  it('stops and deletes one project at a time, and says when it failed', () => {
    let [state, effects] = run([{ kind: 'loaded', projects: [project('a', 1, 'running')] }, { kind: 'stop', id: 'a' }]);
    expect(effects).toEqual([{ kind: 'stop', id: 'a' }]);
    expect(run([{ kind: 'delete_confirmed', id: 'a' }], state)[1]).toEqual([]);
    [state, effects] = run([{ kind: 'stopped', id: 'a' }], state);
    expect(state.projects?.[0]?.state).toBe('stopped');
    [state, effects] = run([{ kind: 'delete_confirmed', id: 'a' }, { kind: 'op_failed', id: 'a', message: 'Deleting a failed: boom' }], state);
    expect(state.banner).toBe('Deleting a failed: boom');
    expect(state.busy).toEqual({});
    expect(effects).toEqual([{ kind: 'load' }]);
    [state] = run([{ kind: 'delete_confirmed', id: 'a' }, { kind: 'deleted', id: 'a' }], state);
    expect(state.projects).toEqual([]);
  });
});
