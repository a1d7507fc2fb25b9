// Writes a configuration back to its file so that a restart keeps runtime changes: the new
// text goes to a temp file in the same directory, is fsynced, renamed over the old file and
// the directory is fsynced, so a crash leaves either the old file or the new one, never half.

import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, realpath, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import type { FileIdentity } from './load.js';

/** Mode of a config file the agent creates: it may name targets and accounts. */
const NEW_FILE_MODE = 0o600;
const HEADER = '# Written by mirrorflow after a change over the control socket; comments are not kept.\n';

/** The file a path names, following symlinks, or the path itself when it does not exist yet. */
async function resolveTarget(file: string): Promise<string> {
  try {
    return await realpath(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return file;
    throw err;
  }
}

async function existingMode(file: string): Promise<number> {
  try {
    return (await stat(file)).mode & 0o777;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return NEW_FILE_MODE;
    throw err;
  }
}

/**
 * Replaces the file at `file` (the target of a symlink when it is one) with `raw` as YAML,
 * atomically. An existing file keeps its mode; a new one gets 0600. Returns what the file
 * now is, so a later edit can tell whether someone else changed it since.
 */
export async function writeConfigAtomic(file: string, raw: unknown): Promise<FileIdentity> {
  const target = await resolveTarget(file);
  const dir = path.dirname(target);
  const mode = await existingMode(target);
  const text = HEADER + stringify(raw, { lineWidth: 0 });
  const temp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', mode);
  let identity: FileIdentity;
  try {
    await handle.writeFile(text, 'utf8');
    // open() applied the umask; chmod gives the exact mode.
    await handle.chmod(mode);
    await handle.sync();
    const { mtimeMs } = await handle.stat();
    await handle.close();
    await rename(temp, target);
    identity = { sha256: createHash('sha256').update(text).digest('hex'), size: Buffer.byteLength(text), mtimeMs };
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
  return identity;
}

/**
 * The plain document of a config file (YAML or JSON), unvalidated: what runtime edits start
 * from, so fields left out of the file (a derived vni, defaults) stay left out.
 */
export async function readRawConfig(file: string): Promise<unknown> {
  return parse(await readFile(file, 'utf8')) as unknown;
}
