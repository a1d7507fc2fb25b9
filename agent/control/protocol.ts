// The control socket's wire protocol: newline-delimited JSON over a Unix domain socket.
// Request  {"id": 1, "op": "session.stop", "args": {"id": "ts-1"}}
// Response {"id": 1, "ok": true, "result": {...}}
//       or {"id": 1, "ok": false, "error": {"code": "MF_CONFIG_INVALID", "message": "...", "issues": [...]}}

import type { ConfigIssue } from '../errors.js';

/** Every operation the socket answers; the edit operations change the config file. */
export const OPERATIONS = [
  'status',
  'sessions.list',
  'filters.list',
  'flowlogs.list',
  'session.start',
  'session.stop',
  'session.addSource',
  'session.removeSource',
  'filter.addRule',
  'filter.removeRule',
] as const;

export type Operation = (typeof OPERATIONS)[number];

export function isOperation(op: unknown): op is Operation {
  return typeof op === 'string' && (OPERATIONS as readonly string[]).includes(op);
}

export type RequestId = number | string | null;

export interface ControlRequest {
  id: RequestId;
  op: string;
  args?: unknown;
}

export interface ControlErrorBody {
  code: string;
  message: string;
  issues?: readonly ConfigIssue[];
}

export type ControlResponse =
  | { id: RequestId; ok: true; result: unknown }
  | { id: RequestId; ok: false; error: ControlErrorBody };

export const ControlErrorCode = {
  /** Not JSON, not a request object, or arguments of the wrong shape. */
  BAD_REQUEST: 'MF_CONTROL_BAD_REQUEST',
  /** An `op` the agent does not know. */
  UNKNOWN_OP: 'MF_CONTROL_UNKNOWN_OP',
  /** The session, filter, rule or source named in the arguments does not exist. */
  NOT_FOUND: 'MF_CONTROL_NOT_FOUND',
  /** The agent failed while carrying out a valid request (writing the file, reloading). */
  FAILED: 'MF_CONTROL_FAILED',
  /** The config file was changed on disk since the agent loaded it: an edit would overwrite that change. */
  CONFLICT: 'MF_CONTROL_CONFLICT',
  /** No agent answers on the socket, or it closed the connection without answering. */
  UNAVAILABLE: 'MF_CONTROL_UNAVAILABLE',
} as const;

/** A request the agent refused; `code` is one of ControlErrorCode or MF_CONFIG_INVALID. */
export class ControlError extends Error {
  readonly code: string;
  readonly issues: readonly ConfigIssue[] | undefined;

  constructor(code: string, message: string, issues?: readonly ConfigIssue[], options?: ErrorOptions) {
    super(message, options);
    this.name = 'ControlError';
    this.code = code;
    this.issues = issues;
  }
}

/** One message as one line. JSON.stringify never emits a raw newline, so framing is safe. */
export function encodeMessage(message: ControlRequest | ControlResponse): string {
  return `${JSON.stringify(message)}\n`;
}
