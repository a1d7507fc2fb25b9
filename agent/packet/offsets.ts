// Header offsets, lengths and protocol numbers used by the decoder, the rule engine and
// the frame builder. Offsets are relative to the start of their own header.

export const ETH_HEADER_LEN = 14;
export const ETH_TYPE_OFFSET = 12;
/** An 802.1Q/802.1ad tag: 2 bytes TCI, then the next ethertype. */
export const VLAN_TAG_LEN = 4;
/** Tags beyond this many are treated as malformed (QinQ uses 2; leave room for 3). */
export const MAX_VLAN_TAGS = 3;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_QINQ = 0x88a8;
/** Pre-standard QinQ ethertype still emitted by some switches. */
export const ETHERTYPE_QINQ_OLD = 0x9100;
export const ETHERTYPE_IPV6 = 0x86dd;

export const IPV4_MIN_HEADER_LEN = 20;
export const IPV4_VER_IHL = 0;
export const IPV4_TOTAL_LENGTH = 2;
export const IPV4_ID = 4;
export const IPV4_FLAGS_FRAG = 6;
export const IPV4_PROTOCOL = 9;
export const IPV4_CHECKSUM = 10;
export const IPV4_SRC = 12;
export const IPV4_DST = 16;
export const IPV4_FLAG_MF = 0x2000;
export const IPV4_MAX_TOTAL_LENGTH = 0xffff;
export const IPV4_FRAG_OFFSET_MASK = 0x1fff;

export const IPV6_HEADER_LEN = 40;
export const IPV6_PAYLOAD_LENGTH = 4;
export const IPV6_NEXT_HEADER = 6;
export const IPV6_SRC = 8;
export const IPV6_DST = 24;
/** Extension headers walked before giving up as malformed. */
export const MAX_IPV6_EXT_HEADERS = 8;
/** Generic extension header: next header, then length in 8-byte units not counting the first 8. */
export const IPV6_EXT_MIN_LEN = 8;
export const IPV6_FRAG_HEADER_LEN = 8;
/** Fragment header bytes 2..3: offset in 8-byte units (upper 13 bits), M flag in bit 0. */
export const IPV6_FRAG_OFFSET_FIELD = 2;
export const IPV6_FRAG_ID = 4;
export const IPV6_FRAG_OFFSET_MASK = 0xfff8;
export const IPV6_FRAG_FLAG_M = 0x0001;
/** Hop-by-hop option carrying a jumbogram's length (RFC 2675), as BIG TCP inserts it. */
export const IPV6_TLV_JUMBO = 0xc2;
/** The whole jumbo hop-by-hop header: next header, length 0, option type, option length 4, 32-bit length. */
export const IPV6_JUMBO_HEADER_LEN = 8;
export const IPV6_MAX_PAYLOAD_LENGTH = 0xffff;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ICMP = 1;
export const IPPROTO_IPIP = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_GRE = 47;
export const IPPROTO_ESP = 50;
export const IPPROTO_AH = 51;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_NONE = 59;
export const IPPROTO_DSTOPTS = 60;
export const IPPROTO_SCTP = 132;

export const TCP_MIN_HEADER_LEN = 20;
export const TCP_SEQ = 4;
export const TCP_ACK = 8;
export const TCP_DATA_OFFSET = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;
export const TCP_FLAG_FIN = 0x01;
export const TCP_FLAG_PSH = 0x08;
export const TCP_FLAG_CWR = 0x80;

export const UDP_HEADER_LEN = 8;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;
/** SCTP common header: ports at the same place as TCP/UDP. */
export const SCTP_HEADER_LEN = 12;
/** ICMP and ICMPv6: type, code, checksum. */
export const ICMP_HEADER_LEN = 4;
/** Source and destination port of TCP, UDP and SCTP. */
export const L4_SRC_PORT = 0;
export const L4_DST_PORT = 2;

export const PORT_DHCP_SERVER = 67;
export const PORT_DHCP_CLIENT = 68;
export const PORT_DHCPV6_CLIENT = 546;
export const PORT_DHCPV6_SERVER = 547;
export const PORT_VXLAN = 4789;
