// Flow logs live (root), on each data plane (pcap: a capture ring into agent/flow; ebpf: the
// TC programs' flow map, no capture): the compiled agent logs every IP packet of src's
// interface (and an idle dummy interface) to a JSON lines file while real TCP/UDP/ICMP and
// a lossy iperf3 transfer run. Checked against the kernel: packet and byte totals equal the veth's own
// counters (IP bytes), retransmissions match the sender's TcpRetransSegs within 5%; the
// idle interface gets NODATA; SIGTERM writes the open window; every field is typed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { ExitStatus, Spawned } from '../../agent/exec.js';
import { driveTraffic, startCapture, startTrafficServer } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';

const WINDOW = 2;
const TCP_PORT = 8080;
const UDP_PORT = 4000;
const IPERF_PORT = 5201;
const IDLE_IF = 'mfidle0';
const ETH_HEADER = 14;

interface LinkStats { packets: number; bytes: number }

async function linkStats(t: Topology, dev: string): Promise<{ rx: LinkStats; tx: LinkStats }> {
  const { stdout } = await t.exec('src', 'ip', ['-s', '-j', 'link', 'show', 'dev', dev]);
  const s = (JSON.parse(stdout) as Array<{ stats64: { rx: LinkStats; tx: LinkStats } }>)[0]!.stats64;
  return { rx: { packets: s.rx.packets, bytes: s.rx.bytes }, tx: { packets: s.tx.packets, bytes: s.tx.bytes } };
}

async function retransSegs(t: Topology): Promise<number> {
  const { stdout } = await t.exec('src', 'nstat', ['-az', '--json', 'TcpRetransSegs']);
  return (JSON.parse(stdout) as { kernel: { TcpRetransSegs: number } }).kernel.TcpRetransSegs;
}

