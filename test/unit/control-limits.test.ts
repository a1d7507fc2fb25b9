// The control socket against clients that misbehave (issue 13): closing early, pipelining
// without reading, endless lines, too many connections, silence. The agent must stay up,
// hold bounded memory, count what happened and keep serving everyone else.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../../agent/config/load.js';
import { controlRequest } from '../../agent/control/client.js';
import { ControlErrorCode, encodeMessage } from '../../agent/control/protocol.js';
import { ControlServer, type ControlHandler, type ControlLimits } from '../../agent/control/server.js';

const CONFIG = parseConfig(
  `agent: { vmId: h, metrics: { listen: "" } }
filters: [{ id: tf-1, ingressRules: [], egressRules: [] }]
sessions: [{ id: ts-1, priority: 1, filterId: tf-1, sources: [eth0], target: { address: 192.0.2.50 } }]
`,
  { localAddresses: ['127.0.0.1'] },
);
/** A status answer of ~8 KiB, so unsent answers add up quickly. */
const BIG_STATUS = { filler: 'x'.repeat(8 * 1024) };

const LIMITS: ControlLimits = { maxConnections: 4, maxLineBytes: 4096, maxQueuedLines: 4, maxUnsentBytes: 32 * 1024, idleMs: 2_000 };

let dir: string;
let socketPath: string;
let server: ControlServer;
let statusCalls = 0;

const handler: ControlHandler = {
  status: () => {
    statusCalls++;
    return BIG_STATUS;
  },
  config: () => CONFIG,
  rawConfig: () => ({}),
  apply: () => Promise.resolve(),
};

beforeEach(async () => {
  statusCalls = 0;
  dir = await mkdtemp(path.join(os.tmpdir(), 'mf-control-limits-'));
  socketPath = path.join(dir, 'control.sock');
  server = await ControlServer.listen({ socketPath, handler, limits: LIMITS });
});

afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath, () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything the server sends on `s` until it closes the connection. */
function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
  });
}

const request = (id: number) => encodeMessage({ id, op: 'status' });
const errorCount = (reason: string) => server.errors.get(reason as never) ?? 0;

/** Resolves once `read()` has stopped changing for `quietMs` (or rejects after timeoutMs). */
async function settled(read: () => number, quietMs = 300, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = read();
  let since = Date.now();
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    const now = read();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return now;
    }
  }
  throw new Error(`value still changing after ${timeoutMs} ms (${last})`);
}

describe('control socket: clients that go away early', () => {
  it('survives a client that sends a request and closes without reading (ECONNRESET / EPIPE), and counts it', async () => {
    for (let i = 0; i < 20; i++) {
      const s = await connect();
      s.on('error', () => undefined);
      // Two pipelined requests, then gone: the second answer hits a closed peer.
      s.write(request(1) + request(2));
      s.destroy();
    }
    await settled(() => statusCalls);
    // Every error is a counted reason; the agent still answers.
    // One error per client, each a reason a client causes by leaving (never the agent's fault).
    expect(errorCount('reset') + errorCount('broken_pipe')).toBe(20);
    expect(errorCount('other')).toBe(0);
    expect(await controlRequest(socketPath, 'status')).toEqual(BIG_STATUS);
    expect(await settled(() => server.connectionCount)).toBe(0);
  });

  it('survives a client that closes with its answers unread (the agent reads ECONNRESET)', async () => {
    const s = await connect();
    s.on('error', () => undefined);
    s.write(request(1));
    await settled(() => statusCalls);
    // Unread data in the client's queue: closing now resets the agent's side.
    s.write(request(2));
    s.destroy();
    await settled(() => statusCalls);
    expect(errorCount('reset') + errorCount('broken_pipe')).toBe(1);
    expect(await controlRequest(socketPath, 'status')).toEqual(BIG_STATUS);
  });

  it('answers a client that sends its request and half-closes', async () => {
    const s = await connect();
    const answer = readAll(s);
    s.end(request(7));
    const lines = (await answer).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ id: 7, ok: true });
  });
});

