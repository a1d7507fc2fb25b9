// `make bench`: at what offered rate does each plane still deliver every selected packet to
// the destination? Load comes from trafgen (fixed-size UDP frames) in the src namespace;
// delivery is counted at the destination from kernel counters (the decapsulating vxlan
// device), never from the agent's own report. Anchors on the same traffic: a minimal TC
// clone mirror (the machine's ceiling), the agent's capture ring with an empty callback and
// `tcpdump -w /dev/null` (the user-space capture ceiling), and the traffic with no
// mirroring at all. Then the host's cost (bench/host-cost.ts): the sender's TCP throughput
// and the agent's memory with 10 to 100k flows. Results: tables on stdout and
// bench/results/latest.{json,md}.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { createLabTopology, type Topology } from '../agent/lab/topology.js';
import { CommandError, run, type Spawned } from '../agent/exec.js';
import { agentStarter, OTHER_AGENT, PlaneUnavailable } from './agent.js';
import { attachMinimalMirror, detachMinimalMirror, tcpdumpRun } from './anchors.js';
import { memoryWithFlows, throughput, type RssResult, type ThroughputResult } from './host-cost.js';
import { formatOffloadCost, offloadCost, type OffloadCost } from './offload-cost.js';
import { processCpuSeconds } from './cpu-time.js';
import { formatOverload, overloadKept, type OverloadRow } from './overload.js';
import { formatInterfacesCost, interfacesCost, type InterfaceCostRow } from './interfaces-cost.js';
import {
  ANCHOR_EMPTY, ANCHOR_MIRROR, ANCHOR_NONE, ANCHOR_TCPDUMP, formatMemory, formatRates, formatTargets, formatThroughput,
  planeName, type PlaneResult, type RuleEval, type StepResult,
} from './report.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const QUICK = process.env.BENCH_QUICK === '1';
/** BENCH_PARTS=rates,throughput,memory,offloads,overload,interfaces (the default: all) runs only those parts. */
const PARTS = new Set((process.env.BENCH_PARTS ?? 'rates,throughput,memory,offloads,overload,interfaces').split(','));
/** BENCH_SIZES, BENCH_RATES (comma lists) and BENCH_PLANES (e.g. pcap+flow,ebpf) narrow a run for before/after checks. */
const listEnv = (name: string): number[] | undefined => process.env[name]?.split(',').map(Number);
const SIZES = listEnv('BENCH_SIZES') ?? (QUICK ? [64, 1500] : [64, 512, 1500]);
const STEP_SECONDS = QUICK ? 1 : 2;
/** Offered rates tried, low to high; the search stops at the first loss. */
const RATES = listEnv('BENCH_RATES') ?? (QUICK
  ? [20_000, 100_000, 250_000, 500_000]
  // trafgen tops out near 150-200k pps on this veth lab (its sends run the whole path); 25k
  // steps up to there resolve the planes' limits, the steps above show where that holds.
  : [20_000, 50_000, 75_000, 100_000, 125_000, 150_000, 175_000, 200_000, 300_000, 500_000]);
/** A narrowed run writes partial.* (or BENCH_OUT) instead of the full table in latest.*. */
const NARROWED = ['BENCH_SIZES', 'BENCH_RATES', 'BENCH_PLANES', 'BENCH_PARTS'].some((n) => process.env[n] !== undefined);
/** Agent configurations measured: data plane, and whether flow logs (with TCP analysis) run. */
const PLANES = ([
  { plane: 'pcap', flowLogs: true },
  { plane: 'pcap', flowLogs: false },
  { plane: 'ebpf', flowLogs: true },
  { plane: 'ebpf', flowLogs: false },
] as const).filter((p) => process.env.BENCH_PLANES?.split(',').includes(p.plane + (p.flowLogs ? '+flow' : '')) ?? true);
const VNI = 4242;
const UDP_PORT = 9;


async function counter(t: Topology, role: 'src' | 'dst', dev: string, field: 'rx_packets' | 'tx_packets'): Promise<number> {
  const { stdout } = await t.exec(role, 'cat', [`/sys/class/net/${dev}/statistics/${field}`]);
  return Number(stdout.trim());
}


/** Flows in the rates' traffic: source ports 40000.. step per frame (issue 19's 1000 flows). */
const RATE_FLOWS = 1000;

