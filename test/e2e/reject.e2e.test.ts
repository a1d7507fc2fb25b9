// REJECT records (eBPF plane, root, veth lab): packets the source host's own netfilter
// drops — outbound in OUTPUT, inbound in INPUT — become REJECT flow records with the
// counts iptables itself reports; trafficType Drop keeps only those; traffic that crossed
// the interface stays ACCEPT; dropped ICMP keeps its type and code.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExitStatus } from '../../agent/exec.js';
import { createLabTopology, type NsRole, type Topology } from '../../agent/lab/topology.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { ensureBuilt } from './helpers/build.js';
import { startLabAgent, type LabAgent } from './helpers/agent.js';

const OUT_DROPPED = 7000;
const IN_DROPPED = 7001;
const OUT_PASSED = 7002;
const OUT_COUNT = 5;
const IN_COUNT = 4;
const PING_COUNT = 3;
const PAYLOAD = 100;
/** IPv4 20 + UDP 8 + payload: the IP bytes of each datagram. */
const IP_BYTES = 20 + 8 + PAYLOAD;

/** Sends `count` UDP datagrams of PAYLOAD bytes from a fixed source port, then exits. */
const SEND = (host: string, port: number, count: number, sport: number) => `
const s = require('node:dgram').createSocket('udp4');
s.bind(${sport}, () => {
  let left = ${count};
  const next = () => { if (left-- === 0) return s.close(); s.send(Buffer.alloc(${PAYLOAD}), ${port}, '${host}', next); };
  next();
});`;

/** Sends `count` ICMP echo requests from a raw socket; the OUTPUT drop makes each sendto fail with EPERM. */
const PING = (host: string, count: number) => `
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for seq in range(${count}):
    body = struct.pack('!BBHHH', 8, 0, 0, 1, seq) + bytes(32)
    c = sum(struct.unpack('!%dH' % (len(body) // 2), body))
    c = (c >> 16) + (c & 0xffff); c = ~(c + (c >> 16)) & 0xffff
    try:
        s.sendto(body[:2] + struct.pack('!H', c) + body[4:], ('${host}', 0))
    except PermissionError:
        pass
`;

