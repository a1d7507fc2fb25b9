// `mirrorflow lab --sensors N`: a pool of N sensors (addresses on dst's underlay), the agent
// in src with a `targets:` session and ICMP health checks, TCP connections and UDP flows
// both ways over IPv4 and IPv6; shows how the flows spread over the sensors, then takes a
// sensor's address away (failover: its flows move, nothing goes to it), then brings it back
// (they return). The traffic and decoding helpers are shared with test/e2e/pool.e2e.test.ts.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { run, type Spawned } from '../exec.js';
import { COPY_SNAP_LENGTH } from './bulk.js';
import { startCapture, tsharkFields, type Capture } from './lab.js';
import { sumMetric } from './report.js';
import { createLabTopology, type Topology } from './topology.js';

export const POOL_TCP_PORT = 7100;
export const POOL_UDP_PORT = 7200;
/** UDP flows use fixed client ports from here, so the same 5-tuples come back in every phase. */
const UDP_CLIENT_BASE = 31000;
const VXLAN_PORT = 4789;
const POOL_VNI = 4242;
const READY_TIMEOUT_MS = 15000;
const TRAFFIC_TIMEOUT_MS = 60000;
const HEALTH_CHANGE_TIMEOUT_MS = 10000;
const METRICS_LISTEN = '127.0.0.1:9477';

/** TCP echo (dual-stack) and UDP echo bound to each given address, so a reply leaves from
 * the address the request came to (dst also holds the sensor addresses); a line once all listen. */
const SERVER = `
const net = require('node:net'), dgram = require('node:dgram');
const [tcpPort, udpPort, addresses] = JSON.parse(process.argv[1]);
let pending = 1 + addresses.length;
const ready = () => { if (--pending === 0) console.log('pool server ready'); };
net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen({ port: tcpPort, host: '::' }, ready);
for (const a of addresses) {
  const u = dgram.createSocket(a.includes(':') ? 'udp6' : 'udp4');
  u.on('message', (m, r) => u.send(m, r.port, r.address));
  u.bind(udpPort, a, ready);
}
`;

/** Datagrams each UDP flow of the CLIENT sends (each echoed). */
const UDP_DATAGRAMS = 3;

/** TCP connections that send 3000 bytes and read them back; UDP flows from fixed ports, UDP_DATAGRAMS echoed datagrams each. */
const CLIENT = `
const net = require('node:net'), dgram = require('node:dgram');
const { hosts, tcpPort, udpPort, tcp, udp, udpBase } = JSON.parse(process.argv[1]);
const conn = (host) => new Promise((resolve, reject) => {
  let got = 0;
  const s = net.connect({ host, port: tcpPort }, () => s.end(Buffer.alloc(3000, 0x61)));
  s.on('data', (d) => { got += d.length; });
  s.on('error', reject);
  s.on('close', () => got === 3000 ? resolve() : reject(new Error('tcp ' + host + ' echoed ' + got)));
});
const flow = (host, port) => new Promise((resolve, reject) => {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let got = 0;
  const timer = setTimeout(() => { s.close(); reject(new Error('udp ' + host + ' from ' + port + ': ' + got + ' of ${UDP_DATAGRAMS} echoed')); }, 3000);
  s.on('message', () => { if (++got === ${UDP_DATAGRAMS}) { clearTimeout(timer); s.close(); resolve(); } });
  s.bind(port, () => { for (let i = 0; i < ${UDP_DATAGRAMS}; i++) s.send(Buffer.alloc(100, 0x62), udpPort, host); });
});
(async () => {
  for (const [f, host] of hosts.entries()) {
    for (let i = 0; i < tcp; i++) await conn(host);
    // Ten flows at a time: a whole family at once is a burst of copies the capture can drop.
    for (let i = 0; i < udp; i += 10) {
      await Promise.all(Array.from({ length: Math.min(10, udp - i) }, (_, k) => flow(host, udpBase + f * udp + i + k)));
    }
  }
})().catch((e) => { console.error(e && e.message || e); process.exit(1); });
`;

