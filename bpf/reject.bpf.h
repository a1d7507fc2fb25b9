/* REJECT accounting (SPEC §4): every packet freed with reason NETFILTER_DROP whose
 * interface is one of ours (namespace and ifindex in mf_reject_ifaces) is counted per
 * direction and 5-tuple in mf_rejects. Received packets (skb_iif set) count as inbound on
 * the interface they came in on; locally sent ones as outbound on their output device
 * (skb->dev, or the route's device before the output path has set it). */
#ifndef MF_REJECT_BPF_H
#define MF_REJECT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "maps.bpf.h"

#define MF_ETH_P_IP 0x0800
#define MF_ETH_P_IPV6 0x86DD
#define MF_SKB_DST_PTRMASK (~1UL)

static __always_inline int mf_reject_ports(const unsigned char *l4, __u8 protocol, struct mf_flow_key *k)
{
	__be16 ports[2];

	if (protocol == P_ICMP || protocol == P_ICMPV6) {
		/* ICMP flows are keyed per type and code, as the flow records are. */
		__u8 tc[2];

		if (bpf_probe_read_kernel(tc, sizeof(tc), l4))
			return -1;
		k->dport = (__u16)tc[0] << 8 | tc[1];
		return 0;
	}
	if (protocol != P_TCP && protocol != P_UDP && protocol != P_SCTP)
		return 0;
	if (bpf_probe_read_kernel(ports, sizeof(ports), l4))
		return -1;
	k->sport = bpf_ntohs(ports[0]);
	k->dport = bpf_ntohs(ports[1]);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(mf_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	struct mf_flow_key k = {};
	struct mf_reject_iface iface;
	struct mf_reject_val *v, init = {};
	const struct mf_state *state;
	struct net_device *dev;
	const unsigned char *nh;
	__u32 zero = 0;
	__u16 proto;
	__u64 now, ip_len;

	/* CO-RE: the enum's value on the running kernel (kernels renumber skb_drop_reason),
	 * relocated at load, not the build host's. */
	if (reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NETFILTER_DROP))
		return 0;
	state = bpf_map_lookup_elem(&mf_state, &zero);
	if (!state)
		return 0;
	/* Double-buffered like the rules: user space drains the slot it flipped away from. */
	k.slot = state->count_slot & 1;
	dev = skb->dev;
	if (!dev) {
		struct dst_entry *dst = (struct dst_entry *)(skb->_skb_refdst & MF_SKB_DST_PTRMASK);

		if (!dst)
			return 0;
		dev = BPF_CORE_READ(dst, dev);
		if (!dev)
			return 0;
	}
	k.dir = skb->skb_iif ? MF_DIR_IN : MF_DIR_OUT;
	iface.ifindex = skb->skb_iif ? skb->skb_iif : BPF_CORE_READ(dev, ifindex);
	iface.netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	if (!bpf_map_lookup_elem(&mf_reject_ifaces, &iface))
		return 0;
	k.ifindex = iface.ifindex;

	nh = skb->head + skb->network_header;
	proto = bpf_ntohs(skb->protocol);
	if (proto == MF_ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), nh))
			return 0;
		k.family = 4;
		k.protocol = ip.protocol;
		k.src[0] = ip.saddr;
		k.dst[0] = ip.daddr;
		ip_len = bpf_ntohs(ip.tot_len);
		/* Later fragments carry no ports. */
		if (!(bpf_ntohs(ip.frag_off) & 0x1fff) && mf_reject_ports(nh + ip.ihl * 4, ip.protocol, &k))
			return 0;
	} else if (proto == MF_ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), nh))
			return 0;
		k.family = 6;
		/* The transport right after the fixed header; with extension headers, protocol only. */
		k.protocol = ip6.nexthdr;
		__builtin_memcpy(k.src, &ip6.saddr, 16);
		__builtin_memcpy(k.dst, &ip6.daddr, 16);
		ip_len = 40 + bpf_ntohs(ip6.payload_len);
		if (mf_reject_ports(nh + 40, ip6.nexthdr, &k))
			return 0;
	} else {
		return 0;
	}

	now = bpf_ktime_get_ns();
	v = bpf_map_lookup_elem(&mf_rejects, &k);
	if (!v) {
		init.first_ns = now;
		bpf_map_update_elem(&mf_rejects, &k, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&mf_rejects, &k);
		if (!v)
			return 0;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, ip_len);
	v->last_ns = now;
	return 0;
}

#endif
