/* Ethernet / 802.1Q / IPv4 / IPv6 / L4 parser with the exact rules of
 * agent/packet/decode.ts: the same frames are malformed, the same fields are read.
 * Each header is read in one piece of constant length (MF_LOAD): straight from the linear
 * data when it is all there, else through bpf_skb_load_bytes, which handles non-linear
 * skbs; both give the same bytes, and every bound is checked either way. */
#ifndef MF_PARSE_BPF_H
#define MF_PARSE_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "mirrorflow.h"

#define ETH_HLEN_ 14
#define ETH_TYPE_OFF 12
#define VLAN_TAG_LEN 4
#define MAX_VLAN_TAGS 3
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_VLAN 0x8100
#define ETHERTYPE_QINQ 0x88a8
#define ETHERTYPE_QINQ_OLD 0x9100
#define ETHERTYPE_IPV6 0x86dd

#define IPV4_MIN_HLEN 20
#define IPV6_HLEN 40
#define IPV6_EXT_MIN_LEN 8
#define IPV6_FRAG_HLEN 8
#define MAX_IPV6_EXT 8

#define P_HOPOPTS 0
#define P_ICMP 1
#define P_TCP 6
#define P_UDP 17
#define P_ROUTING 43
#define P_FRAGMENT 44
#define P_AH 51
#define P_ICMPV6 58
#define P_DSTOPTS 60
#define P_SCTP 132

#define MF_DECODE_OK 0
#define MF_DECODE_NON_IP 1
#define MF_DECODE_ARP 2
#define MF_DECODE_MALFORMED 16

struct mf_pkt {
	__u32 src[4];       /* network byte order; IPv4 in word 0 */
	__u32 dst[4];
	__u32 frag_id;
	__u32 frag_off;     /* bytes; 0 for first fragments */
	__u16 sport;        /* host byte order */
	__u16 dport;
	__u8 ip_version;
	__u8 protocol;
	__u8 has_ports;     /* carries the transport header (not a later fragment) */
	__u8 is_fragment;
	__u8 tcp_flags;
	/* For the flow logs (flowlog.bpf.h): */
	__u16 icmp;         /* ICMP/ICMPv6 type << 8 | code */
	__u16 tcp_window;   /* the raw window field */
	__u32 ip_len;       /* IP header and payload (the IP length field, not skb->len) */
	__u32 hdr_len;      /* IP and transport headers: what every wire segment repeats */
	__u32 tcp_seq;
	__u32 tcp_ack;
	__u32 payload;      /* TCP payload bytes */
};

/* Reads *dst from offset off of the frame; 0 or the helper's error. The headers of almost
 * every packet are in the linear data, where a plain load costs a fraction of a helper call
 * (the parser runs up to three times per mirrored packet: on the original, in mf_tunnel, and
 * on the VXLAN copy leaving by the same interface). A typed load keeps the header's word
 * loads. The mask is the verifier's bound on the packet offset and never changes it: no
 * header the parser reads starts past 16.5 KB (3 VLAN tags, then at most 40 + 8 IPv6
 * extension headers of 2 KB). It bounds a copy of off, not off: a comparison on off itself
 * would leave the two paths with different bounds on it, explored apart (mf_tunnel: 122k
 * instructions processed that way, 104k masked). */
#define MF_LOAD(skb, off, dst) ({							\
	void *_data = (void *)(long)(skb)->data, *_end = (void *)(long)(skb)->data_end;	\
	__u32 _off = (off) & 0xffff;							\
	long _err = 0;									\
											\
	if (_data + _off + sizeof(*(dst)) <= _end)					\
		*(dst) = *(const typeof(*(dst)) *)(_data + _off);			\
	else										\
		_err = bpf_skb_load_bytes((skb), _off, (dst), sizeof(*(dst)));		\
	_err;										\
})

static __always_inline int mf_load_u16(struct __sk_buff *skb, __u32 off, __u16 *v)
{
	__be16 raw;
	if (MF_LOAD(skb, off, &raw))
		return -1;
	*v = bpf_ntohs(raw);
	return 0;
}

