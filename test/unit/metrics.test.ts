// The /metrics endpoint: promtool (Prometheus' own checker) accepts the text, counters stay
// monotonic across reloads, the RTT histogram covers 10 µs..10 s, and health/readiness answer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createRegistry, RTT_BUCKETS_SECONDS, type MetricsSource, type RttRecorder, type Sample } from '../../agent/metrics/metrics.js';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { readFileSync } from 'node:fs';
import { serveMetrics } from '../../agent/metrics/http.js';
import { Totals } from '../../agent/metrics/totals.js';
import { configuredSeries, PlaneTotals, type PlaneCounters } from '../../agent/metrics/counters.js';
import type { RuleSet } from '../../agent/rules/compile.js';
import { matchReasonName } from '../../agent/rules/match.js';

function promtool(text: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: stdout + stderr }),
    );
    child.stdin!.end(text);
  });
}

const capture = new Totals();
let live: Sample[] = [];
let ready = true;

const source: MetricsSource = {
  capturePackets: () => capture.with(live),
  captureDrops: () => [[{ interface: 'eth0' }, 3]],
  malformedPackets: () => [[{ reason: 'ipv4-bad-ihl' }, 2]],
  unsegmentedPackets: () => [[{ interface: 'eth0', direction: 'out' }, 0]],
  notMirroredPackets: () => [[{ interface: 'eth0', reason: 'no-match' }, 7]],
  mirrorPackets: () => [[{ session: 'ts-1' }, 10]],
  mirrorBytes: () => [[{ session: 'ts-1' }, 1000]],
  mirrorTruncated: () => [[{ session: 'ts-1' }, 1]],
  mirrorSendErrors: () => [[{ session: 'ts-1' }, 0]],
  mirrorDropped: () => [[{ session: 'ts-1' }, 0]],
  mirrorBudgetDrops: () => [[{ session: 'ts-1' }, 3]],
  sessionsActive: () => 1,
  tcpRetransmissions: () => [[{ interface: 'eth0' }, 4]],
  tcpSynRetransmissions: () => [[{ interface: 'eth0' }, 1]],
  tcpZeroWindows: () => [[{ interface: 'eth0' }, 2]],
  tcpResets: () => [[{ interface: 'eth0' }, 5]],
  tcpOutOfOrder: () => [[{ interface: 'eth0' }, 0]],
  flowsActive: () => [[{ flow_log: 'fl-1' }, 12]],
  flowLogRecords: () => [[{ flow_log: 'fl-1', status: 'OK' }, 30], [{ flow_log: 'fl-1', status: 'NODATA' }, 1]],
  flowTableEvictions: () => [[{ flow_log: 'fl-1' }, 0]],
  sinkErrors: () => [[{ flow_log: 'fl-1' }, 0]],
  sinkDropped: () => [[{ flow_log: 'fl-1' }, 0]],
  vxlanDeviceErrors: () => [[{ device: 'mf-vxlan-4789' }, 3]],
  configReloads: () => [[{ result: 'ok' }, 2], [{ result: 'refused' }, 1]],
  interfaceChanges: () => [[{ interface: 'eth0' }, 1]],
  controlErrors: () => [[{ reason: 'reset' }, 1]],
};

