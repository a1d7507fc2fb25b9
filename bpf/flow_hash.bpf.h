/* The flow hash that picks a copy's outer UDP source port (SPEC §3): symmetric in the inner
 * 5-tuple, so both directions of a connection get one port; the same function as
 * agent/mirror/flow-hash.ts flowHash() (must be in sync with it: test/ebpf/tunnel.test.ts
 * compares the two on the same frames). FNV-1a over 32-bit words (addresses as host-order
 * numbers of their network-order words), then murmur3's finaliser; the lower endpoint
 * (address, then port) goes first. Never 0: the vxlan driver reads 0 as "no hash". */
#ifndef MF_FLOW_HASH_BPF_H
#define MF_FLOW_HASH_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include "parse.bpf.h"

#define MF_FNV_OFFSET 0x811c9dc5u
#define MF_FNV_PRIME 0x01000193u

static __always_inline __u32 mf_fnv(__u32 h, __u32 word)
{
	return (h ^ word) * MF_FNV_PRIME;
}

static __always_inline __u32 mf_fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* < 0 when (src, sport) sorts before (dst, dport), 0 when equal, > 0 after. */
static __always_inline int mf_endpoint_order(const struct mf_pkt *p)
{
	for (int i = 0; i < 4; i++) {
		__u32 s = bpf_ntohl(p->src[i]), d = bpf_ntohl(p->dst[i]);

		if (s != d)
			return s < d ? -1 : 1;
	}
	return (int)p->sport - (int)p->dport;
}

static __always_inline __u32 mf_flow_hash(const struct mf_pkt *p)
{
	int swap = mf_endpoint_order(p) > 0;
	__u32 h = MF_FNV_OFFSET ^ p->protocol;

	for (int i = 0; i < 4; i++) {
		__u32 s = bpf_ntohl(p->src[i]), d = bpf_ntohl(p->dst[i]);

		h = mf_fnv(h, swap ? d : s);
		h = mf_fnv(h, swap ? s : d);
	}
	h = mf_fnv(h, swap ? ((__u32)p->dport << 16 | p->sport) : ((__u32)p->sport << 16 | p->dport));
	h = mf_fmix32(h);
	return h ? h : 1;
}

#endif