/* Transport header at l4; the IP payload ends at ip_end (<= skb->len, checked by caller).
 * One load per header: helper calls are most of the parser's cost. */
static __always_inline int mf_parse_l4(struct __sk_buff *skb, struct mf_pkt *p, __u32 l3, __u32 l4, __u32 ip_end)
{
	p->hdr_len = l4 - l3;
	if (p->protocol == P_TCP) {
		struct { __be16 sport, dport; __be32 seq, ack; __u8 doff, flags; __be16 window; } tcp;
		__u32 hlen;

		if (l4 + 20 > ip_end || MF_LOAD(skb, l4, &tcp))
			return MF_DECODE_MALFORMED;
		hlen = (tcp.doff >> 4) * 4;
		if (hlen < 20 || l4 + hlen > ip_end)
			return MF_DECODE_MALFORMED;
		p->tcp_flags = tcp.flags;
		p->sport = bpf_ntohs(tcp.sport);
		p->dport = bpf_ntohs(tcp.dport);
		p->tcp_seq = bpf_ntohl(tcp.seq);
		p->tcp_ack = bpf_ntohl(tcp.ack);
		p->tcp_window = bpf_ntohs(tcp.window);
		p->hdr_len += hlen;
		p->payload = ip_end - l4 - hlen;
	} else if (p->protocol == P_UDP || p->protocol == P_SCTP) {
		struct { __be16 sport, dport; } ports;

		if (l4 + (p->protocol == P_UDP ? 8 : 12) > ip_end || MF_LOAD(skb, l4, &ports))
			return MF_DECODE_MALFORMED;
		p->sport = bpf_ntohs(ports.sport);
		p->dport = bpf_ntohs(ports.dport);
		p->hdr_len += p->protocol == P_UDP ? 8 : 12;
	} else if (p->protocol == P_ICMP || p->protocol == P_ICMPV6) {
		__be16 type_code;

		if (l4 + 4 > ip_end || MF_LOAD(skb, l4, &type_code))
			return MF_DECODE_MALFORMED;
		p->icmp = bpf_ntohs(type_code);
	}
	p->has_ports = 1;
	return MF_DECODE_OK;
}

static __always_inline int mf_parse_ipv4(struct __sk_buff *skb, struct mf_pkt *p, __u32 l3, __u32 len)
{
	struct {
		__u8 ver_ihl, tos;
		__be16 total, id, frag;
		__u8 ttl, protocol;
		__be16 csum;
		__u32 src, dst;
	} h;
	__u32 hlen, total;
	__u16 frag;

	if (l3 + IPV4_MIN_HLEN > len || MF_LOAD(skb, l3, &h))
		return MF_DECODE_MALFORMED;
	if (h.ver_ihl >> 4 != 4)
		return MF_DECODE_MALFORMED;
	hlen = (h.ver_ihl & 0x0f) * 4;
	if (hlen < IPV4_MIN_HLEN || l3 + hlen > len)
		return MF_DECODE_MALFORMED;
	total = bpf_ntohs(h.total);
	if (total < hlen || l3 + total > len)
		return MF_DECODE_MALFORMED;
	p->ip_version = 4;
	p->ip_len = total;
	p->protocol = h.protocol;
	p->src[0] = h.src;
	p->dst[0] = h.dst;
	frag = bpf_ntohs(h.frag);
	p->frag_id = bpf_ntohs(h.id);
	p->frag_off = (frag & 0x1fff) * 8;
	p->is_fragment = (frag & 0x2000) || p->frag_off;
	if (p->frag_off)
		return MF_DECODE_OK;
	return mf_parse_l4(skb, p, l3, l3 + hlen, l3 + total);
}

