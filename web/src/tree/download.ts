// Saves a workspace file to the user's computer: read it over the socket,
// hand the bytes to the browser as a Blob behind an `<a download>`.
// Shared by the tree and the editor's "cannot open this file" message.

import type { RunnerClient } from '../protocol/client';
import { baseName } from './paths';

export async function downloadFile(client: Pick<RunnerClient, 'readFile'>, path: string): Promise<void> {
  const { data } = await client.readFile(path);
  saveBytes(data, baseName(path));
}

export function saveBytes(data: Uint8Array, name: string): void {
  const url = URL.createObjectURL(new Blob([data as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.rel = 'noopener';
  a.style.display = 'none';
  document.body.append(a);
  a.click();
  a.remove();
  // The download has taken the URL by the next task; free the bytes after.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
