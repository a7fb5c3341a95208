// The page's two routes, with pushState navigation.

export type Route = { kind: 'landing' } | { kind: 'ide'; project: string } | { kind: 'not_found'; path: string };

export function parseRoute(pathname: string): Route {
  if (pathname === '/' || pathname === '/index.html' || pathname === '') return { kind: 'landing' };
  const m = /^\/p\/([^/]+)\/?$/.exec(pathname);
  if (m !== null && m[1] !== undefined) {
    let project: string;
    try {
      project = decodeURIComponent(m[1]);
    } catch {
      return { kind: 'not_found', path: pathname };
    }
    return { kind: 'ide', project };
  }
  return { kind: 'not_found', path: pathname };
}

export function routePath(route: Route): string {
  switch (route.kind) {
    case 'landing':
      return '/';
    case 'ide':
      return `/p/${encodeURIComponent(route.project)}`;
    case 'not_found':
      return route.path;
  }
}

export class Router {
  private readonly listeners = new Set<(r: Route) => void>();

  constructor() {
    window.addEventListener('popstate', () => this.emit());
  }

  get current(): Route {
    return parseRoute(location.pathname);
  }

  navigate(route: Route): void {
    const path = routePath(route);
    if (path !== location.pathname) history.pushState(null, '', path);
    this.emit();
  }

  onChange(cb: (r: Route) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  private emit(): void {
    const r = this.current;
    for (const cb of [...this.listeners]) cb(r);
  }
}
