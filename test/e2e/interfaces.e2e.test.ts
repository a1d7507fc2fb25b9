// Issue 15: a node's every interface. 200 veth pairs in namespaces of the test's own, the
// agent (in the pairs' namespace) on `sources: ["*"]` for a session and a flow log, UDP on
// every pair; then 50 pairs stop and are deleted and 50 new ones created, all while the
// other 150 carry traffic. Checked against the kernel, per veth:
// - every packet each veth sent and received (its own rx/tx counters) is in the flow
//   records under its name, for the pairs that stayed, went and came;
// - a new interface is covered within a second (its traffic starts 1 s after it is created,
//   and the agent's log says when it was covered);
// - nothing is left on a vanished interface: no /metrics series names it, and (eBPF) our
//   TC filters are on exactly the live interfaces, the state file lists exactly them.
// Both data planes. PAIRS (default 200) and CHURN (default 50) scale it down or up.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createVethFarm, FARM_TARGET, type FarmPair, type LinkCounters, type VethFarm } from '../../agent/lab/veth-farm.js';
import { EBPF_STATE_FILE_NAME } from '../../agent/ebpf/data-plane.js';
import type { FlowRecord } from '../../agent/flow/record.js';
import { startLabAgent, type LabAgent } from './helpers/agent.js';
import { startUdp } from './helpers/udp-pairs.js';
import type { Spawned } from '../../agent/exec.js';

const PAIRS = Number(process.env.PAIRS ?? 200);
const CHURN = Number(process.env.CHURN ?? 50);
const BYTES = 200;
const TIMEOUT_MS = 180_000;
/** Traffic runs this long before and after the churn. */
const RUN_MS = 2000;
const COVERED = /"msg":"source interfaces covered"/;
const UNCOVERED = /"msg":"source interfaces no longer covered/;

const farms: VethFarm[] = [];
afterAll(async () => {
  for (const f of farms) await f.destroy();
});

/** Waits until two readings of `pairs`' counters 150 ms apart agree (their last frames are through). */
async function settled(farm: VethFarm, pairs: readonly FarmPair[]): Promise<Map<string, LinkCounters>> {
  const of = (all: Map<string, LinkCounters>) => JSON.stringify(pairs.map((p) => all.get(p.name)));
  let last = await farm.counters();
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 150));
    const now = await farm.counters();
    if (of(now) === of(last)) return now;
    last = now;
  }
  throw new Error('veth counters did not settle');
}

/** Packets per eni-id and direction in the flow records of `file`. */
async function recordedPackets(file: string): Promise<Map<string, { in: number; out: number }>> {
  const out = new Map<string, { in: number; out: number }>();
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    if (line === '') continue;
    const r = JSON.parse(line) as FlowRecord;
    if (r['log-status'] !== 'OK') continue;
    const e = out.get(r['eni-id']) ?? { in: 0, out: 0 };
    if (r.direction === 'in') e.in += r.packets!;
    else e.out += r.packets!;
    out.set(r['eni-id'], e);
  }
  return out;
}

const stopAll = (procs: Spawned[]) => Promise.all(procs.map((p) => (p.running ? p.stop('SIGTERM') : undefined)));

