// Source of test/vectors/rules.json: mirror-rule cases (SPEC §2) shared by the pcap and
// eBPF data planes. The JSON is the contract; this file only generates it. Regenerate with
//   UPDATE_VECTORS=1 npx vitest run test/unit/rules.test.ts
// (the test fails when the committed JSON differs from what this file produces).

import { arpRequest, buildPacket, ethernet, type PacketSpec } from '../helpers/build-packet.js';

export type Reason = 'accept' | 'no-match' | 'drop' | 'arp' | 'dhcp' | 'own' | 'non-ip' | 'malformed';

export interface VectorStep {
  iface: string;
  dir: 'in' | 'out';
  /** The whole Ethernet frame, hex. */
  frame: string;
  /** What the frame is, for humans reading a failure. */
  note: string;
  expect: { session: string | null; vni: number | null; reason: Reason };
}

export interface VectorCase {
  name: string;
  clause: string;
  /** A mirrorflow config in the user-facing SPEC §1 form. */
  config: Record<string, unknown>;
  steps: VectorStep[];
}

export interface VectorFile {
  description: string;
  cases: VectorCase[];
}

type UserRule = {
  priority: number;
  action: 'accept' | 'drop';
  protocol: 'ALL' | 'ICMP' | 'TCP' | 'UDP';
  sourceCidrBlock: string;
  destinationCidrBlock: string;
  sourcePortRange?: string;
  destinationPortRange?: string;
};

const V4_ANY = '0.0.0.0/0';
const V6_ANY = '::/0';
const HOST = '10.0.0.1';
const PEER = '10.0.0.2';
const HOST6 = '2001:db8:1::1';
const PEER6 = '2001:db8:1::2';
const TARGET = { address: '192.0.2.50', port: 4789 };

function rule(
  priority: number, action: 'accept' | 'drop', protocol: UserRule['protocol'],
  src = V4_ANY, dst = V4_ANY, sourcePortRange?: string, destinationPortRange?: string,
): UserRule {
  const r: UserRule = { priority, action, protocol, sourceCidrBlock: src, destinationCidrBlock: dst };
  if (sourcePortRange) r.sourcePortRange = sourcePortRange;
  if (destinationPortRange) r.destinationPortRange = destinationPortRange;
  return r;
}

function filter(id: string, ingressRules: UserRule[], egressRules: UserRule[] = []) {
  return { id, ingressRules, egressRules };
}

interface SessionOpts {
  sources?: string[];
  enabled?: boolean;
  target?: { address: string; port: number };
}

function session(id: string, priority: number, vni: number, filterId: string, opts: SessionOpts = {}) {
  return {
    id,
    priority,
    vni,
    filterId,
    enabled: opts.enabled ?? true,
    sources: opts.sources ?? ['eth0'],
    target: opts.target ?? TARGET,
  };
}

function config(filters: unknown[], sessions: unknown[], flowLogs?: unknown[]): Record<string, unknown> {
  const c: Record<string, unknown> = { agent: { vmId: 'vectors' }, filters, sessions };
  if (flowLogs) c.flowLogs = flowLogs;
  return c;
}

type Expect = VectorStep['expect'];
const accept = (session: string, vni: number): Expect => ({ session, vni, reason: 'accept' });
const none = (reason: Exclude<Reason, 'accept'>): Expect => ({ session: null, vni: null, reason });

function describe(p: PacketSpec): string {
  const proto = typeof p.proto === 'number' ? `proto ${p.proto}` : p.proto;
  const ports = p.srcPort !== undefined || p.dstPort !== undefined ? ` ${p.srcPort ?? 0}->${p.dstPort ?? 0}` : '';
  const frag = p.fragment ? ` frag off=${p.fragment.offset}${p.fragment.more ? ' MF' : ''} id=${p.ipId ?? 1}` : '';
  const vlan = p.vlans ? ` vlan ${p.vlans.join('/')}` : '';
  return `${proto} ${p.src} -> ${p.dst}${ports}${frag}${vlan}`;
}

function step(p: PacketSpec, expect: Expect, dir: 'in' | 'out' = 'in', iface = 'eth0'): VectorStep {
  return { iface, dir, frame: buildPacket(p).toString('hex'), note: describe(p), expect };
}

function rawStep(frame: Buffer, note: string, expect: Expect, dir: 'in' | 'out' = 'in'): VectorStep {
  return { iface: 'eth0', dir, frame: frame.toString('hex'), note, expect };
}

const tcpTo = (dstPort: number, srcPort = 40000, more: Partial<PacketSpec> = {}): PacketSpec =>
  ({ src: PEER, dst: HOST, proto: 'tcp', srcPort, dstPort, ...more });
const udpTo = (dstPort: number, srcPort = 40000, more: Partial<PacketSpec> = {}): PacketSpec =>
  ({ src: PEER, dst: HOST, proto: 'udp', srcPort, dstPort, ...more });

/** One-session config: filter f1 with the given ingress (and egress) rules, session ts-1 vni 10. */
function single(ingress: UserRule[], egress: UserRule[] = []) {
  return config([filter('f1', ingress, egress)], [session('ts-1', 1, 10, 'f1')]);
}

// Byte offsets in an untagged frame, for the parser cases that damage one field.
const IP = 14;
const V4_L4 = IP + 20;
const V6_L4 = IP + 40;

/** A copy of `frame` with bytes written at offsets (the damage a parser case is about). */
function patched(frame: Buffer, edits: Array<[number, number[]]>): Buffer {
  const out = Buffer.from(frame);
  for (const [offset, bytes] of edits) bytes.forEach((b, i) => { out[offset + i] = b; });
  return out;
}

const u16be = (n: number): number[] => [n >> 8, n & 0xff];

