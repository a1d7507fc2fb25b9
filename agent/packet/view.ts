// One reusable, mutable view of the packet being processed. decode() fills it in place
// from the frame Buffer; nothing per packet is allocated. Every stage (rules, mirror,
// flow table) reads these fields and never keeps the view past the current packet.

/** Direction relative to the source interface: received (in) or transmitted (out). */
export const DIR_IN = 0;
export const DIR_OUT = 1;
export type Direction = typeof DIR_IN | typeof DIR_OUT;

/** What decode() found; anything >= DECODE_MALFORMED is a malformed frame. */
export const DECODE_OK = 0;
export const DECODE_NON_IP = 1;
export const DECODE_ARP = 2;
export const DECODE_MALFORMED = 16;

export class PacketView {
  /** The frame as seen on the interface, starting at the Ethernet header. */
  buf: Buffer = Buffer.alloc(0);
  /** Bytes of the frame present in buf. */
  caplen = 0;
  /** Length of the frame on the wire (>= caplen). */
  wireLen = 0;
  /** Capture timestamp, microseconds since the epoch. */
  tsUs = 0;
  direction: Direction = DIR_IN;

  /** Ethertype after any 802.1Q/802.1ad tags. */
  etherType = 0;
  vlanTags = 0;
  /** 0 when not IP, else 4 or 6. */
  ipVersion = 0;
  l3Offset = 0;
  /** IP bytes of the packet as sent: IPv4 total length, or IPv6 40 + payload length. */
  ipLength = 0;
  /** Transport protocol (IANA number), after IPv6 extension headers. */
  protocol = 0;
  /** Offset of the transport header, or -1 when absent (non-first fragment, truncated). */
  l4Offset = -1;
  /**
   * Addresses as 32-bit words in network order; IPv4 uses word 0 only (others 0).
   * Fixed arrays owned by the view: compare, never keep.
   */
  readonly src = new Uint32Array(4);
  readonly dst = new Uint32Array(4);
  /** Transport ports; 0 when the protocol has none or they are not in this packet. */
  srcPort = 0;
  dstPort = 0;
  /** True when this packet carries the transport header (not a later fragment). */
  hasPorts = false;
  /** TCP flags byte (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ...), else 0. */
  tcpFlags = 0;
  /** TCP sequence/ack numbers (uint32), raw window field, and L4 payload bytes. */
  tcpSeq = 0;
  tcpAck = 0;
  tcpWindow = 0;
  payloadLength = 0;
  /** ICMP/ICMPv6 type and code, else 0. */
  icmpType = 0;
  icmpCode = 0;

  /** Fragment state: isFragment when MF set or offset > 0. */
  isFragment = false;
  /** Fragment offset in bytes; 0 for the first fragment. */
  fragOffset = 0;
  /** IPv4 identification, or the IPv6 fragment header's identification. */
  fragId = 0;

  /** Set by decode() when it returns a malformed code: a short, stable reason label. */
  malformedReason = '';
}
