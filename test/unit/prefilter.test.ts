import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { buildPacket, pcapFile, type PacketSpec } from '../helpers/build-packet.js';
import { DIR_IN, DIR_OUT } from '../../agent/packet/view.js';
import { compileRules, type RuleSet } from '../../agent/rules/compile.js';
import { PREFILTER_NOTHING, prefilterExpression } from '../../agent/rules/prefilter.js';
import type { VectorFile } from '../vectors/cases.js';

const dir = mkdtempSync(join(tmpdir(), 'mf-prefilter-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Throws (with tcpdump's message) unless libpcap compiles the expression. */
function compiles(expr: string): void {
  execFileSync('tcpdump', ['-d', '-i', 'lo', expr], { stdio: ['ignore', 'ignore', 'pipe'] });
}

let fileNo = 0;
/** Indexes of the frames that pass `expr`, using the per-record timestamps pcapFile() writes. */
function passing(frames: readonly Buffer[], expr: string): number[] {
  const path = join(dir, `f${fileNo++}.pcap`);
  writeFileSync(path, pcapFile(frames));
  const out = execFileSync('tcpdump', ['-r', path, '-nn', '-tt', expr], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.split('\n').filter((l) => l !== '').map((l) => Number(l.split('.')[0]) - 1_700_000_000);
}

function rulesFrom(config: unknown): RuleSet {
  return compileRules(parseConfig(JSON.stringify(config), { localAddresses: [] }));
}

const vectors = JSON.parse(
  readFileSync(fileURLToPath(new URL('../vectors/rules.json', import.meta.url)), 'utf8'),
) as VectorFile;

describe('prefilterExpression on the shared vectors', () => {
  for (const c of vectors.cases) {
    it(`${c.name}: compiles, passes everything accepted, blocks ARP/non-IP/untagged own output`, () => {
      const rules = rulesFrom(c.config);
      const groups = new Map<string, typeof c.steps>();
      for (const s of c.steps) groups.set(`${s.iface}|${s.dir}`, [...(groups.get(`${s.iface}|${s.dir}`) ?? []), s]);
      for (const [key, steps] of groups) {
        const [iface = '', d] = key.split('|');
        const direction = d === 'in' ? DIR_IN : DIR_OUT;
        const frames = steps.map((s) => Buffer.from(s.frame, 'hex'));
        for (const allIp of [false, true]) {
          const expr = prefilterExpression(rules, iface, direction, { allIp });
          compiles(expr);
          const passed = new Set(passing(frames, expr));
          steps.forEach((s, i) => {
            const frame = Buffer.from(s.frame, 'hex');
            const tagged = frame.length >= 14 && (frame.readUInt16BE(12) === 0x8100 || frame.readUInt16BE(12) === 0x88a8);
            const label = `${key} step ${i} (${s.note}) allIp=${allIp}: ${expr}`;
            if (s.expect.reason === 'accept') expect(passed.has(i), label).toBe(true);
            if (s.expect.reason === 'arp' || s.expect.reason === 'non-ip') expect(passed.has(i), label).toBe(false);
            if (s.expect.reason === 'own' && !tagged) expect(passed.has(i), label).toBe(false);
          });
        }
      }
    });
  }
});

describe('prefilterExpression', () => {
  const cfg = (ingressRules: unknown[], extra: Record<string, unknown> = {}) => rulesFrom({
    filters: [{ id: 'f', ingressRules }],
    sessions: [{ id: 's', priority: 1, vni: 1, filterId: 'f', sources: ['eth0'], target: { address: '192.0.2.50' } }],
    ...extra,
  });
  const web = cfg([
    { priority: 1, action: 'accept', protocol: 'TCP', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '10.0.0.0/8', destinationPortRange: '80/443' },
    { priority: 2, action: 'accept', protocol: 'UDP', sourceCidrBlock: '2001:db8::/32', destinationCidrBlock: '::/0', destinationPortRange: '53/53' },
  ]);
  const expr = prefilterExpression(web, 'eth0', DIR_IN, { allIp: false });
  const p = (spec: Partial<PacketSpec>): Buffer =>
    buildPacket({ src: '10.0.0.2', dst: '10.0.0.1', proto: 'tcp', srcPort: 1000, dstPort: 80, ...spec });

  it('keeps out traffic no accept rule can match', () => {
    compiles(expr);
    const frames = [
      p({}),
      p({ dstPort: 22 }),
      p({ dst: '192.168.1.1' }),
      p({ proto: 'udp' }),
      p({ src: '2001:db8::2', dst: '2001:db8::1', proto: 'udp', dstPort: 53 }),
      p({ src: '2001:db9::2', dst: '2001:db8::1', proto: 'udp', dstPort: 53 }),
      p({ src: '2001:db8::2', dst: '2001:db8::1', proto: 'udp', dstPort: 54 }),
    ];
    expect(passing(frames, expr)).toEqual([0, 4]);
  });

  it('lets through IPv4 later fragments of an accepted protocol and IPv6 with extension headers', () => {
    const frames = [
      p({ ipId: 5, fragment: { offset: 64, more: false }, payload: 8 }),
      p({ proto: 'udp', ipId: 5, fragment: { offset: 64, more: false }, payload: 8 }),
      p({ src: '2001:db8::2', dst: '2001:db8::1', proto: 'udp', dstPort: 53, v6ext: [{ type: 60 }] }),
      p({ src: '2001:db8::2', dst: '2001:db8::1', proto: 'udp', ipId: 9, fragment: { offset: 8, more: false }, payload: 8 }),
      p({ dstPort: 80, vlans: [7] }),
    ];
    expect(passing(frames, expr)).toEqual([0, 2, 3, 4]);
  });

  it('passes every IP frame but the own output with allIp', () => {
    const all = prefilterExpression(web, 'eth0', DIR_OUT, { allIp: true });
    compiles(all);
    const frames = [
      p({ dstPort: 22 }),
      p({ src: 'fe80::1', dst: 'ff02::1', proto: 'icmp' }),
      p({ dst: '192.0.2.50', proto: 'udp', dstPort: 4789 }),
      p({ dst: '192.0.2.50', proto: 'udp', dstPort: 4788 }),
    ];
    expect(passing(frames, all)).toEqual([0, 1, 3]);
  });

  it('matches nothing for an interface or direction without accept rules', () => {
    expect(prefilterExpression(web, 'eth0', DIR_OUT, { allIp: false })).toBe(PREFILTER_NOTHING);
    expect(prefilterExpression(web, 'eth7', DIR_IN, { allIp: false })).toBe(PREFILTER_NOTHING);
    const dropOnly = cfg([{ priority: 1, action: 'drop', protocol: 'ALL', sourceCidrBlock: '0.0.0.0/0', destinationCidrBlock: '0.0.0.0/0' }]);
    expect(prefilterExpression(dropOnly, 'eth0', DIR_IN, { allIp: false })).toBe(PREFILTER_NOTHING);
    compiles(PREFILTER_NOTHING);
    expect(passing([p({}), p({ proto: 'icmp' })], PREFILTER_NOTHING)).toEqual([]);
  });

  it('excludes every own output, IPv6 targets and IPFIX collectors included', () => {
    const rules = rulesFrom({
      filters: [{ id: 'f', ingressRules: [{ priority: 1, action: 'accept', protocol: 'ALL', sourceCidrBlock: '::/0', destinationCidrBlock: '::/0' }] }],
      sessions: [{ id: 's', priority: 1, vni: 1, filterId: 'f', sources: ['eth0'], target: { address: '2001:db8::50' } }],
      flowLogs: [{ id: 'fl', sources: ['eth0'], sink: { type: 'ipfix', collector: '[2001:db8::7]:4739' } }],
    });
    const e = prefilterExpression(rules, 'eth0', DIR_IN, { allIp: false });
    compiles(e);
    const v6 = (dst: string, dstPort: number) => p({ src: '2001:db8::1', dst, proto: 'udp', dstPort });
    expect(passing([v6('2001:db8::50', 4789), v6('2001:db8::7', 4739), v6('2001:db8::7', 4789), v6('2001:db8::8', 4739)], e))
      .toEqual([2, 3]);
  });
});
