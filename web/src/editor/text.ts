// What the editor can open: UTF-8 text. Binary files (a NUL byte early on,
// or bytes that are not UTF-8) and huge files get a message instead.

/** Files above this open as a message with a download link. */
export const MAX_EDITOR_BYTES = 5 * 1024 * 1024;

/** How far to look for NUL bytes: git and most editors look at 8 KB. */
const SNIFF_BYTES = 8 * 1024;

export type Decoded = { ok: true; text: string; bom: boolean } | { ok: false; reason: 'binary' };

const UTF8_BOM = [0xef, 0xbb, 0xbf];

export function hasBom(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === UTF8_BOM[0] && bytes[1] === UTF8_BOM[1] && bytes[2] === UTF8_BOM[2];
}

/** The text of `bytes`, or why it is not text. A UTF-8 BOM is taken off and remembered. */
export function decodeText(bytes: Uint8Array): Decoded {
  const sniff = bytes.subarray(0, SNIFF_BYTES);
  if (sniff.includes(0)) return { ok: false, reason: 'binary' };
  const bom = hasBom(bytes);
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bom ? bytes.subarray(3) : bytes);
    return { ok: true, text, bom };
  } catch {
    return { ok: false, reason: 'binary' };
  }
}

const encoder = new TextEncoder();

/** The bytes to write for a buffer, with the BOM back when the file had one. */
export function encodeText(text: string, bom: boolean): Uint8Array {
  const body = encoder.encode(text);
  if (!bom) return body;
  const out = new Uint8Array(body.length + 3);
  out.set(UTF8_BOM, 0);
  out.set(body, 3);
  return out;
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const [n, unit] = bytes < 1024 * 1024 ? [bytes / 1024, 'KB'] : [bytes / 1024 / 1024, 'MB'];
  // "5 MB", "12.3 MB": no ".0".
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${unit}`;
}
