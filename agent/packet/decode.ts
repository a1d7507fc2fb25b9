// Decodes one Ethernet frame in place into a reusable PacketView. Hot path: no allocation,
// reads straight from the Buffer, every field the view exposes is reset first.

import {
  DECODE_ARP,
  DECODE_MALFORMED,
  DECODE_NON_IP,
  DECODE_OK,
  type PacketView,
} from './view.js';
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_QINQ,
  ETHERTYPE_QINQ_OLD,
  ETHERTYPE_VLAN,
  ETH_HEADER_LEN,
  ETH_TYPE_OFFSET,
  ICMP_HEADER_LEN,
  IPPROTO_AH,
  IPPROTO_DSTOPTS,
  IPPROTO_FRAGMENT,
  IPPROTO_HOPOPTS,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_ROUTING,
  IPPROTO_SCTP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_DST,
  IPV4_FLAGS_FRAG,
  IPV4_FLAG_MF,
  IPV4_FRAG_OFFSET_MASK,
  IPV4_ID,
  IPV4_MIN_HEADER_LEN,
  IPV4_PROTOCOL,
  IPV4_SRC,
  IPV4_TOTAL_LENGTH,
  IPV4_VER_IHL,
  IPV6_DST,
  IPV6_EXT_MIN_LEN,
  IPV6_FRAG_FLAG_M,
  IPV6_FRAG_HEADER_LEN,
  IPV6_FRAG_ID,
  IPV6_FRAG_OFFSET_FIELD,
  IPV6_FRAG_OFFSET_MASK,
  IPV6_HEADER_LEN,
  IPV6_NEXT_HEADER,
  IPV6_PAYLOAD_LENGTH,
  IPV6_SRC,
  L4_DST_PORT,
  L4_SRC_PORT,
  MAX_IPV6_EXT_HEADERS,
  MAX_VLAN_TAGS,
  SCTP_HEADER_LEN,
  TCP_ACK,
  TCP_DATA_OFFSET,
  TCP_FLAGS,
  TCP_MIN_HEADER_LEN,
  TCP_SEQ,
  TCP_WINDOW,
  UDP_HEADER_LEN,
  VLAN_TAG_LEN,
} from './offsets.js';

/**
 * Fills `view` from the frame in `buf` (Ethernet first) and returns DECODE_OK, DECODE_NON_IP,
 * DECODE_ARP or DECODE_MALFORMED (then view.malformedReason says why). A frame cut short
 * by the snap length is fine as long as the headers needed are present; an IP length that
 * claims more than the frame carried on the wire is malformed. view.tsUs and
 * view.direction are the caller's and are left alone.
 */
export function decode(view: PacketView, buf: Buffer, caplen: number, wireLen: number): number {
  if (caplen > buf.length) caplen = buf.length;
  if (wireLen < caplen) wireLen = caplen;
  view.buf = buf;
  view.caplen = caplen;
  view.wireLen = wireLen;
  view.etherType = 0;
  view.vlanTags = 0;
  view.ipVersion = 0;
  view.l3Offset = 0;
  view.ipLength = 0;
  view.protocol = 0;
  view.l4Offset = -1;
  const src = view.src;
  const dst = view.dst;
  src[0] = 0; src[1] = 0; src[2] = 0; src[3] = 0;
  dst[0] = 0; dst[1] = 0; dst[2] = 0; dst[3] = 0;
  view.srcPort = 0;
  view.dstPort = 0;
  view.hasPorts = false;
  view.tcpFlags = 0;
  view.tcpSeq = 0;
  view.tcpAck = 0;
  view.tcpWindow = 0;
  view.payloadLength = 0;
  view.icmpType = 0;
  view.icmpCode = 0;
  view.isFragment = false;
  view.fragOffset = 0;
  view.fragId = 0;
  view.malformedReason = '';

  if (caplen < ETH_HEADER_LEN) return malformed(view, 'eth-truncated');
  let off = ETH_TYPE_OFFSET;
  let etherType = u16(buf, off);
  while (etherType === ETHERTYPE_VLAN || etherType === ETHERTYPE_QINQ || etherType === ETHERTYPE_QINQ_OLD) {
    if (view.vlanTags === MAX_VLAN_TAGS) return malformed(view, 'vlan-too-many-tags');
    off += VLAN_TAG_LEN;
    if (off + 2 > caplen) return malformed(view, 'vlan-truncated');
    view.vlanTags++;
    etherType = u16(buf, off);
  }
  view.etherType = etherType;
  const l3 = off + 2;
  view.l3Offset = l3;
  if (etherType === ETHERTYPE_IPV4) return decodeIpv4(view, buf, l3, caplen, wireLen);
  if (etherType === ETHERTYPE_IPV6) return decodeIpv6(view, buf, l3, caplen, wireLen);
  if (etherType === ETHERTYPE_ARP) return DECODE_ARP;
  return DECODE_NON_IP;
}

