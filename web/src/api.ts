// The control plane's REST API as the page uses it. The page is served by
// cloudcode-server from the API origin, so every call is same-origin and the
// session travels as an HttpOnly cookie the page never sees; state-changing
// calls also carry the session's CSRF value, which another site cannot read.

import {
  CSRF_HEADER,
  type ApiErrorBody,
  type ProjectList,
  type ProjectStatus,
  type ProjectSummary,
  type SessionInfo,
  type StartedProject,
} from './protocol/generated';

/** A failed API call. `status` 0 means the network failed (no HTTP answer). */
export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The server's rule (server/src/projects.rs, ProjectId::parse): returns why
 * an id is refused, or null when it is fine. */
export function projectIdProblem(id: string): string | null {
  if (id.length < 3) return 'at least 3 characters';
  if (id.length > 63) return 'at most 63 characters';
  if (!/^[a-z0-9-]+$/.test(id)) return 'only lowercase letters a-z, digits and "-"';
  if (id.startsWith('-') || id.endsWith('-')) return 'cannot start or end with "-"';
  return null;
}

/** What to tell a person about a failure, in words. */
export function describeError(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 0) return `Cannot reach the server (${e.message}). Check that cloudcode-server is running and the network is up.`;
    if (e.status === 401) return 'You are not logged in (or the session was revoked). Log in again with the token the server printed.';
    if (e.status === 403 && e.code === 'csrf') return 'The server refused the request (its CSRF check failed). Reload the page.';
    return `${e.message} (HTTP ${e.status}${e.code ? `, ${e.code}` : ''})`;
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

function isApiErrorBody(v: unknown): v is ApiErrorBody {
  return typeof v === 'object' && v !== null && typeof (v as ApiErrorBody).code === 'string' && typeof (v as ApiErrorBody).message === 'string';
}

export class Api {
  private csrf: string | undefined;
  private readonly fetchImpl: typeof fetch;

  constructor(
    private readonly base = '',
    fetchImpl?: typeof fetch,
  ) {
    // Bound: a bare `fetch` called as a method of another object throws.
    this.fetchImpl = fetchImpl ?? ((input, init) => fetch(input, init));
  }

  /** True when this browser holds a session (and learns its CSRF value). */
  async hasSession(): Promise<boolean> {
    try {
      const info = await this.call<SessionInfo>('GET', '/api/session');
      this.csrf = info.csrf;
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return false;
      throw e;
    }
  }

  /** Trades the API token for a session cookie. The token is sent once, in
   * a header; the page keeps nothing of it. */
  async logIn(token: string): Promise<void> {
    const info = await this.call<SessionInfo | undefined>('POST', '/api/session', undefined, {
      authorization: `Bearer ${token.trim()}`,
    });
    if (info !== undefined && typeof info.csrf === 'string') this.csrf = info.csrf;
    else if (!(await this.hasSession())) throw new ApiError(401, 'no_session', 'the server did not keep the session');
  }

  async logOut(): Promise<void> {
    await this.call<void>('DELETE', '/api/session');
    this.csrf = undefined;
  }

  async listProjects(): Promise<ProjectSummary[]> {
    return (await this.call<ProjectList>('GET', '/api/projects')).projects;
  }

  createProject(id: string, language: string): Promise<ProjectSummary> {
    return this.call<ProjectSummary>('POST', '/api/projects', { id, language });
  }

  async deleteProject(id: string): Promise<void> {
    await this.call<void>('DELETE', `/api/projects/${encodeURIComponent(id)}`);
  }

  /** Starts (or finds running) the project's sandbox; answers with a fresh
   * runner token each time, which is how reconnects get one. */
  startProject(id: string): Promise<StartedProject> {
    return this.call<StartedProject>('POST', `/api/projects/${encodeURIComponent(id)}/start`);
  }

  async stopProject(id: string): Promise<void> {
    await this.call<unknown>('POST', `/api/projects/${encodeURIComponent(id)}/stop`);
  }

  projectStatus(id: string): Promise<ProjectStatus> {
    return this.call<ProjectStatus>('GET', `/api/projects/${encodeURIComponent(id)}/status`);
  }

  private async call<T>(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json', ...extraHeaders };
    if (method !== 'GET' && this.csrf !== undefined) headers[CSRF_HEADER] = this.csrf;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await this.fetchImpl(this.base + path, {
        method,
        headers,
        credentials: 'same-origin',
        cache: 'no-store',
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
    }
    const text = await response.text().catch(() => '');
    let parsed: unknown = undefined;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (!response.ok) {
      if (isApiErrorBody(parsed)) throw new ApiError(response.status, parsed.code, parsed.message);
      // A proxy's page or an empty answer: still say something useful.
      const snippet = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 160);
      throw new ApiError(response.status, '', snippet || response.statusText || `HTTP ${response.status}`);
    }
    return parsed as T;
  }
}
