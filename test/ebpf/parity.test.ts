// The eBPF plane against the TypeScript engine on the one shared list of cases
// (test/vectors/rules.json): every step runs through mf_ingress/mf_egress with
// BPF_PROG_TEST_RUN, and the decision the program reports must equal both the vector's
// expectation and matchPacket()'s. Needs root (loading BPF programs).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { MirrorMaps } from '../../agent/ebpf/mirror-maps.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { compileRules } from '../../agent/rules/compile.js';
import { FragmentTable } from '../../agent/rules/fragments.js';
import { matchPacket, matchReasonName } from '../../agent/rules/match.js';
import type { VectorFile } from '../vectors/cases.js';
import { kernelRefusesTestRun } from './kernel-limits.js';

const vectors = JSON.parse(
  readFileSync(fileURLToPath(new URL('../vectors/rules.json', import.meta.url)), 'utf8'),
) as VectorFile;

// Veth devices (no address, down) give the cases' interface names real ifindexes.
const DEVICES: Record<string, string> = { eth0: 'mfpar0', eth1: 'mfpar1', eth2: 'mfpar2' };
const ifindexes = new Map<string, number>();
let maps: MirrorMaps;


describe('eBPF decisions equal the TypeScript engine on test/vectors/rules.json', () => {
  beforeAll(() => {
    for (const [name, dev] of Object.entries(DEVICES)) {
      try { execFileSync('ip', ['link', 'del', dev], { stdio: 'ignore' }); } catch { /* absent */ }
      execFileSync('ip', ['link', 'add', dev, 'type', 'veth', 'peer', 'name', `${dev}p`]);
      ifindexes.set(name, Number(readFileSync(`/sys/class/net/${dev}/ifindex`, 'utf8')));
    }
    maps = MirrorMaps.open();
  });

  afterAll(() => {
    maps?.close();
    for (const dev of Object.values(DEVICES)) {
      try { execFileSync('ip', ['link', 'del', dev], { stdio: 'ignore' }); } catch { /* already gone */ }
    }
  });

  const view = new PacketView();
  for (const c of vectors.cases) {
    it(`${c.name} (${c.clause})`, () => {
      const rules = compileRules(parseConfig(JSON.stringify(c.config), { localAddresses: ['10.0.0.1'] }));
      const fragments = new FragmentTable();
      const sessions = rules.sessions.map((s) => ({ vni: s.vni, truncLen: s.packetLength, vxlanIfindex: 0, family: s.targetFamily, remote: [0, 0, 0, 0] }));
      maps.install({ rules, ifindexes, sessions, segIfindex: 0 });
      c.steps.forEach((s, i) => {
        const frame = Buffer.from(s.frame, 'hex');
        const dir = s.dir === 'in' ? DIR_IN : DIR_OUT;
        view.direction = dir;
        view.tsUs = 1_700_000_000_000_000 + i * 1000;
        decode(view, frame, frame.length, frame.length);
        const ts = matchPacket(rules, fragments, rules.interfaceIndex(s.iface), view);
        if (kernelRefusesTestRun(frame)) {
          expect(matchReasonName(ts)).toBe('malformed');
          return;
        }
        const bpf = maps.decide(frame, ifindexes.get(s.iface)!, dir).decision;
        const session = bpf >= 0 ? rules.sessions[bpf] : undefined;
        expect({ step: i, note: s.note, bpf, session: session?.id ?? null, vni: session?.vni ?? null, reason: matchReasonName(bpf) })
          .toEqual({ step: i, note: s.note, bpf: ts, ...s.expect });
      });
    });
  }
});
