// Production traffic under mirroring overload (issue 19, "production traffic wins"): 64-byte
// UDP frames offered at OVERLOAD_PPS (2x the pcap plane's zero-loss rate, as far as trafgen
// goes) for OVERLOAD_SECONDS, every frame selected for mirroring, with a flow log. What the
// sender keeps (trafgen's achieved rate) with no agent, under `tcpdump -w /dev/null` (what
// a bare capture costs), and under each plane with the default mirror budget, with none, and
// with a tight one (TIGHT_PPS: a budget that binds at the rate trafgen reaches here, to show
// what shedding gives back).
// Setups interleaved over OVERLOAD_ROUNDS rounds, medians; copies counted at the
// destination's vxlan device.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Spawned } from '../agent/exec.js';
import type { Topology } from '../agent/lab/topology.js';
import { hostMirrorBudget } from '../agent/config/host-budget.js';
import { PlaneUnavailable, type StartAgent } from './agent.js';
import { tcpdumpRun } from './anchors.js';

const OVERLOAD_PPS = 200_000;
const OVERLOAD_SECONDS = Number(process.env.BENCH_OVERLOAD_SECONDS ?? 5);
const OVERLOAD_ROUNDS = Number(process.env.BENCH_OVERLOAD_ROUNDS ?? 3);
const TIGHT_PPS = 10_000;
const NO_AGENT = 'no agent';
const TCPDUMP = 'tcpdump -w /dev/null';

export interface OverloadRow {
  setup: string;
  /** trafgen's achieved rate, per round. */
  pps: number[];
  /** Copies at the destination's vxlan device, per round (agents only). */
  copies: number[];
  unavailable?: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length === 0 ? 0 : s.length % 2 === 1 ? s[mid]! : Math.round((s[mid - 1]! + s[mid]!) / 2);
}

/** `conf`: a trafgen config of one 64-byte UDP frame to the destination, port `port`. */
export async function overloadKept(t: Topology, conf: string, port: number, vni: number, planes: readonly string[], start: StartAgent): Promise<OverloadRow[]> {
  const count = OVERLOAD_PPS * OVERLOAD_SECONDS;
  const offer = async (): Promise<number> => {
    const started = performance.now();
    await t.exec('src', 'trafgen', ['--dev', t.srcIf, '--conf', conf, '--cpus', '1', '--num', String(count), '--rate', `${OVERLOAD_PPS}pps`, '--no-cpu-stats', '--notouch-irq', '-q'], { timeoutMs: OVERLOAD_SECONDS * 5000 + 30_000 });
    return Math.round(count / ((performance.now() - started) / 1000));
  };
  const decap = async () => Number((await t.exec('dst', 'cat', [`/sys/class/net/${t.vxlan[0]!.name}/statistics/rx_packets`])).stdout.trim());
  const agents = planes.flatMap((plane) => [
    { setup: `mirrorflow ${plane} (+flow logs), default budget`, plane, budget: hostMirrorBudget() },
    { setup: `mirrorflow ${plane} (+flow logs), no budget`, plane, budget: { pps: 0, bps: 0 } },
    { setup: `mirrorflow ${plane} (+flow logs), budget ${TIGHT_PPS.toLocaleString('en')} pps`, plane, budget: { pps: TIGHT_PPS, bps: 0 } },
  ]);
  const rows = new Map<string, OverloadRow>([NO_AGENT, TCPDUMP, ...agents.map((a) => a.setup)].map((s) => [s, { setup: s, pps: [], copies: [] }]));
  for (let round = 0; round < OVERLOAD_ROUNDS; round++) {
    rows.get(NO_AGENT)!.pps.push(await offer());
    rows.get(TCPDUMP)!.pps.push((await tcpdumpRun(t, offer)).offered);
    for (const a of agents) {
      const row = rows.get(a.setup)!;
      if (row.unavailable !== undefined) continue;
      const file = join(t.workDir, `overload-${a.plane}-${a.budget.pps}.yaml`);
      await writeFile(file, stringify({
        agent: { vmId: 'bench', dataPlane: a.plane, mirrorBudget: a.budget, metrics: { listen: '' }, control: { socket: join(t.workDir, 'run', 'o.sock') } },
        filters: [{ id: 'tf', ingressRules: [], egressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: `${t.v4.dst}/32`, destinationPortRange: `${port}/${port}` }] }],
        sessions: [{ id: 'ts', priority: 1, vni, filterId: 'tf', sources: [t.srcIf], target: { address: t.v4.dst } }],
        flowLogs: [{ id: 'fl', sources: [t.srcIf], window: 10, sink: { type: 'file', path: join(t.workDir, 'overload-flows.jsonl') } }],
      }), { mode: 0o600 });
      let agent: Spawned;
      try {
        agent = await start(file);
      } catch (err) {
        if (!(err instanceof PlaneUnavailable)) throw err;
        row.unavailable = err.message;
        continue;
      }
      const before = await decap();
      row.pps.push(await offer());
      // The last copies still in flight (user space drains its capture ring).
      await new Promise((r) => setTimeout(r, 1000));
      row.copies.push((await decap()) - before);
      await agent.stop('SIGTERM', 15_000);
    }
    process.stderr.write(`  overload round ${round + 1}: ${[...rows.values()].map((r) => `${r.setup} ${r.pps.at(-1) ?? '-'}`).join(', ')}\n`);
  }
  return [...rows.values()];
}

export function formatOverload(rows: OverloadRow[]): string {
  if (rows.length === 0) return '';
  const none = median(rows.find((r) => r.setup === NO_AGENT)?.pps ?? []);
  const tcpdump = median(rows.find((r) => r.setup === TCPDUMP)?.pps ?? []);
  const pct = (a: number, b: number) => (b > 0 ? `${Math.round((a / b) * 100)}%` : '-');
  const offered = OVERLOAD_PPS * OVERLOAD_SECONDS;
  const budget = hostMirrorBudget();
  return [
    `Original traffic under 2x overload (trafgen, 64-byte UDP, ${OVERLOAD_PPS.toLocaleString('en')} pps for ${OVERLOAD_SECONDS} s, every frame selected, flow log on; median of ${OVERLOAD_ROUNDS} interleaved rounds; default budget here: ${budget.pps.toLocaleString('en')} pps, ${(budget.bps / 1e9).toFixed(1)} Gbit/s):`,
    '',
    '| setup | sender pps | rounds | vs no agent | vs tcpdump | copies delivered (median) |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => (r.unavailable !== undefined
      ? `| ${r.setup} | ${r.unavailable} | | | | |`
      : `| ${r.setup} | ${median(r.pps).toLocaleString('en')} | ${r.pps.map((p) => p.toLocaleString('en')).join(', ')} | ${pct(median(r.pps), none)} | ${pct(median(r.pps), tcpdump)} | ${r.copies.length > 0 ? `${median(r.copies).toLocaleString('en')} of ${offered.toLocaleString('en')}` : '-'} |`)),
    '',
  ].join('\n');
}
