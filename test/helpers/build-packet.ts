// Builds Ethernet frames for tests, test vectors and the bench. Not product code: clarity
// over speed, allocation is fine here.

import { parseAddress } from '../../agent/packet/address.js';
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_QINQ,
  ETHERTYPE_VLAN,
  ICMP_HEADER_LEN,
  IPPROTO_AH,
  IPPROTO_FRAGMENT,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_MIN_HEADER_LEN,
  IPV6_FRAG_HEADER_LEN,
  IPV6_HEADER_LEN,
  TCP_MIN_HEADER_LEN,
  UDP_HEADER_LEN,
} from '../../agent/packet/offsets.js';

export const DEFAULT_SRC_MAC = '02:00:00:00:00:01';
export const DEFAULT_DST_MAC = '02:00:00:00:00:02';

export interface VlanTag {
  /** Defaults: 0x88a8 for an outer tag of a stack, 0x8100 otherwise. */
  tpid?: number;
  vid: number;
}

export interface EthernetSpec {
  src?: string;
  dst?: string;
  /** Outermost first. */
  vlans?: VlanTag[];
  etherType: number;
  payload: Buffer;
}

function mac(text: string): Buffer {
  return Buffer.from(text.split(':').map((b) => parseInt(b, 16)));
}

export function ethernet(spec: EthernetSpec): Buffer {
  const vlans = spec.vlans ?? [];
  const tags = vlans.map((tag, i) => {
    const b = Buffer.alloc(4);
    const defaultTpid = vlans.length > 1 && i < vlans.length - 1 ? ETHERTYPE_QINQ : ETHERTYPE_VLAN;
    b.writeUInt16BE(tag.tpid ?? defaultTpid, 0);
    b.writeUInt16BE(tag.vid & 0x0fff, 2);
    return b;
  });
  // Each tag's TPID sits where the ethertype would be, so tags go between MACs and type.
  const type = Buffer.alloc(2);
  type.writeUInt16BE(spec.etherType, 0);
  return Buffer.concat([mac(spec.dst ?? DEFAULT_DST_MAC), mac(spec.src ?? DEFAULT_SRC_MAC), ...tags, type, spec.payload]);
}