describe.each(['pcap', 'ebpf'] as const)('flow logs against the kernel (root, veth, real agent, dataPlane %s)', (plane) => {
  let topo: Topology | undefined;
  let agent: Spawned | undefined;
  let exit: ExitStatus;
  let records: FlowRecord[] = [];
  let rawLines: string[] = [];
  const kernel = { in: { packets: 0, bytes: 0 }, out: { packets: 0, bytes: 0 }, retrans: 0 };
  const nonIp = { in: { packets: 0, bytes: 0 }, out: { packets: 0, bytes: 0 } };

  beforeAll(async () => {
    await ensureBuilt();
    // Wire-sized frames: the kernel counts retransmitted segments, a capture sees GSO super-frames.
    const t = await createLabTopology({ disableOffloads: true, keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    topo = t;
    // An idle interface: a veth pair inside src, without IPv6 so nothing (MLD, RS) is ever sent.
    await t.exec('src', 'ip', ['link', 'add', IDLE_IF, 'type', 'veth', 'peer', 'name', `${IDLE_IF}p`]);
    for (const dev of [IDLE_IF, `${IDLE_IF}p`]) {
      await t.exec('src', 'sysctl', ['-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`]);
      await t.exec('src', 'ip', ['link', 'set', dev, 'up']);
    }
    await t.exec('dst', 'iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', String(IPERF_PORT), '-m', 'statistic', '--mode', 'random', '--probability', '0.02', '-j', 'DROP']);
    const logFile = join(t.workDir, 'flows.jsonl');
    const configFile = join(t.workDir, 'flowlog.yaml');
    await writeFile(configFile, stringify({
      agent: { vmId: 'e2e-host', vpcId: 'vpc-e2e', dataPlane: plane, metrics: { listen: '' }, control: { socket: join(t.workDir, 'control.sock') } },
      filters: [],
      sessions: [],
      flowLogs: [{ id: 'fl-e2e', sources: [t.srcIf, IDLE_IF], window: WINDOW, sink: { type: 'file', path: logFile } }],
    }));

    await startTrafficServer(t, 'dst', TCP_PORT, [UDP_PORT]);
    const iperf = t.spawn('dst', 'iperf3', ['-s', '-1', '--forceflush', '-p', String(IPERF_PORT)]);
    await iperf.waitForLine(/Server listening/, 20_000);
    // Frames the flow log must not count (ARP, neighbour discovery): counted independently.
    const nonIpCap = await startCapture(t, 'src', t.srcIf, join(t.workDir, 'non-ip.pcap'), ['not', 'ip', 'and', 'not', 'ip6']);

    agent = t.spawn('src', process.execPath, [AGENT_CLI, 'run', '--config', configFile], { cwd: REPO_ROOT });
    await agent.waitForLine(new RegExp(`"dataPlane":"${plane}".*"msg":"agent ready"`), 20_000, { stream: 'stdout' });
    const before = await linkStats(t, t.srcIf);
    const retransBefore = await retransSegs(t);

    await driveTraffic(t, 'src', {
      tcp: [{ host: t.v4.dst, port: TCP_PORT, bytes: 200_000 }, { host: t.v6.dst, port: TCP_PORT, bytes: 50_000 }],
      udp: [{ host: t.v4.dst, port: UDP_PORT, count: 20, size: 300 }],
      icmp: [{ host: t.v4.dst, count: 3 }, { host: t.v6.dst, count: 3 }],
    });
    await t.exec('src', 'iperf3', ['-c', t.v4.dst, '-p', String(IPERF_PORT), '-n', '8M'], { timeoutMs: 60_000 });

    kernel.retrans = (await retransSegs(t)) - retransBefore;
    // SIGTERM must write the open window; the counters are read once capture has stopped.
    exit = await agent.stop('SIGTERM', 15_000);
    const after = await linkStats(t, t.srcIf);
    await nonIpCap.stop();
    for (const [dir, pkts] of [['in', 'rx'], ['out', 'tx']] as const) {
      kernel[dir] = { packets: after[pkts].packets - before[pkts].packets, bytes: after[pkts].bytes - before[pkts].bytes };
    }
    const { stdout } = await t.exec('src', 'tcpdump', ['-r', nonIpCap.file, '-n', '-e', '-q']);
    for (const line of stdout.split('\n').filter((l) => l.trim() !== '')) {
      const outbound = line.includes(`${t.srcMac} >`);
      const len = Number(/length (\d+)/.exec(line)?.[1] ?? NaN);
      const bucket = outbound ? nonIp.out : nonIp.in;
      bucket.packets += 1;
      bucket.bytes += len;
    }
    rawLines = (await readFile(logFile, 'utf8')).split('\n').filter((l) => l !== '');
    records = rawLines.map((l) => JSON.parse(l) as FlowRecord);
  }, 180_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  it('the agent exited 0 on SIGTERM', () => {
    expect(exit, agent?.output()).toEqual({ code: 0, signal: null });
  });

  it('writes records whose fields are all present and typed as SPEC §4 says', () => {
    expect(records.length).toBeGreaterThan(5);
    for (const r of records) {
      expect(r.version).toBe(1);
      expect(r['vm-id']).toBe('e2e-host');
      expect(r['vpc-id']).toBe('vpc-e2e');
      expect(Number.isInteger(r.start) && Number.isInteger(r.end)).toBe(true);
      expect(r.end - r.start).toBe(WINDOW);
      expect(r.start % WINDOW).toBe(0);
      if (r['log-status'] === 'OK') {
        expect(typeof r.srcaddr).toBe('string');
        expect(typeof r.dstaddr).toBe('string');
        for (const k of ['srcport', 'dstport', 'protocol', 'packets', 'bytes', 'mirrored-packets'] as const) expect(Number.isInteger(r[k]), k).toBe(true);
        expect(['in', 'out']).toContain(r.direction);
        expect(r.action).toBe('ACCEPT');
        if (r.protocol === 6) for (const k of ['tcp-flags', 'retrans', 'zero-win'] as const) expect(Number.isInteger(r[k]), k).toBe(true);
      }
    }
    // Field order as in SPEC §4.
    expect(Object.keys(JSON.parse(rawLines[0]!) as object).slice(0, 8)).toEqual(['version', 'vswitch-id', 'vm-id', 'vpc-id', 'account-id', 'eni-id', 'srcaddr', 'srcport']);
  });

  it('counts exactly the packets and IP bytes the veth counted, per direction', () => {
    for (const dir of ['in', 'out'] as const) {
      const mine = records.filter((r) => r['log-status'] === 'OK' && r['eni-id'] === topo!.srcIf && r.direction === dir);
      const packets = mine.reduce((n, r) => n + r.packets!, 0);
      const bytes = mine.reduce((n, r) => n + r.bytes!, 0);
      const ipPackets = kernel[dir].packets - nonIp[dir].packets;
      expect(packets, dir).toBe(ipPackets);
      expect(bytes, dir).toBe(kernel[dir].bytes - nonIp[dir].bytes - ETH_HEADER * ipPackets);
    }
  });

  it('reports retransmissions within 5% of the kernel counter (TcpRetransSegs)', () => {
    const mine = records.filter((r) => r.protocol === 6 && r.direction === 'out').reduce((n, r) => n + (r.retrans ?? 0), 0);
    expect(kernel.retrans).toBeGreaterThan(10);
    expect(Math.abs(mine - kernel.retrans)).toBeLessThanOrEqual(kernel.retrans * 0.05);
  });

  it('writes NODATA for the idle interface in every window, and handshake RTTs for TCP', () => {
    const idle = records.filter((r) => r['eni-id'] === IDLE_IF);
    expect(idle.length).toBeGreaterThan(0);
    for (const r of idle) expect(r['log-status']).toBe('NODATA');
    const windows = new Set(records.filter((r) => r['eni-id'] !== IDLE_IF).map((r) => r.start));
    for (const w of windows) expect(idle.some((r) => r.start === w), `NODATA for window ${w}`).toBe(true);
    expect(records.some((r) => r.protocol === 6 && (r['rtt-us'] ?? 0) > 0)).toBe(true);
  });
});
