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
import { TPUT_ANCHOR, TPUT_NONE, tputName, tputSameCopies } from './report.js';

const IPERF_PORT = 5201;
const IPERF_SECONDS = 5;
/** iperf3 runs per setup, interleaved round by round so drift hits every setup alike; the median counts. */
const ROUNDS = 3;
const METRICS = '127.0.0.1:19477';
const VNI = 4242;
/** Rate at which the 5-tuples are offered for the memory runs (the capture keeps up with every frame). */
export const FLOW_RATE = 20_000;
/** Distinct 5-tuples per run; all stay active (window 60 s), the last fills the table. */
const FLOW_COUNTS = [10, 10_000, DEFAULT_MAX_FLOWS];
/** Random 5-tuples offered in the flood: three times what the table holds. */
const FLOOD_TUPLES = 3 * DEFAULT_MAX_FLOWS;
const WINDOW_SECONDS = 60;

export interface ThroughputResult {
  setup: string;
  /** Median of the rounds (Gbit/s); null when the plane could not run. */
  gbps: number | null;
  runs: number[];
  /** Copies the destination decapsulated, and the packets the setup should have copied (last round). */
  copies: number;
  toCopy: number;
  unavailable?: string;
}
export interface RssResult {
  plane: string; load: string; offeredTuples: number; flowsActive: number; evictions: number; rssMiB: number;
}

/** Sender's Gbit/s, and what the destination saw meanwhile: TCP both ways and decapsulated copies. */
async function iperf(t: Topology): Promise<{ gbps: number; data: number; acks: number; copies: number }> {
  const read = async (dev: string, field: string) => Number((await t.exec('dst', 'cat', [`/sys/class/net/${dev}/statistics/${field}`])).stdout);
  const vx = t.vxlan[0]!.name;
  const snap = async () => ({ rx: await read(t.dstIf, 'rx_packets'), tx: await read(t.dstIf, 'tx_packets'), copies: await read(vx, 'rx_packets') });
  const before = await snap();
  const { stdout } = await t.exec('src', 'iperf3', ['-c', t.v4.dst, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J'], { timeoutMs: 60_000 });
  const after = await snap();
  const copies = after.copies - before.copies;
  // The outer VXLAN packets also arrive on dst's interface: what is left is iperf's data.
  const data = after.rx - before.rx - copies;
  const gbps = (JSON.parse(stdout) as { end: { sum_sent: { bits_per_second: number } } }).end.sum_sent.bits_per_second / 1e9;
  return { gbps, data, acks: after.tx - before.tx, copies };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Every packet of `protocol` both ways mirrored, with a flow log (window 60 s) on src's
 * interface; or (`egressOnly`) only src's egress and no flow log, the anchor's copies.
 */
function agentConfig(t: Topology, plane: string, protocol: 'TCP' | 'UDP', egressOnly = false): string {
  const all = { priority: 1, action: 'accept', protocol, sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' };
  return JSON.stringify({
    agent: { vmId: 'bench', dataPlane: plane, metrics: { listen: METRICS }, control: { socket: join(t.workDir, 'run', `${plane}.sock`) } },
    filters: [{ id: 'tf', ingressRules: egressOnly ? [] : [all], egressRules: [all] }],
    sessions: [{ id: 'ts', priority: 1, vni: VNI, filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
    flowLogs: egressOnly ? [] : [{ id: 'fl', sources: [t.srcIf], window: WINDOW_SECONDS, sink: { type: 'file', path: join(t.workDir, `${plane}-flows.jsonl`) } }],
  });
}

interface Setup {
  setup: string;
  /** Starts mirroring (or nothing); returns how to stop it. */
  start: () => Promise<() => Promise<void>>;
  /** Which packets this setup copies: the anchor only src's egress (data), the agent both ways. */
  both: boolean;
}

export async function throughput(t: Topology, planes: readonly string[], start: StartAgent): Promise<ThroughputResult[]> {
  const setups: Setup[] = [
    { setup: TPUT_NONE, both: false, start: async () => async () => undefined },
    { setup: TPUT_ANCHOR, both: false, start: async () => { await attachMinimalMirror(t, t.v4.dst, VNI); return () => detachMinimalMirror(t); } },
  ];
  const agentSetup = async (setup: string, plane: string, egressOnly: boolean): Promise<Setup> => {
    const file = join(t.workDir, `tput-${plane}${egressOnly ? '-egress' : ''}.json`);
    await writeFile(file, agentConfig(t, plane, 'TCP', egressOnly), { mode: 0o600 });
    return { setup, both: !egressOnly, start: async () => { const a = await start(file); return async () => void (await a.stop('SIGTERM', 15_000)); } };
  };
  for (const plane of planes) {
    setups.push(await agentSetup(tputName(plane), plane, false));
    // The eBPF target compares the cost of rules and accounting over a bare clone.
    if (plane === 'ebpf') setups.push(await agentSetup(tputSameCopies(plane), plane, true));
  }
  const out = new Map<string, ThroughputResult>(setups.map((s) => [s.setup, { setup: s.setup, gbps: null, runs: [], copies: 0, toCopy: 0 }]));
  const server = t.spawn('dst', 'iperf3', ['-s', '--forceflush', '-p', String(IPERF_PORT)]);
  await server.waitForLine(/Server listening/, 20_000);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const s of setups) {
        const r = out.get(s.setup)!;
        if (r.unavailable !== undefined) continue;
        let stop: () => Promise<void>;
        try {
          stop = await s.start();
        } catch (err) {
          if (!(err instanceof PlaneUnavailable)) throw err;
          r.unavailable = err.message;
          continue;
        }
        try {
          const m = await iperf(t);
          r.runs.push(m.gbps);
          r.copies = m.copies;
          r.toCopy = s.setup === TPUT_NONE ? 0 : m.data + (s.both ? m.acks : 0);
          process.stderr.write(`  ${s.setup}: ${m.gbps.toFixed(2)} Gbit/s, ${m.copies}/${r.toCopy} copied\n`);
        } finally {
          await stop();
        }
      }
    }
  } finally {
    await server.stop('SIGTERM');
  }
  return [...out.values()].map((r) => ({ ...r, gbps: r.runs.length > 0 ? median(r.runs) : null }));
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
        // The capture may still be draining its ring, the eBPF plane drains its kernel flow
        // map once a second: wait until the table has not grown for longer than a drain tick.
        let flowsActive = -1;
        let changed = Date.now();
        for (let i = 0; i < 100 && Date.now() - changed < 1500; i++) {
          const now = await metric(t, 'mirrorflow_flows_active');
          if (now !== flowsActive) changed = Date.now();
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
