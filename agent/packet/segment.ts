// Wire segments of an offloaded aggregate, built in user space the way the kernel's software
// GSO would build them (net/ipv4/af_inet.c inet_gso_segment, net/ipv6/ip6_offload.c
// ipv6_gso_segment, net/ipv4/tcp_offload.c tcp_gso_segment, net/ipv4/udp_offload.c
// __udp_gso_segment). A capture with PACKET_VNET_HDR hands over a TSO/GSO super-packet or a
// GRO-merged receive as one frame plus its OffloadInfo; every segment it stands for is built,
// one at a time, into one reused buffer:
//   - the Ethernet header and VLAN tags as in the frame, IP and TCP/UDP headers copied;
//   - IPv4 total length / IPv6 payload length of the segment; an IPv4 id of id + k (the
//     kernel keeps it fixed only for SKB_GSO_TCP_FIXEDID, which the virtio header does not
//     carry: see docs/wire-format.md); IPv4 header checksum recomputed;
//   - TCP: seq + k * gsoSize, CWR on the first segment only (on all with AccECN), FIN and
//     PSH on the last only; UDP (GSO_UDP_L4): the segment's UDP length;
//   - the TCP/UDP checksum computed over the segment (pseudo-header with its own length);
//   - BIG TCP: an IPv4 total length of 0 or an IPv6 payload length of 0 means "the rest of
//     the frame"; the IPv6 jumbo hop-by-hop header BIG TCP inserts is removed, as
//     ipv6_gso_segment does.
// The number of segments is the kernel's: ceil(payload / gsoSize), never a guess from an MTU.
// A frame captured short of its end (a small snap length) still yields every segment's
// headers with caplen = what was captured of it and wireLen = its length on the wire.
// Nothing here allocates per frame or per segment, and nothing throws: nonsense is reported
// as a malformed reason.
import { GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, type OffloadInfo } from './offload.js';
import type { PacketView } from './view.js';
import { checksumOf, WordSummer } from './checksum.js';
import {
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_QINQ,
  ETHERTYPE_QINQ_OLD,
  ETHERTYPE_VLAN,
  ETH_HEADER_LEN,
  ETH_TYPE_OFFSET,
  IPPROTO_DSTOPTS,
  IPPROTO_GRE,
  IPPROTO_HOPOPTS,
  IPPROTO_IPIP,
  IPPROTO_IPV6,
  IPPROTO_ROUTING,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_CHECKSUM,
  IPV4_DST,
  IPV4_FLAGS_FRAG,
  IPV4_FLAG_MF,
  IPV4_FRAG_OFFSET_MASK,
  IPV4_ID,
  IPV4_MAX_TOTAL_LENGTH,
  IPV4_MIN_HEADER_LEN,
  IPV4_PROTOCOL,
  IPV4_SRC,
  IPV4_TOTAL_LENGTH,
  IPV4_VER_IHL,
  IPV6_DST,
  IPV6_EXT_MIN_LEN,
  IPV6_HEADER_LEN,
  IPV6_JUMBO_HEADER_LEN,
  IPV6_MAX_PAYLOAD_LENGTH,
  IPV6_NEXT_HEADER,
  IPV6_PAYLOAD_LENGTH,
  IPV6_SRC,
  IPV6_TLV_JUMBO,
  MAX_IPV6_EXT_HEADERS,
  MAX_VLAN_TAGS,
  TCP_CHECKSUM,
  TCP_DATA_OFFSET,
  TCP_FLAGS,
  TCP_FLAG_CWR,
  TCP_FLAG_FIN,
  TCP_FLAG_PSH,
  TCP_MIN_HEADER_LEN,
  TCP_SEQ,
  UDP_CHECKSUM,
  UDP_HEADER_LEN,
  UDP_LENGTH,
  VLAN_TAG_LEN,
} from './offsets.js';

/**
 * virtio_net_hdr.gso_type bit (Linux 6.18+): AccECN segmentation, CWR kept on every segment
 * (tcp_gso_segment's ecn_cwr_mask). OffloadInfo.gsoType keeps it; the segmenter masks it off.
 */
