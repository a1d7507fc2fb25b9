// Sensor pools end to end (SPEC §3; root, veth lab, the real agent, both data planes): a
// pool of three sensors (addresses on the destination namespace's underlay interface), TCP
// connections and UDP flows both ways over IPv4 and IPv6 through the mirrored interface.
// tshark reads the underlay capture: every connection on exactly one sensor with one outer
// source port, the sensors' shares within ±25% of even. Then a sensor's address goes away:
// ICMP health checks take it out within interval + 1 s (the log line), the same UDP flows
// (fixed ports) sent again reach the other two, only the flows that were on it move, and
// nothing is sent to it; its address back, the same flows return to where they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import { startCapture, tsharkFields } from '../../agent/lab/lab.js';
import type { Spawned } from '../../agent/lab/exec.js';
import { run } from '../../agent/lab/exec.js';
import { ensureBuilt } from './helpers/build.js';
import { startLabAgent, type LabAgent } from './helpers/agent.js';

const PLANES = ['ebpf', 'pcap'] as const;
const VNI = 4242;
const TCP_PORT = 7100;
const UDP_PORT = 7200;
/** Per address family: TCP connections and UDP flows, each way. */
const TCP_PER_FAMILY = 60;
const UDP_PER_FAMILY = 60;
/** UDP flows use fixed client ports, so the same 5-tuples come back in every phase. */
const UDP_CLIENT_BASE = 31000;
const INTERVAL_S = 1;
const TIMEOUT_MS = 180_000;

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