/** A trafgen config: UDP/IPv4 frames of `size` bytes (without FCS) from src to dst, RATE_FLOWS flows in turn. */
function trafgenConfig(t: Topology, peerMac: string, size: number): string {
  return `{
  eth(da=${peerMac}, sa=${t.srcMac}),
  ipv4(saddr=${t.v4.src}, daddr=${t.v4.dst}, ttl=64, df),
  udp(sport=dinc(40000, ${40000 + RATE_FLOWS - 1}), dport=${UDP_PORT}),
  fill(0x00, ${size - 14 - 20 - 8})
}`;
}

/** Sends `rate` × STEP_SECONDS frames; returns the count and the rate trafgen really reached. */
async function offer(t: Topology, conf: string, rate: number): Promise<{ count: number; pps: number }> {
  const count = rate * STEP_SECONDS;
  const started = performance.now();
  try {
    await t.exec('src', 'trafgen', ['--dev', t.srcIf, '--conf', conf, '--cpus', '1', '--num', String(count), '--rate', `${rate}pps`, '--no-cpu-stats', '--notouch-irq', '-q'], { timeoutMs: (STEP_SECONDS + 30) * 1000 });
  } catch (err) {
    // Killed at the time limit (seen with 512-byte frames at 1M pps while an agent copies):
    // it sent less than `count`, so the step shows as a loss instead of ending the run.
    if (!(err instanceof CommandError) || err.signal === null) throw err;
    process.stderr.write(`  trafgen stopped after ${STEP_SECONDS + 30} s (${err.signal})\n`);
  }
  return { count, pps: Math.round(count / ((performance.now() - started) / 1000)) };
}

/** Steps the rate until the first loss; `delivered` counts at the destination. */
async function search(
  t: Topology, conf: string, plane: string, size: number,
  delivered: () => Promise<number>, pid: () => number | undefined, settle: () => Promise<void>,
): Promise<PlaneResult> {
  const steps: StepResult[] = [];
  let zeroLoss = 0;
  let cpuPerMpkt: number | null = null;
  for (const rate of RATES) {
    const before = await delivered();
    const cpuBefore = await processCpuSeconds(pid());
    const { count: offered, pps } = await offer(t, conf, rate);
    await settle();
    const got = (await delivered()) - before;
    const cpu = (await processCpuSeconds(pid())) - cpuBefore;
    steps.push({ rate, offered, achievedPps: pps, delivered: got, cpuSeconds: cpu });
    process.stderr.write(`  ${plane} ${size}B ${rate} pps (sent at ${pps}): ${got}/${offered}\n`);
    if (got < offered) break;
    zeroLoss = rate;
    if (pid() !== undefined) cpuPerMpkt = (cpu / offered) * 1e6;
  }
  return { plane, size, zeroLossPps: zeroLoss, cpuSecondsPerMpkt: cpuPerMpkt, steps };
}

/** Waits until the counter stops moving (the last copies are through), bounded. */
async function quiesce(read: () => Promise<number>): Promise<void> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const now = await read();
    if (now === last) return;
    last = now;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const EMPTY_CAPTURE = (dir: string, dev: string) => `
import('${join(dir, 'dist/agent/capture/packet-ring.js')}').then(({ PacketRing }) => {
  let n = 0;
  const src = new PacketRing({ interfaceName: '${dev}',
    filterIn: 'udp', filterOut: 'udp', snapLength: 1600, bufferBytes: 32 << 20, bufferTimeoutMs: 10,
    onFrame: () => { n++; }, onWarning: () => {} });
  process.on('SIGUSR2', () => console.log('count ' + n));
  console.log('ready');
});`;

/** tcpdump's zero-loss rate: per step, what it captured and whether the kernel dropped any. */
async function searchTcpdump(t: Topology, conf: string, size: number): Promise<PlaneResult> {
  const steps: StepResult[] = [];
  let zeroLoss = 0;
  for (const rate of RATES) {
    const r = await tcpdumpRun(t, () => offer(t, conf, rate));
    const { count, pps } = r.offered;
    steps.push({ rate, offered: count, achievedPps: pps, delivered: r.received - r.dropped, cpuSeconds: 0 });
    process.stderr.write(`  ${ANCHOR_TCPDUMP} ${size}B ${rate} pps (sent at ${pps}): ${r.received}/${count} received, ${r.dropped} dropped by kernel\n`);
    if (!(r.dropped === 0 && r.received >= count)) break;
    zeroLoss = rate;
  }
  return { plane: ANCHOR_TCPDUMP, size, zeroLossPps: zeroLoss, cpuSecondsPerMpkt: null, steps };
}

