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

const REASONS: Record<string, string> = {
  disconnected: 'the connection to the sandbox dropped; try again once it is back',
  timeout: 'the sandbox did not answer in time',
  not_found: 'it does not exist (any more)',
  already_exists: 'something with that name already exists',
  conflict: 'the file changed in the meantime',
  not_a_directory: 'a part of the path is not a folder',
  is_a_directory: 'it is a folder',
  directory_not_empty: 'the folder is not empty',
  too_large: 'it is larger than the sandbox accepts',
  outside_workspace: 'it leads out of the workspace through a link',
  invalid_path: 'the workspace does not accept that name',
  storage: 'storage failed',
};

/** `"<what>: <why>."`, with the runner's own message when it adds detail. */
export function errorText(err: unknown, what: string): string {
  const code = errorCode(err);
  const reason = code !== undefined ? REASONS[code] : undefined;
  const detail = err instanceof Error ? err.message : typeof err === 'string' ? err : '';
  if (reason !== undefined) {
    return detail !== '' && code !== 'disconnected' && code !== 'timeout'
      ? `${what}: ${reason} (${detail}).`
      : `${what}: ${reason}.`;
  }
  return detail !== '' ? `${what}: ${detail}.` : `${what}.`;
}