/** An IPv4 TCP frame with `words` 32-bit words of IP options (NOPs) after the fixed header. */
function withIpv4Options(frame: Buffer, words: number): Buffer {
  const options = Buffer.alloc(words * 4, 0x01);
  const out = Buffer.concat([frame.subarray(0, V4_L4), options, frame.subarray(V4_L4)]);
  out[IP] = 0x40 | (5 + words);
  out.writeUInt16BE(out.readUInt16BE(IP + 2) + words * 4, IP + 2);
  return out;
}

/** An IPv4 TCP frame with `words` 32-bit words of TCP options (NOPs). */
function withTcpOptions(frame: Buffer, words: number): Buffer {
  const tcpOff = V4_L4;
  const out = Buffer.concat([frame.subarray(0, tcpOff + 20), Buffer.alloc(words * 4, 0x01), frame.subarray(tcpOff + 20)]);
  out[tcpOff + 12] = (5 + words) << 4;
  out.writeUInt16BE(out.readUInt16BE(IP + 2) + words * 4, IP + 2);
  return out;
}

/** Cases aimed at the parsers (TypeScript decode() and bpf/parse.bpf.h): one damaged or unusual field each. */
function parserCases(): VectorCase[] {
  const cfg4 = single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '80/80'), rule(2, 'accept', 'UDP', V4_ANY, V4_ANY, '-1/-1', '53/53'), rule(3, 'accept', 'ICMP')]);
  const cfg6 = single([rule(1, 'accept', 'UDP', V6_ANY, V6_ANY, '-1/-1', '53/53'), rule(2, 'accept', 'TCP', V6_ANY, V6_ANY, '-1/-1', '80/80')]);
  const web = buildPacket(tcpTo(80));
  const dns6 = (more: Partial<PacketSpec> = {}): PacketSpec => ({ src: PEER6, dst: HOST6, proto: 'udp', srcPort: 1000, dstPort: 53, ...more });
  const bad = none('malformed');
  const ok = accept('ts-1', 10);
  const one = (name: string, clause: string, config: Record<string, unknown>, frame: Buffer, note: string, expect: Expect): VectorCase =>
    ({ name, clause, config, steps: [rawStep(frame, note, expect)] });
  return [
    one('parser-runt-frame', 'parser: shorter than an Ethernet header', cfg4, web.subarray(0, 13), '13-byte frame', bad),
    one('parser-ethernet-only', 'parser: IPv4 ethertype, no IP header', cfg4, web.subarray(0, 14), 'Ethernet header only', bad),
    one('parser-ipv4-header-cut', 'parser: IPv4 header cut short', cfg4, web.subarray(0, 30), 'IPv4 header 16 bytes', bad),
    one('parser-ipv4-bad-version', 'parser: IPv4 version field not 4', cfg4, patched(web, [[IP, [0x55]]]), 'version 5', bad),
    one('parser-ipv4-ihl-too-small', 'parser: IPv4 IHL below 5', cfg4, patched(web, [[IP, [0x44]]]), 'IHL 4', bad),
    one('parser-ipv4-ihl-beyond-frame', 'parser: IPv4 IHL beyond the frame', cfg4, patched(web, [[IP, [0x4f]]]), 'IHL 15 on a 40-byte packet', bad),
    one('parser-ipv4-total-length-beyond-frame', 'parser: IPv4 total length beyond the frame', cfg4, patched(web, [[IP + 2, u16be(1500)]]), 'total length 1500 on a 54-byte frame', bad),
    one('parser-ipv4-total-length-below-ihl', 'parser: IPv4 total length shorter than the header', cfg4, patched(web, [[IP + 2, u16be(16)]]), 'total length 16', bad),
    one('parser-ipv4-options', 'parser: IPv4 options move the transport header', cfg4, withIpv4Options(web, 3), 'IHL 8 (12 bytes of options), TCP to 80', ok),
    one('parser-ipv4-options-max', 'parser: IPv4 IHL 15', cfg4, withIpv4Options(web, 10), 'IHL 15 (40 bytes of options), TCP to 80', ok),
    one('parser-ethernet-padding', 'parser: Ethernet padding after the IP packet', cfg4, Buffer.concat([buildPacket(udpTo(53, 1000, { payload: 2 })), Buffer.alloc(12, 0xee)]), 'UDP in a 64-byte padded frame', ok),
    one('parser-tcp-options', 'parser: TCP options (data offset 15)', cfg4, withTcpOptions(web, 10), 'TCP data offset 15', ok),
    one('parser-tcp-data-offset-too-small', 'parser: TCP data offset below 5', cfg4, patched(web, [[V4_L4 + 12, [0x40]]]), 'TCP data offset 4', bad),
    one('parser-tcp-data-offset-beyond-ip', 'parser: TCP data offset beyond the IP payload', cfg4, patched(web, [[V4_L4 + 12, [0xf0]]]), 'TCP data offset 15 on a 20-byte segment', bad),
    one('parser-tcp-header-cut', 'parser: IP payload shorter than a TCP header', cfg4, patched(web, [[IP + 2, u16be(30)]]), 'TCP header 10 bytes inside the IP length', bad),
    one('parser-udp-header-cut', 'parser: IP payload shorter than a UDP header', cfg4, patched(buildPacket(udpTo(53)), [[IP + 2, u16be(24)]]), 'UDP header 4 bytes inside the IP length', bad),
    one('parser-icmp-header-cut', 'parser: IP payload shorter than an ICMP header', cfg4, patched(buildPacket({ src: PEER, dst: HOST, proto: 'icmp' }), [[IP + 2, u16be(22)]]), 'ICMP header 2 bytes', bad),
    one('parser-first-fragment-without-ports', 'parser: a first fragment too short for the transport header', cfg4, patched(buildPacket(udpTo(53, 1000, { ipId: 9, fragment: { offset: 0, more: true } })), [[IP + 2, u16be(24)]]), 'first fragment, UDP header cut', bad),
    one('parser-vlan-ipv4-header-cut', 'parser: IPv4 header cut short behind a VLAN tag', cfg4, buildPacket(tcpTo(80, 40000, { vlans: [7] })).subarray(0, 18 + 19), 'tag, IPv4 header 19 bytes', bad),
    one('parser-vlan-ethernet-only', 'parser: VLAN tag naming IPv4, nothing after it', cfg4, buildPacket(tcpTo(80, 40000, { vlans: [7] })).subarray(0, 18), 'tag, no IP header', bad),
    one('parser-ipv6-header-cut', 'parser: IPv6 header cut short', cfg6, buildPacket(dns6()).subarray(0, IP + 39), 'IPv6 header 39 bytes', bad),
    one('parser-vlan-ipv6-header-cut', 'parser: IPv6 header cut short behind a VLAN tag', cfg6, buildPacket(dns6({ vlans: [7] })).subarray(0, 18 + 39), 'tag, IPv6 header 39 bytes', bad),
    one('parser-ipv6-bad-version', 'parser: IPv6 version field not 6', cfg6, patched(buildPacket(dns6()), [[IP, [0x40]]]), 'version 4 under the IPv6 ethertype', bad),
    one('parser-ipv6-payload-length-beyond-frame', 'parser: IPv6 payload length beyond the frame', cfg6, patched(buildPacket(dns6()), [[IP + 4, u16be(200)]]), 'payload length 200', bad),
    one('parser-ipv6-ah', 'parser: IPv6 AH header length in 4-byte units', cfg6, buildPacket(dns6({ v6ext: [{ type: 51, length: 12 }] })), 'AH (12 bytes) then UDP 53', ok),
    one('parser-ipv6-hbh-not-first', 'parser: IPv6 hop-by-hop after another extension header', cfg6, buildPacket(dns6({ v6ext: [{ type: 60 }, { type: 0 }] })), 'dest-opts then hop-by-hop', bad),
    one('parser-ipv6-eight-extension-headers', 'parser: IPv6 with 8 extension headers (the most walked)', cfg6, buildPacket(dns6({ v6ext: Array.from({ length: 8 }, () => ({ type: 60 })) })), '8 dest-opts then UDP 53', ok),
    one('parser-ipv6-nine-extension-headers', 'parser: IPv6 with 9 extension headers', cfg6, buildPacket(dns6({ v6ext: Array.from({ length: 9 }, () => ({ type: 60 })) })), '9 dest-opts', bad),
    one('parser-ipv6-extension-beyond-payload', 'parser: IPv6 extension header longer than the payload', cfg6, patched(buildPacket(dns6({ v6ext: [{ type: 60 }] })), [[V6_L4 + 1, [20]]]), 'dest-opts claiming 168 bytes', bad),
    one('parser-ipv6-udp-header-cut', 'parser: IPv6 payload shorter than a UDP header', cfg6, patched(buildPacket(dns6()), [[IP + 4, u16be(4)]]), 'UDP header 4 bytes inside the payload length', bad),
    {
      name: 'parser-ipv6-fragment-after-extension',
      clause: 'parser: IPv6 fragment header after another extension header',
      config: cfg6,
      steps: [
        step(dns6({ ipId: 77, v6ext: [{ type: 60 }], fragment: { offset: 0, more: true }, payload: 16 }), ok),
        step(dns6({ ipId: 77, v6ext: [{ type: 60 }], fragment: { offset: 24, more: false }, payload: 8 }), ok),
      ],
    },
    one('parser-vlan-three-tags', 'parser: three VLAN tags (the most accepted)', cfg4, buildPacket(tcpTo(80, 40000, { vlans: [1, 2, 3] })), 'three tags, TCP to 80', ok),
    one('parser-vlan-four-tags', 'parser: four VLAN tags', cfg4, buildPacket(tcpTo(80, 40000, { vlans: [1, 2, 3, 4] })), 'four tags', bad),
    one('parser-vlan-tag-cut', 'parser: frame ends inside a VLAN tag', cfg4, buildPacket(tcpTo(80, 40000, { vlans: [7] })).subarray(0, 17), 'tag without its ethertype', bad),
    one('parser-unknown-protocol', 'parser: IPv4 protocol without ports matches protocol ALL', single([rule(1, 'accept', 'ALL')]), buildPacket({ src: PEER, dst: HOST, proto: 47, payload: 4 }), 'GRE', ok),
  ];
}