export const GSO_ACCECN = 0x10;
/**
 * More segments than this in one frame is nonsense, counted malformed: a 512 KB BIG TCP
 * aggregate at a 256-byte MSS, or 64 KB at 32 bytes. Bounds the work one frame can cause.
 */
export const MAX_SEGMENTS = 2048;
/** Ethernet, VLAN tags, IP with options or extension headers, TCP with options: room for all. */
export const MAX_HEADER_BYTES = 512;
/** The largest segment: headers and a gsoSize (16 bits) of payload. */
export const SEGMENT_BUFFER_BYTES = MAX_HEADER_BYTES + 0xffff;

/**
 * begin()'s reason for an aggregate of a tunnel (TSO through VXLAN, GENEVE, GRE, IPIP): the
 * kernel's gsoSize and checksum offsets are the inner packet's, which is not taken apart
 * here. Not nonsense: the caller passes such a frame on as one packet.
 */
export const GSO_ENCAPSULATED = 'gso-encapsulated';

/** What UDP sends for a computed checksum of 0, which would mean "no checksum" (RFC 768; the kernel's CSUM_MANGLED_0). */
const CSUM_MANGLED_0 = 0xffff;
const IP_VERSION_4 = 4;
const IP_VERSION_6 = 6;

function u16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

function put16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 8;
  buf[off + 1] = v;
}

export class Segmenter {
  /** The segment build() made last, Ethernet first; overwritten by the next build(). */
  readonly frame = Buffer.alloc(SEGMENT_BUFFER_BYTES);
  /** Bytes of `frame` holding the segment (its headers, then what was captured of its payload). */
  caplen = 0;
  /** The segment's length on the wire. */
  wireLen = 0;
  /** Segments of the frame begin() parsed; 0 after a malformed one. */
  count = 0;
  /** Why begin() refused a frame: a short, stable label. */
  malformedReason = '';

  /** One summer per buffer: the scratch frame's DataView never changes, the source's only with its ArrayBuffer. */
  private readonly frameWords = new WordSummer();
  private readonly srcWords = new WordSummer();
  private src: Buffer = this.frame;
  private srcCaplen = 0;
  /** In `frame`: network header, transport header, end of headers. */
  private l3 = 0;
  private l4 = 0;
  private headerLen = 0;
  private ipv4 = false;
  private tcp = false;
  private keepCwr = false;
  private ipId = 0;
  private seq = 0;
  private flags = 0;
  /** In the source frame: first payload byte, payload bytes of the aggregate, per segment. */
  private payloadStart = 0;
  private payloadLength = 0;
  private segmentSize = 0;
  /** Pseudo-header words common to every segment: both addresses and the protocol. */
  private pseudoSum = 0;

