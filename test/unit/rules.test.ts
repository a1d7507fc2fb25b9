import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { buildPacket, type PacketSpec } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { DIR_IN, DIR_OUT, PacketView } from '../../agent/packet/view.js';
import { compileRules, parseCidr } from '../../agent/rules/compile.js';
import type { RuleSet } from '../../agent/rules/compile.js';
import { FragmentTable } from '../../agent/rules/fragments.js';
import { formatAddress, parseAddress } from '../../agent/packet/address.js';
import { FRAG_SLOTS, FRAG_TTL_US } from '../../agent/rules/fragments.js';
import {
  DROPPED_BY_RULE,
  EXCLUDED_MALFORMED,
  NO_MATCH,
  matchPacket,
  matchReasonName,
} from '../../agent/rules/match.js';
import { buildVectors, type VectorFile } from '../vectors/cases.js';

const VECTORS_PATH = fileURLToPath(new URL('../vectors/rules.json', import.meta.url));

function load(config: unknown) {
  return compileRules(parseConfig(JSON.stringify(config), { localAddresses: ['10.0.0.1'] }));
}

function yaml(text: string) {
  return compileRules(parseConfig(text, { localAddresses: [] }));
}

const view = new PacketView();
/** One fragment table per compiled rule set, as each pipeline has its own. */
const fragmentTables = new WeakMap<RuleSet, FragmentTable>();

function run(rules: RuleSet, iface: string, dir: 0 | 1, frame: Buffer, tsUs = 1_700_000_000_000_000): number {
  view.direction = dir;
  view.tsUs = tsUs;
  decode(view, frame, frame.length, frame.length);
  let fragments = fragmentTables.get(rules);
  if (!fragments) fragmentTables.set(rules, (fragments = new FragmentTable()));
  return matchPacket(rules, fragments, rules.interfaceIndex(iface), view);
}

const generated = `${JSON.stringify(buildVectors(), null, 2)}\n`;
if (process.env.UPDATE_VECTORS === '1') writeFileSync(VECTORS_PATH, generated);

describe('test/vectors/rules.json', () => {
  it('is what test/vectors/cases.ts generates (UPDATE_VECTORS=1 rewrites it)', () => {
    expect(readFileSync(VECTORS_PATH, 'utf8')).toBe(generated);
  });

  const file = JSON.parse(readFileSync(VECTORS_PATH, 'utf8')) as VectorFile;

  it('has at least 45 cases and covers every outcome', () => {
    expect(file.cases.length).toBeGreaterThanOrEqual(45);
    const reasons = new Set(file.cases.flatMap((c) => c.steps.map((s) => s.expect.reason)));
    expect([...reasons].sort()).toEqual(['accept', 'arp', 'dhcp', 'drop', 'malformed', 'no-match', 'non-ip', 'own']);
  });

  for (const c of file.cases) {
    it(`${c.name} (${c.clause})`, () => {
      const rules = load(c.config);
      c.steps.forEach((s, i) => {
        const frame = Buffer.from(s.frame, 'hex');
        const code = run(rules, s.iface, s.dir === 'in' ? DIR_IN : DIR_OUT, frame, 1_700_000_000_000_000 + i * 1000);
        const session = code >= 0 ? rules.sessions[code]! : undefined;
        expect({ step: i, note: s.note, session: session?.id ?? null, vni: session?.vni ?? null, reason: matchReasonName(code) })
          .toEqual({ step: i, note: s.note, ...s.expect });
      });
    });
  }
});

describe('compileRules', () => {
  const rules = yaml(`
filters:
  - id: f1
    ingressRules:
      - { priority: 3, action: accept, protocol: ICMP, sourceCidrBlock: "::/0", destinationCidrBlock: "2001:db8::/32" }
      - { priority: 1, action: drop, protocol: TCP, sourceCidrBlock: 10.1.0.0/16, destinationCidrBlock: 0.0.0.0/0, destinationPortRange: 22/22 }
sessions:
  - { id: b, priority: 5, vni: 50, filterId: f1, sources: [eth1, eth0], target: { address: "2001:db8::9" } }
  - { id: a, priority: 2, vni: 20, filterId: f1, sources: [eth0], target: { address: 192.0.2.1, port: 8472 } }
  - { id: off, priority: 9, enabled: false, filterId: f1, sources: [eth9], target: { address: 192.0.2.2 } }
flowLogs:
  - { id: fl, sources: ["*"], sink: { type: ipfix, collector: "[2001:db8::7]:4739" } }
`);

  it('lists every source interface, including those of disabled sessions', () => {
    expect(rules.interfaces).toEqual(['eth1', 'eth0', 'eth9']);
    expect(rules.interfaceIndex('eth0')).toBe(1);
    expect(rules.interfaceIndex('nope')).toBe(-1);
  });

  it('keeps enabled sessions only, in priority order, with their target family', () => {
    expect(rules.sessions.map((s) => [s.index, s.id, s.vni, s.targetFamily, s.targetPort]))
      .toEqual([[0, 'a', 20, 4, 8472], [1, 'b', 50, 6, 4789]]);
  });

  it('orders chains by session priority and rules by rule priority, per direction', () => {
    const eth0In = rules.chains[rules.interfaceIndex('eth0') * 2 + DIR_IN]!;
    expect(eth0In.map((e) => rules.sessions[e.session]!.id)).toEqual(['a', 'b']);
    expect(eth0In[0]!.rules.map((r) => [r.priority, r.protocol, r.family, r.accept])).toEqual([[1, 6, 4, false], [3, 58, 6, true]]);
    expect(rules.chains[rules.interfaceIndex('eth0') * 2 + DIR_OUT]![0]!.rules).toEqual([]);
    expect(rules.chains[rules.interfaceIndex('eth9') * 2 + DIR_IN]).toEqual([]);
  });

  it('collects every target (enabled or not) and IPFIX collector as own outputs', () => {
    expect(rules.ownOutputs.map((o) => `${o.family} ${formatAddress(o.family, o.words)} ${o.port}`)).toEqual([
      '6 2001:db8::9 4789',
      '4 192.0.2.1 8472',
      '4 192.0.2.2 4789',
      '6 2001:db8::7 4739',
    ]);
  });
});

