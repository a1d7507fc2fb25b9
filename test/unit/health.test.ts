// Pool health checks (agent/mirror/health.ts) against loopback: a TCP listener that goes
// away and comes back (hysteresis: out after unhealthyAfter failed probes in a row, back
// after healthyAfter passed ones, one log line per change), and ICMP echo over raw sockets
// to 127.0.0.1 and ::1 (root), which answer.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { PoolHealth } from '../../agent/mirror/health.js';
import type { HealthCheck } from '../../agent/config/types.js';

const lines: string[] = [];
const log = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });

/** Collects rounds and changes; `next(n)` resolves after n more rounds. */
function watch(members: string[], port: number, family: 4 | 6, check: HealthCheck) {
  const rounds: boolean[][] = [];
  const changes: number[] = [];
  let waiting: { until: number; resolve: () => void } | undefined;
  const health = new PoolHealth({
    session: 'ts-h', members, port, family, check, log,
    onChange: (mask) => changes.push(mask),
    onRound: (passed) => {
      rounds.push([...passed]);
      if (waiting && rounds.length >= waiting.until) waiting.resolve();
    },
  });
  const next = (n: number) => new Promise<void>((resolve) => (waiting = { until: rounds.length + n, resolve }));
  return { health, rounds, changes, next };
}

async function listen(port = 0): Promise<net.Server> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

let stop: (() => void) | undefined;
afterEach(() => stop?.());

describe('PoolHealth', () => {
  it('tcp: out after unhealthyAfter failed probes, back after healthyAfter passed ones, one log line each', async () => {
    let server = await listen();
    const port = (server.address() as net.AddressInfo).port;
    const w = watch(['127.0.0.1', '127.0.0.2'], 4789, 4, { type: 'tcp', port, interval: 1, unhealthyAfter: 2, healthyAfter: 2 });
    stop = () => w.health.stop();
    // 127.0.0.2 has no listener on the port (the server is bound to 127.0.0.1 only).
    w.health.start();
    await w.next(2);
    expect(w.rounds.slice(0, 2)).toEqual([[true, false], [true, false]]);
    expect(w.changes).toEqual([0b01]);
    expect(w.health.isHealthy(1)).toBe(false);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await w.next(1);
    // One failed probe is not enough.
    expect(w.health.healthy).toBe(0b01);
    await w.next(1);
    expect(w.changes).toEqual([0b01, 0b00]);
    server = await listen(port);
    await w.next(2);
    expect(w.changes).toEqual([0b01, 0b00, 0b01]);
    server.close();
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; target: string });
    expect(logged.filter((l) => l.msg.includes('failed its health check')).map((l) => l.target)).toEqual(['127.0.0.2:4789', '127.0.0.1:4789']);
    expect(logged.filter((l) => l.msg.includes('passed its health check again')).map((l) => l.target)).toEqual(['127.0.0.1:4789']);
  }, 20_000);

  // Loopback has one IPv6 address: that member alone (PoolHealth does not need two).
  it.each([[4, ['127.0.0.1', '127.0.0.3']], [6, ['::1']]] as const)('icmp over IPv%i: members that answer echo stay healthy', async (family, members) => {
    const w = watch([...members], 4789, family, { type: 'icmp', interval: 1, unhealthyAfter: 1, healthyAfter: 1 });
    stop = () => w.health.stop();
    w.health.start();
    await w.next(2);
    expect(w.rounds).toEqual([members.map(() => true), members.map(() => true)]);
    expect(w.changes).toEqual([]);
  }, 20_000);

  /** Blocks the event loop, as a burst of capture or a GC pause in the agent would. */
  const stall = (ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
  };

  it('tcp: a probe whose connect completed while the loop was stalled past its timeout passes', async () => {
    const server = await listen();
    const port = (server.address() as net.AddressInfo).port;
    // interval 0.2 s: each probe waits 100 ms.
    const w = watch(['127.0.0.1'], 4789, 4, { type: 'tcp', port, interval: 0.2, unhealthyAfter: 1, healthyAfter: 1 });
    stop = () => {
      w.health.stop();
      server.close();
    };
    w.health.start();
    // The connect is issued on the next tick; loopback completes it at once in the kernel.
    await new Promise<void>((resolve) => process.nextTick(resolve));
    stall(300);
    await w.next(1);
    expect(w.rounds[0]).toEqual([true]);
    expect(w.changes).toEqual([]);
  }, 20_000);

  it('icmp: an echo reply waiting in the socket when a stalled loop wakes up past the timeout counts', async () => {
    const w = watch(['127.0.0.1'], 4789, 4, { type: 'icmp', interval: 0.2, unhealthyAfter: 1, healthyAfter: 1 });
    stop = () => w.health.stop();
    w.health.start();
    // The request is on its way; the reply arrives while the loop is stalled beyond the
    // 100 ms wait.
    stall(300);
    await w.next(1);
    expect(w.rounds[0]).toEqual([true]);
    expect(w.changes).toEqual([]);
  }, 20_000);

  it('none: never probes, always healthy', () => {
    const w = watch(['127.0.0.1', '127.0.0.2'], 4789, 4, { type: 'none', interval: 1, unhealthyAfter: 1, healthyAfter: 1 });
    w.health.start();
    w.health.stop();
    expect(w.health.healthy).toBe(0b11);
    expect(w.rounds).toEqual([]);
  });
});
