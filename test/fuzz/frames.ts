// Valid frames built with test/helpers/build-packet.ts and a seeded mutator that breaks them the
// ways real traffic and attackers do: noise, bit flips, truncation anywhere and at every
// header boundary, wrong IPv4 IHL / total length and IPv6 payload length, bogus IPv6 next
// headers and extension-header lengths, VLAN stacks up to 5, wrong checksums. Where a
// mutation has a known right answer the mutator says so (expectReason / expectSeed), so the
// fuzz test checks verdicts, not only the absence of exceptions.
import { arpRequest, buildPacket } from '../helpers/build-packet.js';
import { decode } from '../../agent/packet/decode.js';
import { DECODE_MALFORMED, PacketView } from '../../agent/packet/view.js';
import {
  ETH_TYPE_OFFSET,
  ETHERTYPE_QINQ,
  ETHERTYPE_VLAN,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_MIN_HEADER_LEN,
  IPV4_TOTAL_LENGTH,
  IPV4_VER_IHL,
  IPV6_HEADER_LEN,
  IPV6_NEXT_HEADER,
  IPV6_PAYLOAD_LENGTH,
  MAX_VLAN_TAGS,
  VLAN_TAG_LEN,
} from '../../agent/packet/offsets.js';
import type { Prng } from './prng.js';

const IPV4_CHECKSUM = 10;
const TCP_CHECKSUM = 16;
const UDP_CHECKSUM = 6;
const ICMP_CHECKSUM = 2;
/** Largest frame the mutator writes: the biggest seed plus 5 VLAN tags, with room to spare. */
export const MAX_FRAME = 2048;
/** Next-header values worth trying: extension headers, transports, "no next header", unassigned. */
const NEXT_HEADERS = [0, 6, 17, 43, 44, 50, 51, 58, 59, 60, 132, 135, 139, 140, 253, 255];

/** The frames every mutation starts from: each protocol and header form the decoder knows. */
export function seedFrames(): Buffer[] {
  return [
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', srcPort: 40000, dstPort: 80, tcpFlags: 0x12, payload: 64 }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', srcPort: 40001, dstPort: 443, tcpFlags: 0x02 }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 40000, dstPort: 53, payload: 40, vlans: [10] }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 1, dstPort: 2, payload: 300, vlans: [10, 20] }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'icmp', payload: 56 }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', srcPort: 1, dstPort: 2, payload: 100, ipId: 7, fragment: { offset: 0, more: true } }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', payload: 100, ipId: 7, fragment: { offset: 800, more: false } }),
    buildPacket({ src: '10.0.0.1', dst: '10.0.0.2', proto: 47, payload: 24 }),
    buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'tcp', srcPort: 5, dstPort: 443, tcpFlags: 0x02 }),
    buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'icmp', payload: 16, v6ext: [{ type: 0, length: 8 }, { type: 60, length: 16 }] }),
    buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'udp', srcPort: 9, dstPort: 10, payload: 30, v6ext: [{ type: 43, length: 24 }, { type: 51, length: 12 }] }),
    buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'udp', srcPort: 9, dstPort: 10, payload: 30, fragment: { offset: 0, more: true } }),
    buildPacket({ src: 'fd00::1', dst: 'fd00::2', proto: 'udp', payload: 30, fragment: { offset: 512, more: true } }),
    arpRequest('10.0.0.1', '10.0.0.2'),
  ];
}

/** A seed frame, its decoded view, and the offsets worth cutting at or corrupting. */
export interface Seed {
  frame: Buffer;
  view: PacketView;
  status: number;
  /** Header boundaries (and one byte either side): where truncation is most likely to confuse a parser. */
  boundaries: number[];
  /** Offsets of checksum fields; changing them must not change any verdict. */
  checksums: number[];
  /** Offsets of the IPv6 extension-header length bytes. */
  extLengths: number[];
}