/** TCP connections that send 3000 bytes and read them back; UDP flows from fixed ports, 3 echoed datagrams each. */
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
  const timer = setTimeout(() => { s.close(); reject(new Error('udp ' + host + ' from ' + port + ': ' + got + ' of 3 echoed')); }, 3000);
  s.on('message', () => { if (++got === 3) { clearTimeout(timer); s.close(); resolve(); } });
  s.bind(port, () => { for (let i = 0; i < 3; i++) s.send(Buffer.alloc(100, 0x62), udpPort, host); });
});
(async () => {
  for (const [f, host] of hosts.entries()) {
    for (let i = 0; i < tcp; i++) await conn(host);
    await Promise.all(Array.from({ length: udp }, (_, i) => flow(host, udpBase + f * udp + i)));
  }
})().catch((e) => { console.error(e && e.message || e); process.exit(1); });
`;

interface Copy {
  sensor: string;
  outerPort: number;
  /** Inner flow, the same for both directions: protocol and the two endpoints sorted. */
  flow: string;
}

/** The VXLAN copies of a capture whose inner packet is our TCP or UDP traffic, as tshark decodes them. */
async function copies(file: string): Promise<Copy[]> {
  const rows = await tsharkFields(file, `vxlan && (tcp.port == ${TCP_PORT} || udp.port == ${UDP_PORT})`,
    ['ip.src', 'ip.dst', 'ipv6.src', 'ipv6.dst', 'udp.srcport', 'udp.dstport', 'tcp.srcport', 'tcp.dstport']);
  return rows.map(([ipSrc = '', ipDst = '', v6Src = '', v6Dst = '', uSrc = '', uDst = '', tSrc = '', tDst = '']) => {
    const [, innerSrc4] = ipSrc.split(',');
    const [sensor = '', innerDst4] = ipDst.split(',');
    const [outerPort = '', innerUdpSrc] = uSrc.split(',');
    const innerUdpDst = uDst.split(',')[1];
    const tcp = tSrc !== '';
    const a = `${innerSrc4 ?? v6Src}|${tcp ? tSrc : innerUdpSrc}`;
    const b = `${innerDst4 ?? v6Dst}|${tcp ? tDst : innerUdpDst}`;
    return { sensor, outerPort: Number(outerPort), flow: `${tcp ? 'tcp' : 'udp'} ${[a, b].sort().join(' ')}` };
  });
}

/** Per flow: its one sensor and outer port; throws when a flow reached two sensors or used two ports. */
function placement(list: Copy[]): Map<string, { sensor: string; outerPort: number; copies: number }> {
  const out = new Map<string, { sensor: string; outerPort: number; copies: number }>();
  for (const c of list) {
    const seen = out.get(c.flow);
    if (!seen) {
      out.set(c.flow, { sensor: c.sensor, outerPort: c.outerPort, copies: 1 });
      continue;
    }
    expect(c.sensor, `flow ${c.flow}`).toBe(seen.sensor);
    expect(c.outerPort, `flow ${c.flow}`).toBe(seen.outerPort);
    seen.copies++;
  }
  return out;
}

describe.each(PLANES)('sensor pool of three, %s plane (root, veth lab, real agent)', (plane) => {
  let topo: Topology;
  let agent: LabAgent;
  const servers: Spawned[] = [];
  let phase = 0;

  const drive = async (from: 'src' | 'dst', tcp: number) => {
    const hosts = from === 'src' ? [topo.v4.dst, topo.v6.dst] : [topo.v4.src, topo.v6.src];
    const base = UDP_CLIENT_BASE + (from === 'src' ? 0 : 1000);
    await topo.exec(from, process.execPath, ['-e', CLIENT, JSON.stringify({ hosts, tcpPort: TCP_PORT, udpPort: UDP_PORT, tcp, udp: UDP_PER_FAMILY, udpBase: base })], { timeoutMs: 60_000 });
  };
  /** Traffic both ways under one capture of dst's underlay; returns the copies. */
  const round = async (tcp: number): Promise<Copy[]> => {
    const file = join(topo.workDir, `pool-${plane}-${phase++}.pcap`);
    const capture = await startCapture(topo, 'dst', topo.dstIf, file, ['udp', 'dst', 'port', '4789']);
    const before = await agent.metric('mirrorflow_mirror_packets_total', { session: 'ts-pool' });
    await drive('src', tcp);
    await drive('dst', tcp);
    // Every copy the agent counted is on the wire before tcpdump stops.
    const sent = await agent.waitForMetric('mirrorflow_mirror_packets_total', { session: 'ts-pool' }, (v) => v > before);
    await capture.waitFor(sent - before, 10_000);
    await capture.stop();
    return copies(file);
  };

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ vnis: [VNI], sensors: 3 });
    for (const role of ['src', 'dst'] as const) {
      const own = role === 'src' ? [topo.v4.src, topo.v6.src] : [topo.v4.dst, topo.v6.dst];
      const p = topo.spawn(role, process.execPath, ['-e', SERVER, JSON.stringify([TCP_PORT, UDP_PORT, own])]);
      await p.waitForLine(/pool server ready/, 10_000, { stream: 'stdout' });
      servers.push(p);
    }
    agent = await startLabAgent(topo, {
      agent: { vmId: `pool-${plane}`, dataPlane: plane },
      filters: [{
        id: 'tf',
        ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' },
          { priority: 2, action: 'accept', protocol: 'ALL', sourceCidrBlock: '::/0', destinationCidrBlock: '::/0' }],
        egressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' },
          { priority: 2, action: 'accept', protocol: 'ALL', sourceCidrBlock: '::/0', destinationCidrBlock: '::/0' }],
      }],
      sessions: [{
        id: 'ts-pool', priority: 1, vni: VNI, filterId: 'tf', sources: [topo.srcIf],
        targets: {
          pool: topo.sensors.v4.map((address) => ({ address })),
          healthCheck: { type: 'icmp', interval: INTERVAL_S, unhealthyAfter: 1, healthyAfter: 1 },
        },
      }],
    });
  }, TIMEOUT_MS);

  afterAll(async () => {
    await topo?.destroy();
  });

  it('every connection on one sensor with one outer port, spread within ±25%; a lost sensor moves only its flows, and they come back', async () => {
    const sensors = topo.sensors.v4;
    const first = placement(await round(TCP_PER_FAMILY));
    const flows = 2 * 2 * (TCP_PER_FAMILY + UDP_PER_FAMILY);
    expect(first.size).toBe(flows);
    const share = (m: Map<string, { sensor: string }>) => sensors.map((s) => [...m.values()].filter((p) => p.sensor === s).length);
    const spread = share(first);
    for (const n of spread) {
      expect(n, `flows per sensor ${spread.join(' ')}`).toBeGreaterThan((flows / 3) * 0.75);
      expect(n, `flows per sensor ${spread.join(' ')}`).toBeLessThan((flows / 3) * 1.25);
    }
    for (const s of sensors) expect(await agent.metric('mirrorflow_mirror_target_healthy', { target: `${s}:4789` })).toBe(1);

    // Sensor 1 goes away: out within interval + 1 s of losing its address.
    const gone = sensors[1]!;
    const failed = agent.logCount(/pool member failed its health check/);
    const lostAt = Date.now();
    await run('ip', ['-n', topo.ns.dst, 'addr', 'del', `${gone}/32`, 'dev', topo.dstIf]);
    const line = await agent.waitForLog(/pool member failed its health check/, failed + 1, 10_000);
    expect(line).toContain(`"target":"${gone}:4789"`);
    const failoverMs = Date.now() - lostAt;
    console.log(`${plane}: flows per sensor ${spread.join(' ')} of ${flows}; sensor out ${failoverMs} ms after losing its address`);
    expect(failoverMs).toBeLessThan((INTERVAL_S + 1) * 1000);
    expect(await agent.metric('mirrorflow_mirror_target_healthy', { target: `${gone}:4789` })).toBe(0);

    const udpOnly = (m: Map<string, { sensor: string }>) => new Map([...m].filter(([flow]) => flow.startsWith('udp')));
    const without = placement(await round(TCP_PER_FAMILY / 4));
    // Nothing to the lost sensor, new TCP connections included.
    expect([...without.values()].filter((p) => p.sensor === gone)).toEqual([]);
    let moved = 0;
    for (const [flow, before] of udpOnly(first)) {
      const after = without.get(flow);
      expect(after, flow).toBeDefined();
      if (before.sensor === gone) moved++;
      else expect(after!.sensor, flow).toBe(before.sensor);
    }
    expect(moved).toBe([...udpOnly(first).values()].filter((p) => p.sensor === gone).length);
    expect(moved).toBeGreaterThan(0);

    // Back: its flows return to it.
    const passed = agent.logCount(/pool member passed its health check again/);
    await run('ip', ['-n', topo.ns.dst, 'addr', 'add', `${gone}/32`, 'dev', topo.dstIf]);
    await agent.waitForLog(/pool member passed its health check again/, passed + 1, 10_000);
    const back = placement(await round(0));
    for (const [flow, before] of udpOnly(first)) expect(back.get(flow)?.sensor, flow).toBe(before.sensor);

    // The per-target counter adds up to the session's.
    const perTarget = await Promise.all(sensors.map((s) => agent.metric('mirrorflow_mirror_target_packets_total', { session: 'ts-pool', target: `${s}:4789` })));
    expect(perTarget.reduce((a, b) => a + b, 0)).toBe(await agent.metric('mirrorflow_mirror_packets_total', { session: 'ts-pool' }));
  }, TIMEOUT_MS);
});
