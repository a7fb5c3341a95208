// Errors from the runner client, in words for the user. The client rejects
// with a `ProtocolError` carrying a `code`; it is read structurally so these
// helpers work with any error value.

export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Codes whose meaning is the whole story; the runner's message adds nothing but the path. */
const REASONS: Record<string, string> = {
  disconnected: 'the connection to the sandbox dropped; try again once it is back',
  timeout: 'the sandbox did not answer in time',
  not_found: 'it does not exist (any more)',
  already_exists: 'something with that name already exists',
  conflict: 'the file changed in the meantime',
  not_a_directory: 'a part of the path is not a folder',
  is_a_directory: 'it is a folder',
  directory_not_empty: 'the folder is not empty',
  outside_workspace: 'a link on the way leads out of the workspace',
};

/**
 * `"<what>: <why>."`: a fixed reason for the common codes, else the error's
 * own message (storage failures, refused names, sizes say more that way).
 */
export function errorText(err: unknown, what: string): string {
  const code = errorCode(err);
  const reason = code !== undefined ? REASONS[code] : undefined;
  if (reason !== undefined) return `${what}: ${reason}.`;
  const detail = err instanceof Error ? err.message : typeof err === 'string' ? err : '';
  return detail !== '' ? `${what}: ${detail.replace(/\.$/, '')}.` : `${what}.`;
}