describe('address parsing', () => {
  it('parses IPv4, IPv6 and IPv4-mapped literals into network-order words', () => {
    expect([...parseAddress('192.0.2.1').words]).toEqual([0xc0000201, 0, 0, 0]);
    expect([...parseAddress('2001:db8::1').words]).toEqual([0x20010db8, 0, 0, 1]);
    expect([...parseAddress('::').words]).toEqual([0, 0, 0, 0]);
    expect([...parseAddress('fe80::').words]).toEqual([0xfe800000, 0, 0, 0]);
    expect([...parseAddress('::ffff:10.0.0.1').words]).toEqual([0, 0, 0xffff, 0x0a000001]);
    expect([...parseAddress('1:2:3:4:5:6:7:8').words]).toEqual([0x10002, 0x30004, 0x50006, 0x70008]);
    expect(() => parseAddress('host.example')).toThrow(/not an IP/);
  });

  it('masks CIDRs per word', () => {
    const c = parseCidr('2001:db8:ff00::/40');
    expect([...c.mask].map((w) => w >>> 0)).toEqual([0xffffffff, 0xff000000, 0, 0]);
    expect([...c.net].map((w) => w >>> 0)).toEqual([0x20010db8, 0xff000000, 0, 0]);
    expect([...parseCidr('0.0.0.0/0').mask]).toEqual([0, 0, 0, 0]);
    expect(parseCidr('10.0.0.0/8').mask[0]! >>> 0).toBe(0xff000000);
  });
});

describe('matchPacket', () => {
  const all = load({
    filters: [{ id: 'f', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }] }],
    sessions: [{ id: 's', priority: 1, vni: 1, filterId: 'f', sources: ['eth0'], target: { address: '192.0.2.50' } }],
  });

  it('names every code for metrics labels', () => {
    expect(matchReasonName(0)).toBe('accept');
    expect(matchReasonName(NO_MATCH)).toBe('no-match');
    expect(matchReasonName(DROPPED_BY_RULE)).toBe('drop');
    expect(matchReasonName(EXCLUDED_MALFORMED)).toBe('malformed');
  });

  it('never mirrors a malformed frame', () => {
    const frame = buildPacket({ src: '10.0.0.2', dst: '10.0.0.1', proto: 'tcp', srcPort: 1, dstPort: 2 });
    frame[14] = 0x44; // IHL 4
    expect(run(all, 'eth0', DIR_IN, frame)).toBe(EXCLUDED_MALFORMED);
  });

  const port80 = load({
    filters: [{ id: 'f', ingressRules: [{ priority: 1, action: 'accept', protocol: 'TCP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0', destinationPortRange: '80/80' }] }],
    sessions: [{ id: 's', priority: 1, vni: 1, filterId: 'f', sources: ['eth0'], target: { address: '192.0.2.50' } }],
  });
  const frag = (id: number, offset: number): Buffer =>
    buildPacket({ src: '10.0.0.2', dst: '10.0.0.1', proto: 'tcp', srcPort: 1, dstPort: 80, ipId: id, fragment: { offset, more: offset === 0 }, payload: 12 });

  it('forgets a first fragment decision after 30 s', () => {
    const t0 = 1_800_000_000_000_000;
    expect(run(port80, 'eth0', DIR_IN, frag(9, 0), t0)).toBe(0);
    expect(run(port80, 'eth0', DIR_IN, frag(9, 32), t0 + FRAG_TTL_US - 1)).toBe(0);
    expect(run(port80, 'eth0', DIR_IN, frag(9, 32), t0 + FRAG_TTL_US)).toBe(NO_MATCH);
  });

  it('keeps working when more first fragments arrive than the table has slots', () => {
    const t0 = 1_900_000_000_000_000;
    const n = FRAG_SLOTS * 2;
    for (let id = 0; id < n; id++) run(port80, 'eth0', DIR_IN, frag(id, 0), t0 + id);
    // The most recent first fragments must still be found; older ones may have been replaced.
    let found = 0;
    for (let id = n - 256; id < n; id++) if (run(port80, 'eth0', DIR_IN, frag(id, 32), t0 + n) === 0) found++;
    expect(found).toBe(256);
  });
});