// Direct byte math: Buffer#readUInt16BE validates its argument on every call (Node 20),
// which costs about a third of decode time. Callers check bounds first.
function u16(buf: Buffer, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

function u32(buf: Buffer, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

function malformed(view: PacketView, reason: string): number {
  view.malformedReason = reason;
  return DECODE_MALFORMED;
}

function decodeIpv4(view: PacketView, buf: Buffer, l3: number, caplen: number, wireLen: number): number {
  if (l3 + IPV4_MIN_HEADER_LEN > caplen) return malformed(view, 'ip-truncated');
  const verIhl = buf[l3 + IPV4_VER_IHL]!;
  if (verIhl >> 4 !== 4) return malformed(view, 'ipv4-bad-version');
  const headerLen = (verIhl & 0x0f) * 4;
  if (headerLen < IPV4_MIN_HEADER_LEN) return malformed(view, 'ipv4-bad-ihl');
  if (l3 + headerLen > caplen) return malformed(view, 'ip-truncated');
  const totalLength = u16(buf, l3 + IPV4_TOTAL_LENGTH);
  if (totalLength < headerLen || l3 + totalLength > wireLen) return malformed(view, 'ipv4-bad-total-length');
  view.ipVersion = 4;
  view.ipLength = totalLength;
  view.protocol = buf[l3 + IPV4_PROTOCOL]!;
  view.src[0] = u32(buf, l3 + IPV4_SRC);
  view.dst[0] = u32(buf, l3 + IPV4_DST);
  const flagsFrag = u16(buf, l3 + IPV4_FLAGS_FRAG);
  view.fragId = u16(buf, l3 + IPV4_ID);
  view.fragOffset = (flagsFrag & IPV4_FRAG_OFFSET_MASK) * 8;
  view.isFragment = (flagsFrag & IPV4_FLAG_MF) !== 0 || view.fragOffset !== 0;
  // Later fragments carry no transport header.
  if (view.fragOffset !== 0) return DECODE_OK;
  return decodeL4(view, buf, l3 + headerLen, l3 + totalLength, caplen);
}

function decodeIpv6(view: PacketView, buf: Buffer, l3: number, caplen: number, wireLen: number): number {
  if (l3 + IPV6_HEADER_LEN > caplen) return malformed(view, 'ip-truncated');
  if (buf[l3]! >> 4 !== 6) return malformed(view, 'ipv6-bad-version');
  const ipLength = IPV6_HEADER_LEN + u16(buf, l3 + IPV6_PAYLOAD_LENGTH);
  const ipEnd = l3 + ipLength;
  if (ipEnd > wireLen) return malformed(view, 'ipv6-bad-payload-length');
  view.ipVersion = 6;
  view.ipLength = ipLength;
  for (let i = 0; i < 4; i++) {
    view.src[i] = u32(buf, l3 + IPV6_SRC + 4 * i);
    view.dst[i] = u32(buf, l3 + IPV6_DST + 4 * i);
  }
  // Extension headers must lie inside both the IP payload and the captured bytes.
  const limit = ipEnd < caplen ? ipEnd : caplen;
  let next = buf[l3 + IPV6_NEXT_HEADER]!;
  let off = l3 + IPV6_HEADER_LEN;
  for (let n = 0; ; n++) {
    if (next !== IPPROTO_HOPOPTS && next !== IPPROTO_ROUTING && next !== IPPROTO_DSTOPTS &&
        next !== IPPROTO_FRAGMENT && next !== IPPROTO_AH) break;
    if (n === MAX_IPV6_EXT_HEADERS) return malformed(view, 'ipv6-ext-too-many');
    // Hop-by-hop options are only valid right after the fixed header (RFC 8200 §4.1).
    if (next === IPPROTO_HOPOPTS && n !== 0) return malformed(view, 'ipv6-hbh-not-first');
    if (off + IPV6_EXT_MIN_LEN > limit) return malformed(view, 'ipv6-ext-truncated');
    const headerNext = buf[off]!;
    let len: number;
    if (next === IPPROTO_FRAGMENT) {
      len = IPV6_FRAG_HEADER_LEN;
      const field = u16(buf, off + IPV6_FRAG_OFFSET_FIELD);
      view.fragOffset = field & IPV6_FRAG_OFFSET_MASK;
      view.isFragment = (field & IPV6_FRAG_FLAG_M) !== 0 || view.fragOffset !== 0;
      view.fragId = u32(buf, off + IPV6_FRAG_ID);
    } else if (next === IPPROTO_AH) {
      len = (buf[off + 1]! + 2) * 4;
    } else {
      len = (buf[off + 1]! + 1) * 8;
    }
    if (off + len > limit) return malformed(view, 'ipv6-ext-truncated');
    off += len;
    next = headerNext;
    if (view.fragOffset !== 0) {
      view.protocol = next;
      return DECODE_OK;
    }
  }
  view.protocol = next;
  return decodeL4(view, buf, off, ipEnd, caplen);
}

/** Transport header at `l4`; IP payload ends at `ipEnd` on the wire, capture at `caplen`. */
function decodeL4(view: PacketView, buf: Buffer, l4: number, ipEnd: number, caplen: number): number {
  const limit = ipEnd < caplen ? ipEnd : caplen;
  const protocol = view.protocol;
  let headerLen: number;
  if (protocol === IPPROTO_TCP) {
    if (l4 + TCP_MIN_HEADER_LEN > limit) return malformed(view, 'l4-truncated');
    headerLen = (buf[l4 + TCP_DATA_OFFSET]! >> 4) * 4;
    // Options may be cut by the snap length, but never beyond the IP payload.
    if (headerLen < TCP_MIN_HEADER_LEN || l4 + headerLen > ipEnd) return malformed(view, 'tcp-bad-data-offset');
    view.tcpFlags = buf[l4 + TCP_FLAGS]!;
    view.tcpSeq = u32(buf, l4 + TCP_SEQ);
    view.tcpAck = u32(buf, l4 + TCP_ACK);
    view.tcpWindow = u16(buf, l4 + TCP_WINDOW);
  } else if (protocol === IPPROTO_UDP || protocol === IPPROTO_SCTP) {
    headerLen = protocol === IPPROTO_UDP ? UDP_HEADER_LEN : SCTP_HEADER_LEN;
    if (l4 + headerLen > limit) return malformed(view, 'l4-truncated');
  } else if (protocol === IPPROTO_ICMP || protocol === IPPROTO_ICMPV6) {
    headerLen = ICMP_HEADER_LEN;
    if (l4 + headerLen > limit) return malformed(view, 'l4-truncated');
    view.icmpType = buf[l4]!;
    view.icmpCode = buf[l4 + 1]!;
  } else {
    headerLen = 0;
  }
  if (protocol === IPPROTO_TCP || protocol === IPPROTO_UDP || protocol === IPPROTO_SCTP) {
    view.srcPort = u16(buf, l4 + L4_SRC_PORT);
    view.dstPort = u16(buf, l4 + L4_DST_PORT);
  }
  view.l4Offset = l4;
  view.hasPorts = true;
  view.payloadLength = ipEnd - l4 - headerLen;
  return DECODE_OK;
}
