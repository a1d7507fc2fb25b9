// Config text → validated, defaulted, deeply frozen Config (SPEC §1), or a ConfigError
// listing every problem found, each as `<path>: <reason>`.

import { createHash } from 'node:crypto';
import { constants as fsConstants, type Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError, ConfigReadError, fileErrorReason, type ConfigIssue } from '../errors.js';
import { createConfigSchema, errorMap } from './schema.js';
import type { Config } from './types.js';

export { formatIssues } from '../errors.js';

export interface ParseOptions {
  /** This host's addresses (a target among them is refused); default: os.networkInterfaces(). */
  localAddresses?: readonly string[];
  /** Where the text came from, for the error message (a file path). */
  source?: string;
}

const ROOT = '(root)';
const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `sessions[0].target.address`; keys that are not identifiers as `["odd key"]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (typeof segment === 'string' && IDENTIFIER.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(String(segment))}]`;
  }
  return out === '' ? ROOT : out;
}

function hostAddresses(): string[] {
  return Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address));
}

function toIssues(issues: readonly z.core.$ZodIssue[]): ConfigIssue[] {
  return issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((key) => ({ path: formatPath([...issue.path, key]), message: 'unknown key' }))
      : [{ path: formatPath(issue.path), message: issue.message }],
  );
}

/** The key as written at `offset` (quoted or plain), for duplicate-key messages. */
function keyAt(text: string, offset: number): string {
  const m = /^(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^:\s,{}[\]]+)/.exec(text.slice(offset));
  return m === null ? '' : m[0].startsWith('"') || m[0].startsWith("'") ? m[0] : JSON.stringify(m[0]);
}

/** YAML (or JSON) text → plain data, or the syntax problems with line and column. */
function parseText(text: string): { data: unknown } | { issues: ConfigIssue[] } {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length > 0) {
    return {
      issues: problems.map((e) => {
        const pos = e.linePos?.[0];
        const reason =
          e.code === 'DUPLICATE_KEY'
            ? `duplicate key ${keyAt(text, e.pos[0])}`
            : (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '');
        return { path: pos === undefined ? ROOT : `line ${pos.line}, column ${pos.col}`, message: reason };
      }),
    };
  }
  try {
    return { data: doc.toJS({ maxAliasCount: 100 }) };
  } catch (err) {
    return { issues: [{ path: ROOT, message: (err as Error).message }] };
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** What a config file was when it was read: compared before a control edit overwrites it. */
export interface FileIdentity {
  sha256: string;
  size: number;
  mtimeMs: number;
}

/** A validated config and the plain document it came from (before defaults). */
export interface ConfigDocument {
  config: Config;
  raw: unknown;
  /** Set when the document was read from a file. */
  file?: FileIdentity;
}

/** Validates config text (YAML or JSON) and keeps the plain document for write-back. */
export function parseConfigDocument(text: string, opts: ParseOptions = {}): ConfigDocument {
  const parsed = parseText(text);
  if ('issues' in parsed) throw new ConfigError(parsed.issues, opts.source);
  if (parsed.data === null || parsed.data === undefined) {
    throw new ConfigError(
      [{ path: ROOT, message: 'the document is empty; expected a mapping with agent, filters, sessions, flowLogs' }],
      opts.source,
    );
  }
  const schema = createConfigSchema({ localAddresses: opts.localAddresses ?? hostAddresses() });
  const result = schema.safeParse(parsed.data, { error: errorMap });
  if (!result.success) throw new ConfigError(toIssues(result.error.issues), opts.source);
  return { config: deepFreeze(result.data), raw: parsed.data };
}

/** Validates config text (YAML or JSON). Throws ConfigError with every issue found. */
export function parseConfig(text: string, opts: ParseOptions = {}): Config {
  return parseConfigDocument(text, opts).config;
}

const WORLD_WRITABLE = 0o002;
/** A real config is a few KiB; anything bigger is a mistake (a log, a disk image) and is not read. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/** What a file that is not a regular file is, for the refusal. */
function kindOf(st: Stats): string | undefined {
  if (st.isFile()) return undefined;
  if (st.isDirectory()) return 'it is a directory';
  if (st.isFIFO()) return 'it is a FIFO (named pipe), not a regular file';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'it is a device, not a regular file';
  if (st.isSocket()) return 'it is a socket, not a regular file';
  return 'it is not a regular file';
}

/**
 * The bytes of a config file, never blocking: opened with O_NONBLOCK (a FIFO would block
 * open() until a writer came), checked with fstat before any read (only regular files of
 * at most MAX_CONFIG_BYTES), and read no further than the limit even if the file grows.
 * Running as root, a file anyone may write is refused: whoever edits it chooses what root
 * captures and where the copies go.
 */
export async function readConfigFile(path: string): Promise<{ text: string; file: FileIdentity }> {
  let file;
  try {
    file = await open(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new ConfigReadError(path, fileErrorReason(err), err);
  }
  try {
    const st = await file.stat();
    const kind = kindOf(st);
    if (kind !== undefined) throw new ConfigReadError(path, kind);
    if (process.getuid?.() === 0 && (st.mode & WORLD_WRITABLE) !== 0) {
      throw new ConfigReadError(path, `it is world-writable (mode ${(st.mode & 0o777).toString(8)}); run chmod o-w ${path}`);
    }
    if (st.size > MAX_CONFIG_BYTES) throw new ConfigReadError(path, `it is ${st.size} bytes; the limit is ${MAX_CONFIG_BYTES}`);
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let used = 0;
    for (;;) {
      const { bytesRead } = await file.read(buf, used, buf.length - used, used);
      if (bytesRead === 0) break;
      used += bytesRead;
      if (used > MAX_CONFIG_BYTES) throw new ConfigReadError(path, `it grew past ${MAX_CONFIG_BYTES} bytes while being read`);
    }
    const bytes = buf.subarray(0, used);
    return { text: bytes.toString('utf8'), file: { sha256: createHash('sha256').update(bytes).digest('hex'), size: used, mtimeMs: st.mtimeMs } };
  } catch (err) {
    if (err instanceof ConfigReadError) throw err;
    throw new ConfigReadError(path, (err as Error).message, err);
  } finally {
    await file.close();
  }
}

/** Reads and validates a config file. Throws ConfigReadError (MF_CONFIG_READ) or ConfigError. */
export async function loadConfigDocument(path: string, opts: ParseOptions = {}): Promise<ConfigDocument> {
  const { text, file } = await readConfigFile(path);
  return { ...parseConfigDocument(text, { source: path, ...opts }), file };
}

/** Reads and validates a config file; see loadConfigDocument. */
export async function loadConfig(path: string, opts: ParseOptions = {}): Promise<Config> {
  return (await loadConfigDocument(path, opts)).config;
}
