// SPDX-License-Identifier: GPL-2.0
/* The benchmark's ceiling: the least a TC mirror can do. Every frame leaving the source
 * interface except VXLAN itself is cloned into an external-mode vxlan device, whose egress
 * program sets the tunnel key and cuts the copy to TRUNC bytes (as the agent does, SPEC §3:
 * path MTU − 50) so the outer packet is never fragmented. No rules, no counters.
 * VXLAN_IFINDEX, VNI, REMOTE (IPv4, host order) and TRUNC are given with -D when
 * bench/anchors.ts compiles it. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define VXLAN_PORT 4789

SEC("tc")
int anchor_mirror(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	/* The copies leave through this interface too: never mirror VXLAN. */
	if ((void *)(udp + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP) && ip->protocol == IPPROTO_UDP &&
	    udp->dest == bpf_htons(VXLAN_PORT))
		return TC_ACT_OK;
	bpf_clone_redirect(skb, VXLAN_IFINDEX, 0);
	return TC_ACT_OK;
}

/* Its own section, so `tc filter ... sec classifier` picks it. */
SEC("classifier")
int anchor_tunnel(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = { .tunnel_id = VNI, .remote_ipv4 = REMOTE, .tunnel_ttl = 64 };

	bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0);
	if (skb->len > TRUNC)
		bpf_skb_change_tail(skb, TRUNC, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
