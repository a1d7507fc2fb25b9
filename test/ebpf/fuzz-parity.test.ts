// Issue 7's fuzz run through the BPF program: the same seeded random and mutated frames
// (test/fuzz/frames.ts) go through mf_ingress/mf_egress with BPF_PROG_TEST_RUN and through
// decode() + matchPacket(); every decision must be the same. Later fragments are left out:
// their decision is history (the first fragment's, kept in tables whose eviction differs
// under a million random fragments), covered by the fragment cases of test/vectors.
// A failure prints the seed: FUZZ_SEED=<seed> npx vitest run test/ebpf/fuzz-parity.test.ts
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { MirrorMaps } from '../../agent/ebpf/mirror-maps.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { compileRules } from '../../agent/rules/compile.js';
import { FragmentTable } from '../../agent/rules/fragments.js';
import { matchPacket, matchReasonName } from '../../agent/rules/match.js';
import { FUZZ_CONFIG } from '../fuzz/config.js';
import { FrameMutator, MUTATIONS } from '../fuzz/frames.js';
import { Prng, seedFromEnv } from '../fuzz/prng.js';
import { kernelRefusesTestRun } from './kernel-limits.js';

const FRAMES = 1_000_000;
const SEED = seedFromEnv(0x6d66);
const DEVICE = 'mffuzz0';

describe('fuzz: the BPF program decides like the TypeScript engine on hostile frames', () => {
  let maps: MirrorMaps;
  let ifindex: number;

  beforeAll(() => {
    try { execFileSync('ip', ['link', 'del', DEVICE], { stdio: 'ignore' }); } catch { /* absent */ }
    execFileSync('ip', ['link', 'add', DEVICE, 'type', 'veth', 'peer', 'name', `${DEVICE}p`]);
    ifindex = Number(readFileSync(`/sys/class/net/${DEVICE}/ifindex`, 'utf8'));
    maps = MirrorMaps.open();
  });

  afterAll(() => {
    maps?.close();
    try { execFileSync('ip', ['link', 'del', DEVICE], { stdio: 'ignore' }); } catch { /* gone */ }
  });

  it(`a million mutated frames: same decision in BPF and TypeScript (seed ${SEED})`, () => {
    const rules = compileRules(parseConfig(FUZZ_CONFIG, { localAddresses: [] }));
    const fragments = new FragmentTable();
    const ifindexes = new Map([[rules.interfaces[0]!, ifindex]]);
    maps.install({ rules, ifindexes, sessions: rules.sessions.map((s) => ({ vni: s.vni, truncLen: s.packetLength, vxlanIfindex: 0, family: s.targetFamily, remote: [0, 0, 0, 0] })), segIfindex: 0 });
    const rng = new Prng(SEED);
    const mutator = new FrameMutator(rng);
    const view = new PacketView();
    const byReason = new Map<string, number>();
    const skipped = { refused: 0, laterFragment: 0 };
    let t = 1_700_000_000_000_000;
    for (let n = 0; n < FRAMES; n++) {
      mutator.mutate();
      const frame = mutator.out.subarray(0, mutator.len);
      const dir = rng.below(2) === 0 ? DIR_IN : DIR_OUT;
      view.direction = dir;
      view.tsUs = (t += 1 + rng.below(1000));
      decode(view, frame, frame.length, frame.length);
      const ts = matchPacket(rules, fragments, 0, view);
      if (kernelRefusesTestRun(frame)) {
        skipped.refused++;
        continue;
      }
      const bpf = maps.decide(frame, ifindex, dir).decision;
      if (view.isFragment && view.fragOffset !== 0) {
        skipped.laterFragment++;
        continue;
      }
      if (bpf !== ts) {
        throw new Error(`FUZZ_SEED=${SEED}, frame ${n}, mutation ${MUTATIONS[mutator.kind]}, dir ${dir} (${frame.toString('hex')}): BPF ${matchReasonName(bpf)} (${bpf}), TypeScript ${matchReasonName(ts)} (${ts})`);
      }
      byReason.set(matchReasonName(ts), (byReason.get(matchReasonName(ts)) ?? 0) + 1);
    }
    const compared = [...byReason.values()].reduce((a, b) => a + b, 0);
    expect(compared + skipped.refused + skipped.laterFragment).toBe(FRAMES);
    expect(compared).toBeGreaterThan(FRAMES * 0.8);
    // Every outcome was reached, so the agreement is not only on easy frames.
    for (const reason of ['accept', 'drop', 'no-match', 'arp', 'non-ip', 'malformed']) {
      expect(byReason.get(reason) ?? 0, reason).toBeGreaterThan(100);
    }
    expect(byReason.get('dhcp') ?? 0, 'dhcp').toBeGreaterThan(0);
    console.log(`fuzz parity: ${compared} frames compared, ${skipped.refused} refused by the kernel's test run, ${skipped.laterFragment} later fragments; ${JSON.stringify(Object.fromEntries(byReason))}`);
  }, 180_000);
});
