// What the agent's interface watcher compares each second to notice that a source interface
// went down and up, was deleted, re-created or appeared.
import { readFile } from 'node:fs/promises';

export const MISSING = 'missing';

/**
 * What the watcher compares: the interface's kernel index and its count of carrier changes,
 * as "ifindex/changes". Deletion and re-creation change the index (a new life: capture and
 * programs must be set up again); down/up changes only the count (see sameLife).
 * (Names are checked by the config schema before they reach a path.)
 */
export async function interfaceState(name: string): Promise<string> {
  // Only a missing file means a missing interface: any other failure (EMFILE when descriptors
  // run out) says nothing about the interface and is thrown, so it is not taken for a change.
  const absent = (fallback: string) => (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENODEV') return fallback;
    throw err;
  };
  const dir = `/sys/class/net/${name}`;
  const [index, changes] = await Promise.all([
    readFile(`${dir}/ifindex`, 'utf8').catch(absent(MISSING)),
    // Some devices have no carrier_changes; their ifindex alone identifies the life.
    readFile(`${dir}/carrier_changes`, 'utf8').catch(absent('')),
  ]);
  return index === MISSING ? MISSING : `${index.trim()}/${changes.trim()}`;
}


/**
 * True when two interfaceState() values are the same life of an interface (same index,
 * present both times): only its carrier went down and up. A packet socket bound to it and
 * its TC filters survive that.
 */
export function sameLife(before: string, now: string): boolean {
  if (before === MISSING || now === MISSING) return false;
  return before.split('/')[0] === now.split('/')[0];
}
