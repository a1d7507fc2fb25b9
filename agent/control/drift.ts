// A control edit rewrites the config file from the running config. When the file was edited
// on disk since the agent loaded it (and not reloaded yet), that rewrite would silently throw
// the operator's edit away: the edit is refused instead, naming what differs.

import { parse } from 'yaml';
import { formatPath, readConfigFile, type FileIdentity } from '../config/load.js';
import { ControlError, ControlErrorCode } from './protocol.js';

/** At most this many differing paths are named; the rest are counted. */
const MAX_NAMED = 8;

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null;
}

/** Paths (`sessions[0].enabled`) where two plain documents differ, shallowest first. */
export function differingPaths(a: unknown, b: unknown, at: PropertyKey[] = [], out: string[] = []): string[] {
  if (Object.is(a, b)) return out;
  if (!isRecord(a) || !isRecord(b) || Array.isArray(a) !== Array.isArray(b)) {
    out.push(formatPath(at));
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b) && a.length !== b.length) {
    out.push(`${formatPath(at)} (${a.length} entries loaded, ${b.length} on disk)`);
    return out;
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    const segment = Array.isArray(a) ? Number(key) : key;
    differingPaths((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], [...at, segment], out);
  }
  return out;
}

/**
 * Throws ControlError MF_CONTROL_CONFLICT when the file at `path` is no longer the one
 * `loaded` describes; `loadedRaw` is the document the agent parsed from it.
 */
export async function refuseIfChangedOnDisk(path: string, loaded: FileIdentity | undefined, loadedRaw: unknown): Promise<void> {
  if (loaded === undefined) return;
  let text: string;
  let now: FileIdentity;
  try {
    ({ text, file: now } = await readConfigFile(path));
  } catch (err) {
    throw new ControlError(ControlErrorCode.CONFLICT, `the config file changed since it was loaded (${(err as Error).message}); edit refused, nothing written`);
  }
  if (now.sha256 === loaded.sha256) return;
  let detail: string;
  try {
    const paths = differingPaths(loadedRaw, parse(text) as unknown);
    const named = paths.slice(0, MAX_NAMED).join(', ');
    detail = paths.length === 0
      ? 'only comments or formatting differ'
      : `differs at ${named}${paths.length > MAX_NAMED ? ` and ${paths.length - MAX_NAMED} more` : ''}`;
  } catch (err) {
    detail = `it no longer parses: ${(err as Error).message.split('\n')[0]}`;
  }
  throw new ControlError(
    ControlErrorCode.CONFLICT,
    `config file ${path} was changed on disk since it was loaded (${loaded.size} → ${now.size} bytes; ${detail}); ` +
      'edit refused and nothing written: reload it (SIGHUP, systemctl reload mirrorflow) or undo that change, then repeat the edit',
  );
}
