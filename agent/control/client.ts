// The client side of the control socket, for `mirrorflow session …` and `mirrorflow status`.

import net from 'node:net';
import { stringify } from 'yaml';
import { ControlError, ControlErrorCode, encodeMessage, type ControlResponse } from './protocol.js';

const DEFAULT_TIMEOUT_MS = 15_000;

const CONNECT_HINTS: Record<string, string> = {
  ENOENT: 'no control socket there (is mirrorflow running?)',
  ECONNREFUSED: 'nothing is listening (is mirrorflow running?)',
  EACCES: 'permission denied (the control socket is for root only)',
  EPERM: 'permission denied (the control socket is for root only)',
};

/**
 * Sends one request and resolves with its result. Rejects with ControlError: the agent's
 * refusal (its code, message and validation issues), or MF_CONTROL_UNAVAILABLE when the
 * socket cannot be reached or does not answer within `timeoutMs`.
 */
export function controlRequest(
  socketPath: string,
  op: string,
  args?: unknown,
  opts: { timeoutMs?: number } = {},
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let buffered = '';
    let settled = false;
    const finish = (err: Error | undefined, result?: unknown) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err) reject(err);
      else resolve(result);
    };
    const unavailable = (reason: string, cause?: unknown) =>
      new ControlError(ControlErrorCode.UNAVAILABLE, `control socket ${socketPath}: ${reason}`, undefined, { cause });

    socket.setTimeout(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, () => finish(unavailable('no answer in time')));
    socket.once('connect', () => socket.write(encodeMessage({ id: 1, op, args })));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      finish(unavailable(CONNECT_HINTS[err.code ?? ''] ?? err.message, err)),
    );
    socket.on('close', () => finish(unavailable('the agent closed the connection without answering')));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const end = buffered.indexOf('\n');
      if (end < 0) return;
      let response: ControlResponse;
      try {
        response = JSON.parse(buffered.slice(0, end)) as ControlResponse;
      } catch {
        finish(unavailable('the answer is not JSON'));
        return;
      }
      if (response.ok) finish(undefined, response.result);
      else finish(new ControlError(response.error.code, response.error.message, response.error.issues));
    });
  });
}

/** `mirrorflow session list`: one line per session, widest value per column. */
export function formatSessionList(result: unknown): string {
  const sessions = (result as { sessions?: unknown }).sessions;
  if (!Array.isArray(sessions) || sessions.length === 0) return 'no sessions\n';
  const header = ['ID', 'NAME', 'ENABLED', 'PRIORITY', 'VNI', 'FILTER', 'SOURCES', 'TARGET'];
  const rows = sessions.map((s: Record<string, any>) => [
    String(s.id),
    String(s.name),
    s.enabled ? 'yes' : 'no',
    String(s.priority),
    String(s.vni),
    String(s.filterId),
    Array.isArray(s.sources) ? s.sources.join(',') : '',
    s.target ? `${s.target.address}:${s.target.port}` : '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

/** Any other result (status, filters, flow logs, an edit's outcome) as YAML, which reads well. */
export function formatResult(result: unknown): string {
  return stringify(result, { lineWidth: 0 });
}

/** A refusal as the CLI prints it: the message, then one `path: reason` line per issue. */
export function formatControlError(err: ControlError): string {
  const lines = [`${err.code}: ${err.message.split('\n')[0]}`];
  for (const issue of err.issues ?? []) lines.push(`  ${issue.path}: ${issue.message}`);
  return lines.join('\n') + '\n';
}