/** RFC 1071 one's complement sum. */
function checksum(...parts: Buffer[]): number {
  let sum = 0;
  for (const part of parts) {
    for (let i = 0; i < part.length; i += 2) sum += (part[i]! << 8) | (part[i + 1] ?? 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function addressBytes(text: string): Buffer {
  const { family, words } = parseAddress(text);
  const b = Buffer.alloc(family === 4 ? 4 : 16);
  for (let i = 0; i < b.length / 4; i++) b.writeUInt32BE(words[i]!, 4 * i);
  return b;
}

export interface Ipv4Spec {
  src: string;
  dst: string;
  protocol: number;
  id?: number;
  ttl?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** Fragment offset in bytes (multiple of 8). */
  fragOffset?: number;
  /** Options, padded by the caller to a multiple of 4 bytes. */
  options?: Buffer;
  payload: Buffer;
  /** Overrides for malformed frames. */
  ihl?: number;
  version?: number;
  totalLength?: number;
}

export function ipv4(spec: Ipv4Spec): Buffer {
  const options = spec.options ?? Buffer.alloc(0);
  const header = Buffer.alloc(IPV4_MIN_HEADER_LEN + options.length);
  const ihl = spec.ihl ?? header.length / 4;
  header[0] = ((spec.version ?? 4) << 4) | ihl;
  header.writeUInt16BE(spec.totalLength ?? header.length + spec.payload.length, 2);
  header.writeUInt16BE(spec.id ?? 1, 4);
  const flags = (spec.dontFragment ? 0x4000 : 0) | (spec.moreFragments ? 0x2000 : 0);
  header.writeUInt16BE(flags | ((spec.fragOffset ?? 0) / 8), 6);
  header[8] = spec.ttl ?? 64;
  header[9] = spec.protocol;
  addressBytes(spec.src).copy(header, 12);
  addressBytes(spec.dst).copy(header, 16);
  options.copy(header, IPV4_MIN_HEADER_LEN);
  header.writeUInt16BE(checksum(header), 10);
  return Buffer.concat([header, spec.payload]);
}

export interface Ipv6ExtSpec {
  /** 0 hop-by-hop, 43 routing, 60 destination options, 51 AH, or any number for bogus chains. */
  type: number;
  /** Total header length in bytes; default 8. AH lengths are multiples of 4, others of 8. */
  length?: number;
}

export interface Ipv6Spec {
  src: string;
  dst: string;
  /** Transport protocol after the extension headers. */
  nextHeader: number;
  ext?: Ipv6ExtSpec[];
  /** Adds a fragment header after `ext`. */
  fragment?: { id: number; offset: number; more: boolean };
  hopLimit?: number;
  payload: Buffer;
  payloadLength?: number;
  version?: number;
}

export function ipv6(spec: Ipv6Spec): Buffer {
  const chain: { type: number; body: Buffer }[] = (spec.ext ?? []).map((e) => {
    const len = e.length ?? 8;
    const body = Buffer.alloc(len);
    body[1] = e.type === IPPROTO_AH ? len / 4 - 2 : len / 8 - 1;
    return { type: e.type, body };
  });
  if (spec.fragment) {
    const body = Buffer.alloc(IPV6_FRAG_HEADER_LEN);
    body.writeUInt16BE(spec.fragment.offset | (spec.fragment.more ? 1 : 0), 2);
    body.writeUInt32BE(spec.fragment.id >>> 0, 4);
    chain.push({ type: IPPROTO_FRAGMENT, body });
  }
  chain.forEach((h, i) => {
    h.body[0] = chain[i + 1]?.type ?? spec.nextHeader;
  });
  const ext = Buffer.concat(chain.map((h) => h.body));
  const header = Buffer.alloc(IPV6_HEADER_LEN);
  header.writeUInt32BE(((spec.version ?? 6) << 28) >>> 0, 0);
  header.writeUInt16BE(spec.payloadLength ?? ext.length + spec.payload.length, 4);
  header[6] = chain[0]?.type ?? spec.nextHeader;
  header[7] = spec.hopLimit ?? 64;
  addressBytes(spec.src).copy(header, 8);
  addressBytes(spec.dst).copy(header, 24);
  return Buffer.concat([header, ext, spec.payload]);
}

export interface TcpSpec {
  srcPort: number;
  dstPort: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** Options, padded by the caller to a multiple of 4 bytes. */
  options?: Buffer;
  payload?: Buffer;
  /** Override the data offset (32-bit words) for malformed frames. */
  dataOffset?: number;
}

export function tcp(spec: TcpSpec): Buffer {
  const options = spec.options ?? Buffer.alloc(0);
  const header = Buffer.alloc(TCP_MIN_HEADER_LEN + options.length);
  header.writeUInt16BE(spec.srcPort, 0);
  header.writeUInt16BE(spec.dstPort, 2);
  header.writeUInt32BE((spec.seq ?? 1000) >>> 0, 4);
  header.writeUInt32BE((spec.ack ?? 0) >>> 0, 8);
  header[12] = (spec.dataOffset ?? header.length / 4) << 4;
  header[13] = spec.flags ?? 0x02;
  header.writeUInt16BE(spec.window ?? 65535, 14);
  options.copy(header, TCP_MIN_HEADER_LEN);
  return Buffer.concat([header, spec.payload ?? Buffer.alloc(0)]);
}

export function udp(spec: { srcPort: number; dstPort: number; payload?: Buffer }): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const header = Buffer.alloc(UDP_HEADER_LEN);
  header.writeUInt16BE(spec.srcPort, 0);
  header.writeUInt16BE(spec.dstPort, 2);
  header.writeUInt16BE(UDP_HEADER_LEN + payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** ICMP or ICMPv6 message: type, code, checksum (left 0), 4 bytes rest-of-header, payload. */
export function icmp(spec: { type: number; code?: number; payload?: Buffer }): Buffer {
  const header = Buffer.alloc(ICMP_HEADER_LEN + 4);
  header[0] = spec.type;
  header[1] = spec.code ?? 0;
  return Buffer.concat([header, spec.payload ?? Buffer.alloc(0)]);
}

/** A whole frame from a compact description; the common case for tests and vectors. */
export interface PacketSpec {
  src: string;
  dst: string;
  /** 'tcp' | 'udp' | 'icmp' (ICMPv6 on IPv6) or a raw protocol number. */
  proto: 'tcp' | 'udp' | 'icmp' | number;
  srcPort?: number;
  dstPort?: number;
  tcpFlags?: number;
  icmpType?: number;
  icmpCode?: number;
  /** L4 payload length (zero-filled) or bytes. */
  payload?: number | Buffer;
  vlans?: number[];
  /** IPv4 identification (also the IPv6 fragment id when fragmented). */
  ipId?: number;
  /** Fragment this packet: offset in bytes; offset > 0 means the IP payload is raw bytes. */
  fragment?: { offset: number; more: boolean };
  /** IPv6 extension headers before the transport (or fragment) header. */
  v6ext?: Ipv6ExtSpec[];
}

export function buildPacket(spec: PacketSpec): Buffer {
  const family = parseAddress(spec.src).family;
  const payload = typeof spec.payload === 'number' ? Buffer.alloc(spec.payload) : spec.payload ?? Buffer.alloc(0);
  const protocol = spec.proto === 'tcp' ? IPPROTO_TCP
    : spec.proto === 'udp' ? IPPROTO_UDP
    : spec.proto === 'icmp' ? (family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6)
    : spec.proto;
  const laterFragment = (spec.fragment?.offset ?? 0) > 0;
  let l4: Buffer;
  if (laterFragment) l4 = payload;
  else if (protocol === IPPROTO_TCP) l4 = tcp({ srcPort: spec.srcPort ?? 0, dstPort: spec.dstPort ?? 0, flags: spec.tcpFlags, payload });
  else if (protocol === IPPROTO_UDP) l4 = udp({ srcPort: spec.srcPort ?? 0, dstPort: spec.dstPort ?? 0, payload });
  else if (protocol === IPPROTO_ICMP || protocol === IPPROTO_ICMPV6) {
    l4 = icmp({ type: spec.icmpType ?? (family === 4 ? 8 : 128), code: spec.icmpCode, payload });
  } else l4 = payload;
  const ip = family === 4
    ? ipv4({
      src: spec.src, dst: spec.dst, protocol, id: spec.ipId, payload: l4,
      moreFragments: spec.fragment?.more, fragOffset: spec.fragment?.offset,
    })
    : ipv6({
      src: spec.src, dst: spec.dst, nextHeader: protocol, ext: spec.v6ext, payload: l4,
      fragment: spec.fragment && { id: spec.ipId ?? 1, offset: spec.fragment.offset, more: spec.fragment.more },
    });
  return ethernet({
    etherType: family === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6,
    vlans: spec.vlans?.map((vid) => ({ vid })),
    payload: ip,
  });
}

/** A classic pcap file (LINKTYPE_ETHERNET, µs timestamps) holding `frames`, for tcpdump/tshark. */
export function pcapFile(frames: readonly Buffer[], snaplen = 65535): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(snaplen, 16);
  header.writeUInt32LE(1, 20);
  const records = frames.flatMap((frame, i) => {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(1_700_000_000 + i, 0);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    return [rec, frame];
  });
  return Buffer.concat([header, ...records]);
}

/** An ARP request (Ethernet/IPv4) from `senderIp` asking for `targetIp`. */
export function arpRequest(senderIp: string, targetIp: string): Buffer {
  const body = Buffer.alloc(28);
  body.writeUInt16BE(1, 0);
  body.writeUInt16BE(ETHERTYPE_IPV4, 2);
  body[4] = 6;
  body[5] = 4;
  body.writeUInt16BE(1, 6);
  mac(DEFAULT_SRC_MAC).copy(body, 8);
  addressBytes(senderIp).copy(body, 14);
  addressBytes(targetIp).copy(body, 24);
  return ethernet({ dst: 'ff:ff:ff:ff:ff:ff', etherType: ETHERTYPE_ARP, payload: body });
}