describe('metrics endpoint', () => {
  let server: Server;
  let base: string;
  let rtt: RttRecorder;

  beforeAll(async () => {
    const created = createRegistry(source);
    rtt = created.rtt;
    server = await serveMetrics('127.0.0.1:0', created.registry, () => ready);
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const scrape = async () => (await fetch(`${base}/metrics`)).text();
  const value = (text: string, series: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(series + ' '));
    if (line === undefined) throw new Error(`no series ${series}`);
    return Number(line.slice(series.length + 1));
  };

  it('serves text that promtool check metrics accepts, with every SPEC §5 name', async () => {
    rtt.client(0.000212);
    rtt.server(0.03);
    const text = await scrape();
    const check = await promtool(text);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
    for (const name of [
      'capture_packets_total', 'capture_drops_total', 'mirror_packets_total', 'mirror_bytes_total',
      'mirror_truncated_packets_total', 'mirror_send_errors_total', 'tcp_retransmissions_total',
      'tcp_syn_retransmissions_total', 'tcp_zero_window_total', 'tcp_resets_total', 'tcp_rtt_seconds',
      'flows_active', 'flow_log_records_total', 'flow_table_evictions_total', 'process_resident_memory_bytes',
      'mirror_budget_drops_total',
    ]) {
      expect(text, name).toContain(`# TYPE mirrorflow_${name} `);
    }
  });

  it('reports the running build: mirrorflow_build_info{version} 1, version from package.json', async () => {
    const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const line = (await scrape()).split('\n').find((l) => l.startsWith('mirrorflow_build_info{'));
    expect(line).toMatch(new RegExp(`^mirrorflow_build_info\\{version="${version.replaceAll('.', '\\.')}",commit="[^"]+"\\} 1$`));
  });

  it('names in the skipped-packets HELP exactly the reason label values the matcher produces', async () => {
    const help = (await scrape()).split('\n').find((l) => l.startsWith('# HELP mirrorflow_mirror_skipped_packets_total '));
    // Every negative matchPacket() code but malformed (counted by mirrorflow_packets_malformed_total).
    const produced = [-1, -2, -3, -4, -5, -6].map(matchReasonName);
    expect(produced).not.toContain('unknown');
    const listed = /by reason: ([^(]+) \(/.exec(help ?? '')?.[1]?.split(', ');
    expect(listed?.sort()).toEqual([...produced].sort());
  });

  it('reports shed copies per session', async () => {
    expect(value(await scrape(), 'mirrorflow_mirror_budget_drops_total{session="ts-1"}')).toBe(3);
  });

  it('has RTT buckets from 10 µs to 10 s and puts each sample in its bucket', async () => {
    expect(RTT_BUCKETS_SECONDS[0]).toBe(1e-5);
    expect(RTT_BUCKETS_SECONDS.at(-1)).toBe(10);
    const before = await scrape();
    rtt.client(0.0003);
    const after = await scrape();
    const le = (b: string) => `mirrorflow_tcp_rtt_seconds_bucket{le="${b}",side="client"}`;
    expect(value(after, le('0.00025')) - value(before, le('0.00025'))).toBe(0);
    expect(value(after, le('0.0005')) - value(before, le('0.0005'))).toBe(1);
    expect(value(after, 'mirrorflow_tcp_rtt_seconds_count{side="client"}') - value(before, 'mirrorflow_tcp_rtt_seconds_count{side="client"}')).toBe(1);
  });

  it('keeps counters monotonic when a generation is retired and a new one starts from zero', async () => {
    const series = 'mirrorflow_capture_packets_total{interface="eth0",direction="in"}';
    live = [[{ interface: 'eth0', direction: 'in' }, 40]];
    const first = value(await scrape(), series);
    capture.fold(live);
    live = [[{ interface: 'eth0', direction: 'in' }, 2]];
    const second = value(await scrape(), series);
    expect(first).toBe(40);
    expect(second).toBe(42);
  });

  it('answers /healthz always and /readyz only when capture is attached', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    ready = false;
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    ready = true;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });

  it('answers HEAD like GET without a body, and every other method with 405 and an Allow header', async () => {
    const head = await fetch(`${base}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      const res = await fetch(`${base}/metrics`, { method, body: method === 'POST' || method === 'PUT' ? 'x' : undefined });
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow'), method).toBe('GET, HEAD');
    }
    // fetch() refuses TRACE; a raw request shows the agent does too.
    expect(await rawRequest(server, 'TRACE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 405 [\s\S]*allow: GET, HEAD/i);
  });
});

/** Writes `text` on a new connection and resolves with everything the server sent until it closed. */
function rawRequest(server: Server, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1', () => socket.write(text));
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (got += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}

/** Opens a connection that sends `head` and then nothing; resolves once it is connected. */
function stalled(port: number, head: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(head);
      resolve(socket);
    });
    // Read whatever the server answers (a 408), so its close is seen.
    socket.resume();
    socket.on('error', reject);
  });
}

const closed = (socket: net.Socket): Promise<void> =>
  socket.destroyed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));

const connectionsOf = (server: Server): Promise<number> =>
  new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

describe('metrics endpoint under slow and many clients', () => {
  const LIMITS = { maxConnections: 8, headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 300, idleTimeoutMs: 1_000 };
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = await serveMetrics('127.0.0.1:0', createRegistry(source).registry, () => true, LIMITS);
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('closes a client that never finishes its request head (slowloris) after headersTimeout', async () => {
    const started = Date.now();
    const slow = await Promise.all(Array.from({ length: 4 }, () => stalled(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ')));
    await Promise.all(slow.map(closed));
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(LIMITS.headersTimeoutMs);
    expect(took).toBeLessThan(LIMITS.headersTimeoutMs + 2_000);
    expect(await connectionsOf(server)).toBe(0);
  });

  it('closes a connection that sends nothing at all after the idle timeout', async () => {
    const silent = await stalled(port, '');
    const started = Date.now();
    await closed(silent);
    expect(Date.now() - started).toBeLessThan(LIMITS.idleTimeoutMs + 2_000);
  });

  it('holds at most maxConnections however many clients connect, and answers again once they are gone', async () => {
    const clients = await Promise.all(Array.from({ length: 200 }, () => stalled(port, 'GET /healthz HTTP/1.1\r\n')));
    // The ones beyond the limit are closed as soon as they are accepted.
    expect(await connectionsOf(server)).toBeLessThanOrEqual(LIMITS.maxConnections);
    await Promise.all(clients.map(closed));
    expect(await connectionsOf(server)).toBe(0);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
  });
});

describe('docs/metrics.md', () => {
  /** Every metric the agent defines itself: the registry minus prom-client's process and Node.js metrics. */
  const agentMetrics = (): string[] => {
    const defaults = new Registry();
    collectDefaultMetrics({ register: defaults, prefix: 'mirrorflow_' });
    const builtIn = new Set(defaults.getMetricsAsArray().map((m) => m.name));
    return createRegistry(source).registry.getMetricsAsArray().map((m) => m.name).filter((n) => !builtIn.has(n)).sort();
  };
  /** Metric names in the first column of the reference's tables. */
  const documented = (): string[] => {
    const text = readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');
    return [...text.matchAll(/^\| `(mirrorflow_[a-z_]+)`/gm)].map((m) => m[1]!).sort();
  };

  it('lists every metric the registry defines, and none it does not', () => {
    const registry = agentMetrics();
    expect(registry.length).toBeGreaterThanOrEqual(30);
    expect(documented()).toEqual(registry);
  });
});

describe('PlaneTotals (counters across generations and planes)', () => {
  const rules = (interfaces: string[], sessions: string[]) =>
    ({ interfaces, sessions: sessions.map((id) => ({ id })) }) as unknown as RuleSet;

  it('adds retired generations, a closed plane and the live snapshots, per series', () => {
    const totals = new PlaneTotals();
    const keep = configuredSeries(rules(['eth0'], ['ts-1']));
    totals.fold({ mirrorPackets: [[{ session: 'ts-1' }, 10]] });
    // A closed eBPF plane's own counters join the same totals.
    totals.fold({ capturePackets: [[{ interface: 'eth0', direction: 'in' }, 7]] });
    const live: PlaneCounters[] = [{ mirrorPackets: [[{ session: 'ts-1' }, 3]] }, { capturePackets: [[{ interface: 'eth0', direction: 'in' }, 5]] }];
    expect(totals.samples('mirrorPackets', live, keep)).toEqual([[{ session: 'ts-1' }, 13]]);
    expect(totals.samples('capturePackets', live, keep)).toEqual([[{ interface: 'eth0', direction: 'in' }, 12]]);
    expect(totals.samples('mirrorBytes', live, keep)).toEqual([]);
  });

  it('shows only configured interfaces and sessions, and forgets removed ones for good', () => {
    const totals = new PlaneTotals();
    totals.fold({ mirrorPackets: [[{ session: 'ts-1' }, 10], [{ session: 'gone' }, 4]], captureDrops: [[{ interface: 'eth9' }, 2]] });
    const keep = configuredSeries(rules(['eth0'], ['ts-1']));
    // The eBPF plane still counts an interface life the config dropped: not shown.
    const live: PlaneCounters[] = [{ captureDrops: [[{ interface: 'eth9' }, 1]] }];
    expect(totals.samples('mirrorPackets', [], keep)).toEqual([[{ session: 'ts-1' }, 10]]);
    expect(totals.samples('captureDrops', live, keep)).toEqual([]);
    totals.retain(keep);
    // Back in the config later, the series starts from 0 (Prometheus reads a reset).
    const all = () => true;
    expect(totals.samples('mirrorPackets', [], all)).toEqual([[{ session: 'ts-1' }, 10]]);
    expect(totals.samples('captureDrops', [], all)).toEqual([]);
  });
});
