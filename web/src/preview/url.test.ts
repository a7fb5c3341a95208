import { describe, expect, it } from 'vitest';
import { resolvePreviewTarget } from './url';

const base = 'http://alpha.preview.localhost:8080/';

describe('preview URL bar', () => {
  it('takes paths under the preview origin', () => {
    expect(resolvePreviewTarget(base, '')).toEqual({ ok: true, url: base, path: '/' });
    expect(resolvePreviewTarget(base, 'api/items?x=1#top')).toEqual({
      ok: true,
      url: 'http://alpha.preview.localhost:8080/api/items?x=1#top',
      path: '/api/items?x=1#top',
    });
    expect(resolvePreviewTarget(base, ' /a b ')).toMatchObject({ ok: true, path: '/a%20b' });
    expect(resolvePreviewTarget(base, 'http://alpha.preview.localhost:8080/x')).toMatchObject({ ok: true, path: '/x' });
  });

  it('refuses anything that leaves it', () => {
    for (const typed of [
      'https://evil.example/',
      '//evil.example/x',
      '/\\evil.example/x',
      '\\\\evil.example',
      'javascript:alert(1)',
      'data:text/html,hi',
      'http://alpha.ide.localhost:8080/',
      'http://alpha.preview.localhost:9999/',
    ]) {
      expect(resolvePreviewTarget(base, typed).ok, typed).toBe(false);
    }
  });
});
