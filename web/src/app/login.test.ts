import { describe, expect, it } from 'vitest';
import { hashWithoutToken, tokenFromHash } from './login';

describe('login from the URL fragment', () => {
  it('finds the token and removes only it', () => {
    expect(tokenFromHash('#token=abc123')).toBe('abc123');
    expect(tokenFromHash('#x=1&token=abc')).toBe('abc');
    expect(tokenFromHash('#token=')).toBeNull();
    expect(tokenFromHash('')).toBeNull();
    expect(hashWithoutToken('#token=abc')).toBe('');
    expect(hashWithoutToken('#x=1&token=abc')).toBe('#x=1');
  });
});