describe('control socket: bounded memory', () => {
  it('stops reading a client that pipelines requests without reading answers, then answers all of them in order', async () => {
    const s = await connect();
    const N = 5_000;
    let text = '';
    for (let i = 0; i < N; i++) text += request(i);
    s.write(text);
    const answeredWhileStuck = await settled(() => statusCalls);
    // Answers held: what fits in maxUnsentBytes and the kernel's socket buffers, not 5,000 × 8 KiB.
    expect(answeredWhileStuck).toBeLessThan(200);
    expect(answeredWhileStuck).toBeGreaterThan(0);
    const ids: number[] = [];
    let partial = '';
    s.setEncoding('utf8');
    await new Promise<void>((resolve) => {
      s.on('data', (d: string) => {
        partial += d;
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          ids.push((JSON.parse(partial.slice(0, nl)) as { id: number }).id);
          partial = partial.slice(nl + 1);
        }
        if (ids.length === N) resolve();
      });
    });
    expect(ids).toEqual(Array.from({ length: N }, (_, i) => i));
    s.destroy();
  });

  it('answers a line longer than maxLineBytes with an error and closes, reading no further', async () => {
    const s = await connect();
    const answer = readAll(s);
    // Sent in pieces, with no newline: the agent must not wait for one.
    for (let i = 0; i < 64; i++) s.write('x'.repeat(1024));
    const got = (await answer).trim().split('\n');
    expect(got).toHaveLength(1);
    expect(JSON.parse(got[0]!)).toMatchObject({ id: null, ok: false, error: { code: ControlErrorCode.BAD_REQUEST, message: `request line longer than ${LIMITS.maxLineBytes} bytes` } });
    expect(errorCount('line_too_long')).toBe(1);
    expect(statusCalls).toBe(0);
    expect(await controlRequest(socketPath, 'status')).toEqual(BIG_STATUS);
  });

  it('accepts a line of exactly maxLineBytes', async () => {
    const line = JSON.stringify({ id: 1, op: 'status', args: null, pad: '' });
    const padded = line.replace('"pad":""', `"pad":"${'p'.repeat(LIMITS.maxLineBytes - line.length)}"`);
    expect(padded.length).toBe(LIMITS.maxLineBytes);
    const s = await connect();
    const answer = readAll(s);
    s.end(`${padded}\n`);
    expect(JSON.parse((await answer).trim())).toMatchObject({ id: 1, ok: true });
  });

  it('refuses connections beyond maxConnections with an error, and serves again once they close', async () => {
    const held = await Promise.all(Array.from({ length: LIMITS.maxConnections }, connect));
    const extra = await connect();
    const refused = await readAll(extra);
    expect(JSON.parse(refused.trim())).toMatchObject({ ok: false, error: { code: ControlErrorCode.UNAVAILABLE } });
    expect(errorCount('too_many_connections')).toBe(1);
    for (const s of held) s.destroy();
    await settled(() => server.connectionCount);
    expect(server.connectionCount).toBe(0);
    expect(await controlRequest(socketPath, 'status')).toEqual(BIG_STATUS);
  });

  it('closes a connection whose client stops reading its answers for idleMs', async () => {
    const s = await connect();
    let text = '';
    for (let i = 0; i < 200; i++) text += request(i);
    s.write(text);
    // The client reads nothing, so it cannot see the close itself: watch the agent's side.
    const started = Date.now();
    while (server.connectionCount > 0 && Date.now() - started < LIMITS.idleMs + 5_000) await new Promise((r) => setTimeout(r, 50));
    expect(server.connectionCount).toBe(0);
    expect(errorCount('idle_timeout')).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(LIMITS.idleMs - 100);
    s.destroy();
  });

  it('closes a connection idle for idleMs', async () => {
    const s = await connect();
    const started = Date.now();
    await readAll(s);
    expect(Date.now() - started).toBeGreaterThanOrEqual(LIMITS.idleMs - 100);
    expect(errorCount('idle_timeout')).toBe(1);
  });
});
