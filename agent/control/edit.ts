// Runtime edits as pure functions on the plain config document: each returns the whole
// next document (the input is never touched), which the agent then validates exactly like
// a config file, writes back and reloads. Limits, duplicates and references are therefore
// judged by the one schema, with the same messages as `mirrorflow validate`.

import { z } from 'zod';
import { formatPath } from '../config/load.js';
import { errorMap } from '../config/schema.js';
import { ControlError, ControlErrorCode } from './protocol.js';

export type RuleDirection = 'ingress' | 'egress';

export type Edit =
  | { op: 'session.start' | 'session.stop'; id: string }
  | { op: 'session.addSource' | 'session.removeSource'; id: string; interface: string }
  | { op: 'filter.addRule'; filterId: string; direction: RuleDirection; rule: Record<string, unknown> }
  | { op: 'filter.removeRule'; filterId: string; direction: RuleDirection; priority: number };

export type EditOperation = Edit['op'];

const name = z.string().min(1);
const direction = z.enum(['ingress', 'egress']);
const ARGS = {
  'session.start': z.strictObject({ id: name }),
  'session.stop': z.strictObject({ id: name }),
  'session.addSource': z.strictObject({ id: name, interface: name }),
  'session.removeSource': z.strictObject({ id: name, interface: name }),
  'filter.addRule': z.strictObject({ filterId: name, direction, rule: z.record(z.string(), z.unknown()) }),
  'filter.removeRule': z.strictObject({ filterId: name, direction, priority: z.number().int() }),
} as const;

export function isEditOperation(op: string): op is EditOperation {
  return Object.hasOwn(ARGS, op);
}

/** Checks the arguments of an edit operation; ControlError MF_CONTROL_BAD_REQUEST lists what is wrong. */
export function parseEdit(op: EditOperation, args: unknown): Edit {
  const result = ARGS[op].safeParse(args ?? {}, { error: errorMap });
  if (!result.success) {
    const issues = result.error.issues.flatMap((issue) =>
      issue.code === 'unrecognized_keys'
        ? issue.keys.map((key) => ({ path: formatPath(['args', ...issue.path, key]), message: 'unknown key' }))
        : [{ path: formatPath(['args', ...issue.path]), message: issue.message }],
    );
    const detail = issues.map((i) => `${i.path}: ${i.message}`).join('; ');
    throw new ControlError(ControlErrorCode.BAD_REQUEST, `bad arguments for ${op}: ${detail}`, issues);
  }
  return { op, ...result.data } as Edit;
}

type Doc = Record<string, unknown>;

function isRecord(x: unknown): x is Doc {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The list under `key`, created when the document leaves it out (the schema defaults it to []). */
function listOf(doc: Doc, key: string): unknown[] {
  const value = doc[key];
  if (Array.isArray(value)) return value;
  if (value === undefined) return (doc[key] = []);
  throw new ControlError(ControlErrorCode.FAILED, `the running config's ${key} is not a list`);
}

function findById(list: unknown[], id: string, what: string): Doc {
  const entry = list.find((e): e is Doc => isRecord(e) && e.id === id);
  if (entry) return entry;
  const ids = list.flatMap((e) => (isRecord(e) && typeof e.id === 'string' ? [e.id] : []));
  const known = ids.length === 0 ? `no ${what}s are defined` : `defined: ${ids.join(', ')}`;
  throw new ControlError(ControlErrorCode.NOT_FOUND, `no ${what} ${JSON.stringify(id)} (${known})`);
}

export interface EditResult {
  /** The whole next document; the input document is left as it was. */
  next: unknown;
  /** False when the document already was in the requested state (start a started session). */
  changed: boolean;
}

/**
 * Applies one edit to a copy of the plain config document. Throws ControlError
 * MF_CONTROL_NOT_FOUND when it names a session, filter, rule or source that does not exist.
 */
export function applyEdit(raw: unknown, edit: Edit): EditResult {
  if (!isRecord(raw)) throw new ControlError(ControlErrorCode.FAILED, 'the running config is not a mapping');
  const next = structuredClone(raw);
  switch (edit.op) {
    case 'session.start':
    case 'session.stop': {
      const session = findById(listOf(next, 'sessions'), edit.id, 'session');
      const enabled = edit.op === 'session.start';
      // A session without `enabled` is enabled (the schema's default).
      if ((session.enabled ?? true) === enabled) return { next: raw, changed: false };
      session.enabled = enabled;
      return { next, changed: true };
    }
    case 'session.addSource': {
      const session = findById(listOf(next, 'sessions'), edit.id, 'session');
      listOf(session, 'sources').push(edit.interface);
      return { next, changed: true };
    }
    case 'session.removeSource': {
      const session = findById(listOf(next, 'sessions'), edit.id, 'session');
      const sources = listOf(session, 'sources');
      const at = sources.indexOf(edit.interface);
      if (at < 0) {
        throw new ControlError(
          ControlErrorCode.NOT_FOUND,
          `session ${JSON.stringify(edit.id)} has no source ${JSON.stringify(edit.interface)} (sources: ${sources.join(', ')})`,
        );
      }
      sources.splice(at, 1);
      return { next, changed: true };
    }
    case 'filter.addRule': {
      const filter = findById(listOf(next, 'filters'), edit.filterId, 'filter');
      listOf(filter, `${edit.direction}Rules`).push(structuredClone(edit.rule));
      return { next, changed: true };
    }
    case 'filter.removeRule': {
      const filter = findById(listOf(next, 'filters'), edit.filterId, 'filter');
      const key = `${edit.direction}Rules`;
      const rules = listOf(filter, key);
      const at = rules.findIndex((r) => isRecord(r) && r.priority === edit.priority);
      if (at < 0) {
        throw new ControlError(
          ControlErrorCode.NOT_FOUND,
          `filter ${JSON.stringify(edit.filterId)} has no ${key} rule with priority ${edit.priority}`,
        );
      }
      rules.splice(at, 1);
      return { next, changed: true };
    }
  }
}
