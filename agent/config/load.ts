// Config text → validated, defaulted, deeply frozen Config (SPEC §1), or a ConfigError
// listing every problem found, each as `<path>: <reason>`.

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

/** A validated config and the plain document it came from (before defaults). */
export interface ConfigDocument {
  config: Config;
  raw: unknown;
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

/**
 * Reads and validates a config file. Throws ConfigReadError (MF_CONFIG_READ) or ConfigError.
 * Running as root, a file anyone may write is refused: whoever edits it chooses what root
 * captures and where the copies go.
 */
export async function loadConfigDocument(path: string, opts: ParseOptions = {}): Promise<ConfigDocument> {
  let text: string;
  try {
    const file = await open(path, 'r');
    try {
      const st = await file.stat();
      if (st.isDirectory()) throw Object.assign(new Error('it is a directory'), { code: 'EISDIR' });
      if (process.getuid?.() === 0 && (st.mode & WORLD_WRITABLE) !== 0) {
        throw new ConfigReadError(path, `it is world-writable (mode ${(st.mode & 0o777).toString(8)}); run chmod o-w ${path}`);
      }
      text = await file.readFile('utf8');
    } finally {
      await file.close();
    }
  } catch (err) {
    if (err instanceof ConfigReadError) throw err;
    throw new ConfigReadError(path, fileErrorReason(err), err);
  }
  return parseConfigDocument(text, { source: path, ...opts });
}

/** Reads and validates a config file; see loadConfigDocument. */
export async function loadConfig(path: string, opts: ParseOptions = {}): Promise<Config> {
  return (await loadConfigDocument(path, opts)).config;
}
