// What the agent's interface watcher compares each second to notice that a source interface
// went down and up, was deleted, re-created or appeared.
import { readFile } from 'node:fs/promises';

export const MISSING = 'missing';

/**
 * What identifies one life of an interface: its kernel index and its count of carrier
 * changes. Deletion, re-creation and down/up all change it; a capture handle does not
 * always survive them, so the agent reopens capture when it changes.
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