/** Echo servers in src and dst (both ends answer, so flows run both ways). */
export async function startPoolServers(topo: Topology): Promise<Spawned[]> {
  const out: Spawned[] = [];
  for (const role of ['src', 'dst'] as const) {
    const own = role === 'src' ? [topo.v4.src, topo.v6.src] : [topo.v4.dst, topo.v6.dst];
    const p = topo.spawn(role, process.execPath, ['-e', SERVER, JSON.stringify([POOL_TCP_PORT, POOL_UDP_PORT, own])]);
    await p.waitForLine(/pool server ready/, READY_TIMEOUT_MS, { stream: 'stdout' });
    out.push(p);
  }
  return out;
}

/** From `from` to the other end, IPv4 then IPv6: `tcp` connections and `udp` flows per family (fixed client ports). */
export async function drivePoolTraffic(topo: Topology, from: 'src' | 'dst', tcp: number, udp: number): Promise<void> {
  const hosts = from === 'src' ? [topo.v4.dst, topo.v6.dst] : [topo.v4.src, topo.v6.src];
  const udpBase = UDP_CLIENT_BASE + (from === 'src' ? 0 : 1000);
  const plan = { hosts, tcpPort: POOL_TCP_PORT, udpPort: POOL_UDP_PORT, tcp, udp, udpBase };
  await topo.exec(from, process.execPath, ['-e', CLIENT, JSON.stringify(plan)], { timeoutMs: TRAFFIC_TIMEOUT_MS });
}

/** The client port of the marker flow: its copies come after every copy of the traffic before it. */
export const MARKER_PORT = 39999;

/**
 * Sends one UDP flow from MARKER_PORT and resolves once the capture printed its copy. The
 * copies to one target leave in the order the agent saw the packets (the pcap plane sends a
 * batch with one sendmmsg; the eBPF plane sends each at once), so by then every copy to that
 * target before it is out. A pool's members get batches of their own, so there the marker's
 * copy can overtake copies to another member: `copiesCounted` (copies the agent counted
 * since the capture started) makes it wait until the capture holds all of them. With
 * `agents` mirroring the same interface, it waits for all their copies of the flow's
 * requests (one agent's can arrive far ahead of another's).
 */
export async function markTraffic(
  topo: Topology, capture: Capture, opts: { copiesCounted?: () => Promise<number>; agents?: number; timeoutMs?: number } = {},
): Promise<void> {
  const { agents = 1, timeoutMs = TRAFFIC_TIMEOUT_MS } = opts;
  const count = agents === 1 ? 1 : agents * UDP_DATAGRAMS;
  const seen = capture.proc.waitForLine(new RegExp(`\\.${MARKER_PORT} > `), timeoutMs, { stream: 'stdout', count });
  const plan = { hosts: [topo.v4.dst], tcpPort: POOL_TCP_PORT, udpPort: POOL_UDP_PORT, tcp: 0, udp: 1, udpBase: MARKER_PORT };
  await topo.exec('src', process.execPath, ['-e', CLIENT, JSON.stringify(plan)], { timeoutMs });
  await seen;
  if (opts.copiesCounted) await capture.waitFor(await opts.copiesCounted(), timeoutMs);
}

export interface PoolCopy {
  sensor: string;
  outerPort: number;
  vni: number;
  /** Inner flow, the same for both directions: protocol and the two endpoints sorted. */
  flow: string;
  /** The inner packet's source endpoint ("address|port"): which direction of the flow. */
  from: string;
}

/** The VXLAN copies of a capture whose inner packet is pool traffic, as tshark decodes them. */
export async function poolCopies(file: string): Promise<PoolCopy[]> {
  const rows = await tsharkFields(file, `vxlan && (tcp.port == ${POOL_TCP_PORT} || udp.port == ${POOL_UDP_PORT}) && !(udp.port == ${MARKER_PORT})`,
    ['ip.src', 'ip.dst', 'ipv6.src', 'ipv6.dst', 'udp.srcport', 'udp.dstport', 'tcp.srcport', 'tcp.dstport', 'vxlan.vni']);
  return rows.map(([ipSrc = '', ipDst = '', v6Src = '', v6Dst = '', uSrc = '', uDst = '', tSrc = '', tDst = '', vni = '']) => {
    const innerSrc4 = ipSrc.split(',')[1];
    const [sensor = '', innerDst4] = ipDst.split(',');
    const [outerPort = '', innerUdpSrc] = uSrc.split(',');
    const innerUdpDst = uDst.split(',')[1];
    const tcp = tSrc !== '';
    const a = `${innerSrc4 ?? v6Src}|${tcp ? tSrc : innerUdpSrc}`;
    const b = `${innerDst4 ?? v6Dst}|${tcp ? tDst : innerUdpDst}`;
    return { sensor, outerPort: Number(outerPort), vni: Number(vni), flow: `${tcp ? 'tcp' : 'udp'} ${[a, b].sort().join(' ')}`, from: a };
  });
}

