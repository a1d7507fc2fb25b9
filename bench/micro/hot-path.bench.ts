// Per-packet costs of the hot paths (vitest bench): decode, rule match with 10 rules × 3
// sessions, VXLAN framing of a copy, and the flow stage (TCP analysis + flow table).
import { bench, describe } from 'vitest';
import { buildPacket } from '../../test/helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { parseConfig } from '../../agent/config/load.js';
import { compileRules } from '../../agent/rules/compile.js';
import { FragmentTable } from '../../agent/rules/fragments.js';
import { matchPacket } from '../../agent/rules/match.js';
import { VXLAN_HEADER_LEN, writeVxlanHeader } from '../../agent/mirror/vxlan.js';
import { FlowStage } from '../../agent/flow/stage.js';

const frames = [
  buildPacket({ src: '10.1.2.3', dst: '10.9.9.9', proto: 'tcp', srcPort: 40000, dstPort: 443, tcpFlags: 0x10, payload: 10 }),
  buildPacket({ src: '10.1.2.3', dst: '10.9.9.9', proto: 'udp', srcPort: 40000, dstPort: 5353, payload: 10 }),
  buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'tcp', srcPort: 1, dstPort: 22, tcpFlags: 0x10 }),
];

// 10 rules per filter, 3 sessions; the frames fall through most of them (worst case).
const rules = (base: number) =>
  Array.from({ length: 10 }, (_, i) =>
    `      - { priority: ${i + 1}, action: ${i === 9 ? 'accept' : 'drop'}, protocol: ${i % 2 ? 'TCP' : 'UDP'}, sourceCidrBlock: 192.168.${base + i}.0/24, destinationCidrBlock: 0.0.0.0/0, destinationPortRange: ${1000 + i}/${2000 + i} }`,
  ).join('\n');
const config = parseConfig(`
agent: { vmId: bench, metrics: { listen: "" } }
filters:
${[0, 1, 2].map((f) => `  - id: tf-${f}\n    ingressRules: []\n    egressRules:\n${rules(f * 10)}`).join('\n')}
sessions:
${[0, 1, 2].map((s) => `  - { id: ts-${s}, priority: ${s + 1}, vni: ${s + 10}, filterId: tf-${s}, sources: [eth0], target: { address: 192.0.2.${s + 1} } }`).join('\n')}
flowLogs:
  - { id: fl, sources: [eth0], window: 60, sink: { type: stdout } }
`, { localAddresses: [] });
const ruleSet = compileRules(config);
const fragments = new FragmentTable();
const view = new PacketView();
const out = Buffer.alloc(9000);
const flow = new FlowStage({ config, interfaces: ruleSet.interfaces, emit: () => undefined });
let i = 0;
let ts = 1_700_000_000_000_000;

describe('hot path, per packet', () => {
  bench('decode', () => {
    const f = frames[i++ % 3]!;
    decode(view, f, f.length, f.length);
  });
  bench('decode + match (10 rules x 3 sessions)', () => {
    const f = frames[i++ % 3]!;
    view.direction = DIR_OUT;
    decode(view, f, f.length, f.length);
    matchPacket(ruleSet, fragments, 0, view);
  });
  bench('VXLAN framing of a 1500-byte copy', () => {
    writeVxlanHeader(out, 0, 4242);
    frames[0]!.copy(out, VXLAN_HEADER_LEN, 0, frames[0]!.length);
  });
  bench('decode + flow stage (TCP analysis + flow table)', () => {
    const f = frames[i++ % 3]!;
    view.tsUs = ts += 10;
    view.direction = DIR_OUT;
    decode(view, f, f.length, f.length);
    flow.observe(0, view, -1);
  });
});
