// Workspace paths as the runner spells them: relative, `/`-separated, `""`
// is the root. Pure string helpers shared by the tree and the editor.

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** True when `path` is `ancestor` itself or lies inside it. */
export function isWithin(path: string, ancestor: string): boolean {
  if (ancestor === '') return true;
  return path === ancestor || path.startsWith(`${ancestor}/`);
}

/** Every ancestor directory of `path`, root first, excluding `path`. */
export function ancestorsOf(path: string): string[] {
  const out = [''];
  let at = 0;
  for (;;) {
    const slash = path.indexOf('/', at);
    if (slash < 0) break;
    out.push(path.slice(0, slash));
    at = slash + 1;
  }
  return out;
}

const encoder = new TextEncoder();

/**
 * Why `name` cannot be a file or folder name, or null when it can. Mirrors the
 * runner's path rules (proto/src/path.rs) for one component, so the user
 * hears about a bad name before a round trip.
 */
export function nameProblem(name: string): string | null {
  if (name.trim() === '') return 'A name is required.';
  if (name === '.' || name === '..') return `"${name}" is not a valid name.`;
  if (name.includes('/')) return 'A name cannot contain "/".';
  if (name.includes('\\')) return 'A name cannot contain "\\".';
  // Control characters, and the bidirectional-override and zero-width
  // characters the runner refuses (they make names look like other names).
  if (/[\u0000-\u001f\u007f-\u009f\u200b\u200c\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb]/u.test(name)) {
    return 'A name cannot contain control or invisible characters.';
  }
  if (name.startsWith('.cloudcode-tmp-')) return 'Names starting with ".cloudcode-tmp-" are reserved.';
  if (encoder.encode(name).length > 255) return 'A name can be at most 255 bytes long.';
  return null;
}