describe.each(['pcap', 'ebpf'] as const)('%s plane: interfaces coming and going under traffic', (plane) => {
  it(`${PAIRS} pairs, ${CHURN} deleted and ${CHURN} created: every packet recorded per veth, new ones covered within a second, nothing left of the gone`, async () => {
    const farm = await createVethFarm();
    farms.push(farm);
    const pairs = await farm.add(PAIRS);
    const flowFile = join(farm.workDir, 'flows.jsonl');
    const agent: LabAgent = await startLabAgent(farm, {
      agent: { dataPlane: plane },
      filters: [{ id: 'tf-all', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }], egressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }] }],
      sessions: [{ id: 'ts-all', priority: 1, vni: 77, filterId: 'tf-all', sources: ['*'], target: { address: FARM_TARGET } }],
      flowLogs: [{ id: 'fl-all', sources: ['*'], window: 5, sink: { type: 'file', path: flowFile } }],
    });
    const traffic: Spawned[] = [];
    try {
      const status = async () => JSON.parse((await agent.cli(['status', '--json'])).out) as { interfaces: Array<{ name: string }> };
      const covered = new Set((await status()).interfaces.map((i) => i.name));
      for (const p of pairs) expect(covered.has(p.name), p.name).toBe(true);

      const gone = pairs.slice(0, CHURN);
      const kept = pairs.slice(CHURN);
      const c0 = await farm.counters();
      const toGone = startUdp(farm.ns.src, gone.map((p) => p.peerAddress), BYTES);
      const toKept = startUdp(farm.ns.src, kept.map((p) => p.peerAddress), BYTES);
      traffic.push(toGone, toKept);
      await new Promise((r) => setTimeout(r, RUN_MS));

      // The 50 go: their traffic stops, their counters are read, then they are deleted under the others' traffic.
      await toGone.stop('SIGTERM');
      const cGone = await settled(farm, gone);
      await farm.remove(gone);
      const createdAt = Date.now();
      const fresh: FarmPair[] = await farm.add(CHURN);
      // Their traffic starts a second after they exist: all of it must be recorded.
      await new Promise((r) => setTimeout(r, 1000));
      traffic.push(startUdp(farm.ns.src, fresh.map((p) => p.peerAddress), BYTES));
      await new Promise((r) => setTimeout(r, RUN_MS));
      await stopAll(traffic);
      const c1 = await settled(farm, [...kept, ...fresh]);

      // When each new interface was covered, by the agent's own log (pino time, ms).
      const coveredAt = new Map<string, number>();
      for (const line of agent.proc.lines.stdout.filter((l) => COVERED.test(l))) {
        const { time, added } = JSON.parse(line) as { time: number; added: string[] };
        for (const name of added) if (!coveredAt.has(name)) coveredAt.set(name, time);
      }
      const latency = fresh.map((p) => (coveredAt.get(p.name) ?? Infinity) - createdAt);
      expect(Math.max(...latency), `coverage latencies ${latency.join(',')}`).toBeLessThan(1000);
      // Bursts coalesce: the 50 deletions and the 50 creations took a rebuild or two each, not one per interface.
      const rebuildsFor = (re: RegExp, key: 'added' | 'removed', names: FarmPair[]) => agent.proc.lines.stdout
        .filter((l) => re.test(l))
        .filter((l) => (JSON.parse(l) as Record<string, string[]>)[key]!.some((n) => names.some((p) => p.name === n))).length;
      const rebuilds = { created: rebuildsFor(COVERED, 'added', fresh), deleted: rebuildsFor(UNCOVERED, 'removed', gone) };
      process.stdout.write(`${plane}: ${CHURN} created covered after ${Math.min(...latency)}..${Math.max(...latency)} ms; rebuilds ${JSON.stringify(rebuilds)}\n`);
      expect(rebuilds.created).toBeLessThanOrEqual(CHURN / 10);
      expect(rebuilds.deleted).toBeLessThanOrEqual(CHURN / 10);

      const live = new Set((await status()).interfaces.map((i) => i.name));
      for (const p of [...kept, ...fresh]) expect(live.has(p.name), p.name).toBe(true);
      for (const p of gone) expect(live.has(p.name), p.name).toBe(false);

      // Nothing labelled with a vanished interface.
      const { stdout: metrics } = await farm.exec('src', 'curl', ['-sS', '--max-time', '5', `http://${agent.metricsListen}/metrics`]);
      const named = (p: FarmPair) => metrics.includes(`interface="${p.name}"`);
      expect(gone.filter(named).map((p) => p.name)).toEqual([]);
      expect(kept.every(named) && fresh.every(named)).toBe(true);

      if (plane === 'ebpf') {
        const state = JSON.parse(await readFile(join(farm.workDir, 'run', EBPF_STATE_FILE_NAME), 'utf8')) as { attachments: Array<{ name: string }> };
        const attached = new Set(state.attachments.map((a) => a.name));
        for (const p of [...kept, ...fresh]) expect(attached.has(p.name), p.name).toBe(true);
        for (const p of gone) expect(attached.has(p.name), p.name).toBe(false);
        // The kernel's word on a sample of them: our filter on ingress and egress.
        for (const p of [kept[0]!, fresh[0]!, fresh.at(-1)!]) {
          for (const hook of ['ingress', 'egress']) {
            const { stdout } = await farm.exec('src', 'tc', ['filter', 'show', 'dev', p.name, hook]);
            expect(stdout, `${p.name} ${hook}`).toMatch(/mf_(ingress|egress)/);
          }
        }
      }

      expect((await agent.proc.stop('SIGTERM', 30_000)).code).toBe(0);
      const recorded = await recordedPackets(flowFile);
      const mismatches: string[] = [];
      const compare = (p: FarmPair, from: LinkCounters | undefined, to: LinkCounters) => {
        const want = { in: to.rx - (from?.rx ?? 0), out: to.tx - (from?.tx ?? 0) };
        const got = recorded.get(p.name) ?? { in: 0, out: 0 };
        if (got.in !== want.in || got.out !== want.out || want.out === 0) mismatches.push(`${p.name}: recorded ${JSON.stringify(got)}, kernel ${JSON.stringify(want)}`);
      };
      for (const p of gone) compare(p, c0.get(p.name), cGone.get(p.name)!);
      for (const p of kept) compare(p, c0.get(p.name), c1.get(p.name)!);
      // Created during the run: the kernel counted them from their first frame.
      for (const p of fresh) compare(p, undefined, c1.get(p.name)!);
      expect(mismatches).toEqual([]);
    } finally {
      await stopAll(traffic);
      if (agent.proc.running) await agent.proc.stop('SIGKILL');
    }
  }, TIMEOUT_MS);
});
