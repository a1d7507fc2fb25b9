// Both data planes on the same traffic at the same time (root, veth lab): one agent with
// dataPlane pcap and one with dataPlane ebpf run side by side on src's interface with the
// same config, through loss, a zero window, a reset, UDP and ICMP. Their flow records must
// be the same apart from timestamps, with the same retransmission and zero-window counts,
// and both must have mirrored the same packets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Spawned } from '../../agent/exec.js';
import { driveTraffic, startTrafficServer } from '../../agent/lab/lab.js';
import { createLabTopology, type Topology } from '../../agent/lab/topology.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { AGENT_CLI, REPO_ROOT, ensureBuilt } from './helpers/build.js';
import { sumMetric } from '../../agent/lab/report.js';
import { runTcpScenarios } from './helpers/tcp-scenarios.js';

const PLANES = ['pcap', 'ebpf'] as const;
type Plane = (typeof PLANES)[number];
const TCP_PORT = 8080;
const UDP_PORT = 4000;
const TIMEOUT_MS = 30_000;

describe('the pcap and eBPF planes agree on the same traffic (root, veth, two agents at once)', () => {
  let topo: Topology;
  const agents = {} as Record<Plane, Spawned>;
  const records = {} as Record<Plane, FlowRecord[]>;
  const metrics = {} as Record<Plane, string>;
  const listen = (plane: Plane) => `127.0.0.1:${plane === 'pcap' ? 19477 : 19478}`;
  const counted = ['mirrorflow_tcp_retransmissions_total', 'mirrorflow_tcp_zero_window_total', 'mirrorflow_tcp_resets_total'];
  const scrape = async (plane: Plane) => (await topo.exec('src', 'curl', ['-sS', `http://${listen(plane)}/metrics`])).stdout;

  beforeAll(async () => {
    await ensureBuilt();
    topo = await createLabTopology({ disableOffloads: true, keepFiles: process.env.MIRRORFLOW_E2E_KEEP === '1' });
    const t = topo;
    for (const plane of PLANES) {
      const file = join(t.workDir, `${plane}.yaml`);
      await writeFile(file, stringify({
        agent: { vmId: 'planes', dataPlane: plane, metrics: { listen: listen(plane) }, control: { socket: join(t.workDir, plane, 'control.sock') } },
        filters: [{
          id: 'tf',
          ingressRules: [{ priority: 1, action: 'accept', protocol: 'TCP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }],
          egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${t.v4.dst}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }],
        }],
        sessions: [{ id: 'ts', priority: 1, vni: 4242, filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
        flowLogs: [{ id: 'fl', sources: [t.srcIf], window: 60, sink: { type: 'file', path: join(t.workDir, `${plane}.jsonl`) } }],
      }), { mode: 0o600 });
      agents[plane] = t.spawn('src', process.execPath, [AGENT_CLI, 'run', '--config', file], { cwd: REPO_ROOT });
      await agents[plane].waitForLine(new RegExp(`"dataPlane":"${plane}".*"msg":"agent ready"`), TIMEOUT_MS, { stream: 'stdout' });
    }
    await startTrafficServer(t, 'dst', TCP_PORT, [UDP_PORT]);
    await driveTraffic(t, 'src', {
      tcp: [{ host: t.v4.dst, port: TCP_PORT, bytes: 50_000 }, { host: t.v6.dst, port: TCP_PORT, bytes: 20_000 }],
      udp: [{ host: t.v4.dst, port: UDP_PORT, count: 10, size: 300 }],
      icmp: [{ host: t.v4.dst, count: 3 }, { host: t.v6.dst, count: 3 }],
    });
    await runTcpScenarios(t, {
      loss: '0.02',
      iperfBytes: '4M',
      timeoutMs: TIMEOUT_MS,
      zeroWindowSeen: async () => {
        const deadline = Date.now() + TIMEOUT_MS;
        while (sumMetric(await scrape('pcap'), 'mirrorflow_tcp_zero_window_total') === 0) {
          if (Date.now() > deadline) throw new Error('no zero window seen');
          await new Promise((r) => setTimeout(r, 50));
        }
      },
    });
    metrics.pcap = await scrape('pcap');
    // The eBPF plane's TCP counters come from the kernel's flow map, drained every tick
    // (docs/metrics.md): wait up to a few ticks for it to hold what the pcap plane counted.
    const deadline = Date.now() + 5_000;
    const behind = () => counted.some((name) => sumMetric(metrics.ebpf, name) !== sumMetric(metrics.pcap, name));
    metrics.ebpf = await scrape('ebpf');
    while (behind() && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      metrics.ebpf = await scrape('ebpf');
    }
    for (const plane of PLANES) {
      expect(await agents[plane].stop('SIGTERM', 15_000)).toEqual({ code: 0, signal: null });
      const text = await readFile(join(t.workDir, `${plane}.jsonl`), 'utf8');
      records[plane] = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as FlowRecord);
    }
  }, 180_000);

  afterAll(async () => {
    await topo?.destroy();
  }, 30_000);

  /** A record without what depends on when it was written. */
  const comparable = (r: FlowRecord) => {
    const { start: _start, end: _end, 'rtt-us': _rtt, ...rest } = r;
    return JSON.stringify(rest);
  };

  // The two agents start a moment apart: neighbour discovery and MLD sent in between are
  // seen by one only, so the comparison covers the test's own traffic between the hosts.
  const ofTheTest = (rs: FlowRecord[]) => {
    const hosts = [topo.v4.src, topo.v4.dst, topo.v6.src, topo.v6.dst];
    return rs.filter((r) => r['log-status'] === 'OK' && hosts.includes(r.srcaddr!) && hosts.includes(r.dstaddr!));
  };

  it('writes the same flow records apart from timestamps', () => {
    expect(ofTheTest(records.pcap).length).toBeGreaterThan(10);
    expect(ofTheTest(records.ebpf).map(comparable).sort()).toEqual(ofTheTest(records.pcap).map(comparable).sort());
  });

  it('counts the same retransmissions, zero windows and resets (which did happen)', () => {
    for (const name of counted) {
      const pcap = sumMetric(metrics.pcap, name);
      expect(pcap, name).toBeGreaterThan(0);
      expect(sumMetric(metrics.ebpf, name), name).toBe(pcap);
    }
    const retrans = (rs: FlowRecord[]) => rs.reduce((n, r) => n + (r.retrans ?? 0), 0);
    expect(retrans(records.ebpf)).toBe(retrans(records.pcap));
  });

  it('mirrored the same number of packets (the kernel counted what the flow records say)', () => {
    const mirrored = (rs: FlowRecord[]) => rs.reduce((n, r) => n + (r['mirrored-packets'] ?? 0), 0);
    expect(mirrored(records.pcap)).toBeGreaterThan(0);
    expect(sumMetric(metrics.ebpf, 'mirrorflow_mirror_packets_total')).toBe(sumMetric(metrics.pcap, 'mirrorflow_mirror_packets_total'));
    expect(sumMetric(metrics.ebpf, 'mirrorflow_mirror_packets_total')).toBeGreaterThan(0);
    expect(mirrored(records.ebpf)).toBe(mirrored(records.pcap));
  });
});