  /**
   * Parses an aggregate (offload.gsoType !== GSO_NONE) and copies its headers; returns how many
   * wire segments it stands for (≥ 1), or 0 when it is malformed (malformedReason says why).
   * buf must stay unchanged until the last build() for it.
   */
  begin(buf: Buffer, caplen: number, wireLen: number, offload: Readonly<OffloadInfo>): number {
    this.count = 0;
    if (caplen > buf.length) caplen = buf.length;
    if (wireLen < caplen) wireLen = caplen;
    const type = offload.gsoType & ~GSO_ACCECN;
    if (type !== GSO_TCPV4 && type !== GSO_TCPV6 && type !== GSO_UDP_L4) return this.fail('gso-unsupported-type');
    const gsoSize = offload.gsoSize;
    if (gsoSize === 0) return this.fail('gso-size-zero');
    if (caplen < ETH_HEADER_LEN) return this.fail('gso-headers-truncated');
    let off = ETH_TYPE_OFFSET;
    let etherType = u16(buf, off);
    for (let tags = 0; etherType === ETHERTYPE_VLAN || etherType === ETHERTYPE_QINQ || etherType === ETHERTYPE_QINQ_OLD; tags++) {
      if (tags === MAX_VLAN_TAGS) return this.fail('gso-vlan-too-many-tags');
      off += VLAN_TAG_LEN;
      if (off + 2 > caplen) return this.fail('gso-headers-truncated');
      etherType = u16(buf, off);
    }
    const l3 = off + 2;
    const f = this.frame;
    let l4: number;
    let outL4: number;
    let ipEnd: number;
    let protocol: number;
    if (etherType === ETHERTYPE_IPV4) {
      if (type === GSO_TCPV6) return this.fail('gso-type-mismatch');
      if (l3 + IPV4_MIN_HEADER_LEN > caplen) return this.fail('gso-headers-truncated');
      const verIhl = buf[l3 + IPV4_VER_IHL]!;
      const ihl = (verIhl & 0x0f) * 4;
      if (verIhl >> 4 !== IP_VERSION_4 || ihl < IPV4_MIN_HEADER_LEN) return this.fail('gso-bad-ip-header');
      if (l3 + ihl > caplen) return this.fail('gso-headers-truncated');
      if ((u16(buf, l3 + IPV4_FLAGS_FRAG) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK)) !== 0) return this.fail('gso-fragment');
      const totalLength = u16(buf, l3 + IPV4_TOTAL_LENGTH);
      // BIG TCP: total length 0 on an aggregate above 64 KB (iph_totlen()).
      ipEnd = totalLength === 0 ? wireLen : l3 + totalLength;
      if ((totalLength !== 0 && totalLength < ihl) || ipEnd > wireLen) return this.fail('gso-bad-ip-length');
      protocol = buf[l3 + IPV4_PROTOCOL]!;
      l4 = l3 + ihl;
      outL4 = l4;
      if (outL4 > MAX_HEADER_BYTES) return this.fail('gso-headers-too-long');
      buf.copy(f, 0, 0, l4);
      this.pseudoSum = this.srcWords.sum(buf, l3 + IPV4_SRC, l3 + IPV4_DST + 4, 0);
      this.ipId = u16(buf, l3 + IPV4_ID);
      this.ipv4 = true;
    } else if (etherType === ETHERTYPE_IPV6) {
      if (type === GSO_TCPV4) return this.fail('gso-type-mismatch');
      if (l3 + IPV6_HEADER_LEN > caplen) return this.fail('gso-headers-truncated');
      if (buf[l3]! >> 4 !== IP_VERSION_6) return this.fail('gso-bad-ip-header');
      const payloadLength = u16(buf, l3 + IPV6_PAYLOAD_LENGTH);
      // BIG TCP: payload length 0 (with or without the jumbo hop-by-hop header).
      ipEnd = payloadLength === 0 ? wireLen : l3 + IPV6_HEADER_LEN + payloadLength;
      if (ipEnd > wireLen) return this.fail('gso-bad-ip-length');
      buf.copy(f, 0, 0, l3 + IPV6_HEADER_LEN);
      let nextAt = l3 + IPV6_NEXT_HEADER;
      let next = buf[nextAt]!;
      l4 = l3 + IPV6_HEADER_LEN;
      outL4 = l4;
      // The extension headers GSO walks (INET6_PROTO_GSO_EXTHDR) are copied into every segment.
      for (let n = 0; next === IPPROTO_HOPOPTS || next === IPPROTO_ROUTING || next === IPPROTO_DSTOPTS; n++) {
        // Hop-by-hop options only right after the fixed header (RFC 8200 §4.1), as decode() requires.
        if (n === MAX_IPV6_EXT_HEADERS || (next === IPPROTO_HOPOPTS && n !== 0)) return this.fail('gso-bad-ip-header');
        if (l4 + IPV6_EXT_MIN_LEN > caplen) return this.fail('gso-headers-truncated');
        const len = (buf[l4 + 1]! + 1) * 8;
        if (l4 + len > caplen) return this.fail('gso-headers-truncated');
        const jumbo = next === IPPROTO_HOPOPTS && n === 0 && payloadLength === 0 && len === IPV6_JUMBO_HEADER_LEN &&
          buf[l4 + 2] === IPV6_TLV_JUMBO && buf[l4 + 3] === 4;
        next = buf[l4]!;
        if (jumbo) {
          f[nextAt] = next;
        } else {
          if (outL4 + len > MAX_HEADER_BYTES) return this.fail('gso-headers-too-long');
          buf.copy(f, outL4, l4, l4 + len);
          nextAt = outL4;
          outL4 += len;
        }
        l4 += len;
      }
      protocol = next;
      this.pseudoSum = this.srcWords.sum(buf, l3 + IPV6_SRC, l3 + IPV6_DST + 16, 0);
      this.ipv4 = false;
    } else {
      return this.fail('gso-not-ip');
    }
    const tcp = type !== GSO_UDP_L4;
    if (protocol !== (tcp ? IPPROTO_TCP : IPPROTO_UDP)) {
      const tunnel = protocol === IPPROTO_UDP || protocol === IPPROTO_GRE || protocol === IPPROTO_IPIP || protocol === IPPROTO_IPV6;
      return this.fail(tunnel ? GSO_ENCAPSULATED : 'gso-type-mismatch');
    }
    let thlen = UDP_HEADER_LEN;
    if (tcp) {
      if (l4 + TCP_MIN_HEADER_LEN > caplen) return this.fail('gso-headers-truncated');
      thlen = (buf[l4 + TCP_DATA_OFFSET]! >> 4) * 4;
      if (thlen < TCP_MIN_HEADER_LEN) return this.fail('gso-bad-tcp-header');
    }
    if (l4 + thlen > caplen) return this.fail('gso-headers-truncated');
    if (outL4 + thlen > MAX_HEADER_BYTES) return this.fail('gso-headers-too-long');
    const payloadStart = l4 + thlen;
    // UDP over UDP (a UDP GSO send through VXLAN, say): the checksum to complete lies inside
    // what would be the outer payload.
    if (offload.needsCsum && offload.csumStart >= payloadStart) return this.fail(GSO_ENCAPSULATED);
    const payloadLength = ipEnd - payloadStart;
    if (payloadLength < 0) return this.fail('gso-bad-ip-length');
    // The longest segment must have a length its IP header can state.
    const ipOverhead = outL4 - l3 - (this.ipv4 ? 0 : IPV6_HEADER_LEN) + thlen;
    if (ipOverhead + Math.min(gsoSize, payloadLength) > (this.ipv4 ? IPV4_MAX_TOTAL_LENGTH : IPV6_MAX_PAYLOAD_LENGTH)) {
      return this.fail('gso-size-too-large');
    }
    // As tcp_gso_segment and __udp_gso_segment: no more than gsoSize of payload is one packet.
    const count = payloadLength <= gsoSize ? 1 : Math.ceil(payloadLength / gsoSize);
    if (count > MAX_SEGMENTS) return this.fail('gso-too-many-segments');
    buf.copy(f, outL4, l4, payloadStart);
    this.pseudoSum += protocol;
    if (tcp) {
      this.seq = ((buf[l4 + TCP_SEQ]! << 24) | (buf[l4 + TCP_SEQ + 1]! << 16) | (buf[l4 + TCP_SEQ + 2]! << 8) | buf[l4 + TCP_SEQ + 3]!) >>> 0;
      this.flags = buf[l4 + TCP_FLAGS]!;
    }
    this.src = buf;
    this.srcCaplen = caplen;
    this.l3 = l3;
    this.l4 = outL4;
    this.headerLen = outL4 + thlen;
    this.tcp = tcp;
    this.keepCwr = (offload.gsoType & GSO_ACCECN) !== 0;
    this.payloadStart = payloadStart;
    this.payloadLength = payloadLength;
    this.segmentSize = gsoSize;
    this.count = count;
    this.malformedReason = '';
    return count;
  }

  /**
   * Builds segment k (0 ≤ k < count) of the frame begin() parsed into `frame`, setting caplen
   * and wireLen. withPayload false builds the headers only (caplen = header bytes), enough for
   * flow accounting. The TCP/UDP checksum is completed when the segment's payload was
   * captured whole; otherwise the field keeps the aggregate's value.
   */
  build(k: number, withPayload: boolean): void {
    const f = this.frame;
    const size = this.segmentSize;
    const offset = k * size;
    const len = k === this.count - 1 ? this.payloadLength - offset : size;
    const l3 = this.l3;
    const l4 = this.l4;
    const headerLen = this.headerLen;
    const l4Length = headerLen - l4 + len;
    if (this.ipv4) {
      put16(f, l3 + IPV4_TOTAL_LENGTH, l4 - l3 + l4Length);
      put16(f, l3 + IPV4_ID, (this.ipId + k) & 0xffff);
      put16(f, l3 + IPV4_CHECKSUM, 0);
      put16(f, l3 + IPV4_CHECKSUM, checksumOf(this.frameWords.sum(f, l3, l4, 0)));
    } else {
      put16(f, l3 + IPV6_PAYLOAD_LENGTH, l4 - l3 - IPV6_HEADER_LEN + l4Length);
    }
    let checksumAt: number;
    if (this.tcp) {
      const seq = (this.seq + offset) >>> 0;
      f[l4 + TCP_SEQ] = seq >>> 24;
      f[l4 + TCP_SEQ + 1] = seq >>> 16;
      f[l4 + TCP_SEQ + 2] = seq >>> 8;
      f[l4 + TCP_SEQ + 3] = seq;
      let flags = this.flags;
      if (k !== 0 && !this.keepCwr) flags &= ~TCP_FLAG_CWR;
      if (k !== this.count - 1) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      f[l4 + TCP_FLAGS] = flags;
      checksumAt = l4 + TCP_CHECKSUM;
    } else {
      put16(f, l4 + UDP_LENGTH, l4Length);
      checksumAt = l4 + UDP_CHECKSUM;
    }
    const start = this.payloadStart + offset;
    let captured = 0;
    if (withPayload) {
      const end = Math.min(start + len, this.srcCaplen);
      if (end > start) {
        this.src.copy(f, headerLen, start, end);
        captured = end - start;
      }
      if (captured === len) {
        put16(f, checksumAt, 0);
        let sum = this.frameWords.sum(f, l4, headerLen, this.pseudoSum + l4Length);
        sum = this.srcWords.sum(this.src, start, start + len, sum);
        // TCP keeps a computed 0 as tcp_gso_segment does; UDP sends 0xffff as __udp_gso_segment does.
        const check = checksumOf(sum);
        put16(f, checksumAt, check === 0 && !this.tcp ? CSUM_MANGLED_0 : check);
      }
    }
    this.caplen = headerLen + captured;
    this.wireLen = headerLen + len;
  }

  /**
   * Completes the CHECKSUM_PARTIAL checksum of a single packet (offload.needsCsum, no GSO) the
   * way skb_checksum_help does: the ones' complement of the sum from csumStart to the end of
   * the IP packet (the field holds the pseudo-header sum), stored at csumStart + csumOffset;
   * a result of 0 becomes 0xffff for UDP only, as TCP segmentation and NICs leave it 0.
   * Works on a copy in `frame` and points view.buf at it (the view's offsets stay valid).
   * Returns false, leaving the view alone, when the packet was not captured to its end or the
   * offsets lie outside it.
   */
  completeChecksum(view: PacketView, offload: Readonly<OffloadInfo>): boolean {
    const end = view.ipVersion !== 0 ? view.l3Offset + view.ipLength : view.wireLen;
    const start = offload.csumStart;
    const at = start + offload.csumOffset;
    if (end > view.caplen || view.caplen > this.frame.length || start < ETH_HEADER_LEN || at + 2 > end) return false;
    const f = this.frame;
    view.buf.copy(f, 0, 0, view.caplen);
    const check = checksumOf(this.frameWords.sum(f, start, end, 0));
    put16(f, at, check === 0 && view.protocol === IPPROTO_UDP ? CSUM_MANGLED_0 : check);
    view.buf = f;
    return true;
  }

  private fail(reason: string): number {
    this.malformedReason = reason;
    this.count = 0;
    return 0;
  }
}