function cases(): VectorCase[] {
  const web = [rule(1, 'accept', 'TCP', V4_ANY, '10.0.0.0/8', '-1/-1', '80/443')];
  const list: VectorCase[] = [
    {
      name: 'tcp-accept-in-range',
      clause: '2.2 rule match: protocol, CIDRs, port range',
      config: single(web),
      steps: [step(tcpTo(80), accept('ts-1', 10)), step(tcpTo(100), accept('ts-1', 10))],
    },
    {
      name: 'port-range-ends',
      clause: '2.2 port range inclusive ends',
      config: single(web),
      steps: [
        step(tcpTo(79), none('no-match')),
        step(tcpTo(80), accept('ts-1', 10)),
        step(tcpTo(443), accept('ts-1', 10)),
        step(tcpTo(444), none('no-match')),
      ],
    },
    {
      name: 'port-edge-zero',
      clause: '2.2 port range edge 0',
      config: single([rule(1, 'accept', 'UDP', V4_ANY, V4_ANY, '-1/-1', '0/0')]),
      steps: [step(udpTo(0), accept('ts-1', 10)), step(udpTo(1), none('no-match'))],
    },
    {
      name: 'port-edge-65535',
      clause: '2.2 port range edge 65535',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '65535/65535', '-1/-1')]),
      steps: [step(tcpTo(80, 65535), accept('ts-1', 10)), step(tcpTo(80, 65534), none('no-match'))],
    },
    {
      name: 'port-full-range',
      clause: '2.2 port range 0/65535 covers every port',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '0/65535', '0/65535')]),
      steps: [step(tcpTo(0, 0), accept('ts-1', 10)), step(tcpTo(65535, 65535), accept('ts-1', 10))],
    },
    {
      name: 'source-and-destination-ports',
      clause: '2.2 both port ranges must match',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '1024/65535', '22/22')]),
      steps: [
        step(tcpTo(22, 50000), accept('ts-1', 10)),
        step(tcpTo(22, 1023), none('no-match')),
        step(tcpTo(23, 50000), none('no-match')),
      ],
    },
    {
      name: 'source-and-destination-cidr',
      clause: '2.2 both CIDRs must match',
      config: single([rule(1, 'accept', 'ALL', '10.0.0.0/24', '10.0.0.1/32')]),
      steps: [
        step(tcpTo(80), accept('ts-1', 10)),
        step({ src: '10.0.1.2', dst: HOST, proto: 'tcp', srcPort: 1, dstPort: 80 }, none('no-match')),
        step({ src: PEER, dst: '10.0.0.3', proto: 'tcp', srcPort: 1, dstPort: 80 }, none('no-match')),
      ],
    },
    {
      name: 'session-priority-order',
      clause: '2.1 sessions by priority, smallest first (listed out of order)',
      config: config(
        [filter('f-all', [rule(1, 'accept', 'ALL')])],
        [session('ts-late', 9, 90, 'f-all'), session('ts-early', 2, 20, 'f-all')],
      ),
      steps: [step(tcpTo(80), accept('ts-early', 20)), step(udpTo(53), accept('ts-early', 20))],
    },
    {
      name: 'rule-priority-order',
      clause: '2.2 rules by priority (listed out of order)',
      config: single([
        rule(20, 'accept', 'TCP'),
        rule(5, 'drop', 'TCP', V4_ANY, V4_ANY, '-1/-1', '22/22'),
      ]),
      steps: [step(tcpTo(22), none('drop')), step(tcpTo(80), accept('ts-1', 10))],
    },
    {
      name: 'first-match-drop-before-accept',
      clause: '2.2 first matching rule decides: drop',
      config: single([rule(1, 'drop', 'ALL', '10.0.0.2/32', V4_ANY), rule(2, 'accept', 'ALL')]),
      steps: [
        step(tcpTo(80), none('drop')),
        step({ src: '10.0.0.9', dst: HOST, proto: 'tcp', srcPort: 1, dstPort: 80 }, accept('ts-1', 10)),
      ],
    },
    {
      name: 'first-match-accept-before-drop',
      clause: '2.2 first matching rule decides: accept',
      config: single([rule(1, 'accept', 'TCP'), rule(2, 'drop', 'ALL')]),
      steps: [step(tcpTo(80), accept('ts-1', 10)), step(udpTo(53), none('drop'))],
    },
    {
      name: 'drop-stops-evaluation',
      clause: '2.2 drop stops evaluation, no fall-through to later sessions',
      config: config(
        [filter('f-drop', [rule(1, 'drop', 'TCP')]), filter('f-all', [rule(1, 'accept', 'ALL')])],
        [session('ts-1', 1, 10, 'f-drop'), session('ts-2', 2, 20, 'f-all')],
      ),
      steps: [step(tcpTo(80), none('drop')), step(udpTo(53), accept('ts-2', 20))],
    },
    {
      name: 'session-fall-through',
      clause: '2.3 no rule of a session matched: next session',
      config: config(
        [filter('f-udp', [rule(1, 'accept', 'UDP')]), filter('f-tcp', [rule(1, 'accept', 'TCP')])],
        [session('ts-1', 1, 10, 'f-udp'), session('ts-2', 2, 20, 'f-tcp')],
      ),
      steps: [
        step(udpTo(53), accept('ts-1', 10)),
        step(tcpTo(80), accept('ts-2', 20)),
        step({ src: PEER, dst: HOST, proto: 'icmp' }, none('no-match')),
      ],
    },
    {
      name: 'three-sessions-per-interface',
      clause: '2.1/2.3 walk up to three sessions in priority order',
      config: config(
        [
          filter('f-a', [rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '22/22')]),
          filter('f-b', [rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '80/80')]),
          filter('f-c', [rule(1, 'accept', 'TCP')]),
        ],
        [session('ts-c', 30, 30, 'f-c'), session('ts-a', 10, 10, 'f-a'), session('ts-b', 20, 20, 'f-b')],
      ),
      steps: [
        step(tcpTo(22), accept('ts-a', 10)),
        step(tcpTo(80), accept('ts-b', 20)),
        step(tcpTo(8080), accept('ts-c', 30)),
      ],
    },
    {
      name: 'empty-filter',
      clause: '2.3 a filter with no rules mirrors nothing',
      config: single([]),
      steps: [
        step(tcpTo(80), none('no-match')),
        step(udpTo(53), none('no-match')),
        step({ src: PEER, dst: HOST, proto: 'icmp' }, none('no-match')),
      ],
    },
    {
      name: 'empty-filter-falls-through',
      clause: '2.3 empty filter then next session',
      config: config(
        [filter('f-empty', []), filter('f-all', [rule(1, 'accept', 'ALL')])],
        [session('ts-1', 1, 10, 'f-empty'), session('ts-2', 2, 20, 'f-all')],
      ),
      steps: [step(tcpTo(80), accept('ts-2', 20))],
    },
    {
      name: 'disabled-session-ignored',
      clause: '2.1 only enabled sessions',
      config: config(
        [filter('f-all', [rule(1, 'accept', 'ALL')]), filter('f-tcp', [rule(1, 'accept', 'TCP')])],
        [session('ts-off', 1, 10, 'f-all', { enabled: false }), session('ts-on', 2, 20, 'f-tcp')],
      ),
      steps: [step(tcpTo(80), accept('ts-on', 20)), step(udpTo(53), none('no-match'))],
    },
    {
      name: 'only-session-disabled',
      clause: '2.1 only enabled sessions',
      config: config([filter('f-all', [rule(1, 'accept', 'ALL')])], [session('ts-off', 1, 10, 'f-all', { enabled: false })]),
      steps: [step(tcpTo(80), none('no-match'))],
    },
    {
      name: 'ingress-rules-only',
      clause: '2 direction: ingress rules apply to received packets only',
      config: single([rule(1, 'accept', 'TCP')]),
      steps: [step(tcpTo(80), accept('ts-1', 10), 'in'), step(tcpTo(80), none('no-match'), 'out')],
    },
    {
      name: 'egress-rules-only',
      clause: '2 direction: egress rules apply to transmitted packets only',
      config: single([], [rule(1, 'accept', 'UDP')]),
      steps: [
        step(udpTo(53), none('no-match'), 'in'),
        step({ src: HOST, dst: PEER, proto: 'udp', srcPort: 40000, dstPort: 53 }, accept('ts-1', 10), 'out'),
      ],
    },
    {
      name: 'direction-specific-actions',
      clause: '2 direction: different rules per direction',
      config: single([rule(1, 'drop', 'ALL')], [rule(1, 'accept', 'ALL')]),
      steps: [step(tcpTo(80), none('drop'), 'in'), step(tcpTo(80), accept('ts-1', 10), 'out')],
    },
    {
      name: 'interface-not-listed',
      clause: '2.1 only sessions that list the interface',
      config: single([rule(1, 'accept', 'ALL')]),
      steps: [step(tcpTo(80), none('no-match'), 'in', 'eth1'), step(tcpTo(80), accept('ts-1', 10), 'in', 'eth0')],
    },
    {
      name: 'per-interface-sessions',
      clause: '2.1 sessions of interface I',
      config: config(
        [filter('f-all', [rule(1, 'accept', 'ALL')])],
        [
          session('ts-0', 1, 10, 'f-all', { sources: ['eth0'] }),
          session('ts-1', 2, 11, 'f-all', { sources: ['eth1', 'eth2'] }),
        ],
      ),
      steps: [
        step(tcpTo(80), accept('ts-0', 10), 'in', 'eth0'),
        step(tcpTo(80), accept('ts-1', 11), 'in', 'eth1'),
        step(tcpTo(80), accept('ts-1', 11), 'in', 'eth2'),
      ],
    },
    {
      name: 'icmp-v4',
      clause: '2.2 protocol ICMP',
      config: single([rule(1, 'accept', 'ICMP')]),
      steps: [
        step({ src: PEER, dst: HOST, proto: 'icmp', icmpType: 8 }, accept('ts-1', 10)),
        step({ src: PEER, dst: HOST, proto: 'icmp', icmpType: 3, icmpCode: 3 }, accept('ts-1', 10)),
        step(tcpTo(80), none('no-match')),
      ],
    },
    {
      name: 'icmpv6-on-ipv6-rule',
      clause: '2.2 protocol ICMP on an IPv6 rule means ICMPv6',
      config: single([rule(1, 'accept', 'ICMP', V6_ANY, V6_ANY)]),
      steps: [
        step({ src: PEER6, dst: HOST6, proto: 'icmp', icmpType: 128 }, accept('ts-1', 10)),
        step({ src: PEER, dst: HOST, proto: 'icmp' }, none('no-match')),
        step({ src: PEER6, dst: HOST6, proto: 1 }, none('no-match')),
      ],
    },
    {
      name: 'icmp-v4-rule-ignores-icmpv6',
      clause: '2 a rule matches the family of its CIDRs',
      config: single([rule(1, 'accept', 'ICMP')]),
      steps: [step({ src: PEER6, dst: HOST6, proto: 'icmp' }, none('no-match'))],
    },
    {
      name: 'all-protocol',
      clause: '2.2 protocol ALL',
      config: single([rule(1, 'accept', 'ALL')]),
      steps: [
        step(tcpTo(80), accept('ts-1', 10)),
        step(udpTo(53), accept('ts-1', 10)),
        step({ src: PEER, dst: HOST, proto: 'icmp' }, accept('ts-1', 10)),
        step({ src: PEER, dst: HOST, proto: 47, payload: 24 }, accept('ts-1', 10)),
      ],
    },
    {
      name: 'other-protocol-gre',
      clause: '2.2 protocols other than TCP/UDP/ICMP only match ALL',
      config: single([rule(1, 'accept', 'TCP'), rule(2, 'accept', 'UDP'), rule(3, 'accept', 'ICMP')]),
      steps: [
        step({ src: PEER, dst: HOST, proto: 47, payload: 24 }, none('no-match')),
        step({ src: PEER, dst: HOST, proto: 132, payload: 16 }, none('no-match')),
      ],
    },
    {
      name: 'tcp-rule-vs-udp-packet',
      clause: '2.2 protocol must match',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '53/53')]),
      steps: [step(udpTo(53), none('no-match')), step(tcpTo(53), accept('ts-1', 10))],
    },
    {
      name: 'udp-rule-vs-tcp-packet',
      clause: '2.2 protocol must match',
      config: single([rule(1, 'accept', 'UDP')]),
      steps: [step(tcpTo(53), none('no-match')), step(udpTo(53), accept('ts-1', 10))],
    },
    {
      name: 'ipv6-cidr-128',
      clause: '2 IPv6 CIDR /128',
      config: single([rule(1, 'accept', 'TCP', `${PEER6}/128`, V6_ANY)]),
      steps: [
        step({ src: PEER6, dst: HOST6, proto: 'tcp', srcPort: 1, dstPort: 80 }, accept('ts-1', 10)),
        step({ src: '2001:db8:1::3', dst: HOST6, proto: 'tcp', srcPort: 1, dstPort: 80 }, none('no-match')),
      ],
    },
    {
      name: 'ipv6-cidr-64',
      clause: '2 IPv6 CIDR /64',
      config: single([rule(1, 'accept', 'UDP', V6_ANY, '2001:db8:1::/64')]),
      steps: [
        step({ src: PEER6, dst: '2001:db8:1::ffff:1', proto: 'udp', srcPort: 1, dstPort: 53 }, accept('ts-1', 10)),
        step({ src: PEER6, dst: '2001:db8:1:0:8000::1', proto: 'udp', srcPort: 1, dstPort: 53 }, accept('ts-1', 10)),
        step({ src: PEER6, dst: '2001:db8:2::1', proto: 'udp', srcPort: 1, dstPort: 53 }, none('no-match')),
      ],
    },
    {
      name: 'ipv6-any',
      clause: '2 IPv6 CIDR ::/0',
      config: single([rule(1, 'accept', 'ALL', V6_ANY, V6_ANY)]),
      steps: [
        step({ src: 'fe80::1', dst: 'ff02::1', proto: 'udp', srcPort: 5353, dstPort: 5353 }, accept('ts-1', 10)),
        step({ src: PEER6, dst: HOST6, proto: 47 }, accept('ts-1', 10)),
      ],
    },
    {
      name: 'ipv4-rule-not-ipv6-packet',
      clause: '2 a rule matches the family of its CIDRs',
      config: single([rule(1, 'accept', 'ALL')]),
      steps: [
        step({ src: PEER6, dst: HOST6, proto: 'tcp', srcPort: 1, dstPort: 80 }, none('no-match')),
        step({ src: '::ffff:10.0.0.2', dst: '::ffff:10.0.0.1', proto: 'tcp', srcPort: 1, dstPort: 80 }, none('no-match')),
      ],
    },
    {
      name: 'ipv6-rule-not-ipv4-packet',
      clause: '2 a rule matches the family of its CIDRs',
      config: single([rule(1, 'accept', 'ALL', V6_ANY, V6_ANY)]),
      steps: [step(tcpTo(80), none('no-match'))],
    },
    {
      name: 'ipv6-extension-headers',
      clause: '2.2 IPv6 rules match the transport after extension headers',
      config: single([rule(1, 'accept', 'TCP', V6_ANY, V6_ANY, '-1/-1', '80/80')]),
      steps: [
        step({ src: PEER6, dst: HOST6, proto: 'tcp', srcPort: 1, dstPort: 80, v6ext: [{ type: 0 }, { type: 60, length: 16 }] }, accept('ts-1', 10)),
        step({ src: PEER6, dst: HOST6, proto: 'tcp', srcPort: 1, dstPort: 81, v6ext: [{ type: 43 }] }, none('no-match')),
      ],
    },
    {
      name: 'fragments-later-follows-accept',
      clause: '2 fragments: later fragments follow the first fragment (accept)',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '80/80')]),
      steps: [
        step(tcpTo(80, 40000, { ipId: 0x1111, fragment: { offset: 0, more: true }, payload: 12 }), accept('ts-1', 10)),
        step(tcpTo(0, 0, { ipId: 0x1111, fragment: { offset: 32, more: true }, payload: 32 }), accept('ts-1', 10)),
        step(tcpTo(0, 0, { ipId: 0x1111, fragment: { offset: 64, more: false }, payload: 20 }), accept('ts-1', 10)),
      ],
    },
    {
      name: 'fragments-later-follows-drop',
      clause: '2 fragments: later fragments follow the first fragment (drop)',
      config: single([rule(1, 'drop', 'TCP', V4_ANY, V4_ANY, '-1/-1', '22/22'), rule(2, 'accept', 'TCP')]),
      steps: [
        step(tcpTo(22, 40000, { ipId: 0x2222, fragment: { offset: 0, more: true }, payload: 12 }), none('drop')),
        step(tcpTo(0, 0, { ipId: 0x2222, fragment: { offset: 32, more: false }, payload: 16 }), none('drop')),
      ],
    },
    {
      name: 'fragments-later-follows-no-match',
      clause: '2 fragments: later fragments follow the first fragment (not mirrored)',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '80/80'), rule(2, 'accept', 'ALL', '10.0.0.0/8', V4_ANY)]),
      steps: [
        step({ src: '192.0.2.9', dst: HOST, proto: 'tcp', srcPort: 1, dstPort: 22, ipId: 7, fragment: { offset: 0, more: true }, payload: 12 }, none('no-match')),
        step({ src: '192.0.2.9', dst: HOST, proto: 'tcp', ipId: 7, fragment: { offset: 32, more: false }, payload: 16 }, none('no-match')),
      ],
    },
    {
      name: 'fragment-unknown-later-needs-any-ports',
      clause: '2 fragments: unseen first fragment → only -1/-1 rules match',
      config: config(
        [
          filter('f-web', [rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '80/80')]),
          filter('f-tcp', [rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '-1/-1', '-1/-1')]),
        ],
        [session('ts-1', 1, 10, 'f-web'), session('ts-2', 2, 20, 'f-tcp')],
      ),
      steps: [step(tcpTo(0, 0, { ipId: 0x3333, fragment: { offset: 1480, more: false }, payload: 40 }), accept('ts-2', 20))],
    },
    {
      name: 'fragment-unknown-later-port-rules-only',
      clause: '2 fragments: unseen first fragment never matches port rules',
      config: single([
        rule(1, 'accept', 'TCP', V4_ANY, V4_ANY, '0/65535', '-1/-1'),
        rule(2, 'accept', 'UDP', V4_ANY, V4_ANY, '-1/-1', '0/65535'),
      ]),
      steps: [
        step(tcpTo(0, 0, { ipId: 0x4444, fragment: { offset: 8, more: false }, payload: 8 }), none('no-match')),
        step(udpTo(0, 0, { ipId: 0x4445, fragment: { offset: 8, more: false }, payload: 8 }), none('no-match')),
      ],
    },
    {
      name: 'fragment-key-includes-id',
      clause: '2 fragments: same (src, dst, protocol, IP id)',
      config: single([rule(1, 'drop', 'UDP', V4_ANY, V4_ANY, '-1/-1', '53/53'), rule(2, 'accept', 'UDP')]),
      steps: [
        step(udpTo(53, 40000, { ipId: 100, fragment: { offset: 0, more: true }, payload: 16 }), none('drop')),
        step(udpTo(0, 0, { ipId: 101, fragment: { offset: 24, more: false }, payload: 8 }), accept('ts-1', 10)),
        step(udpTo(0, 0, { ipId: 100, fragment: { offset: 24, more: false }, payload: 8 }), none('drop')),
      ],
    },
    {
      name: 'fragment-key-includes-direction',
      clause: '2 fragments: decision is per interface and direction',
      config: single(
        [rule(1, 'drop', 'UDP', V4_ANY, V4_ANY, '-1/-1', '53/53'), rule(2, 'accept', 'UDP')],
        [rule(1, 'accept', 'UDP')],
      ),
      steps: [
        step(udpTo(53, 40000, { ipId: 200, fragment: { offset: 0, more: true }, payload: 16 }), none('drop'), 'in'),
        step(udpTo(0, 0, { ipId: 200, fragment: { offset: 24, more: false }, payload: 8 }), accept('ts-1', 10), 'out'),
      ],
    },
    {
      name: 'ipv6-fragments-follow-first',
      clause: '2 fragments: IPv6 fragment header, later follows first',
      config: single([rule(1, 'accept', 'UDP', V6_ANY, V6_ANY, '-1/-1', '53/53')]),
      steps: [
        step({ src: PEER6, dst: HOST6, proto: 'udp', srcPort: 1000, dstPort: 53, ipId: 0xdeadbeef, fragment: { offset: 0, more: true }, payload: 16 }, accept('ts-1', 10)),
        step({ src: PEER6, dst: HOST6, proto: 'udp', ipId: 0xdeadbeef, fragment: { offset: 24, more: false }, payload: 8 }, accept('ts-1', 10)),
        step({ src: PEER6, dst: HOST6, proto: 'udp', ipId: 0xdeadbef0, fragment: { offset: 24, more: false }, payload: 8 }, none('no-match')),
      ],
    },
    {
      name: 'ipv6-fragments-follow-drop',
      clause: '2 fragments: IPv6 later fragment follows a drop',
      config: single([rule(1, 'drop', 'TCP', V6_ANY, V6_ANY, '-1/-1', '22/22'), rule(2, 'accept', 'ALL', V6_ANY, V6_ANY)]),
      steps: [
        step({ src: PEER6, dst: HOST6, proto: 'tcp', srcPort: 1000, dstPort: 22, ipId: 5, fragment: { offset: 0, more: true }, payload: 12 }, none('drop')),
        step({ src: PEER6, dst: HOST6, proto: 'tcp', ipId: 5, fragment: { offset: 32, more: false }, payload: 8 }, none('drop')),
        step({ src: PEER6, dst: HOST6, proto: 'tcp', ipId: 6, fragment: { offset: 32, more: false }, payload: 8 }, accept('ts-1', 10)),
      ],
    },
    {
      name: 'vlan-single-tag',
      clause: '2 802.1Q frames match on their inner IP',
      config: single([rule(1, 'accept', 'TCP', V4_ANY, '10.0.0.0/24', '-1/-1', '80/80')]),
      steps: [step(tcpTo(80, 40000, { vlans: [100] }), accept('ts-1', 10)), step(tcpTo(81, 40000, { vlans: [100] }), none('no-match'))],
    },
    {
      name: 'vlan-qinq',
      clause: '2 802.1ad stacked tags match on the inner IP',
      config: single([rule(1, 'accept', 'UDP', V4_ANY, V4_ANY, '-1/-1', '53/53')]),
      steps: [
        step(udpTo(53, 40000, { vlans: [10, 20] }), accept('ts-1', 10)),
        step({ src: PEER6, dst: HOST6, proto: 'udp', srcPort: 1, dstPort: 53, vlans: [10, 20] }, none('no-match')),
      ],
    },
    {
      name: 'arp-never-mirrored',
      clause: '2 never mirrored: ARP',
      config: single([rule(1, 'accept', 'ALL')]),
      steps: [rawStep(arpRequest(PEER, HOST), 'ARP who-has 10.0.0.1', none('arp'))],
    },
    {
      name: 'dhcp-never-mirrored',
      clause: '2 never mirrored: DHCP (UDP 67/68)',
      config: single([rule(1, 'accept', 'ALL')]),
      steps: [
        step({ src: '0.0.0.0', dst: '255.255.255.255', proto: 'udp', srcPort: 68, dstPort: 67 }, none('dhcp')),
        step({ src: PEER, dst: HOST, proto: 'udp', srcPort: 67, dstPort: 68 }, none('dhcp'), 'out'),
        step(udpTo(68, 12345), none('dhcp')),
        step(tcpTo(67), accept('ts-1', 10)),
      ],
    },
    {
      name: 'dhcpv6-never-mirrored',
      clause: '2 never mirrored: DHCPv6 (UDP 546/547)',
      config: single([rule(1, 'accept', 'ALL', V6_ANY, V6_ANY)]),
      steps: [
        step({ src: 'fe80::1', dst: 'ff02::1:2', proto: 'udp', srcPort: 546, dstPort: 547 }, none('dhcp')),
        step({ src: 'fe80::2', dst: 'fe80::1', proto: 'udp', srcPort: 547, dstPort: 546 }, none('dhcp')),
      ],
    },
    {
      name: 'own-vxlan-excluded',
      clause: '2 never mirrored: the agent\'s own VXLAN output, even when a rule accepts it',
      config: single([], [rule(1, 'accept', 'ALL')]),
      steps: [
        step({ src: HOST, dst: TARGET.address, proto: 'udp', srcPort: 50000, dstPort: TARGET.port }, none('own'), 'out'),
        step({ src: HOST, dst: TARGET.address, proto: 'udp', srcPort: 50000, dstPort: 4790 }, accept('ts-1', 10), 'out'),
        step({ src: HOST, dst: TARGET.address, proto: 'tcp', srcPort: 50000, dstPort: TARGET.port }, accept('ts-1', 10), 'out'),
        step({ src: HOST, dst: '192.0.2.51', proto: 'udp', srcPort: 50000, dstPort: TARGET.port }, accept('ts-1', 10), 'out'),
      ],
    },
    {
      name: 'own-vxlan-over-vlan-excluded',
      clause: '2 never mirrored: own output, also when VLAN-tagged',
      config: single([], [rule(1, 'accept', 'ALL')]),
      steps: [step({ src: HOST, dst: TARGET.address, proto: 'udp', srcPort: 50000, dstPort: TARGET.port, vlans: [5] }, none('own'), 'out')],
    },
    {
      name: 'own-output-of-disabled-session',
      clause: '2 never mirrored: VXLAN to any configured target',
      config: config(
        [filter('f-all', [], [rule(1, 'accept', 'ALL')])],
        [
          session('ts-1', 1, 10, 'f-all'),
          session('ts-off', 2, 20, 'f-all', { enabled: false, target: { address: '198.51.100.7', port: 8472 } }),
        ],
      ),
      steps: [
        step({ src: HOST, dst: '198.51.100.7', proto: 'udp', srcPort: 50000, dstPort: 8472 }, none('own'), 'out'),
        step({ src: HOST, dst: '198.51.100.7', proto: 'udp', srcPort: 50000, dstPort: 4789 }, accept('ts-1', 10), 'out'),
      ],
    },
    {
      name: 'own-ipv6-target',
      clause: '2 never mirrored: own output to an IPv6 target',
      config: config(
        [filter('f-all', [], [rule(1, 'accept', 'ALL', V6_ANY, V6_ANY)])],
        [session('ts-6', 1, 60, 'f-all', { target: { address: '2001:db8:ff::50', port: 4789 } })],
      ),
      steps: [
        step({ src: HOST6, dst: '2001:db8:ff::50', proto: 'udp', srcPort: 50000, dstPort: 4789 }, none('own'), 'out'),
        step({ src: HOST6, dst: '2001:db8:ff::51', proto: 'udp', srcPort: 50000, dstPort: 4789 }, accept('ts-6', 60), 'out'),
      ],
    },
    {
      name: 'own-ipfix-export-excluded',
      clause: '2 never mirrored: flow log export',
      config: config(
        [filter('f-all', [], [rule(1, 'accept', 'ALL')])],
        [session('ts-1', 1, 10, 'f-all')],
        [{ id: 'fl-1', sources: ['eth0'], sink: { type: 'ipfix', collector: '203.0.113.7:4739' } }],
      ),
      steps: [
        step({ src: HOST, dst: '203.0.113.7', proto: 'udp', srcPort: 40000, dstPort: 4739 }, none('own'), 'out'),
        step({ src: HOST, dst: '203.0.113.7', proto: 'udp', srcPort: 40000, dstPort: 4740 }, accept('ts-1', 10), 'out'),
      ],
    },
    {
      name: 'non-ip-frames',
      clause: '2 never mirrored: non-IP frames',
      config: single([rule(1, 'accept', 'ALL')]),
      steps: [
        rawStep(ethernet({ etherType: 0x88cc, payload: Buffer.alloc(46) }), 'LLDP', none('non-ip')),
        rawStep(ethernet({ etherType: 46, payload: Buffer.alloc(46, 0x42) }), '802.3 length frame', none('non-ip')),
        rawStep(ethernet({ etherType: 0x8847, payload: Buffer.alloc(46) }), 'MPLS', none('non-ip')),
      ],
    },
    {
      name: 'both-families-in-one-filter',
      clause: '2 IPv4 and IPv6 both supported',
      config: single([rule(1, 'accept', 'TCP', V6_ANY, V6_ANY), rule(2, 'accept', 'TCP', V4_ANY, V4_ANY)]),
      steps: [
        step(tcpTo(80), accept('ts-1', 10)),
        step({ src: PEER6, dst: HOST6, proto: 'tcp', srcPort: 1, dstPort: 80 }, accept('ts-1', 10)),
      ],
    },
  ];
  return [...list, ...parserCases()];
}

export function buildVectors(): VectorFile {
  return {
    description:
      'Mirror rule vectors (SPEC §2) shared by the pcap and eBPF data planes. For each case: load ' +
      '`config` (SPEC §1 form), then feed each step\'s Ethernet frame, seen on `iface` in `dir`, ' +
      'in order (fragment state carries over between steps of a case), and compare with `expect`. ' +
      'Generated by test/vectors/cases.ts.',
    cases: cases(),
  };
}