describe('REJECT flow records from the host packet filter (eBPF plane, root, veth)', () => {
  let topo: Topology;
  let agent: LabAgent;
  let exit: ExitStatus;
  let all: FlowRecord[] = [];
  let dropOnly: FlowRecord[] = [];
  const iptablesDrops: Record<string, number> = {};

  const send = (role: NsRole, host: string, port: number, count: number, sport: number) =>
    topo.exec(role, process.execPath, ['-e', SEND(host, port, count, sport)]);
  const read = async (file: string) => (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as FlowRecord);

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    await topo.exec('src', 'iptables', ['-A', 'OUTPUT', '-p', 'udp', '--dport', String(OUT_DROPPED), '-j', 'DROP']);
    await topo.exec('src', 'iptables', ['-A', 'INPUT', '-p', 'udp', '--dport', String(IN_DROPPED), '-j', 'DROP']);
    await topo.exec('src', 'iptables', ['-A', 'OUTPUT', '-p', 'icmp', '--icmp-type', 'echo-request', '-j', 'DROP']);
    const allFile = join(topo.workDir, 'all.jsonl');
    const dropFile = join(topo.workDir, 'drop.jsonl');
    agent = await startLabAgent(topo, {
      agent: { vmId: 'reject', dataPlane: 'ebpf' },
      filters: [],
      sessions: [],
      flowLogs: [
        { id: 'fl-all', sources: [topo.srcIf], window: 60, sink: { type: 'file', path: allFile } },
        { id: 'fl-drop', sources: [topo.srcIf], window: 60, trafficType: 'Drop', sink: { type: 'file', path: dropFile } },
      ],
    });
    await send('src', topo.v4.dst, OUT_DROPPED, OUT_COUNT, 41000);
    await send('src', topo.v4.dst, OUT_PASSED, OUT_COUNT, 41002);
    await send('dst', topo.v4.src, IN_DROPPED, IN_COUNT, 41001);
    await topo.exec('src', 'python3', ['-c', PING(topo.v4.dst, PING_COUNT)]);
    for (const chain of ['OUTPUT', 'INPUT']) {
      const { stdout } = await topo.exec('src', 'iptables', ['-L', chain, '-v', '-x', '-n']);
      iptablesDrops[chain] = Number(/^\s*(\d+)\s+\d+\s+DROP/m.exec(stdout)?.[1]);
    }
    exit = await agent.proc.stop('SIGTERM', 15_000);
    all = await read(allFile);
    dropOnly = await read(dropFile);
  }, 90_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  const ok = (records: FlowRecord[], action: string, dport: number) =>
    records.filter((r) => r['log-status'] === 'OK' && r.action === action && r.dstport === dport && r.protocol === 17);

  it('the agent exited 0 and iptables dropped what the test sent', () => {
    expect(exit, agent.proc.output()).toEqual({ code: 0, signal: null });
    expect(iptablesDrops).toEqual({ OUTPUT: OUT_COUNT, INPUT: IN_COUNT });
  });

  it('an OUTPUT drop is one REJECT record (out) with iptables\' packet count and the IP bytes, and no ACCEPT record', () => {
    const rej = ok(all, 'REJECT', OUT_DROPPED);
    expect(rej).toHaveLength(1);
    expect(rej[0]).toMatchObject({ direction: 'out', srcaddr: topo.v4.src, srcport: 41000, dstaddr: topo.v4.dst, packets: iptablesDrops.OUTPUT, bytes: iptablesDrops.OUTPUT! * IP_BYTES, 'eni-id': topo.srcIf });
    expect(ok(all, 'ACCEPT', OUT_DROPPED)).toEqual([]);
  });

  it('an INPUT drop is a REJECT record (in) with iptables\' count; it also crossed the interface, so it is ACCEPT too', () => {
    const rej = ok(all, 'REJECT', IN_DROPPED);
    expect(rej).toHaveLength(1);
    expect(rej[0]).toMatchObject({ direction: 'in', srcaddr: topo.v4.dst, srcport: 41001, dstaddr: topo.v4.src, packets: iptablesDrops.INPUT, bytes: iptablesDrops.INPUT! * IP_BYTES });
    expect(ok(all, 'ACCEPT', IN_DROPPED).reduce((n, r) => n + r.packets!, 0)).toBe(IN_COUNT);
  });

  it('dropped ICMP is a REJECT record keyed by its type and code (echo request 8/0), ports 0', () => {
    const rej = all.filter((r) => r['log-status'] === 'OK' && r.action === 'REJECT' && r.protocol === 1);
    expect(rej).toHaveLength(1);
    expect(rej[0]).toMatchObject({ direction: 'out', srcport: 0, dstport: 0, 'icmp-type': 8, 'icmp-code': 0, packets: PING_COUNT });
  });

  it('traffic the filter let through has no REJECT record', () => {
    expect(ok(all, 'REJECT', OUT_PASSED)).toEqual([]);
    expect(ok(all, 'ACCEPT', OUT_PASSED).reduce((n, r) => n + r.packets!, 0)).toBe(OUT_COUNT);
  });

  it('trafficType Drop keeps exactly the REJECT records', () => {
    const okDrop = dropOnly.filter((r) => r['log-status'] === 'OK');
    expect(okDrop.length).toBeGreaterThan(0);
    expect(okDrop.every((r) => r.action === 'REJECT')).toBe(true);
    const strip = (r: FlowRecord) => ({ ...r, 'log-status': r['log-status'] });
    expect(okDrop.map(strip)).toEqual(all.filter((r) => r['log-status'] === 'OK' && r.action === 'REJECT').map(strip));
  });
});