export function describeSeed(frame: Buffer): Seed {
  const view = new PacketView();
  const status = decode(view, frame, frame.length, frame.length);
  if (status >= DECODE_MALFORMED) throw new Error(`seed frame is malformed: ${view.malformedReason}`);
  const l3 = view.l3Offset;
  const l4 = view.l4Offset;
  const cuts = [0, 6, ETH_TYPE_OFFSET, ETH_TYPE_OFFSET + 2, l3 - 2, l3];
  const checksums: number[] = [];
  const extLengths: number[] = [];
  if (view.ipVersion === 4) {
    cuts.push(l3 + 1, l3 + 10, l3 + 20);
    checksums.push(l3 + IPV4_CHECKSUM);
  }
  if (view.ipVersion === 6) {
    cuts.push(l3 + 8, l3 + IPV6_HEADER_LEN);
    // Walk the chain as built: each extension header's length byte and its end.
    let next = frame[l3 + IPV6_NEXT_HEADER]!;
    let off = l3 + IPV6_HEADER_LEN;
    while ((next === 0 || next === 43 || next === 44 || next === 51 || next === 60) && off < frame.length) {
      extLengths.push(off + 1);
      const len = next === 44 ? 8 : next === 51 ? (frame[off + 1]! + 2) * 4 : (frame[off + 1]! + 1) * 8;
      next = frame[off]!;
      off += len;
      cuts.push(off);
    }
  }
  if (l4 >= 0) {
    cuts.push(l4, l4 + 4, l4 + 8, l4 + 12, l4 + 13, l4 + 20);
    if (view.protocol === IPPROTO_TCP) checksums.push(l4 + TCP_CHECKSUM, l4 + TCP_CHECKSUM + 1);
    if (view.protocol === IPPROTO_UDP) checksums.push(l4 + UDP_CHECKSUM, l4 + UDP_CHECKSUM + 1);
    if (view.protocol === IPPROTO_ICMP || view.protocol === IPPROTO_ICMPV6) checksums.push(l4 + ICMP_CHECKSUM, l4 + ICMP_CHECKSUM + 1);
  }
  const boundaries = [...new Set(cuts.flatMap((c) => [c - 1, c, c + 1]))].filter((c) => c >= 0 && c <= frame.length).sort((a, b) => a - b);
  return { frame, view, status, boundaries, checksums: checksums.filter((c) => c < frame.length), extLengths };
}

export const MUTATIONS = [
  'noise', 'byte-at-boundary', 'bit-flips', 'truncate-anywhere', 'truncate-at-boundary',
  'vlan-stack', 'ip-length', 'ipv6-next-header', 'checksum',
] as const;

/**
 * Writes one mutated frame into `out` per call. After mutate(): `len` bytes were written,
 * `wireLen` is the length to claim on the wire (>= len when the frame is "snap-cut"),
 * and when the right answer is known, `expectReason` is the malformed reason decode must
 * give, or `expectSeed` the seed whose verdict it must reproduce (l3Shift bytes later).
 */
export class FrameMutator {
  readonly seeds: Seed[];
  kind = 0;
  len = 0;
  wireLen = 0;
  expectReason = '';
  expectSeed = -1;
  l3Shift = 0;
  readonly counts = new Float64Array(MUTATIONS.length);

  constructor(private readonly rng: Prng, readonly out: Buffer = Buffer.alloc(MAX_FRAME)) {
    this.seeds = seedFrames().map(describeSeed);
  }

