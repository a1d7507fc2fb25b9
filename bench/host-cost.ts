// What the agent costs the host besides copying: the sender's TCP throughput (iperf3)
// with nothing, with the minimal mirror anchor and with each plane mirroring that
// traffic; and the agent's resident memory with 10, 10k and 100k active flows, plus a
// flood of random 5-tuples beyond the flow table's limit (evictions counted).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Topology } from '../agent/lab/topology.js';
import { DEFAULT_MAX_FLOWS } from '../agent/flow/stage.js';
import { attachMinimalMirror, detachMinimalMirror } from './anchors.js';
import { PlaneUnavailable, type StartAgent } from './agent.js';
import { TPUT_ANCHOR, TPUT_NONE, tputName } from './report.js';

const IPERF_PORT = 5201;
const IPERF_SECONDS = 5;
const METRICS = '127.0.0.1:19477';
const VNI = 4242;
/** Rate at which the 5-tuples are offered for the memory runs (the pcap plane keeps up). */
const FLOW_RATE = 50_000;
/** Distinct 5-tuples per run; all stay active (window 60 s), the last fills the table. */
const FLOW_COUNTS = [10, 10_000, DEFAULT_MAX_FLOWS];
/** Random 5-tuples offered in the flood: three times what the table holds. */
const FLOOD_TUPLES = 3 * DEFAULT_MAX_FLOWS;
const WINDOW_SECONDS = 60;

export interface ThroughputResult { setup: string; gbps: number | null; unavailable?: string }
export interface RssResult {
  plane: string; load: string; offeredTuples: number; flowsActive: number; evictions: number; rssMiB: number;
}

async function iperf(t: Topology): Promise<number> {
  const { stdout } = await t.exec('src', 'iperf3', ['-c', t.v4.dst, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J'], { timeoutMs: 60_000 });
  return (JSON.parse(stdout) as { end: { sum_sent: { bits_per_second: number } } }).end.sum_sent.bits_per_second / 1e9;
}

/** Every packet of `protocol` both ways mirrored, with a flow log (window 60 s) on src's interface. */
function agentConfig(t: Topology, plane: string, protocol: 'TCP' | 'UDP'): string {
  const all = { priority: 1, action: 'accept', protocol, sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' };
  return JSON.stringify({
    agent: { vmId: 'bench', dataPlane: plane, metrics: { listen: METRICS }, control: { socket: join(t.workDir, 'run', `${plane}.sock`) } },
    filters: [{ id: 'tf', ingressRules: [all], egressRules: [all] }],
    sessions: [{ id: 'ts', priority: 1, vni: VNI, filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
    flowLogs: [{ id: 'fl', sources: [t.srcIf], window: WINDOW_SECONDS, sink: { type: 'file', path: join(t.workDir, `${plane}-flows.jsonl`) } }],
  });
}

export async function throughput(t: Topology, planes: readonly string[], start: StartAgent): Promise<ThroughputResult[]> {
  const server = t.spawn('dst', 'iperf3', ['-s', '--forceflush', '-p', String(IPERF_PORT)]);
  await server.waitForLine(/Server listening/, 20_000);
  try {
    const out: ThroughputResult[] = [{ setup: TPUT_NONE, gbps: await iperf(t) }];
    await attachMinimalMirror(t, t.v4.dst, VNI);
    try {
      out.push({ setup: TPUT_ANCHOR, gbps: await iperf(t) });
    } finally {
      await detachMinimalMirror(t);
    }
    for (const plane of planes) {
      const setup = tputName(plane);
      const file = join(t.workDir, `tput-${plane}.json`);
      await writeFile(file, agentConfig(t, plane, 'TCP'), { mode: 0o600 });
      let agent;
      try {
        agent = await start(file);
      } catch (err) {
        if (!(err instanceof PlaneUnavailable)) throw err;
        out.push({ setup, gbps: null, unavailable: err.message });
        continue;
      }
      try {
        out.push({ setup, gbps: await iperf(t) });
      } finally {
        await agent.stop('SIGTERM', 15_000);
      }
    }
    out.push({ setup: `${TPUT_NONE} (again)`, gbps: await iperf(t) });
    return out;
  } finally {
    await server.stop('SIGTERM');
  }
}

/**
 * Minimum-size UDP frames whose ports step together at run time: source 1..65000 and
 * destination 1..3, so the first 195,000 frames (lcm) are distinct 5-tuples; or, for the
 * flood, random ports on both sides. (trafgen's dynamic fields need its header functions.)
 */
function tupleFrames(t: Topology, peerMac: string, random: boolean): string {
  const ports = random ? 'sport=drnd(), dport=drnd()' : 'sport=dinc(1, 65000), dport=dinc(1, 3)';
  return `{
  eth(da=${peerMac}, sa=${t.srcMac}),
  ipv4(saddr=${t.v4.src}, daddr=${t.v4.dst}, ttl=64, df),
  udp(${ports}),
  fill(0x00, 18)
}`;
}

async function metric(t: Topology, name: string): Promise<number> {
  const { stdout } = await t.exec('src', 'curl', ['-s', `http://${METRICS}/metrics`]);
  return stdout.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
}

export async function memoryWithFlows(t: Topology, planes: readonly string[], peerMac: string, start: StartAgent): Promise<RssResult[]> {
  const exact = join(t.workDir, 'tuples.cfg');
  const random = join(t.workDir, 'flood.cfg');
  await writeFile(exact, tupleFrames(t, peerMac, false));
  await writeFile(random, tupleFrames(t, peerMac, true));
  const runs = [...FLOW_COUNTS.map((n) => ({ load: 'distinct', conf: exact, tuples: n })), { load: 'random flood', conf: random, tuples: FLOOD_TUPLES }];
  const out: RssResult[] = [];
  for (const plane of planes) {
    const file = join(t.workDir, `rss-${plane}.json`);
    await writeFile(file, agentConfig(t, plane, 'UDP'), { mode: 0o600 });
    for (const r of runs) {
      let agent;
      try {
        agent = await start(file);
      } catch (err) {
        if (err instanceof PlaneUnavailable) break;
        throw err;
      }
      try {
        await t.exec('src', 'trafgen', ['--dev', t.srcIf, '--conf', r.conf, '--cpus', '1', '--num', String(r.tuples), '--rate', `${FLOW_RATE}pps`, '--no-cpu-stats', '--notouch-irq', '-q'], { timeoutMs: 120_000 });
        // The capture may still be draining its ring: wait until the table stops growing.
        let flowsActive = -1;
        for (let i = 0; i < 50; i++) {
          const now = await metric(t, 'mirrorflow_flows_active');
          if (now === flowsActive) break;
          flowsActive = now;
          await new Promise((res) => setTimeout(res, 200));
        }
        const evictions = await metric(t, 'mirrorflow_flow_table_evictions_total');
        const status = await readFile(`/proc/${agent.pid}/status`, 'utf8');
        const rssMiB = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
        out.push({ plane, load: r.load, offeredTuples: r.tuples, flowsActive, evictions, rssMiB });
        process.stderr.write(`  ${plane} ${r.load} ${r.tuples} tuples: ${flowsActive} flows active, ${evictions} evicted, RSS ${rssMiB.toFixed(0)} MiB\n`);
      } finally {
        await agent.stop('SIGTERM', 30_000);
      }
    }
  }
  return out;
}
