// Renames made in the tree, told to the editor so its tabs follow the file
// instead of showing it deleted (the runner's events only say "removed" and
// "created"). Keyed by the client, so two IDEs on one page never mix.

type MoveListener = (from: string, to: string) => void;

const listeners = new WeakMap<object, Set<MoveListener>>();

export function onMoved(client: object, cb: MoveListener): () => void {
  let set = listeners.get(client);
  if (set === undefined) {
    set = new Set();
    listeners.set(client, set);
  }
  set.add(cb);
  return () => set.delete(cb);
}

export function announceMove(client: object, from: string, to: string): void {
  for (const cb of listeners.get(client) ?? []) cb(from, to);
}
