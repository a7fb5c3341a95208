// What the preview's URL bar accepts: a path (or a full URL) under the
// project's preview origin, nothing else. The pane must not become a way to
// frame arbitrary sites next to the IDE.

export type PreviewTarget = { ok: true; url: string; path: string } | { ok: false; message: string };

export function resolvePreviewTarget(previewUrl: string, typed: string): PreviewTarget {
  let base: URL;
  try {
    base = new URL(previewUrl);
  } catch {
    return { ok: false, message: 'The project has no preview address.' };
  }
  const text = typed.trim();
  let target: URL;
  try {
    if (/^[a-z][a-z0-9+.-]*:/i.test(text) || text.startsWith('//')) {
      target = new URL(text, base);
    } else {
      // A bare path; the browser would turn "\\host" into "//host", hence the
      // origin check below rather than string tests.
      target = new URL(text.startsWith('/') ? text : `/${text}`, base);
    }
  } catch {
    return { ok: false, message: `"${text}" is not an address.` };
  }
  if (target.origin !== base.origin) {
    return { ok: false, message: `Only addresses under ${base.origin} open in the preview.` };
  }
  return { ok: true, url: target.href, path: target.pathname + target.search + target.hash };
}