async function main(): Promise<void> {
  const t = await createLabTopology({ vnis: [VNI], disableOffloads: true });
  // Interrupted: remove the lab (namespaces, devices, processes) before going.
  const cleanup = () => void t.destroy().finally(() => process.exit(130));
  process.once('SIGINT', cleanup);
  process.once('SIGTERM', cleanup);
  const results: PlaneResult[] = [];
  let tput: ThroughputResult[] = [];
  let memory: RssResult[] = [];
  let offloads: OffloadCost[] = [];
  let overload: OverloadRow[] = [];
  let interfaces: InterfaceCostRow[] = [];
  const startAgent = agentStarter(t);
  const unavailable = new Map<string, string>();
  try {
    const peerMac = (await t.exec('peer', 'cat', [`/sys/class/net/${t.peerSrcIf}/address`])).stdout.trim();
    const vx = t.vxlan[0]!.name;
    const files = new Map<string, string>();
    for (const p of PLANES) {
      const file = join(t.workDir, `${p.plane}-${p.flowLogs ? 'flows' : 'mirror'}.yaml`);
      files.set(planeName(p.plane, p.flowLogs), file);
      // No mirror budget: the rates measure what a plane can copy, and trafgen's --rate sends
      // each second's frames in one burst (20k frames in ~60 ms at 20k pps here), which a
      // budget holding 100 ms of its rate rightly sheds. The overload part measures the budget.
      // (An agent from before the budget, BENCH_AGENT, would refuse the field; it has none.)
      const noBudget = OTHER_AGENT === undefined ? { mirrorBudget: { pps: 0, bps: 0 } } : {};
      await writeFile(file, stringify({
        agent: { vmId: 'bench', dataPlane: p.plane, ...noBudget, metrics: { listen: process.env.BENCH_METRICS ?? '' }, control: { socket: join(t.workDir, 'run', 'c.sock') } },
        filters: [{ id: 'tf', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${t.v4.dst}/32`, destinationPortRange: `${UDP_PORT}/${UDP_PORT}` }] }],
        sessions: [{ id: 'ts', priority: 1, vni: VNI, filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
        flowLogs: p.flowLogs ? [{ id: 'fl', sources: [t.srcIf], window: 10, sink: { type: 'file', path: join(t.workDir, 'flows.jsonl') } }] : [],
      }), { mode: 0o600 });
    }

    for (const size of PARTS.has('rates') ? SIZES : []) {
      const conf = join(t.workDir, `udp-${size}.cfg`);
      await writeFile(conf, trafgenConfig(t, peerMac, size));
      const dstRx = () => counter(t, 'dst', t.dstIf, 'rx_packets');
      const decapRx = () => counter(t, 'dst', vx, 'rx_packets');

      // (3) No mirroring: what the path delivers by itself.
      results.push(await search(t, conf, ANCHOR_NONE, size, dstRx, () => undefined, () => quiesce(dstRx)));

      // (1) The machine's ceiling: a bare TC clone into a vxlan device, counted at the destination.
      await attachMinimalMirror(t, t.v4.dst, VNI);
      results.push(await search(t, conf, ANCHOR_MIRROR, size, decapRx, () => undefined, () => quiesce(decapRx)));
      await detachMinimalMirror(t);

      // (2) Raw capture ceilings: the agent's capture ring with an empty callback, tcpdump -w /dev/null.
      const empty: Spawned = t.spawn('src', process.execPath, ['-e', EMPTY_CAPTURE(REPO, t.srcIf)]);
      await empty.waitForLine(/ready/, 20_000);
      const readEmpty = async () => {
        const n = empty.countLines(/^count /, 'stdout');
        process.kill(empty.pid!, 'SIGUSR2');
        const line = await empty.waitForLine(/^count /, 5000, { stream: 'stdout', count: n + 1 });
        return Number(line.split(' ')[1]);
      };
      results.push(await search(t, conf, ANCHOR_EMPTY, size, readEmpty, () => empty.pid, () => quiesce(readEmpty)));
      await empty.stop('SIGTERM');
      results.push(await searchTcpdump(t, conf, size));

      // The agent: both planes, with and without flow logs and TCP analysis.
      for (const p of PLANES) {
        const name = planeName(p.plane, p.flowLogs);
        let agent: Spawned;
        try {
          if (unavailable.has(p.plane)) throw new PlaneUnavailable(unavailable.get(p.plane));
          agent = await startAgent(files.get(name)!);
        } catch (err) {
          if (!(err instanceof PlaneUnavailable)) throw err;
          unavailable.set(p.plane, err.message);
          process.stderr.write(`  ${name}: ${err.message}\n`);
          results.push({ plane: name, size, zeroLossPps: 0, cpuSecondsPerMpkt: null, steps: [], unavailable: err.message });
          continue;
        }
        results.push(await search(t, conf, planeName(p.plane, p.flowLogs), size, decapRx, () => agent.pid, () => quiesce(decapRx)));
        if (process.env.BENCH_METRICS) {
          const m = await t.exec('src', 'curl', ['-s', `http://${process.env.BENCH_METRICS}/metrics`]);
          process.stderr.write(m.stdout.split('\n').filter((l) => /^mirrorflow_(capture|mirror|flow_log_rec)/.test(l)).join('\n') + '\n');
        }
        await agent.stop('SIGTERM', 15_000);
      }
    }
    const planes = [...new Set(PLANES.map((p) => p.plane))].filter((p) => !unavailable.has(p));
    if (PARTS.has('throughput')) tput = await throughput(t, planes, startAgent);
    if (PARTS.has('memory')) memory = await memoryWithFlows(t, planes, peerMac, startAgent);
    if (PARTS.has('overload')) {
      const conf = join(t.workDir, 'overload-64.cfg');
      await writeFile(conf, trafgenConfig(t, peerMac, 64));
      overload = await overloadKept(t, conf, UDP_PORT, VNI, planes, startAgent);
    }
  } finally {
    await t.destroy();
  }
  // Its own labs: one with the kernel's default offloads, one without.
  if (PARTS.has('offloads')) offloads = await offloadCost([...new Set(PLANES.map((p) => p.plane))].filter((p) => !unavailable.has(p)));
  // Its own namespaces too: a veth farm per interface count.
  if (PARTS.has('interfaces')) interfaces = await interfacesCost([...new Set(PLANES.map((p) => p.plane))].filter((p) => !unavailable.has(p)));

  // The code measured: BENCH_COMMIT when run from an exported tree, else the checkout's HEAD.
  const commit = process.env.BENCH_COMMIT ?? (await run('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).then((r) => r.stdout.trim(), () => 'unknown'));
  const machine = { date: new Date().toISOString(), cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? '', kernel: os.release(), commit, quick: QUICK };
  // bench/ebpf-rules.ts runs first in `make bench` and leaves its numbers here.
  const rules = await readFile(join(REPO, 'bench/results/ebpf-rules.json'), 'utf8').then((j) => JSON.parse(j) as RuleEval, () => null);
  const text = [formatRates(results, RATES.at(-1)!), formatThroughput(tput), formatMemory(memory), formatOffloadCost(offloads), formatOverload(overload), formatInterfacesCost(interfaces), formatTargets(results, tput, memory, rules)].join('\n');
  process.stdout.write(text);
  const outDir = join(REPO, 'bench/results');
  await mkdir(outDir, { recursive: true });
  // A narrowed run does not replace the full table the README quotes.
  const name = process.env.BENCH_OUT ?? (QUICK || NARROWED ? 'partial' : 'latest');
  await writeFile(join(outDir, `${name}.json`), JSON.stringify({ machine, results, throughput: tput, memory, offloads, overload, interfaces }, null, 2));
  await writeFile(join(outDir, `${name}.md`), `Measured ${machine.date} on ${machine.cpus} × ${machine.cpu}, Linux ${machine.kernel}, commit ${machine.commit}${QUICK ? ' (quick run)' : ''}.\n\n${text}`);
}

await main();