  mutate(): void {
    const r = this.rng;
    const out = this.out;
    const kind = r.below(MUTATIONS.length);
    this.kind = kind;
    this.counts[kind]! += 1;
    this.expectReason = '';
    this.expectSeed = -1;
    this.l3Shift = 0;
    if (kind === 0) {
      const len = r.below(256);
      for (let i = 0; i < len; i++) out[i] = r.byte();
      this.len = len;
      this.wireLen = len + r.below(2) * r.below(1500);
      return;
    }
    const si = r.below(this.seeds.length);
    const seed = this.seeds[si]!;
    const view = seed.view;
    seed.frame.copy(out);
    let len = seed.frame.length;
    let wire = len;
    switch (kind) {
      case 1: {
        const n = 1 + r.below(3);
        for (let i = 0; i < n; i++) {
          const at = r.pick(seed.boundaries);
          if (at < len) out[at] = r.byte();
        }
        break;
      }
      case 2: {
        const n = 1 + r.below(4);
        for (let i = 0; i < n; i++) {
          const at = r.below(len);
          out[at] = out[at]! ^ (1 << r.below(8));
        }
        break;
      }
      case 3:
        len = r.below(len + 1);
        // Half cut by the snap length (the wire had the rest), half short on the wire too.
        wire = r.below(2) === 0 ? seed.frame.length : len;
        break;
      case 4:
        len = r.pick(seed.boundaries);
        wire = r.below(2) === 0 ? seed.frame.length : len;
        break;
      case 5: {
        // 1..5 more tags in front of whatever the seed had.
        const tags = 1 + r.below(5);
        const shift = tags * VLAN_TAG_LEN;
        out.copyWithin(ETH_TYPE_OFFSET + shift, ETH_TYPE_OFFSET, len);
        for (let t = 0; t < tags; t++) {
          out.writeUInt16BE(r.below(2) === 0 ? ETHERTYPE_VLAN : ETHERTYPE_QINQ, ETH_TYPE_OFFSET + t * VLAN_TAG_LEN);
          out.writeUInt16BE(r.below(0x1000), ETH_TYPE_OFFSET + t * VLAN_TAG_LEN + 2);
        }
        len += shift;
        wire = len;
        if (view.vlanTags + tags > MAX_VLAN_TAGS) this.expectReason = 'vlan-too-many-tags';
        else {
          this.expectSeed = si;
          this.l3Shift = shift;
        }
        break;
      }
      case 6: {
        const l3 = view.l3Offset;
        if (view.ipVersion === 4 && r.below(2) === 0) {
          const ihl = r.below(16);
          out[l3 + IPV4_VER_IHL] = 0x40 | ihl;
          if (ihl < 5) this.expectReason = 'ipv4-bad-ihl';
        } else if (view.ipVersion === 4) {
          const total = r.below(2) === 0 ? r.below(0x10000) : view.ipLength + 1 + r.below(8);
          out.writeUInt16BE(total, l3 + IPV4_TOTAL_LENGTH);
          if (total > len - l3 || total < IPV4_MIN_HEADER_LEN) this.expectReason = 'ipv4-bad-total-length';
        } else if (view.ipVersion === 6) {
          const payload = r.below(2) === 0 ? r.below(0x10000) : view.ipLength - IPV6_HEADER_LEN + 1 + r.below(8);
          out.writeUInt16BE(payload, l3 + IPV6_PAYLOAD_LENGTH);
          if (IPV6_HEADER_LEN + payload > len - l3) this.expectReason = 'ipv6-bad-payload-length';
        }
        break;
      }
      case 7: {
        if (view.ipVersion !== 6) break;
        if (seed.extLengths.length > 0 && r.below(2) === 0) out[r.pick(seed.extLengths)] = r.byte();
        else out[view.l3Offset + IPV6_NEXT_HEADER] = r.pick(NEXT_HEADERS);
        break;
      }
      case 8: {
        for (const at of seed.checksums) out[at] = r.byte();
        this.expectSeed = si;
        break;
      }
    }
    this.len = len;
    this.wireLen = wire;
  }
}

const FIELDS = [
  'etherType', 'vlanTags', 'ipVersion', 'l3Offset', 'ipLength', 'protocol', 'l4Offset', 'srcPort', 'dstPort',
  'hasPorts', 'tcpFlags', 'tcpSeq', 'tcpAck', 'tcpWindow', 'payloadLength', 'icmpType', 'icmpCode',
  'isFragment', 'fragOffset', 'fragId', 'malformedReason',
] as const;

/**
 * The first field where two decoded views differ ('' when none), with b's offsets taken
 * `shift` bytes later and `tags` more VLAN tags (a frame with tags pushed in front).
 */
export function viewDiff(a: PacketView, b: PacketView, shift = 0, tags = 0): string {
  for (const f of FIELDS) {
    let va = a[f];
    const vb = b[f];
    if (f === 'l3Offset' || (f === 'l4Offset' && va !== -1)) va = (va as number) + shift;
    if (f === 'vlanTags') va = (va as number) + tags;
    if (va !== vb) return `${f}: ${String(va)} vs ${String(vb)}`;
  }
  for (let i = 0; i < 4; i++) {
    if (a.src[i] !== b.src[i]) return `src[${i}]`;
    if (a.dst[i] !== b.dst[i]) return `dst[${i}]`;
  }
  return '';
}
