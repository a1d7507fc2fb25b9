// The mirror budget in the kernel (bpf/budget.bpf.h), run with BPF_PROG_TEST_RUN through
// mf_ingress: a session's bucket and the agent-wide one shed copies past their rate before
// the clone, count them in mf_session_stats.shed, refill with time, and charge an aggregate
// its segment count. Needs root. The segmenting device is a veth left down, so an admitted
// clone goes nowhere (the kernel refuses it: counted as an error, which tells admitted
// copies from shed ones).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { MirrorMaps } from '../../agent/ebpf/mirror-maps.js';
import { buildPacket } from '../helpers/build-packet.js';
import { DIR_IN } from '../../agent/packet/view.js';
import { compileRules } from '../../agent/rules/compile.js';
import type { BudgetRate } from '../../agent/config/types.js';

const DEV = 'mfbud0';
const frame = buildPacket({ src: '10.1.0.1', dst: '10.1.0.2', proto: 'udp', srcPort: 1000, dstPort: 2000, payload: 100 });
const config = (iface: string) => parseConfig(JSON.stringify({
  filters: [{ id: 'tf', ingressRules: [{ priority: 1, action: 'accept', protocol: 'UDP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }], egressRules: [] }],
  sessions: [{ id: 'ts-a', priority: 1, vni: 77, filterId: 'tf', sources: [iface], target: { address: '192.0.2.9' } }],
}), { localAddresses: [] });

describe('mirror budget in mf_ingress (BPF_PROG_TEST_RUN)', () => {
  let maps: MirrorMaps;
  let ifindex = 0;
  let slot = 0;
  const rules = () => compileRules(config(DEV));
  const install = (budget: BudgetRate, agentBudget: BudgetRate) => {
    const r = rules();
    slot = maps.install({
      rules: r,
      ifindexes: new Map([[DEV, ifindex]]),
      sessions: r.sessions.map((s) => ({ vni: s.vni, truncLen: 1500, vxlanIfindex: ifindex, family: s.targetFamily, remote: [0, 0, 0, 0], budget })),
      segIfindex: ifindex,
      agentBudget,
    });
  };
  /** Runs `n` frames through mf_ingress as fast as it goes; returns how many were admitted and how long it took. */
  const offer = (n: number, gsoSegs = 0) => {
    const started = performance.now();
    let admitted = 0;
    for (let i = 0; i < n; i++) {
      const run = maps.decide(frame, ifindex, DIR_IN, 1, gsoSegs);
      expect(run.decision).toBe(0);
      if (!run.shed) admitted++;
    }
    const ended = performance.now();
    return { admitted, ms: ended - started, started, ended };
  };

  beforeAll(() => {
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* absent */ }
    execFileSync('ip', ['link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`]);
    ifindex = Number(readFileSync(`/sys/class/net/${DEV}/ifindex`, 'utf8'));
    maps = MirrorMaps.open();
  });

  afterAll(() => {
    maps?.close();
    try { execFileSync('ip', ['link', 'del', DEV], { stdio: 'ignore' }); } catch { /* already gone */ }
  });

  it('a session budget of 1000 pps lets its 100-packet burst through, sheds the rest (counted), and refills at its rate', async () => {
    install({ pps: 1000, bps: 0 }, { pps: 0, bps: 0 });
    const before = maps.sessionStats(slot, 0);
    const burst = offer(1000);
    // 100 ms of the rate, plus what refilled while the runs went on (1 per ms), plus one at the edge.
    expect(burst.admitted).toBeGreaterThanOrEqual(100);
    expect(burst.admitted).toBeLessThanOrEqual(100 + Math.ceil(burst.ms) + 1);
    let stats = maps.sessionStats(slot, 0);
    expect(stats.shed - before.shed).toBe(1000 - burst.admitted);
    // Every admitted copy reached the clone (refused by the down veth: an error, not a copy).
    expect(stats.errors - before.errors).toBe(burst.admitted);

    // The bucket was empty when the burst ended (it was shedding); by the next run it holds
    // what the time since refilled, 1 per ms, and no more than the run's end allows.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const refill = offer(500);
    expect(refill.admitted).toBeGreaterThanOrEqual(Math.floor(refill.started - burst.ended) - 1);
    expect(refill.admitted).toBeLessThanOrEqual(Math.ceil(refill.ended - burst.ended) + 1);
    stats = maps.sessionStats(slot, 0);
    expect(stats.shed - before.shed).toBe(1500 - burst.admitted - refill.admitted);
  });

  it('the agent-wide budget caps the session too; the byte rate holds on its own', () => {
    install({ pps: 0, bps: 0 }, { pps: 500, bps: 0 });
    // 100 ms of 500 pps is 50; the 64-packet minimum burst is more.
    const agent = offer(400);
    expect(agent.admitted).toBeGreaterThanOrEqual(64);
    expect(agent.admitted).toBeLessThanOrEqual(64 + Math.ceil(agent.ms / 2) + 1);

    // 100 kbit/s: a burst of 64 KiB; each copy is charged its 142 bytes.
    install({ pps: 0, bps: 100_000 }, { pps: 0, bps: 0 });
    const bytes = offer(1000);
    const perCopy = frame.length;
    const expected = Math.floor(65536 / perCopy);
    expect(bytes.admitted).toBeGreaterThanOrEqual(expected);
    expect(bytes.admitted).toBeLessThanOrEqual(expected + Math.ceil((bytes.ms * 12.5) / perCopy) + 1);
  });

  it('an aggregate is charged its gso_segs wire packets, and shed ones count as that many', () => {
    install({ pps: 1000, bps: 0 }, { pps: 0, bps: 0 });
    const before = maps.sessionStats(slot, 0);
    // A 100-packet bucket: two aggregates of 45 segments fit, the third does not (unless ~35 ms passed).
    const runs = [0, 1, 2].map(() => maps.decide(frame, ifindex, DIR_IN, 1, 45).shed);
    expect(runs).toEqual([false, false, true]);
    expect(maps.sessionStats(slot, 0).shed - before.shed).toBe(45);
  });

  it('a reload starts the new slot\'s session buckets full', () => {
    install({ pps: 1000, bps: 0 }, { pps: 0, bps: 0 });
    offer(300);
    install({ pps: 1000, bps: 0 }, { pps: 0, bps: 0 });
    expect(offer(100).admitted).toBe(100);
  });
});