static __always_inline int mf_parse_ipv6(struct __sk_buff *skb, struct mf_pkt *p, __u32 l3, __u32 len)
{
	struct {
		__be32 vtc_flow;
		__be16 payload_len;
		__u8 next, hop_limit;
		__u32 src[4], dst[4];
	} h;
	__u32 ip_end, off;
	__u8 next;

	if (l3 + IPV6_HLEN > len || MF_LOAD(skb, l3, &h))
		return MF_DECODE_MALFORMED;
	if ((bpf_ntohl(h.vtc_flow) >> 28) != 6)
		return MF_DECODE_MALFORMED;
	ip_end = l3 + IPV6_HLEN + bpf_ntohs(h.payload_len);
	if (ip_end > len)
		return MF_DECODE_MALFORMED;
	p->ip_version = 6;
	p->ip_len = ip_end - l3;
	__builtin_memcpy(p->src, h.src, 16);
	__builtin_memcpy(p->dst, h.dst, 16);
	next = h.next;
	off = l3 + IPV6_HLEN;
	for (int n = 0; n <= MAX_IPV6_EXT; n++) {
		struct { __u8 next, len; __be16 frag; __be32 id; } ext;
		__u32 ext_len;

		if (next != P_HOPOPTS && next != P_ROUTING && next != P_DSTOPTS &&
		    next != P_FRAGMENT && next != P_AH)
			break;
		if (n == MAX_IPV6_EXT)
			return MF_DECODE_MALFORMED;
		/* Hop-by-hop options only right after the fixed header (RFC 8200 §4.1). */
		if (next == P_HOPOPTS && n != 0)
			return MF_DECODE_MALFORMED;
		if (off + IPV6_EXT_MIN_LEN > ip_end || MF_LOAD(skb, off, &ext))
			return MF_DECODE_MALFORMED;
		if (next == P_FRAGMENT) {
			__u16 field = bpf_ntohs(ext.frag);
			ext_len = IPV6_FRAG_HLEN;
			p->frag_off = field & 0xfff8;
			p->is_fragment = (field & 1) || p->frag_off;
			p->frag_id = bpf_ntohl(ext.id);
		} else if (next == P_AH) {
			ext_len = ((__u32)ext.len + 2) * 4;
		} else {
			ext_len = ((__u32)ext.len + 1) * 8;
		}
		if (off + ext_len > ip_end)
			return MF_DECODE_MALFORMED;
		off += ext_len;
		next = ext.next;
		if (p->frag_off) {
			p->protocol = next;
			return MF_DECODE_OK;
		}
	}
	p->protocol = next;
	return mf_parse_l4(skb, p, l3, off, ip_end);
}

/* Returns MF_DECODE_*; on MF_DECODE_OK, p describes the IP packet. A global function: the
 * verifier checks it once on its own, and its callers see p as written, whichever load
 * path (direct or helper) each header took. Inlined, the two paths of every MF_LOAD reach
 * the rest of the program in different states: mf_egress took 525k instructions processed
 * to verify that way, 303k as it is (280k with the helper alone; the limit is 1M). */
__noinline int mf_parse(struct __sk_buff *skb, struct mf_pkt *p)
{
	__u32 len = skb->len;

	if (!p)
		return MF_DECODE_MALFORMED;
	__u32 off = ETH_TYPE_OFF;
	__u16 type;

	if (len < ETH_HLEN_ || mf_load_u16(skb, off, &type))
		return MF_DECODE_MALFORMED;
	for (int tags = 0; tags <= MAX_VLAN_TAGS; tags++) {
		if (type != ETHERTYPE_VLAN && type != ETHERTYPE_QINQ && type != ETHERTYPE_QINQ_OLD)
			break;
		if (tags == MAX_VLAN_TAGS)
			return MF_DECODE_MALFORMED;
		off += VLAN_TAG_LEN;
		if (off + 2 > len || mf_load_u16(skb, off, &type))
			return MF_DECODE_MALFORMED;
	}
	if (type == ETHERTYPE_IPV4)
		return mf_parse_ipv4(skb, p, off + 2, len);
	if (type == ETHERTYPE_IPV6)
		return mf_parse_ipv6(skb, p, off + 2, len);
	if (type == ETHERTYPE_ARP)
		return MF_DECODE_ARP;
	return MF_DECODE_NON_IP;
}

#endif