export interface FlowPlacement {
  sensors: Set<string>;
  outerPorts: Set<number>;
  /** The inner sources its copies came from: two when both directions were mirrored. */
  directions: Set<string>;
  copies: number;
}

/** Per flow: the sensors and outer ports its copies used (one of each when the pool works). */
export function placeFlows(copies: readonly PoolCopy[]): Map<string, FlowPlacement> {
  const out = new Map<string, FlowPlacement>();
  for (const c of copies) {
    let p = out.get(c.flow);
    if (!p) out.set(c.flow, (p = { sensors: new Set(), outerPorts: new Set(), directions: new Set(), copies: 0 }));
    p.sensors.add(c.sensor);
    p.outerPorts.add(c.outerPort);
    p.directions.add(c.from);
    p.copies++;
  }
  return out;
}

/** The pool session of the lab and the e2e test: every IP packet of srcIf both ways, to `sensors`. */
export function poolSession(topo: Topology, intervalSeconds: number): { filters: unknown[]; sessions: unknown[] } {
  const all = [
    { priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' },
    { priority: 2, action: 'accept', protocol: 'ALL', sourceCidrBlock: '::/0', destinationCidrBlock: '::/0' },
  ];
  return {
    filters: [{ id: 'tf-all', ingressRules: all, egressRules: all }],
    sessions: [{
      id: 'ts-pool', priority: 1, vni: POOL_VNI, filterId: 'tf-all', sources: [topo.srcIf],
      targets: {
        pool: topo.sensors.v4.map((address) => ({ address })),
        healthCheck: { type: 'icmp', interval: intervalSeconds, unhealthyAfter: 1, healthyAfter: 1 },
      },
    }],
  };
}

export interface PoolLabOptions {
  sensors: number;
  dataPlane?: 'auto' | 'ebpf' | 'pcap';
  keepFiles?: boolean;
  print?: (line: string) => void;
}

const PHASE_TCP = 20;
const PHASE_UDP = 20;
const INTERVAL_S = 1;

/** Runs the pool lab and removes everything it made; ok=false when a flow split or went to a lost sensor. */
export async function runPoolLab(opts: PoolLabOptions): Promise<{ ok: boolean; problems: string[] }> {
  const print = opts.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  if (opts.sensors < 2 || opts.sensors > 8) throw new Error(`--sensors: 2..8, got ${opts.sensors}`);
  const topo = await createLabTopology({ vnis: [POOL_VNI], sensors: opts.sensors, keepFiles: opts.keepFiles });
  const problems: string[] = [];
  try {
    await startPoolServers(topo);
    const configFile = join(topo.workDir, 'mirrorflow-pool.yaml');
    const agentSection = { vmId: 'lab-pool', dataPlane: opts.dataPlane ?? 'auto', metrics: { listen: METRICS_LISTEN }, control: { socket: join(topo.workDir, 'control.sock') } };
    await writeFile(configFile, stringify({ agent: agentSection, ...poolSession(topo, INTERVAL_S) }));
    const agent = topo.spawn('src', process.execPath, [fileURLToPath(new URL('../cli.js', import.meta.url)), 'run', '--config', configFile]);
    await agent.waitForLine(/"msg":"agent ready"/, READY_TIMEOUT_MS, { stream: 'stdout' });
    const sensors = topo.sensors.v4;
    print(`lab: ${sensors.length} sensors in ${topo.ns.dst} on ${topo.dstIf}: ${sensors.join(' ')}; ICMP health checks every ${INTERVAL_S} s`);

    const copies = async () =>
      sumMetric((await topo.exec('src', 'curl', ['-sS', '--max-time', '5', `http://${METRICS_LISTEN}/metrics`])).stdout, 'mirrorflow_mirror_packets_total');
    let phase = 0;
    const round = async (label: string, lost?: string): Promise<Map<string, FlowPlacement>> => {
      const file = join(topo.workDir, `pool-${phase++}.pcap`);
      const before = await copies();
      const capture = await startCapture(topo, 'dst', topo.dstIf, file, ['udp', 'dst', 'port', String(VXLAN_PORT)], { snapLength: COPY_SNAP_LENGTH });
      await drivePoolTraffic(topo, 'src', PHASE_TCP, PHASE_UDP);
      await drivePoolTraffic(topo, 'dst', PHASE_TCP, PHASE_UDP);
      await markTraffic(topo, capture, { copiesCounted: async () => (await copies()) - before });
      await capture.stop();
      const flows = placeFlows(await poolCopies(file));
      const perSensor = sensors.map((s) => [...flows.values()].filter((p) => p.sensors.has(s)).length);
      const split = [...flows].filter(([, p]) => p.sensors.size !== 1 || p.outerPorts.size !== 1);
      print(`lab: ${label}: ${flows.size} flows (TCP and UDP, v4 and v6, both ways); per sensor ${sensors.map((s, i) => `${s}=${perSensor[i]}`).join(' ')}`);
      if (split.length > 0) problems.push(`${label}: ${split.length} flows on more than one sensor or outer port`);
      if (lost !== undefined && perSensor[sensors.indexOf(lost)]! > 0) problems.push(`${label}: copies sent to ${lost} after it failed`);
      return flows;
    };

    const before = await round('all healthy');
    const lost = sensors[1]!;
    const lostAt = Date.now();
    const failed = agent.countLines(/pool member failed its health check/, 'stdout');
    await run('ip', ['-n', topo.ns.dst, 'addr', 'del', `${lost}/32`, 'dev', topo.dstIf]);
    await agent.waitForLine(/pool member failed its health check/, HEALTH_CHANGE_TIMEOUT_MS, { stream: 'stdout', count: failed + 1 });
    print(`lab: removed ${lost} from ${topo.dstIf}; the agent took it out after ${Date.now() - lostAt} ms`);
    const during = await round(`without ${lost}`, lost);
    const udpFlows = [...before].filter(([flow]) => flow.startsWith('udp'));
    const moved = udpFlows.filter(([flow, p]) => [...(during.get(flow)?.sensors ?? [])][0] !== [...p.sensors][0]);
    const wrong = moved.filter(([, p]) => !p.sensors.has(lost));
    print(`lab: of ${udpFlows.length} UDP flows (same ports every round) ${moved.length} moved, all of them from ${lost}: ${wrong.length === 0 ? 'yes' : `no, ${wrong.length} others moved`}`);
    if (wrong.length > 0) problems.push(`${wrong.length} flows moved that were not on ${lost}`);

    const passed = agent.countLines(/pool member passed its health check again/, 'stdout');
    await run('ip', ['-n', topo.ns.dst, 'addr', 'add', `${lost}/32`, 'dev', topo.dstIf]);
    await agent.waitForLine(/pool member passed its health check again/, HEALTH_CHANGE_TIMEOUT_MS, { stream: 'stdout', count: passed + 1 });
    const after = await round(`${lost} back`);
    const notBack = udpFlows.filter(([flow, p]) => [...(after.get(flow)?.sensors ?? [])][0] !== [...p.sensors][0]);
    print(`lab: ${lost} back: ${udpFlows.length - notBack.length} of ${udpFlows.length} UDP flows on their first sensor again`);
    if (notBack.length > 0) problems.push(`${notBack.length} flows did not return after ${lost} came back`);
    await agent.stop('SIGTERM', 10000);
    print(problems.length === 0 ? 'lab: OK' : `lab: PROBLEMS:\n  ${problems.join('\n  ')}`);
    return { ok: problems.length === 0, problems };
  } finally {
    await topo.destroy();
    print(opts.keepFiles ? `lab: namespaces removed; files kept in ${topo.workDir}` : 'lab: namespaces and files removed');
  }
}
