// What each plane costs per mirrored wire segment, with the lab's offloads as the kernel
// has them (TSO/GSO aggregates reach the agent) and with them off (the wire-sized
// reference: every packet is one segment). Bulk TCP (iperf3 -n) from src to peer, every
// packet both ways mirrored; per run: the host's busy CPU time (all cores, /proc/stat),
// the agent process's own CPU time, the copies the destination's vxlan device received
// and the wire segments the sender's kernel sent (TcpOutSegs). The cost per copy is the
// host CPU above the same transfer with no agent, divided by the copies; rounds are
// interleaved (none, each plane) and the median counts.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLabTopology, type Topology } from '../agent/lab/topology.js';
import { agentStarter, PlaneUnavailable } from './agent.js';
import { hostBusySeconds, processCpuSeconds } from './cpu-time.js';

const IPERF_PORT = 5201;
const BYTES = process.env.BENCH_QUICK === '1' ? '50M' : '200M';
const ROUNDS = 3;
const VNI = 4242;

export interface OffloadCost {
  offloads: 'on' | 'off';
  setup: string;
  /** Medians over the rounds. */
  copies: number;
  wireSegments: number;
  hostCpuSeconds: number;
  agentCpuSeconds: number;
  /** Host CPU above the no-agent run, per copy (µs); null for the no-agent row. */
  usPerCopy: number | null;
  unavailable?: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function outSegs(t: Topology): Promise<number> {
  const { stdout } = await t.exec('src', 'nstat', ['-az', '--json', 'TcpOutSegs']);
  return (JSON.parse(stdout) as { kernel: { TcpOutSegs: number } }).kernel.TcpOutSegs;
}

async function vxlanRx(t: Topology): Promise<number> {
  return Number((await t.exec('dst', 'cat', [`/sys/class/net/${t.vxlan[0]!.name}/statistics/rx_packets`])).stdout);
}

function config(t: Topology, plane: string): string {
  const all = (p: string) => ({ priority: p === 'TCP' ? 1 : 2, action: 'accept', protocol: p, sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' });
  return JSON.stringify({
    agent: { vmId: 'bench', dataPlane: plane, metrics: { listen: '' }, control: { socket: join(t.workDir, 'run', `${plane}.sock`) } },
    filters: [{ id: 'tf', ingressRules: [all('TCP')], egressRules: [all('TCP')] }],
    sessions: [{ id: 'ts', priority: 1, vni: VNI, filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
    flowLogs: [{ id: 'fl', sources: [t.srcIf], window: 60, sink: { type: 'file', path: join(t.workDir, `${plane}-flows.jsonl`) } }],
  });
}

interface Run { copies: number; wireSegments: number; hostCpuSeconds: number; agentCpuSeconds: number }

async function transfer(t: Topology, agentPid: number | undefined): Promise<Run> {
  const [segs0, rx0, host0, agent0] = [await outSegs(t), await vxlanRx(t), await hostBusySeconds(), await processCpuSeconds(agentPid)];
  await t.exec('src', 'iperf3', ['-c', t.v4.peerSrc, '-p', String(IPERF_PORT), '-n', BYTES], { timeoutMs: 120_000 });
  // Copies still on their way: wait until the destination's count stops moving.
  let rx = await vxlanRx(t);
  for (let last = -1; rx !== last; ) {
    last = rx;
    await new Promise((r) => setTimeout(r, 200));
    rx = await vxlanRx(t);
  }
  return {
    copies: rx - rx0,
    wireSegments: (await outSegs(t)) - segs0,
    hostCpuSeconds: (await hostBusySeconds()) - host0,
    agentCpuSeconds: (await processCpuSeconds(agentPid)) - agent0,
  };
}

/** Both offload settings, no agent and each plane; `planes` are those that can run here. */
export async function offloadCost(planes: readonly string[]): Promise<OffloadCost[]> {
  const out: OffloadCost[] = [];
  for (const offloads of ['on', 'off'] as const) {
    const t = await createLabTopology({ vnis: [VNI], disableOffloads: offloads === 'off' });
    try {
      const iperf = t.spawn('peer', 'iperf3', ['-s', '--forceflush', '-p', String(IPERF_PORT)]);
      await iperf.waitForLine(/Server listening/, 10_000, { stream: 'stdout' });
      const start = agentStarter(t);
      const runs = new Map<string, Run[]>([['none', []], ...planes.map((p) => [p, []] as [string, Run[]])]);
      const unavailable = new Map<string, string>();
      for (let round = 0; round < ROUNDS; round++) {
        runs.get('none')!.push(await transfer(t, undefined));
        for (const plane of planes) {
          if (unavailable.has(plane)) continue;
          const file = join(t.workDir, `${plane}.json`);
          await writeFile(file, config(t, plane), { mode: 0o600 });
          try {
            const agent = await start(file);
            runs.get(plane)!.push(await transfer(t, agent.pid));
            await agent.stop('SIGTERM', 15_000);
          } catch (err) {
            if (!(err instanceof PlaneUnavailable)) throw err;
            unavailable.set(plane, err.message);
          }
        }
      }
      const base = median(runs.get('none')!.map((r) => r.hostCpuSeconds));
      for (const [setup, rs] of runs) {
        const copies = median(rs.map((r) => r.copies));
        const host = median(rs.map((r) => r.hostCpuSeconds));
        out.push({
          offloads, setup, copies, wireSegments: median(rs.map((r) => r.wireSegments)), hostCpuSeconds: host,
          agentCpuSeconds: median(rs.map((r) => r.agentCpuSeconds)),
          usPerCopy: setup === 'none' || copies === 0 ? null : median(rs.map((r) => ((r.hostCpuSeconds - base) * 1e6) / Math.max(r.copies, 1))),
          ...(unavailable.has(setup) ? { unavailable: unavailable.get(setup)! } : {}),
        });
      }
    } finally {
      await t.destroy();
    }
  }
  return out;
}

export function formatOffloadCost(rows: readonly OffloadCost[]): string {
  if (rows.length === 0) return '';
  const lines = [
    `## Cost per mirrored wire segment, offloads on and off (iperf3 -n ${BYTES}, every TCP packet both ways mirrored, flow log on; medians of ${ROUNDS} interleaved rounds)`,
    '',
    '| offloads | setup | copies delivered | wire segments sent | host CPU s | agent CPU s | host µs per copy above no agent |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    if (r.unavailable !== undefined) {
      lines.push(`| ${r.offloads} | ${r.setup} | ${r.unavailable} | | | | |`);
      continue;
    }
    lines.push(`| ${r.offloads} | ${r.setup} | ${r.copies} | ${r.wireSegments} | ${r.hostCpuSeconds.toFixed(2)} | ${r.agentCpuSeconds.toFixed(2)} | ${r.usPerCopy === null ? '—' : r.usPerCopy.toFixed(2)} |`);
  }
  return lines.join('\n') + '\n';
}
